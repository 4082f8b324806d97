//! Progress writes, throttled per command: a kiosk may report progress as often as it likes,
//! the command's record is written at most once per [`PROGRESS_WRITE_EVERY`] per command,
//! with the latest report. Progress is not durable (the proto says so): a report held back
//! and then superseded by a newer one, or by the command's result, is simply never written,
//! and nothing is written for a command after its result arrived on this link.
//!
//! Pure bookkeeping owned by one session: no I/O, time passed in.

use std::collections::HashMap;
use std::time::Duration;

use sneakernet_proto::gateway::v1 as pb;
use tokio::time::Instant;

/// The least time between two progress writes of one command.
pub const PROGRESS_WRITE_EVERY: Duration = Duration::from_secs(1);
/// Commands tracked at once per link; a report for one more is dropped (a kiosk runs a few
/// long commands at a time, never this many).
pub const TRACKED_COMMANDS: usize = 64;

/// One command's progress on this link.
#[derive(Debug)]
struct Tracked {
    /// When its progress was last written.
    written_at: Instant,
    /// The latest report not written yet.
    held: Option<pb::Progress>,
}

/// The progress reports of one link, deciding which to write and when.
#[derive(Debug, Default)]
pub struct ProgressThrottle {
    commands: HashMap<String, Tracked>,
}

impl ProgressThrottle {
    /// A report arrived at `now`: returns it when it is to be written now; otherwise it is held
    /// (replacing any older held report) until [`Self::due`] hands it out.
    pub fn offer(&mut self, progress: pb::Progress, now: Instant) -> Option<pb::Progress> {
        if let Some(tracked) = self.commands.get_mut(&progress.command_id) {
            if now.saturating_duration_since(tracked.written_at) >= PROGRESS_WRITE_EVERY {
                tracked.written_at = now;
                tracked.held = None;
                return Some(progress);
            }
            tracked.held = Some(progress);
            return None;
        }
        if self.commands.len() >= TRACKED_COMMANDS {
            self.forget_quiet(now);
            if self.commands.len() >= TRACKED_COMMANDS {
                return None;
            }
        }
        self.commands.insert(
            progress.command_id.clone(),
            Tracked {
                written_at: now,
                held: None,
            },
        );
        Some(progress)
    }

    /// When the next held report may be written; `None` when none is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.commands
            .values()
            .filter(|t| t.held.is_some())
            .map(|t| t.written_at + PROGRESS_WRITE_EVERY)
            .min()
    }

    /// The held reports that may be written at `now` (each marked written).
    pub fn due(&mut self, now: Instant) -> Vec<pb::Progress> {
        let mut due = Vec::new();
        for tracked in self.commands.values_mut() {
            if tracked.held.is_some()
                && now.saturating_duration_since(tracked.written_at) >= PROGRESS_WRITE_EVERY
                && let Some(progress) = tracked.held.take()
            {
                tracked.written_at = now;
                due.push(progress);
            }
        }
        due
    }

    /// The command's result arrived: its held report is dropped (the result supersedes it)
    /// and it is no longer tracked.
    pub fn finished(&mut self, command_id: &str) {
        self.commands.remove(command_id);
    }

    /// Forgets commands with nothing held whose last write is older than the throttle: they
    /// would be written at once anyway.
    fn forget_quiet(&mut self, now: Instant) {
        self.commands.retain(|_, t| {
            t.held.is_some() || now.saturating_duration_since(t.written_at) < PROGRESS_WRITE_EVERY
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(command_id: &str, bytes_done: u64) -> pb::Progress {
        pb::Progress {
            command_id: command_id.into(),
            bytes_done,
            bytes_total: 1_000_000,
            phase: pb::ProgressPhase::Copying.into(),
        }
    }

    #[test]
    fn a_burst_of_progress_is_written_at_most_once_a_second_per_command_with_the_latest() {
        let mut throttle = ProgressThrottle::default();
        let start = Instant::now();
        let mut writes = Vec::new();
        // 10,000 reports over 2.5 seconds, for two commands.
        for n in 0..10_000u64 {
            let now = start + Duration::from_micros(n * 250);
            let command = if n % 2 == 0 { "C-1" } else { "C-2" };
            writes.extend(throttle.offer(report(command, n), now));
            if throttle.next_due().is_some_and(|due| due <= now) {
                writes.extend(throttle.due(now));
            }
        }
        let end = start + Duration::from_millis(2500);
        assert!(
            writes.len() <= 2 * 3,
            "at most one write per command per second (plus the first): {}",
            writes.len()
        );
        // After the burst, the latest report of each is written once its second is up.
        let later = end + PROGRESS_WRITE_EVERY;
        assert!(throttle.next_due().is_some_and(|due| due <= later));
        let last: Vec<u64> = throttle.due(later).iter().map(|p| p.bytes_done).collect();
        let mut last = last;
        last.sort_unstable();
        assert_eq!(last, [9_998, 9_999], "the latest of each command");
        assert_eq!(throttle.next_due(), None, "nothing left held");
    }

    #[test]
    fn a_result_drops_the_held_progress_so_nothing_is_written_after_it() {
        let mut throttle = ProgressThrottle::default();
        let now = Instant::now();
        assert!(throttle.offer(report("C-1", 1), now).is_some());
        assert!(throttle.offer(report("C-1", 2), now).is_none(), "held");
        throttle.finished("C-1");
        assert_eq!(throttle.next_due(), None);
        assert!(throttle.due(now + PROGRESS_WRITE_EVERY * 2).is_empty());
    }

    #[test]
    fn reports_for_more_commands_than_tracked_are_dropped_not_written() {
        let mut throttle = ProgressThrottle::default();
        let now = Instant::now();
        let written = (0..TRACKED_COMMANDS * 2)
            .filter(|n| throttle.offer(report(&format!("C-{n}"), 1), now).is_some())
            .count();
        assert_eq!(written, TRACKED_COMMANDS);
        // Once their second is up, quiet commands make room again.
        assert!(
            throttle
                .offer(report("C-new", 1), now + PROGRESS_WRITE_EVERY)
                .is_some()
        );
    }
}
