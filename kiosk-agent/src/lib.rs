//! The kiosk agent: the program on a kiosk. Today it knows its configuration and can prove its
//! identity to the backend (`kiosk-agent login`); the link to the gateway, the bays and the
//! journal arrive with the kiosk-link issue (#4).

pub mod config;

use sneakernet_proto::auth::v1::KioskLoginRequest;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;

use crate::config::AgentConfig;

/// Exchanges the kiosk's credential for an access token; returns its expiry (Unix seconds).
pub async fn login(config: &AgentConfig) -> anyhow::Result<i64> {
    let secret = config.secret()?;
    let mut client = AuthServiceClient::connect(config.auth_url.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach auth at {} (auth_url): {e}", config.auth_url))?;
    let response = client
        .kiosk_login(KioskLoginRequest {
            kiosk_id: config.kiosk_id.clone(),
            secret,
        })
        .await
        .map_err(|s| anyhow::anyhow!("kiosk login refused: {}", s.message()))?
        .into_inner();
    Ok(response
        .access_token_expires_at
        .map(|t| t.seconds)
        .unwrap_or_default())
}
