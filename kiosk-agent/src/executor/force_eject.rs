//! ForceEject: open a bay whatever it holds (operators clearing a jam or taking a drive out).
//! Journaled with its choice before the bay opens, and settled from the bays after a crash or
//! a timeout ([`Executor::settle_eject`]), like a lend.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Failed};
use crate::bays::{BayError, Bays, Drives, within};
use crate::content_source::ContentSource;
use crate::journal::Choice;
use crate::wire;

/// Looks at the bay, journals what it holds, ejects, answers.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    bay_id: &str,
) -> Answer {
    let bays = match ex.inventory().await {
        Ok(bays) => bays,
        Err(error) => return Ok(Some(ex.failure(id, Failed::bay(&error).at_bay(bay_id)))),
    };
    let Some(bay) = bays.iter().find(|b| b.bay_id == bay_id) else {
        let error = BayError::UnknownBay(bay_id.to_owned());
        return Ok(Some(ex.failure(id, Failed::bay(&error).at_bay(bay_id))));
    };
    let choice = Choice {
        bay_id: bay_id.to_owned(),
        item_id: bay.item.as_ref().map(|i| i.item_id.clone()),
        item: bay.item.as_ref().map(wire::item),
    };
    if !ex.journal.start(id, Some(&choice)).await? {
        return Ok(None);
    }
    let eject = within(
        ex.timeouts.eject,
        format!("eject {bay_id}"),
        ex.bays.eject(bay_id),
    );
    Ok(Some(match eject.await {
        Err(error @ BayError::Timeout { .. }) => {
            return ex.settle_timed_out_eject(id, false, error).await;
        }
        Ok(ejected) => ex.success(
            id,
            Outcome::ForceEject(pb::ForceEjectResult {
                bay_id: bay_id.to_owned(),
                item_id: ejected.item.map(|i| i.item_id).unwrap_or_default(),
            }),
        ),
        Err(error) => ex.failure(
            id,
            Failed::bay(&error)
                .at_bay(bay_id)
                .of_item_if(choice.item_id.as_deref()),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[tokio::test]
    async fn a_forced_eject_reports_what_left() {
        let k = kiosk(SimFaults::default()).await;
        let eject = k
            .run(
                "C-fe",
                pb::command_payload::Kind::ForceEject(pb::ForceEjectCommand {
                    bay_id: "A02".into(),
                }),
            )
            .await;
        assert!(matches!(eject.outcome, Some(Outcome::ForceEject(ref r)) if r.item_id == "D-2"));
    }
}
