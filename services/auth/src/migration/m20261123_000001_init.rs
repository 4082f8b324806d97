//! Users, sessions (refresh families and tokens), kiosk credentials, signing keys.

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
                    .table(Users::Table)
                    .if_not_exists()
                    .col(string(Users::Id).primary_key())
                    .col(string_uniq(Users::Email))
                    .col(text(Users::PasswordHash))
                    .col(string(Users::Role))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshFamilies::Table)
                    .if_not_exists()
                    .col(string(RefreshFamilies::FamilyId).primary_key())
                    .col(string(RefreshFamilies::UserId))
                    .col(timestamp_with_time_zone(RefreshFamilies::CreatedAt))
                    .col(timestamp_with_time_zone(RefreshFamilies::LastUsedAt))
                    .col(timestamp_with_time_zone_null(RefreshFamilies::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshFamilies::Table, RefreshFamilies::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .if_not_exists()
                    .col(string(RefreshTokens::TokenHash).primary_key())
                    .col(string(RefreshTokens::FamilyId))
                    .col(string(RefreshTokens::UserId))
                    .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
                    .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(RefreshTokens::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshTokens::Table, RefreshTokens::FamilyId)
                            .to(RefreshFamilies::Table, RefreshFamilies::FamilyId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshTokens::Table, RefreshTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_tokens_family")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::FamilyId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KioskCredentials::Table)
                    .if_not_exists()
                    .col(string(KioskCredentials::KioskId).primary_key())
                    .col(string(KioskCredentials::SecretHash))
                    .col(timestamp_with_time_zone(KioskCredentials::IssuedAt))
                    .col(string(KioskCredentials::IssuedBy))
                    .col(timestamp_with_time_zone_null(KioskCredentials::RevokedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .if_not_exists()
                    .col(string(SigningKeys::Kid).primary_key())
                    .col(string(SigningKeys::PrivateKey))
                    .col(string(SigningKeys::PublicKey))
                    .col(timestamp_with_time_zone(SigningKeys::NotBefore))
                    .col(timestamp_with_time_zone_null(SigningKeys::RetiredAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SigningKeys::Table.into_iden(),
            KioskCredentials::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            RefreshFamilies::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    FamilyId,
    UserId,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum RefreshFamilies {
    Table,
    FamilyId,
    UserId,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum KioskCredentials {
    Table,
    KioskId,
    SecretHash,
    IssuedAt,
    IssuedBy,
    RevokedAt,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    PrivateKey,
    PublicKey,
    NotBefore,
    RetiredAt,
}
