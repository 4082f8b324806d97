//! Sealing kiosks' QR secrets at rest (orders.proto: "stored encrypted, never returned"):
//! XChaCha20-Poly1305 with a 32-byte key every orders replica shares, a random nonce per
//! secret, the kiosk id as associated data (a sealed secret copied onto another kiosk's row
//! does not open).

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sneakernet_runtime::config::{Config, ConfigError};

const NONCE_LEN: usize = 24;

/// The key that seals QR secrets.
#[derive(Clone)]
pub struct SealingKey(XChaCha20Poly1305);

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
        Self(XChaCha20Poly1305::new(&bytes.into()))
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
            .0
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
        self.0
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
}
