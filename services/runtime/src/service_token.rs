//! A service's own access token, for calls it makes on its own behalf (orders to the gateway,
//! for example): logs in with the service credential at start and again before each token
//! expires, with backoff while auth is unreachable.

use std::time::Duration;

use sneakernet_proto::auth::v1::ServiceLoginRequest;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::caller::ServiceName;
use crate::config::ConfigError;
use crate::role::StartError;
use crate::shutdown::Shutdown;

/// The current token of this service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceToken {
    current: watch::Receiver<Option<String>>,
}

impl ServiceToken {
    /// Starts logging in as `service` at `auth_url` with `secret`, on `shutdown`'s tracker.
    pub fn spawn(
        service: ServiceName,
        auth_url: &str,
        secret: String,
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
                        let lifetime = response
                            .access_token_expires_at
                            .map(|at| at.seconds - chrono::Utc::now().timestamp())
                            .and_then(|secs| u64::try_from(secs).ok())
                            .map_or(Duration::from_secs(60), Duration::from_secs);
                        sender.send_replace(Some(response.access_token));
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
                }
            }
        });
        Ok(Self { current })
    }

    /// A token that never changes and needs no login (tests and tools that were handed one).
    pub fn fixed(token: impl Into<String>) -> Self {
        let (_, current) = watch::channel(Some(token.into()));
        Self { current }
    }

    /// The token now, if the service has logged in.
    pub fn current(&self) -> Option<String> {
        self.current.borrow().clone()
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

    /// Waits for a token; `None` only if the login task ended (shutdown).
    pub async fn ready(&self) -> Option<String> {
        let mut current = self.current.clone();
        current
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|token| token.clone())
    }
}
