//! The fleet as operators list it: kiosks registered or ever connected, with their profile,
//! connection and inventory summary.

use prost::Message;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::wire::timestamp;

use crate::domain::pricing::Terms;
use crate::entity::{kiosk, kiosk_view, pricing_rule};
use crate::error::OrdersError;
use crate::flows::Flows;
use crate::inventory;

/// One page of ListKiosks.
#[derive(Clone, Debug, Default)]
pub struct KioskPage {
    /// The kiosks, in id order.
    pub kiosks: Vec<pb::Kiosk>,
    /// The last id of this page when more follow.
    pub next_after: Option<String>,
}

/// A kiosk as the fleet API shows it, from what it reported and its profile.
pub fn kiosk_proto(view: Option<&kiosk_view::Model>, profile: Option<&kiosk::Model>) -> pb::Kiosk {
    let inventory = view
        .filter(|row| !row.inventory.is_empty())
        .and_then(|row| gateway::Inventory::decode(row.inventory.as_slice()).ok())
        .map(|inventory| inventory::summarize(&inventory));
    pb::Kiosk {
        profile: profile.map(|p| pb::KioskProfile {
            kiosk_id: p.kiosk_id.clone(),
            site_id: p.site_id.clone(),
            site_name: p.site_name.clone(),
            location: Some(sneakernet_proto::common::v1::Location {
                latitude: p.latitude,
                longitude: p.longitude,
            }),
            out_of_service: p.out_of_service,
            registered_at: Some(timestamp(p.registered_at)),
            updated_at: Some(timestamp(p.updated_at)),
        }),
        online: view.is_some_and(|v| v.online),
        last_seen_at: view.map(|v| timestamp(v.last_seen_at)),
        agent_version: view.map(|v| v.agent_version.clone()).unwrap_or_default(),
        inventory,
    }
}

impl Flows {
    /// Up to `size` kiosks with ids after `after` (only online ones, only those of a site, if
    /// asked), in id order; a filter that drops many never ends a listing early.
    pub async fn list_kiosks(
        &self,
        after: &str,
        size: u32,
        online_only: bool,
        site_id: &str,
    ) -> Result<KioskPage, OrdersError> {
        let store = &self.store;
        // Kiosks are those registered and those that ever connected. Candidates come in id
        // order in batches, each source read up to the same id, and are filtered here; the
        // loop goes on until the page is full or the candidates run out, so a filter that
        // drops many never ends a listing early.
        const BATCH: u64 = 200;
        let mut cursor = after.to_owned();
        let mut page = Vec::new();
        let mut more = false;
        'batches: loop {
            let views = store.kiosks(&cursor, BATCH, online_only).await?;
            let profiles = if online_only {
                Vec::new()
            } else {
                store.kiosk_profiles_after(&cursor, BATCH, site_id).await?
            };
            // Up to which id both sources are complete in this batch.
            let complete_to = [
                (views.len() as u64 == BATCH).then(|| views.last().map(|v| v.kiosk_id.clone())),
                (profiles.len() as u64 == BATCH)
                    .then(|| profiles.last().map(|p| p.kiosk_id.clone())),
            ]
            .into_iter()
            .flatten()
            .flatten()
            .min();
            let mut ids: Vec<String> = views
                .iter()
                .filter(|_| site_id.is_empty() || online_only)
                .map(|v| v.kiosk_id.clone())
                .chain(profiles.iter().map(|p| p.kiosk_id.clone()))
                .filter(|id| complete_to.as_ref().is_none_or(|to| id <= to))
                .collect();
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                break;
            }
            for id in ids {
                cursor = id.clone();
                let view = match views.iter().find(|v| v.kiosk_id == id) {
                    Some(view) => Some(view.clone()),
                    None => store.kiosk(&id).await?,
                };
                let profile = match profiles.iter().find(|p| p.kiosk_id == id) {
                    Some(profile) => Some(profile.clone()),
                    None => store.kiosk_profile(&id).await?,
                };
                if online_only && !view.as_ref().is_some_and(|v| v.online) {
                    continue;
                }
                if !site_id.is_empty() && profile.as_ref().is_none_or(|p| p.site_id != site_id) {
                    continue;
                }
                if page.len() == size as usize {
                    more = true;
                    break 'batches;
                }
                page.push((id, kiosk_proto(view.as_ref(), profile.as_ref())));
            }
            if complete_to.is_none() {
                break;
            }
        }
        let next_after = match (more, page.last()) {
            (true, Some((last, _))) => Some(last.clone()),
            _ => None,
        };
        Ok(KioskPage {
            kiosks: page.into_iter().map(|(_, k)| k).collect(),
            next_after,
        })
    }
}

/// A SetPricing request, every field checked (see `convert.rs`).
#[derive(Clone, Debug)]
pub struct PricingAsk {
    /// The site the rule is for; empty: the default for every site.
    pub site_id: String,
    /// The item type priced.
    pub item_type: sneakernet_proto::common::v1::ItemType,
    /// The terms, checked (a positive base price).
    pub terms: Terms,
    /// How long a reserved drive waits for its user (`None`: the default).
    pub pickup_window: Option<prost_types::Duration>,
}

impl Flows {
    /// Stores the price rule `ask` names (replacing the one for that site and type).
    pub async fn set_pricing(&self, ask: PricingAsk) -> Result<pb::PricingRule, OrdersError> {
        let pricing = crate::convert::terms_proto(&ask.terms, ask.pickup_window);
        let capacity = i64::try_from(ask.item_type.capacity_bytes).map_err(|_| {
            OrdersError::Invalid(vec![sneakernet_runtime::FieldViolation::new(
                "item_type.capacity_bytes",
                "is too large",
            )])
        })?;
        let now = self.clock.now();
        let rule = self
            .store
            .set_pricing(pricing_rule::Model {
                rule_key: format!(
                    "{}|{}|{capacity}|{}",
                    ask.site_id, ask.item_type.kind, ask.item_type.content_package_id
                ),
                site_id: ask.site_id.clone(),
                kind: ask.item_type.kind,
                capacity_bytes: capacity,
                content_package_id: ask.item_type.content_package_id.clone(),
                pricing: pricing.encode_to_vec(),
                updated_at: now,
            })
            .await
            .map_err(crate::store::StoreError::from)?;
        tracing::info!(site_id = %rule.site_id, kind = ask.item_type.kind, "price rule set");
        Ok(pb::PricingRule {
            site_id: ask.site_id,
            item_type: Some(ask.item_type),
            pricing: Some(pricing),
            updated_at: Some(timestamp(now)),
        })
    }
}
