//! Which sealing key this database's QR secrets are sealed with, by fingerprint.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};

use super::Store;
use crate::entity::{kiosk, sealing_key};

impl Store {
    /// Records `fingerprint` as the key sealing `purpose` unless one is recorded already, and
    /// returns the recorded one: the first process's key wins, also between replicas starting
    /// at once (one insert lands, the others find it).
    pub async fn record_sealing_key(
        &self,
        purpose: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<String, sea_orm::DbErr> {
        let row = sealing_key::Model {
            purpose: purpose.to_owned(),
            fingerprint: fingerprint.to_owned(),
            recorded_at: now,
        };
        sealing_key::Entity::insert(row.into_active_model())
            .on_conflict(
                OnConflict::column(sealing_key::Column::Purpose)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        sealing_key::Entity::find_by_id(purpose.to_owned())
            .one(&self.db)
            .await?
            .map(|row| row.fingerprint)
            .ok_or_else(|| {
                sea_orm::DbErr::RecordNotFound(format!("sealing key of {purpose} after recording"))
            })
    }

    /// The fingerprint recorded for `purpose`, if any process recorded one yet.
    pub async fn recorded_sealing_key(
        &self,
        purpose: &str,
    ) -> Result<Option<String>, sea_orm::DbErr> {
        Ok(sealing_key::Entity::find_by_id(purpose.to_owned())
            .one(&self.db)
            .await?
            .map(|row| row.fingerprint))
    }

    /// One kiosk's sealed QR secret (the first by kiosk id), if any kiosk has one: what a key
    /// must open to be the one this database's secrets are sealed with.
    pub async fn a_sealed_qr_secret(&self) -> Result<Option<(String, Vec<u8>)>, sea_orm::DbErr> {
        Ok(kiosk::Entity::find()
            .filter(kiosk::Column::QrSecret.ne(Vec::<u8>::new()))
            .order_by_asc(kiosk::Column::KioskId)
            .one(&self.db)
            .await?
            .map(|row| (row.kiosk_id, row.qr_secret)))
    }
}
