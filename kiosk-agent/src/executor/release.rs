//! Release: unpin a reservation's drive so walk-up lends may take it (a no-show, a cancelled
//! reservation). Idempotent, so it is run again after a crash; a timed-out unpin counts as done
//! only if the bays then report the drive READY.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Run};
use crate::bays::{BayInfo, BayState, Bays, Drives, within};
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
    let ready = |bay: &BayInfo| bay.state == BayState::Ready;
    ex.run_judged(id, run, item_id, call, ready, |item| {
        Outcome::Release(pb::ReleaseResult {
            item_id: item.item_id,
        })
    })
    .await
}
