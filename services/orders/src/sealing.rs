//! Sealing kiosks' QR secrets at rest (orders.proto: "stored encrypted, never returned"):
//! XChaCha20-Poly1305 with a 32-byte key every orders replica shares, a random nonce per
//! secret, the kiosk id as associated data (a sealed secret copied onto another kiosk's row
//! does not open).
//!
//! The database records the key's fingerprint when the first orders process starts on it
//! ([`SealingKey::load_shared`]); a process with another key refuses to start, naming the file
//! to share, instead of answering every scan of an existing kiosk with INTERNAL.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sneakernet_runtime::config::{Config, ConfigError};
use sneakernet_runtime::role::StartError;

use crate::store::Store;

const NONCE_LEN: usize = 24;

/// What the recorded fingerprint is for (the table can hold other keys' later).
const PURPOSE: &str = "qr_secrets";

/// The BLAKE3 context of the fingerprint: a derived value, so the stored text says which key
/// it was without giving away anything that opens a secret.
const FINGERPRINT_CONTEXT: &str = "sneakernet orders 2026-12-03 sealing key fingerprint";

/// The key that seals QR secrets.
#[derive(Clone)]
pub struct SealingKey {
    cipher: XChaCha20Poly1305,
    fingerprint: String,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

/// Why a sealed secret did not open.
#[derive(Debug, thiserror::Error)]
#[error(
    "sealed secret of kiosk {kiosk_id} does not open with this key (another key sealed it, or it was altered)"
)]
pub struct Unsealable {
    /// The kiosk whose secret it is.
    pub kiosk_id: String,
}

impl SealingKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let fingerprint = blake3::derive_key(FINGERPRINT_CONTEXT, &bytes);
        Self {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
            fingerprint: fingerprint[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// A short text that differs between keys and reveals nothing of the key (32 hex digits
    /// of a BLAKE3 key derivation): safe to store and to print.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// [`SealingKey::load`], then checked against the key `store`'s QR secrets are sealed
    /// with: the first process on a database records its key's fingerprint; a later one
    /// (another replica, or a restart with another `data_dir` or key file) starts only with
    /// the same key, and otherwise fails with an error naming `orders.secret_key_file`. On a
    /// database holding sealed secrets but no fingerprint (an upgrade from before they were
    /// recorded), the key must first open one of those secrets, or the process refuses to
    /// start the same way.
    pub async fn load_shared(
        config: &Config,
        store: &Store,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, StartError> {
        let key = Self::load(config)?;
        let used = || match &config.orders.secret_key_file {
            Some(path) => path.display().to_string(),
            None => config
                .data_dir
                .join("orders-secret.key")
                .display()
                .to_string(),
        };
        let cannot_read = |e: sea_orm::DbErr| {
            StartError::Other(format!(
                "cannot check the QR sealing key's fingerprint: {e}"
            ))
        };
        // An upgrade from before fingerprints were recorded: secrets sealed, none recorded.
        // Recording this key's fingerprint blindly would bless a wrong key (a new data dir)
        // and lose every kiosk's secret; it must open one of them first.
        if store
            .recorded_sealing_key(PURPOSE)
            .await
            .map_err(cannot_read)?
            .is_none()
            && let Some((kiosk_id, sealed)) =
                store.a_sealed_qr_secret().await.map_err(cannot_read)?
            && key.open(&kiosk_id, &sealed).is_err()
        {
            return Err(StartError::Config(ConfigError::Invalid {
                key: "orders.secret_key_file",
                env: "SNEAKERNET_ORDERS__SECRET_KEY_FILE",
                reason: format!(
                    "the key in {} (fingerprint {}) does not open the QR secrets this orders database holds (kiosk {kiosk_id}'s, sealed before key fingerprints were recorded): start with the key that sealed them (the previous orders process's orders.secret_key_file, or its data_dir/orders-secret.key)",
                    used(),
                    key.fingerprint()
                ),
            }));
        }
        let recorded = store
            .record_sealing_key(PURPOSE, key.fingerprint(), now)
            .await
            .map_err(|e| {
                StartError::Other(format!(
                    "cannot record the QR sealing key's fingerprint: {e}"
                ))
            })?;
        if recorded != key.fingerprint() {
            let used = used();
            return Err(StartError::Config(ConfigError::Invalid {
                key: "orders.secret_key_file",
                env: "SNEAKERNET_ORDERS__SECRET_KEY_FILE",
                reason: format!(
                    "the key in {used} (fingerprint {}) is not the one this orders database's QR secrets are sealed with (fingerprint {recorded}); every orders process on one database must use the same key: copy the first one's key file (its orders.secret_key_file, or data_dir/orders-secret.key) and point orders.secret_key_file at it",
                    key.fingerprint()
                ),
            }));
        }
        Ok(key)
    }

    /// The key from `orders.secret_key_file`, or the one in `data_dir/orders-secret.key`,
    /// created there (mode 0600) on first start.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let (path, create): (PathBuf, bool) = match &config.orders.secret_key_file {
            Some(path) => (path.clone(), false),
            None => (config.data_dir.join("orders-secret.key"), true),
        };
        let invalid = |reason: String| ConfigError::Invalid {
            key: "orders.secret_key_file",
            env: "SNEAKERNET_ORDERS__SECRET_KEY_FILE",
            reason,
        };
        if create && !path.exists() {
            write_new_key(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let bytes = decode_hex(text.trim()).ok_or_else(|| {
            invalid(format!(
                "{} must hold 64 hex digits (32 bytes)",
                path.display()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Seals `secret` for `kiosk_id`: nonce then ciphertext.
    pub fn seal(&self, kiosk_id: &str, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system provides randomness");
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: kiosk_id.as_bytes(),
                },
            )
            .expect("encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`SealingKey::seal`] sealed for `kiosk_id`.
    pub fn open(&self, kiosk_id: &str, sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        let fail = || Unsealable {
            kiosk_id: kiosk_id.to_owned(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| fail())?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: kiosk_id.as_bytes(),
                },
            )
            .map_err(|_| fail())
    }
}

fn write_new_key(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(std::io::Error::other)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(hex.as_bytes())?;
            file.sync_all()
        }
        // Another process created it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use sneakernet_runtime::testing::{Backend, backends};

    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_kiosk_and_key() {
        let key = SealingKey::from_bytes([1; 32]);
        let sealed = key.seal("k1", b"0123456789abcdefghij");
        assert_ne!(&sealed[NONCE_LEN..], b"0123456789abcdefghij");
        assert_eq!(key.open("k1", &sealed).unwrap(), b"0123456789abcdefghij");
        assert!(key.open("k2", &sealed).is_err());
        assert!(SealingKey::from_bytes([2; 32]).open("k1", &sealed).is_err());
        assert!(key.open("k1", &sealed[..10]).is_err());
    }

    #[test]
    fn a_generated_key_file_is_reused_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let first = SealingKey::load(&config).unwrap();
        let sealed = first.seal("k1", b"secret-secret-secret");
        let again = SealingKey::load(&config).unwrap();
        assert!(again.open("k1", &sealed).is_ok());
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "xyz").unwrap();
        config.orders.secret_key_file = Some(bad);
        let error = SealingKey::load(&config).unwrap_err().to_string();
        assert!(error.contains("64 hex digits"), "{error}");
    }

    /// An orders process on `data_dir` using `backend`'s database (one Postgres schema for
    /// every data dir; on SQLite the database file lives in `db_dir`).
    async fn orders_on(
        backend: &Backend,
        prefix: &str,
        data_dir: &Path,
        db_dir: &Path,
    ) -> (Config, Store) {
        let mut config = Config {
            data_dir: data_dir.to_owned(),
            ..Config::default()
        };
        backend.configure(&mut config);
        config.database_schema_prefix = prefix.to_owned();
        let db_config = Config {
            data_dir: db_dir.to_owned(),
            ..config.clone()
        };
        let db = sneakernet_runtime::db::open_and_migrate::<crate::migration::Migrator>(
            &db_config,
            crate::SERVICE,
        )
        .await
        .unwrap();
        (config, Store::new(db))
    }

    #[tokio::test]
    async fn a_second_orders_process_with_another_sealing_key_is_refused_at_startup_naming_the_key_file()
     {
        for backend in backends() {
            let prefix = sneakernet_runtime::testing::unique_schema_prefix();
            let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
            let now = chrono::Utc::now();
            let (first, store) = orders_on(&backend, &prefix, dirs[0].path(), dirs[0].path()).await;
            let key = SealingKey::load_shared(&first, &store, now).await.unwrap();
            let sealed = key.seal("k1", b"secret-secret-secret");
            // A restart of the first finds its own key.
            SealingKey::load_shared(&first, &store, now).await.unwrap();

            // A second replica with its own data dir generates another key: refused.
            let (second, store_2) =
                orders_on(&backend, &prefix, dirs[1].path(), dirs[0].path()).await;
            let error = SealingKey::load_shared(&second, &store_2, now)
                .await
                .unwrap_err()
                .to_string();
            for needle in [
                "orders.secret_key_file",
                "SNEAKERNET_ORDERS__SECRET_KEY_FILE",
                "same key",
                key.fingerprint(),
            ] {
                assert!(
                    error.contains(needle),
                    "{backend}: {needle:?} missing: {error}"
                );
            }
            let generated =
                std::fs::read_to_string(dirs[0].path().join("orders-secret.key")).unwrap();
            assert!(
                !error.contains(generated.trim()),
                "{backend}: the key leaked: {error}"
            );

            // Given the first one's key file, it starts and opens what the first sealed.
            let (mut third, store_3) =
                orders_on(&backend, &prefix, dirs[2].path(), dirs[0].path()).await;
            third.orders.secret_key_file = Some(dirs[0].path().join("orders-secret.key"));
            let shared = SealingKey::load_shared(&third, &store_3, now)
                .await
                .unwrap();
            assert!(shared.open("k1", &sealed).is_ok(), "{backend}");
        }
    }

    #[tokio::test]
    async fn an_upgraded_database_with_sealed_secrets_and_no_fingerprint_starts_only_with_the_key_that_sealed_them()
     {
        for backend in backends() {
            let prefix = sneakernet_runtime::testing::unique_schema_prefix();
            let dirs = [(); 2].map(|_| tempfile::tempdir().unwrap());
            let now = chrono::Utc::now();
            // As the release before fingerprints left it: a kiosk's secret sealed with the
            // first data dir's key, no fingerprint recorded.
            let (first, store) = orders_on(&backend, &prefix, dirs[0].path(), dirs[0].path()).await;
            let old_key = SealingKey::load(&first).unwrap();
            store
                .register_kiosk(crate::entity::kiosk::Model {
                    kiosk_id: "k-old".into(),
                    site_id: "s".into(),
                    site_name: "S".into(),
                    latitude: 0.0,
                    longitude: 0.0,
                    qr_secret: old_key.seal("k-old", b"secret-secret-secret"),
                    out_of_service: false,
                    registered_at: now,
                    updated_at: now,
                })
                .await
                .unwrap();
            assert_eq!(store.recorded_sealing_key(PURPOSE).await.unwrap(), None);

            // A process with another key (a new data dir) is refused before it records it.
            let (second, store_2) =
                orders_on(&backend, &prefix, dirs[1].path(), dirs[0].path()).await;
            let error = SealingKey::load_shared(&second, &store_2, now)
                .await
                .unwrap_err()
                .to_string();
            for needle in ["orders.secret_key_file", "k-old", "does not open"] {
                assert!(
                    error.contains(needle),
                    "{backend}: {needle:?} missing: {error}"
                );
            }
            assert_eq!(
                store.recorded_sealing_key(PURPOSE).await.unwrap(),
                None,
                "{backend}: a refused key is not recorded"
            );

            // The key that sealed them starts, and is recorded from then on.
            let key = SealingKey::load_shared(&first, &store, now).await.unwrap();
            assert_eq!(
                store
                    .recorded_sealing_key(PURPOSE)
                    .await
                    .unwrap()
                    .as_deref(),
                Some(key.fingerprint()),
                "{backend}"
            );
        }
    }
}
