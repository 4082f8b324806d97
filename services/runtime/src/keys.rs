//! Keeps a [`TokenVerifier`] supplied with the auth service's public keys when auth runs in
//! another process: fetch at start, then every `auth.keys_refresh_interval`, and early (at
//! most every [`MIN_REFETCH`]) when a token names a key id we have not seen or fails its
//! signature check, which is how a replaced key is picked up without waiting for the interval.

use std::time::Duration;

use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::auth::v1::{GetSigningKeysRequest, GetSigningKeysResponse};
use tonic::transport::Endpoint;

use crate::caller::{PublicKey, TokenVerifier};
use crate::shutdown::Shutdown;

/// The shortest gap between two fetches, so forged tokens with random key ids cannot make
/// every service hammer auth.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);

/// How long one fetch may take before it is abandoned and retried.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Converts GetSigningKeys' answer into verifier keys; a malformed key is skipped and logged.
pub fn public_keys(response: &GetSigningKeysResponse) -> Vec<PublicKey> {
    response
        .keys
        .iter()
        .filter_map(|k| match <[u8; 32]>::try_from(k.public_key.as_slice()) {
            Ok(ed25519) if k.algorithm == "EdDSA" => Some(PublicKey {
                kid: k.kid.clone(),
                ed25519,
                retired_at: k.retired_at.as_ref().map(|t| t.seconds),
            }),
            _ => {
                tracing::warn!(kid = %k.kid, algorithm = %k.algorithm, "skipping unusable signing key");
                None
            }
        })
        .collect()
}

/// Spawns the refresher on `shutdown`'s tracker. It ends when shutdown starts, even in the
/// middle of a fetch.
pub fn spawn_refresher(
    verifier: TokenVerifier,
    endpoint: Endpoint,
    interval: Duration,
    shutdown: &Shutdown,
) {
    let endpoint = endpoint
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let token = shutdown.token();
    shutdown.spawn(async move {
        let mut client = AuthServiceClient::new(endpoint.connect_lazy());
        let mut backoff = Duration::from_millis(200);
        loop {
            let fetched_at = tokio::time::Instant::now();
            let fetched = tokio::select! {
                () = token.cancelled() => return,
                fetched = client.get_signing_keys(GetSigningKeysRequest {}) => fetched,
            };
            let wait = match fetched {
                Ok(response) => {
                    let keys = public_keys(response.get_ref());
                    tracing::debug!(count = keys.len(), "signing keys refreshed");
                    verifier.install_keys(&keys);
                    backoff = Duration::from_millis(200);
                    interval
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "cannot fetch signing keys from auth");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = verifier.unknown_key_seen() => {
                    // Early, but never sooner than MIN_REFETCH after the last fetch, and never
                    // later than the regular schedule.
                    let at = fetched_at + MIN_REFETCH.min(wait);
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    });
}
