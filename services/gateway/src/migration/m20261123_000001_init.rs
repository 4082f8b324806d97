//! The command log, the event log, kiosks and delivered kiosk messages.

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
                    .table(Commands::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Commands::Seq))
                    .col(string_uniq(Commands::CommandId))
                    .col(string(Commands::KioskId))
                    .col(string(Commands::RequestedBy))
                    .col(string(Commands::IdempotencyKey))
                    .col(string(Commands::RequestHash))
                    .col(string(Commands::Kind))
                    .col(blob(Commands::Payload))
                    .col(string(Commands::State))
                    .col(integer(Commands::Attempts))
                    .col(timestamp_with_time_zone(Commands::Deadline))
                    .col(timestamp_with_time_zone(Commands::CreatedAt))
                    .col(timestamp_with_time_zone(Commands::UpdatedAt))
                    .col(blob_null(Commands::Result))
                    .col(blob_null(Commands::Progress))
                    .col(boolean(Commands::LateResult))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("commands_idempotency")
                    .table(Commands::Table)
                    .col(Commands::RequestedBy)
                    .col(Commands::KioskId)
                    .col(Commands::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("commands_pending")
                    .table(Commands::Table)
                    .col(Commands::KioskId)
                    .col(Commands::State)
                    .col(Commands::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("commands_deadline")
                    .table(Commands::Table)
                    .col(Commands::State)
                    .col(Commands::Deadline)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Events::Cursor))
                    .col(string(Events::KioskId))
                    .col(string(Events::Kind))
                    .col(timestamp_with_time_zone(Events::OccurredAt))
                    .col(blob(Events::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Kiosks::Table)
                    .if_not_exists()
                    .col(string(Kiosks::KioskId).primary_key())
                    .col(boolean(Kiosks::Online))
                    .col(string(Kiosks::SessionId))
                    .col(string(Kiosks::AgentVersion))
                    .col(timestamp_with_time_zone(Kiosks::LastSeenAt))
                    .col(blob(Kiosks::Inventory))
                    .col(string(Kiosks::LastFinishedCommandId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KioskMessages::Table)
                    .if_not_exists()
                    .col(string(KioskMessages::KioskId))
                    .col(string(KioskMessages::MessageId))
                    .col(timestamp_with_time_zone(KioskMessages::ReceivedAt))
                    .primary_key(
                        Index::create()
                            .col(KioskMessages::KioskId)
                            .col(KioskMessages::MessageId),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            KioskMessages::Table.into_iden(),
            Kiosks::Table.into_iden(),
            Events::Table.into_iden(),
            Commands::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Commands {
    Table,
    Seq,
    CommandId,
    KioskId,
    RequestedBy,
    IdempotencyKey,
    RequestHash,
    Kind,
    Payload,
    State,
    Attempts,
    Deadline,
    CreatedAt,
    UpdatedAt,
    Result,
    Progress,
    LateResult,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Cursor,
    KioskId,
    Kind,
    OccurredAt,
    Body,
}

#[derive(DeriveIden)]
enum Kiosks {
    Table,
    KioskId,
    Online,
    SessionId,
    AgentVersion,
    LastSeenAt,
    Inventory,
    LastFinishedCommandId,
}

#[derive(DeriveIden)]
enum KioskMessages {
    Table,
    KioskId,
    MessageId,
    ReceivedAt,
}
