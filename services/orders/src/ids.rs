//! The orders service's own ids, checked once where they enter (see `convert.rs`), so the
//! flows never see an unchecked string. Kiosk, item, command and package ids come from
//! `sneakernet_proto::ids`; users from the caller.

use std::fmt;

/// An order's id: a UUID, in its canonical lowercase form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrderId(pub uuid::Uuid);

impl OrderId {
    /// A new random id.
    pub fn new() -> Self {
        OrderId(uuid::Uuid::new_v4())
    }

    /// Checks the shape; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(raw)
            .map(OrderId)
            .map_err(|_| "must be a UUID".to_owned())
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Defines a text id of length 1 to `$max` (as `$measure` counts), with the violation's
/// description.
macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $max:expr, $measure:expr, $why:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks the length; the error says what is wrong.
            pub fn parse(raw: &str) -> Result<Self, String> {
                let measure: fn(&str) -> usize = $measure;
                if raw.is_empty() || measure(raw) > $max {
                    return Err($why.to_owned());
                }
                Ok(Self(raw.to_owned()))
            }

            /// The id.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_text!(
    /// An offer's id, as ScanKiosk answered it (1 to 64 bytes).
    OfferId, 64, str::len, "must be the offer_id of a ScanKiosk answer"
);
bounded_text!(
    /// A request's idempotency key: 1 to 128 characters, chosen by the client.
    IdempotencyKey, 128, |raw| raw.chars().count(), "must be 1 to 128 characters"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_what_the_contract_does_not_allow() {
        let id = OrderId::new();
        assert_eq!(OrderId::parse(&id.to_string()), Ok(id));
        assert!(OrderId::parse("not-a-uuid").is_err());
        assert!(OfferId::parse("").is_err());
        assert!(OfferId::parse(&"o".repeat(65)).is_err());
        assert!(OfferId::parse(&"o".repeat(64)).is_ok());
        assert!(
            IdempotencyKey::parse(&"é".repeat(128)).is_ok(),
            "characters, not bytes"
        );
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
    }
}
