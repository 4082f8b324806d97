//! Per-key request budgets (GCRA token buckets from `governor`), and a tower layer that applies
//! per-client-address budgets to named RPCs before any handler runs.
//!
//! Budgets are per process. With several replicas each keeps its own, so the effective limit is
//! the configured one times the replica count; a Redis-backed store is the planned shared
//! alternative (DESIGN.md §7).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::error::ApiError;

/// How often (in checks) stale keys are dropped, bounding memory under many distinct keys.
const RETAIN_EVERY: u64 = 4096;

/// A budget of `burst` requests per key, refilled evenly over `period`. Cheap to clone.
#[derive(Clone)]
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: Arc<DefaultKeyedRateLimiter<K>>,
    checks: Arc<AtomicU64>,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("what", &self.what)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `what` names the budget in the error a client sees, e.g. "login attempts for this account".
    pub fn new(what: &'static str, burst: u32, period: Duration) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let per_cell = (period / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(per_cell)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
            checks: Arc::new(AtomicU64::new(0)),
            what,
        }
    }

    /// Spends one unit of `key`'s budget, or says when the next one is available.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::ResourceExhausted {
                message: format!(
                    "too many {}; retry in {}s",
                    self.what,
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            }
        })
    }
}

/// Tower layer: per client IP address budgets for the listed gRPC paths
/// (`/package.Service/Method`). Other paths pass untouched.
#[derive(Clone, Debug, Default)]
pub struct AddressRateLimitLayer {
    rules: Arc<Vec<(String, KeyedLimiter<IpAddr>)>>,
}

impl AddressRateLimitLayer {
    /// A layer with the given (path, budget) rules.
    pub fn new(rules: Vec<(String, KeyedLimiter<IpAddr>)>) -> Self {
        Self {
            rules: Arc::new(rules),
        }
    }
}

impl<S> Layer<S> for AddressRateLimitLayer {
    type Service = AddressRateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AddressRateLimit {
            inner,
            rules: self.rules.clone(),
        }
    }
}

/// The service [`AddressRateLimitLayer`] produces.
#[derive(Clone, Debug)]
pub struct AddressRateLimit<S> {
    inner: S,
    rules: Arc<Vec<(String, KeyedLimiter<IpAddr>)>>,
}

impl<S> Service<http::Request<Body>> for AddressRateLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if let Some((_, limiter)) = self.rules.iter().find(|(p, _)| p == path)
            && let Some(ip) = peer_ip(&request)
            && let Err(error) = limiter.check(&ip)
        {
            let status = tonic::Status::from(error);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

/// The client's IP address as the TCP connection shows it.
pub fn peer_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
        .map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_allowed_then_refused_with_a_retry_time() {
        let limiter = KeyedLimiter::new("attempts", 3, Duration::from_secs(60));
        for _ in 0..3 {
            limiter.check(&"a").unwrap();
        }
        match limiter.check(&"a") {
            Err(ApiError::ResourceExhausted { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
        limiter.check(&"b").expect("keys have separate budgets");
    }
}
