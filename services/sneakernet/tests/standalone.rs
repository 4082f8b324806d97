//! The standalone node's simulated fleet across restarts: the first start creates the
//! accounts and the kiosks' secrets (and their drives' module credentials), a second start on
//! the same data directory reuses them; the content drives hold the demo packages' real bytes;
//! a drive with a module is reached through the gateway.

use std::path::Path;
use std::time::{Duration, Instant};

use sneakernet::demo_content;
use sneakernet::node::{self, NodeRole};
use sneakernet::standalone::{
    self, DRIVE_CREDENTIAL_FILE, Fleet, KIOSK_CREDENTIAL_FILE, KIOSKS_DIR, MODULES_DIR,
    QR_SECRET_FILE,
};
use sneakernet_kiosk_agent::bays::{ItemFacts, ItemInfo};
use sneakernet_kiosk_agent::drive_content;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;

fn config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data_dir.to_owned(),
        ..Config::default()
    }
}

/// Everything a restart must keep: passwords, kiosk and drive module credentials, QR secrets.
fn secrets(data_dir: &Path, fleet: &Fleet) -> Vec<Vec<u8>> {
    let mut files = vec![
        fleet.accounts.operator_password_file.clone(),
        fleet.accounts.demo_user_password_file.clone(),
    ];
    for kiosk in &fleet.kiosks {
        let dir = data_dir.join(KIOSKS_DIR).join(kiosk.site.kiosk_id);
        files.push(dir.join(KIOSK_CREDENTIAL_FILE));
        files.push(dir.join(QR_SECRET_FILE));
        for item in kiosk.drives_with_remote_link() {
            files.push(dir.join(MODULES_DIR).join(item).join(DRIVE_CREDENTIAL_FILE));
        }
    }
    files
        .iter()
        .map(|file| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(file)
                    .expect("secret file")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{} is readable by others", file.display());
            }
            std::fs::read(file).expect("secret file")
        })
        .collect()
}

/// Waits until the fleet view shows every simulated kiosk online (only the gateway and the
/// kiosk view are needed, so this holds whatever orders implements of rentals).
async fn wait_until_online(address: std::net::SocketAddr, fleet: &Fleet) {
    let channel = sneakernet::client::channel(&format!("http://{address}")).expect("channel");
    let password = std::fs::read_to_string(&fleet.accounts.operator_password_file).unwrap();
    let token =
        sneakernet::client::login(&channel, &fleet.accounts.operator_email, password.trim())
            .await
            .expect("operator login");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = FleetServiceClient::new(channel.clone())
            .list_kiosks(
                sneakernet::client::authed(pb::ListKiosksRequest::default(), &token).unwrap(),
            )
            .await
            .expect("list kiosks")
            .into_inner();
        let online = fleet
            .kiosks
            .iter()
            .filter(|k| {
                listed.kiosks.iter().any(|seen| {
                    seen.online
                        && seen
                            .profile
                            .as_ref()
                            .is_some_and(|p| p.kiosk_id == k.site.kiosk_id)
                })
            })
            .count();
        if online == fleet.kiosks.len() {
            return;
        }
        assert!(Instant::now() < deadline, "kiosks not online: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(data_dir: &Path) -> (node::Node, Fleet) {
    let config = config(data_dir);
    let node = node::start(config.clone(), &NodeRole::ALL, Shutdown::new(), None)
        .await
        .expect("node starts");
    let fleet = standalone::start(&config, node.address)
        .await
        .expect("fleet starts");
    wait_until_online(node.address, &fleet).await;
    (node, fleet)
}

async fn stop(node: node::Node, fleet: Fleet) {
    fleet.stop().await;
    node.stop();
    node.wait().await.expect("node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_reuses_accounts_credentials_and_qr_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (node, fleet) = start(dir.path()).await;
    assert!(fleet.first_start);
    assert_eq!(fleet.kiosks.len(), 3);
    let first = secrets(dir.path(), &fleet);
    stop(node, fleet).await;

    let (node, fleet) = start(dir.path()).await;
    assert!(!fleet.first_start);
    assert_eq!(secrets(dir.path(), &fleet), first, "nothing was made anew");
    toggle_over_the_drives_own_link(node.address, &fleet).await;
    stop(node, fleet).await;
}

/// Every kiosk runs its drives' modules; one of them takes a SetWriteProtect sent to the
/// drive itself through the gateway, and its kiosk's simulator shows the drive protected.
async fn toggle_over_the_drives_own_link(address: std::net::SocketAddr, fleet: &Fleet) {
    for kiosk in &fleet.kiosks {
        // The first film drive, the documentaries drive and the blank 1 TB drive.
        assert_eq!(
            kiosk.drives_with_remote_link().len(),
            3,
            "{}",
            kiosk.site.kiosk_id
        );
    }
    let kiosk = &fleet.kiosks[0];
    let item = kiosk.drives_with_remote_link()[0].to_owned();
    let channel = sneakernet::client::channel(&format!("http://{address}")).expect("channel");
    let password = std::fs::read_to_string(&fleet.accounts.operator_password_file).unwrap();
    let token =
        sneakernet::client::login(&channel, &fleet.accounts.operator_email, password.trim())
            .await
            .expect("operator login");
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    let mut commands = DeviceCommandServiceClient::new(channel);
    let request = gateway::SendCommandRequest {
        kiosk_id: String::new(),
        drive_id: item.clone(),
        payload: Some(gateway::CommandPayload {
            kind: Some(gateway::command_payload::Kind::SetWriteProtect(
                gateway::SetWriteProtectCommand {
                    item_id: item.clone(),
                    on: true,
                },
            )),
        }),
        idempotency_key: "standalone-test:protect".into(),
        deadline: Some(prost_types::Timestamp {
            seconds: deadline.timestamp(),
            nanos: 0,
        }),
    };
    let command_id = commands
        .send_command(sneakernet::client::authed(request, &token).unwrap())
        .await
        .expect("send to the drive")
        .into_inner()
        .command
        .expect("record")
        .command_id;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let record = commands
            .get_command(
                sneakernet::client::authed(
                    gateway::GetCommandRequest {
                        command_id: command_id.clone(),
                    },
                    &token,
                )
                .unwrap(),
            )
            .await
            .expect("record")
            .into_inner()
            .command
            .expect("record");
        if record.state == gateway::CommandState::Succeeded as i32 {
            break;
        }
        assert!(Instant::now() < until, "not confirmed: {record:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kiosk.bays().write_protected_anywhere(&item), Some(true));
}

/// Every content drive of the fleet, as (kiosk, item id, package id).
fn content_drives(fleet: &Fleet) -> Vec<(&standalone::SimulatedKiosk, String, String)> {
    let mut drives = Vec::new();
    for kiosk in &fleet.kiosks {
        for bay in kiosk.bays().snapshot() {
            if let Some(ItemInfo {
                item_id,
                facts:
                    ItemFacts::Drive {
                        content_package_id: Some(package),
                        ..
                    },
            }) = bay.item
            {
                drives.push((kiosk, item_id, package));
            }
        }
    }
    drives
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_drives_hold_the_demo_packages_bytes_and_a_damaged_one_is_stocked_again() {
    let dir = tempfile::tempdir().unwrap();
    let (node, fleet) = start(dir.path()).await;
    let drives = content_drives(&fleet);
    // Two film drives and a documentary drive per kiosk.
    assert_eq!(drives.len(), 9, "{drives:?}");
    for (kiosk, item_id, package) in &drives {
        let published = [
            &fleet.catalog.film_classics,
            &fleet.catalog.nature_documentaries,
        ]
        .into_iter()
        .find(|p| &p.package_id == package)
        .expect("a demo package");
        let drive = kiosk.bays().drive_dir(item_id);
        for (path, size) in published.package.files {
            let on_drive = std::fs::read(drive.join(path)).expect("file on the drive");
            assert_eq!(on_drive.len() as u64, *size, "{item_id}: {path}");
            assert_eq!(
                on_drive,
                std::fs::read(published.dir.join(path)).unwrap(),
                "{item_id}: {path} is the uploaded bytes"
            );
        }
        assert!(
            drive.join(drive_content::MANIFEST_PATH).exists(),
            "{item_id}"
        );
    }
    let (kiosk, victim, _) = &drives[0];
    let victim_file = kiosk
        .bays()
        .drive_dir(victim)
        .join(demo_content::FILM_CLASSICS.files[0].0);
    let untouched = kiosk.bays().drive_dir(&drives[1].1);
    let untouched_manifest = untouched.join(drive_content::MANIFEST_PATH);
    let stocked_at = std::fs::metadata(&untouched_manifest)
        .unwrap()
        .modified()
        .unwrap();
    let good = std::fs::read(&victim_file).unwrap();
    let victim = victim.clone();
    stop(node, fleet).await;
    let mut damaged = good.clone();
    damaged[7] ^= 0x55;
    std::fs::write(&victim_file, damaged).unwrap();

    let (node, fleet) = start(dir.path()).await;
    assert_eq!(
        std::fs::read(&victim_file).unwrap(),
        good,
        "the damaged drive {victim} was stocked again"
    );
    assert_eq!(
        std::fs::metadata(&untouched_manifest)
            .unwrap()
            .modified()
            .unwrap(),
        stocked_at,
        "a drive that holds its package is left alone"
    );
    stop(node, fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_upload_on_the_command_line_publishes_a_directory_once() {
    use clap::Parser;
    use sneakernet_proto::content::v1 as content;
    use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let (node, fleet) = start(dir.path()).await;
    let films = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(films.path().join("season-1")).unwrap();
    std::fs::write(films.path().join("season-1/pilot.mkv"), vec![7u8; 5 << 20]).unwrap();
    std::fs::write(films.path().join("notes.txt"), b"watch in order").unwrap();
    let address = format!("http://{}", node.address);
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let films_dir = films.path().to_str().unwrap().to_owned();
    let upload = || {
        sneakernet::cli::Cli::try_parse_from([
            "sneakernet",
            "content",
            "upload",
            "--title",
            "Box set",
            "--address",
            &address,
            "--data-dir",
            &data_dir,
            &films_dir,
        ])
        .expect("the command line parses")
    };
    sneakernet::cli::run(upload()).await.expect("upload");
    // The same directory again: the same package, nothing new.
    sneakernet::cli::run(upload()).await.expect("upload again");
    let list = sneakernet::cli::Cli::try_parse_from([
        "sneakernet",
        "content",
        "list",
        "--state",
        "ready",
        "--address",
        &address,
        "--data-dir",
        &data_dir,
    ])
    .expect("the command line parses");
    sneakernet::cli::run(list).await.expect("list");

    let channel = sneakernet::client::channel(&address).unwrap();
    let password = std::fs::read_to_string(&fleet.accounts.operator_password_file).unwrap();
    let token =
        sneakernet::client::login(&channel, &fleet.accounts.operator_email, password.trim())
            .await
            .unwrap();
    let packages = ContentServiceClient::new(channel)
        .list_packages(
            sneakernet::client::authed(content::ListPackagesRequest::default(), &token).unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
        .packages;
    let box_sets: Vec<_> = packages.iter().filter(|p| p.title == "Box set").collect();
    assert_eq!(box_sets.len(), 1, "{packages:?}");
    assert_eq!(box_sets[0].state(), content::PackageState::Ready);
    assert_eq!(box_sets[0].file_count, 2);
    assert_eq!(box_sets[0].total_size_bytes, (5 << 20) + 14);
    stop(node, fleet).await;
}
