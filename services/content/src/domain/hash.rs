//! BLAKE3 hashes as the contract carries them: 32 bytes on the wire, 64 lowercase hex digits
//! in the database, in object keys and in messages.

use std::fmt;

/// A 32-byte BLAKE3 hash of a chunk or a whole file. Always exactly 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The hash of `bytes`. Costs about a millisecond per MiB in debug builds: callers on the
    /// async runtime run it on the blocking pool.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        // Multi-threaded hashing pays only on large buffers (whole chunks).
        if bytes.len() >= 128 * 1024 {
            hasher.update_rayon(bytes);
        } else {
            hasher.update(bytes);
        }
        Self::from(hasher.finalize())
    }

    /// Reads a hash from the wire; the error says why it is not one.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, String> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| format!("must be 32 bytes (a BLAKE3 hash), got {}", bytes.len()))
    }

    /// Reads a hash stored as 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex).ok().map(Self::from)
    }

    /// The 32 bytes, for the wire.
    pub fn to_wire(self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// 64 lowercase hex digits, as stored and shown.
    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_and_hex_round_trip() {
        let hash = ContentHash::of(b"sneakernet");
        assert_eq!(ContentHash::from_wire(&hash.to_wire()), Ok(hash));
        assert_eq!(ContentHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(hash.to_hex(), blake3::hash(b"sneakernet").to_hex().as_str());
        assert!(ContentHash::from_wire(&[0; 31]).unwrap_err().contains("31"));
    }

    #[test]
    fn large_buffers_hash_the_same_on_every_path() {
        let big = vec![7u8; 300 * 1024];
        assert_eq!(ContentHash::of(&big), ContentHash::from(blake3::hash(&big)));
    }
}
