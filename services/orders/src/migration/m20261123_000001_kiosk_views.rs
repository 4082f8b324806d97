//! The kiosk view fed by gateway events, and the consumers' cursors.

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
                    .table(KioskViews::Table)
                    .if_not_exists()
                    .col(string(KioskViews::KioskId).primary_key())
                    .col(boolean(KioskViews::Online))
                    .col(string(KioskViews::AgentVersion))
                    .col(timestamp_with_time_zone(KioskViews::LastSeenAt))
                    .col(blob(KioskViews::Inventory))
                    .col(big_integer(KioskViews::Cursor))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EventCursors::Table)
                    .if_not_exists()
                    .col(string(EventCursors::Consumer).primary_key())
                    .col(big_integer(EventCursors::Cursor))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventCursors::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(KioskViews::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum KioskViews {
    Table,
    KioskId,
    Online,
    AgentVersion,
    LastSeenAt,
    Inventory,
    Cursor,
}

#[derive(DeriveIden)]
enum EventCursors {
    Table,
    Consumer,
    Cursor,
}
