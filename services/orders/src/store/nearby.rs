//! FindKiosks' reads: the kiosks in a bounding box (the SQL prefilter, served by the
//! `kiosks_by_location` index on (latitude, longitude)), and what the flow needs of the few it
//! shows: their units, their link state and their sites' price rules, each in one query.

use sea_orm::{ColumnTrait, Condition, DbErr, EntityTrait, QueryFilter, QueryOrder, Select};

use super::Store;
use crate::domain::geo::BoundingBox;
use crate::entity::{kiosk, kiosk_item, kiosk_view, pricing_rule};

/// The kiosks in service whose location is in `bounds`: `latitude BETWEEN south AND north AND
/// (longitude BETWEEN west AND east [OR ...])`, one range per side of the antimeridian.
pub(crate) fn in_box(bounds: &BoundingBox) -> Select<kiosk::Entity> {
    let longitudes = bounds
        .longitude_ranges()
        .iter()
        .fold(Condition::any(), |any, range| {
            any.add(kiosk::Column::Longitude.between(range.west, range.east))
        });
    kiosk::Entity::find()
        .filter(kiosk::Column::Latitude.between(bounds.south(), bounds.north()))
        .filter(longitudes)
        .filter(kiosk::Column::OutOfService.eq(false))
}

impl Store {
    /// The profiles of kiosks in service located in `bounds` (a superset of a search circle;
    /// the caller measures the distances).
    pub async fn kiosks_in_box(&self, bounds: &BoundingBox) -> Result<Vec<kiosk::Model>, DbErr> {
        in_box(bounds).all(&self.db).await
    }

    /// Every unit at these kiosks, whatever its state.
    pub async fn units_at(&self, kiosk_ids: &[String]) -> Result<Vec<kiosk_item::Model>, DbErr> {
        kiosk_item::Entity::find()
            .filter(kiosk_item::Column::KioskId.is_in(kiosk_ids.iter().cloned()))
            .order_by_asc(kiosk_item::Column::ItemId)
            .all(&self.db)
            .await
    }

    /// The link view of these kiosks (those that ever connected).
    pub async fn kiosk_views(&self, kiosk_ids: &[String]) -> Result<Vec<kiosk_view::Model>, DbErr> {
        kiosk_view::Entity::find()
            .filter(kiosk_view::Column::KioskId.is_in(kiosk_ids.iter().cloned()))
            .all(&self.db)
            .await
    }

    /// The price rules that may apply at any of these sites: theirs and the network-wide ones.
    pub async fn pricing_rules_of_sites(
        &self,
        site_ids: &[String],
    ) -> Result<Vec<pricing_rule::Model>, DbErr> {
        pricing_rule::Entity::find()
            .filter(
                pricing_rule::Column::SiteId.is_in(site_ids.iter().cloned().chain([String::new()])),
            )
            .all(&self.db)
            .await
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement, TransactionTrait};
    use sneakernet_runtime::Config;
    use sneakernet_runtime::testing::{Backend, backends};

    use super::*;
    use crate::domain::geo::{Coordinates, Radius};

    async fn store(backend: &Backend, dir: &std::path::Path) -> Store {
        let mut config = Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        };
        backend.configure(&mut config);
        let db = sneakernet_runtime::db::open_and_migrate::<crate::migration::Migrator>(
            &config, "orders",
        )
        .await
        .unwrap_or_else(|e| panic!("{backend}: {e}"));
        Store::new(db)
    }

    async fn kiosk_at(store: &Store, id: &str, latitude: f64, longitude: f64, in_service: bool) {
        let now = chrono::Utc::now();
        store
            .register_kiosk(kiosk::Model {
                kiosk_id: id.into(),
                site_id: format!("site-{id}"),
                site_name: id.into(),
                latitude,
                longitude,
                qr_secret: vec![0; 32],
                out_of_service: !in_service,
                registered_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
    }

    fn boxed(latitude: f64, longitude: f64, meters: u32) -> BoundingBox {
        BoundingBox::around(
            Coordinates::new(latitude, longitude).unwrap(),
            Radius::from_meters(meters).unwrap(),
        )
    }

    async fn found(store: &Store, bounds: &BoundingBox) -> Vec<String> {
        let mut ids: Vec<String> = store
            .kiosks_in_box(bounds)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kiosk_id)
            .collect();
        ids.sort();
        ids
    }

    /// The database, not the distance math, leaves out what is outside the box: every kiosk
    /// asked about here is compared with the box alone (no distance is computed), and the
    /// rows returned are exactly those in it.
    #[tokio::test]
    async fn the_sql_prefilter_returns_exactly_the_kiosks_in_the_box() {
        for backend in backends() {
            let dir = tempfile::tempdir().unwrap();
            let store = store(&backend, dir.path()).await;
            let kiosks = [
                ("berlin-hbf", 52.5251, 13.3694, true),
                ("berlin-ost", 52.5105, 13.4346, true),
                ("berlin-closed", 52.5200, 13.4000, false),
                ("potsdam", 52.3906, 13.0645, true),
                ("hamburg", 53.5511, 9.9937, true),
                ("taveuni-west", -16.8, 179.99, true),
                ("taveuni-east", -16.8, -179.99, true),
                ("suva", -18.1416, 178.4419, true),
                ("north-pole-a", 89.9, 0.0, true),
                ("north-pole-b", 89.9, 180.0, true),
                ("north-pole-c", 89.95, -90.0, true),
                ("svalbard", 78.2232, 15.6267, true),
            ];
            for (id, lat, lon, in_service) in kiosks {
                kiosk_at(&store, id, lat, lon, in_service).await;
            }
            let cases = [
                (
                    boxed(52.5219, 13.4132, 5_000),
                    vec!["berlin-hbf", "berlin-ost"],
                ),
                (
                    boxed(52.5219, 13.4132, 50_000),
                    vec!["berlin-hbf", "berlin-ost", "potsdam"],
                ),
                (
                    boxed(-16.8, -179.99, 10_000),
                    vec!["taveuni-east", "taveuni-west"],
                ),
                (
                    boxed(-16.8, 179.99, 10_000),
                    vec!["taveuni-east", "taveuni-west"],
                ),
                (
                    boxed(89.95, 45.0, 50_000),
                    vec!["north-pole-a", "north-pole-b", "north-pole-c"],
                ),
                (boxed(0.0, 0.0, 50_000), vec![]),
            ];
            for (bounds, expected) in cases {
                let by_the_box: Vec<&str> = kiosks
                    .iter()
                    .filter(|(_, lat, lon, in_service)| {
                        *in_service && bounds.contains(Coordinates::new(*lat, *lon).unwrap())
                    })
                    .map(|(id, ..)| *id)
                    .collect();
                let mut expected_sorted = expected.clone();
                expected_sorted.sort();
                let mut by_the_box = by_the_box.clone();
                by_the_box.sort();
                assert_eq!(by_the_box, expected_sorted, "{backend}: {bounds:?}");
                assert_eq!(
                    found(&store, &bounds).await,
                    expected_sorted,
                    "{backend}: {bounds:?}"
                );
            }
        }
    }

    /// The prefilter's WHERE is on the indexed columns, and with a fleet spread over the
    /// world and the database's statistics taken, the database serves it from the index:
    /// SQLite's plan searches `kiosks_by_location`; Postgres, told not to scan whole tables,
    /// finds the index usable.
    #[tokio::test]
    async fn the_prefilter_is_served_by_the_location_index() {
        for backend in backends() {
            let dir = tempfile::tempdir().unwrap();
            let store = store(&backend, dir.path()).await;
            let db_backend = store.db.get_database_backend();
            let now = chrono::Utc::now();
            let fleet: Vec<kiosk::ActiveModel> = (0..600)
                .map(|n| {
                    sea_orm::IntoActiveModel::into_active_model(kiosk::Model {
                        kiosk_id: format!("K-{n}"),
                        site_id: format!("site-{n}"),
                        site_name: format!("Kiosk {n}"),
                        latitude: f64::from(n % 30) * 5.8 - 84.0,
                        longitude: f64::from(n / 30) * 17.9 - 179.0,
                        qr_secret: vec![0; 32],
                        out_of_service: false,
                        registered_at: now,
                        updated_at: now,
                    })
                })
                .collect();
            kiosk::Entity::insert_many(fleet)
                .exec_without_returning(&store.db)
                .await
                .unwrap();
            for bounds in [boxed(52.5, 13.4, 50_000), boxed(-16.8, 179.99, 50_000)] {
                let statement = in_box(&bounds).build(db_backend);
                let sql = statement.sql.clone();
                assert!(sql.contains(r#""latitude" BETWEEN"#), "{sql}");
                assert_eq!(
                    sql.matches(r#""longitude" BETWEEN"#).count(),
                    bounds.longitude_ranges().len(),
                    "{sql}"
                );
                // One transaction, so the statistics and the plan are of one connection.
                let txn = store.db.begin().await.unwrap();
                txn.execute_unprepared("ANALYZE").await.unwrap();
                let (explain, column) = match db_backend {
                    DbBackend::Sqlite => (
                        Statement::from_string(
                            db_backend,
                            format!("EXPLAIN QUERY PLAN {statement}"),
                        ),
                        "detail",
                    ),
                    _ => {
                        txn.execute_unprepared("SET LOCAL enable_seqscan = off")
                            .await
                            .unwrap();
                        let explain = Statement::from_sql_and_values(
                            db_backend,
                            format!("EXPLAIN {sql}"),
                            statement.values.clone().map(|v| v.0).unwrap_or_default(),
                        );
                        (explain, "QUERY PLAN")
                    }
                };
                let plan = txn
                    .query_all_raw(explain)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.try_get::<String>("", column).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n");
                txn.rollback().await.unwrap();
                assert!(
                    plan.contains("kiosks_by_location"),
                    "{backend}: the plan of {sql} does not use the index:\n{plan}"
                );
            }
        }
    }
}
