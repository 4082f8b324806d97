//! FindKiosks' prefilter: kiosks by location, so a bounding box (`latitude BETWEEN ... AND
//! longitude BETWEEN ...`) is an index range scan, not a read of every kiosk.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The index's name (the store's tests look for it in query plans).
const INDEX: &str = "kiosks_by_location";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(INDEX)
                    .table(Kiosks::Table)
                    .col(Kiosks::Latitude)
                    .col(Kiosks::Longitude)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Kiosks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Kiosks {
    Table,
    Latitude,
    Longitude,
}
