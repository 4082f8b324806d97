//! The standalone node's simulated fleet across restarts: the first start creates the
//! accounts and the kiosks' secrets, a second start on the same data directory reuses them.

use std::path::Path;
use std::time::{Duration, Instant};

use sneakernet::node::{self, NodeRole};
use sneakernet::standalone::{self, Fleet, KIOSK_CREDENTIAL_FILE, KIOSKS_DIR, QR_SECRET_FILE};
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

/// Everything a restart must keep: passwords, kiosk credentials, QR secrets.
fn secrets(data_dir: &Path, fleet: &Fleet) -> Vec<Vec<u8>> {
    let mut files = vec![
        fleet.accounts.operator_password_file.clone(),
        fleet.accounts.demo_user_password_file.clone(),
    ];
    for kiosk in &fleet.kiosks {
        let dir = data_dir.join(KIOSKS_DIR).join(kiosk.site.kiosk_id);
        files.push(dir.join(KIOSK_CREDENTIAL_FILE));
        files.push(dir.join(QR_SECRET_FILE));
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
    stop(node, fleet).await;
}
