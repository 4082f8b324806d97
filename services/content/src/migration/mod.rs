//! The content service's migrations, applied in order at startup on SQLite and Postgres alike.

use sea_orm_migration::prelude::*;

mod m20261129_000001_init;

/// Applies the content service's migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261129_000001_init::Migration)]
    }
}
