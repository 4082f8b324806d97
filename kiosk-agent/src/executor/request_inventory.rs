//! RequestInventory (our TriggerMessage): report what every bay holds. No physical effect, so
//! it is simply run again after a crash.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Failed, Run};
use crate::bays::{Bays, Drives};
use crate::content_source::ContentSource;
use crate::wire;

/// Journals, reads the bays, answers.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    run: Run,
) -> Answer {
    if !ex.mark_started(id, None, run).await? {
        return Ok(None);
    }
    Ok(Some(match ex.inventory().await {
        Ok(bays) => ex.success(
            id,
            Outcome::RequestInventory(pb::RequestInventoryResult {
                inventory: Some(wire::inventory(&bays, ex.clock.now())),
            }),
        ),
        Err(error) => ex.failure(id, Failed::bay(&error)),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[tokio::test]
    async fn the_inventory_lists_every_bay() {
        let k = kiosk(SimFaults::default()).await;
        let inventory = k
            .run(
                "C-inv",
                pb::command_payload::Kind::RequestInventory(pb::RequestInventoryCommand {}),
            )
            .await;
        let Some(Outcome::RequestInventory(r)) = inventory.outcome else {
            panic!()
        };
        assert_eq!(r.inventory.unwrap().bays.len(), 2);
    }
}
