//! When a unit last came back into its kiosk by a return (the kiosk's time), so a lend result
//! that reaches orders after the return of the very item it lent (the kiosk's outbox replayed
//! them out of order) is read as lent and returned, not as an item that left.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(KioskItems::Table)
                    .add_column_if_not_exists(timestamp_with_time_zone_null(KioskItems::ReturnedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(KioskItems::Table)
                    .drop_column(KioskItems::ReturnedAt)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum KioskItems {
    Table,
    ReturnedAt,
}
