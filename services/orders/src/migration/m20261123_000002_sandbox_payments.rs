//! The sandbox payment provider's records.

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
                    .table(SandboxPayments::Table)
                    .if_not_exists()
                    .col(string(SandboxPayments::IdempotencyKey).primary_key())
                    .col(string(SandboxPayments::Kind))
                    .col(string(SandboxPayments::PaymentId))
                    .col(string(SandboxPayments::Subject))
                    .col(big_integer(SandboxPayments::Amount))
                    .col(string(SandboxPayments::Currency))
                    .col(string(SandboxPayments::Outcome))
                    .col(timestamp_with_time_zone(SandboxPayments::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SandboxPayments::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SandboxPayments {
    Table,
    IdempotencyKey,
    Kind,
    PaymentId,
    Subject,
    Amount,
    Currency,
    Outcome,
    CreatedAt,
}
