//! SetWriteProtect: turn a drive's write protection on or off. Run again after a crash (a
//! repeat sets the same state); a timed-out change counts as done only if the bays then report
//! the drive in the asked state.

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;

use super::{Answer, Executor, Run};
use crate::bays::{BayInfo, Bays, Drives, ItemFacts, within};
use crate::content_source::ContentSource;

/// Journals, asks the drive, judges a timeout from the bays, answers.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    item_id: &str,
    on: bool,
    run: Run,
) -> Answer {
    let call = within(
        ex.timeouts.configure,
        format!("set_write_protect {item_id}"),
        ex.bays.set_write_protect(item_id, on),
    );
    let set = |bay: &BayInfo| {
        bay.item.as_ref().is_some_and(|item| {
            matches!(item.facts, ItemFacts::Drive { write_protected, .. } if write_protected == on)
        })
    };
    ex.run_judged(id, run, item_id, call, set, |item| {
        let write_protected = matches!(
            item.facts,
            ItemFacts::Drive {
                write_protected: true,
                ..
            }
        );
        Outcome::SetWriteProtect(pb::SetWriteProtectResult {
            item_id: item.item_id,
            write_protected,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::bays::{DriveError, Drives};

    #[tokio::test]
    async fn write_protection_is_reported_as_set() {
        let k = kiosk(SimFaults::default()).await;
        let wp = k
            .run(
                "C-wp",
                pb::command_payload::Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                    item_id: "D-1".into(),
                    on: true,
                }),
            )
            .await;
        assert!(matches!(wp.outcome, Some(Outcome::SetWriteProtect(ref r)) if r.write_protected));
    }

    #[tokio::test]
    async fn a_protected_drive_refuses_writes_until_protection_is_turned_off() {
        let k = kiosk(SimFaults::default()).await;
        let set = |id: &str, on: bool| {
            command(
                id,
                pb::command_payload::Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                    item_id: "D-1".into(),
                    on,
                }),
                60,
            )
        };
        let write = || {
            let mut file = k.bays.create_file("D-1", "note.txt")?;
            file.write(b"hi")?;
            file.finish()
        };
        k.executor.handle(&set("C-on", true)).await.unwrap();
        assert_eq!(
            write().unwrap_err(),
            DriveError::WriteProtected("D-1".into())
        );
        k.executor.handle(&set("C-off", false)).await.unwrap();
        assert_eq!(write().unwrap(), 2);
        assert_eq!(
            std::fs::read(k.bays.drive_dir("D-1").join("note.txt")).unwrap(),
            b"hi"
        );
    }
}
