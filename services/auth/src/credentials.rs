//! Checked inputs (emails, passwords) and the secrets derived from them: argon2id password
//! hashes and opaque random tokens stored only as BLAKE3 hashes.
//!
//! Password hashing is deliberately slow (tens of milliseconds, 19 MiB each), so it runs on the
//! blocking pool and at most [`max_concurrent_hashes`] at a time: a burst of logins queues
//! instead of exhausting memory.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sneakernet_runtime::FieldViolation;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (argon2 takes any length; this bounds the work per request).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest email accepted (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// A syntactically plausible, lowercased email address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Checks shape only: one `@`, a non-empty local part, a dotted domain, no whitespace.
    /// Whether the mailbox exists is not our business here.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let email = raw.trim().to_lowercase();
        let bad = |why: &str| FieldViolation::new(field, why);
        if email.is_empty() {
            return Err(bad("must not be empty"));
        }
        if email.chars().count() > MAX_EMAIL_CHARS {
            return Err(bad("must be at most 254 characters"));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(bad("must be an email address (no \"@\")"));
        };
        if local.is_empty() || domain.contains('@') {
            return Err(bad(
                "must be an email address (one \"@\" after a non-empty name)",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            return Err(bad(
                "must be an email address (the domain needs a dot, e.g. example.com)",
            ));
        }
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of acceptable length. Never logged: its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Checks length only; composition rules do more harm than good (NIST SP 800-63B).
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Hashing failed; only possible through a bug or exhausted memory.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// How many argon2 computations run at once: two per core.
pub fn max_concurrent_hashes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(max_concurrent_hashes()))
}

/// argon2id hash (PHC string) of `password`, with a fresh random salt, on the blocking pool.
pub async fn hash_password(password: Password) -> Result<String, HashError> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|e| HashError(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose().as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

/// Whether `password` matches `phc`, on the blocking pool. With `phc` = `None` it still spends
/// the same work against a dummy hash and answers false, so timing does not reveal which emails
/// have accounts.
pub async fn verify_password(password: String, phc: Option<String>) -> bool {
    let Ok(_permit) = hashing_permits().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let (phc, known) = match phc {
            Some(phc) => (phc, true),
            None => (dummy_hash().to_owned(), false),
        };
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        matches && known
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"no account has this password")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A fresh opaque secret: 32 random bytes, base64url. Used for refresh tokens and kiosk secrets.
pub fn random_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// How an opaque secret is stored: BLAKE3, hex. Secrets are 256-bit random, so a fast hash
/// cannot be brute-forced; comparing hashes of equal length leaks nothing useful.
pub fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Whether `presented` is the secret stored as `stored_hash` (from [`secret_hash`]). Compares
/// `blake3::Hash` values, whose equality is constant-time.
pub fn secret_matches(stored_hash: &str, presented: &str) -> bool {
    blake3::Hash::from_hex(stored_hash)
        .is_ok_and(|stored| stored == blake3::hash(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("email", " Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
            "ann@example..com",
        ] {
            let violation = Email::parse("email", bad).unwrap_err();
            assert_eq!(violation.field, "email", "{bad}");
        }
    }

    #[test]
    fn passwords_are_checked_by_length() {
        assert!(Password::parse("password", "correct horse").is_ok());
        assert_eq!(
            Password::parse("password", "short").unwrap_err().field,
            "password"
        );
        assert!(Password::parse("password", &"x".repeat(1025)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("p", "correct horse").unwrap()),
            "Password(***)"
        );
    }

    #[tokio::test]
    async fn password_hash_verifies_only_the_right_password() {
        let hash = hash_password(Password::parse("p", "correct horse battery").unwrap())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery".into(), Some(hash.clone())).await);
        assert!(!verify_password("wrong horse battery".into(), Some(hash)).await);
        assert!(!verify_password("no account has this password".into(), None).await);
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = random_secret().unwrap();
        let b = random_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert!(secret_matches(&secret_hash(&a), &a));
        assert!(!secret_matches(&secret_hash(&a), &b));
        assert!(!secret_matches("not hex", &a));
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }
}
