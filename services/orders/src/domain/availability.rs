//! What one kiosk offers for choosing where to go or reserve (FindKiosks): per type, the units
//! free to lend now and the drives a reservation could take, under the caller's type filter.
//!
//! Rules:
//! - The types are those the kiosk holds now (any unit, whatever its state) and, when the
//!   filter names a content package, that package on every drive capacity at the kiosk that
//!   can take it, although no drive holds it yet.
//! - A filter's kind must match; its capacity and content package match when set.
//! - Available now: units of exactly the type, ready and held by no order (what a walk-up
//!   rental can get; the same count ScanKiosk offers).
//! - Reservable: drives counted by [`reservable::count`] for the type's capacity and its
//!   package's size; 0 for power banks and for a package that is not READY (it cannot be
//!   reserved).
//! - A type with nothing available and nothing reservable is not a line.

use std::collections::{BTreeMap, BTreeSet};

use sneakernet_proto::common::v1 as common;

use super::offer::TypeKey;
use super::reservable::{self, DriveAsk, UnitFacts};
use crate::entity::kiosk_item;

/// Which types a caller wants (`FindKiosksRequest.item_type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeFilter {
    /// `common.v1.ItemKind`; must match.
    pub kind: i32,
    /// Matches this capacity only, when set.
    pub capacity_bytes: Option<i64>,
    /// Matches this content package only, when set.
    pub content_package_id: Option<String>,
}

impl TypeFilter {
    /// Whether `key` is a type the filter asks for.
    pub fn matches(&self, key: &TypeKey) -> bool {
        key.kind == self.kind
            && self.capacity_bytes.is_none_or(|c| c == key.capacity_bytes)
            && self
                .content_package_id
                .as_ref()
                .is_none_or(|p| *p == key.content_package_id)
    }
}

/// One unit at a kiosk: its type and what the reservable rule needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Its type.
    pub key: TypeKey,
    /// Its state.
    pub facts: UnitFacts,
}

impl From<&kiosk_item::Model> for Unit {
    fn from(row: &kiosk_item::Model) -> Self {
        Unit {
            key: TypeKey {
                kind: row.kind,
                capacity_bytes: row.capacity_bytes,
                content_package_id: row.content_package_id.clone(),
            },
            facts: UnitFacts::from(row),
        }
    }
}

/// One type at one kiosk, counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The type.
    pub key: TypeKey,
    /// Units free to lend now.
    pub available_now: u32,
    /// Drives a reservation of this type could take.
    pub reservable: u32,
}

/// The content packages whose size [`lines`] needs for these units under `filter`: those of
/// the types held that the filter lets through (the filter's own package is known already).
pub fn packages_held(units: &[Unit], filter: Option<&TypeFilter>) -> BTreeSet<String> {
    units
        .iter()
        .map(|u| &u.key)
        .filter(|key| !key.content_package_id.is_empty())
        .filter(|key| filter.is_none_or(|f| f.matches(key)))
        .map(|key| key.content_package_id.clone())
        .collect()
}

/// The lines of one kiosk holding `units`, by type. `package_bytes(id)` is the total size of
/// a READY package, `None` when the package cannot be reserved (unknown or not READY).
pub fn lines(
    units: &[Unit],
    filter: Option<&TypeFilter>,
    package_bytes: impl Fn(&str) -> Option<u64>,
) -> Vec<Line> {
    let drive = i32::from(common::ItemKind::Drive);
    let package_size = |package: &str| {
        if package.is_empty() {
            Some(0)
        } else {
            package_bytes(package)
        }
    };
    let mut types: BTreeSet<TypeKey> = units.iter().map(|u| u.key.clone()).collect();
    if let Some(package) = filter.and_then(|f| f.content_package_id.as_ref())
        && let Some(size) = package_size(package)
    {
        for unit in units.iter().filter(|u| u.key.kind == drive) {
            let ask = DriveAsk {
                capacity_bytes: unit.facts.capacity_bytes,
                package_bytes: size,
            };
            if ask.fits() {
                types.insert(TypeKey {
                    kind: drive,
                    capacity_bytes: unit.key.capacity_bytes,
                    content_package_id: package.clone(),
                });
            }
        }
    }
    let facts: Vec<UnitFacts> = units.iter().map(|u| u.facts).collect();
    let mut lines = BTreeMap::new();
    for key in types
        .into_iter()
        .filter(|key| filter.is_none_or(|f| f.matches(key)))
    {
        let available_now = units
            .iter()
            .filter(|u| u.key == key && u.facts.ready && !u.facts.held)
            .count();
        let reservable = match package_size(&key.content_package_id) {
            Some(package_bytes) if key.kind == drive => reservable::count(
                &facts,
                &DriveAsk {
                    capacity_bytes: u64::try_from(key.capacity_bytes).unwrap_or(0),
                    package_bytes,
                },
            ),
            _ => 0,
        };
        let line = Line {
            key: key.clone(),
            available_now: u32::try_from(available_now).unwrap_or(u32::MAX),
            reservable,
        };
        if line.available_now > 0 || line.reservable > 0 {
            lines.insert(key, line);
        }
    }
    lines.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: i64 = 1_000_000_000_000;
    const FILMS: &str = "films";
    const MAPS: &str = "maps";

    fn drive(capacity: i64, package: &str, ready: bool, held: bool) -> Unit {
        Unit {
            key: TypeKey {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: capacity,
                content_package_id: package.into(),
            },
            facts: UnitFacts {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: u64::try_from(capacity).unwrap(),
                ready,
                held,
            },
        }
    }

    fn bank(ready: bool) -> Unit {
        Unit {
            key: TypeKey {
                kind: common::ItemKind::PowerBank.into(),
                capacity_bytes: 0,
                content_package_id: String::new(),
            },
            facts: UnitFacts {
                kind: common::ItemKind::PowerBank.into(),
                capacity_bytes: 0,
                ready,
                held: false,
            },
        }
    }

    /// FILMS is 600 GB and READY; MAPS is not READY.
    fn sizes(package: &str) -> Option<u64> {
        (package == FILMS).then_some(600_000_000_000)
    }

    fn drives(kind_only: bool) -> TypeFilter {
        TypeFilter {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: None,
            content_package_id: (!kind_only).then(|| FILMS.to_owned()),
        }
    }

    /// (kind, capacity, package, available now, reservable) of each line.
    fn shown(lines: &[Line]) -> Vec<(i32, i64, &str, u32, u32)> {
        lines
            .iter()
            .map(|l| {
                (
                    l.key.kind,
                    l.key.capacity_bytes,
                    l.key.content_package_id.as_str(),
                    l.available_now,
                    l.reservable,
                )
            })
            .collect()
    }

    /// A kiosk with: two free 1 TB FILMS drives, one held; a free blank 2 TB drive; a
    /// 500 GB MAPS drive (too small for FILMS); a pinned (not ready) 1 TB blank drive; a
    /// charged and an uncharged power bank.
    fn kiosk() -> Vec<Unit> {
        vec![
            drive(TB, FILMS, true, false),
            drive(TB, FILMS, true, false),
            drive(TB, FILMS, true, true),
            drive(2 * TB, "", true, false),
            drive(TB / 2, MAPS, true, false),
            drive(TB, "", false, false),
            bank(true),
            bank(false),
        ]
    }

    #[test]
    fn without_a_filter_every_type_held_with_something_to_offer() {
        let (d, b) = (
            i32::from(common::ItemKind::Drive),
            i32::from(common::ItemKind::PowerBank),
        );
        assert_eq!(
            shown(&lines(&kiosk(), None, sizes)),
            [
                (d, TB / 2, MAPS, 1, 0),
                // The pinned blank drive: nothing now, but 2 free 1 TB drives take a blank
                // reservation.
                (d, TB, "", 0, 2),
                (d, TB, FILMS, 2, 2),
                (d, 2 * TB, "", 1, 1),
                (b, 0, "", 1, 0),
            ]
        );
    }

    #[test]
    fn a_package_filter_adds_every_capacity_that_can_take_it() {
        let d = i32::from(common::ItemKind::Drive);
        // FILMS on 2 TB: no drive holds it, the free blank one can take it. Not on 500 GB.
        assert_eq!(
            shown(&lines(&kiosk(), Some(&drives(false)), sizes)),
            [(d, TB, FILMS, 2, 2), (d, 2 * TB, FILMS, 0, 1)]
        );
        // A package that is not READY cannot be reserved; held units are still lendable.
        let maps = TypeFilter {
            content_package_id: Some(MAPS.into()),
            ..drives(true)
        };
        assert_eq!(
            shown(&lines(&kiosk(), Some(&maps), sizes)),
            [(d, TB / 2, MAPS, 1, 0)]
        );
        assert_eq!(
            packages_held(&kiosk(), Some(&maps)),
            BTreeSet::from([MAPS.into()])
        );
    }

    #[test]
    fn kind_and_capacity_must_match() {
        let d = i32::from(common::ItemKind::Drive);
        let two_tb = TypeFilter {
            capacity_bytes: Some(2 * TB),
            ..drives(true)
        };
        assert_eq!(
            shown(&lines(&kiosk(), Some(&two_tb), sizes)),
            [(d, 2 * TB, "", 1, 1)]
        );
        let banks = TypeFilter {
            kind: common::ItemKind::PowerBank.into(),
            capacity_bytes: None,
            content_package_id: None,
        };
        assert_eq!(lines(&kiosk(), Some(&banks), sizes).len(), 1);
        assert!(packages_held(&kiosk(), Some(&banks)).is_empty());
        let nothing = TypeFilter {
            capacity_bytes: Some(3 * TB),
            ..drives(false)
        };
        assert!(lines(&kiosk(), Some(&nothing), sizes).is_empty());
        assert!(lines(&[], None, sizes).is_empty(), "an empty kiosk");
    }
}
