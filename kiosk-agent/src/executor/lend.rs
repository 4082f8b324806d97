//! Lend (the third instruction): hand one item to the user. By spec, the kiosk chooses by its
//! preset rules ([`crate::selection`]); by item id, only the drive pinned to the lend's order.
//! Write protection asked by the spec is applied before the eject. The choice (bay, item, the
//! item as it will leave) is journaled before anything moves, so an interrupted lend is
//! settled from the bays ([`Executor::settle_eject`]), never ejected twice.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::FailureReason;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Failed};
use crate::bays::{BayError, Bays, Drives, ItemFacts, within};
use crate::command::LendTarget;
use crate::content_source::ContentSource;
use crate::journal::Choice;
use crate::selection::{self, NoChoice, WantedType};
use crate::wire;

/// The pause point right after a lend's successful eject (tests kill the agent there).
pub const AFTER_EJECT_POINT: &str = "agent::lend::after_eject";

/// Chooses, journals the choice, applies write protection, ejects, answers.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    order_id: &str,
    target: &LendTarget,
) -> Answer {
    let bays = match ex.inventory().await {
        Ok(bays) => bays,
        Err(error) => return Ok(Some(ex.failure(id, Failed::bay(&error)))),
    };
    let chosen = match target {
        LendTarget::Spec { wanted, .. } => selection::choose_by_spec(&bays, wanted),
        LendTarget::Item(item_id) => selection::choose_reserved(&bays, item_id, order_id),
    };
    let bay = match chosen {
        Ok(bay) => bay,
        Err(NoChoice::NoMatchingItem) => {
            return Ok(Some(ex.failure(
                id,
                Failed::new(
                    FailureReason::NoMatchingItem,
                    "no READY item matches the spec",
                ),
            )));
        }
        Err(NoChoice::ItemNotFound) => {
            let item_id = match target {
                LendTarget::Item(item_id) => Some(item_id.as_str()),
                LendTarget::Spec { .. } => None,
            };
            return Ok(Some(
                ex.failure(
                    id,
                    Failed::new(
                        FailureReason::ItemNotFound,
                        format!("item is not in this kiosk or not pinned to order {order_id}"),
                    )
                    .of_item_if(item_id),
                ),
            ));
        }
    };
    let Some(item) = bay.item.clone() else {
        return Ok(Some(ex.failure(
            id,
            Failed::new(FailureReason::Internal, "chosen bay holds no item").at_bay(&bay.bay_id),
        )));
    };
    let bay_id = bay.bay_id.clone();
    let write_protect = match target {
        LendTarget::Spec {
            wanted: WantedType::Drive { .. },
            write_protect,
        } => Some(*write_protect),
        _ => None,
    };
    let mut leaving = item.clone();
    let mut needs_change = false;
    if let (
        Some(wanted),
        ItemFacts::Drive {
            write_protected, ..
        },
    ) = (write_protect, &mut leaving.facts)
    {
        needs_change = *write_protected != wanted;
        *write_protected = wanted;
    }
    let choice = Choice {
        bay_id: bay_id.clone(),
        item_id: Some(item.item_id.clone()),
        item: Some(wire::item(&leaving)),
    };
    if !ex.journal.start(id, Some(&choice)).await? {
        return Ok(None);
    }
    tracing::info!(command_id = %id, bay_id = %bay_id, item_id = %item.item_id, "lending");
    if let (true, Some(on)) = (needs_change, write_protect)
        && let Err(error) = within(
            ex.timeouts.configure,
            format!("set_write_protect {}", item.item_id),
            ex.bays.set_write_protect(&item.item_id, on),
        )
        .await
    {
        // A timeout here is BAY_FAULT: nothing left the kiosk (no eject was tried), and the
        // drive's write protection is whatever the bays report from now on.
        let mut failed = Failed::bay(&error).at_bay(&bay_id).of_item(&item.item_id);
        if matches!(
            error,
            BayError::WriteProtectFailed(_) | BayError::WrongKind { .. }
        ) {
            failed.reason = FailureReason::WriteProtectFailed;
        }
        return Ok(Some(ex.failure(id, failed)));
    }
    let eject = within(
        ex.timeouts.eject,
        format!("eject {bay_id}"),
        ex.bays.eject(&bay_id),
    );
    let ejected = match eject.await {
        Ok(ejected) => ejected,
        Err(error @ BayError::Timeout { .. }) => {
            return ex.settle_timed_out_eject(id, true, error).await;
        }
        Err(error) => {
            return Ok(Some(ex.failure(
                id,
                Failed::bay(&error).at_bay(&bay_id).of_item(&item.item_id),
            )));
        }
    };
    sneakernet_failpoint::pause_point(AFTER_EJECT_POINT).await;
    Ok(Some(match ejected.item {
        Some(out) => {
            if out.item_id != item.item_id {
                // The user holds whatever came out: report that, loudly.
                tracing::error!(command_id = %id, bay_id = %bay_id, expected = %item.item_id, ejected = %out.item_id, "bay ejected another item than chosen");
            }
            ex.success(
                id,
                Outcome::Lend(pb::LendResult {
                    item_id: out.item_id.clone(),
                    bay_id: bay_id.clone(),
                    item: Some(wire::item(&out)),
                }),
            )
        }
        None => ex.failure(
            id,
            Failed::new(FailureReason::BayFault, "the bay opened empty")
                .at_bay(&bay_id)
                .of_item(&item.item_id),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::bays::{BayState, Bays};
    use crate::journal::Choice;
    use crate::wire;

    #[tokio::test]
    async fn interrupted_lend_whose_item_left_is_reported_lent() {
        let k = kiosk(SimFaults::default()).await;
        let lend = command("C-1", lend_spec(false), 60);
        k.executor.receive(&lend).await.unwrap();
        // Crash between the eject and the result: journaled executing, item gone.
        let leaving = k.bays.snapshot()[0].item.clone().unwrap();
        let choice = Choice {
            bay_id: "A01".into(),
            item_id: Some("D-1".into()),
            item: Some(wire::item(&leaving)),
        };
        assert!(k.journal.start("C-1", Some(&choice)).await.unwrap());
        k.bays.eject("A01").await.unwrap();

        assert_eq!(k.executor.recover().await.unwrap(), 1);
        let result = k
            .journal
            .command("C-1")
            .await
            .unwrap()
            .unwrap()
            .result
            .unwrap();
        let Some(Outcome::Lend(lent)) = result.outcome else {
            panic!("{result:?}")
        };
        assert_eq!(
            (lent.bay_id.as_str(), lent.item_id.as_str()),
            ("A01", "D-1")
        );
        assert_eq!(lent.item, Some(wire::item(&leaving)));
        // Resent after the restart: answered, not executed again.
        k.executor.handle(&lend).await.unwrap();
        assert_eq!(k.bays.eject_count("D-1"), 1);
        assert_eq!(k.bays.eject_count("D-2"), 0);
    }

    #[tokio::test]
    async fn interrupted_lend_whose_item_stayed_fails_and_ejects_nothing() {
        let k = kiosk(SimFaults::default()).await;
        let lend = command("C-1", lend_spec(false), 60);
        k.executor.receive(&lend).await.unwrap();
        let choice = Choice {
            bay_id: "A01".into(),
            item_id: Some("D-1".into()),
            item: None,
        };
        assert!(k.journal.start("C-1", Some(&choice)).await.unwrap());

        let result = k.executor.handle(&lend).await.unwrap();
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::Internal);
        assert!(message.contains("interrupted before eject"), "{message}");
        assert_eq!(k.bays.eject_count("D-1"), 0);
        assert_eq!(k.bays.snapshot()[0].state, BayState::Ready);
    }

    #[tokio::test]
    async fn reservation_lends_only_the_pinned_drive_and_jams_are_reported() {
        let k = kiosk(SimFaults {
            jammed_bays: vec!["A01".into()],
            ..SimFaults::default()
        })
        .await;
        let by_item = |id: &str, item: &str, order: &str| {
            command(
                id,
                pb::command_payload::Kind::Lend(pb::LendCommand {
                    target: Some(pb::lend_command::Target::ItemId(item.into())),
                    order_id: order.into(),
                }),
                60,
            )
        };
        let not_pinned = k
            .executor
            .handle(&by_item("C-1", "D-2", "O-7"))
            .await
            .unwrap();
        assert_eq!(failure_of(&not_pinned).0, FailureReason::ItemNotFound);

        k.bays.pin("D-2", "O-7").await.unwrap();
        let other_order = k
            .executor
            .handle(&by_item("C-2", "D-2", "O-8"))
            .await
            .unwrap();
        assert_eq!(failure_of(&other_order).0, FailureReason::ItemNotFound);
        let lent = k
            .executor
            .handle(&by_item("C-3", "D-2", "O-7"))
            .await
            .unwrap();
        assert!(matches!(lent.outcome, Some(Outcome::Lend(ref l)) if l.item_id == "D-2"));

        // A01 is jammed: the walk-up lend fails clearly and nothing leaves.
        let jammed = k.run("C-4", lend_spec(false)).await;
        assert_eq!(failure_of(&jammed).0, FailureReason::EjectJammed);
        assert_eq!(k.bays.eject_count("D-1"), 0);
        // The bay is now FAULT: the next walk-up lend finds nothing to lend.
        let none = k.run("C-5", lend_spec(false)).await;
        assert_eq!(failure_of(&none).0, FailureReason::NoMatchingItem);
    }

    #[tokio::test]
    async fn an_eject_that_timed_out_after_the_item_left_is_reported_lent() {
        let (_dir, bays, _journal, executor) = faulty_kiosk(Faults {
            eject_after: true,
            ..Faults::default()
        })
        .await;
        let result = handle_in_time(&executor, &command("C-1", lend_spec(false), 60)).await;
        let Some(Outcome::Lend(lent)) = &result.outcome else {
            panic!("the item left, so the lend happened: {result:?}")
        };
        assert_eq!(
            (lent.bay_id.as_str(), lent.item_id.as_str()),
            ("A01", "D-1")
        );
        assert_eq!(bays.eject_count("D-1"), 1);
        // A forced eject that times out after opening is settled the same way.
        let forced = handle_in_time(
            &executor,
            &command(
                "C-2",
                pb::command_payload::Kind::ForceEject(pb::ForceEjectCommand {
                    bay_id: "A02".into(),
                }),
                60,
            ),
        )
        .await;
        assert!(
            matches!(forced.outcome, Some(Outcome::ForceEject(ref f)) if f.item_id == "D-2"),
            "{forced:?}"
        );
    }
}
