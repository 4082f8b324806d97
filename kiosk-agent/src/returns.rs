//! The return check: a drive that came back is not lent again until it is known to hold what
//! it says.
//!
//! Where it runs: in the return detector's loop ([`crate::link`]), after each round of
//! reporting returns, so a returned drive is checked within a poll or two of coming back,
//! whether or not the link is up, and never by the command worker (a long check must not hold
//! a Lend back). The bays keep an unchecked drive BUSY ([`Drives::unverified`]) from the moment
//! it is inserted, durably, so a drive is never READY while unverified, even across a restart
//! in the middle of a check.
//!
//! The rule: a drive that comes back write-protected, says it holds a package, and whose
//! on-drive manifest names that package and matches every file read back keeps its content and
//! becomes READY. Any other drive (writable: its bytes may have changed; no or another
//! manifest; a file that differs) is wiped and becomes blank READY. Either change is reported
//! to the gateway as a partial inventory.

use std::sync::Arc;

use sneakernet_proto::gateway::v1 as pb;

use crate::bays::{BayError, Bays, Drives, ItemFacts, ItemInfo};
use crate::clock::KioskClock;
use crate::drive_content;
use crate::journal::Journal;
use crate::wire;

/// What the check decided for one drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// It matched its manifest: READY with its content.
    Kept(String),
    /// It was wiped: blank READY. The reason says why it was not kept.
    Wiped {
        /// The drive.
        item_id: String,
        /// Why.
        reason: String,
    },
}

/// Why `item` cannot keep its content, or `None` when it can (every file read back matched).
fn reason_to_wipe<D: Drives>(drives: &D, item: &ItemInfo) -> Option<String> {
    let ItemFacts::Drive {
        content_package_id,
        write_protected,
        ..
    } = &item.facts
    else {
        return Some("not a drive".into());
    };
    let Some(package) = content_package_id else {
        return Some("blank; may hold a user's files".into());
    };
    if !write_protected {
        return Some("came back writable".into());
    }
    drive_content::holds(drives, &item.item_id, package)
        .err()
        .map(|error| error.to_string())
}

/// Checks every unverified drive once (see the module documentation) and reports each change
/// as a partial inventory in the outbox. Returns what it decided; a bay error stops the round
/// (the drives not yet checked stay unverified and are checked next round).
pub async fn check_returned_drives<B: Bays + Drives>(
    bays: &Arc<B>,
    journal: &Journal,
    clock: &KioskClock,
) -> Result<Vec<Checked>, BayError> {
    let mut decided = Vec::new();
    for item in bays.unverified().await? {
        let reason = tokio::task::spawn_blocking({
            let bays = Arc::clone(bays);
            let item = item.clone();
            move || reason_to_wipe(&*bays, &item)
        })
        .await
        .map_err(|e| BayError::Storage(format!("return check: {e}")))?;
        let checked = match reason {
            None => match bays.mark_verified(&item.item_id).await? {
                Some(_) => Checked::Kept(item.item_id.clone()),
                None => continue, // wiped or taken meanwhile: nothing to decide
            },
            Some(reason) => {
                tracing::info!(item_id = %item.item_id, %reason, "wiping a returned drive");
                bays.wipe(&item.item_id).await?;
                Checked::Wiped {
                    item_id: item.item_id.clone(),
                    reason,
                }
            }
        };
        report_bay(&**bays, journal, clock, &item.item_id).await;
        decided.push(checked);
    }
    Ok(decided)
}

/// Queues a partial inventory with the bay now holding `item_id` (best effort: the next full
/// inventory says the same).
async fn report_bay<B: Bays>(bays: &B, journal: &Journal, clock: &KioskClock, item_id: &str) {
    let Ok(all) = bays.inventory().await else {
        return;
    };
    let changed: Vec<_> = all
        .into_iter()
        .filter(|b| b.item.as_ref().is_some_and(|i| i.item_id == item_id))
        .collect();
    let body = pb::open_request::Body::InventoryChanged(pb::InventoryChanged {
        change: Some(pb::inventory_changed::Change::Partial(wire::inventory(
            &changed,
            clock.now(),
        ))),
    });
    if let Err(error) = journal.enqueue(body, clock.now()).await {
        tracing::warn!(%item_id, %error, "cannot report a checked drive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bays::BayState;
    use crate::config::{SimBayConfig, SimFaults, SimItemConfig, SimItemKind, SimulationConfig};
    use crate::simulated::tests::package;
    use crate::simulated::{InboxInsert, SimulatedBays, queue_insert};

    fn drive(id: &str) -> SimItemConfig {
        SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: id.into(),
            capacity_bytes: Some(1 << 20),
            content_package_id: None,
            write_protected: false,
            charge_percent: None,
            remote_link: false,
        }
    }

    #[tokio::test]
    async fn a_returned_drive_keeps_its_content_only_if_protected_and_matching() {
        let dir = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        let manifest = package(source.path(), "pkg");
        let config = SimulationConfig {
            bays: ["A01", "A02", "A03"]
                .iter()
                .zip(["D-1", "D-2", "D-3"])
                .map(|(bay, item)| SimBayConfig {
                    id: (*bay).into(),
                    item: Some(drive(item)),
                })
                .collect(),
            faults: SimFaults::default(),
        };
        let bays = Arc::new(SimulatedBays::open(dir.path(), &config).await.unwrap());
        let journal = Journal::open(dir.path()).await.unwrap();
        let clock = KioskClock::new();
        for (item, protect) in [("D-1", true), ("D-2", true), ("D-3", false)] {
            bays.set_write_protect(item, protect).await.unwrap();
            bays.stock(item, &manifest, source.path()).await.unwrap();
        }
        let mut lent = Vec::new();
        for bay in ["A01", "A02", "A03"] {
            lent.push(bays.eject(bay).await.unwrap().item.unwrap());
        }
        // While D-2 was out, someone changed a byte of it.
        std::fs::write(bays.drive_dir("D-2").join("sub/b.txt"), b"hellO").unwrap();
        // They come back through the simulator's inbox, as they left.
        for (bay, item) in ["A01", "A02", "A03"].iter().zip(&lent) {
            queue_insert(
                dir.path(),
                &InboxInsert {
                    bay_id: (*bay).into(),
                    item_id: item.item_id.clone(),
                    item: None,
                },
            )
            .unwrap();
        }
        assert_eq!(bays.pending_inserted().await.unwrap().len(), 3);
        assert!(
            bays.snapshot().iter().all(|b| b.state == BayState::Busy),
            "never READY while unverified"
        );

        let mut checked = check_returned_drives(&bays, &journal, &clock)
            .await
            .unwrap();
        checked.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(checked[0], Checked::Kept("D-1".into()));
        assert!(
            matches!(&checked[1], Checked::Wiped { item_id, reason } if item_id == "D-2" && reason.contains("sub/b.txt")),
            "{checked:?}"
        );
        assert!(
            matches!(&checked[2], Checked::Wiped { item_id, reason } if item_id == "D-3" && reason.contains("writable")),
            "{checked:?}"
        );
        let snapshot = bays.snapshot();
        assert!(snapshot.iter().all(|b| b.state == BayState::Ready));
        let content = |i: usize| match &snapshot[i].item.as_ref().unwrap().facts {
            ItemFacts::Drive {
                content_package_id, ..
            } => content_package_id.clone(),
            ItemFacts::PowerBank { .. } => None,
        };
        assert_eq!(content(0), Some("pkg".into()));
        assert_eq!(content(1), None);
        assert_eq!(content(2), None);
        assert_eq!(std::fs::read_dir(bays.drive_dir("D-2")).unwrap().count(), 0);
        assert_eq!(
            journal.outbox_len().await.unwrap(),
            3,
            "each change reported"
        );
        assert!(
            check_returned_drives(&bays, &journal, &clock)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
