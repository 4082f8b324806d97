//! Service credentials: how orders and content prove themselves to the other services.

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
                    .table(ServiceCredentials::Table)
                    .if_not_exists()
                    .col(string(ServiceCredentials::Service).primary_key())
                    .col(string(ServiceCredentials::SecretHash))
                    .col(timestamp_with_time_zone(ServiceCredentials::IssuedAt))
                    .col(string(ServiceCredentials::IssuedBy))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ServiceCredentials::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ServiceCredentials {
    Table,
    Service,
    SecretHash,
    IssuedAt,
    IssuedBy,
}
