//! Gateway events a consumer could not apply, parked for operators.

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
                    .table(ParkedEvents::Table)
                    .if_not_exists()
                    .col(big_integer(ParkedEvents::Cursor).primary_key())
                    .col(string(ParkedEvents::Consumer))
                    .col(string(ParkedEvents::KioskId))
                    .col(blob(ParkedEvents::Event))
                    .col(text(ParkedEvents::Error))
                    .col(integer(ParkedEvents::Attempts))
                    .col(timestamp_with_time_zone(ParkedEvents::ParkedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ParkedEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ParkedEvents {
    Table,
    Cursor,
    Consumer,
    KioskId,
    Event,
    Error,
    Attempts,
    ParkedAt,
}
