//! The agent's configuration file: who the kiosk is, how it proves it, where the backend is,
//! where it keeps its journal, how it reconnects, and (for tests and standalone) the simulated
//! bays it holds.
//!
//! Guarantees: unknown keys are refused, so a typo is an error rather than a silent default;
//! a configuration that [`AgentConfig::validate`] accepted has well-formed, unique bay and item
//! ids and every kind-specific item field present; every refusal names the offending key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};

/// The kiosk agent's configuration (TOML).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The kiosk's identification number, as registered by an operator (the QR code's id).
    pub kiosk_id: String,
    /// File holding the kiosk's secret from IssueKioskCredential.
    pub credential_file: PathBuf,
    /// gRPC address of the auth service (`http://host:port` or `https://...`).
    pub auth_url: String,
    /// gRPC address of the device gateway.
    pub gateway_url: String,
    /// Directory of the agent's durable state: the command journal (`journal.db`) and the
    /// simulator's bays (`simulator.json`, `sim-inbox/`). Created if missing.
    pub data_dir: PathBuf,
    /// `allow_plaintext`: true lets `auth_url`, `gateway_url` and `content.url` be `http://`
    /// to a host beyond loopback. Default false: the kiosk's secret and tokens would cross
    /// the network unencrypted, so only `https://` may leave the machine unless told.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// `qr_secret_file`: the kiosk's QR secret, 20 to 64 raw bytes: the file `sneakernet kiosk
    /// add --qr-secret-file` made (the same bytes RegisterKiosk gave orders), copied to the
    /// kiosk and readable by the agent only. `kiosk-agent qr` prints the code the screen shows
    /// from it. Optional: only what draws the screen needs it.
    #[serde(default)]
    pub qr_secret_file: Option<PathBuf>,
    /// How the link to the gateway reconnects.
    #[serde(default)]
    pub link: LinkConfig,
    /// Where provisioning gets content and keeps its chunk cache (`[content]`; every key has
    /// a default).
    #[serde(default)]
    pub content: ContentConfig,
    /// Simulated bays (tests and standalone); required by [`crate::start`] until real bay
    /// hardware has a driver.
    #[serde(default)]
    pub simulation: Option<SimulationConfig>,
}

/// How the link reconnects after it drops: exponential backoff with full jitter.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// The first reconnect waits up to this long (then twice as long, and so on).
    #[serde(with = "humantime_serde", default = "default_backoff_initial")]
    pub backoff_initial: Duration,
    /// No reconnect waits longer than this.
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
}

fn default_backoff_initial() -> Duration {
    Duration::from_millis(200)
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
        }
    }
}

/// Provisioning's content settings (`[content]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContentConfig {
    /// `content.url`: gRPC address of the content service. Default: `gateway_url`, since a
    /// standalone node serves every service on one listener.
    #[serde(default)]
    pub url: Option<String>,
    /// `content.cache_dir`: directory of the chunk cache. Default: `data_dir/chunk-cache`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// `content.cache_budget_bytes`: most bytes the chunk cache keeps before evicting the
    /// least recently used chunks. Default [`DEFAULT_CACHE_BUDGET_BYTES`] (20 GiB); at least
    /// [`MIN_CACHE_BUDGET_BYTES`] (one largest chunk).
    #[serde(default)]
    pub cache_budget_bytes: Option<u64>,
    /// `content.provision_retries`: how many times a Provision retries a failed manifest
    /// fetch, an unreachable content service, or a chunk that arrived corrupt, before it fails
    /// (DOWNLOAD_FAILED, CHUNK_CORRUPT). Default [`DEFAULT_PROVISION_RETRIES`]; at most
    /// [`MAX_PROVISION_RETRIES`].
    #[serde(default)]
    pub provision_retries: Option<u32>,
}

/// Default chunk cache budget: 20 GiB, room for a few packages of films on a kiosk's own disk.
pub const DEFAULT_CACHE_BUDGET_BYTES: u64 = 20 << 30;
/// The smallest chunk cache budget accepted: one chunk of the largest size the contract allows.
pub const MIN_CACHE_BUDGET_BYTES: u64 = crate::cache::MAX_CHUNK_BYTES;
/// Default retries of a Provision's downloads.
pub const DEFAULT_PROVISION_RETRIES: u32 = 3;
/// The most retries accepted (more would hold a reservation for hours behind a dead link).
pub const MAX_PROVISION_RETRIES: u32 = 20;
/// The chunk cache's directory under `data_dir` when `content.cache_dir` is not given.
pub const DEFAULT_CACHE_DIR: &str = "chunk-cache";

impl AgentConfig {
    /// The content service's address: `content.url`, else `gateway_url`.
    pub fn content_url(&self) -> &str {
        self.content.url.as_deref().unwrap_or(&self.gateway_url)
    }

    /// The chunk cache's directory: `content.cache_dir`, else `data_dir/chunk-cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.content
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_CACHE_DIR))
    }

    /// The chunk cache's budget in bytes.
    pub fn cache_budget_bytes(&self) -> u64 {
        self.content
            .cache_budget_bytes
            .unwrap_or(DEFAULT_CACHE_BUDGET_BYTES)
    }

    /// Retries of a Provision's downloads.
    pub fn provision_retries(&self) -> u32 {
        self.content
            .provision_retries
            .unwrap_or(DEFAULT_PROVISION_RETRIES)
    }
}

/// The simulated kiosk hardware: its bays, what they hold on first start, and its faults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimulationConfig {
    /// Every bay of the kiosk. Only read on the simulator's first start: afterwards the bays'
    /// contents live in `data_dir/simulator.json`.
    pub bays: Vec<SimBayConfig>,
    /// Faults the simulated mechanism shows (read on every start).
    #[serde(default)]
    pub faults: SimFaults,
}

/// One simulated bay.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimBayConfig {
    /// The bay's id, unique in the kiosk (for example "A03").
    pub id: String,
    /// What it holds on first start; absent for an empty bay.
    #[serde(default)]
    pub item: Option<SimItemConfig>,
}

/// Kinds of simulated item.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SimItemKind {
    /// A portable hard drive.
    Drive,
    /// A power bank.
    PowerBank,
}

/// One simulated item, as configured, inserted, or written to the simulator's inbox.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimItemConfig {
    /// `drive` or `power_bank`.
    pub kind: SimItemKind,
    /// The item's own id, 1 to 64 printable ASCII characters, unique in the kiosk.
    pub item_id: String,
    /// Drives: nominal capacity in bytes (required, > 0).
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// Drives: the content package the drive holds; absent for a blank drive.
    #[serde(default)]
    pub content_package_id: Option<String>,
    /// Drives: whether write protection is on.
    #[serde(default)]
    pub write_protected: bool,
    /// Drives: whether the drive has its own remote link module (reported as
    /// `DriveAttributes.remote_link`; standalone runs the link of each such drive).
    #[serde(default)]
    pub remote_link: bool,
    /// Power banks: state of charge, 0 to 100 (required).
    #[serde(default)]
    pub charge_percent: Option<u32>,
}

/// Faults of the simulated mechanism.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimFaults {
    /// Bays whose eject mechanism jams: an eject fails and the item stays in.
    #[serde(default)]
    pub jammed_bays: Vec<String>,
    /// Bays that report an item but eject nothing: an eject fails.
    #[serde(default)]
    pub empty_on_eject_bays: Vec<String>,
    /// How long every eject takes.
    #[serde(with = "humantime_serde", default)]
    pub slow_eject: Duration,
}

/// Why the configuration was refused; names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid kiosk agent configuration {file}: {reason}")]
pub struct AgentConfigError {
    file: String,
    reason: String,
}

/// The longest bay id the gateway contract accepts (`Bay.bay_id`: 1 to 32 characters).
pub const MAX_BAY_ID_LEN: usize = 32;
/// The longest item id the contract accepts (`Item.item_id`: 1 to 64 printable ASCII).
pub const MAX_ITEM_ID_LEN: usize = 64;

impl AgentConfig {
    /// Reads and checks `file`.
    pub fn load(file: &Path) -> Result<Self, AgentConfigError> {
        let error = |reason: String| AgentConfigError {
            file: file.display().to_string(),
            reason,
        };
        if !file.is_file() {
            return Err(error("does not exist or is not a file".into()));
        }
        let config: AgentConfig = Figment::from(Toml::file_exact(file))
            .extract()
            .map_err(|e| error(e.to_string().replace('\n', "; ")))?;
        config.check().map_err(error)?;
        Ok(config)
    }

    /// Checks a configuration built in code (what [`AgentConfig::load`] checks after parsing).
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        self.check().map_err(|reason| AgentConfigError {
            file: "(given in code)".into(),
            reason,
        })
    }

    fn check(&self) -> Result<(), String> {
        if !is_kiosk_id(&self.kiosk_id) {
            return Err(format!(
                "`kiosk_id` {:?} must be 1 to 64 of A-Z, a-z, 0-9, \"-\" and \"_\"",
                self.kiosk_id
            ));
        }
        for (key, url) in [
            ("auth_url", self.auth_url.as_str()),
            ("gateway_url", self.gateway_url.as_str()),
            ("content.url", self.content_url()),
        ] {
            check_transport(key, url, self.allow_plaintext, "kiosk")?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("`data_dir` must not be empty".into());
        }
        if self
            .qr_secret_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            return Err("`qr_secret_file` must not be empty when given".into());
        }
        if self.link.backoff_initial.is_zero() {
            return Err("`link.backoff_initial` must be more than 0".into());
        }
        if self.link.backoff_max < self.link.backoff_initial {
            return Err("`link.backoff_max` must be at least `link.backoff_initial`".into());
        }
        if self.cache_budget_bytes() < MIN_CACHE_BUDGET_BYTES {
            return Err(format!(
                "`content.cache_budget_bytes` must be at least {MIN_CACHE_BUDGET_BYTES} (one largest chunk)"
            ));
        }
        if self.provision_retries() > MAX_PROVISION_RETRIES {
            return Err(format!(
                "`content.provision_retries` must be at most {MAX_PROVISION_RETRIES}"
            ));
        }
        if self
            .content
            .cache_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err("`content.cache_dir` must not be empty when given".into());
        }
        if let Some(simulation) = &self.simulation {
            simulation.check()?;
        }
        Ok(())
    }

    /// The kiosk's secret, read from `credential_file` (one trailing newline ignored).
    pub fn secret(&self) -> Result<String, AgentConfigError> {
        let text =
            std::fs::read_to_string(&self.credential_file).map_err(|e| AgentConfigError {
                file: self.credential_file.display().to_string(),
                reason: format!("cannot read the credential: {e}"),
            })?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }

    /// The kiosk's QR secret, read from `qr_secret_file`; the error names the key or the
    /// file and what is wrong.
    pub fn qr_secret(&self) -> Result<Vec<u8>, AgentConfigError> {
        let Some(file) = &self.qr_secret_file else {
            return Err(AgentConfigError {
                file: "(the agent's configuration)".into(),
                reason: "`qr_secret_file` is not set: copy the file `sneakernet kiosk add --qr-secret-file` made to this kiosk and name it there".into(),
            });
        };
        let error = |reason: String| AgentConfigError {
            file: file.display().to_string(),
            reason,
        };
        let secret =
            std::fs::read(file).map_err(|e| error(format!("cannot read the QR secret: {e}")))?;
        if !sneakernet_proto::qr::SECRET_LEN.contains(&secret.len()) {
            return Err(error(format!(
                "holds {} bytes; a QR secret is {} to {} raw bytes (`qr_secret_file`)",
                secret.len(),
                sneakernet_proto::qr::SECRET_LEN.start(),
                sneakernet_proto::qr::SECRET_LEN.end()
            )));
        }
        Ok(secret)
    }
}

impl SimulationConfig {
    fn check(&self) -> Result<(), String> {
        let mut bay_ids = HashSet::new();
        let mut item_ids = HashSet::new();
        for (index, bay) in self.bays.iter().enumerate() {
            let key = format!("simulation.bays[{index}]");
            if !is_bay_id(&bay.id) {
                return Err(format!(
                    "`{key}.id` {:?} must be 1 to {MAX_BAY_ID_LEN} printable ASCII characters",
                    bay.id
                ));
            }
            if !bay_ids.insert(bay.id.as_str()) {
                return Err(format!("`{key}.id` {:?} is used by another bay", bay.id));
            }
            if let Some(item) = &bay.item {
                item.check(&format!("{key}.item"))?;
                if !item_ids.insert(item.item_id.as_str()) {
                    return Err(format!(
                        "`{key}.item.item_id` {:?} is in another bay too",
                        item.item_id
                    ));
                }
            }
        }
        for (key, list) in [
            ("simulation.faults.jammed_bays", &self.faults.jammed_bays),
            (
                "simulation.faults.empty_on_eject_bays",
                &self.faults.empty_on_eject_bays,
            ),
        ] {
            if let Some(unknown) = list.iter().find(|b| !bay_ids.contains(b.as_str())) {
                return Err(format!("`{key}` names {unknown:?}, which is not a bay"));
            }
        }
        Ok(())
    }
}

impl SimItemConfig {
    /// Checks the item's id and its kind-specific fields; errors name `key.<field>`.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if !is_item_id(&self.item_id) {
            return Err(format!(
                "`{key}.item_id` {:?} must be 1 to {MAX_ITEM_ID_LEN} printable ASCII characters",
                self.item_id
            ));
        }
        match self.kind {
            SimItemKind::Drive => {
                match self.capacity_bytes {
                    None => {
                        return Err(format!("`{key}.capacity_bytes` is required for a drive"));
                    }
                    Some(0) => return Err(format!("`{key}.capacity_bytes` must be more than 0")),
                    Some(_) => {}
                }
                if let Some(package) = &self.content_package_id
                    && (package.is_empty() || package.len() > 64)
                {
                    return Err(format!(
                        "`{key}.content_package_id` must be 1 to 64 characters when given"
                    ));
                }
                if self.charge_percent.is_some() {
                    return Err(format!(
                        "`{key}.charge_percent` is for power banks, not drives"
                    ));
                }
            }
            SimItemKind::PowerBank => {
                match self.charge_percent {
                    None => {
                        return Err(format!(
                            "`{key}.charge_percent` is required for a power bank"
                        ));
                    }
                    Some(c) if c > 100 => {
                        return Err(format!("`{key}.charge_percent` must be 0 to 100"));
                    }
                    Some(_) => {}
                }
                for (field, set) in [
                    ("capacity_bytes", self.capacity_bytes.is_some()),
                    ("content_package_id", self.content_package_id.is_some()),
                    ("write_protected", self.write_protected),
                ] {
                    if set {
                        return Err(format!("`{key}.{field}` is for drives, not power banks"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The rule every device's address obeys (a kiosk's, a drive module's): `http://` or
/// `https://`, and plaintext only to loopback unless `allow_plaintext`, because the device's
/// secret travels over it at login. The error names `key` and whose secret would leak.
pub fn check_transport(
    key: &str,
    url: &str,
    allow_plaintext: bool,
    device: &str,
) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "`{key}` {url:?} must start with http:// or https://"
        ));
    }
    if url.starts_with("http://") && !allow_plaintext && !is_loopback_url(url) {
        return Err(format!(
            "`{key}` {url:?} is plaintext to a host beyond loopback, which would send the {device}'s secret unencrypted: use https://, or set `allow_plaintext = true` for a network you trust"
        ));
    }
    Ok(())
}

/// Whether `url`'s host is this machine: `localhost` or a loopback address. A URL that does
/// not parse is not loopback.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<tonic::transport::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_kiosk_id(id: &str) -> bool {
    sneakernet_proto::ids::KioskId::parse(id).is_ok()
}

/// 1 to 32 printable ASCII characters (no spaces): a bay id the contract accepts.
pub fn is_bay_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_BAY_ID_LEN && id.chars().all(|c| c.is_ascii_graphic())
}

/// 1 to 64 printable ASCII characters (no spaces): an item id the contract accepts.
pub fn is_item_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ITEM_ID_LEN && id.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "kiosk_id = \"K-1\"\ncredential_file = \"/s\"\nauth_url = \"http://a:1\"\ngateway_url = \"http://g:1\"\ndata_dir = \"/var/lib/agent\"\nallow_plaintext = true\n";

    fn write(dir: &Path, text: &str) -> PathBuf {
        let file = dir.join("agent.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    fn error_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        AgentConfig::load(&write(dir.path(), text))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_complete_file_loads_with_link_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = AgentConfig::load(&write(dir.path(), BASE)).unwrap();
        assert_eq!(config.kiosk_id, "K-1");
        assert_eq!(config.link, LinkConfig::default());
        assert_eq!(config.link.backoff_initial, Duration::from_millis(200));
        assert_eq!(config.link.backoff_max, Duration::from_secs(30));
        assert!(config.simulation.is_none());
        assert_eq!(config.content_url(), "http://g:1");
        assert_eq!(
            config.cache_dir(),
            PathBuf::from("/var/lib/agent/chunk-cache")
        );
        assert_eq!(config.cache_budget_bytes(), 20 << 30);
        assert_eq!(config.provision_retries(), 3);
    }

    #[test]
    fn content_keys_load_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}[content]\nurl = \"http://c:2\"\ncache_dir = \"/cache\"\ncache_budget_bytes = 1073741824\nprovision_retries = 5\n"
        );
        let config = AgentConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(config.content_url(), "http://c:2");
        assert_eq!(config.cache_dir(), PathBuf::from("/cache"));
        assert_eq!(config.cache_budget_bytes(), 1 << 30);
        assert_eq!(config.provision_retries(), 5);
        for (section, key) in [
            ("url = \"c:2\"", "content.url"),
            ("cache_budget_bytes = 1000", "content.cache_budget_bytes"),
            ("provision_retries = 99", "content.provision_retries"),
            ("cache_dri = \"/x\"", "cache_dri"),
        ] {
            let message = error_of(&format!("{BASE}[content]\n{section}\n"));
            assert!(message.contains(key), "{key} not in {message}");
        }
    }

    #[test]
    fn a_simulation_section_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}[link]\nbackoff_initial = \"50ms\"\nbackoff_max = \"2s\"\n\
             [[simulation.bays]]\nid = \"A01\"\n[simulation.bays.item]\nkind = \"drive\"\nitem_id = \"D-1\"\ncapacity_bytes = 1000\n\
             [[simulation.bays]]\nid = \"A02\"\n[simulation.bays.item]\nkind = \"power_bank\"\nitem_id = \"P-1\"\ncharge_percent = 90\n\
             [[simulation.bays]]\nid = \"A03\"\n\
             [simulation.faults]\njammed_bays = [\"A03\"]\nslow_eject = \"1s\"\n"
        );
        let config = AgentConfig::load(&write(dir.path(), &text)).unwrap();
        let simulation = config.simulation.unwrap();
        assert_eq!(simulation.bays.len(), 3);
        assert_eq!(
            simulation.bays[1].item.as_ref().unwrap().kind,
            SimItemKind::PowerBank
        );
        assert_eq!(simulation.faults.slow_eject, Duration::from_secs(1));
        assert_eq!(config.link.backoff_max, Duration::from_secs(2));
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        assert!(error_of(&BASE.replace("kiosk_id", "kiosk_idd")).contains("kiosk_idd"));
        assert!(error_of(&BASE.replace("K-1", "K 1")).contains("kiosk_id"));
        assert!(error_of(&BASE.replace("http://a:1", "a:1")).contains("auth_url"));
        assert!(error_of(&format!("{BASE}[link]\nbackof_max = \"1s\"\n")).contains("backof_max"));
        assert!(
            error_of(&format!(
                "{BASE}[link]\nbackoff_initial = \"2s\"\nbackoff_max = \"1s\"\n"
            ))
            .contains("link.backoff_max")
        );
    }

    #[test]
    fn plaintext_beyond_loopback_is_refused_unless_allowed() {
        let strict = BASE.replace("allow_plaintext = true\n", "");
        // Every other address is https, so the refusal is about the one under test.
        let secure = strict
            .replace("http://a:1", "https://a:1")
            .replace("http://g:1", "https://g:1");
        for (from, to, key) in [
            ("https://g:1", "http://gateway.example:443", "gateway_url"),
            ("https://a:1", "http://10.0.0.7:50051", "auth_url"),
            ("https://g:1", "http://[2001:db8::1]:1", "gateway_url"),
        ] {
            let message = error_of(&secure.replace(from, to));
            assert!(message.contains(key), "{key} not in {message}");
            assert!(message.contains("allow_plaintext"), "{message}");
        }
        let content = format!(
            "{}[content]\nurl = \"http://content.example:1\"\n",
            strict
                .replace("http://a:1", "https://a:1")
                .replace("http://g:1", "https://g:1")
        );
        assert!(error_of(&content).contains("content.url"));
        // The content service defaults to the gateway's address, and is judged as it.
        assert!(error_of(&strict.replace("http://a:1", "https://a:1")).contains("gateway_url"));

        let dir = tempfile::tempdir().unwrap();
        for (auth, gateway) in [
            ("http://127.0.0.1:1", "http://localhost:2"),
            ("http://[::1]:1", "http://127.8.9.10:2"),
            ("https://a.example:1", "https://g.example:2"),
        ] {
            let text = strict
                .replace("http://a:1", auth)
                .replace("http://g:1", gateway);
            AgentConfig::load(&write(dir.path(), &text))
                .unwrap_or_else(|e| panic!("{auth} {gateway}: {e}"));
        }
        let allowed = AgentConfig::load(&write(dir.path(), BASE)).unwrap();
        assert!(allowed.allow_plaintext);
    }

    #[test]
    fn simulation_errors_name_the_key() {
        let drive = "[[simulation.bays]]\nid = \"A01\"\n[simulation.bays.item]\nkind = \"drive\"\nitem_id = \"D-1\"\n";
        let cases = [
            (
                drive.to_owned(),
                "simulation.bays[0].item.capacity_bytes",
            ),
            (
                format!("{drive}capacity_bytes = 1\ncharge_percent = 5\n"),
                "simulation.bays[0].item.charge_percent",
            ),
            (
                "[[simulation.bays]]\nid = \"A01\"\n[simulation.bays.item]\nkind = \"power_bank\"\nitem_id = \"P-1\"\n".to_owned(),
                "simulation.bays[0].item.charge_percent",
            ),
            (
                "[[simulation.bays]]\nid = \"A01\"\n[simulation.bays.item]\nkind = \"power_bank\"\nitem_id = \"P-1\"\ncharge_percent = 101\n".to_owned(),
                "simulation.bays[0].item.charge_percent",
            ),
            (
                "[[simulation.bays]]\nid = \"A01\"\n[[simulation.bays]]\nid = \"A01\"\n".to_owned(),
                "simulation.bays[1].id",
            ),
            (
                "[[simulation.bays]]\nid = \"\"\n".to_owned(),
                "simulation.bays[0].id",
            ),
            (
                format!("[[simulation.bays]]\nid = \"{}\"\n", "B".repeat(33)),
                "simulation.bays[0].id",
            ),
            (
                format!("{drive}capacity_bytes = 1\n[[simulation.bays]]\nid = \"A02\"\n[simulation.bays.item]\nkind = \"drive\"\nitem_id = \"D-1\"\ncapacity_bytes = 1\n"),
                "simulation.bays[1].item.item_id",
            ),
            (
                format!("[[simulation.bays]]\nid = \"A01\"\n[simulation.bays.item]\nkind = \"drive\"\nitem_id = \"{}\"\ncapacity_bytes = 1\n", "I".repeat(65)),
                "simulation.bays[0].item.item_id",
            ),
            (
                "[[simulation.bays]]\nid = \"A01\"\n[simulation.bays.item]\nkind = \"tape\"\nitem_id = \"T\"\n".to_owned(),
                "tape",
            ),
            (
                "[[simulation.bays]]\nid = \"A01\"\n[simulation.faults]\njammed_bays = [\"Z9\"]\n".to_owned(),
                "simulation.faults.jammed_bays",
            ),
        ];
        for (section, key) in cases {
            let message = error_of(&format!("{BASE}{section}"));
            assert!(message.contains(key), "{key} not in {message}");
        }
    }
}
