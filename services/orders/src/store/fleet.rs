//! Kiosk profiles, price rules, and the unit view: which items each kiosk holds as far as
//! orders knows, and which units are held for orders.
//!
//! The unit view is advisory (the kiosk chooses what it lends) but holds are not: a hold is a
//! conditional update of one unit row (`held_by IS NULL`), so two orders can never hold the
//! same unit, and a kiosk's holds never outnumber its ready units of the type.
//!
//! One kiosk cannot reach into another's units (issue #12): a unit belongs to the kiosk whose
//! bay reported it first while it was at no kiosk ([`claim_unit`]); every change a kiosk's
//! message makes to a unit row carries `kiosk_id = <that kiosk>` in its SQL, so naming another
//! kiosk's item changes nothing there.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;

use super::Store;
use crate::domain::order::{OrderKind, OrderState};
use crate::domain::reservable::{DriveAsk, UnitFacts, can_reserve};
use crate::entity::{kiosk, kiosk_item, order, pricing_rule};

/// Power banks charged less than this are not lent (the kiosk's own rule, mirrored so offers
/// do not promise them).
const MIN_POWER_BANK_CHARGE_PERCENT: u32 = 80;

pub use crate::domain::offer::TypeKey;

/// Whether an item in a bay of this state can be lent now.
fn lendable(state: i32, item: &common::Item) -> bool {
    if state != i32::from(gateway::BayState::Ready) {
        return false;
    }
    match item.attributes.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(common::item_attributes::Kind::PowerBank(bank)) => {
            bank.charge_percent >= MIN_POWER_BANK_CHARGE_PERCENT
        }
        _ => true,
    }
}

impl Store {
    /// Creates or replaces a kiosk's profile; the first registration time is kept.
    pub async fn register_kiosk(&self, mut profile: kiosk::Model) -> Result<kiosk::Model, DbErr> {
        let txn = self.write().await?;
        if let Some(existing) = kiosk::Entity::find_by_id(profile.kiosk_id.clone())
            .lock_exclusive()
            .one(&txn)
            .await?
        {
            profile.registered_at = existing.registered_at;
            kiosk::Entity::delete_by_id(existing.kiosk_id)
                .exec(&txn)
                .await?;
        }
        let stored = profile.into_active_model().insert(&txn).await?;
        txn.commit().await?;
        Ok(stored)
    }

    /// A kiosk's profile.
    pub async fn kiosk_profile(&self, kiosk_id: &str) -> Result<Option<kiosk::Model>, DbErr> {
        kiosk::Entity::find_by_id(kiosk_id.to_owned())
            .one(&self.db)
            .await
    }

    /// The profiles of these kiosks.
    pub async fn kiosk_profiles(&self, kiosk_ids: &[String]) -> Result<Vec<kiosk::Model>, DbErr> {
        kiosk::Entity::find()
            .filter(kiosk::Column::KioskId.is_in(kiosk_ids.iter().cloned()))
            .all(&self.db)
            .await
    }

    /// Up to `limit` profiles with an id above `after`, by id; of one site unless `site_id`
    /// is empty.
    pub async fn kiosk_profiles_after(
        &self,
        after: &str,
        limit: u64,
        site_id: &str,
    ) -> Result<Vec<kiosk::Model>, DbErr> {
        let mut query = kiosk::Entity::find();
        if !site_id.is_empty() {
            query = query.filter(kiosk::Column::SiteId.eq(site_id));
        }
        query
            .filter(kiosk::Column::KioskId.gt(after))
            .order_by_asc(kiosk::Column::KioskId)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Kiosk ids of a site.
    pub async fn kiosks_of_site(&self, site_id: &str) -> Result<Vec<String>, DbErr> {
        Ok(kiosk::Entity::find()
            .filter(kiosk::Column::SiteId.eq(site_id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|k| k.kiosk_id)
            .collect())
    }

    /// Stores a price rule, replacing the one with the same site and pattern.
    pub async fn set_pricing(
        &self,
        rule: pricing_rule::Model,
    ) -> Result<pricing_rule::Model, DbErr> {
        pricing_rule::Entity::insert(rule.clone().into_active_model())
            .on_conflict(
                OnConflict::column(pricing_rule::Column::RuleKey)
                    .update_columns([
                        pricing_rule::Column::Pricing,
                        pricing_rule::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(rule)
    }

    /// The rules that may apply at `site_id`: the site's and the network-wide ones.
    pub async fn pricing_rules(&self, site_id: &str) -> Result<Vec<pricing_rule::Model>, DbErr> {
        pricing_rule::Entity::find()
            .filter(pricing_rule::Column::SiteId.is_in([site_id.to_owned(), String::new()]))
            .all(&self.db)
            .await
    }

    /// Units ready and not held at a kiosk, per type.
    pub async fn available(&self, kiosk_id: &str) -> Result<Vec<(TypeKey, u32)>, DbErr> {
        let rows = kiosk_item::Entity::find()
            .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
            .filter(kiosk_item::Column::Ready.eq(true))
            .filter(kiosk_item::Column::HeldBy.is_null())
            .all(&self.db)
            .await?;
        let mut counts: std::collections::BTreeMap<TypeKey, u32> = Default::default();
        for row in rows {
            *counts.entry(type_of_row(&row)).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }
}

fn type_of_row(row: &kiosk_item::Model) -> TypeKey {
    TypeKey {
        kind: row.kind,
        capacity_bytes: row.capacity_bytes,
        content_package_id: row.content_package_id.clone(),
    }
}

/// Holds one ready, unheld unit of `wanted` at `kiosk_id` for `order_id`; the unit's row id,
/// or `None` when every unit is taken.
pub(crate) async fn hold_unit<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    wanted: &TypeKey,
    order_id: &str,
) -> Result<Option<String>, DbErr> {
    loop {
        let candidates = kiosk_item::Entity::find()
            .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
            .filter(kiosk_item::Column::Kind.eq(wanted.kind))
            .filter(kiosk_item::Column::CapacityBytes.eq(wanted.capacity_bytes))
            .filter(kiosk_item::Column::ContentPackageId.eq(wanted.content_package_id.as_str()))
            .filter(kiosk_item::Column::Ready.eq(true))
            .filter(kiosk_item::Column::HeldBy.is_null())
            .limit(8)
            .all(db)
            .await?;
        if candidates.is_empty() {
            return Ok(None);
        }
        for candidate in candidates {
            let taken = kiosk_item::Entity::update_many()
                .col_expr(kiosk_item::Column::HeldBy, Expr::value(order_id))
                .filter(kiosk_item::Column::ItemId.eq(candidate.item_id.as_str()))
                .filter(kiosk_item::Column::HeldBy.is_null())
                .filter(kiosk_item::Column::Ready.eq(true))
                .exec(db)
                .await?;
            if taken.rows_affected == 1 {
                return Ok(Some(candidate.item_id));
            }
        }
    }
}

/// Holds one unit at `kiosk_id` that can take the reservation `ask` for `order_id` (the rule of
/// [`can_reserve`], mirrored in the conditional UPDATE: a drive, ready, held by no
/// order, of exactly the asked capacity); the unit's row id, or `None` when none is free.
pub(crate) async fn hold_reservable_unit<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    ask: &DriveAsk,
    order_id: &str,
) -> Result<Option<String>, DbErr> {
    if !ask.fits() {
        return Ok(None);
    }
    let drive = i32::from(common::ItemKind::Drive);
    let capacity = i64::try_from(ask.capacity_bytes).unwrap_or(i64::MAX);
    loop {
        let candidates: Vec<kiosk_item::Model> = kiosk_item::Entity::find()
            .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
            .filter(kiosk_item::Column::Kind.eq(drive))
            .filter(kiosk_item::Column::CapacityBytes.eq(capacity))
            .filter(kiosk_item::Column::Ready.eq(true))
            .filter(kiosk_item::Column::HeldBy.is_null())
            .limit(8)
            .all(db)
            .await?
            .into_iter()
            .filter(|row| can_reserve(&UnitFacts::from(row), ask))
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        for candidate in candidates {
            let taken = kiosk_item::Entity::update_many()
                .col_expr(kiosk_item::Column::HeldBy, Expr::value(order_id))
                .filter(kiosk_item::Column::ItemId.eq(candidate.item_id.as_str()))
                .filter(kiosk_item::Column::Kind.eq(drive))
                .filter(kiosk_item::Column::CapacityBytes.eq(capacity))
                .filter(kiosk_item::Column::Ready.eq(true))
                .filter(kiosk_item::Column::HeldBy.is_null())
                .exec(db)
                .await?;
            if taken.rows_affected == 1 {
                return Ok(Some(candidate.item_id));
            }
        }
    }
}

/// The kiosk pinned `item` for `order_id`: the order's hold moves to that drive (not ready: it
/// is pinned), whichever unit it held before. If another order held the pinned drive, that
/// order takes over the unit `order_id` held, so no order loses its unit to the kiosk's choice.
/// A drive another kiosk holds in a bay is not claimed (see [`claim_unit`]): the order keeps
/// the hold it has.
pub(crate) async fn pin_hold<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item: &common::Item,
    order_id: &str,
) -> Result<(), DbErr> {
    if claim_unit(db, kiosk_id, item, false, None, ClaimBy::Report).await? != Claim::Taken {
        return Ok(());
    }
    let other = kiosk_item::Entity::find_by_id(item.item_id.clone())
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .one(db)
        .await?
        .and_then(|row| row.held_by)
        .filter(|holder| holder != order_id);
    match other {
        Some(other) => {
            kiosk_item::Entity::update_many()
                .col_expr(kiosk_item::Column::HeldBy, Expr::value(other))
                .filter(kiosk_item::Column::HeldBy.eq(order_id))
                .exec(db)
                .await?;
        }
        None => release_hold(db, order_id).await?,
    }
    kiosk_item::Entity::update_many()
        .col_expr(kiosk_item::Column::HeldBy, Expr::value(order_id))
        .col_expr(kiosk_item::Column::Ready, Expr::value(false))
        .filter(kiosk_item::Column::ItemId.eq(item.item_id.as_str()))
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Releases whatever unit `order_id` holds.
pub(crate) async fn release_hold<C: ConnectionTrait>(db: &C, order_id: &str) -> Result<(), DbErr> {
    kiosk_item::Entity::update_many()
        .col_expr(
            kiosk_item::Column::HeldBy,
            Expr::value(Option::<String>::None),
        )
        .filter(kiosk_item::Column::HeldBy.eq(order_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Replaces a kiosk's units with a full inventory report, keeping the holds of units still
/// there. A held unit that vanished (it was just lent) takes its hold with it.
pub(crate) async fn replace_units<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    inventory: &gateway::Inventory,
) -> Result<(), DbErr> {
    let existing = kiosk_item::Entity::find()
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .all(db)
        .await?;
    let mut present = std::collections::HashSet::new();
    for bay in &inventory.bays {
        let Some(item) = &bay.item else { continue };
        if item.item_id.is_empty() {
            continue;
        }
        present.insert(item.item_id.clone());
        let held_by = existing
            .iter()
            .find(|row| row.item_id == item.item_id)
            .and_then(|row| row.held_by.clone());
        // A claim on another kiosk's unit is refused (and logged) inside; the rest go on.
        claim_unit(
            db,
            kiosk_id,
            item,
            lendable(bay.state, item),
            held_by,
            ClaimBy::Report,
        )
        .await?;
    }
    let gone: Vec<kiosk_item::Model> = existing
        .into_iter()
        .filter(|row| !present.contains(&row.item_id))
        .collect();
    if !gone.is_empty() {
        kiosk_item::Entity::delete_many()
            .filter(kiosk_item::Column::ItemId.is_in(gone.iter().map(|r| r.item_id.clone())))
            .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
            .exec(db)
            .await?;
    }
    // A held unit that left (most likely lent for its order, whose result is on its way)
    // passes its hold to another unit of the type if one is free: counting one unit too few
    // until the result arrives is safe, one too many is not.
    for row in gone {
        if let Some(order_id) = &row.held_by {
            hold_unit(db, kiosk_id, &type_of_row(&row), order_id).await?;
        }
    }
    Ok(())
}

/// What became of a kiosk's claim on an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The item is a unit of the claiming kiosk now.
    Taken,
    /// Another kiosk still holds the item in a bay: nothing changed.
    HeldElsewhere {
        /// The kiosk whose bay last reported it.
        holder: String,
    },
}

/// How a kiosk says an item is in its bay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimBy {
    /// Its inventory, or a drive it pinned.
    Report,
    /// A return into its bay at `at` (the kiosk's time): the item may have left the kiosk that
    /// holds it by a lend whose result is still on its way (that kiosk was offline after
    /// ejecting), so a unit held by an order of that kiosk with its lend in flight (a rental
    /// PAID, or any order DISPENSING) may be taken. Only such a unit: naming any other unit of
    /// a busy kiosk takes nothing. The hold moves with it until that lend's result releases
    /// it, and `at` is kept on the unit (see [`returned_since`]).
    Return {
        /// When the item came back, by the kiosk's clock as it reported it (unset when the
        /// kiosk did not say: then no late lend result is read against it).
        at: Option<DateTime<Utc>>,
    },
}

/// Records one item in a kiosk's bay (a report, a return, a pinned drive), replacing what was
/// known of it there except its hold: a hold is only ever set by `hold_unit` and cleared by
/// `release_hold`, so a report racing a hold cannot undo it.
///
/// The rule of who may claim an item: a kiosk takes an item that is at no kiosk (new, or
/// lent: its row went when it was lent) or is its own already; by a return also one held by
/// an order of its kiosk whose lend is in flight (see [`ClaimBy::Return`]). An item another kiosk holds in a
/// bay otherwise stays that kiosk's until that kiosk reports it gone (its next full inventory
/// without it, or its lend result); the claim is then not applied, only logged with both
/// kiosk ids and counted in `orders_unit_claims_refused_total`, and the claimant's next report
/// that still holds it takes it. The condition is part of the upsert (`ON CONFLICT DO UPDATE
/// ... WHERE kiosk_items.kiosk_id = <claimant> ...`), so no earlier read decides it.
pub(crate) async fn claim_unit<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item: &common::Item,
    ready: bool,
    held_by: Option<String>,
    by: ClaimBy,
) -> Result<Claim, DbErr> {
    let own = kiosk_item::Column::KioskId.eq(kiosk_id);
    let may_take = match by {
        ClaimBy::Report => own,
        ClaimBy::Return { .. } => own.or(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(order::Entity)
                .and_where(
                    Expr::col((order::Entity, order::Column::OrderId))
                        .equals((kiosk_item::Entity, kiosk_item::Column::HeldBy)),
                )
                .and_where(
                    Expr::col((order::Entity, order::Column::KioskId))
                        .equals((kiosk_item::Entity, kiosk_item::Column::KioskId)),
                )
                .cond_where(
                    Condition::any()
                        .add(order::Column::State.eq(OrderState::Dispensing.as_str()))
                        .add(
                            Condition::all()
                                .add(order::Column::State.eq(OrderState::Paid.as_str()))
                                .add(order::Column::Kind.eq(OrderKind::Rental.as_str())),
                        ),
                )
                .to_owned(),
        )),
    };
    let key = TypeKey::of_item(item);
    // A report keeps when the unit last came back; only a return says it again.
    let mut updated = vec![
        kiosk_item::Column::KioskId,
        kiosk_item::Column::Kind,
        kiosk_item::Column::CapacityBytes,
        kiosk_item::Column::ContentPackageId,
        kiosk_item::Column::Ready,
    ];
    if matches!(by, ClaimBy::Return { .. }) {
        updated.push(kiosk_item::Column::ReturnedAt);
    }
    let written = kiosk_item::Entity::insert(
        kiosk_item::Model {
            item_id: item.item_id.clone(),
            kiosk_id: kiosk_id.to_owned(),
            kind: key.kind,
            capacity_bytes: key.capacity_bytes,
            content_package_id: key.content_package_id,
            ready,
            held_by,
            returned_at: match by {
                ClaimBy::Report => None,
                ClaimBy::Return { at } => at,
            },
        }
        .into_active_model(),
    )
    .on_conflict(
        OnConflict::column(kiosk_item::Column::ItemId)
            .update_columns(updated)
            .action_and_where(may_take)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    if written > 0 {
        return Ok(Claim::Taken);
    }
    // Only to say who holds it: the decision was the upsert's.
    let holder = kiosk_item::Entity::find_by_id(item.item_id.clone())
        .one(db)
        .await?
        .map(|row| row.kiosk_id)
        .unwrap_or_default();
    tracing::warn!(
        kiosk_id,
        holder_kiosk_id = %holder,
        item_id = %item.item_id,
        "kiosk claims an item another kiosk holds in a bay; not applied"
    );
    metrics::counter!("orders_unit_claims_refused_total").increment(1);
    Ok(Claim::HeldElsewhere { holder })
}

/// An item lent under a LENT order came back to `kiosk_id`: a bay of another kiosk that still
/// claims it (a stale or false report: a lent item is in nobody's bay) lets go of it, its hold
/// passing to another unit of that kiosk as when a held unit leaves, so the return can take
/// it. Each drop is conditional on the row read (kiosk and hold), retried if a hold moved, at
/// most [`LET_GO_TRIES`] times: a claim that keeps moving under us ends in an error naming the
/// item (the event is then retried and, if it keeps failing, parked), never in a spin.
pub(crate) async fn let_go_of_lent_item<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item_id: &str,
) -> Result<(), DbErr> {
    for _ in 0..LET_GO_TRIES {
        let Some(row) = kiosk_item::Entity::find_by_id(item_id.to_owned())
            .one(db)
            .await?
            .filter(|row| row.kiosk_id != kiosk_id)
        else {
            return Ok(());
        };
        let held = match &row.held_by {
            Some(order_id) => kiosk_item::Column::HeldBy.eq(order_id.as_str()),
            None => kiosk_item::Column::HeldBy.is_null(),
        };
        let dropped = kiosk_item::Entity::delete_many()
            .filter(kiosk_item::Column::ItemId.eq(item_id))
            .filter(kiosk_item::Column::KioskId.eq(row.kiosk_id.as_str()))
            .filter(held)
            .exec(db)
            .await?;
        if dropped.rows_affected == 0 {
            continue;
        }
        tracing::warn!(
            kiosk_id,
            holder_kiosk_id = %row.kiosk_id,
            item_id,
            "a lent item came back to a kiosk while another kiosk's bay claimed it; claim dropped"
        );
        if let Some(order_id) = &row.held_by {
            hold_unit(db, &row.kiosk_id, &type_of_row(&row), order_id).await?;
        }
        return Ok(());
    }
    Err(DbErr::Custom(format!(
        "item {item_id} came back to kiosk {kiosk_id}, but another kiosk's claim on it changed {LET_GO_TRIES} times while it was being dropped; giving up on this try"
    )))
}

/// Tries of [`let_go_of_lent_item`] before it gives up: each failed try means another writer
/// moved the claim in between, which a handful of tries outlasts.
const LET_GO_TRIES: usize = 8;

/// Kiosk `kiosk_id` lent `item_id` for `order_id`: if another order held that very unit of
/// that kiosk, it takes over `order_id`'s hold instead, so no order loses its unit to the
/// kiosk's choice. Another kiosk's unit of that id is never looked at.
pub(crate) async fn hand_over_hold<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item_id: &str,
    order_id: &str,
) -> Result<(), DbErr> {
    let Some(other) = kiosk_item::Entity::find_by_id(item_id.to_owned())
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .one(db)
        .await?
        .and_then(|row| row.held_by)
        .filter(|holder| holder != order_id)
    else {
        return Ok(());
    };
    kiosk_item::Entity::update_many()
        .col_expr(kiosk_item::Column::HeldBy, Expr::value(other))
        .filter(kiosk_item::Column::HeldBy.eq(order_id))
        .exec(db)
        .await?;
    Ok(())
}

/// When `item_id` came back into kiosk `kiosk_id` by a return after `lent_at` (both by that
/// kiosk's clock), if it did: the kiosk's return of the item reached orders before the result
/// of the lend that took it out (its outbox replays after a reconnect can put a newer message
/// first), so the item is in that kiosk's bay again and must not be removed by the result.
pub(crate) async fn returned_since<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item_id: &str,
    lent_at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    Ok(kiosk_item::Entity::find_by_id(item_id.to_owned())
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .one(db)
        .await?
        .and_then(|row| row.returned_at)
        .filter(|back| *back >= lent_at))
}

/// An item left kiosk `kiosk_id` (lent): it is no unit of that kiosk any more. Whether it
/// was one (false: it was not, maybe another kiosk's, which stays).
pub(crate) async fn remove_unit<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item_id: &str,
) -> Result<bool, DbErr> {
    let removed = kiosk_item::Entity::delete_many()
        .filter(kiosk_item::Column::ItemId.eq(item_id))
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .exec(db)
        .await?;
    Ok(removed.rows_affected > 0)
}

/// Marks kiosk `kiosk_id`'s unit not lendable (that kiosk failed to hand it out) until a
/// report says otherwise; another kiosk's unit of that id is untouched.
pub(crate) async fn unit_not_ready<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item_id: &str,
) -> Result<(), DbErr> {
    kiosk_item::Entity::update_many()
        .col_expr(kiosk_item::Column::Ready, Expr::value(false))
        .filter(kiosk_item::Column::ItemId.eq(item_id))
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Marks kiosk `kiosk_id`'s unit lendable again as a blank drive (after that kiosk wiped it);
/// another kiosk's unit of that id is untouched.
pub(crate) async fn unit_wiped<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item_id: &str,
) -> Result<(), DbErr> {
    kiosk_item::Entity::update_many()
        .col_expr(kiosk_item::Column::Ready, Expr::value(true))
        .col_expr(kiosk_item::Column::ContentPackageId, Expr::value(""))
        .filter(kiosk_item::Column::ItemId.eq(item_id))
        .filter(kiosk_item::Column::KioskId.eq(kiosk_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Whether a returned item may be lent as it is: a drive that came back writable may hold
/// anything now and waits for a wipe; a write-protected drive is ready, a power bank once
/// charged enough.
pub fn ready_on_return(item: &common::Item) -> bool {
    !needs_wipe(item) && lendable(gateway::BayState::Ready.into(), item)
}

/// Whether a returned item must be wiped before it is lent again.
pub fn needs_wipe(item: &common::Item) -> bool {
    matches!(
        item.attributes.as_ref().and_then(|a| a.kind.as_ref()),
        Some(common::item_attributes::Kind::Drive(drive)) if !drive.write_protected
    )
}
