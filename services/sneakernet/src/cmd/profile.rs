//! The login the client commands keep: one file per node address in the profile directory
//! (the user's config directory, `--profile-dir` or `SNEAKERNET_PROFILE_DIR`), readable by
//! the user only (0600 in a 0700 directory), replaced atomically. The access token is renewed
//! with the refresh token when it is about to expire; the renewed session is saved before it
//! is used, since the old refresh token is spent.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;

use super::connect::{ClientFlags, Target};
use super::exit;

/// An access token this close to its expiry is renewed first (calls and clocks take time).
const RENEW_MARGIN_SECS: i64 = 30;

/// A session as kept on disk.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StoredLogin {
    /// The node it was made at.
    pub address: String,
    /// The account's email.
    pub email: String,
    /// The account's id.
    pub user_id: String,
    /// `user` or `operator`.
    pub role: String,
    access_token: String,
    /// Unix seconds.
    access_expires_at: i64,
    refresh_token: String,
    /// Unix seconds.
    refresh_expires_at: i64,
}

impl StoredLogin {
    /// The login for `session`, made by `email` at `address`.
    pub fn from_session(address: &str, email: &str, session: auth::Session) -> Self {
        let secs = |t: Option<prost_types::Timestamp>| t.map(|t| t.seconds).unwrap_or(0);
        let role = auth::Role::try_from(session.role)
            .map(|r| {
                r.as_str_name()
                    .trim_start_matches("ROLE_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| "unknown".into());
        Self {
            address: address.to_owned(),
            email: email.to_owned(),
            user_id: session.user_id,
            role,
            access_token: session.access_token,
            access_expires_at: secs(session.access_token_expires_at),
            refresh_token: session.refresh_token,
            refresh_expires_at: secs(session.refresh_token_expires_at),
        }
    }

    /// The refresh token, for logging out.
    pub fn refresh_token(&self) -> &str {
        &self.refresh_token
    }
}

/// Where logins are kept.
#[derive(Clone, Debug)]
pub struct Profile {
    dir: PathBuf,
}

impl Profile {
    /// The profile directory `flags` name, or the user's config directory.
    pub fn new(flags: &ClientFlags) -> anyhow::Result<Self> {
        let dir = match &flags.profile_dir {
            Some(dir) => dir.clone(),
            None => directories::ProjectDirs::from("", "", "sneakernet")
                .context("cannot find the user's config directory (no home directory); pass --profile-dir")?
                .config_dir()
                .to_owned(),
        };
        Ok(Self { dir })
    }

    fn file(&self, address: &str) -> PathBuf {
        let key: String = address
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.dir.join("logins").join(format!("{key}.json"))
    }

    /// The login kept for `address`, if any.
    pub fn load(&self, address: &str) -> anyhow::Result<Option<StoredLogin>> {
        let file = self.file(address);
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "{} is not a login this program wrote; delete it and log in again",
                    file.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }

    /// Keeps `login` for its address, readable by the user only.
    pub fn save(&self, login: &StoredLogin) -> anyhow::Result<PathBuf> {
        let file = self.file(&login.address);
        let bytes = serde_json::to_vec_pretty(login).context("encode the login")?;
        write_private(&file, &bytes)
            .with_context(|| format!("cannot keep the login in {}", file.display()))?;
        Ok(file)
    }

    /// Forgets the login for `address`; true when there was one.
    pub fn forget(&self, address: &str) -> anyhow::Result<bool> {
        let file = self.file(address);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", file.display())),
        }
    }

    /// A valid access token for `target`: the kept one, or one renewed with the refresh
    /// token. Exit code 3 when there is no login or it cannot be renewed.
    pub async fn token(&self, target: &Target) -> anyhow::Result<String> {
        self.token_renewed_if(target, false).await
    }

    /// A new access token for `target`, renewed with the refresh token even if the kept one
    /// looks valid by this machine's clock: for when the server said it expired (its clock
    /// is the one that counts).
    pub async fn renewed_token(&self, target: &Target) -> anyhow::Result<String> {
        self.token_renewed_if(target, true).await
    }

    async fn token_renewed_if(&self, target: &Target, force: bool) -> anyhow::Result<String> {
        let Some(login) = self.load(&target.address)? else {
            return Err(exit::unauthenticated(format!(
                "not logged in at {}: run `sneakernet login --email ...` (or `register`) first",
                target.address
            )));
        };
        let now = chrono::Utc::now().timestamp();
        if !force && login.access_expires_at > now + RENEW_MARGIN_SECS {
            return Ok(login.access_token);
        }
        if login.refresh_expires_at <= now {
            return Err(exit::unauthenticated(format!(
                "the login of {} at {} expired: run `sneakernet login` again",
                login.email, target.address
            )));
        }
        let mut auth_client = AuthServiceClient::new(target.channel.clone());
        let renewed = auth_client.refresh(auth::RefreshRequest {
            refresh_token: login.refresh_token.clone(),
        });
        let session = match target.call("renew the login", renewed).await {
            Ok(answer) => answer
                .session
                .context("renew the login: the answer carries no session")?,
            Err(error) if exit::code_of(&error) == exit::UNAUTHENTICATED => {
                self.forget(&target.address)?;
                return Err(exit::unauthenticated(format!(
                    "the login of {} at {} can no longer be renewed: run `sneakernet login` again",
                    login.email, target.address
                )));
            }
            Err(error) => return Err(error),
        };
        let renewed = StoredLogin::from_session(&target.address, &login.email, session);
        self.save(&renewed)?;
        Ok(renewed.access_token)
    }
}

/// Writes `bytes` to `file` (mode 0600, in a 0700 directory) through a temporary file renamed
/// over it, so a reader never sees half a login.
fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    let dir = file.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)?;
    let temp = file.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut out = options.open(&temp)?;
    #[cfg(unix)]
    out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    out.write_all(bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&temp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(address: &str) -> StoredLogin {
        StoredLogin {
            address: address.into(),
            email: "ann@example.com".into(),
            user_id: "u-1".into(),
            role: "user".into(),
            access_token: "a".into(),
            access_expires_at: 1,
            refresh_token: "r".into(),
            refresh_expires_at: 2,
        }
    }

    #[test]
    fn a_login_is_kept_per_address_readable_by_the_user_only() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile {
            dir: dir.path().join("profile"),
        };
        let file = profile.save(&login("127.0.0.1:50051")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            profile.load("127.0.0.1:50051").unwrap().unwrap().email,
            "ann@example.com"
        );
        assert!(profile.load("127.0.0.1:50052").unwrap().is_none());
        assert!(profile.forget("127.0.0.1:50051").unwrap());
        assert!(!profile.forget("127.0.0.1:50051").unwrap());
    }
}
