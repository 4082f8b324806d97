//! The gateway's migrations, applied in order at startup on SQLite and Postgres alike.

use sea_orm_migration::prelude::*;

mod m20261123_000001_init;
mod m20261129_000002_refused_messages;
mod m20261130_000003_event_horizon;

/// Applies the gateway's migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_init::Migration),
            Box::new(m20261129_000002_refused_messages::Migration),
            Box::new(m20261130_000003_event_horizon::Migration),
        ]
    }
}
