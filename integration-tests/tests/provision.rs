//! The fifth instruction end to end: a package uploaded through ContentService is provisioned
//! by a real kiosk agent onto a simulated drive (real files), verified byte for byte; failures
//! say which and leave no drive that looks ready; a kiosk killed mid-copy answers once; a small
//! chunk cache evicts and still provisions; write protection is toggled remotely.

use std::path::Path;
use std::time::Duration;

use sneakernet::content::Upload;
use sneakernet_integration_tests::content::{self, MIB};
use sneakernet_integration_tests::kiosk::{
    self, AgentProcess, simulated_agent_config, write_agent_toml,
};
use sneakernet_integration_tests::{Sandbox, backends, eventually, fast_links};
use sneakernet_kiosk_agent::bays::{BayState, Drives, ItemFacts};
use sneakernet_kiosk_agent::config::{
    AgentConfig, SimBayConfig, SimFaults, SimItemConfig, SimItemKind,
};
use sneakernet_kiosk_agent::content_source::Manifest;
use sneakernet_kiosk_agent::drive_content;
use sneakernet_kiosk_agent::simulated::SimulatedBays;
use sneakernet_proto::gateway::v1 as pb;
use tonic::transport::Channel;

/// Blank drives `D-1..` of `capacity` bytes in bays `A1..`.
fn blank_drives(capacities: &[u64]) -> Vec<SimBayConfig> {
    capacities
        .iter()
        .enumerate()
        .map(|(n, capacity)| SimBayConfig {
            id: format!("A{}", n + 1),
            item: Some(SimItemConfig {
                kind: SimItemKind::Drive,
                item_id: format!("D-{}", n + 1),
                capacity_bytes: Some(*capacity),
                content_package_id: None,
                write_protected: false,
                charge_percent: None,
                remote_link: false,
            }),
        })
        .collect()
}

/// A kiosk K-1 of the sandbox with `bays`, its data under `dir`.
async fn kiosk_config(sandbox: &Sandbox, dir: &Path, bays: Vec<SimBayConfig>) -> AgentConfig {
    let secret = sandbox.kiosk_secret("K-1").await;
    simulated_agent_config(
        dir,
        "K-1",
        &secret,
        sandbox.node().address,
        bays,
        SimFaults::default(),
    )
}

/// Sends a Provision of `package_id` onto a drive of `capacity` for `order` to K-1.
async fn provision(
    channel: &Channel,
    operator: &str,
    order: &str,
    package_id: &str,
    capacity: u64,
    write_protect: bool,
) -> String {
    let payload = pb::CommandPayload {
        kind: Some(pb::command_payload::Kind::Provision(pb::ProvisionCommand {
            order_id: order.into(),
            package_id: package_id.into(),
            capacity_bytes: capacity,
            write_protect,
        })),
    };
    kiosk::send_command(channel, operator, payload, &format!("provision:{order}")).await
}

/// Sends `payload` to K-1 and waits for its final state.
async fn command(
    channel: &Channel,
    operator: &str,
    payload: pb::command_payload::Kind,
) -> pb::CommandRecord {
    let payload = pb::CommandPayload {
        kind: Some(payload),
    };
    let key = uuid::Uuid::new_v4().to_string();
    let id = kiosk::send_command(channel, operator, payload, &key).await;
    finished(channel, operator, &id).await
}

/// Waits until the command SUCCEEDED or FAILED and returns its record.
async fn finished(channel: &Channel, operator: &str, command_id: &str) -> pb::CommandRecord {
    kiosk::finished_command(channel, operator, command_id, Duration::from_secs(120)).await
}

fn provisioned(record: &pb::CommandRecord) -> pb::ProvisionResult {
    match record.result.as_ref().and_then(|r| r.outcome.clone()) {
        Some(pb::command_result::Outcome::Provision(result)) => result,
        other => panic!("expected a provision result, got {other:?}"),
    }
}

fn failure(record: &pb::CommandRecord) -> pb::Failure {
    match record.result.as_ref().and_then(|r| r.outcome.clone()) {
        Some(pb::command_result::Outcome::Failure(failure)) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Uploads a generated package; returns it, its id and its manifest as a kiosk checks it.
async fn published(
    channel: &Channel,
    operator: &str,
    dir: &Path,
    seed: &str,
    files: &[(&str, u64)],
) -> (Upload, String, Manifest) {
    let package = content::generate(dir, seed, seed, files);
    let ready = sneakernet::content::upload_dir(channel, operator, &package, |_| {})
        .await
        .expect("upload");
    let manifest = content::manifest(channel, operator, &ready.package_id).await;
    let manifest = Manifest::try_from(manifest).expect("a well-formed manifest");
    (package, ready.package_id, manifest)
}

/// The drive holds exactly the package's files, byte for byte, and its manifest.
fn assert_holds(bays: &SimulatedBays, item_id: &str, package: &Upload, manifest: &Manifest) {
    let drive = bays.drive_dir(item_id);
    for file in &package.files {
        assert_eq!(
            std::fs::read(drive.join(&file.path)).expect("file on the drive"),
            std::fs::read(package.dir.join(&file.path)).expect("uploaded file"),
            "{item_id}: {} is byte-identical to the upload",
            file.path
        );
    }
    let on_drive = drive_content::read_manifest(bays, item_id)
        .expect("readable manifest")
        .expect("a manifest on the drive");
    assert_eq!(&on_drive, manifest, "{item_id}: the on-drive manifest");
}

/// Neither pinned nor carrying a manifest: nothing looks ready.
fn assert_not_ready(bays: &SimulatedBays, item_id: &str) {
    let bay = bays
        .snapshot()
        .into_iter()
        .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item_id))
        .expect("the drive is in a bay");
    assert!(
        !matches!(bay.state, BayState::Pinned { .. }),
        "{item_id} is not pinned: {bay:?}"
    );
    assert!(
        matches!(
            bay.item.as_ref().map(|i| &i.facts),
            Some(ItemFacts::Drive {
                content_package_id: None,
                ..
            })
        ),
        "{item_id} claims no content: {bay:?}"
    );
    assert!(
        !bays
            .drive_dir(item_id)
            .join(drive_content::MANIFEST_PATH)
            .exists(),
        "{item_id} carries no manifest"
    );
}

const FILES: [(&str, u64); 4] = [
    ("films/feature.mkv", 21 * MIB + 123),
    ("films/extras.mkv", 9 * MIB),
    ("README.txt", 4097),
    ("empty", 0),
];

#[tokio::test]
async fn a_provision_copies_the_package_byte_identical_and_a_second_one_downloads_nothing() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let source = tempfile::tempdir().unwrap();
        let (package, package_id, manifest) =
            published(&channel, &operator, source.path(), "provision", &FILES).await;
        let dir = tempfile::tempdir().unwrap();
        let config = kiosk_config(&sandbox, dir.path(), blank_drives(&[64 * MIB, 64 * MIB])).await;
        let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");

        let first = provision(&channel, &operator, "res-1", &package_id, 64 * MIB, true).await;
        let first = finished(&channel, &operator, &first).await;
        assert_eq!(
            first.state,
            pb::CommandState::Succeeded as i32,
            "{backend}: {first:?}"
        );
        let result = provisioned(&first);
        assert_eq!(result.bytes_written, manifest.total_bytes, "{backend}");
        assert!(
            result.bytes_downloaded >= manifest.total_bytes,
            "{backend}: {result:?}"
        );
        let progress = first.progress.expect("the kiosk reported progress");
        assert_ne!(
            progress.phase,
            pb::ProgressPhase::Unspecified as i32,
            "{backend}"
        );
        assert_holds(agent.bays(), &result.item_id, &package, &manifest);
        let bay = agent
            .bays()
            .snapshot()
            .into_iter()
            .find(|b| b.bay_id == result.bay_id)
            .expect("the bay");
        assert_eq!(
            bay.state,
            BayState::Pinned {
                order_id: "res-1".into()
            },
            "{backend}"
        );
        assert!(
            matches!(
                bay.item.as_ref().map(|i| &i.facts),
                Some(ItemFacts::Drive { write_protected: true, content_package_id: Some(p), .. }) if *p == package_id
            ),
            "{backend}: {bay:?}"
        );
        // Write-protected as asked: the drive refuses a write.
        assert!(
            agent
                .bays()
                .create_file(&result.item_id, "intruder")
                .is_err(),
            "{backend}"
        );

        let cached = agent.cache_stats();
        let second = provision(&channel, &operator, "res-2", &package_id, 64 * MIB, false).await;
        let second = finished(&channel, &operator, &second).await;
        assert_eq!(
            second.state,
            pb::CommandState::Succeeded as i32,
            "{backend}: {second:?}"
        );
        let again = provisioned(&second);
        assert_ne!(again.item_id, result.item_id, "{backend}: the other drive");
        assert_eq!(
            again.bytes_downloaded, 0,
            "{backend}: every chunk came from the cache"
        );
        assert_eq!(agent.cache_stats().inserted, cached.inserted, "{backend}");
        assert_holds(agent.bays(), &again.item_id, &package, &manifest);

        agent.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn provision_failures_say_which_and_leave_no_drive_that_looks_ready() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let source = tempfile::tempdir().unwrap();
        let (_, package_id, manifest) =
            published(&channel, &operator, source.path(), "failures", &FILES).await;
        let dir = tempfile::tempdir().unwrap();
        // D-1 and D-2 fit the package; D-3 is too small for it.
        let config = kiosk_config(
            &sandbox,
            dir.path(),
            blank_drives(&[64 * MIB, 64 * MIB, 8 * MIB]),
        )
        .await;
        let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");

        // Too small: refused before a byte is written.
        let small = provision(
            &channel,
            &operator,
            "res-small",
            &package_id,
            8 * MIB,
            false,
        )
        .await;
        let small = finished(&channel, &operator, &small).await;
        assert_eq!(
            failure(&small).reason,
            pb::FailureReason::DriveFull as i32,
            "{backend}: {small:?}"
        );
        assert_not_ready(agent.bays(), "D-3");
        let written = std::fs::read_dir(agent.bays().drive_dir("D-3"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(written, 0, "{backend}: nothing was copied onto D-3");

        // No drive of that capacity.
        let none = provision(&channel, &operator, "res-none", &package_id, 3 * MIB, false).await;
        let none = finished(&channel, &operator, &none).await;
        assert_eq!(
            failure(&none).reason,
            pb::FailureReason::NoFreeDrive as i32,
            "{backend}"
        );

        // A package the content service does not have.
        let unknown = uuid::Uuid::new_v4().to_string();
        let missing = provision(
            &channel,
            &operator,
            "res-unknown",
            &unknown,
            64 * MIB,
            false,
        )
        .await;
        let missing = finished(&channel, &operator, &missing).await;
        assert_eq!(
            failure(&missing).reason,
            pb::FailureReason::DownloadFailed as i32,
            "{backend}"
        );

        // A chunk corrupted in the store: refused by the content service on every try, so the
        // kiosk fails naming it, and the drive it had taken is wiped.
        let victim = manifest
            .files
            .iter()
            .find(|f| f.path == "films/extras.mkv")
            .unwrap()
            .chunks[1];
        let path = content::local_chunk_path(&sandbox.config, victim.as_bytes());
        let mut bytes = std::fs::read(&path).expect("stored chunk");
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let corrupt = provision(
            &channel,
            &operator,
            "res-corrupt",
            &package_id,
            64 * MIB,
            false,
        )
        .await;
        let corrupt = finished(&channel, &operator, &corrupt).await;
        let failed = failure(&corrupt);
        assert_eq!(
            failed.reason,
            pb::FailureReason::ChunkCorrupt as i32,
            "{backend}: {failed:?}"
        );
        assert!(
            failed.message.contains(&victim.to_hex().to_string()),
            "{backend}: the failure names the chunk: {}",
            failed.message
        );
        for drive in ["D-1", "D-2", "D-3"] {
            assert_not_ready(agent.bays(), drive);
        }

        agent.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_kiosk_killed_mid_copy_answers_once_and_leaves_no_drive_with_wrong_bytes() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let source = tempfile::tempdir().unwrap();
        let (_, package_id, _) =
            published(&channel, &operator, source.path(), "killed", &FILES).await;
        let dir = tempfile::tempdir().unwrap();
        let config = kiosk_config(&sandbox, dir.path(), blank_drives(&[64 * MIB])).await;
        let file = write_agent_toml(&config, dir.path());
        let agent_binary = env!("CARGO_BIN_EXE_kiosk-agent-under-test");
        let marker = dir.path().join("copying");
        let hang = format!(
            "agent::provision::mid_copy=return(hang:{})",
            marker.display()
        );
        let agent = AgentProcess::run(agent_binary, &file, Some(&hang));
        let command_id =
            provision(&channel, &operator, "res-kill", &package_id, 64 * MIB, true).await;
        eventually(
            Duration::from_secs(60),
            "the agent to hang mid-copy",
            || async { marker.exists() },
        )
        .await;
        agent.kill().await;
        // Part of the package is on the drive now (the pause point follows its first file).
        let drive = dir.path().join("data").join("drives").join("D-1");
        assert!(
            std::fs::read_dir(&drive).map(|d| d.count()).unwrap_or(0) > 0,
            "{backend}: the copy had started in {}",
            drive.display()
        );

        let agent = AgentProcess::run(agent_binary, &file, None);
        let done = finished(&channel, &operator, &command_id).await;
        agent.terminate().await;

        assert_eq!(
            done.state,
            pb::CommandState::Failed as i32,
            "{backend}: {done:?}"
        );
        assert_eq!(
            failure(&done).reason,
            pb::FailureReason::Internal as i32,
            "{backend}"
        );
        assert!(!done.late_result, "{backend}");
        let bays = SimulatedBays::open(&config.data_dir, config.simulation.as_ref().unwrap())
            .await
            .expect("simulator state");
        assert_not_ready(&bays, "D-1");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_cache_smaller_than_two_packages_evicts_and_both_provisions_succeed() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let source = tempfile::tempdir().unwrap();
        let sizes = [("one.bin", 40 * MIB)];
        let (first, first_id, first_manifest) = published(
            &channel,
            &operator,
            &source.path().join("a"),
            "cache-a",
            &sizes,
        )
        .await;
        let (second, second_id, second_manifest) = published(
            &channel,
            &operator,
            &source.path().join("b"),
            "cache-b",
            &sizes,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            kiosk_config(&sandbox, dir.path(), blank_drives(&[64 * MIB, 64 * MIB])).await;
        // Room for one package's chunks, not two.
        config.content.cache_budget_bytes = Some(64 * MIB);
        let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");

        for (order, package_id) in [("res-a", &first_id), ("res-b", &second_id)] {
            let id = provision(&channel, &operator, order, package_id, 64 * MIB, false).await;
            let done = finished(&channel, &operator, &id).await;
            assert_eq!(
                done.state,
                pb::CommandState::Succeeded as i32,
                "{backend}: {done:?}"
            );
        }
        let stats = agent.cache_stats();
        assert!(stats.evictions > 0, "{backend}: {stats:?}");
        assert!(stats.bytes <= 64 * MIB, "{backend}: {stats:?}");
        let holder = |package_id: &str| {
            agent
                .bays()
                .snapshot()
                .into_iter()
                .filter_map(|b| b.item)
                .find(|i| matches!(&i.facts, ItemFacts::Drive { content_package_id: Some(p), .. } if p == package_id))
                .expect("a drive holds the package")
                .item_id
        };
        assert_holds(agent.bays(), &holder(&first_id), &first, &first_manifest);
        assert_holds(agent.bays(), &holder(&second_id), &second, &second_manifest);
        agent.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn write_protection_toggled_remotely_refuses_then_allows_a_write() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let dir = tempfile::tempdir().unwrap();
        let config = kiosk_config(&sandbox, dir.path(), blank_drives(&[64 * MIB])).await;
        let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");
        let set = |on: bool| {
            pb::command_payload::Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                item_id: "D-1".into(),
                on,
            })
        };

        let on = command(&channel, &operator, set(true)).await;
        assert_eq!(
            on.state,
            pb::CommandState::Succeeded as i32,
            "{backend}: {on:?}"
        );
        let refused = agent.bays().create_file("D-1", "notes.txt");
        assert!(
            refused.is_err(),
            "{backend}: a protected drive refuses a write"
        );

        let off = command(&channel, &operator, set(false)).await;
        assert_eq!(
            off.state,
            pb::CommandState::Succeeded as i32,
            "{backend}: {off:?}"
        );
        let mut file = agent
            .bays()
            .create_file("D-1", "notes.txt")
            .expect("an unprotected drive takes a write");
        file.write(b"hello").expect("write");
        file.finish().expect("fsync");
        assert_eq!(
            std::fs::read(agent.bays().drive_dir("D-1").join("notes.txt")).unwrap(),
            b"hello",
            "{backend}"
        );
        agent.stop().await;
        sandbox.stop().await;
    }
}
