//! The auth service's queries. Every multi-row change is one transaction; every race (two
//! refreshes of one token, two registrations of one email) is settled by a conditional update
//! or a unique key, never by read-then-write.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    SqlErr,
};
use sneakernet_runtime::{DeviceId, Role};

use crate::entity::{
    kiosk_credential, refresh_family, refresh_token, service_credential, signing_key, user,
};

use crate::error::AuthError;
use crate::tokens::KeyMaterial;

/// The key id of the first signing key of a fresh database.
pub const FIRST_KEY_ID: &str = "initial";

/// A refresh token to store: its hash, session and lifetime.
#[derive(Clone, Debug)]
pub struct NewRefreshToken {
    /// BLAKE3 of the opaque token.
    pub token_hash: String,
    /// The session (family) it belongs to.
    pub family_id: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// A spent refresh token's owner, returned by a successful rotation.
#[derive(Clone, Debug)]
pub struct Rotated {
    /// The account.
    pub user: user::Model,
}

/// The auth service's database.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Wraps an opened, migrated connection.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Every stored signing key.
    pub async fn signing_keys(&self) -> Result<Vec<KeyMaterial>, AuthError> {
        let rows = signing_key::Entity::find().all(&self.db).await?;
        rows.iter()
            .map(|r| KeyMaterial::from_row(r).map_err(AuthError::from))
            .collect()
    }

    /// Every stored signing key, after creating one that signs from `now` if no key is
    /// unretired (first start, or every key retired by hand).
    pub async fn signing_keys_or_first(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<KeyMaterial>, AuthError> {
        let keys = self.signing_keys().await?;
        if keys.iter().any(|k| k.retired_at.is_none()) {
            return Ok(keys);
        }
        let mut key = KeyMaterial::generate(now)?;
        if keys.is_empty() {
            // Replicas starting together on an empty database race to create the first key;
            // a fixed id makes them converge on one (the losers' inserts do nothing).
            key.kid = FIRST_KEY_ID.to_owned();
        }
        let inserted = signing_key::Entity::insert(key.to_row().into_active_model())
            .on_conflict(
                OnConflict::column(signing_key::Column::Kid)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        if inserted == 1 {
            tracing::info!(kid = %key.kid, "generated a new token signing key");
        }
        self.signing_keys().await
    }

    /// Rotates the signing key: a new key that signs from `switch_at` on, and every unretired
    /// key retired at that same instant, in one transaction.
    pub async fn rotate_signing_key(
        &self,
        switch_at: DateTime<Utc>,
    ) -> Result<KeyMaterial, AuthError> {
        let key = KeyMaterial::generate(switch_at)?;
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        signing_key::Entity::update_many()
            .col_expr(signing_key::Column::RetiredAt, Expr::value(switch_at))
            .filter(signing_key::Column::RetiredAt.is_null())
            .exec(&txn)
            .await?;
        key.to_row().into_active_model().insert(&txn).await?;
        txn.commit().await?;
        Ok(key)
    }

    /// Creates an account and its first session in one transaction: either both exist
    /// afterwards or neither does.
    pub async fn create_account(
        &self,
        email: &str,
        password_hash: String,
        role: Role,
        now: DateTime<Utc>,
        session: Option<NewRefreshToken>,
    ) -> Result<user::Model, AuthError> {
        let account = user::Model {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.to_owned(),
            password_hash,
            role: role.to_string(),
            created_at: now,
        };
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        let inserted = match account.clone().into_active_model().insert(&txn).await {
            Ok(model) => model,
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(AuthError::EmailTaken);
            }
            Err(error) => return Err(error.into()),
        };
        // Tests kill the process here, inside the open transaction (see runtime::failpoint),
        // proving the account and its first session commit together or not at all.
        sneakernet_runtime::failpoint::pause_point("auth::create_account::after_user_insert").await;
        if let Some(session) = session {
            insert_session(&txn, &inserted.id, session, now).await?;
        }
        txn.commit().await?;
        Ok(inserted)
    }

    /// The account with this (normalised) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<user::Model>, AuthError> {
        Ok(user::Entity::find()
            .filter(user::Column::Email.eq(email))
            .one(&self.db)
            .await?)
    }

    /// Starts a session: its family and first refresh token.
    pub async fn start_session(
        &self,
        user_id: &str,
        token: NewRefreshToken,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        insert_session(&txn, user_id, token, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Spends `presented_hash` and stores the next token of its session, atomically. The
    /// session row is locked first, so a revocation either happened before (refused) or waits
    /// and then covers the new token too. A token spent already is reuse: the session is
    /// revoked, in this same transaction.
    pub async fn rotate_refresh(
        &self,
        presented_hash: &str,
        next_hash: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Rotated, AuthError> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        let Some(presented) = refresh_token::Entity::find_by_id(presented_hash.to_owned())
            .one(&txn)
            .await?
        else {
            return Err(AuthError::RefreshUnknown);
        };
        let family = presented.family_id.clone();
        let live = refresh_family::Entity::update_many()
            .col_expr(refresh_family::Column::LastUsedAt, Expr::value(now))
            .filter(refresh_family::Column::FamilyId.eq(&family))
            .filter(refresh_family::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        if live == 0 {
            return Err(AuthError::SessionRevoked);
        }
        let spent = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::TokenHash.eq(presented_hash))
            .filter(refresh_token::Column::UsedAt.is_null())
            .filter(refresh_token::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?
            .rows_affected;
        if spent == 0 {
            // Read again under the family lock: a concurrent rotation may have spent it.
            let current = refresh_token::Entity::find_by_id(presented_hash.to_owned())
                .one(&txn)
                .await?;
            if current.is_some_and(|t| t.used_at.is_some()) {
                revoke_family(&txn, &family, now).await?;
                txn.commit().await?;
                tracing::warn!(family = %family, user_id = %presented.user_id, "refresh token reuse detected; session revoked");
                return Err(AuthError::RefreshReused);
            }
            return Err(AuthError::RefreshExpired);
        }
        let Some(account) = user::Entity::find_by_id(presented.user_id.clone())
            .one(&txn)
            .await?
        else {
            return Err(AuthError::AccountGone);
        };
        insert_refresh(
            &txn,
            &account.id,
            NewRefreshToken {
                token_hash: next_hash,
                family_id: family,
                expires_at,
            },
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(Rotated { user: account })
    }

    /// The stored refresh token with this hash.
    pub async fn refresh_token(
        &self,
        hash: &str,
    ) -> Result<Option<refresh_token::Model>, AuthError> {
        Ok(refresh_token::Entity::find_by_id(hash.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Revokes a session: none of its refresh tokens works again. Idempotent.
    pub async fn revoke_family(
        &self,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        revoke_family(&self.db, family_id, now).await
    }

    /// Stores a device's credential (a kiosk's or a drive module's, keyed by the device's
    /// stored form), replacing any earlier one (which stops working).
    pub async fn put_device_credential(
        &self,
        credential: kiosk_credential::Model,
    ) -> Result<(), AuthError> {
        kiosk_credential::Entity::insert(credential.into_active_model())
            .on_conflict(
                OnConflict::column(kiosk_credential::Column::KioskId)
                    .update_columns([
                        kiosk_credential::Column::SecretHash,
                        kiosk_credential::Column::IssuedAt,
                        kiosk_credential::Column::IssuedBy,
                        kiosk_credential::Column::RevokedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Revokes a device's credential. `false` if the device has none (or it is revoked
    /// already).
    pub async fn revoke_device_credential(
        &self,
        device: &DeviceId,
        now: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        let revoked = kiosk_credential::Entity::update_many()
            .col_expr(kiosk_credential::Column::RevokedAt, Expr::value(now))
            .filter(kiosk_credential::Column::KioskId.eq(device.stored()))
            .filter(kiosk_credential::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(revoked == 1)
    }

    /// A device's credential.
    pub async fn device_credential(
        &self,
        device: &DeviceId,
    ) -> Result<Option<kiosk_credential::Model>, AuthError> {
        Ok(kiosk_credential::Entity::find_by_id(device.stored())
            .one(&self.db)
            .await?)
    }

    /// Stores a service's credential, replacing any earlier one (which stops working).
    pub async fn put_service_credential(
        &self,
        credential: service_credential::Model,
    ) -> Result<(), AuthError> {
        service_credential::Entity::insert(credential.into_active_model())
            .on_conflict(
                OnConflict::column(service_credential::Column::Service)
                    .update_columns([
                        service_credential::Column::SecretHash,
                        service_credential::Column::IssuedAt,
                        service_credential::Column::IssuedBy,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// A service's credential.
    pub async fn service_credential(
        &self,
        service: &str,
    ) -> Result<Option<service_credential::Model>, AuthError> {
        Ok(service_credential::Entity::find_by_id(service.to_owned())
            .one(&self.db)
            .await?)
    }
}

async fn revoke_family<C: sea_orm::ConnectionTrait>(
    db: &C,
    family_id: &str,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    refresh_family::Entity::update_many()
        .col_expr(refresh_family::Column::RevokedAt, Expr::value(now))
        .filter(refresh_family::Column::FamilyId.eq(family_id))
        .filter(refresh_family::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// A new session: its family row and first token.
async fn insert_session<C: sea_orm::ConnectionTrait>(
    db: &C,
    user_id: &str,
    token: NewRefreshToken,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    refresh_family::Model {
        family_id: token.family_id.clone(),
        user_id: user_id.to_owned(),
        created_at: now,
        last_used_at: now,
        revoked_at: None,
    }
    .into_active_model()
    .insert(db)
    .await?;
    insert_refresh(db, user_id, token, now).await
}

async fn insert_refresh<C: sea_orm::ConnectionTrait>(
    db: &C,
    user_id: &str,
    token: NewRefreshToken,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    refresh_token::Model {
        token_hash: token.token_hash,
        family_id: token.family_id,
        user_id: user_id.to_owned(),
        created_at: now,
        expires_at: token.expires_at,
        used_at: None,
    }
    .into_active_model()
    .insert(db)
    .await?;
    Ok(())
}
