//! Packages, their files, the chunks of each file, and the chunk index.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates the packages, package_files, file_chunks and chunks tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Packages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Packages::Seq))
                    .col(string_uniq(Packages::PackageId))
                    .col(text(Packages::Title))
                    .col(text(Packages::Description))
                    .col(string(Packages::State))
                    .col(big_integer(Packages::ChunkSize))
                    .col(big_integer(Packages::TotalSize))
                    .col(integer(Packages::FileCount))
                    .col(string(Packages::CreatedBy))
                    .col(string(Packages::IdempotencyKey))
                    .col(string(Packages::RequestHash))
                    .col(timestamp_with_time_zone(Packages::CreatedAt))
                    .col(timestamp_with_time_zone_null(Packages::ReadyAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "packages_idempotency",
            Packages::Table,
            [Packages::CreatedBy, Packages::IdempotencyKey],
            true,
        )
        .await?;
        index(
            manager,
            "packages_by_state",
            Packages::Table,
            [Packages::State, Packages::Seq],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(PackageFiles::Table)
                    .if_not_exists()
                    .col(string(PackageFiles::PackageId))
                    .col(integer(PackageFiles::FileIndex))
                    .col(text(PackageFiles::Path))
                    .col(big_integer(PackageFiles::Size))
                    .col(string(PackageFiles::Blake3))
                    .col(big_integer(PackageFiles::BytesStored))
                    .col(boolean(PackageFiles::Complete))
                    .col(string_null(PackageFiles::StagingKey))
                    .col(string_null(PackageFiles::Writer))
                    .col(timestamp_with_time_zone_null(PackageFiles::WriterUntil))
                    .primary_key(
                        Index::create()
                            .col(PackageFiles::PackageId)
                            .col(PackageFiles::FileIndex),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "package_files_by_path",
            PackageFiles::Table,
            [PackageFiles::PackageId, PackageFiles::Path],
            true,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(FileChunks::Table)
                    .if_not_exists()
                    .col(string(FileChunks::PackageId))
                    .col(integer(FileChunks::FileIndex))
                    .col(big_integer(FileChunks::ChunkIndex))
                    .col(string(FileChunks::Hash))
                    .col(big_integer(FileChunks::Size))
                    .primary_key(
                        Index::create()
                            .col(FileChunks::PackageId)
                            .col(FileChunks::FileIndex)
                            .col(FileChunks::ChunkIndex),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "file_chunks_by_hash",
            FileChunks::Table,
            [FileChunks::PackageId, FileChunks::Hash],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(Chunks::Table)
                    .if_not_exists()
                    .col(string(Chunks::Hash).primary_key())
                    .col(big_integer(Chunks::Size))
                    .col(timestamp_with_time_zone(Chunks::StoredAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Chunks::Table.into_iden(),
            FileChunks::Table.into_iden(),
            PackageFiles::Table.into_iden(),
            Packages::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Creates index `name` on `columns` of `table` (unique if asked), unless it exists.
async fn index<T, C>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: impl IntoIterator<Item = C>,
    unique: bool,
) -> Result<(), DbErr>
where
    T: IntoIden,
    C: IntoIndexColumn,
{
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for column in columns {
        index.col(column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

#[derive(DeriveIden)]
enum Packages {
    Table,
    Seq,
    PackageId,
    Title,
    Description,
    State,
    ChunkSize,
    TotalSize,
    FileCount,
    CreatedBy,
    IdempotencyKey,
    RequestHash,
    CreatedAt,
    ReadyAt,
}

#[derive(DeriveIden)]
enum PackageFiles {
    Table,
    PackageId,
    FileIndex,
    Path,
    Size,
    Blake3,
    BytesStored,
    Complete,
    StagingKey,
    Writer,
    WriterUntil,
}

#[derive(DeriveIden)]
enum FileChunks {
    Table,
    PackageId,
    FileIndex,
    ChunkIndex,
    Hash,
    Size,
}

#[derive(DeriveIden)]
enum Chunks {
    Table,
    Hash,
    Size,
    StoredAt,
}
