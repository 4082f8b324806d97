//! Real kiosk agents for whole-system tests: configurations with simulated drives, run
//! in-process or as a killable child process; and the remote link modules of simulated
//! drives ([`drive_config`], [`send_write_protect`], [`CountedModule`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sneakernet_kiosk_agent::bays::BayError;
use sneakernet_kiosk_agent::config::{
    AgentConfig, LinkConfig, SimBayConfig, SimFaults, SimItemConfig, SimItemKind, SimulationConfig,
};
use sneakernet_kiosk_agent::drive::{DriveConfig, Module, SimulatedModule};
use sneakernet_kiosk_agent::simulated::SimulatedBays;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use tonic::transport::Channel;

use crate::authed;

/// Capacity of every simulated test drive (1 TB).
pub const CAPACITY: u64 = 1_000_000_000_000;
/// Content package on every simulated test drive.
pub const PACKAGE: &str = "films-1";

/// A kiosk with `drives` drives `D-1..` in bays `A1..`, all holding [`PACKAGE`], reconnecting
/// fast; its secret is written to `dir/secret`.
pub fn agent_config(
    dir: &Path,
    kiosk_id: &str,
    secret: &str,
    address: std::net::SocketAddr,
    drives: usize,
) -> AgentConfig {
    let bays = (1..=drives)
        .map(|n| SimBayConfig {
            id: format!("A{n}"),
            item: Some(SimItemConfig {
                kind: SimItemKind::Drive,
                item_id: format!("D-{n}"),
                capacity_bytes: Some(CAPACITY),
                content_package_id: Some(PACKAGE.into()),
                write_protected: false,
                charge_percent: None,
                remote_link: false,
            }),
        })
        .collect();
    simulated_agent_config(dir, kiosk_id, secret, address, bays, SimFaults::default())
}

/// Gives the simulated drives `items` of `config` a remote link module (reported as
/// `DriveAttributes.remote_link`).
pub fn with_remote_links(config: &mut AgentConfig, items: &[&str]) {
    let simulation = config.simulation.as_mut().expect("a simulated kiosk");
    for item in simulation.bays.iter_mut().filter_map(|b| b.item.as_mut()) {
        if items.contains(&item.item_id.as_str()) {
            item.remote_link = true;
        }
    }
}

/// The module of drive `item_id` reaching the gateway at `gateway` (and auth at `address`),
/// reconnecting fast, its journal under `dir`.
pub fn drive_config(
    dir: &Path,
    item_id: &str,
    secret: &str,
    address: std::net::SocketAddr,
    gateway: std::net::SocketAddr,
) -> DriveConfig {
    DriveConfig {
        item_id: item_id.into(),
        secret: secret.into(),
        auth_url: format!("http://{address}"),
        gateway_url: format!("http://{gateway}"),
        allow_plaintext: false,
        data_dir: dir.join(format!("module-{item_id}")),
        link: LinkConfig {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        },
    }
}

/// A simulated drive's module counting how often it is asked to act (to prove a command
/// delivered twice was executed once).
pub struct CountedModule {
    /// The simulated module it wraps.
    pub module: SimulatedModule,
    /// How many times it was asked to change write protection.
    pub calls: Arc<AtomicU32>,
}

impl CountedModule {
    /// The module of drive `item_id` in (or lent from) `bays`, counting from 0.
    pub fn of(bays: &SimulatedBays, item_id: &str) -> Self {
        Self {
            module: SimulatedModule {
                bays: bays.clone(),
                item_id: item_id.into(),
            },
            calls: Arc::new(AtomicU32::new(0)),
        }
    }

    /// How many times it acted so far (a handle that stays valid after the module moved).
    pub fn counter(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.calls)
    }
}

impl Module for CountedModule {
    async fn set_write_protect(&self, on: bool) -> Result<bool, BayError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.module.set_write_protect(on).await
    }
}

/// Sends SetWriteProtect(`on`) to drive `item_id` over its own link (SendCommand.drive_id),
/// deadline in five minutes, under `idempotency_key`; returns the command id.
pub async fn send_write_protect(
    channel: &Channel,
    token: &str,
    item_id: &str,
    on: bool,
    idempotency_key: &str,
) -> String {
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    DeviceCommandServiceClient::new(channel.clone())
        .send_command(authed(
            pb::SendCommandRequest {
                kiosk_id: String::new(),
                payload: Some(pb::CommandPayload {
                    kind: Some(pb::command_payload::Kind::SetWriteProtect(
                        pb::SetWriteProtectCommand {
                            item_id: item_id.into(),
                            on,
                        },
                    )),
                }),
                idempotency_key: idempotency_key.into(),
                deadline: Some(prost_types::Timestamp {
                    seconds: deadline.timestamp(),
                    nanos: 0,
                }),
                drive_id: item_id.into(),
            },
            token,
        ))
        .await
        .expect("send write protect to a drive")
        .into_inner()
        .command
        .expect("record")
        .command_id
}

/// A kiosk agent configuration with `bays` and `faults`, reconnecting fast; its credential is
/// written to `dir/secret`.
pub fn simulated_agent_config(
    dir: &Path,
    kiosk_id: &str,
    secret: &str,
    address: std::net::SocketAddr,
    bays: Vec<SimBayConfig>,
    faults: SimFaults,
) -> AgentConfig {
    let credential_file = dir.join("secret");
    std::fs::write(&credential_file, secret).expect("write secret");
    AgentConfig {
        content: Default::default(),
        kiosk_id: kiosk_id.into(),
        credential_file,
        auth_url: format!("http://{address}"),
        gateway_url: format!("http://{address}"),
        data_dir: dir.join("data"),
        allow_plaintext: false,
        qr_secret_file: None,
        link: LinkConfig {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        },
        simulation: Some(SimulationConfig { bays, faults }),
    }
}

/// The same configuration as TOML, for a child-process agent; returns the file.
pub fn write_agent_toml(config: &AgentConfig, dir: &Path) -> PathBuf {
    let mut toml = format!(
        "kiosk_id = {:?}\ncredential_file = {:?}\nauth_url = {:?}\ngateway_url = {:?}\ndata_dir = {:?}\n\n[link]\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n",
        config.kiosk_id,
        config.credential_file,
        config.auth_url,
        config.gateway_url,
        config.data_dir
    );
    for bay in config
        .simulation
        .as_ref()
        .map(|s| s.bays.as_slice())
        .unwrap_or_default()
    {
        toml.push_str(&format!("\n[[simulation.bays]]\nid = {:?}\n", bay.id));
        if let Some(item) = &bay.item {
            toml.push_str(&format!(
                "[simulation.bays.item]\nkind = \"drive\"\nitem_id = {:?}\ncapacity_bytes = {}\n",
                item.item_id,
                item.capacity_bytes.unwrap_or(CAPACITY),
            ));
            if let Some(package) = &item.content_package_id {
                toml.push_str(&format!("content_package_id = {package:?}\n"));
            }
        }
    }
    if let Some(budget) = config.content.cache_budget_bytes {
        toml.push_str(&format!("\n[content]\ncache_budget_bytes = {budget}\n"));
    }
    let file = dir.join("agent.toml");
    std::fs::write(&file, toml).expect("write agent config");
    file
}

/// A walk-up lend of a [`PACKAGE`] drive, write-protected, for `order_id`.
pub fn lend(order_id: &str) -> pb::CommandPayload {
    pb::CommandPayload {
        kind: Some(pb::command_payload::Kind::Lend(pb::LendCommand {
            target: Some(pb::lend_command::Target::Spec(common::ItemSpec {
                item_type: Some(common::ItemType {
                    kind: common::ItemKind::Drive.into(),
                    capacity_bytes: CAPACITY,
                    content_package_id: PACKAGE.into(),
                }),
                write_protect: true,
            })),
            order_id: order_id.into(),
        })),
    }
}

/// Sends [`lend`] for `order_id` to kiosk K-1 (deadline in five minutes, idempotency key
/// `lend:<order>`); returns the command id.
pub async fn send_lend(channel: Channel, token: &str, order_id: &str) -> String {
    send_command(&channel, token, lend(order_id), &format!("lend:{order_id}")).await
}

/// Sends `payload` to kiosk K-1 with a deadline in five minutes under `idempotency_key`;
/// returns the command id.
pub async fn send_command(
    channel: &Channel,
    token: &str,
    payload: pb::CommandPayload,
    idempotency_key: &str,
) -> String {
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    DeviceCommandServiceClient::new(channel.clone())
        .send_command(authed(
            pb::SendCommandRequest {
                kiosk_id: "K-1".into(),
                payload: Some(payload),
                idempotency_key: idempotency_key.into(),
                deadline: Some(prost_types::Timestamp {
                    seconds: deadline.timestamp(),
                    nanos: 0,
                }),
                drive_id: String::new(),
            },
            token,
        ))
        .await
        .expect("send command")
        .into_inner()
        .command
        .expect("record")
        .command_id
}

/// A command's record as `token` reads it; `None` when the gateway does not answer it.
pub async fn command_record(
    channel: &Channel,
    token: &str,
    command_id: &str,
) -> Option<pb::CommandRecord> {
    DeviceCommandServiceClient::new(channel.clone())
        .get_command(authed(
            pb::GetCommandRequest {
                command_id: command_id.into(),
            },
            token,
        ))
        .await
        .ok()
        .and_then(|r| r.into_inner().command)
}

/// Waits up to `within` until the command SUCCEEDED or FAILED (both final); returns its record.
pub async fn finished_command(
    channel: &Channel,
    token: &str,
    command_id: &str,
    within: Duration,
) -> pb::CommandRecord {
    let done = |r: &pb::CommandRecord| {
        r.state == pb::CommandState::Succeeded as i32 || r.state == pb::CommandState::Failed as i32
    };
    crate::eventually(within, "the command to finish", || async {
        command_record(channel, token, command_id)
            .await
            .is_some_and(|r| done(&r))
    })
    .await;
    // Final states do not change: this read sees the same record.
    command_record(channel, token, command_id)
        .await
        .expect("record")
}

/// The `kiosk-agent` program (built with failpoints) as a child process a test can kill.
pub struct AgentProcess {
    child: tokio::process::Child,
}

impl AgentProcess {
    /// Runs `binary` (`env!("CARGO_BIN_EXE_kiosk-agent-under-test")` in a test) with the
    /// configuration `config_file`, with `FAILPOINTS` set to `failpoints` when given.
    pub fn run(binary: &str, config_file: &Path, failpoints: Option<&str>) -> Self {
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("--config")
            .arg(config_file)
            .arg("run")
            .kill_on_drop(true);
        if let Some(failpoints) = failpoints {
            command.env("FAILPOINTS", failpoints);
        }
        Self {
            child: command.spawn().expect("kiosk agent process"),
        }
    }

    /// SIGKILL: the agent stops wherever it is.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the agent");
    }

    /// SIGTERM, then waits for the agent to finish its graceful stop.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("a running agent").to_string();
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(stopped.is_ok_and(|s| s.success()), "SIGTERM the agent");
        self.child.wait().await.expect("agent exit");
    }
}
