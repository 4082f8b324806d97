//! The fleet as operators see and shape it (FleetService): kiosk profiles, kiosks registered
//! or ever connected with their connection and inventory summary, price rules, and the
//! events parked because they could not be applied.

use prost::Message;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::KioskId;
use sneakernet_runtime::wire::timestamp;

use crate::domain::pricing::Terms;
use crate::entity::{kiosk, kiosk_view, pricing_rule};
use crate::error::OrdersError;
use crate::flows::Flows;
use crate::inventory;
use crate::store::parked::Retried;

/// Kiosks (or parked events) per page when the caller does not say.
pub const DEFAULT_PAGE: u32 = 50;
/// Most kiosks (or parked events) per page.
pub const MAX_PAGE: u32 = 500;

/// A RegisterKiosk request, every field checked (see `convert.rs`).
#[derive(Clone, Debug)]
pub struct RegisterAsk {
    /// The kiosk.
    pub kiosk_id: KioskId,
    /// Its site (kiosk-id character rules).
    pub site_id: String,
    /// The site's display name, trimmed, 1 to 200 characters.
    pub site_name: String,
    /// Where it stands, in range.
    pub location: sneakernet_proto::common::v1::Location,
    /// The key of its rotating QR code, 20 to 64 bytes (stored sealed).
    pub qr_secret: Vec<u8>,
    /// Out of service (nothing is offered there).
    pub out_of_service: bool,
}

/// A ListKiosks request, checked.
#[derive(Clone, Debug)]
pub struct KioskListAsk {
    /// The last kiosk id of the previous page (empty: from the start).
    pub after: String,
    /// Kiosks per page, 1 to [`MAX_PAGE`].
    pub size: u32,
    /// Only kiosks online now.
    pub online_only: bool,
    /// Only kiosks of this site (empty: every site).
    pub site_id: String,
}

/// A GetKiosk request: the kiosk's id, checked.
#[derive(Clone, Debug)]
pub struct KioskAsk(pub KioskId);

/// A ListParkedEvents request, checked.
#[derive(Clone, Copy, Debug)]
pub struct ParkedPageAsk {
    /// The last cursor of the previous page (0: from the start).
    pub after: i64,
    /// Events per page, 1 to [`MAX_PAGE`].
    pub size: u32,
}

/// A parked event's cursor (RetryParkedEvent, DropParkedEvent), checked positive.
#[derive(Clone, Copy, Debug)]
pub struct ParkedCursor(pub i64);

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
    /// Creates or replaces the kiosk's profile (its QR key sealed) and answers the kiosk as
    /// the fleet shows it.
    pub async fn register_kiosk(&self, ask: RegisterAsk) -> Result<pb::Kiosk, OrdersError> {
        let now = self.clock.now();
        let kiosk_id = ask.kiosk_id.as_str();
        let stored = self
            .store
            .register_kiosk(kiosk::Model {
                kiosk_id: kiosk_id.to_owned(),
                site_id: ask.site_id,
                site_name: ask.site_name,
                latitude: ask.location.latitude,
                longitude: ask.location.longitude,
                qr_secret: self.sealing.seal(kiosk_id, &ask.qr_secret),
                out_of_service: ask.out_of_service,
                registered_at: now,
                updated_at: now,
            })
            .await?;
        let view = self.store.kiosk(kiosk_id).await?;
        tracing::info!(kiosk_id, site_id = %stored.site_id, "kiosk registered");
        Ok(kiosk_proto(view.as_ref(), Some(&stored)))
    }

    /// The kiosk as the fleet shows it: registered, or at least once connected.
    pub async fn kiosk(&self, ask: KioskAsk) -> Result<pb::Kiosk, OrdersError> {
        let id = ask.0.as_str();
        let view = self.store.kiosk(id).await?;
        let profile = self.store.kiosk_profile(id).await?;
        if view.is_none() && profile.is_none() {
            return Err(OrdersError::KioskUnknown(id.to_owned()));
        }
        Ok(kiosk_proto(view.as_ref(), profile.as_ref()))
    }

    /// The auditor's report now: the ledger balances, and every paid order is settled or
    /// in flight within its deadline plus `grace` (the sweeper's lag).
    pub async fn audit(&self, grace: chrono::Duration) -> Result<pb::AuditResponse, OrdersError> {
        let now = self.clock.now();
        let report = self.store.audit(now, grace).await?;
        Ok(pb::AuditResponse {
            ledger_balanced: report.ledger_balanced,
            violations: report.violations,
            checked_at: Some(timestamp(now)),
            orders_checked: report.orders_checked,
            transactions_checked: report.transactions_checked,
        })
    }

    /// One page of the events parked because they could not be applied, and the token of
    /// the next page (empty: none).
    pub async fn parked_events(
        &self,
        ask: ParkedPageAsk,
    ) -> Result<(Vec<pb::ParkedEvent>, String), OrdersError> {
        let rows = self.store.parked(ask.after, u64::from(ask.size)).await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == ask.size as usize => last.cursor.to_string(),
            _ => String::new(),
        };
        let events = rows
            .into_iter()
            .map(|row| pb::ParkedEvent {
                cursor: u64::try_from(row.cursor).unwrap_or(0),
                kiosk_id: row.kiosk_id,
                error: row.error,
                parked_at: Some(timestamp(row.parked_at)),
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                event: gateway::Event::decode(row.event.as_slice()).ok(),
            })
            .collect();
        Ok((events, next_page_token))
    }

    /// Applies a parked event again; it stays parked (FAILED_PRECONDITION, with why) if it
    /// still fails.
    pub async fn retry_parked_event(&self, cursor: ParkedCursor) -> Result<(), OrdersError> {
        let ParkedCursor(cursor) = cursor;
        match self.store.retry_parked(cursor, self.clock.now()).await? {
            Retried::Applied => {
                self.wake.notify_one();
                Ok(())
            }
            Retried::NotFound => Err(OrdersError::ParkedEventNotFound(cursor)),
            Retried::StillFailing(error) => Err(OrdersError::refused_one(
                "STILL_FAILING",
                format!("parked_events/{cursor}"),
                &error,
            )),
        }
    }

    /// Forgets a parked event for good (an operator settled it by hand).
    pub async fn drop_parked_event(&self, cursor: ParkedCursor) -> Result<(), OrdersError> {
        let ParkedCursor(cursor) = cursor;
        if !self.store.drop_parked(cursor).await? {
            return Err(OrdersError::ParkedEventNotFound(cursor));
        }
        tracing::warn!(cursor, "parked event dropped by an operator");
        Ok(())
    }

    /// Up to `size` kiosks with ids after `after` (only online ones, only those of a site, if
    /// asked), in id order; a filter that drops many never ends a listing early.
    pub async fn list_kiosks(&self, ask: KioskListAsk) -> Result<KioskPage, OrdersError> {
        let KioskListAsk {
            after,
            size,
            online_only,
            site_id,
        } = ask;
        let site_id = site_id.as_str();
        let store = &self.store;
        // Kiosks are those registered and those that ever connected. Candidates come in id
        // order in batches, each source read up to the same id, and are filtered here; the
        // loop goes on until the page is full or the candidates run out, so a filter that
        // drops many never ends a listing early.
        const BATCH: u64 = 200;
        let mut cursor = after;
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
