//! How far the event log was pruned: one row holding the newest cursor deleted, so Subscribe
//! can tell a cursor that lost events to retention from one that merely sits in a gap of the
//! cursor sequence.

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
                    .table(EventHorizon::Table)
                    .if_not_exists()
                    .col(integer(EventHorizon::Id).primary_key())
                    .col(big_integer(EventHorizon::PrunedThrough))
                    .to_owned(),
            )
            .await?;
        // The one row exists from the start, so pruners only ever update it.
        manager
            .get_connection()
            .execute_unprepared("INSERT INTO event_horizon (id, pruned_through) VALUES (1, 0)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventHorizon::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum EventHorizon {
    Table,
    Id,
    PrunedThrough,
}
