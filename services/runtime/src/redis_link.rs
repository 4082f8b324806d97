//! The one way a service reaches Redis for what Redis only accelerates (the gateway's
//! presence and command wake-ups, orders' watch wake-ups): a connection manager with short
//! timeouts and one retry, or `None` with a warning that says what falls back to polling.
//! Redis being down is never an error there: the database stays the truth.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects to `client`'s Redis with `timeout` per operation (twice that to connect at all);
/// `None`, logged as "redis unavailable; {falls_back}", when it cannot.
pub async fn connect(
    client: &redis::Client,
    timeout: Duration,
    falls_back: &str,
) -> Option<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    match tokio::time::timeout(
        timeout * 2,
        client.get_connection_manager_with_config(config),
    )
    .await
    {
        Ok(Ok(manager)) => Some(manager),
        Ok(Err(error)) => {
            tracing::warn!(%error, "redis unavailable; {falls_back}");
            None
        }
        Err(_) => {
            tracing::warn!("redis did not answer; {falls_back}");
            None
        }
    }
}
