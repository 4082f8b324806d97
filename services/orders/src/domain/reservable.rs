//! Which drives a reservation may take: the one statement of the rule that FindKiosks counts
//! by (`Availability.reservable`) and CreateReservation holds by, so what is shown as
//! reservable is what a reservation can get.
//!
//! The rule: a drive unit at the kiosk that is ready (its bay READY), held by no order, whose
//! capacity equals the capacity asked, where that capacity is at least the package's total
//! size (0 for a blank drive). What the drive holds now does not matter: the kiosk copies the
//! package onto it (or wipes it for a blank reservation), so a package can be reserved at a
//! kiosk where no drive holds it yet.

use sneakernet_proto::common::v1 as common;

use crate::entity::kiosk_item;

/// What the rule needs to know of one unit at a kiosk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitFacts {
    /// `common.v1.ItemKind`.
    pub kind: i32,
    /// Drives: the nominal capacity in bytes; 0 for power banks.
    pub capacity_bytes: u64,
    /// Whether its bay is READY (not pinned, busy, quarantined or faulty).
    pub ready: bool,
    /// Whether an order holds it.
    pub held: bool,
}

impl From<&kiosk_item::Model> for UnitFacts {
    fn from(row: &kiosk_item::Model) -> Self {
        UnitFacts {
            kind: row.kind,
            capacity_bytes: u64::try_from(row.capacity_bytes).unwrap_or(0),
            ready: row.ready,
            held: row.held_by.is_some(),
        }
    }
}

/// What a reservation asks a drive for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveAsk {
    /// The capacity chosen; types match on it exactly.
    pub capacity_bytes: u64,
    /// The package's total size in bytes; 0 for a blank drive.
    pub package_bytes: u64,
}

impl DriveAsk {
    /// Whether a drive of the asked capacity can take the package at all.
    pub fn fits(&self) -> bool {
        self.capacity_bytes > 0 && self.capacity_bytes >= self.package_bytes
    }
}

/// Whether `unit` may be taken for a reservation asking `ask`.
pub fn can_reserve(unit: &UnitFacts, ask: &DriveAsk) -> bool {
    unit.kind == i32::from(common::ItemKind::Drive)
        && unit.ready
        && !unit.held
        && unit.capacity_bytes == ask.capacity_bytes
        && ask.fits()
}

/// How many of `units` may be taken for `ask`.
pub fn count<'a>(units: impl IntoIterator<Item = &'a UnitFacts>, ask: &DriveAsk) -> u32 {
    let n = units.into_iter().filter(|u| can_reserve(u, ask)).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u64 = 1_000_000_000_000;

    fn drive(capacity_bytes: u64, ready: bool, held: bool) -> UnitFacts {
        UnitFacts {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes,
            ready,
            held,
        }
    }

    #[test]
    fn a_reservation_takes_a_ready_free_drive_of_the_asked_capacity_that_fits_the_package() {
        let bank = UnitFacts {
            kind: common::ItemKind::PowerBank.into(),
            capacity_bytes: 0,
            ready: true,
            held: false,
        };
        let ask = |capacity_bytes, package_bytes| DriveAsk {
            capacity_bytes,
            package_bytes,
        };
        // (unit, ask, may take it, why)
        let cases = [
            (drive(TB, true, false), ask(TB, 5_000), true, "fits"),
            (drive(TB, true, false), ask(TB, 0), true, "blank"),
            (drive(TB, true, false), ask(TB, TB), true, "exactly full"),
            (drive(TB, true, false), ask(TB, TB + 1), false, "too big"),
            (drive(TB, false, false), ask(TB, 5), false, "not ready"),
            (drive(TB, true, true), ask(TB, 5), false, "held"),
            (
                drive(2 * TB, true, false),
                ask(TB, 5),
                false,
                "other capacity",
            ),
            (
                drive(TB, true, false),
                ask(2 * TB, 5),
                false,
                "smaller than asked",
            ),
            (bank, ask(0, 0), false, "not a drive"),
        ];
        for (unit, ask, expected, why) in cases {
            assert_eq!(can_reserve(&unit, &ask), expected, "{why}");
        }
    }

    #[test]
    fn counting_uses_the_same_rule() {
        let units = [
            drive(TB, true, false),
            drive(TB, true, false),
            drive(TB, true, true),
            drive(TB, false, false),
            drive(2 * TB, true, false),
        ];
        let one_tb = |package_bytes| DriveAsk {
            capacity_bytes: TB,
            package_bytes,
        };
        assert_eq!(count(&units, &one_tb(0)), 2);
        assert_eq!(count(&units, &one_tb(TB + 1)), 0, "nothing fits");
        let two_tb = DriveAsk {
            capacity_bytes: 2 * TB,
            package_bytes: TB + 1,
        };
        assert_eq!(count(&units, &two_tb), 1);
    }

    #[test]
    fn a_unit_row_says_what_the_rule_needs() {
        let row = kiosk_item::Model {
            item_id: "D-1".into(),
            kiosk_id: "K-1".into(),
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: 1000,
            content_package_id: "films".into(),
            ready: true,
            held_by: Some("order".into()),
            returned_at: None,
        };
        assert_eq!(UnitFacts::from(&row), drive(1000, true, true));
    }
}
