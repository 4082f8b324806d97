//! Kiosk profiles, price rules, and the unit view: which items each kiosk holds as far as
//! orders knows, and which units are held for orders.
//!
//! The unit view is advisory (the kiosk chooses what it lends) but holds are not: a hold is a
//! conditional update of one unit row (`held_by IS NULL`), so two orders can never hold the
//! same unit, and a kiosk's holds never outnumber its ready units of the type.

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;

use super::Store;
use crate::domain::reservable::{DriveAsk, UnitFacts, can_reserve};
use crate::entity::{kiosk, kiosk_item, pricing_rule};

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
pub(crate) async fn pin_hold<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item: &common::Item,
    order_id: &str,
) -> Result<(), DbErr> {
    put_unit(db, kiosk_id, item, false, None).await?;
    let other = kiosk_item::Entity::find_by_id(item.item_id.clone())
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
        put_unit(db, kiosk_id, item, lendable(bay.state, item), held_by).await?;
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

/// Records one item in a kiosk (a report, a return), replacing what was known of it anywhere
/// except its hold: a hold is only ever set by `hold_unit` and cleared by `release_hold`, so a
/// report racing a hold cannot undo it.
pub(crate) async fn put_unit<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    item: &common::Item,
    ready: bool,
    held_by: Option<String>,
) -> Result<(), DbErr> {
    let key = TypeKey::of_item(item);
    kiosk_item::Entity::insert(
        kiosk_item::Model {
            item_id: item.item_id.clone(),
            kiosk_id: kiosk_id.to_owned(),
            kind: key.kind,
            capacity_bytes: key.capacity_bytes,
            content_package_id: key.content_package_id,
            ready,
            held_by,
        }
        .into_active_model(),
    )
    .on_conflict(
        OnConflict::column(kiosk_item::Column::ItemId)
            .update_columns([
                kiosk_item::Column::KioskId,
                kiosk_item::Column::Kind,
                kiosk_item::Column::CapacityBytes,
                kiosk_item::Column::ContentPackageId,
                kiosk_item::Column::Ready,
            ])
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The kiosk lent `item_id` for `order_id`: if another order held that very unit, it takes
/// over `order_id`'s hold instead, so no order loses its unit to the kiosk's choice.
pub(crate) async fn hand_over_hold<C: ConnectionTrait>(
    db: &C,
    item_id: &str,
    order_id: &str,
) -> Result<(), DbErr> {
    let Some(other) = kiosk_item::Entity::find_by_id(item_id.to_owned())
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

/// An item left its kiosk (lent): it is no unit of any kiosk any more.
pub(crate) async fn remove_unit<C: ConnectionTrait>(db: &C, item_id: &str) -> Result<(), DbErr> {
    kiosk_item::Entity::delete_many()
        .filter(kiosk_item::Column::ItemId.eq(item_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Marks a unit not lendable (the kiosk failed to hand it out) until a report says otherwise.
pub(crate) async fn unit_not_ready<C: ConnectionTrait>(db: &C, item_id: &str) -> Result<(), DbErr> {
    kiosk_item::Entity::update_many()
        .col_expr(kiosk_item::Column::Ready, Expr::value(false))
        .filter(kiosk_item::Column::ItemId.eq(item_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Marks a unit lendable again as a blank drive (after a wipe).
pub(crate) async fn unit_wiped<C: ConnectionTrait>(db: &C, item_id: &str) -> Result<(), DbErr> {
    kiosk_item::Entity::update_many()
        .col_expr(kiosk_item::Column::Ready, Expr::value(true))
        .col_expr(kiosk_item::Column::ContentPackageId, Expr::value(""))
        .filter(kiosk_item::Column::ItemId.eq(item_id))
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
