//! Release: unpin a reservation's drive and wipe it, so it goes back to the kiosk's stock blank
//! (a no-show, a cancelled reservation). Idempotent (unpinning a READY drive and erasing a
//! blank one are no-ops), so it is run again after a crash; a timed-out release counts as done
//! only if the bays then report the drive blank and READY.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Run};
use crate::bays::{BayInfo, BayState, Bays, Drives, ItemFacts, within};
use crate::content_source::ContentSource;

/// Journals, unpins, judges a timeout from the bays, answers.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    order_id: &str,
    item_id: &str,
    run: Run,
) -> Answer {
    let call = async {
        within(
            ex.timeouts.configure,
            format!("unpin {item_id}"),
            ex.bays.unpin(item_id, order_id),
        )
        .await?;
        within(
            ex.timeouts.wipe,
            format!("wipe {item_id}"),
            ex.bays.wipe(item_id),
        )
        .await
    };
    // Released only if the bays now report the drive blank and READY.
    let ready = |bay: &BayInfo| {
        bay.state == BayState::Ready
            && bay.item.as_ref().is_some_and(|item| {
                matches!(
                    item.facts,
                    ItemFacts::Drive {
                        content_package_id: None,
                        write_protected: false,
                        ..
                    }
                )
            })
    };
    ex.run_judged(id, run, item_id, call, ready, |item| {
        Outcome::Release(pb::ReleaseResult {
            item_id: item.item_id,
        })
    })
    .await
}
