//! Wipe: erase a drive that is not pinned, so it is blank and READY. Run again after a crash
//! (a second erase is harmless); a timed-out wipe counts as done only if the bays then report
//! the drive blank and READY.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Run};
use crate::bays::{BayInfo, BayState, Bays, Drives, ItemFacts, within};
use crate::content_source::ContentSource;

/// Journals, erases, judges a timeout from the bays, answers.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    item_id: &str,
    run: Run,
) -> Answer {
    let call = within(
        ex.timeouts.wipe,
        format!("wipe {item_id}"),
        ex.bays.wipe(item_id),
    );
    // Done only if the bays now report the drive blank and READY.
    let wiped = |bay: &BayInfo| {
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
    ex.run_judged(id, run, item_id, call, wiped, |item| {
        Outcome::Wipe(pb::WipeResult {
            item_id: item.item_id,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::bays::ItemFacts;

    #[tokio::test]
    async fn a_hung_wipe_fails_bay_fault() {
        let (_dir, bays, _journal, executor) = faulty_kiosk(Faults {
            wipe: true,
            ..Faults::default()
        })
        .await;
        let result = handle_in_time(
            &executor,
            &command(
                "C-1",
                pb::command_payload::Kind::Wipe(pb::WipeCommand {
                    item_id: "D-1".into(),
                }),
                60,
            ),
        )
        .await;
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::BayFault, "{message}");
        assert!(message.contains("wipe D-1"), "{message}");
        // It never wiped: the drive still holds its content and is reported as such.
        assert!(matches!(
            bays.snapshot()[0].item.as_ref().unwrap().facts,
            ItemFacts::Drive {
                content_package_id: Some(_),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn wiping_an_item_not_in_the_kiosk_fails_item_not_found() {
        let k = kiosk(SimFaults::default()).await;
        let unknown = k
            .run(
                "C-wipe",
                pb::command_payload::Kind::Wipe(pb::WipeCommand {
                    item_id: "D-9".into(),
                }),
            )
            .await;
        assert_eq!(failure_of(&unknown).0, FailureReason::ItemNotFound);
    }
}
