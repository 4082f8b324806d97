//! Standalone's simulated kiosks, driven as a person at the kiosk would: `sim return` puts an
//! item into a free bay, `sim qr` shows the QR code's text. Both work on the node's data
//! directory (`--data-dir`), so they run on the machine of the standalone node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use sneakernet_kiosk_agent::bays::BayState;
use sneakernet_kiosk_agent::config::SimItemConfig;
use sneakernet_kiosk_agent::simulated::{self, InboxInsert, SimulatorView};

use super::output::Output;
use crate::standalone::KIOSKS_DIR;

/// How long `sim return` waits for the running kiosk to take the item in.
const PICKUP_WAIT: Duration = Duration::from_secs(60);

/// Simulated-kiosk subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SimAction {
    /// Put an item that left a simulated kiosk into a free bay of `--kiosk` (any kiosk: a
    /// return), as a person would; waits until the running kiosk took it in. Fails, naming
    /// why, for an item that never left a kiosk, one already in a bay, a bay that is not
    /// free, or a kiosk with no free bay.
    Return {
        /// The kiosk to return at, e.g. K-BER-HBF.
        #[arg(long)]
        kiosk: String,
        /// The item's id, as `watch` or `orders` print it.
        #[arg(long)]
        item: String,
        /// The bay (default: the first free one).
        #[arg(long)]
        bay: Option<String>,
        /// The standalone node's data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the text a simulated kiosk's QR code shows now (valid for about a minute), for
    /// `scan`, `rent` and `collect`. Same as the older `sneakernet qr`.
    Qr {
        /// The simulated kiosk, e.g. K-BER-HBF.
        kiosk_id: String,
        /// The standalone node's data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a `sim` subcommand against the node whose data directory is `data_dir`.
pub async fn run(action: SimAction, default_data_dir: &Path, output: Output) -> anyhow::Result<()> {
    match action {
        SimAction::Qr { kiosk_id, data_dir } => {
            let data_dir = data_dir.unwrap_or_else(|| default_data_dir.to_owned());
            let text = qr_text(&data_dir, &kiosk_id).await?;
            output.print(json!({"kioskId": kiosk_id, "qr": text}), || {
                vec![text.clone()]
            });
            Ok(())
        }
        SimAction::Return {
            kiosk,
            item,
            bay,
            data_dir,
        } => {
            let data_dir = data_dir.unwrap_or_else(|| default_data_dir.to_owned());
            let bay = return_item(&data_dir, &kiosk, &item, bay.as_deref()).await?;
            output.print(
                json!({"kioskId": kiosk, "bayId": bay, "itemId": item}),
                || {
                    vec![format!(
                        "returned {item} into bay {bay} of {kiosk}; the kiosk reports it"
                    )]
                },
            );
            Ok(())
        }
    }
}

/// The text kiosk `kiosk_id`'s QR code shows now.
pub async fn qr_text(data_dir: &Path, kiosk_id: &str) -> anyhow::Result<String> {
    let kiosk = sneakernet_runtime::KioskId::parse(kiosk_id)
        .map_err(|why| anyhow::anyhow!("kiosk id {kiosk_id:?} {why}"))?;
    let secret = crate::standalone::read_qr_secret(data_dir, kiosk_id).await?;
    Ok(sneakernet_runtime::qr::payload(
        &kiosk,
        &secret,
        chrono::Utc::now(),
    ))
}

/// Puts `item` into `bay` (or the first free bay) of simulated kiosk `kiosk`; returns the bay
/// once the running kiosk took the item in.
async fn return_item(
    data_dir: &Path,
    kiosk: &str,
    item: &str,
    bay: Option<&str>,
) -> anyhow::Result<String> {
    let kiosks = data_dir.join(KIOSKS_DIR);
    let views = read_views(&kiosks)?;
    let Some((_, here)) = views.iter().find(|(id, _)| id == kiosk) else {
        let known: Vec<&str> = views.iter().map(|(id, _)| id.as_str()).collect();
        bail!(
            "no simulated kiosk {kiosk:?} in {} (known: {})",
            kiosks.display(),
            if known.is_empty() {
                "none: is this a standalone node's --data-dir?".to_owned()
            } else {
                known.join(", ")
            }
        );
    };
    let facts = facts_to_return(&views, item)?;
    let bay = free_bay(kiosk, here, bay)?;
    let request = InboxInsert {
        bay_id: bay.clone(),
        item_id: item.to_owned(),
        item: Some(facts),
    };
    let kiosk_dir = kiosks.join(kiosk);
    let file = simulated::queue_insert(&kiosk_dir, &request).with_context(|| {
        format!(
            "cannot write to the simulator inbox of {kiosk} under {}",
            kiosk_dir.display()
        )
    })?;
    wait_taken(&file, kiosk, item, &bay).await?;
    Ok(bay)
}

/// Every simulated kiosk's state under `kiosks`, by kiosk id.
fn read_views(kiosks: &Path) -> anyhow::Result<Vec<(String, SimulatorView)>> {
    let entries = match std::fs::read_dir(kiosks) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", kiosks.display())),
    };
    let mut views = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", kiosks.display()))?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(view) = simulated::read_view(&entry.path())
            .map_err(|e| anyhow::anyhow!("simulated kiosk {id}: {e}"))?
        {
            views.push((id, view));
        }
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(views)
}

/// The facts of `item` as it left a simulated kiosk; an error when it is in a bay now or
/// never left one.
fn facts_to_return(views: &[(String, SimulatorView)], item: &str) -> anyhow::Result<SimItemConfig> {
    for (kiosk, view) in views {
        if let Some(bay) = view
            .bays
            .iter()
            .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item))
        {
            bail!(
                "item {item} is in bay {} of {kiosk} already: only an item that is out can be returned",
                bay.bay_id
            );
        }
    }
    views
        .iter()
        .find_map(|(_, view)| view.departed.get(item).cloned())
        .with_context(|| {
            format!("item {item} never left a simulated kiosk of this node: nothing to return")
        })
}

/// `wanted` if it is a free bay of `kiosk`, else the first free bay.
fn free_bay(kiosk: &str, view: &SimulatorView, wanted: Option<&str>) -> anyhow::Result<String> {
    match wanted {
        Some(wanted) => {
            let bay = view
                .bays
                .iter()
                .find(|b| b.bay_id == wanted)
                .with_context(|| format!("{kiosk} has no bay {wanted:?}"))?;
            match &bay.state {
                BayState::Empty => Ok(bay.bay_id.clone()),
                BayState::Fault => bail!("bay {wanted} of {kiosk} is out of order"),
                _ => bail!(
                    "bay {wanted} of {kiosk} is occupied (item {})",
                    bay.item.as_ref().map(|i| i.item_id.as_str()).unwrap_or("?")
                ),
            }
        }
        None => view
            .bays
            .iter()
            .find(|b| b.state == BayState::Empty)
            .map(|b| b.bay_id.clone())
            .with_context(|| format!("{kiosk} has no free bay")),
    }
}

/// Waits until the kiosk applied the request in `file` (it deletes it) or rejected it (it
/// renames it `*.rejected`).
async fn wait_taken(file: &Path, kiosk: &str, item: &str, bay: &str) -> anyhow::Result<()> {
    let rejected = file.with_extension("rejected");
    let deadline = tokio::time::Instant::now() + PICKUP_WAIT;
    loop {
        if rejected.exists() {
            let _ = std::fs::remove_file(&rejected);
            bail!(
                "{kiosk} refused {item} into bay {bay} (it changed since this command looked; its log says why)"
            );
        }
        if !file.exists() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            // Taken back, so a kiosk started later does not apply a return the user was told
            // failed.
            let _ = std::fs::remove_file(file);
            bail!(
                "{kiosk} did not take {item} in within {}: is the standalone node of this --data-dir running?",
                humantime::format_duration(PICKUP_WAIT)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
