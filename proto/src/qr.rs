//! The kiosk QR payload (format documented on `sneakernet.orders.v1.OrderService`):
//!
//! ```text
//! sneakernet://kiosk/<kiosk_id>?c=<code>
//! ```
//!
//! `<code>` is RFC 6238 TOTP: HMAC-SHA-256 over the 30-second step counter since the Unix
//! epoch, keyed with the kiosk's QR secret, dynamically truncated (RFC 4226 §5.3) to 8 decimal
//! digits. Orders accepts the codes of the current step, the two before it and the next one.
//! The kiosk (or whatever draws its screen) and orders compute the same code from the same
//! secret; nothing else is shared.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::KioskId;

/// Seconds per code.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 8;
/// Most bytes a payload may have.
pub const MAX_PAYLOAD: usize = 512;
/// Fewest and most bytes a QR secret may have.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 20..=64;

const PREFIX: &str = "sneakernet://kiosk/";

/// A payload that parsed: whose kiosk, and the code if the payload carries one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrPayload {
    /// The kiosk the code belongs to.
    pub kiosk_id: KioskId,
    /// The rotating code; `None` for a printed sticker without one.
    pub code: Option<String>,
}

/// Reads a scanned payload. The error says what is wrong with it.
pub fn parse(payload: &str) -> Result<QrPayload, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!("must be at most {MAX_PAYLOAD} bytes"));
    }
    let rest = payload
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("must start with {PREFIX:?}"))?;
    let (id, query) = match rest.split_once('?') {
        Some((id, query)) => (id, Some(query)),
        None => (rest, None),
    };
    let kiosk_id = KioskId::parse(id).map_err(|why| format!("kiosk id {why}"))?;
    let mut code = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some(value) = pair.strip_prefix("c=") {
            if value.len() != DIGITS || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("code \"c\" must be {DIGITS} digits"));
            }
            code = Some(value.to_owned());
        }
    }
    Ok(QrPayload { kiosk_id, code })
}

/// The payload a kiosk shows at `at`.
pub fn payload(kiosk_id: &KioskId, secret: &[u8], at: DateTime<Utc>) -> String {
    format!("{PREFIX}{kiosk_id}?c={}", code(secret, step(at)))
}

/// Whether `given` is the kiosk's code of the current step, one of the two before it, or the
/// next one.
pub fn verify(secret: &[u8], given: &str, at: DateTime<Utc>) -> bool {
    let now = step(at);
    (now - 2..=now + 1).any(|s| constant_time_eq(code(secret, s).as_bytes(), given.as_bytes()))
}

fn step(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(STEP_SECONDS)
}

/// RFC 6238 with HMAC-SHA-256 and 8 digits, for step counter `step`.
fn code(secret: &[u8], step: i64) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:0width$}", bin % 10u32.pow(DIGITS as u32), width = DIGITS)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// RFC 6238 appendix B, SHA-256 key and vectors (8 digits).
    const RFC_KEY: &[u8] = b"12345678901234567890123456789012";

    #[test]
    fn codes_match_the_rfc_6238_sha256_vectors() {
        for (time, expected) in [
            (59, "46119246"),
            (1_111_111_109, "68084774"),
            (1_234_567_890, "91819424"),
            (2_000_000_000, "90698825"),
        ] {
            let at = Utc.timestamp_opt(time, 0).unwrap();
            assert_eq!(code(RFC_KEY, step(at)), expected, "time {time}");
        }
    }

    #[test]
    fn a_payload_round_trips_and_verifies_within_the_window_only() {
        let kiosk = KioskId::parse("k-1").unwrap();
        let secret = [7u8; 20];
        let at = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let parsed = parse(&payload(&kiosk, &secret, at)).unwrap();
        assert_eq!(parsed.kiosk_id, kiosk);
        let code = parsed.code.unwrap();
        assert!(verify(&secret, &code, at));
        assert!(verify(&secret, &code, at + chrono::Duration::seconds(60)));
        assert!(verify(&secret, &code, at - chrono::Duration::seconds(30)));
        assert!(!verify(&secret, &code, at + chrono::Duration::seconds(120)));
        assert!(!verify(&[8u8; 20], &code, at));
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        assert!(
            parse("https://example.com")
                .unwrap_err()
                .contains("start with")
        );
        assert!(
            parse("sneakernet://kiosk/bad id")
                .unwrap_err()
                .contains("kiosk id")
        );
        assert!(
            parse("sneakernet://kiosk/k1?c=12")
                .unwrap_err()
                .contains("8 digits")
        );
        assert!(parse(&"x".repeat(600)).unwrap_err().contains("512"));
        let sticker = parse("sneakernet://kiosk/k1?x=1").unwrap();
        assert_eq!(sticker.code, None);
    }
}
