//! Which drive a reservation can take: the one rule, stated once here. The hold
//! (`store::fleet::hold_reservable_unit`) mirrors it in its conditional UPDATE, and what a kiosk
//! can be reserved for (FindKiosks' `reservable`) counts units with it.
//!
//! A drive unit at the kiosk can take a reservation when it is ready, held by no order, and its
//! capacity equals the asked capacity, where the asked capacity is at least the package's total
//! size (0 for a blank drive). What the unit holds now does not matter: provisioning erases it.

use sneakernet_proto::common::v1 as common;

/// What a reservation asks of a drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveAsk {
    /// The drive's nominal capacity, exactly.
    pub capacity_bytes: u64,
    /// The content's total size (0 for a blank drive).
    pub package_bytes: u64,
}

/// A unit as orders' view of a kiosk knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// `common.v1.ItemKind`.
    pub kind: i32,
    /// Its capacity (0 for power banks).
    pub capacity_bytes: u64,
    /// Its bay is READY.
    pub ready: bool,
    /// Some order holds it.
    pub held: bool,
}

impl DriveAsk {
    /// Whether the content fits a drive of the asked capacity at all.
    pub fn fits(&self) -> bool {
        self.capacity_bytes > 0 && self.capacity_bytes >= self.package_bytes
    }

    /// Whether `unit` can take this reservation now.
    pub fn can_take(&self, unit: &Unit) -> bool {
        self.fits()
            && unit.kind == i32::from(common::ItemKind::Drive)
            && unit.ready
            && !unit.held
            && unit.capacity_bytes == self.capacity_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRIVE: i32 = common::ItemKind::Drive as i32;

    fn unit(capacity_bytes: u64) -> Unit {
        Unit {
            kind: DRIVE,
            capacity_bytes,
            ready: true,
            held: false,
        }
    }

    #[test]
    fn a_ready_free_drive_of_exactly_the_capacity_takes_content_up_to_its_size() {
        let ask = DriveAsk {
            capacity_bytes: 1000,
            package_bytes: 1000,
        };
        assert!(ask.fits());
        assert!(ask.can_take(&unit(1000)));
        assert!(!ask.can_take(&unit(2000)), "the capacity matches exactly");
        assert!(!ask.can_take(&unit(999)));
        let blank = DriveAsk {
            capacity_bytes: 1000,
            package_bytes: 0,
        };
        assert!(blank.can_take(&unit(1000)));
    }

    #[test]
    fn content_larger_than_the_capacity_fits_no_drive() {
        let ask = DriveAsk {
            capacity_bytes: 1000,
            package_bytes: 1001,
        };
        assert!(!ask.fits());
        assert!(!ask.can_take(&unit(1000)));
        let nothing = DriveAsk {
            capacity_bytes: 0,
            package_bytes: 0,
        };
        assert!(!nothing.fits(), "a drive has a capacity");
    }

    #[test]
    fn a_held_busy_or_pinned_unit_or_a_power_bank_takes_nothing() {
        let ask = DriveAsk {
            capacity_bytes: 1000,
            package_bytes: 10,
        };
        let held = Unit {
            held: true,
            ..unit(1000)
        };
        let not_ready = Unit {
            ready: false,
            ..unit(1000)
        };
        let bank = Unit {
            kind: common::ItemKind::PowerBank as i32,
            ..unit(1000)
        };
        for unit in [held, not_ready, bank] {
            assert!(!ask.can_take(&unit), "{unit:?}");
        }
    }
}
