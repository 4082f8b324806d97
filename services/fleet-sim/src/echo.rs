//! The baselines: a bare tonic server of `KioskLinkService.Open` with the gateway's HTTP/2
//! settings (`sneakernet_runtime::server`), no middleware, no storage, shaped like the
//! gateway's session (wait for Hello, one task and one bounded channel per stream).
//!
//! It answers Hello with Welcome and every message with a message id with a Receipt ACCEPTED;
//! heartbeats are only noted, as the gateway does. With `--heartbeat-interval`, the Welcome names that
//! interval (so the simulated kiosks heartbeat too) and the server sends its own heartbeat on
//! every stream at that interval, as the gateway does: the fair floor. Without it, the
//! Welcome names none and an idle link carries nothing but HTTP/2 keepalive.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::kiosk_link_service_server::{
    KioskLinkService, KioskLinkServiceServer,
};
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use sneakernet_runtime::server::{
    CONNECTION_WINDOW, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, STREAM_WINDOW,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

/// Messages queued towards one stream (the gateway's session uses the same).
const OUTBOUND_CAPACITY: usize = 64;
/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// `fleet-sim echo-server`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50071")]
    listen: SocketAddr,
    /// Send a heartbeat on every stream this often, and ask kiosks to (the gateway's default
    /// is 15s). Unset: no application heartbeats at all.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Silence after which a stream is closed (with heartbeats only).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "45s")]
    offline_after: Duration,
    /// Stop by itself after this long (every run is bounded).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2h")]
    deadline: Duration,
}

/// Serves until Ctrl-C, SIGTERM or `--deadline`.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| crate::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr().context("listener address")?;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let echo = Echo {
        heartbeat: args.heartbeat_interval.filter(|d| !d.is_zero()),
        offline_after: args.offline_after,
        stop: stop.clone(),
        tasks: tasks.clone(),
    };
    // The same line shape as `sneakernet serve`, for scripts that wait for it.
    println!("fleet-sim: echo serving on {address}");
    let signal_stop = stop.clone();
    let deadline = args.deadline;
    let signals = tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate() => {}
            () = tokio::time::sleep(deadline) => eprintln!("fleet-sim: echo deadline reached"),
            () = signal_stop.cancelled() => {}
        }
        signal_stop.cancel();
    });
    let shutdown = stop.clone();
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .http2_adaptive_window(Some(false))
        .tcp_nodelay(true)
        .add_service(KioskLinkServiceServer::new(echo))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move { shutdown.cancelled().await },
        )
        .await;
    stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    let _ = signals.await;
    served.context("echo server")
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[derive(Clone)]
struct Echo {
    heartbeat: Option<Duration>,
    offline_after: Duration,
    stop: CancellationToken,
    tasks: TaskTracker,
}

#[tonic::async_trait]
impl KioskLinkService for Echo {
    async fn open(
        &self,
        request: Request<Streaming<pb::OpenRequest>>,
    ) -> Result<Response<BoxStream<pb::OpenResponse>>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::failed_precondition("no Hello in time"))??;
        if !matches!(first.and_then(|m| m.body), Some(Up::Hello(_))) {
            return Err(Status::failed_precondition(
                "the first message must be Hello",
            ));
        }
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        let welcome = pb::OpenResponse {
            body: Some(Down::Welcome(pb::Welcome {
                session_id: uuid::Uuid::now_v7().to_string(),
                server_time: Some(sneakernet_proto::wire::timestamp(chrono::Utc::now())),
                heartbeat_interval: self.heartbeat.map(sneakernet_proto::wire::duration),
                offline_after: self
                    .heartbeat
                    .map(|_| sneakernet_proto::wire::duration(self.offline_after)),
            })),
        };
        outbound
            .try_send(Ok(welcome))
            .map_err(|_| Status::internal("fresh channel full"))?;
        self.tasks.spawn(session(
            inbound,
            outbound,
            self.heartbeat,
            self.offline_after,
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// One stream's task: echo until the kiosk hangs up, goes silent, or the server stops.
async fn session(
    mut inbound: Streaming<pb::OpenRequest>,
    outbound: mpsc::Sender<Result<pb::OpenResponse, Status>>,
    heartbeat: Option<Duration>,
    offline_after: Duration,
    stop: CancellationToken,
) {
    let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut next_heartbeat = heartbeat.map_or(far, |every| tokio::time::Instant::now() + every);
    let mut heard = tokio::time::Instant::now();
    loop {
        let silent_at = if heartbeat.is_some() {
            heard + offline_after
        } else {
            far
        };
        let reply = tokio::select! {
            () = stop.cancelled() => return,
            () = outbound.closed() => return,
            () = tokio::time::sleep_until(silent_at) => return,
            () = tokio::time::sleep_until(next_heartbeat) => {
                next_heartbeat = heartbeat.map_or(far, |every| tokio::time::Instant::now() + every);
                Some(Down::Heartbeat(pb::Heartbeat {
                    sent_at: Some(sneakernet_proto::wire::timestamp(chrono::Utc::now())),
                }))
            }
            message = inbound.message() => {
                heard = tokio::time::Instant::now();
                match message {
                    Ok(Some(message)) => echo(message),
                    Ok(None) | Err(_) => return,
                }
            }
        };
        if let Some(body) = reply
            && outbound
                .send(Ok(pb::OpenResponse { body: Some(body) }))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// The echo of one kiosk message.
fn echo(message: pb::OpenRequest) -> Option<Down> {
    match message.body {
        // Like the gateway: a kiosk's heartbeat is noted, not answered (the server sends its
        // own on its own clock).
        Some(Up::Heartbeat(_)) => None,
        _ if !message.message_id.is_empty() => Some(Down::Receipt(pb::Receipt {
            message_id: message.message_id,
            status: pb::ReceiptStatus::Accepted.into(),
            error: String::new(),
        })),
        _ => None,
    }
}
