//! `standalone`'s simulated fleet: the whole system on a laptop, with kiosks to rent from.
//!
//! Next to a node serving every role, [`start`] runs the three kiosks of
//! [`crate::simulated_fleet`] with the real kiosk agent in-process (simulated bays), each with
//! its own data directory under `data_dir/kiosks/<kiosk_id>/`. It talks to the node only
//! through gRPC, as an operator and the kiosks would:
//!
//! - first start (no `data_dir/standalone.toml` yet): an operator (the bootstrap path, which no
//!   RPC offers) and a demo user (AuthService.Register), each with a random password saved in
//!   a file only the owner may read; `standalone.toml` records them;
//! - every start: each kiosk's credential (AuthService.IssueKioskCredential, kept in the
//!   kiosk's directory and issued again only when it no longer logs in), its QR secret (32
//!   random bytes made once and kept), and its profile (FleetService.RegisterKiosk, an upsert);
//! - every start, once its kiosk runs: each drive with a remote link module
//!   ([`KioskSite::drives_with_remote_link`]) gets its credential the same way
//!   (AuthService.IssueDriveCredential, kept in `modules/<item_id>/` of its kiosk's directory)
//!   and its module runs in-process ([`sneakernet_kiosk_agent::drive`]), toggling the same
//!   write-protect flag as the kiosk's simulator, in a bay or lent;
//! - every start: the demo content packages ([`crate::demo_content`]: generated, uploaded
//!   through ContentService, found again by their idempotency key), and, before a kiosk
//!   starts, its content drives stocked with them (files written, read back and verified,
//!   the on-drive manifest last) unless they already hold them;
//! - until it succeeded once: the simulated sites' price rules (FleetService.SetPricing, per
//!   site, so a network-wide default an operator sets is never replaced).
//!
//! Every step is idempotent, so a start interrupted anywhere is finished by the next one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::{Rng, RngCore};
use serde::Deserialize;
use sneakernet_kiosk_agent::AgentHandle;
use sneakernet_kiosk_agent::bays::ItemFacts;
use sneakernet_kiosk_agent::config::{AgentConfig, LinkConfig, SimFaults, SimulationConfig};
use sneakernet_kiosk_agent::content_source::Manifest;
use sneakernet_kiosk_agent::drive::{self, DriveConfig, DriveHandle, SimulatedModule};
use sneakernet_kiosk_agent::drive_content;
use sneakernet_kiosk_agent::simulated::SimulatedBays;
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::{DeviceId, ItemId, KioskId};
use tonic::transport::Channel;

use crate::client::{self, authed};
use crate::demo_content::{self, DemoCatalog};
use crate::simulated_fleet::{self, KioskSite};

/// The first start's record, under `data_dir`.
pub const STATE_FILE: &str = "standalone.toml";
/// Where the simulated kiosks keep their state, under `data_dir`: one directory per kiosk id.
pub const KIOSKS_DIR: &str = "kiosks";
/// The operator the first start creates.
pub const OPERATOR_EMAIL: &str = "operator@sneakernet.example";
/// The user account the first start creates.
pub const DEMO_USER_EMAIL: &str = "demo@sneakernet.example";
/// The kiosk's credential secret, in its directory.
pub const KIOSK_CREDENTIAL_FILE: &str = "kiosk.secret";
/// The kiosk's QR secret (raw bytes), in its directory.
pub const QR_SECRET_FILE: &str = "qr.secret";
/// Where a kiosk's drives with a remote link keep their module's state, in the kiosk's
/// directory: one directory per item id (journal, credential).
pub const MODULES_DIR: &str = "modules";
/// A drive module's credential secret, in its directory.
pub const DRIVE_CREDENTIAL_FILE: &str = "drive.secret";

const OPERATOR_PASSWORD_FILE: &str = "operator.password";
const DEMO_USER_PASSWORD_FILE: &str = "demo-user.password";
/// Random passwords are this many letters and digits (about 143 bits).
const PASSWORD_CHARS: usize = 24;
/// Bytes of a new QR secret.
const QR_SECRET_BYTES: usize = 32;
/// How long one agent may take to stop before it is left behind.
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the first start created, as `data_dir/standalone.toml` records it. Password files
/// are named relative to `data_dir`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StandaloneState {
    /// The operator's email.
    pub operator_email: String,
    /// The file holding the operator's password.
    pub operator_password_file: PathBuf,
    /// The demo user's email.
    pub demo_user_email: String,
    /// The file holding the demo user's password.
    pub demo_user_password_file: PathBuf,
    /// Whether the simulated sites' price rules were set (they are set once, so an
    /// operator's later change stays).
    #[serde(default)]
    pub site_pricing_set: bool,
}

impl StandaloneState {
    /// Reads `data_dir/standalone.toml`; `None` when there is none (a first start).
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let file = data_dir.join(STATE_FILE);
        if !file.exists() {
            return Ok(None);
        }
        use figment::providers::Format;
        let state = figment::Figment::from(figment::providers::Toml::file_exact(&file))
            .extract()
            .map_err(|e| {
                anyhow::anyhow!("{}: {}", file.display(), e.to_string().replace('\n', "; "))
            })?;
        Ok(Some(state))
    }

    /// Writes `data_dir/standalone.toml` (replacing it atomically).
    async fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# Written by `sneakernet standalone` on its first start; the passwords are in the files named.\n\
             operator_email = {:?}\noperator_password_file = {:?}\n\
             demo_user_email = {:?}\ndemo_user_password_file = {:?}\n\
             site_pricing_set = {}\n",
            self.operator_email,
            self.operator_password_file.display().to_string(),
            self.demo_user_email,
            self.demo_user_password_file.display().to_string(),
            self.site_pricing_set,
        );
        write_private(&data_dir.join(STATE_FILE), text.as_bytes()).await
    }

    /// The operator's password, read from its file.
    pub async fn operator_password(&self, data_dir: &Path) -> anyhow::Result<String> {
        read_password(&data_dir.join(&self.operator_password_file)).await
    }
}

/// How a person logs in to the standalone node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accounts {
    /// The operator's email.
    pub operator_email: String,
    /// The file holding the operator's password.
    pub operator_password_file: PathBuf,
    /// The demo user's email.
    pub demo_user_email: String,
    /// The file holding the demo user's password.
    pub demo_user_password_file: PathBuf,
}

/// One running simulated kiosk.
pub struct SimulatedKiosk {
    /// Where it stands and what it held on its first start.
    pub site: KioskSite,
    /// The kiosk's id, checked.
    pub kiosk_id: KioskId,
    /// Its QR secret, as registered with orders.
    pub qr_secret: Vec<u8>,
    /// Its data directory (journal, simulated bays, credential, QR secret).
    pub data_dir: PathBuf,
    agent: AgentHandle,
    /// The running remote link modules of its drives that have one.
    drives: Vec<DriveHandle>,
}

impl std::fmt::Debug for SimulatedKiosk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedKiosk")
            .field("kiosk_id", &self.site.kiosk_id)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl SimulatedKiosk {
    /// Its simulated bays: what they hold now, and `insert` for a return.
    pub fn bays(&self) -> &SimulatedBays {
        self.agent.bays()
    }

    /// The item ids of its drives whose remote link module runs.
    pub fn drives_with_remote_link(&self) -> Vec<&str> {
        self.drives.iter().map(DriveHandle::item_id).collect()
    }

    /// The text its screen's QR code shows at `at`.
    pub fn qr_payload(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        sneakernet_runtime::qr::payload(&self.kiosk_id, &self.qr_secret, at)
    }
}

/// The simulated fleet of a standalone node, running.
#[derive(Debug)]
pub struct Fleet {
    /// How to log in.
    pub accounts: Accounts,
    /// The kiosks, in [`simulated_fleet::SITES`] order.
    pub kiosks: Vec<SimulatedKiosk>,
    /// The demo packages the content service holds and the content drives carry.
    pub catalog: DemoCatalog,
    /// True when this start created the accounts.
    pub first_start: bool,
    /// False when the orders service refused kiosk registration as not implemented: the
    /// kiosks are linked to the gateway but have no profile, so nothing can be rented.
    pub registered_with_orders: bool,
}

impl Fleet {
    /// The kiosk with this id.
    pub fn kiosk(&self, kiosk_id: &str) -> Option<&SimulatedKiosk> {
        self.kiosks.iter().find(|k| k.site.kiosk_id == kiosk_id)
    }

    /// Waits until every kiosk of the fleet is online in the fleet view (FleetService, as the
    /// operator of `token`) with an inventory; returns them, or fails after `within` naming
    /// how many came.
    pub async fn until_online(
        &self,
        channel: &Channel,
        token: &str,
        within: Duration,
    ) -> anyhow::Result<Vec<pb::Kiosk>> {
        let wanted: Vec<&str> = self.kiosks.iter().map(|k| k.site.kiosk_id).collect();
        let mut fleet = FleetServiceClient::new(channel.clone());
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let listed = client::call(
                "list kiosks",
                fleet.list_kiosks(authed(
                    pb::ListKiosksRequest {
                        page_size: 500,
                        ..Default::default()
                    },
                    token,
                )?),
            )
            .await?;
            let online: Vec<pb::Kiosk> = listed
                .kiosks
                .into_iter()
                .filter(|k| {
                    k.online
                        && k.inventory.is_some()
                        && k.profile
                            .as_ref()
                            .is_some_and(|p| wanted.contains(&p.kiosk_id.as_str()))
                })
                .collect();
            if online.len() == wanted.len() {
                return Ok(online);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "only {} of the {} simulated kiosks came online with an inventory within {}",
                    online.len(),
                    wanted.len(),
                    humantime::format_duration(within)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every agent gracefully (link closed, a running command finished, journal
    /// closed); one that takes longer than ten seconds is left behind with a warning.
    pub async fn stop(self) {
        stop_kiosks(self.kiosks).await;
    }
}

async fn stop_kiosks(kiosks: Vec<SimulatedKiosk>) {
    for kiosk in kiosks {
        stop_drives(kiosk.drives).await;
        stop_agents(std::iter::once((kiosk.site.kiosk_id, kiosk.agent))).await;
    }
}

async fn stop_drives(drives: Vec<DriveHandle>) {
    for module in drives {
        let item_id = module.item_id().to_owned();
        if tokio::time::timeout(AGENT_STOP_TIMEOUT, module.stop())
            .await
            .is_err()
        {
            tracing::warn!(item_id, "simulated drive module did not stop in time");
        }
    }
}

async fn stop_agents(agents: impl Iterator<Item = (&'static str, AgentHandle)>) {
    for (kiosk_id, agent) in agents {
        if tokio::time::timeout(AGENT_STOP_TIMEOUT, agent.stop())
            .await
            .is_err()
        {
            tracing::warn!(kiosk_id, "simulated kiosk did not stop in time");
        }
    }
}

/// Sets up and starts the simulated fleet of the standalone node listening on `address`,
/// whose configuration is `config` (see the module comment for what each start does).
pub async fn start(config: &Config, address: SocketAddr) -> anyhow::Result<Fleet> {
    let data_dir = config.data_dir.clone();
    tokio::fs::create_dir_all(&data_dir)
        .await
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let existing = StandaloneState::load(&data_dir)?;
    let first_start = existing.is_none();
    let mut state = match existing {
        Some(state) => state,
        None => create_operator(config).await?,
    };
    let url = format!("http://{}", client::loopback(address));
    let channel = client::channel(&url)?;
    let operator_password = state.operator_password(&data_dir).await?;
    let operator = client::login(&channel, &state.operator_email, &operator_password)
        .await
        .with_context(|| {
            format!(
                "the standalone operator cannot log in with the password in {}",
                data_dir.join(&state.operator_password_file).display()
            )
        })?;
    if first_start {
        register_demo_user(&channel, &data_dir, &state).await?;
        state.save(&data_dir).await?;
        tracing::info!(data_dir = %data_dir.display(), "standalone accounts created");
    }
    let catalog = demo_content::publish(&channel, &operator, &data_dir).await?;

    let mut prepared = Vec::new();
    let mut registered_with_orders = true;
    for site in simulated_fleet::SITES {
        let kiosk = prepare_kiosk(&channel, &operator, &data_dir, site).await?;
        match register_kiosk(&channel, &operator, &kiosk).await {
            Ok(()) => {}
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                registered_with_orders = false;
            }
            Err(status) => bail!(
                "cannot register simulated kiosk {}: {}",
                site.kiosk_id,
                client::describe(&status)
            ),
        }
        prepared.push(kiosk);
    }
    if !registered_with_orders {
        tracing::warn!(
            "orders does not register kiosks yet (unimplemented): the simulated kiosks offer nothing"
        );
    } else if !state.site_pricing_set {
        set_site_pricing(&channel, &operator).await?;
        state.site_pricing_set = true;
        state.save(&data_dir).await?;
    }

    let manifests = demo_content::manifests(&channel, &operator, &catalog).await?;
    let mut kiosks = Vec::new();
    for kiosk in prepared {
        let config = kiosk.agent_config(&url, &catalog);
        let stocked = stock_content_drives(&config, &manifests).await;
        let started = match stocked {
            Ok(()) => sneakernet_kiosk_agent::start(config).await,
            Err(error) => Err(error),
        };
        let started = match started {
            Ok(agent) => {
                match start_drive_modules(&channel, &operator, &url, &kiosk, &catalog, &agent).await
                {
                    Ok(drives) => Ok((agent, drives)),
                    Err(error) => {
                        agent.stop().await;
                        Err(error)
                    }
                }
            }
            Err(error) => Err(error),
        };
        match started {
            Ok((agent, drives)) => kiosks.push(SimulatedKiosk {
                site: kiosk.site,
                kiosk_id: kiosk.kiosk_id,
                qr_secret: kiosk.qr_secret,
                data_dir: kiosk.data_dir,
                agent,
                drives,
            }),
            Err(error) => {
                stop_kiosks(kiosks).await;
                return Err(error.context(format!(
                    "cannot start simulated kiosk {}",
                    kiosk.site.kiosk_id
                )));
            }
        }
    }
    tracing::info!(kiosks = kiosks.len(), "simulated kiosks started");
    Ok(Fleet {
        accounts: Accounts {
            operator_email: state.operator_email.clone(),
            operator_password_file: data_dir.join(&state.operator_password_file),
            demo_user_email: state.demo_user_email.clone(),
            demo_user_password_file: data_dir.join(&state.demo_user_password_file),
        },
        kiosks,
        catalog,
        first_start,
        registered_with_orders,
    })
}

/// Loads the demo packages onto the content drives of a kiosk that is not running yet, as a
/// factory would: every drive whose bay names a demo package and that does not hold it,
/// verified (first start, a start interrupted while stocking, or a drive damaged since), gets
/// the package's files. Drives that hold it are left alone; checking them reads back the few
/// MiB of demo content per drive.
async fn stock_content_drives(
    config: &AgentConfig,
    manifests: &[(String, Manifest, PathBuf)],
) -> anyhow::Result<()> {
    let simulation = config
        .simulation
        .as_ref()
        .context("a simulated kiosk has simulated bays")?;
    let bays = SimulatedBays::open(&config.data_dir, simulation)
        .await
        .with_context(|| format!("cannot open the simulated bays of {}", config.kiosk_id))?;
    for bay in bays.snapshot() {
        let Some(item) = bay.item else { continue };
        let ItemFacts::Drive {
            content_package_id: Some(package_id),
            ..
        } = &item.facts
        else {
            continue;
        };
        let Some((_, manifest, dir)) = manifests.iter().find(|(id, ..)| id == package_id) else {
            continue;
        };
        let holds_it = {
            let bays = bays.clone();
            let item_id = item.item_id.clone();
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || {
                matches!(drive_content::holds(&bays, &item_id, &manifest.package_id), Ok(held) if held == manifest)
            })
            .await
            .context("checking a content drive stopped")?
        };
        if holds_it {
            continue;
        }
        bays.stock(&item.item_id, manifest, dir)
            .await
            .with_context(|| {
                format!(
                    "cannot stock drive {} of {} with {:?}",
                    item.item_id, config.kiosk_id, manifest.title
                )
            })?;
        tracing::info!(kiosk_id = %config.kiosk_id, item_id = %item.item_id, package = %manifest.title, "content drive stocked");
    }
    Ok(())
}

/// Creates the operator through the bootstrap path with a random password (reusing the
/// password file of an interrupted first start); returns the state to record.
async fn create_operator(config: &Config) -> anyhow::Result<StandaloneState> {
    let data_dir = &config.data_dir;
    let state = StandaloneState {
        operator_email: OPERATOR_EMAIL.to_owned(),
        operator_password_file: OPERATOR_PASSWORD_FILE.into(),
        demo_user_email: DEMO_USER_EMAIL.to_owned(),
        demo_user_password_file: DEMO_USER_PASSWORD_FILE.into(),
        site_pricing_set: false,
    };
    let password = password_in(&data_dir.join(OPERATOR_PASSWORD_FILE)).await?;
    match sneakernet_auth::create_operator(config, OPERATOR_EMAIL, &password).await? {
        sneakernet_auth::OperatorCreated::Created(user_id) => {
            tracing::info!(%user_id, "standalone operator created");
        }
        // An interrupted first start created it with the password in the file.
        sneakernet_auth::OperatorCreated::Exists => {}
    }
    Ok(state)
}

async fn register_demo_user(
    channel: &Channel,
    data_dir: &Path,
    state: &StandaloneState,
) -> anyhow::Result<()> {
    let password = password_in(&data_dir.join(&state.demo_user_password_file)).await?;
    let mut auth = AuthServiceClient::new(channel.clone());
    let answer = client::within(client::CALL_TIMEOUT, "register the demo user", async {
        Ok(auth
            .register(auth::RegisterRequest {
                email: state.demo_user_email.clone(),
                password,
            })
            .await)
    })
    .await?;
    match answer {
        Ok(_) => Ok(()),
        // An interrupted first start registered it with the password in the file.
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => bail!(
            "cannot register the demo user: {}",
            client::describe(&status)
        ),
    }
}

/// A kiosk whose credential and QR secret are in place, not running yet.
struct PreparedKiosk {
    site: KioskSite,
    kiosk_id: KioskId,
    data_dir: PathBuf,
    credential_file: PathBuf,
    qr_secret: Vec<u8>,
}

impl PreparedKiosk {
    fn agent_config(&self, url: &str, catalog: &DemoCatalog) -> AgentConfig {
        AgentConfig {
            content: Default::default(),
            kiosk_id: self.site.kiosk_id.to_owned(),
            credential_file: self.credential_file.clone(),
            auth_url: url.to_owned(),
            gateway_url: url.to_owned(),
            data_dir: self.data_dir.clone(),
            allow_plaintext: false,
            qr_secret_file: Some(self.data_dir.join(QR_SECRET_FILE)),
            link: LinkConfig {
                backoff_initial: Duration::from_millis(200),
                backoff_max: Duration::from_secs(5),
            },
            simulation: Some(SimulationConfig {
                bays: self.site.bays(catalog),
                faults: SimFaults::default(),
            }),
        }
    }
}

async fn prepare_kiosk(
    channel: &Channel,
    operator: &str,
    data_dir: &Path,
    site: KioskSite,
) -> anyhow::Result<PreparedKiosk> {
    let kiosk_id = KioskId::parse(site.kiosk_id)
        .map_err(|why| anyhow::anyhow!("kiosk id {:?} {why}", site.kiosk_id))?;
    let dir = data_dir.join(KIOSKS_DIR).join(site.kiosk_id);
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let qr_secret = qr_secret_in(&dir.join(QR_SECRET_FILE)).await?;
    let credential_file = dir.join(KIOSK_CREDENTIAL_FILE);
    ensure_kiosk_credential(channel, operator, &kiosk_id, &credential_file).await?;
    Ok(PreparedKiosk {
        site,
        kiosk_id,
        data_dir: dir,
        credential_file,
        qr_secret,
    })
}

/// Runs the remote link module of every drive of `kiosk` that has one, each with its
/// credential (kept, or issued when it no longer logs in) and its journal under the kiosk's
/// `modules/<item_id>/`, toggling the flag in `agent`'s simulator.
async fn start_drive_modules(
    channel: &Channel,
    operator: &str,
    url: &str,
    kiosk: &PreparedKiosk,
    catalog: &DemoCatalog,
    agent: &AgentHandle,
) -> anyhow::Result<Vec<DriveHandle>> {
    let mut started = Vec::new();
    for item_id in kiosk.site.drives_with_remote_link(catalog) {
        let drive =
            ItemId::parse(&item_id).map_err(|why| anyhow::anyhow!("drive id {item_id:?} {why}"))?;
        let dir = kiosk.data_dir.join(MODULES_DIR).join(&item_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let file = dir.join(DRIVE_CREDENTIAL_FILE);
        let running = async {
            ensure_device_credential(channel, operator, &DeviceId::Drive(drive), &file).await?;
            let config = DriveConfig {
                item_id: item_id.clone(),
                secret: read_password(&file).await?,
                auth_url: url.to_owned(),
                gateway_url: url.to_owned(),
                // Standalone's node is on loopback; a drive module beyond it must use TLS.
                allow_plaintext: false,
                data_dir: dir.clone(),
                link: LinkConfig {
                    backoff_initial: Duration::from_millis(200),
                    backoff_max: Duration::from_secs(5),
                },
            };
            let module = SimulatedModule {
                bays: agent.bays().clone(),
                item_id: item_id.clone(),
            };
            drive::start(config, module).await
        };
        match running.await {
            Ok(handle) => started.push(handle),
            Err(error) => {
                stop_drives(started).await;
                return Err(error.context(format!(
                    "cannot start the remote link of simulated drive {item_id}"
                )));
            }
        }
    }
    Ok(started)
}

/// Keeps the kiosk's credential when it still logs in; issues a new one otherwise.
async fn ensure_kiosk_credential(
    channel: &Channel,
    operator: &str,
    kiosk_id: &KioskId,
    file: &Path,
) -> anyhow::Result<()> {
    ensure_device_credential(channel, operator, &DeviceId::Kiosk(kiosk_id.clone()), file).await
}

/// Keeps a device's credential (a kiosk's, or a drive module's) when it still logs in;
/// issues a new one otherwise, as an operator would.
async fn ensure_device_credential(
    channel: &Channel,
    operator: &str,
    device: &DeviceId,
    file: &Path,
) -> anyhow::Result<()> {
    let mut auth = AuthServiceClient::new(channel.clone());
    if let Ok(secret) = read_password(file).await {
        let login = client::within(client::CALL_TIMEOUT, "device login", async {
            Ok(match device {
                DeviceId::Kiosk(kiosk) => auth
                    .kiosk_login(auth::KioskLoginRequest {
                        kiosk_id: kiosk.to_string(),
                        secret,
                    })
                    .await
                    .map(drop),
                DeviceId::Drive(item) => auth
                    .drive_login(auth::DriveLoginRequest {
                        item_id: item.to_string(),
                        secret,
                    })
                    .await
                    .map(drop),
            })
        })
        .await?;
        match login {
            Ok(()) => return Ok(()),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                tracing::info!(
                    device = %device,
                    "simulated device credential no longer valid, issuing a new one"
                );
            }
            Err(status) => bail!(
                "cannot check the credential of simulated {device}: {}",
                client::describe(&status)
            ),
        }
    }
    let what = format!("issue the credential of simulated {device}");
    let secret = match device {
        DeviceId::Kiosk(kiosk) => {
            client::call(
                &what,
                auth.issue_kiosk_credential(authed(
                    auth::IssueKioskCredentialRequest {
                        kiosk_id: kiosk.to_string(),
                    },
                    operator,
                )?),
            )
            .await?
            .secret
        }
        DeviceId::Drive(item) => {
            client::call(
                &what,
                auth.issue_drive_credential(authed(
                    auth::IssueDriveCredentialRequest {
                        item_id: item.to_string(),
                    },
                    operator,
                )?),
            )
            .await?
            .secret
        }
    };
    write_private(file, format!("{secret}\n").as_bytes()).await
}

async fn register_kiosk(
    channel: &Channel,
    operator: &str,
    kiosk: &PreparedKiosk,
) -> Result<(), tonic::Status> {
    let request = pb::RegisterKioskRequest {
        kiosk_id: kiosk.site.kiosk_id.to_owned(),
        site_id: kiosk.site.site_id.to_owned(),
        site_name: kiosk.site.site_name.to_owned(),
        location: Some(common::Location {
            latitude: kiosk.site.latitude,
            longitude: kiosk.site.longitude,
        }),
        qr_secret: kiosk.qr_secret.clone(),
        out_of_service: false,
    };
    let mut request = tonic::Request::new(request);
    request.set_timeout(client::CALL_TIMEOUT);
    let bearer = format!("Bearer {operator}")
        .parse()
        .map_err(|_| tonic::Status::internal("the operator's token is not header text"))?;
    request.metadata_mut().insert("authorization", bearer);
    FleetServiceClient::new(channel.clone())
        .register_kiosk(request)
        .await?;
    tracing::info!(kiosk_id = kiosk.site.kiosk_id, "simulated kiosk registered");
    Ok(())
}

/// The simulated sites' price rules, one per site and priced kind.
async fn set_site_pricing(channel: &Channel, operator: &str) -> anyhow::Result<()> {
    let mut fleet = FleetServiceClient::new(channel.clone());
    for site in simulated_fleet::SITES {
        for kind in simulated_fleet::PRICED_KINDS {
            client::call(
                &format!("set the price of {kind:?} at site {}", site.site_id),
                fleet.set_pricing(authed(
                    pb::SetPricingRequest {
                        site_id: site.site_id.to_owned(),
                        item_type: Some(common::ItemType {
                            kind: kind.into(),
                            capacity_bytes: 0,
                            content_package_id: String::new(),
                        }),
                        pricing: Some(simulated_fleet::pricing(kind)),
                    },
                    operator,
                )?),
            )
            .await?;
        }
    }
    tracing::info!("simulated sites priced");
    Ok(())
}

/// The password in `file`, made (random, owner-only) when the file does not exist.
async fn password_in(file: &Path) -> anyhow::Result<String> {
    if tokio::fs::try_exists(file).await.unwrap_or(false) {
        return read_password(file).await;
    }
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(PASSWORD_CHARS)
        .map(char::from)
        .collect();
    write_private(file, format!("{password}\n").as_bytes()).await?;
    Ok(password)
}

/// A password or secret file's text without its trailing newline; an empty one is an error.
pub(crate) async fn read_password(file: &Path) -> anyhow::Result<String> {
    let text = tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        bail!("{} is empty", file.display());
    }
    Ok(secret.to_owned())
}

/// The QR secret in `file`, made (random, owner-only) when the file does not exist.
pub(crate) async fn qr_secret_in(file: &Path) -> anyhow::Result<Vec<u8>> {
    if tokio::fs::try_exists(file).await.unwrap_or(false) {
        let secret = tokio::fs::read(file)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        if !sneakernet_runtime::qr::SECRET_LEN.contains(&secret.len()) {
            bail!(
                "{} holds {} bytes; a QR secret is 20 to 64 bytes (delete the file to make a new one)",
                file.display(),
                secret.len()
            );
        }
        return Ok(secret);
    }
    let mut secret = vec![0_u8; QR_SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    write_private(file, &secret).await?;
    Ok(secret)
}

/// The QR secret of simulated kiosk `kiosk_id` under `data_dir`.
pub async fn read_qr_secret(data_dir: &Path, kiosk_id: &str) -> anyhow::Result<Vec<u8>> {
    let file = data_dir
        .join(KIOSKS_DIR)
        .join(kiosk_id)
        .join(QR_SECRET_FILE);
    if !tokio::fs::try_exists(&file).await.unwrap_or(false) {
        bail!(
            "no QR secret at {}: is {kiosk_id} a simulated kiosk of the standalone node with data_dir {}?",
            file.display(),
            data_dir.display()
        );
    }
    qr_secret_in(&file).await
}

/// Writes `bytes` to `file` readable and writable by the owner only (on Unix), replacing it
/// atomically: a crash leaves the old file or the new one.
pub(crate) async fn write_private(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = file.with_file_name(format!(".{name}.tmp"));
    let _ = tokio::fs::remove_file(&temp).await;
    let write = async {
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut out = options.open(&temp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut out, bytes).await?;
        out.sync_all().await?;
        drop(out);
        tokio::fs::rename(&temp, file).await
    };
    write
        .await
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let password = password_in(&dir.path().join("p")).await.unwrap();
        assert_eq!(password.len(), PASSWORD_CHARS);
        assert_eq!(password_in(&dir.path().join("p")).await.unwrap(), password);
        let qr = qr_secret_in(&dir.path().join("q")).await.unwrap();
        assert_eq!(qr.len(), QR_SECRET_BYTES);
        assert_eq!(qr_secret_in(&dir.path().join("q")).await.unwrap(), qr);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for name in ["p", "q"] {
                let mode = std::fs::metadata(dir.path().join(name))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{name}");
            }
        }
    }

    #[tokio::test]
    async fn the_state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(StandaloneState::load(dir.path()).unwrap(), None);
        let state = StandaloneState {
            operator_email: OPERATOR_EMAIL.into(),
            operator_password_file: OPERATOR_PASSWORD_FILE.into(),
            demo_user_email: DEMO_USER_EMAIL.into(),
            demo_user_password_file: DEMO_USER_PASSWORD_FILE.into(),
            site_pricing_set: true,
        };
        state.save(dir.path()).await.unwrap();
        assert_eq!(StandaloneState::load(dir.path()).unwrap(), Some(state));
    }
}
