//! Rentals and money: kiosk profiles, price rules, the unit view with holds, accounts,
//! deposits, offers, orders and their change history, payment attempts, the ledger, and the
//! outbox of kiosk commands.

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
                    .table(Kiosks::Table)
                    .if_not_exists()
                    .col(string(Kiosks::KioskId).primary_key())
                    .col(string(Kiosks::SiteId))
                    .col(string(Kiosks::SiteName))
                    .col(double(Kiosks::Latitude))
                    .col(double(Kiosks::Longitude))
                    .col(blob(Kiosks::QrSecret))
                    .col(boolean(Kiosks::OutOfService))
                    .col(timestamp_with_time_zone(Kiosks::RegisteredAt))
                    .col(timestamp_with_time_zone(Kiosks::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PricingRules::Table)
                    .if_not_exists()
                    .col(string(PricingRules::RuleKey).primary_key())
                    .col(string(PricingRules::SiteId))
                    .col(integer(PricingRules::Kind))
                    .col(big_integer(PricingRules::CapacityBytes))
                    .col(string(PricingRules::ContentPackageId))
                    .col(blob(PricingRules::Pricing))
                    .col(timestamp_with_time_zone(PricingRules::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KioskItems::Table)
                    .if_not_exists()
                    .col(string(KioskItems::ItemId).primary_key())
                    .col(string(KioskItems::KioskId))
                    .col(integer(KioskItems::Kind))
                    .col(big_integer(KioskItems::CapacityBytes))
                    .col(string(KioskItems::ContentPackageId))
                    .col(boolean(KioskItems::Ready))
                    .col(string_null(KioskItems::HeldBy))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("kiosk_items_by_kiosk")
                    .table(KioskItems::Table)
                    .col(KioskItems::KioskId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .if_not_exists()
                    .col(string(Accounts::UserId).primary_key())
                    .col(string(Accounts::CardToken))
                    .col(string_null(Accounts::DepositId))
                    .col(string_null(Accounts::OpenOrderId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deposits::Table)
                    .if_not_exists()
                    .col(string(Deposits::DepositId).primary_key())
                    .col(string(Deposits::UserId))
                    .col(big_integer(Deposits::Amount))
                    .col(string(Deposits::Currency))
                    .col(string(Deposits::State))
                    .col(big_integer(Deposits::Withheld))
                    .col(big_integer(Deposits::Refunded))
                    .col(string(Deposits::ChargeId))
                    .col(string(Deposits::IdempotencyKey))
                    .col(string_null(Deposits::RefundKey))
                    .col(timestamp_with_time_zone(Deposits::PaidAt))
                    .col(timestamp_with_time_zone_null(Deposits::RefundedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deposits_by_user_key")
                    .table(Deposits::Table)
                    .col(Deposits::UserId)
                    .col(Deposits::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Offers::Table)
                    .if_not_exists()
                    .col(string(Offers::OfferId).primary_key())
                    .col(string(Offers::UserId))
                    .col(string(Offers::KioskId))
                    .col(timestamp_with_time_zone(Offers::ExpiresAt))
                    .col(blob(Offers::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .if_not_exists()
                    .col(string(Orders::OrderId).primary_key())
                    .col(string(Orders::UserId))
                    .col(string(Orders::Kind))
                    .col(string(Orders::State))
                    .col(string(Orders::StateReason))
                    .col(string(Orders::KioskId))
                    .col(blob(Orders::Choice))
                    .col(string(Orders::ItemId))
                    .col(string(Orders::ReturnedKioskId))
                    .col(boolean(Orders::WriteProtected))
                    .col(blob(Orders::Pricing))
                    .col(big_integer(Orders::Price))
                    .col(string(Orders::Currency))
                    .col(big_integer(Orders::AmountCharged))
                    .col(big_integer(Orders::AmountRefunded))
                    .col(string(Orders::IdempotencyKey))
                    .col(string(Orders::RequestHash))
                    .col(string(Orders::ChargeId))
                    .col(string(Orders::CardToken))
                    .col(string_null(Orders::CommandId))
                    .col(string_null(Orders::LateItemId))
                    .col(boolean(Orders::LostFeeCharged))
                    .col(big_integer(Orders::Version))
                    .col(timestamp_with_time_zone(Orders::Deadline))
                    .col(timestamp_with_time_zone(Orders::CreatedAt))
                    .col(timestamp_with_time_zone(Orders::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Orders::LentAt))
                    .col(timestamp_with_time_zone_null(Orders::DueAt))
                    .col(timestamp_with_time_zone_null(Orders::ReturnedAt))
                    .col(timestamp_with_time_zone_null(Orders::ClosedAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols, unique) in [
            (
                "orders_by_user_key",
                vec![Orders::UserId, Orders::IdempotencyKey],
                true,
            ),
            (
                "orders_by_user_created",
                vec![Orders::UserId, Orders::CreatedAt],
                false,
            ),
            (
                "orders_by_state",
                vec![Orders::State, Orders::Deadline],
                false,
            ),
            ("orders_by_item", vec![Orders::ItemId], false),
        ] {
            let mut index = Index::create();
            index.name(name).table(Orders::Table).if_not_exists();
            for col in cols {
                index.col(col);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(OrderChanges::Table)
                    .if_not_exists()
                    .col(string(OrderChanges::OrderId))
                    .col(big_integer(OrderChanges::Version))
                    .col(string(OrderChanges::Reason))
                    .col(timestamp_with_time_zone(OrderChanges::At))
                    .col(blob(OrderChanges::Snapshot))
                    .primary_key(
                        Index::create()
                            .col(OrderChanges::OrderId)
                            .col(OrderChanges::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PaymentAttempts::Table)
                    .if_not_exists()
                    .col(string(PaymentAttempts::PaymentKey).primary_key())
                    .col(string(PaymentAttempts::UserId))
                    .col(string(PaymentAttempts::Purpose))
                    .col(string(PaymentAttempts::SubjectId))
                    .col(string(PaymentAttempts::RequestHash))
                    .col(big_integer(PaymentAttempts::Amount))
                    .col(string(PaymentAttempts::Currency))
                    .col(string(PaymentAttempts::CardToken))
                    .col(string(PaymentAttempts::State))
                    .col(string(PaymentAttempts::ChargeId))
                    .col(string(PaymentAttempts::HeldItem))
                    .col(timestamp_with_time_zone(PaymentAttempts::CreatedAt))
                    .col(timestamp_with_time_zone(PaymentAttempts::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LedgerTransactions::Table)
                    .if_not_exists()
                    .col(string(LedgerTransactions::TxnId).primary_key())
                    .col(string(LedgerTransactions::OrderId))
                    .col(string(LedgerTransactions::DepositId))
                    .col(string(LedgerTransactions::Movement))
                    .col(big_integer(LedgerTransactions::Amount))
                    .col(string(LedgerTransactions::Currency))
                    .col(string(LedgerTransactions::PaymentKey))
                    .col(timestamp_with_time_zone(LedgerTransactions::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ledger_transactions_by_order")
                    .table(LedgerTransactions::Table)
                    .col(LedgerTransactions::OrderId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LedgerEntries::Table)
                    .if_not_exists()
                    .col(
                        big_integer(LedgerEntries::EntryId)
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(LedgerEntries::TxnId))
                    .col(string(LedgerEntries::Account))
                    .col(big_integer(LedgerEntries::Amount))
                    .col(string(LedgerEntries::Currency))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_integer(Outbox::OutboxId).auto_increment().primary_key())
                    .col(string(Outbox::KioskId))
                    .col(string(Outbox::IdempotencyKey))
                    .col(string(Outbox::OrderId))
                    .col(blob(Outbox::Payload))
                    .col(timestamp_with_time_zone(Outbox::Deadline))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::SentAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Outbox::Table.into_iden(),
            LedgerEntries::Table.into_iden(),
            LedgerTransactions::Table.into_iden(),
            PaymentAttempts::Table.into_iden(),
            OrderChanges::Table.into_iden(),
            Orders::Table.into_iden(),
            Offers::Table.into_iden(),
            Deposits::Table.into_iden(),
            Accounts::Table.into_iden(),
            KioskItems::Table.into_iden(),
            PricingRules::Table.into_iden(),
            Kiosks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Kiosks {
    Table,
    KioskId,
    SiteId,
    SiteName,
    Latitude,
    Longitude,
    QrSecret,
    OutOfService,
    RegisteredAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PricingRules {
    Table,
    RuleKey,
    SiteId,
    Kind,
    CapacityBytes,
    ContentPackageId,
    Pricing,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum KioskItems {
    Table,
    ItemId,
    KioskId,
    Kind,
    CapacityBytes,
    ContentPackageId,
    Ready,
    HeldBy,
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    UserId,
    CardToken,
    DepositId,
    OpenOrderId,
}

#[derive(DeriveIden)]
enum Deposits {
    Table,
    DepositId,
    UserId,
    Amount,
    Currency,
    State,
    Withheld,
    Refunded,
    ChargeId,
    IdempotencyKey,
    RefundKey,
    PaidAt,
    RefundedAt,
}

#[derive(DeriveIden)]
enum Offers {
    Table,
    OfferId,
    UserId,
    KioskId,
    ExpiresAt,
    Body,
}

#[derive(DeriveIden, Clone, Copy)]
enum Orders {
    Table,
    OrderId,
    UserId,
    Kind,
    State,
    StateReason,
    KioskId,
    Choice,
    ItemId,
    ReturnedKioskId,
    WriteProtected,
    Pricing,
    Price,
    Currency,
    AmountCharged,
    AmountRefunded,
    IdempotencyKey,
    RequestHash,
    ChargeId,
    CardToken,
    CommandId,
    LateItemId,
    LostFeeCharged,
    Version,
    Deadline,
    CreatedAt,
    UpdatedAt,
    LentAt,
    DueAt,
    ReturnedAt,
    ClosedAt,
}

#[derive(DeriveIden)]
enum OrderChanges {
    Table,
    OrderId,
    Version,
    Reason,
    At,
    Snapshot,
}

#[derive(DeriveIden)]
enum PaymentAttempts {
    Table,
    PaymentKey,
    UserId,
    Purpose,
    SubjectId,
    RequestHash,
    Amount,
    Currency,
    CardToken,
    State,
    ChargeId,
    HeldItem,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum LedgerTransactions {
    Table,
    TxnId,
    OrderId,
    DepositId,
    Movement,
    Amount,
    Currency,
    PaymentKey,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LedgerEntries {
    Table,
    EntryId,
    TxnId,
    Account,
    Amount,
    Currency,
}

#[derive(DeriveIden)]
#[allow(clippy::enum_variant_names)]
enum Outbox {
    Table,
    OutboxId,
    KioskId,
    IdempotencyKey,
    OrderId,
    Payload,
    Deadline,
    CreatedAt,
    SentAt,
}
