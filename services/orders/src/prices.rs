//! What a type costs at a site, as the app is shown it: the price rule that applies, the
//! rental lengths offered with their totals, and the write-protection choice. ScanKiosk's
//! offer lines and FindKiosks' availability are both priced here, so a kiosk never shows two
//! prices for one type.

use prost::Message;
use sneakernet_proto::orders::v1 as pb;

use crate::convert;
use crate::domain::offer::{TypeKey, best_rule, write_protect_option};
use crate::domain::pricing::Terms;
use crate::entity::pricing_rule;

/// A type's price terms at a site.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceList {
    /// How write protection may be chosen.
    pub write_protect: pb::WriteProtectOption,
    /// Every rental length allowed, shortest first, with its total.
    pub prices: Vec<pb::DurationPrice>,
    /// The terms (late fees, lost-item fee, pickup window) as stored.
    pub pricing: pb::Pricing,
}

/// The terms of `key` at `site_id` under the best of `rules` (as stored, and checked); `None`
/// when no rule applies or the stored one cannot be read (such a type cannot be sold).
pub fn site_terms(
    rules: &[pricing_rule::Model],
    site_id: &str,
    key: &TypeKey,
) -> Option<(pb::Pricing, Terms)> {
    let rule = best_rule(rules, site_id, key)?;
    let pricing = pb::Pricing::decode(rule.pricing.as_slice()).ok()?;
    let terms = convert::terms("pricing", Some(&pricing)).ok()?;
    Some((pricing, terms))
}

/// The prices of `key` at `site_id` under the best of `rules`; `None` when no rule applies or
/// the rule cannot be read (such a type is not offered: it could not be sold).
pub fn price_list(
    rules: &[pricing_rule::Model],
    site_id: &str,
    key: &TypeKey,
) -> Option<PriceList> {
    let (pricing, terms) = site_terms(rules, site_id, key)?;
    let prices = convert::offered_durations(terms.max_duration_days)
        .into_iter()
        .filter_map(|days| {
            terms
                .price_for_days(days)
                .ok()
                .map(|price| pb::DurationPrice {
                    duration_days: days,
                    price: Some(convert::money_proto(price)),
                })
        })
        .collect();
    Some(PriceList {
        write_protect: write_protect_option(key.kind),
        prices,
        pricing,
    })
}
