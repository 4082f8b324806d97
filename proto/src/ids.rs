//! Ids that cross the kiosk link, checked once where they enter: a kiosk's id, an item's, a
//! bay's, a message's and a command's. Each is a newtype so a bay id is never passed where an
//! item id belongs, and each `parse` says in one phrase what is wrong with a bad one.
//!
//! The shapes are the contract's (`common.proto`, `gateway.proto`): visible ASCII only (no
//! spaces, no control characters, no NUL, which Postgres text columns refuse), bounded length.

use std::fmt;

/// Defines an id newtype holding 1 to `$max` characters that satisfy `$allowed`.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $max:expr, $allowed:expr, $charset:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Longest id accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Checks the documented shape; the error says what is wrong.
            pub fn parse(raw: &str) -> Result<Self, String> {
                check_text(raw, Self::MAX_LEN, $allowed, $charset).map(|()| Self(raw.to_owned()))
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

fn check_text(raw: &str, max: usize, allowed: fn(u8) -> bool, charset: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    match raw.bytes().position(|b| !allowed(b)) {
        None => Ok(()),
        Some(at) => Err(format!(
            "may hold only {charset}; byte {at} is {:#04x}",
            raw.as_bytes()[at]
        )),
    }
}

fn kiosk_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn visible_ascii(b: u8) -> bool {
    b.is_ascii_graphic()
}

const VISIBLE: &str = "visible ASCII characters (no spaces or control characters)";

text_id!(
    /// A kiosk's identification number: 1 to 64 of `A-Z a-z 0-9 - _`.
    KioskId, 64, kiosk_char, "A-Z, a-z, 0-9, \"-\" and \"_\""
);
text_id!(
    /// An item's own identification (a drive's identity area, a power bank's serial).
    ItemId, 64, visible_ascii, VISIBLE
);
text_id!(
    /// A bay of one kiosk ("A03").
    BayId, 32, visible_ascii, VISIBLE
);
text_id!(
    /// A kiosk outbox message's id (a UUID from a well-behaved agent).
    MessageId, 64, visible_ascii, VISIBLE
);
text_id!(
    /// A command's id in the gateway's log (a UUID).
    CommandId, 64, visible_ascii, VISIBLE
);
text_id!(
    /// A content package's id (a UUID from the content service).
    PackageId, 64, visible_ascii, VISIBLE
);
text_id!(
    /// An order's id (a UUID from the orders service), as kiosks repeat it.
    OrderRef, 64, visible_ascii, VISIBLE
);

/// A device that holds a link to the gateway: a kiosk, or a drive's own remote link module.
///
/// Stored (in the gateway's tables and auth's device credentials) as one string: a kiosk as
/// its id, unchanged; a drive as `drive:<item id>`. Kiosk ids hold no `:`, so the two never
/// collide, and every row written before drives had links reads back as the kiosk it was.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceId {
    /// A kiosk.
    Kiosk(KioskId),
    /// A drive's remote link module, named by the drive's item id.
    Drive(ItemId),
}

impl DeviceId {
    /// The prefix of a drive's stored form.
    pub const DRIVE_PREFIX: &'static str = "drive:";

    /// The one-string form stored in tables and used as a routing key.
    pub fn stored(&self) -> String {
        match self {
            DeviceId::Kiosk(kiosk) => kiosk.as_str().to_owned(),
            DeviceId::Drive(item) => format!("{}{}", Self::DRIVE_PREFIX, item.as_str()),
        }
    }

    /// Reads a stored form back; the error says what is wrong.
    pub fn parse_stored(raw: &str) -> Result<Self, String> {
        match raw.strip_prefix(Self::DRIVE_PREFIX) {
            Some(item) => ItemId::parse(item).map(DeviceId::Drive),
            None => KioskId::parse(raw).map(DeviceId::Kiosk),
        }
    }

    /// The kiosk, when this is one.
    pub fn kiosk(&self) -> Option<&KioskId> {
        match self {
            DeviceId::Kiosk(kiosk) => Some(kiosk),
            DeviceId::Drive(_) => None,
        }
    }

    /// The drive, when this is one.
    pub fn drive(&self) -> Option<&ItemId> {
        match self {
            DeviceId::Drive(item) => Some(item),
            DeviceId::Kiosk(_) => None,
        }
    }

    /// The contract's pair of fields (`kiosk_id`, `drive_id`): exactly one is set.
    pub fn wire_ids(&self) -> (String, String) {
        match self {
            DeviceId::Kiosk(kiosk) => (kiosk.as_str().to_owned(), String::new()),
            DeviceId::Drive(item) => (String::new(), item.as_str().to_owned()),
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_empty_long_and_control_characters() {
        assert!(ItemId::parse("D-1").is_ok());
        assert!(ItemId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(
            ItemId::parse(&"x".repeat(65)).unwrap_err(),
            "must be 1 to 64 characters"
        );
        assert_eq!(ItemId::parse("").unwrap_err(), "must be 1 to 64 characters");
        let nul = ItemId::parse("D-\u{0}1").unwrap_err();
        assert!(nul.contains("byte 2 is 0x00"), "{nul}");
        assert!(ItemId::parse("D 1").is_err(), "spaces are not ids");
        assert!(ItemId::parse("Dé").is_err(), "non-ASCII is not an id");
        assert!(BayId::parse(&"b".repeat(33)).is_err());
        assert!(KioskId::parse("K-BER_1").is_ok());
        assert!(KioskId::parse("K.1").is_err());
    }

    #[test]
    fn device_ids_round_trip_and_a_kiosk_never_reads_as_a_drive() {
        let kiosk = DeviceId::Kiosk(KioskId::parse("D-1").unwrap());
        let drive = DeviceId::Drive(ItemId::parse("D-1").unwrap());
        assert_eq!(kiosk.stored(), "D-1", "kiosks are stored as before");
        assert_eq!(drive.stored(), "drive:D-1");
        assert_ne!(kiosk.stored(), drive.stored());
        for device in [kiosk, drive] {
            assert_eq!(DeviceId::parse_stored(&device.stored()), Ok(device));
        }
        assert!(DeviceId::parse_stored("drive:").is_err());
        assert!(DeviceId::parse_stored("drive:D 1").is_err());
        assert!(
            DeviceId::parse_stored("kiosk:1").is_err(),
            "no other prefix"
        );
        assert_eq!(
            DeviceId::parse_stored("drive:drive:1"),
            Ok(DeviceId::Drive(ItemId::parse("drive:1").unwrap())),
            "an item id may hold a colon; only the first prefix counts"
        );
    }
}
