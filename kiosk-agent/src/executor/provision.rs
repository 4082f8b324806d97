//! Provision (the fifth instruction): copy a content package onto a free drive, verify it, and
//! pin it to a reservation.
//!
//! The steps, each failing with its own reason:
//! 1. choose a READY drive of exactly the asked capacity ([`selection::choose_for_provision`]:
//!    a blank one first) — NO_FREE_DRIVE; journal the choice `executing`;
//! 2. fetch the manifest, retrying an unreachable service — DOWNLOAD_FAILED; content larger
//!    than the drive — DRIVE_FULL, before the drive is touched; then take the drive BUSY and
//!    erase it ([`Drives::prepare`]);
//! 3. download the chunks the cache lacks ([`download_missing`]) — CHUNK_CORRUPT naming the
//!    chunk after the retries, CACHE_FULL, DOWNLOAD_FAILED;
//! 4. copy every file from the cache onto the drive while hashing it — WRITE_FAILED,
//!    DRIVE_FULL when the drive fills, VERIFY_FAILED when what was written does not hash to
//!    the manifest's value;
//! 5. read everything back from the medium and check every file's BLAKE3 — VERIFY_FAILED
//!    naming the file;
//! 6. write the on-drive manifest, turn write protection on if asked — WRITE_PROTECT_FAILED;
//!    pin the drive to the order; answer a ProvisionResult.
//!
//! A Provision with no package (a blank reservation) takes and erases the drive (step 2's
//! second half), then runs step 6 without a manifest: a blank drive pinned to the order.
//!
//! Guarantees: a failure after the drive was taken wipes it (blank READY), so no drive looks
//! ready that is not (one that failed before keeps what it held); the deadline is checked between steps (and cancels a download), failing
//! DEADLINE_EXCEEDED; copying and hashing run on the blocking pool. After a crash an
//! interrupted Provision is not run again: [`settle_interrupted`] wipes its drive and answers
//! INTERNAL "interrupted", so it has exactly one result and never a half-written ready drive.
//! Progress (phase, bytes done of total) goes to the link at most every [`PROGRESS_EVERY`]
//! and on each phase change; it is not durable.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_proto::gateway::v1::{FailureReason, ProgressPhase};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Answer, ExecError, Executor, Failed};
use crate::bays::{BayError, BayState, Bays, DriveError, Drives, ItemInfo, within};
use crate::cache::{CacheError, ChunkCache};
use crate::content_source::download::{RETRY_INITIAL, RETRY_MAX};
use crate::content_source::{
    ChunkHash, ContentSource, DownloadError, Manifest, ManifestFile, Piece, SourceError,
    download_missing,
};
use crate::drive_content::{self, VerifyError};
use crate::journal::{Choice, JournaledCommand};
use crate::link::Backoff;
use crate::selection;
use crate::wire;

/// The pause point after the first file of a Provision is on the drive (tests kill the agent
/// there, mid-copy).
pub const MID_COPY_POINT: &str = "agent::provision::mid_copy";
/// Progress goes out at most this often (plus once at each phase change).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How many Progress messages wait for the link before new ones are dropped.
pub const PROGRESS_QUEUE: usize = 16;

/// What provisioning needs beside the bays: where content comes from, the chunk cache, how
/// often to retry, and where progress goes.
pub struct Content<S> {
    /// The content service (or a fake).
    pub source: Arc<S>,
    /// The kiosk's chunk cache.
    pub cache: ChunkCache,
    /// Retries of the manifest fetch, of an unreachable service and of a corrupt chunk.
    pub retries: u32,
    /// Progress for the link. Bounded ([`PROGRESS_QUEUE`]): when it is full (the link is down
    /// or slow) an update is dropped, never waited for; Progress is not durable.
    pub progress: mpsc::Sender<pb::Progress>,
}

/// The source of an executor that provisions nothing (tests of other commands): every call is
/// refused, and such an executor answers Provision UNSUPPORTED before asking it.
#[derive(Debug)]
pub struct NoContent;

impl ContentSource for NoContent {
    async fn manifest(&self, _: &str) -> Result<Manifest, SourceError> {
        Err(no_content())
    }

    async fn chunks(
        &self,
        _: &str,
        _: Vec<ChunkHash>,
        _: u64,
    ) -> Result<BoxStream<'static, Result<Piece, SourceError>>, SourceError> {
        Err(no_content())
    }
}

fn no_content() -> SourceError {
    SourceError::Refused {
        code: tonic::Code::Unimplemented,
        message: "this agent has no content service".into(),
    }
}

/// A validated Provision.
pub(super) struct Asked<'a> {
    pub order_id: &'a str,
    pub package_id: &'a str,
    pub capacity_bytes: u64,
    pub write_protect: bool,
    pub deadline: Option<DateTime<Utc>>,
}

/// Chooses a drive, journals it, takes it, and runs the steps; wipes the drive on failure.
pub(super) async fn execute<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    id: &str,
    asked: Asked<'_>,
) -> Answer {
    let Some(content) = &ex.content else {
        return Ok(Some(ex.failure(
            id,
            Failed::new(
                FailureReason::Unsupported,
                "this agent has no content service configured",
            ),
        )));
    };
    let bays = match ex.inventory().await {
        Ok(bays) => bays,
        Err(error) => return Ok(Some(ex.failure(id, Failed::bay(&error)))),
    };
    let Ok(bay) = selection::choose_for_provision(&bays, asked.capacity_bytes) else {
        return Ok(Some(ex.failure(
            id,
            Failed::new(
                FailureReason::NoFreeDrive,
                format!("no READY drive of {} bytes", asked.capacity_bytes),
            ),
        )));
    };
    let (bay_id, item_id) = match &bay.item {
        Some(item) => (bay.bay_id.clone(), item.item_id.clone()),
        None => {
            return Ok(Some(
                ex.failure(
                    id,
                    Failed::new(FailureReason::Internal, "chosen bay holds no item")
                        .at_bay(&bay.bay_id),
                ),
            ));
        }
    };
    let choice = Choice {
        bay_id: bay_id.clone(),
        item_id: Some(item_id.clone()),
        item: bay.item.as_ref().map(wire::item),
    };
    if !ex.journal.start(id, Some(&choice)).await? {
        return Ok(None);
    }
    tracing::info!(command_id = %id, %bay_id, %item_id, package_id = %asked.package_id, "provisioning");
    let mut run = Provisioning {
        ex,
        content,
        item_id: &item_id,
        asked: &asked,
        progress: ProgressReport::new(id, content.progress.clone()),
        touched: false,
    };
    let outcome = run.steps().await;
    Ok(Some(match outcome {
        Ok(done) => ex.success(
            id,
            Outcome::Provision(pb::ProvisionResult {
                item_id: item_id.clone(),
                bay_id,
                item: Some(wire::item(&done.item)),
                bytes_written: done.bytes_written,
                bytes_downloaded: done.bytes_downloaded,
            }),
        ),
        Err(failed) => {
            if run.touched {
                wipe_after_failure(ex, id, &item_id).await;
            }
            ex.failure(id, failed.at_bay(&bay_id).of_item(&item_id))
        }
    }))
}

/// After a crash: the Provision journaled `executing` with its drive is not run again. The
/// drive (unpinned first if the crash came after the pin) is wiped and the command fails
/// INTERNAL "interrupted", so it gets exactly one result and no drive is ready with bytes
/// nobody verified for this command. Bays that do not answer (a timeout, their own storage)
/// leave the command `executing` for the next recovery; a drive they refuse to wipe (a faulty
/// bay) is reported in the failure's message.
pub(super) async fn settle_interrupted<B: Bays + Drives, S: ContentSource>(
    ex: &Executor<B, S>,
    command: &JournaledCommand,
    order_id: &str,
) -> Result<pb::CommandResult, ExecError> {
    let id = command.command_id.as_str();
    let Some((bay_id, item_id)) = command
        .choice
        .as_ref()
        .and_then(|c| Some((c.bay_id.clone(), c.item_id.clone()?)))
    else {
        return Ok(ex.failure(
            id,
            Failed::new(
                FailureReason::Internal,
                "interrupted before a drive was chosen",
            ),
        ));
    };
    let bays = ex.inventory().await?;
    let here = bays
        .iter()
        .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item_id));
    let message = match here {
        None => "interrupted; the drive is no longer in the kiosk".to_owned(),
        Some(bay) => {
            let pinned_here =
                matches!(&bay.state, BayState::Pinned { order_id: o } if o == order_id);
            let wiped = async {
                if pinned_here {
                    within(
                        ex.timeouts.configure,
                        format!("unpin {item_id}"),
                        ex.bays.unpin(&item_id, order_id),
                    )
                    .await?;
                }
                within(
                    ex.timeouts.wipe,
                    format!("wipe {item_id}"),
                    ex.bays.wipe(&item_id),
                )
                .await
            };
            match wiped.await {
                Ok(_) => "interrupted by a restart; the drive was wiped".to_owned(),
                // Worth another try at the next recovery: the bays may answer then.
                Err(error @ (BayError::Timeout { .. } | BayError::Storage(_))) => {
                    return Err(error.into());
                }
                // The drive stays BUSY (or, if its pin was released, READY with the content
                // it verified before the pin): never ready with unverified bytes.
                Err(error) => {
                    format!("interrupted by a restart; the drive could not be wiped: {error}")
                }
            }
        }
    };
    Ok(ex.failure(
        id,
        Failed::new(FailureReason::Internal, message)
            .at_bay(bay_id)
            .of_item(item_id),
    ))
}

/// Wipes a drive a failed Provision wrote to. A wipe that fails leaves the drive BUSY (never
/// READY), which an operator's Wipe settles; it is logged, and the failure stands.
async fn wipe_after_failure<B: Bays + Drives, S>(ex: &Executor<B, S>, id: &str, item_id: &str) {
    let wiped = within(
        ex.timeouts.wipe,
        format!("wipe {item_id}"),
        ex.bays.wipe(item_id),
    )
    .await;
    if let Err(error) = wiped {
        tracing::error!(command_id = %id, %item_id, %error, "cannot wipe a drive after a failed provision; it stays BUSY");
    }
}

/// What a finished Provision reports.
struct Done {
    item: ItemInfo,
    bytes_written: u64,
    bytes_downloaded: u64,
}

/// One Provision's run after its drive was chosen and journaled.
struct Provisioning<'a, B: Bays + Drives, S> {
    ex: &'a Executor<B, S>,
    content: &'a Content<S>,
    item_id: &'a str,
    asked: &'a Asked<'a>,
    progress: ProgressReport,
    /// The drive was taken (BUSY, erased): a failure must wipe it.
    touched: bool,
}

impl<B: Bays + Drives, S: ContentSource> Provisioning<'_, B, S> {
    async fn steps(&mut self) -> Result<Done, Failed> {
        if self.asked.package_id.is_empty() {
            return self.blank().await;
        }
        let manifest = self.manifest().await?;
        // The on-drive manifest is written last and must fit too.
        let needed = manifest
            .total_bytes
            .saturating_add(manifest.to_json().len() as u64);
        if needed > self.asked.capacity_bytes {
            return Err(Failed::new(
                FailureReason::DriveFull,
                format!(
                    "package {} needs {needed} bytes with its manifest, the drive holds {}",
                    manifest.package_id, self.asked.capacity_bytes
                ),
            ));
        }
        self.check_deadline("before taking the drive")?;
        // From here on the drive is BUSY and erased: a failure wipes it.
        self.touched = true;
        within(
            self.ex.timeouts.wipe,
            format!("prepare {}", self.item_id),
            self.ex.bays.prepare(self.item_id),
        )
        .await
        .map_err(|e| Failed::bay(&e))?;
        self.check_deadline("before downloading")?;
        let (bytes_downloaded, _pin) = self.download(&manifest).await?;
        self.check_deadline("before copying")?;
        let bytes_written = self.copy(&manifest).await?;
        self.check_deadline("before verifying")?;
        self.verify(&manifest).await?;
        self.check_deadline("before configuring")?;
        let item = self.configure(&manifest).await?;
        Ok(Done {
            item,
            bytes_written,
            bytes_downloaded,
        })
    }

    /// A blank reservation: the drive is taken and erased like any other, then configured and
    /// pinned with no content (no manifest, nothing downloaded or copied).
    async fn blank(&mut self) -> Result<Done, Failed> {
        self.check_deadline("before taking the drive")?;
        self.touched = true;
        within(
            self.ex.timeouts.wipe,
            format!("prepare {}", self.item_id),
            self.ex.bays.prepare(self.item_id),
        )
        .await
        .map_err(|e| Failed::bay(&e))?;
        self.check_deadline("before configuring")?;
        let item = self.pin(None).await?;
        Ok(Done {
            item,
            bytes_written: 0,
            bytes_downloaded: 0,
        })
    }

    /// Time until the deadline (a day when there is none: every command has one).
    fn time_left(&self) -> Duration {
        self.asked
            .deadline
            .and_then(|deadline| (deadline - self.ex.clock.now()).to_std().ok())
            .unwrap_or(Duration::from_secs(24 * 3600))
    }

    fn check_deadline(&self, step: &str) -> Result<(), Failed> {
        match self.asked.deadline {
            Some(deadline) if self.ex.clock.now() > deadline => Err(Failed::new(
                FailureReason::DeadlineExceeded,
                format!("deadline {deadline} passed {step}"),
            )),
            _ => Ok(()),
        }
    }

    async fn manifest(&mut self) -> Result<Manifest, Failed> {
        let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
        let mut attempt = 0;
        loop {
            match self.content.source.manifest(self.asked.package_id).await {
                Ok(manifest) if manifest.package_id == self.asked.package_id => {
                    return Ok(manifest);
                }
                Ok(manifest) => {
                    return Err(Failed::new(
                        FailureReason::DownloadFailed,
                        format!(
                            "asked for package {}, got the manifest of {}",
                            self.asked.package_id, manifest.package_id
                        ),
                    ));
                }
                Err(SourceError::Unavailable(reason)) if attempt < self.content.retries => {
                    attempt += 1;
                    let delay = backoff.next_delay(&mut rand::rng());
                    tracing::warn!(package_id = %self.asked.package_id, %reason, ?delay, "manifest fetch failed; retrying");
                    tokio::time::sleep(delay.min(self.time_left())).await;
                    self.check_deadline("while fetching the manifest")?;
                }
                Err(error) => {
                    return Err(Failed::new(
                        FailureReason::DownloadFailed,
                        format!("manifest of {}: {error}", self.asked.package_id),
                    ));
                }
            }
        }
    }

    async fn download(
        &mut self,
        manifest: &Manifest,
    ) -> Result<(u64, crate::cache::CachePin), Failed> {
        let left = self.time_left();
        let progress = &mut self.progress;
        // The deadline drops the download mid-way; what it stored stays in the cache.
        let never = CancellationToken::new();
        let downloaded = tokio::time::timeout(
            left,
            download_missing(
                &*self.content.source,
                &self.content.cache,
                manifest,
                self.content.retries,
                |done, total| progress.update(ProgressPhase::Downloading, done, total),
                &never,
            ),
        )
        .await;
        match downloaded {
            Ok(Ok((report, pin))) => Ok((report.bytes_downloaded, pin)),
            Ok(Err(error)) => Err(download_failure(error)),
            Err(_) => Err(Failed::new(
                FailureReason::DeadlineExceeded,
                "deadline passed while downloading",
            )),
        }
    }

    /// Copies every file from the cache onto the drive, hashing as it writes.
    async fn copy(&mut self, manifest: &Manifest) -> Result<u64, Failed> {
        let total = manifest.total_bytes;
        let mut done = 0u64;
        self.progress.update(ProgressPhase::Copying, 0, total);
        for (index, file) in manifest.files.iter().enumerate() {
            self.check_deadline("while copying")?;
            done = done.saturating_add(self.copy_file(manifest, file, done, total).await?);
            if index == 0 {
                sneakernet_failpoint::pause_point(MID_COPY_POINT).await;
            }
        }
        Ok(done)
    }

    async fn copy_file(
        &mut self,
        manifest: &Manifest,
        file: &ManifestFile,
        before: u64,
        total: u64,
    ) -> Result<u64, Failed> {
        let bays = Arc::clone(&self.ex.bays);
        let item = self.item_id.to_owned();
        let path = file.path.clone();
        let mut out = blocking(move || bays.create_file(&item, &path))
            .await
            .and_then(|r| r.map_err(|e| write_failure(&e)))?;
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        for hash in &file.chunks {
            let bytes = self.chunk(manifest, hash).await?;
            let (back_out, back_hasher, result) = blocking(move || {
                let result = out.write(&bytes);
                if result.is_ok() {
                    hasher.update(&bytes);
                }
                (out, hasher, result.map(|()| bytes.len() as u64))
            })
            .await?;
            out = back_out;
            hasher = back_hasher;
            written = written.saturating_add(result.map_err(|e| write_failure(&e))?);
            self.progress.update(
                ProgressPhase::Copying,
                before.saturating_add(written),
                total,
            );
        }
        let finished: Result<u64, DriveError> = blocking(move || out.finish()).await?;
        finished.map_err(|e| write_failure(&e))?;
        if hasher.finalize() != file.blake3 || written != file.size {
            return Err(Failed::new(
                FailureReason::VerifyFailed,
                format!("{}: the bytes written do not match the manifest", file.path),
            ));
        }
        Ok(written)
    }

    /// A chunk's bytes from the cache (checked on read); one the cache lost or found corrupt
    /// is downloaded again, at most `retries` times.
    async fn chunk(
        &mut self,
        manifest: &Manifest,
        hash: &ChunkHash,
    ) -> Result<bytes::Bytes, Failed> {
        let mut attempt = 0;
        loop {
            match self.content.cache.read(hash).await {
                Ok(bytes) => return Ok(bytes),
                Err(error @ (CacheError::Corrupt { .. } | CacheError::Missing { .. }))
                    if attempt < self.content.retries =>
                {
                    attempt += 1;
                    tracing::warn!(%hash, %error, "cached chunk unusable; downloading it again");
                    self.download(manifest).await?;
                }
                Err(CacheError::Corrupt { hash }) => {
                    return Err(Failed::new(
                        FailureReason::ChunkCorrupt,
                        format!("chunk {hash} is corrupt in the cache"),
                    ));
                }
                Err(error) => {
                    return Err(Failed::new(
                        FailureReason::Internal,
                        format!("chunk cache: {error}"),
                    ));
                }
            }
        }
    }

    /// Reads everything back from the medium and checks every file's hash.
    async fn verify(&mut self, manifest: &Manifest) -> Result<(), Failed> {
        let bays = Arc::clone(&self.ex.bays);
        let item = self.item_id.to_owned();
        let manifest = manifest.clone();
        let total = manifest.total_bytes;
        let mut progress = self.progress.clone_for_blocking();
        progress.update(ProgressPhase::Verifying, 0, total);
        let (verified, progress) = blocking(move || {
            let mut done = 0u64;
            let verified = drive_content::verify(&*bays, &item, &manifest, |n| {
                done = done.saturating_add(n);
                progress.update(ProgressPhase::Verifying, done, total);
            });
            (verified, progress)
        })
        .await?;
        self.progress = progress;
        match verified {
            Ok(_) => Ok(()),
            Err(VerifyError::Mismatch { path, what }) => Err(Failed::new(
                FailureReason::VerifyFailed,
                format!("{path}: {what}"),
            )),
            Err(error) => Err(Failed::new(
                FailureReason::VerifyFailed,
                format!("reading back: {error}"),
            )),
        }
    }

    /// Writes the on-drive manifest, applies write protection, pins the drive.
    async fn configure(&mut self, manifest: &Manifest) -> Result<ItemInfo, Failed> {
        self.progress
            .update(ProgressPhase::Configuring, 0, manifest.total_bytes);
        let bays = Arc::clone(&self.ex.bays);
        let item = self.item_id.to_owned();
        let on_drive = manifest.clone();
        blocking(move || drive_content::write_manifest(&*bays, &item, &on_drive))
            .await?
            .map_err(|e| write_failure(&e))?;
        let pinned = self.pin(Some(manifest)).await?;
        self.progress.update(
            ProgressPhase::Configuring,
            manifest.total_bytes,
            manifest.total_bytes,
        );
        Ok(pinned)
    }

    /// Applies write protection if asked and pins the drive, as holding `manifest`'s package
    /// or (`None`) blank.
    async fn pin(&mut self, manifest: Option<&Manifest>) -> Result<ItemInfo, Failed> {
        if self.asked.write_protect {
            within(
                self.ex.timeouts.configure,
                format!("set_write_protect {}", self.item_id),
                self.ex.bays.set_write_protect(self.item_id, true),
            )
            .await
            .map_err(|e| Failed::new(FailureReason::WriteProtectFailed, e.to_string()))?;
        }
        let package_id = manifest.map_or("", |m| m.package_id.as_str());
        within(
            self.ex.timeouts.configure,
            format!("pin {}", self.item_id),
            self.ex
                .bays
                .mark_provisioned(self.item_id, package_id, self.asked.order_id),
        )
        .await
        .map_err(|e| Failed::bay(&e))
    }
}

/// Runs blocking file work on the blocking pool; a panic there is an INTERNAL failure.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failed> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failed::new(FailureReason::Internal, format!("copy task: {e}")))
}

/// The failure a drive write error means.
fn write_failure(error: &DriveError) -> Failed {
    let reason = match error {
        DriveError::Full { .. } => FailureReason::DriveFull,
        _ => FailureReason::WriteFailed,
    };
    Failed::new(reason, error.to_string())
}

/// The failure a download error means.
fn download_failure(error: DownloadError) -> Failed {
    let reason = match &error {
        DownloadError::ChunkCorrupt { .. } => FailureReason::ChunkCorrupt,
        DownloadError::CacheFull { .. } => FailureReason::CacheFull,
        DownloadError::Failed(_) => FailureReason::DownloadFailed,
        DownloadError::Cancelled => FailureReason::DeadlineExceeded,
        DownloadError::Cache(CacheError::Full { .. }) => FailureReason::CacheFull,
        DownloadError::Cache(_) => FailureReason::Internal,
    };
    Failed::new(reason, error.to_string())
}

/// Progress of one command, rate-limited: an update goes out when the phase changed or
/// [`PROGRESS_EVERY`] passed since the last one sent. Sending never waits: a full queue drops
/// the update (the next one carries newer numbers anyway).
struct ProgressReport {
    command_id: String,
    tx: mpsc::Sender<pb::Progress>,
    phase: ProgressPhase,
    last: Option<Instant>,
}

impl ProgressReport {
    fn new(command_id: &str, tx: mpsc::Sender<pb::Progress>) -> Self {
        Self {
            command_id: command_id.to_owned(),
            tx,
            phase: ProgressPhase::Unspecified,
            last: None,
        }
    }

    /// The same report, to move into blocking work and back.
    fn clone_for_blocking(&self) -> Self {
        Self {
            command_id: self.command_id.clone(),
            tx: self.tx.clone(),
            phase: self.phase,
            last: self.last,
        }
    }

    fn update(&mut self, phase: ProgressPhase, done: u64, total: u64) {
        let due = self.last.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if phase == self.phase && !due {
            return;
        }
        self.phase = phase;
        self.last = Some(Instant::now());
        // Full (link down or slow): dropped on purpose; progress is not durable.
        let _ = self.tx.try_send(pb::Progress {
            command_id: self.command_id.clone(),
            bytes_done: done,
            bytes_total: total,
            phase: phase as i32,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use tokio::sync::Notify;

    use super::super::Perform;
    use super::super::testing::{Faults, FaultyBays, command, failure_of};
    use super::*;
    use crate::bays::ItemFacts;
    use crate::clock::KioskClock;
    use crate::config::{SimBayConfig, SimFaults, SimItemConfig, SimItemKind, SimulationConfig};
    use crate::content_source::download::tests::{FakeSource, noise};
    use crate::content_source::manifest::tests::proto_manifest;
    use crate::journal::Journal;
    use crate::simulated::SimulatedBays;

    const MIB: u64 = 1 << 20;
    /// Room for both test packages with no eviction.
    const ROOMY: u64 = 64 * MIB;
    /// Drives of this size hold one test package.
    const DRIVE: u64 = 8 * MIB;

    type Files = Vec<(String, Vec<u8>)>;

    /// Two files: 2.5 MiB (three chunks) and 1000 bytes.
    fn files(name: &str) -> Files {
        vec![
            (
                format!("{name}/film.bin"),
                noise(name, (5 * MIB / 2) as usize),
            ),
            (
                format!("{name}/notes.txt"),
                noise(&format!("{name}-n"), 1000),
            ),
        ]
    }

    fn manifest(package_id: &str, files: &Files) -> Manifest {
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let mut manifest = Manifest::try_from(proto_manifest(&refs)).unwrap();
        manifest.package_id = package_id.into();
        manifest
    }

    /// Packages P1 and P2, served from memory by the download tests' fake.
    struct Packages {
        chunks: FakeSource,
        manifests: HashMap<String, Manifest>,
        /// How long a manifest takes to arrive.
        manifest_delay: std::sync::Mutex<Duration>,
    }

    impl ContentSource for Packages {
        async fn manifest(&self, package_id: &str) -> Result<Manifest, SourceError> {
            let delay = *self.manifest_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            self.manifests
                .get(package_id)
                .cloned()
                .ok_or_else(|| SourceError::Refused {
                    code: tonic::Code::NotFound,
                    message: format!("no package {package_id}"),
                })
        }

        async fn chunks(
            &self,
            package_id: &str,
            hashes: Vec<ChunkHash>,
            first_chunk_offset: u64,
        ) -> Result<BoxStream<'static, Result<Piece, SourceError>>, SourceError> {
            self.chunks
                .chunks(package_id, hashes, first_chunk_offset)
                .await
        }
    }

    struct Kiosk {
        dir: tempfile::TempDir,
        bays: SimulatedBays,
        journal: Journal,
        executor: Arc<Executor<FaultyBays, Packages>>,
        cache: ChunkCache,
        progress: mpsc::Receiver<pb::Progress>,
        files: HashMap<String, Files>,
    }

    fn drive(id: &str, capacity: u64) -> SimItemConfig {
        SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: id.into(),
            capacity_bytes: Some(capacity),
            content_package_id: None,
            write_protected: false,
            charge_percent: None,
            remote_link: false,
        }
    }

    async fn open(
        dir: tempfile::TempDir,
        drives: &[(&str, u64)],
        budget: u64,
        faults: Faults,
    ) -> Kiosk {
        let simulation = SimulationConfig {
            bays: drives
                .iter()
                .enumerate()
                .map(|(i, (item, capacity))| SimBayConfig {
                    id: format!("A{:02}", i + 1),
                    item: Some(drive(item, *capacity)),
                })
                .collect(),
            faults: SimFaults::default(),
        };
        let bays = SimulatedBays::open(dir.path(), &simulation).await.unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let cache = ChunkCache::open(dir.path().join("chunk-cache"), budget)
            .await
            .unwrap();
        let files: HashMap<String, Files> = ["P1", "P2"]
            .iter()
            .map(|p| ((*p).to_owned(), files(p)))
            .collect();
        let all: Files = files.values().flatten().cloned().collect();
        let source = Packages {
            chunks: FakeSource::serving(&all),
            manifests: files
                .iter()
                .map(|(id, f)| (id.clone(), manifest(id, f)))
                .collect(),
            manifest_delay: std::sync::Mutex::new(Duration::ZERO),
        };
        let (tx, progress) = mpsc::channel(1024);
        let executor = Executor::new(
            journal.clone(),
            Arc::new(FaultyBays {
                inner: bays.clone(),
                hang: faults,
            }),
            KioskClock::new(),
            Arc::new(Notify::new()),
        )
        .with_content(Content {
            source: Arc::new(source),
            cache: cache.clone(),
            retries: 2,
            progress: tx,
        });
        Kiosk {
            dir,
            bays,
            journal,
            executor: Arc::new(executor),
            cache,
            progress,
            files,
        }
    }

    async fn kiosk(drives: &[(&str, u64)], budget: u64, faults: Faults) -> Kiosk {
        open(tempfile::tempdir().unwrap(), drives, budget, faults).await
    }

    fn provision(id: &str, order: &str, package: &str, capacity: u64) -> pb::Command {
        command(
            id,
            pb::command_payload::Kind::Provision(pb::ProvisionCommand {
                order_id: order.into(),
                package_id: package.into(),
                capacity_bytes: capacity,
                write_protect: true,
            }),
            60,
        )
    }

    fn provisioned(result: &pb::CommandResult) -> &pb::ProvisionResult {
        match &result.outcome {
            Some(Outcome::Provision(done)) => done,
            other => panic!("expected a ProvisionResult, got {other:?}"),
        }
    }

    fn files_on(dir: &Path) -> usize {
        walk(dir).len()
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    impl Kiosk {
        async fn provision(
            &self,
            id: &str,
            order: &str,
            package: &str,
            capacity: u64,
        ) -> pb::CommandResult {
            self.executor
                .handle(&provision(id, order, package, capacity))
                .await
                .unwrap()
        }

        fn state_of(&self, item: &str) -> (BayState, ItemFacts) {
            let bay = self
                .bays
                .snapshot()
                .into_iter()
                .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item))
                .unwrap();
            (bay.state, bay.item.unwrap().facts)
        }

        /// The drive is blank, READY, and its directory empty: nothing looks provisioned.
        fn assert_wiped(&self, item: &str) {
            let (state, facts) = self.state_of(item);
            assert_eq!(state, BayState::Ready);
            assert!(matches!(
                facts,
                ItemFacts::Drive {
                    content_package_id: None,
                    write_protected: false,
                    ..
                }
            ));
            assert_eq!(files_on(&self.bays.drive_dir(item)), 0, "{item} erased");
        }
    }

    #[tokio::test]
    async fn provision_writes_identical_files_and_manifest_pins_and_a_second_downloads_nothing() {
        let mut k = kiosk(&[("D-1", DRIVE), ("D-2", DRIVE)], ROOMY, Faults::default()).await;
        let first = k.provision("C-1", "O-1", "P1", DRIVE).await;
        let done = provisioned(&first);
        let package_bytes = 5 * MIB / 2 + 1000;
        assert_eq!(done.item_id, "D-1");
        assert_eq!(done.bytes_written, package_bytes);
        assert_eq!(done.bytes_downloaded, package_bytes);
        for (path, bytes) in &k.files["P1"] {
            assert_eq!(
                &std::fs::read(k.bays.drive_dir("D-1").join(path)).unwrap(),
                bytes,
                "{path} byte-identical"
            );
        }
        let on_drive = drive_content::read_manifest(&k.bays, "D-1")
            .unwrap()
            .unwrap();
        assert_eq!(on_drive, manifest("P1", &k.files["P1"]));
        assert_eq!(
            k.state_of("D-1"),
            (
                BayState::Pinned {
                    order_id: "O-1".into()
                },
                ItemFacts::Drive {
                    capacity_bytes: DRIVE,
                    content_package_id: Some("P1".into()),
                    write_protected: true,
                    remote_link: false,
                }
            )
        );
        let mut phases = Vec::new();
        while let Ok(update) = k.progress.try_recv() {
            assert_eq!(update.command_id, "C-1");
            if phases.last() != Some(&update.phase) {
                phases.push(update.phase);
            }
        }
        assert_eq!(
            phases,
            [
                ProgressPhase::Downloading as i32,
                ProgressPhase::Copying as i32,
                ProgressPhase::Verifying as i32,
                ProgressPhase::Configuring as i32
            ]
        );

        let inserted = k.cache.stats().inserted;
        let second = k.provision("C-2", "O-2", "P1", DRIVE).await;
        assert_eq!(provisioned(&second).item_id, "D-2");
        assert_eq!(provisioned(&second).bytes_downloaded, 0);
        assert_eq!(k.cache.stats().inserted, inserted, "no chunk fetched again");
    }

    #[tokio::test]
    async fn a_chunk_corrupt_on_every_fetch_fails_naming_it_and_leaves_no_drive_ready() {
        let k = kiosk(&[("D-1", DRIVE)], ROOMY, Faults::default()).await;
        let bad = k.executor.content.as_ref().unwrap().source.manifests["P1"].files[0].chunks[1];
        k.executor
            .content
            .as_ref()
            .unwrap()
            .source
            .chunks
            .corrupt
            .lock()
            .unwrap()
            .insert(bad, 100);
        let result = k.provision("C-1", "O-1", "P1", DRIVE).await;
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::ChunkCorrupt, "{message}");
        assert!(message.contains(&bad.to_hex().to_string()), "{message}");
        k.assert_wiped("D-1");
    }

    #[tokio::test]
    async fn a_drive_too_small_fails_drive_full_before_anything_is_written() {
        let k = kiosk(&[("D-1", MIB)], ROOMY, Faults::default()).await;
        let result = k.provision("C-1", "O-1", "P1", MIB).await;
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::DriveFull, "{message}");
        assert_eq!(k.cache.stats().inserted, 0, "nothing downloaded either");
        k.assert_wiped("D-1");

        let none = k.provision("C-2", "O-2", "P1", DRIVE).await;
        assert_eq!(failure_of(&none).0, FailureReason::NoFreeDrive);
    }

    #[tokio::test]
    async fn an_unknown_package_and_a_cache_too_small_are_named_and_leave_no_drive_ready() {
        let k = kiosk(&[("D-1", DRIVE)], 2 * MIB, Faults::default()).await;
        let unknown = k.provision("C-1", "O-1", "P9", DRIVE).await;
        let (reason, message) = failure_of(&unknown);
        assert_eq!(reason, FailureReason::DownloadFailed, "{message}");
        assert!(message.contains("P9"), "{message}");
        k.assert_wiped("D-1");

        let too_big = k.provision("C-2", "O-1", "P1", DRIVE).await;
        let (reason, message) = failure_of(&too_big);
        assert_eq!(reason, FailureReason::CacheFull, "{message}");
        k.assert_wiped("D-1");
    }

    #[tokio::test]
    async fn a_deadline_that_passes_mid_way_fails_deadline_exceeded() {
        let k = kiosk(&[("D-1", DRIVE)], ROOMY, Faults::default()).await;
        let source = &k.executor.content.as_ref().unwrap().source;
        *source.manifest_delay.lock().unwrap() = Duration::from_millis(1500);
        let result = k
            .executor
            .handle(&command(
                "C-1",
                pb::command_payload::Kind::Provision(pb::ProvisionCommand {
                    order_id: "O-1".into(),
                    package_id: "P1".into(),
                    capacity_bytes: DRIVE,
                    write_protect: false,
                }),
                1,
            ))
            .await
            .unwrap();
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::DeadlineExceeded, "{message}");
        k.assert_wiped("D-1");
    }

    #[tokio::test]
    async fn bytes_that_read_back_wrong_fail_verification_naming_the_file_and_are_wiped() {
        let k = kiosk(
            &[("D-1", DRIVE)],
            ROOMY,
            Faults {
                corrupt_on_read_back: Some("P1/notes.txt"),
                ..Faults::default()
            },
        )
        .await;
        let result = k.provision("C-1", "O-1", "P1", DRIVE).await;
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::VerifyFailed, "{message}");
        assert!(message.contains("P1/notes.txt"), "{message}");
        k.assert_wiped("D-1");
    }

    #[tokio::test]
    async fn a_cache_smaller_than_two_packages_evicts_and_both_provisions_succeed() {
        let k = kiosk(
            &[("D-1", DRIVE), ("D-2", DRIVE)],
            4 * MIB,
            Faults::default(),
        )
        .await;
        for (id, order, package) in [("C-1", "O-1", "P1"), ("C-2", "O-2", "P2")] {
            let result = k.provision(id, order, package, DRIVE).await;
            provisioned(&result);
        }
        assert!(k.cache.stats().evictions > 0, "{:?}", k.cache.stats());
        assert!(k.cache.stats().bytes <= 4 * MIB);
    }

    #[tokio::test]
    async fn a_provision_dropped_mid_copy_gets_one_result_and_its_drive_is_wiped() {
        let mut k = kiosk(&[("D-1", DRIVE)], ROOMY, Faults::default()).await;
        let command = provision("C-1", "O-1", "P1", DRIVE);
        let running = tokio::spawn({
            let executor = Arc::clone(&k.executor);
            let command = command.clone();
            async move { executor.handle(&command).await }
        });
        // The copy has begun: kill the executor there (its future is dropped mid-copy).
        loop {
            let update = k.progress.recv().await.unwrap();
            if update.phase == ProgressPhase::Copying as i32 {
                break;
            }
        }
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        let (state, _) = k.state_of("D-1");
        assert_eq!(state, BayState::Busy, "half written: never READY");
        assert_eq!(
            k.journal.command("C-1").await.unwrap().unwrap().state,
            crate::journal::CommandState::Executing
        );

        let Kiosk { dir, .. } = k;
        let k = open(dir, &[("D-1", DRIVE)], ROOMY, Faults::default()).await;
        assert_eq!(k.executor.recover().await.unwrap(), 1);
        let result = k.executor.handle(&command).await.unwrap();
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::Internal, "{message}");
        assert!(message.contains("interrupted"), "{message}");
        k.assert_wiped("D-1");
        assert_eq!(
            k.executor.recover().await.unwrap(),
            0,
            "exactly one result: nothing left to settle"
        );
        assert_eq!(k.executor.handle(&command).await.unwrap(), result);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_goes_out_on_phase_changes_and_at_most_every_quarter_second() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut report = ProgressReport::new("C-1", tx);
        report.update(ProgressPhase::Downloading, 0, 10);
        report.update(ProgressPhase::Downloading, 5, 10); // too soon: dropped
        report.update(ProgressPhase::Copying, 0, 10); // a new phase: sent
        tokio::time::advance(PROGRESS_EVERY).await;
        report.update(ProgressPhase::Copying, 7, 10); // the queue is full: dropped, no wait
        let sent: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|p| (p.phase, p.bytes_done))
            .collect();
        assert_eq!(
            sent,
            [
                (ProgressPhase::Downloading as i32, 0),
                (ProgressPhase::Copying as i32, 0)
            ]
        );
        tokio::time::advance(PROGRESS_EVERY).await;
        report.update(ProgressPhase::Copying, 9, 10);
        assert_eq!(rx.try_recv().unwrap().bytes_done, 9);
    }
}
