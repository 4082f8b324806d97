//! ListPackages' page tokens: opaque to clients, bound to the filter that issued them.
//!
//! A token says "packages older than this one" (the package's position in creation order) and
//! carries a tag over that position and the filter, so a token from another filter, another
//! RPC or a hand edit is refused rather than silently paging something else. The tag is not a
//! secret: a token grants nothing (the filter is applied on every call), it only must not be
//! mistaken for another one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Tags tokens of this RPC, so a token from elsewhere never parses here.
const DOMAIN: &str = "sneakernet.content.v1.ListPackages";

fn tag(position: i64, filter: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [
        DOMAIN.as_bytes(),
        filter.as_bytes(),
        &position.to_le_bytes(),
    ] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex()[..32].to_owned()
}

/// The token for the page after the package at `position`, under `filter`.
pub fn encode(position: i64, filter: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{position}.{}", tag(position, filter)))
}

/// The position a token continues after, if `filter` issued it.
pub fn decode(token: &str, filter: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (position, given) = text.split_once('.')?;
    let position: i64 = position.parse().ok()?;
    (given == tag(position, filter)).then_some(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_only_with_its_filter() {
        let token = encode(42, "READY");
        assert_eq!(decode(&token, "READY"), Some(42));
        assert_eq!(decode(&token, "ANY"), None);
        assert_eq!(decode("not a token", "READY"), None);
        let forged = URL_SAFE_NO_PAD.encode(format!("41.{}", &tag(42, "READY")));
        assert_eq!(decode(&forged, "READY"), None);
    }
}
