//! The kiosk's preset rules for choosing the item a lend hands out (seed 2, CN107590714A: the
//! kiosk, which knows what it physically holds, picks the item; the server's view is advisory).
//!
//! The rules, in full:
//!
//! **Lend by spec, drives.** Candidates are drives in a READY bay (READY means wiped or
//! verified: a drive being provisioned, wiped or checked is BUSY; a reserved one is PINNED and
//! never a candidate) whose capacity equals the spec's exactly and whose content package equals
//! the spec's exactly (a spec with no package asks for a blank drive). Among them the least
//! lent (`lend_count`) wins, so wear spreads over the fleet; ties go to the lowest bay id, so
//! the choice is deterministic. Write protection is not a criterion: the executor applies the
//! asked setting to the chosen drive before ejecting it.
//!
//! **Lend by spec, power banks.** Candidates are power banks in a READY bay charged at least
//! [`MIN_POWER_BANK_CHARGE_PERCENT`]. The highest charge wins, then the least lent, then the
//! lowest bay id.
//!
//! **Lend by item id (reservation).** Exactly that item, and only if its bay is PINNED to the
//! lend's order; anything else is "item not found" (the server must not lend a drive kept for
//! another order, or one that is not in this kiosk).
//!
//! **Provision.** Candidates are drives in a READY bay whose capacity equals the asked one
//! exactly (never a PINNED, BUSY, QUARANTINED or faulty one). A blank drive wins over one
//! holding other content (that content is wiped); then the least lent, then the lowest bay id.
//!
//! Everything here is pure: no I/O, no clock.

use crate::bays::{BayInfo, BayState, ItemFacts, ItemKind};

/// A power bank is lent only when charged at least this much (percent): below it, a user could
/// walk away with a bank too flat to charge a phone once; it stays in its bay charging.
pub const MIN_POWER_BANK_CHARGE_PERCENT: u32 = 80;

/// The type a walk-up lend asks for, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WantedType {
    /// A drive of exactly this capacity holding exactly this content (`None`: blank).
    Drive {
        /// Nominal capacity in bytes.
        capacity_bytes: u64,
        /// The content package; `None` for a blank drive.
        content_package_id: Option<String>,
    },
    /// A power bank.
    PowerBank,
}

impl WantedType {
    /// The kind asked for.
    pub fn kind(&self) -> ItemKind {
        match self {
            WantedType::Drive { .. } => ItemKind::Drive,
            WantedType::PowerBank => ItemKind::PowerBank,
        }
    }
}

/// Why no item could be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoChoice {
    /// Lend by spec: no READY item matches.
    NoMatchingItem,
    /// Lend by item id: the item is not here or not pinned to the order.
    ItemNotFound,
}

/// The bay to eject for a walk-up lend of `wanted`, by the rules above.
pub fn choose_by_spec<'a>(
    bays: &'a [BayInfo],
    wanted: &WantedType,
) -> Result<&'a BayInfo, NoChoice> {
    match wanted {
        WantedType::Drive {
            capacity_bytes,
            content_package_id,
        } => bays
            .iter()
            .filter(|bay| bay.state == BayState::Ready)
            .filter(|bay| {
                bay.item.as_ref().is_some_and(|item| match &item.facts {
                    ItemFacts::Drive {
                        capacity_bytes: capacity,
                        content_package_id: package,
                        ..
                    } => capacity == capacity_bytes && package == content_package_id,
                    ItemFacts::PowerBank { .. } => false,
                })
            })
            .min_by(|a, b| {
                a.lend_count
                    .cmp(&b.lend_count)
                    .then_with(|| a.bay_id.cmp(&b.bay_id))
            })
            .ok_or(NoChoice::NoMatchingItem),
        WantedType::PowerBank => bays
            .iter()
            .filter(|bay| bay.state == BayState::Ready)
            .filter_map(|bay| match bay.item.as_ref().map(|i| &i.facts) {
                Some(ItemFacts::PowerBank { charge_percent })
                    if *charge_percent >= MIN_POWER_BANK_CHARGE_PERCENT =>
                {
                    Some((bay, *charge_percent))
                }
                _ => None,
            })
            .min_by(|(a, a_charge), (b, b_charge)| {
                b_charge
                    .cmp(a_charge)
                    .then_with(|| a.lend_count.cmp(&b.lend_count))
                    .then_with(|| a.bay_id.cmp(&b.bay_id))
            })
            .map(|(bay, _)| bay)
            .ok_or(NoChoice::NoMatchingItem),
    }
}

/// The bay whose drive a Provision of `capacity_bytes` fills, by the rules above;
/// [`NoChoice::NoMatchingItem`] when no drive is free.
pub fn choose_for_provision(bays: &[BayInfo], capacity_bytes: u64) -> Result<&BayInfo, NoChoice> {
    bays.iter()
        .filter(|bay| bay.state == BayState::Ready)
        .filter_map(|bay| match bay.item.as_ref().map(|i| &i.facts) {
            Some(ItemFacts::Drive {
                capacity_bytes: capacity,
                content_package_id,
                ..
            }) if *capacity == capacity_bytes => Some((bay, content_package_id.is_some())),
            _ => None,
        })
        .min_by(|(a, a_full), (b, b_full)| {
            a_full
                .cmp(b_full)
                .then_with(|| a.lend_count.cmp(&b.lend_count))
                .then_with(|| a.bay_id.cmp(&b.bay_id))
        })
        .map(|(bay, _)| bay)
        .ok_or(NoChoice::NoMatchingItem)
}

/// The bay holding `item_id` if it is PINNED to `order_id`, for a reservation's lend.
pub fn choose_reserved<'a>(
    bays: &'a [BayInfo],
    item_id: &str,
    order_id: &str,
) -> Result<&'a BayInfo, NoChoice> {
    bays.iter()
        .find(|bay| {
            bay.item.as_ref().is_some_and(|i| i.item_id == item_id)
                && matches!(&bay.state, BayState::Pinned { order_id: o } if o == order_id)
        })
        .ok_or(NoChoice::ItemNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bays::ItemInfo;

    fn drive(
        bay: &str,
        state: BayState,
        id: &str,
        cap: u64,
        pkg: Option<&str>,
        lent: u32,
    ) -> BayInfo {
        BayInfo {
            bay_id: bay.into(),
            state,
            item: Some(ItemInfo {
                item_id: id.into(),
                facts: ItemFacts::Drive {
                    capacity_bytes: cap,
                    content_package_id: pkg.map(str::to_owned),
                    write_protected: false,
                    remote_link: false,
                },
            }),
            lend_count: lent,
        }
    }

    fn bank(bay: &str, state: BayState, id: &str, charge: u32, lent: u32) -> BayInfo {
        BayInfo {
            bay_id: bay.into(),
            state,
            item: Some(ItemInfo {
                item_id: id.into(),
                facts: ItemFacts::PowerBank {
                    charge_percent: charge,
                },
            }),
            lend_count: lent,
        }
    }

    fn pinned(order: &str) -> BayState {
        BayState::Pinned {
            order_id: order.into(),
        }
    }

    fn want_drive(cap: u64, pkg: Option<&str>) -> WantedType {
        WantedType::Drive {
            capacity_bytes: cap,
            content_package_id: pkg.map(str::to_owned),
        }
    }

    const TB: u64 = 1_000_000_000_000;

    #[test]
    fn lend_by_spec_follows_the_preset_rules() {
        use BayState::*;
        let empty = BayInfo {
            bay_id: "Z".into(),
            state: Empty,
            item: None,
            lend_count: 0,
        };
        // (case, bays, wanted, expected item)
        type Case = (
            &'static str,
            Vec<BayInfo>,
            WantedType,
            Result<&'static str, NoChoice>,
        );
        let cases: Vec<Case> = vec![
            (
                "least lent drive wins",
                vec![
                    drive("A01", Ready, "D-1", TB, Some("p"), 3),
                    drive("A02", Ready, "D-2", TB, Some("p"), 1),
                ],
                want_drive(TB, Some("p")),
                Ok("D-2"),
            ),
            (
                "ties go to the lowest bay id",
                vec![
                    drive("A02", Ready, "D-2", TB, Some("p"), 1),
                    drive("A01", Ready, "D-1", TB, Some("p"), 1),
                ],
                want_drive(TB, Some("p")),
                Ok("D-1"),
            ),
            (
                "capacity must match exactly",
                vec![drive("A01", Ready, "D-1", 2 * TB, Some("p"), 0)],
                want_drive(TB, Some("p")),
                Err(NoChoice::NoMatchingItem),
            ),
            (
                "content must match exactly",
                vec![
                    drive("A01", Ready, "D-1", TB, Some("q"), 0),
                    drive("A02", Ready, "D-2", TB, None, 0),
                ],
                want_drive(TB, Some("p")),
                Err(NoChoice::NoMatchingItem),
            ),
            (
                "a blank spec takes only a blank drive",
                vec![
                    drive("A01", Ready, "D-1", TB, Some("p"), 0),
                    drive("A02", Ready, "D-2", TB, None, 5),
                ],
                want_drive(TB, None),
                Ok("D-2"),
            ),
            (
                "pinned, busy, quarantined and faulty drives are never chosen",
                vec![
                    drive("A01", pinned("O-1"), "D-1", TB, Some("p"), 0),
                    drive("A02", Busy, "D-2", TB, Some("p"), 0),
                    drive("A03", Quarantined, "D-3", TB, Some("p"), 0),
                    drive("A04", Fault, "D-4", TB, Some("p"), 0),
                    empty.clone(),
                ],
                want_drive(TB, Some("p")),
                Err(NoChoice::NoMatchingItem),
            ),
            (
                "a drive is not a power bank",
                vec![drive("A01", Ready, "D-1", TB, None, 0)],
                WantedType::PowerBank,
                Err(NoChoice::NoMatchingItem),
            ),
            (
                "highest charge wins over less use",
                vec![
                    bank("B01", Ready, "P-1", 85, 0),
                    bank("B02", Ready, "P-2", 95, 9),
                ],
                WantedType::PowerBank,
                Ok("P-2"),
            ),
            (
                "equal charge: least lent, then bay id",
                vec![
                    bank("B03", Ready, "P-3", 90, 2),
                    bank("B02", Ready, "P-2", 90, 1),
                    bank("B01", Ready, "P-1", 90, 1),
                ],
                WantedType::PowerBank,
                Ok("P-1"),
            ),
            (
                "below the threshold is not lent",
                vec![
                    bank("B01", Ready, "P-1", MIN_POWER_BANK_CHARGE_PERCENT - 1, 0),
                    bank("B02", Busy, "P-2", 100, 0),
                ],
                WantedType::PowerBank,
                Err(NoChoice::NoMatchingItem),
            ),
            (
                "exactly the threshold is lent",
                vec![bank("B01", Ready, "P-1", MIN_POWER_BANK_CHARGE_PERCENT, 0)],
                WantedType::PowerBank,
                Ok("P-1"),
            ),
            (
                "a power bank is not a drive",
                vec![bank("B01", Ready, "P-1", 100, 0), empty],
                want_drive(0, None),
                Err(NoChoice::NoMatchingItem),
            ),
        ];
        for (case, bays, wanted, expected) in cases {
            let chosen = choose_by_spec(&bays, &wanted)
                .map(|bay| bay.item.as_ref().map(|i| i.item_id.as_str()).unwrap_or(""));
            assert_eq!(chosen, expected, "{case}");
        }
    }

    #[test]
    fn lend_by_item_takes_exactly_the_drive_pinned_to_the_order() {
        use BayState::*;
        let bays = vec![
            drive("A01", pinned("O-1"), "D-1", TB, Some("p"), 0),
            drive("A02", Ready, "D-2", TB, Some("p"), 0),
            drive("A03", pinned("O-3"), "D-3", TB, Some("p"), 0),
        ];
        let cases = [
            ("pinned to this order", "D-1", "O-1", Ok("A01")),
            (
                "pinned to another order",
                "D-3",
                "O-1",
                Err(NoChoice::ItemNotFound),
            ),
            (
                "not pinned at all",
                "D-2",
                "O-1",
                Err(NoChoice::ItemNotFound),
            ),
            (
                "not in this kiosk",
                "D-9",
                "O-1",
                Err(NoChoice::ItemNotFound),
            ),
        ];
        for (case, item, order, expected) in cases {
            let chosen = choose_reserved(&bays, item, order).map(|b| b.bay_id.as_str());
            assert_eq!(chosen, expected, "{case}");
        }
    }

    #[test]
    fn provision_prefers_a_blank_ready_drive_of_exactly_the_capacity() {
        use BayState::*;
        let cases: Vec<(&str, Vec<BayInfo>, Result<&str, NoChoice>)> = vec![
            (
                "blank wins over content, even when lent more",
                vec![
                    drive("A01", Ready, "D-1", TB, Some("p"), 0),
                    drive("A02", Ready, "D-2", TB, None, 9),
                ],
                Ok("D-2"),
            ),
            (
                "a drive with other content when no blank one is free",
                vec![
                    drive("A01", Ready, "D-1", TB, Some("p"), 2),
                    drive("A02", Ready, "D-2", TB, Some("q"), 1),
                    drive("A03", Ready, "D-3", 2 * TB, None, 0),
                ],
                Ok("D-2"),
            ),
            (
                "never pinned, busy, quarantined or faulty",
                vec![
                    drive("A01", pinned("O-1"), "D-1", TB, None, 0),
                    drive("A02", Busy, "D-2", TB, None, 0),
                    drive("A03", Quarantined, "D-3", TB, None, 0),
                    drive("A04", Fault, "D-4", TB, None, 0),
                    bank("B01", Ready, "P-1", 100, 0),
                ],
                Err(NoChoice::NoMatchingItem),
            ),
        ];
        for (case, bays, expected) in cases {
            let chosen = choose_for_provision(&bays, TB)
                .map(|bay| bay.item.as_ref().map(|i| i.item_id.as_str()).unwrap_or(""));
            assert_eq!(chosen, expected, "{case}");
        }
    }
}
