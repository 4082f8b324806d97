//! Conversions between chrono/std time and the protobuf well-known types, in one place for
//! every service and the kiosk agent.

use chrono::{DateTime, Utc};

/// A protobuf timestamp for `at`.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The instant a protobuf timestamp names; `None` when it is out of range or malformed.
pub fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(at.nanos).ok()?;
    DateTime::from_timestamp(at.seconds, nanos)
}

/// A protobuf duration for `d` (saturating at the protobuf range).
pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf duration as a std duration; `None` when negative or malformed.
pub fn from_duration(d: &prost_types::Duration) -> Option<std::time::Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    if nanos >= 1_000_000_000 {
        return None;
    }
    Some(std::time::Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_refuse_malformed_values() {
        let now = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(from_timestamp(&timestamp(now)), Some(now));
        assert_eq!(
            from_timestamp(&prost_types::Timestamp {
                seconds: 1,
                nanos: -1
            }),
            None
        );
        let d = std::time::Duration::from_millis(1500);
        assert_eq!(from_duration(&duration(d)), Some(d));
        assert_eq!(
            from_duration(&prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            from_duration(&prost_types::Duration {
                seconds: 1,
                nanos: 1_000_000_000
            }),
            None
        );
    }
}
