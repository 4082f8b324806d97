//! The orders service's migrations, applied in order at startup on SQLite and Postgres alike.

use sea_orm_migration::prelude::*;

mod m20261123_000001_kiosk_views;
mod m20261123_000002_sandbox_payments;
mod m20261123_000003_rentals;
mod m20261129_000004_parked_events;
mod m20261201_000005_kiosks_by_location;
mod m20261201_000006_reservations;
mod m20261202_000007_write_protect;
mod m20261203_000008_sealing_key;
mod m20261204_000009_unit_returns;

/// Applies the orders service's migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_kiosk_views::Migration),
            Box::new(m20261123_000002_sandbox_payments::Migration),
            Box::new(m20261123_000003_rentals::Migration),
            Box::new(m20261129_000004_parked_events::Migration),
            Box::new(m20261201_000005_kiosks_by_location::Migration),
            Box::new(m20261201_000006_reservations::Migration),
            Box::new(m20261202_000007_write_protect::Migration),
            Box::new(m20261203_000008_sealing_key::Migration),
            Box::new(m20261204_000009_unit_returns::Migration),
        ]
    }
}
