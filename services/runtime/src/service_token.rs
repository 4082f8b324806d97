//! A service's own access token, for calls it makes on its own behalf (orders to the gateway,
//! for example): logs in with the service credential at start and again before each token
//! expires, with backoff while auth is unreachable. Expiry is judged by the process's clock,
//! as the verifiers judge it: a call that finds the token expired (the clock jumped: a
//! suspended host, a test moving time) waits for a fresh login instead of sending it.

use std::sync::Arc;
use std::time::Duration;

use sneakernet_proto::auth::v1::ServiceLoginRequest;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::sync::{Notify, watch};
use tonic::transport::Endpoint;

use crate::caller::ServiceName;
use crate::clock::SharedClock;
use crate::config::ConfigError;
use crate::role::StartError;
use crate::shutdown::Shutdown;

/// A token and when it expires (seconds since the Unix epoch).
type Current = Option<(String, i64)>;

/// A token this close to its expiry is not sent any more: the call would outlive it.
const EXPIRY_MARGIN_SECS: i64 = 5;

/// The current token of this service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceToken {
    current: watch::Receiver<Current>,
    /// Wakes the login task early: a caller found the token expired.
    renew: Arc<Notify>,
    /// "Now", as the verifiers of this token read it.
    clock: Option<SharedClock>,
}

impl ServiceToken {
    /// Starts logging in as `service` at `auth_url` with `secret`, on `shutdown`'s tracker,
    /// renewing by `clock`.
    pub fn spawn(
        service: ServiceName,
        auth_url: &str,
        secret: String,
        clock: SharedClock,
        shutdown: &Shutdown,
    ) -> Result<Self, StartError> {
        let endpoint = Endpoint::from_shared(auth_url.to_owned())
            .map_err(|e| {
                StartError::Config(ConfigError::Invalid {
                    key: "auth.url",
                    env: "SNEAKERNET_AUTH__URL",
                    reason: format!("{auth_url}: {e}"),
                })
            })?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10));
        let (sender, current) = watch::channel(None);
        let renew = Arc::new(Notify::new());
        let (woken, login_clock) = (renew.clone(), clock.clone());
        let token = shutdown.token();
        shutdown.spawn(async move {
            let mut client = AuthServiceClient::new(endpoint.connect_lazy());
            let mut backoff = Duration::from_millis(200);
            loop {
                let request = ServiceLoginRequest { service: service.as_str().to_owned(), secret: secret.clone() };
                let answer = tokio::select! {
                    () = token.cancelled() => return,
                    answer = client.service_login(request) => answer,
                };
                let wait = match answer {
                    Ok(response) => {
                        let response = response.into_inner();
                        let now = login_clock.now().timestamp();
                        let expires_at = response
                            .access_token_expires_at
                            .map_or(now + 60, |at| at.seconds);
                        let lifetime = u64::try_from(expires_at - now)
                            .map_or(Duration::from_secs(1), Duration::from_secs);
                        sender.send_replace(Some((response.access_token, expires_at)));
                        backoff = Duration::from_millis(200);
                        // Renew with a margin: a minute early, or halfway for short tokens.
                        lifetime.saturating_sub(Duration::from_secs(60)).max(lifetime / 2).max(Duration::from_secs(1))
                    }
                    Err(status) => {
                        tracing::warn!(service = %service, code = ?status.code(), error = %status.message(), "service login failed; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        backoff
                    }
                };
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                    () = woken.notified() => {}
                }
            }
        });
        Ok(Self {
            current,
            renew,
            clock: Some(clock),
        })
    }

    /// A token that never changes and needs no login (tests and tools that were handed one).
    pub fn fixed(token: impl Into<String>) -> Self {
        let (_, current) = watch::channel(Some((token.into(), i64::MAX)));
        Self {
            current,
            renew: Arc::new(Notify::new()),
            clock: None,
        }
    }

    /// The token now, if the service has logged in.
    pub fn current(&self) -> Option<String> {
        self.current
            .borrow()
            .as_ref()
            .map(|(token, _)| token.clone())
    }

    /// `message` as a request carrying this service's token as its bearer, once there is
    /// one. UNAVAILABLE when there is none (the login task ended at shutdown).
    pub async fn authorize<T>(&self, message: T) -> Result<tonic::Request<T>, tonic::Status> {
        let bearer = self
            .ready()
            .await
            .ok_or_else(|| tonic::Status::unavailable("this service has no access token"))?;
        let value = format!("Bearer {bearer}")
            .parse()
            .map_err(|_| tonic::Status::internal("the service token is not ASCII"))?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    /// Waits for a token that is not about to expire, asking for a new login when the one
    /// held is; `None` only if the login task ended (shutdown).
    pub async fn ready(&self) -> Option<String> {
        let mut current = self.current.clone();
        loop {
            let now = self
                .clock
                .as_ref()
                .map_or(0, |clock| clock.now().timestamp());
            if let Some((token, expires_at)) = current.borrow_and_update().as_ref()
                && expires_at.saturating_sub(EXPIRY_MARGIN_SECS) > now
            {
                return Some(token.clone());
            }
            self.renew.notify_one();
            current.changed().await.ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, OffsetClock};

    /// A token as the login task publishes it, with a clock the test moves.
    fn token_expiring_in(secs: i64) -> (watch::Sender<Current>, ServiceToken, Arc<OffsetClock>) {
        let clock = Arc::new(OffsetClock::new());
        let expires_at = clock.now().timestamp() + secs;
        let (sender, current) = watch::channel(Some(("old".to_owned(), expires_at)));
        let token = ServiceToken {
            current,
            renew: Arc::new(Notify::new()),
            clock: Some(clock.clone()),
        };
        (sender, token, clock)
    }

    #[tokio::test]
    async fn a_token_the_clock_has_expired_is_renewed_before_it_is_sent() {
        let (sender, token, clock) = token_expiring_in(600);
        assert_eq!(token.ready().await.as_deref(), Some("old"));
        clock.advance(chrono::Duration::hours(2));
        let renew = token.renew.clone();
        let login = async {
            // The login task is asked for a new token, and publishes one.
            renew.notified().await;
            let expires_at = clock.now().timestamp() + 600;
            sender.send_replace(Some(("new".to_owned(), expires_at)));
        };
        let (ready, ()) = tokio::join!(token.ready(), login);
        assert_eq!(ready.as_deref(), Some("new"));
    }

    #[tokio::test]
    async fn a_fixed_token_never_expires() {
        let token = ServiceToken::fixed("t");
        assert_eq!(token.ready().await.as_deref(), Some("t"));
        assert_eq!(token.current().as_deref(), Some("t"));
    }
}
