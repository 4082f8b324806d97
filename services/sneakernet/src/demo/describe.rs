//! How the demo prints types, offers, kiosks, money and times.

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;

use crate::demo_content::DemoCatalog;
use crate::simulated_fleet;

pub(super) fn enum_name<E>(name: Result<&'static str, E>) -> &'static str {
    name.unwrap_or("UNKNOWN")
}

pub(super) fn state_name(state: i32) -> &'static str {
    enum_name(pb::OrderState::try_from(state).map(|s| s.as_str_name()))
        .trim_start_matches("ORDER_STATE_")
}

/// `downloading`, `copying`, ... for a provisioning phase.
pub(super) fn phase_name(phase: i32) -> String {
    enum_name(
        sneakernet_proto::gateway::v1::ProgressPhase::try_from(phase).map(|p| p.as_str_name()),
    )
    .trim_start_matches("PROGRESS_PHASE_")
    .to_lowercase()
}

/// `12.50 EUR`, in the currency's own minor-unit exponent.
pub(super) fn money(amount: &common::Money) -> String {
    use sneakernet_orders::domain::money::{Currency, Money};
    match Currency::parse(&amount.currency) {
        Ok(currency) => Money::new(amount.minor_units, currency).to_string(),
        Err(_) => format!(
            "{} minor units of {:?}",
            amount.minor_units, amount.currency
        ),
    }
}

pub(super) fn days(n: u32) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

pub(super) fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(sneakernet_runtime::wire::from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "(unknown)".into())
}

/// `1 TB drive, Film classics`, `2 TB blank drive`, `power bank`.
pub(super) fn describe_type(
    item_type: &common::ItemType,
    content_title: &str,
    catalog: Option<&DemoCatalog>,
) -> String {
    if item_type.kind != common::ItemKind::Drive as i32 {
        return "power bank".into();
    }
    let capacity = if item_type.capacity_bytes.is_multiple_of(simulated_fleet::TB) {
        format!("{} TB", item_type.capacity_bytes / simulated_fleet::TB)
    } else {
        format!("{} GB", item_type.capacity_bytes / 1_000_000_000)
    };
    if item_type.content_package_id.is_empty() {
        return format!("{capacity} blank drive");
    }
    let title = if content_title.is_empty() {
        catalog
            .and_then(|c| c.title(&item_type.content_package_id))
            .unwrap_or(&item_type.content_package_id)
    } else {
        content_title
    };
    format!("{capacity} drive, {title}")
}

pub(super) fn describe_offer_line(line: &pb::OfferLine, catalog: Option<&DemoCatalog>) -> String {
    let kind = line
        .item_type
        .as_ref()
        .map(|t| describe_type(t, &line.content_title, catalog))
        .unwrap_or_else(|| "(no type)".into());
    let protection = match pb::WriteProtectOption::try_from(line.write_protect) {
        Ok(pb::WriteProtectOption::Choosable) => ", write protection on or off",
        Ok(pb::WriteProtectOption::AlwaysOn) => ", always write-protected",
        _ => "",
    };
    let price = |p: &pb::DurationPrice| {
        format!(
            "{} {}",
            days(p.duration_days),
            p.price.as_ref().map(money).unwrap_or_default()
        )
    };
    let prices = match line.prices.as_slice() {
        [] => "no price".to_owned(),
        [first, second, .., last] if line.prices.len() > 3 => {
            format!("{}, {} ... {}", price(first), price(second), price(last))
        }
        all => all.iter().map(price).collect::<Vec<_>>().join(", "),
    };
    format!("{kind}: {} available{protection}; {prices}", line.available)
}

pub(super) fn describe_kiosk(kiosk: &pb::Kiosk) -> String {
    let (id, site) = kiosk
        .profile
        .as_ref()
        .map(|p| (p.kiosk_id.as_str(), p.site_name.as_str()))
        .unwrap_or_default();
    let (ready, empty) = kiosk
        .inventory
        .as_ref()
        .map(|i| (i.lines.iter().map(|l| l.ready).sum::<u32>(), i.empty_bays))
        .unwrap_or_default();
    format!("{id:<15} {site:<22} {ready} items ready, {empty} empty bays")
}

pub(super) fn describe_movement(movement: &pb::MoneyMovement) -> String {
    let kind = enum_name(pb::MoneyMovementKind::try_from(movement.kind).map(|k| k.as_str_name()))
        .trim_start_matches("MONEY_MOVEMENT_KIND_")
        .to_lowercase()
        .replace('_', " ");
    format!(
        "{kind} {}",
        movement.amount.as_ref().map(money).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::eur;
    use crate::demo_content::test_catalog;

    const FILM: &str = "p-film";

    #[test]
    fn types_and_offer_lines_read_like_a_shop() {
        let film = common::ItemType {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: simulated_fleet::TB,
            content_package_id: FILM.into(),
        };
        assert_eq!(
            describe_type(&film, "", Some(&test_catalog())),
            "1 TB drive, Film classics"
        );
        assert_eq!(
            describe_type(
                &common::ItemType {
                    kind: common::ItemKind::Drive.into(),
                    capacity_bytes: 2 * simulated_fleet::TB,
                    content_package_id: String::new(),
                },
                "",
                None
            ),
            "2 TB blank drive"
        );
        let line = pb::OfferLine {
            item_type: Some(film),
            content_title: String::new(),
            available: 2,
            write_protect: pb::WriteProtectOption::Choosable.into(),
            prices: (1..=14)
                .map(|d| pb::DurationPrice {
                    duration_days: d,
                    price: Some(eur(400 + 150 * i64::from(d - 1))),
                })
                .collect(),
            pricing: None,
        };
        assert_eq!(
            describe_offer_line(&line, Some(&test_catalog())),
            "1 TB drive, Film classics: 2 available, write protection on or off; 1 day 4.00 EUR, 2 days 5.50 EUR ... 14 days 23.50 EUR"
        );
        assert_eq!(money(&eur(5000)), "50.00 EUR");
    }
}
