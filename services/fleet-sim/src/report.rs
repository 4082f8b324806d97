//! What a run measured: the JSON shape (stable field names, documented in docs/fleet-sim.md)
//! and the tables printed to standard output, one run or several side by side.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::probe::Sample;

/// The result of one `hold`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HoldReport {
    /// The run's name (gateway, echo, echo+heartbeats...).
    pub label: String,
    /// The address the links opened to.
    pub target: String,
    /// Links asked for.
    pub kiosks: usize,
    /// Source addresses used (0: the system's choice).
    pub sources: usize,
    /// Links up when the hold started.
    pub links_up: u64,
    /// The fewest links up at any sample during the hold.
    pub links_min_during_hold: u64,
    /// From the first link's start to the last link's Welcome; `None` when not all came up.
    pub connect_all_secs: Option<f64>,
    /// KioskLogin per link (first connection), milliseconds.
    pub login_ms: Percentiles,
    /// Connect + Open + Hello + Welcome per link (first connection), milliseconds.
    pub open_ms: Percentiles,
    /// How long the hold lasted.
    pub hold_secs: f64,
    /// The server's cost (with `--pid`).
    pub server: Option<ProcessCost>,
    /// fleet-sim's own cost.
    pub sim: ProcessCost,
    /// Heartbeats the kiosks sent.
    pub heartbeats_sent: u64,
    /// Heartbeats the kiosks received.
    pub heartbeats_received: u64,
    /// Token renewals.
    pub renewals: u64,
    /// Links reopened after a failure.
    pub reconnects: u64,
    /// Commands received.
    pub commands: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, ErrorCount>,
    /// The server's `*_total` counters per second of the hold (with `--metrics-url`). Scraped
    /// after the command grace, so command counters include the grace's few seconds.
    pub server_metrics_per_sec: BTreeMap<String, f64>,
    /// Commands (echo probes) during the hold (with `--commands-per-sec`).
    #[serde(default)]
    pub commands_per_sec: Option<CommandReport>,
}

/// Commands sent during the hold and how long they took.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommandReport {
    /// The rate asked for.
    pub rate: f64,
    /// Commands the gateway accepted (probes sent).
    pub sent: usize,
    /// Of those, results (probes) receipted within the grace after the hold.
    pub completed: usize,
    /// Ticks skipped because too many SendCommand calls were in flight.
    pub skipped: u64,
    /// The SendCommand (RequestInventory) call.
    pub rpc_ms: Percentiles,
    /// Call start to the command's arrival at its kiosk.
    pub send_to_delivered_ms: Percentiles,
    /// Call start (probe sent) to the Receipt of its result (of the probe).
    pub send_to_result_ms: Percentiles,
}

/// The command timings of a run.
pub fn commands(
    rate: f64,
    probes: &crate::link::Probes,
    rpc_micros: &[u64],
    skipped: u64,
) -> CommandReport {
    let sent = probes.sent.lock().map(|m| m.clone()).unwrap_or_default();
    let delivered = probes
        .delivered
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let done = probes.done.lock().map(|m| m.clone()).unwrap_or_default();
    let since = |map: &std::collections::HashMap<String, tokio::time::Instant>| -> Vec<u64> {
        sent.iter()
            .filter_map(|(id, at)| map.get(id).map(|then| then.saturating_duration_since(*at)))
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .collect()
    };
    let to_result = since(&done);
    CommandReport {
        rate,
        sent: sent.len(),
        completed: to_result.len(),
        skipped,
        rpc_ms: Percentiles::of(rpc_micros),
        send_to_delivered_ms: Percentiles::of(&since(&delivered)),
        send_to_result_ms: Percentiles::of(&to_result),
    }
}

/// How many errors of one kind, and the first one's message.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorCount {
    /// How many.
    pub count: u64,
    /// The first one's message.
    pub first: String,
}

/// The errors of a run, for the report.
pub fn errors(raw: BTreeMap<&'static str, (u64, String)>) -> BTreeMap<String, ErrorCount> {
    raw.into_iter()
        .map(|(kind, (count, first))| (kind.to_owned(), ErrorCount { count, first }))
        .collect()
}

/// Milliseconds at the 50th and 99th percentile, and the maximum.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Of microsecond samples.
    pub fn of(micros: &[u64]) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        let mut sorted = micros.to_vec();
        sorted.sort_unstable();
        let at = |q: f64| {
            let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
        };
        Self {
            n: sorted.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// What a process cost: memory grown by the links, CPU used while they were held.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessCost {
    /// Resident memory before the first link, KiB.
    pub rss_before_kib: u64,
    /// Resident memory at the end of the hold, KiB.
    pub rss_held_kib: u64,
    /// (held - before) / links, KiB.
    pub kib_per_link: f64,
    /// CPU used during the hold, percent of one core.
    pub idle_cpu_percent: f64,
    /// CPU seconds spent from the first link to the hold's start (connecting).
    pub connect_cpu_secs: f64,
    /// Open file descriptors at the end of the hold.
    pub fds: u64,
}

impl ProcessCost {
    /// From samples before the links, at the hold's start and at its end.
    pub fn new(before: Sample, start: Sample, end: Sample, links: u64, hold_secs: f64) -> Self {
        let grown = end.rss_kib.saturating_sub(before.rss_kib) as f64;
        Self {
            rss_before_kib: before.rss_kib,
            rss_held_kib: end.rss_kib,
            kib_per_link: if links == 0 {
                0.0
            } else {
                grown / links as f64
            },
            idle_cpu_percent: if hold_secs > 0.0 {
                (end.cpu.saturating_sub(start.cpu)).as_secs_f64() / hold_secs * 100.0
            } else {
                0.0
            },
            connect_cpu_secs: start.cpu.saturating_sub(before.cpu).as_secs_f64(),
            fds: end.fds,
        }
    }
}

/// One run as a table on standard output.
pub fn print_hold(report: &HoldReport) {
    print_compare(std::slice::from_ref(report));
}

/// Several runs side by side, with each one's ratio to the first on the memory and CPU rows.
pub fn print_compare(reports: &[HoldReport]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, cells: Vec<String>| rows.push((name.to_owned(), cells));
    let each = |f: &dyn Fn(&HoldReport) -> String| reports.iter().map(f).collect::<Vec<_>>();
    let base = reports.first();
    let ratio = |value: Option<f64>, of: Option<f64>| match (value, of) {
        (Some(v), Some(b)) if b > 0.0 && reports.len() > 1 => format!("{v:.1} ({:.1}x)", v / b),
        (Some(v), _) => format!("{v:.1}"),
        _ => "-".into(),
    };
    row("run", each(&|r| r.label.clone()));
    row(
        "links up / asked",
        each(&|r| format!("{}/{}", r.links_up, r.kiosks)),
    );
    row(
        "links min in hold",
        each(&|r| r.links_min_during_hold.to_string()),
    );
    row(
        "connect all (s)",
        each(&|r| {
            r.connect_all_secs.map_or("not all".into(), |s| {
                let b = base.and_then(|b| b.connect_all_secs);
                match b {
                    Some(b) if b > 0.0 && reports.len() > 1 => format!("{s:.2} ({:.1}x)", s / b),
                    _ => format!("{s:.2}"),
                }
            })
        }),
    );
    row(
        "login p50/p99 (ms)",
        each(&|r| {
            if r.login_ms.n == 0 {
                "-".into()
            } else {
                format!("{:.1}/{:.1}", r.login_ms.p50, r.login_ms.p99)
            }
        }),
    );
    row(
        "open p50/p99/max (ms)",
        each(&|r| {
            format!(
                "{:.1}/{:.1}/{:.1}",
                r.open_ms.p50, r.open_ms.p99, r.open_ms.max
            )
        }),
    );
    row("hold (s)", each(&|r| format!("{:.0}", r.hold_secs)));
    row(
        "server KiB/link",
        each(&|r| {
            ratio(
                r.server.as_ref().map(|s| s.kib_per_link),
                base.and_then(|b| b.server.as_ref().map(|s| s.kib_per_link)),
            )
        }),
    );
    row(
        "server idle CPU %",
        each(&|r| {
            ratio(
                r.server.as_ref().map(|s| s.idle_cpu_percent),
                base.and_then(|b| b.server.as_ref().map(|s| s.idle_cpu_percent)),
            )
        }),
    );
    row(
        "server connect CPU s",
        each(&|r| {
            r.server
                .as_ref()
                .map_or("-".into(), |s| format!("{:.2}", s.connect_cpu_secs))
        }),
    );
    row(
        "server RSS before/held MiB",
        each(&|r| {
            r.server.as_ref().map_or("-".into(), |s| {
                format!(
                    "{:.1}/{:.1}",
                    s.rss_before_kib as f64 / 1024.0,
                    s.rss_held_kib as f64 / 1024.0
                )
            })
        }),
    );
    row(
        "sim KiB/link, idle CPU %",
        each(&|r| format!("{:.1}, {:.1}", r.sim.kib_per_link, r.sim.idle_cpu_percent)),
    );
    row(
        "heartbeats sent/recv",
        each(&|r| format!("{}/{}", r.heartbeats_sent, r.heartbeats_received)),
    );
    row(
        "renewals, reconnects",
        each(&|r| format!("{}, {}", r.renewals, r.reconnects)),
    );
    row(
        "errors",
        each(&|r| {
            let total: u64 = r.errors.values().map(|e| e.count).sum();
            if total == 0 {
                "0".into()
            } else {
                r.errors
                    .iter()
                    .map(|(k, e)| format!("{k}:{}", e.count))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }),
    );
    let pct = |p: &Percentiles| {
        if p.n == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}/{:.1}/{:.1}", p.p50, p.p99, p.max)
        }
    };
    if reports.iter().any(|r| r.commands_per_sec.is_some()) {
        row(
            "commands sent/completed/skipped",
            each(&|r| {
                r.commands_per_sec.as_ref().map_or("-".into(), |c| {
                    format!("{}/{}/{} at {}/s", c.sent, c.completed, c.skipped, c.rate)
                })
            }),
        );
        row(
            "SendCommand p50/p99/max (ms)",
            each(&|r| {
                r.commands_per_sec
                    .as_ref()
                    .map_or("-".into(), |c| pct(&c.rpc_ms))
            }),
        );
        row(
            "send->delivered p50/p99/max",
            each(&|r| {
                r.commands_per_sec
                    .as_ref()
                    .map_or("-".into(), |c| pct(&c.send_to_delivered_ms))
            }),
        );
        row(
            "send->result p50/p99/max",
            each(&|r| {
                r.commands_per_sec
                    .as_ref()
                    .map_or("-".into(), |c| pct(&c.send_to_result_ms))
            }),
        );
    }
    let names: std::collections::BTreeSet<&String> = reports
        .iter()
        .flat_map(|r| r.server_metrics_per_sec.keys())
        .collect();
    for name in names {
        row(
            &format!("{name} /s"),
            each(&|r| {
                r.server_metrics_per_sec
                    .get(name)
                    .map_or("-".into(), |v| format!("{v:.2}"))
            }),
        );
    }
    let first = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..reports.len())
        .map(|i| rows.iter().map(|(_, c)| c[i].len()).max().unwrap_or(0))
        .collect();
    for (name, cells) in &rows {
        let mut line = format!("| {name:<first$} |");
        for (cell, width) in cells.iter().zip(&widths) {
            line.push_str(&format!(" {cell:>width$} |"));
        }
        println!("{line}");
        if name == "run" {
            let mut rule = format!("|{}|", "-".repeat(first + 2));
            for width in &widths {
                rule.push_str(&format!("{}:|", "-".repeat(width + 1)));
            }
            println!("{rule}");
        }
    }
    for report in reports {
        for (kind, error) in &report.errors {
            println!("{}: {kind}: first: {}", report.label, error.first);
        }
    }
}

/// `fleet-sim compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// JSON reports of `hold --json`; the first is the baseline of the ratios.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Prints several reports side by side.
pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for file in &args.files {
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| crate::usage(format!("cannot read {}: {e}", file.display())))?;
        let report: HoldReport = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a fleet-sim hold report", file.display()))?;
        reports.push(report);
    }
    print_compare(&reports);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_microseconds_in_milliseconds() {
        let samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(p.n, 100);
        assert!((p.p50 - 50.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99 - 99.0).abs() <= 1.0, "{p:?}");
        assert_eq!(p.max, 100.0);
        assert_eq!(Percentiles::of(&[]).n, 0);
    }
}
