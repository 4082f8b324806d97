//! What the binary's own gRPC clients share (the simulated fleet's setup, `demo`, `audit`):
//! connecting, bearer tokens, logging in, bounded waits, and one-line descriptions of refusals.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// How long one unary call may take before the caller gives up with an error naming it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The address a client on this machine dials to reach a listener bound to `address`: an
/// unspecified address (`0.0.0.0`, `[::]`) becomes the loopback of its family.
pub fn loopback(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port())
        }
        _ => address,
    }
}

/// A lazily connected plaintext channel to `url` (`http://host:port`); the first call fails
/// within ten seconds when nothing answers there.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a gRPC address (http://host:port)"))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint.connect_lazy())
}

/// `message` as a request carrying `token` as its bearer token.
pub fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .context("the access token is not valid header text")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// Runs `call`, failing with an error naming `what` when it takes longer than `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, call).await.map_err(|_| {
        anyhow!(
            "{what}: no answer within {}",
            humantime::format_duration(limit)
        )
    })?
}

/// Runs one unary call bounded by [`CALL_TIMEOUT`]; a refusal becomes an error naming `what`
/// and describing the status ([`describe`]).
pub async fn call<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    within(CALL_TIMEOUT, what, async {
        call.await
            .map(tonic::Response::into_inner)
            .map_err(|status| anyhow!("{what}: {}", describe(&status)))
    })
    .await
}

/// Logs in with an email and password; returns the access token.
pub async fn login(channel: &Channel, email: &str, password: &str) -> anyhow::Result<String> {
    let mut client = AuthServiceClient::new(channel.clone());
    let response = call(
        &format!("log in as {email}"),
        client.login(auth::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        }),
    )
    .await?;
    response
        .session
        .map(|session| session.access_token)
        .with_context(|| format!("log in as {email}: the answer carries no session"))
}

/// One line describing a refusal: code, message, and every precondition or field violation
/// it carries (`NO_DEPOSIT on users/...: ...`).
pub fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    for violation in precondition_violations(status) {
        text.push_str(&format!(
            "; {} on {}: {}",
            violation.r#type, violation.subject, violation.description
        ));
    }
    if let Some(bad) = status.get_details_bad_request() {
        for field in bad.field_violations {
            text.push_str(&format!("; field {}: {}", field.field, field.description));
        }
    }
    text
}

/// The google.rpc.PreconditionFailure violations a status carries (none when it has none).
pub fn precondition_violations(status: &tonic::Status) -> Vec<tonic_types::PreconditionViolation> {
    status
        .get_details_precondition_failure()
        .map(|failure| failure.violations)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_dialled_on_loopback() {
        let any4: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let any6: SocketAddr = "[::]:7".parse().unwrap();
        let exact: SocketAddr = "10.1.2.3:9".parse().unwrap();
        assert_eq!(loopback(any4), "127.0.0.1:50051".parse().unwrap());
        assert_eq!(loopback(any6), "[::1]:7".parse().unwrap());
        assert_eq!(loopback(exact), exact);
    }

    #[test]
    fn a_refusal_is_described_with_its_violations() {
        let status = tonic::Status::with_error_details(
            tonic::Code::FailedPrecondition,
            "cannot rent here now",
            tonic_types::ErrorDetails::with_precondition_failure(vec![
                tonic_types::PreconditionViolation::new(
                    "NO_DEPOSIT",
                    "users/u-1",
                    "Pay a deposit first.",
                ),
            ]),
        );
        assert_eq!(
            describe(&status),
            "FailedPrecondition: cannot rent here now; NO_DEPOSIT on users/u-1: Pay a deposit first."
        );
    }
}
