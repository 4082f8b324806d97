//! Per-key request budgets (GCRA token buckets from `governor`), the client's address as
//! budgets see it ([`ClientAddress`]: the TCP peer, or the client a trusted proxy names), and
//! a tower layer that applies per-client-address budgets to named RPCs before any handler
//! runs.
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

/// The address a request is budgeted by, put into request extensions by
/// [`ClientAddressLayer`]: the TCP peer, or, when the peer is a trusted proxy, the client the
/// proxies name in `x-forwarded-for`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The address [`ClientAddressLayer`] recorded for `extensions`' request, or the TCP peer
    /// where no layer ran (a test server).
    pub fn of(extensions: &http::Extensions) -> Option<IpAddr> {
        extensions
            .get::<ClientAddress>()
            .map(|client| client.0)
            .or_else(|| peer_of(extensions))
    }

    /// What a per-address budget is keyed by: an IPv4 address, or an IPv6 address's /64 (one
    /// subscriber usually holds a whole /64, so per-address budgets would otherwise be free
    /// for the taking).
    pub fn budget_key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
            v4 => v4,
        }
    }
}

/// Resolves each request's [`ClientAddress`] once, before anything budgets it.
#[derive(Clone, Debug, Default)]
pub struct ClientAddressLayer {
    trusted: Arc<Vec<ipnet::IpNet>>,
}

impl ClientAddressLayer {
    /// Believes `x-forwarded-for` only from peers in `trusted` (none: never).
    pub fn new(trusted: Vec<ipnet::IpNet>) -> Self {
        Self {
            trusted: Arc::new(trusted),
        }
    }
}

impl<S> Layer<S> for ClientAddressLayer {
    type Service = ClientAddressService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAddressService {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

/// The service [`ClientAddressLayer`] produces.
#[derive(Clone, Debug)]
pub struct ClientAddressService<S> {
    inner: S,
    trusted: Arc<Vec<ipnet::IpNet>>,
}

impl<S, B> Service<http::Request<B>> for ClientAddressService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(peer) = peer_of(request.extensions()) {
            let forwarded = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok());
            let client = client_address(peer, forwarded, &self.trusted);
            request.extensions_mut().insert(ClientAddress(client));
        }
        self.inner.call(request)
    }
}

/// The client behind `peer`: `peer` itself unless it is in `trusted`; then the nearest
/// `x-forwarded-for` hop (reading from the right, the hops the proxies appended) that is not
/// itself a trusted proxy. Entries to the left of that hop were written by the client and are
/// never read. An entry that is not an address stops the walk at the last trusted hop's view.
/// IPv4-mapped IPv6 addresses count as the IPv4 address they hold. `trusted` must hold only
/// proxies: a client inside a trusted range could name any address it likes.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded.flat_map(|value| value.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop).map(|ip| ip.to_canonical()) else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// One `x-forwarded-for` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    hop.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok())
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
            && let Some(ip) = ClientAddress::of(request.extensions())
            && let Err(error) = limiter.check(&ClientAddress::budget_key(ip))
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
    peer_of(request.extensions())
}

fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
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

    fn nets(raw: &[&str]) -> Vec<ipnet::IpNet> {
        raw.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies_and_only_the_hops_they_appended() {
        let trusted = nets(&["10.0.0.0/8"]);
        // No trusted proxies configured: the header is the client's word, ignored.
        assert_eq!(
            client_address(ip("10.0.0.5"), ["198.51.100.7"].into_iter(), &[]),
            ip("10.0.0.5")
        );
        // A direct client cannot name its own address.
        assert_eq!(
            client_address(ip("203.0.113.9"), ["198.51.100.7"].into_iter(), &trusted),
            ip("203.0.113.9")
        );
        // Through the ingress: the hop it appended.
        assert_eq!(
            client_address(ip("10.0.0.5"), ["198.51.100.7"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        // A client's forged entries sit to the left of the real hop and are never read; a
        // chain of trusted proxies is walked through.
        assert_eq!(
            client_address(
                ip("10.0.0.5"),
                ["1.1.1.1, 198.51.100.7, 10.2.3.4", "10.0.0.9"].into_iter(),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Ports and IPv6 brackets as some proxies write them.
        assert_eq!(
            client_address(ip("10.0.0.5"), ["[2001:db8::1]:4711"].into_iter(), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), ["198.51.100.7:4711"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        // A proxy reached over IPv6 as an IPv4-mapped address is still the trusted proxy.
        assert_eq!(
            client_address(
                ip("::ffff:10.0.0.5"),
                ["198.51.100.7"].into_iter(),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Budgets key an IPv6 client by its /64.
        assert_eq!(
            ClientAddress::budget_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            ClientAddress::budget_key(ip("198.51.100.7")),
            ip("198.51.100.7")
        );
        // Garbage or no header: the last trusted view.
        assert_eq!(
            client_address(ip("10.0.0.5"), ["not-an-address"].into_iter(), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), std::iter::empty(), &trusted),
            ip("10.0.0.5")
        );
    }
}
