//! Offers: which price rule a type gets at a site, and the checks of a choice against the
//! offer line it names (the type is offered, the length is priced, write protection fits the
//! type). Shared by every flow that sells from an offer.

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::FieldViolation;

use crate::entity::pricing_rule;

/// A lendable type: kind, capacity (0 for power banks), content package ("" when none).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeKey {
    /// `common.v1.ItemKind`.
    pub kind: i32,
    /// Drives: capacity in bytes; 0 for power banks.
    pub capacity_bytes: i64,
    /// Drives: the content package; empty when blank.
    pub content_package_id: String,
}

impl TypeKey {
    /// The type of an item as a kiosk describes it.
    pub fn of_item(item: &common::Item) -> Self {
        match item.attributes.as_ref().and_then(|a| a.kind.as_ref()) {
            Some(common::item_attributes::Kind::Drive(drive)) => TypeKey {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: i64::try_from(drive.capacity_bytes).unwrap_or(i64::MAX),
                content_package_id: drive.content_package_id.clone(),
            },
            _ => TypeKey {
                kind: item.kind,
                capacity_bytes: 0,
                content_package_id: String::new(),
            },
        }
    }

    /// As a protobuf type.
    pub fn to_proto(&self) -> common::ItemType {
        common::ItemType {
            kind: self.kind,
            capacity_bytes: u64::try_from(self.capacity_bytes).unwrap_or(0),
            content_package_id: self.content_package_id.clone(),
        }
    }

    /// From a protobuf type (already validated).
    pub fn from_proto(item_type: &common::ItemType) -> Self {
        TypeKey {
            kind: item_type.kind,
            capacity_bytes: i64::try_from(item_type.capacity_bytes).unwrap_or(i64::MAX),
            content_package_id: item_type.content_package_id.clone(),
        }
    }

    /// `item_types/<kind>/<capacity>/<package>`, a precondition subject.
    pub fn subject(&self) -> String {
        format!(
            "item_types/{}/{}/{}",
            self.kind, self.capacity_bytes, self.content_package_id
        )
    }
}

/// The best price rule for a type at a site: the site's over the network's; within those, one
/// naming a content package over one naming a capacity over one naming only the kind.
pub fn best_rule<'a>(
    rules: &'a [pricing_rule::Model],
    site_id: &str,
    wanted: &TypeKey,
) -> Option<&'a pricing_rule::Model> {
    rules
        .iter()
        .filter(|r| r.site_id.is_empty() || r.site_id == site_id)
        .filter(|r| r.kind == wanted.kind)
        .filter(|r| r.capacity_bytes == 0 || r.capacity_bytes == wanted.capacity_bytes)
        .filter(|r| {
            r.content_package_id.is_empty() || r.content_package_id == wanted.content_package_id
        })
        .max_by_key(|r| {
            (
                !r.site_id.is_empty(),
                !r.content_package_id.is_empty(),
                r.capacity_bytes != 0,
            )
        })
}

/// The write protection a type offers: chosen by the user for drives, none for the rest.
pub fn write_protect_option(kind: i32) -> pb::WriteProtectOption {
    if kind == i32::from(common::ItemKind::Drive) {
        pb::WriteProtectOption::Choosable
    } else {
        pb::WriteProtectOption::NotApplicable
    }
}

/// The line of `offer` for `wanted` and its price for `duration_days`. A violation of the
/// choice field at fault when the type is not offered or the length not priced.
pub fn priced_line<'a>(
    offer: &'a pb::Offer,
    wanted: &TypeKey,
    duration_days: u32,
) -> Result<(&'a pb::OfferLine, &'a common::Money), FieldViolation> {
    let line = offer
        .lines
        .iter()
        .find(|l| l.item_type.as_ref().map(TypeKey::from_proto).as_ref() == Some(wanted))
        .ok_or_else(|| FieldViolation::new("choice.spec.item_type", "is not in the offer"))?;
    let price = line
        .prices
        .iter()
        .find(|p| p.duration_days == duration_days)
        .and_then(|p| p.price.as_ref())
        .ok_or_else(|| {
            FieldViolation::new("choice.duration_days", "is not a length the offer lists")
        })?;
    Ok((line, price))
}

/// Whether the write protection asked fits what the type offers (an offer line's option, or
/// [`write_protect_option`] of the kind): always on for types that must be protected, off for
/// types that are not drives.
pub fn check_write_protect(
    option: pb::WriteProtectOption,
    write_protect: bool,
) -> Result<(), FieldViolation> {
    match option {
        pb::WriteProtectOption::AlwaysOn if !write_protect => Err(FieldViolation::new(
            "choice.spec.write_protect",
            "must be true for this type",
        )),
        pb::WriteProtectOption::NotApplicable if write_protect => Err(FieldViolation::new(
            "choice.spec.write_protect",
            "must be false: not a drive",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(site: &str, kind: i32, capacity: i64, package: &str) -> pricing_rule::Model {
        pricing_rule::Model {
            rule_key: format!("{site}|{kind}|{capacity}|{package}"),
            site_id: site.into(),
            kind,
            capacity_bytes: capacity,
            content_package_id: package.into(),
            pricing: vec![],
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_most_specific_rule_wins_and_a_site_rule_beats_the_network() {
        let drive = i32::from(common::ItemKind::Drive);
        let rules = vec![
            rule("", drive, 0, ""),
            rule("", drive, 1000, ""),
            rule("", drive, 0, "films"),
            rule("s1", drive, 0, ""),
            rule("s2", drive, 0, "films"),
        ];
        let films_1000 = TypeKey {
            kind: drive,
            capacity_bytes: 1000,
            content_package_id: "films".into(),
        };
        let blank_1000 = TypeKey {
            content_package_id: String::new(),
            ..films_1000.clone()
        };
        let key = |site, wanted| best_rule(&rules, site, wanted).map(|r| r.rule_key.clone());
        assert_eq!(key("s1", &films_1000).as_deref(), Some("s1|1|0|"));
        assert_eq!(key("s2", &films_1000).as_deref(), Some("s2|1|0|films"));
        assert_eq!(key("s3", &films_1000).as_deref(), Some("|1|0|films"));
        assert_eq!(key("s3", &blank_1000).as_deref(), Some("|1|1000|"));
        let bank = TypeKey {
            kind: i32::from(common::ItemKind::PowerBank),
            capacity_bytes: 0,
            content_package_id: String::new(),
        };
        assert_eq!(key("s1", &bank), None, "no rule, no offer");
    }

    fn drive_line(option: pb::WriteProtectOption) -> pb::OfferLine {
        let drive = TypeKey {
            kind: i32::from(common::ItemKind::Drive),
            capacity_bytes: 1000,
            content_package_id: String::new(),
        };
        pb::OfferLine {
            item_type: Some(drive.to_proto()),
            write_protect: option.into(),
            prices: vec![pb::DurationPrice {
                duration_days: 2,
                price: Some(common::Money {
                    minor_units: 500,
                    currency: "EUR".into(),
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_choice_finds_its_line_and_price_or_names_the_field_at_fault() {
        let line = drive_line(pb::WriteProtectOption::Choosable);
        let wanted = TypeKey::from_proto(line.item_type.as_ref().unwrap());
        let offer = pb::Offer {
            lines: vec![line],
            ..Default::default()
        };
        let (_, price) = priced_line(&offer, &wanted, 2).unwrap();
        assert_eq!(price.minor_units, 500);
        assert_eq!(
            priced_line(&offer, &wanted, 3).unwrap_err().field,
            "choice.duration_days"
        );
        let other = TypeKey {
            capacity_bytes: 1,
            ..wanted
        };
        assert_eq!(
            priced_line(&offer, &other, 2).unwrap_err().field,
            "choice.spec.item_type"
        );
    }

    #[test]
    fn write_protection_must_fit_the_line() {
        use pb::WriteProtectOption as W;
        for (option, asked, fits) in [
            (W::Choosable, true, true),
            (W::Choosable, false, true),
            (W::AlwaysOn, true, true),
            (W::AlwaysOn, false, false),
            (W::NotApplicable, false, true),
            (W::NotApplicable, true, false),
        ] {
            let line = drive_line(option);
            let offered = pb::WriteProtectOption::try_from(line.write_protect).unwrap();
            let fit = check_write_protect(offered, asked).is_ok();
            assert_eq!(fit, fits, "{option:?} asked {asked}");
        }
    }
}
