//! The agent's configuration file: who the kiosk is, how it proves it, where the backend is.
//! Unknown keys are refused, so a typo is an error rather than a silent default.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

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
}

/// Why the configuration was refused; names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid kiosk agent configuration {file}: {reason}")]
pub struct AgentConfigError {
    file: String,
    reason: String,
}

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
        if config.kiosk_id.is_empty()
            || config.kiosk_id.len() > 64
            || !config
                .kiosk_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(error(format!(
                "`kiosk_id` {:?} must be 1 to 64 of A-Z, a-z, 0-9, \"-\" and \"_\"",
                config.kiosk_id
            )));
        }
        for (key, url) in [
            ("auth_url", &config.auth_url),
            ("gateway_url", &config.gateway_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(error(format!(
                    "`{key}` {url:?} must start with http:// or https://"
                )));
            }
        }
        Ok(config)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let file = dir.join("agent.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn a_complete_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "kiosk_id = \"K-1\"\ncredential_file = \"/s\"\nauth_url = \"http://a:1\"\ngateway_url = \"http://g:1\"\n",
        );
        assert_eq!(AgentConfig::load(&file).unwrap().kiosk_id, "K-1");
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let typo = write(
            dir.path(),
            "kiosk_idd = \"K-1\"\ncredential_file = \"/s\"\nauth_url = \"http://a:1\"\ngateway_url = \"http://g:1\"\n",
        );
        assert!(
            AgentConfig::load(&typo)
                .unwrap_err()
                .to_string()
                .contains("kiosk_idd")
        );
        let bad = write(
            dir.path(),
            "kiosk_id = \"K 1\"\ncredential_file = \"/s\"\nauth_url = \"a:1\"\ngateway_url = \"http://g:1\"\n",
        );
        assert!(
            AgentConfig::load(&bad)
                .unwrap_err()
                .to_string()
                .contains("kiosk_id")
        );
    }
}
