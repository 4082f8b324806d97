//! Kiosk messages refused at the gateway's edge, kept for operators.

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
                    .table(RefusedMessages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RefusedMessages::Id))
                    .col(string(RefusedMessages::KioskId))
                    .col(string(RefusedMessages::MessageId))
                    .col(timestamp_with_time_zone(RefusedMessages::ReceivedAt))
                    .col(string(RefusedMessages::Field))
                    .col(text(RefusedMessages::Reason))
                    .col(blob(RefusedMessages::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refused_messages_kiosk_message")
                    .table(RefusedMessages::Table)
                    .col(RefusedMessages::KioskId)
                    .col(RefusedMessages::MessageId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RefusedMessages::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum RefusedMessages {
    Table,
    Id,
    KioskId,
    MessageId,
    ReceivedAt,
    Field,
    Reason,
    Body,
}
