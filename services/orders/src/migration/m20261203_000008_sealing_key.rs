//! The fingerprint of the key that seals kiosks' QR secrets, recorded by the first orders
//! process to start on this database, so a replica (or a restart) with another key is refused
//! at startup instead of failing every scan.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SealingKeys::Table)
                    .if_not_exists()
                    .col(string(SealingKeys::Purpose).primary_key())
                    .col(string(SealingKeys::Fingerprint))
                    .col(timestamp_with_time_zone(SealingKeys::RecordedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SealingKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SealingKeys {
    Table,
    Purpose,
    Fingerprint,
    RecordedAt,
}
