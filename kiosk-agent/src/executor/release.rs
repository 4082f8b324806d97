//! Release: unpin a reservation's drive so walk-up lends may take it (a no-show, a cancelled
//! reservation). Idempotent, so it is run again after a crash; a timed-out unpin counts as done
//! only if the bays then report the drive READY.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Failed, Run};
use crate::bays::{BayState, Bays, Drives, within};
use crate::content_source::ContentSource;

/// Journals, unpins, judges a timeout from the bays, answers.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    order_id: &str,
    item_id: &str,
    run: Run,
) -> Answer {
    let call = within(
        ex.timeouts.configure,
        format!("unpin {item_id}"),
        ex.bays.unpin(item_id, order_id),
    );
    // Released only if the bays now report the drive READY.
    let Some(outcome) = ex
        .run_judged(id, run, item_id, call, |bay| bay.state == BayState::Ready)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(match outcome {
        Ok(item) => ex.success(
            id,
            Outcome::Release(pb::ReleaseResult {
                item_id: item.item_id,
            }),
        ),
        Err(error) => ex.failure(id, Failed::bay(&error).of_item(item_id)),
    }))
}
