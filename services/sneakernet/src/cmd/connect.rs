//! Where the client commands call and how: the address and TLS flags (grpcurl's words), one
//! bounded call that turns every refusal into an error with the documented exit code.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::exit::{self, Exit};
use crate::client;

/// The flags every client command shares (global: they may stand before or after the
/// subcommand).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientFlags {
    /// The node's gRPC address, `host:port` (or a URL, `http://host:port`). Default: the
    /// `listen` of the configuration (127.0.0.1:50051), on loopback when it is unspecified.
    #[arg(
        long,
        global = true,
        env = "SNEAKERNET_ADDRESS",
        value_name = "HOST:PORT"
    )]
    pub address: Option<String>,
    /// Where logins are made and renewed (AuthService), `host:port` or a URL, when auth is
    /// served apart from --address (a split deployment: log in at auth, call orders or the
    /// gateway with its token). Logins are kept per this address. Default: --address.
    #[arg(
        long,
        global = true,
        env = "SNEAKERNET_AUTH_ADDRESS",
        value_name = "HOST:PORT"
    )]
    pub auth_address: Option<String>,
    /// Call without TLS. The default for a loopback address; any other address is called
    /// with TLS unless this is given.
    #[arg(long, global = true)]
    pub plaintext: bool,
    /// Trust the server certificates signed by this CA (PEM) instead of the system's roots;
    /// implies TLS.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Print one JSON object per result (proto3 JSON of the answer) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where the login is kept (default: the user's config directory, e.g.
    /// ~/.config/sneakernet).
    #[arg(
        long,
        global = true,
        env = "SNEAKERNET_PROFILE_DIR",
        value_name = "DIR"
    )]
    pub profile_dir: Option<PathBuf>,
}

/// A node to call: its address as the user knows it, and a lazily connected channel.
#[derive(Clone, Debug)]
pub struct Target {
    /// The address as given (or defaulted), for messages and as the login's key.
    pub address: String,
    /// The URL dialled (`http://` or `https://`), for configuration a kiosk copies.
    pub url: String,
    /// The channel; nothing is dialled until the first call.
    pub channel: Channel,
}

impl Target {
    /// The node `flags` name (`--address`), `listen` of `config` when they name none.
    pub fn new(
        flags: &ClientFlags,
        config: &sneakernet_runtime::config::Config,
    ) -> anyhow::Result<Self> {
        let address = flags
            .address
            .clone()
            .unwrap_or_else(|| client::loopback(config.listen).to_string());
        Self::dial(address, "--address", flags)
    }

    /// Where logins are made and renewed: `--auth-address`, else the node of
    /// [`Target::new`] (standalone and any node serving auth beside the rest).
    pub fn auth(
        flags: &ClientFlags,
        config: &sneakernet_runtime::config::Config,
    ) -> anyhow::Result<Self> {
        match &flags.auth_address {
            Some(address) => Self::dial(address.clone(), "--auth-address", flags),
            None => Self::new(flags, config),
        }
    }

    /// `address` (given as `flag`) with the TLS choice of `flags`.
    fn dial(address: String, flag: &str, flags: &ClientFlags) -> anyhow::Result<Self> {
        let (url, tls) = url_of(&address, flag, flags.plaintext, flags.cacert.is_some())?;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| exit::usage(format!("{flag} {address:?} is not host:port or a URL")))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if tls {
            let mut config = ClientTlsConfig::new().with_native_roots();
            if let Some(file) = &flags.cacert {
                let pem = std::fs::read(file)
                    .with_context(|| format!("cannot read --cacert {}", file.display()))?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(config)
                .with_context(|| format!("cannot set up TLS for {address}"))?;
        }
        Ok(Self {
            address,
            url,
            channel: endpoint.connect_lazy(),
        })
    }

    /// Runs one unary (or stream-opening) call bounded by [`client::CALL_TIMEOUT`]. A refusal
    /// is an error naming `what` with its code: UNAUTHENTICATED exits 3, a node that cannot
    /// be reached (or does not answer in time) 4, everything else 1.
    pub async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(client::CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.refused(what, &status)),
            Err(_) => Err(Exit::new(
                exit::UNREACHABLE,
                format!(
                    "{what}: {} did not answer within {}",
                    self.address,
                    humantime::format_duration(client::CALL_TIMEOUT)
                ),
            )
            .into()),
        }
    }

    /// The error for a refused call (see [`Target::call`]).
    pub fn refused(&self, what: &str, status: &tonic::Status) -> anyhow::Error {
        if is_unreachable(status) {
            let mut why = status.message().to_owned();
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !why.contains(&text) {
                    why.push_str(": ");
                    why.push_str(&text);
                }
                source = cause.source();
            }
            return Exit::new(
                exit::UNREACHABLE,
                format!("{what}: cannot reach {}: {why}", self.address),
            )
            .into();
        }
        match status.code() {
            tonic::Code::Unauthenticated => Exit::new(
                exit::UNAUTHENTICATED,
                format!(
                    "{what}: not logged in at {} or the login expired ({}); run `sneakernet login`",
                    self.address,
                    status.message()
                ),
            )
            .into(),
            tonic::Code::Unimplemented => Exit::new(
                exit::FAILURE,
                format!(
                    "{what}: the node at {} does not implement this yet (UNIMPLEMENTED: {})",
                    self.address,
                    status.message()
                ),
            )
            .into(),
            _ => Exit::new(
                exit::FAILURE,
                format!("{what}: {}", client::describe(status)),
            )
            .into(),
        }
    }
}

/// A status made on this side because the transport failed (refused, no route, TLS), not
/// one the node answered: tonic gives those a source error.
fn is_unreachable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && std::error::Error::source(status).is_some()
}

/// The URL to dial for `address` (given as `flag`) and whether it is TLS.
fn url_of(
    address: &str,
    flag: &str,
    plaintext: bool,
    cacert: bool,
) -> anyhow::Result<(String, bool)> {
    if let Some((scheme, _)) = address.split_once("://") {
        return match scheme {
            "http" => Ok((address.to_owned(), false)),
            "https" => Ok((address.to_owned(), true)),
            other => Err(exit::usage(format!(
                "{flag} {address:?}: unknown scheme {other:?} (http or https)"
            ))),
        };
    }
    let host = match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
        _ => {
            return Err(exit::usage(format!(
                "{flag} {address:?} is not host:port (e.g. 127.0.0.1:50051)"
            )));
        }
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    let tls = cacert || !(plaintext || loopback);
    let scheme = if tls { "https" } else { "http" };
    Ok((format!("{scheme}://{address}"), tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plaintext_and_other_hosts_tls_unless_told() {
        assert_eq!(
            url_of("127.0.0.1:50051", "--address", false, false).unwrap(),
            ("http://127.0.0.1:50051".into(), false)
        );
        assert_eq!(
            url_of("[::1]:7", "--address", false, false).unwrap(),
            ("http://[::1]:7".into(), false)
        );
        assert_eq!(
            url_of("kiosks.example:443", "--address", false, false).unwrap(),
            ("https://kiosks.example:443".into(), true)
        );
        assert_eq!(
            url_of("kiosks.example:80", "--address", true, false).unwrap(),
            ("http://kiosks.example:80".into(), false)
        );
        assert_eq!(
            url_of("localhost:9", "--address", false, true).unwrap(),
            ("https://localhost:9".into(), true)
        );
        assert_eq!(
            url_of("http://10.0.0.1:5", "--address", false, false).unwrap(),
            ("http://10.0.0.1:5".into(), false)
        );
        assert!(url_of("no-port", "--address", false, false).is_err());
        assert!(url_of("ftp://x:1", "--address", false, false).is_err());
    }
}
