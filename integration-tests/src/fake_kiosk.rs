//! A scripted kiosk (or drive module) that speaks the link protocol message by message, so
//! gateway tests can misbehave on purpose (skip Hello, replay, send garbage) and see each
//! answer.

use std::time::Duration;

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::kiosk_link_service_client::KioskLinkServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::authed;

/// How long a test waits for one message from the gateway.
pub const WAIT: Duration = Duration::from_secs(10);

/// One open link.
pub struct FakeKiosk {
    outbound: mpsc::Sender<pb::OpenRequest>,
    inbound: Streaming<pb::OpenResponse>,
    /// The gateway's Welcome.
    pub welcome: pb::Welcome,
    /// Heartbeats sent in the background once [`FakeKiosk::keep_alive`] was called; aborted
    /// with the kiosk, so dropping it still closes the link.
    heartbeats: Option<AbortOnDropHandle<()>>,
}

/// An inventory of drives `D-<n>` in bays `A<n>`, all READY.
pub fn inventory(drives: usize) -> pb::Inventory {
    use sneakernet_proto::common::v1 as common;
    pb::Inventory {
        bays: (1..=drives)
            .map(|n| pb::Bay {
                bay_id: format!("A{n}"),
                state: pb::BayState::Ready.into(),
                item: Some(common::Item {
                    item_id: format!("D-{n}"),
                    kind: common::ItemKind::Drive.into(),
                    attributes: None,
                }),
                pinned_order_id: String::new(),
            })
            .collect(),
        taken_at: None,
    }
}

/// A Hello with `inventory`.
pub fn hello(inventory: pb::Inventory) -> pb::OpenRequest {
    pb::OpenRequest {
        message_id: String::new(),
        body: Some(Up::Hello(pb::Hello {
            agent_version: "0.0.1-test".into(),
            inventory: Some(inventory),
            last_finished_command_id: String::new(),
        })),
    }
}

/// A drive module's Hello: no inventory.
pub fn drive_hello() -> pb::OpenRequest {
    pb::OpenRequest {
        message_id: String::new(),
        body: Some(Up::Hello(pb::Hello {
            agent_version: "0.0.1-test".into(),
            inventory: None,
            last_finished_command_id: String::new(),
        })),
    }
}

/// Opens a link with `token` and sends `first`; returns the raw streams (for tests of what
/// happens when the first message is wrong).
pub async fn open_raw(
    channel: Channel,
    token: Option<&str>,
    first: pb::OpenRequest,
) -> Result<(mpsc::Sender<pb::OpenRequest>, Streaming<pb::OpenResponse>), Status> {
    let (outbound, receiver) = mpsc::channel(64);
    outbound.send(first).await.expect("fresh channel");
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let request = match token {
        Some(token) => authed(stream, token),
        None => tonic::Request::new(stream),
    };
    let inbound = KioskLinkServiceClient::new(channel)
        .open(request)
        .await?
        .into_inner();
    Ok((outbound, inbound))
}

impl FakeKiosk {
    /// Opens a link, says Hello with `inventory`, and waits for Welcome.
    pub async fn connect(
        channel: Channel,
        token: &str,
        inventory: pb::Inventory,
    ) -> Result<Self, Status> {
        Self::connect_with(channel, token, hello(inventory)).await
    }

    /// Opens a link as a drive module (a drive token), says its Hello (no inventory), and
    /// waits for Welcome.
    pub async fn connect_drive(channel: Channel, token: &str) -> Result<Self, Status> {
        Self::connect_with(channel, token, drive_hello()).await
    }

    /// Opens a link, sends `hello`, and waits for Welcome.
    pub async fn connect_with(
        channel: Channel,
        token: &str,
        hello: pb::OpenRequest,
    ) -> Result<Self, Status> {
        let (outbound, mut inbound) = open_raw(channel, Some(token), hello).await?;
        let first = tokio::time::timeout(WAIT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Welcome"))??;
        match first.and_then(|m| m.body) {
            Some(Down::Welcome(welcome)) => Ok(Self {
                outbound,
                inbound,
                welcome,
                heartbeats: None,
            }),
            other => Err(Status::internal(format!("expected Welcome, got {other:?}"))),
        }
    }

    /// Heartbeats every `every` from now on, as a real kiosk does, so a test that leaves the
    /// link silent while it does other work (longer than the gateway's `offline_after`) keeps
    /// the link open. Without it the kiosk sends only what the test sends.
    pub fn keep_alive(&mut self, every: Duration) {
        let outbound = self.outbound.clone();
        self.heartbeats = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let beat = pb::OpenRequest {
                    message_id: String::new(),
                    body: Some(Up::Heartbeat(pb::Heartbeat {
                        sent_at: Some(sneakernet_runtime::wire::timestamp(chrono::Utc::now())),
                    })),
                };
                if outbound.send(beat).await.is_err() {
                    return;
                }
            }
        })));
    }

    /// Sends one message.
    pub async fn send(&self, message_id: &str, body: Up) {
        self.outbound
            .send(pb::OpenRequest {
                message_id: message_id.into(),
                body: Some(body),
            })
            .await
            .expect("link open");
    }

    /// Sends a raw message (possibly malformed).
    pub async fn send_raw(&self, message: pb::OpenRequest) {
        self.outbound.send(message).await.expect("link open");
    }

    /// The next message that is not a heartbeat; `Err` when the stream ended with a status,
    /// `Ok(None)` when it ended cleanly.
    pub async fn next(&mut self) -> Result<Option<Down>, Status> {
        loop {
            let message = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .map_err(|_| Status::deadline_exceeded("no message from the gateway in time"))??;
            match message.and_then(|m| m.body) {
                Some(Down::Heartbeat(_)) => continue,
                other => return Ok(other),
            }
        }
    }

    /// The next command (panics on anything else).
    pub async fn next_command(&mut self) -> pb::Command {
        match self.next().await {
            Ok(Some(Down::Command(command))) => command,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    /// The next receipt (panics on anything else).
    pub async fn next_receipt(&mut self) -> pb::Receipt {
        match self.next().await {
            Ok(Some(Down::Receipt(receipt))) => receipt,
            other => panic!("expected a receipt, got {other:?}"),
        }
    }

    /// Nothing but heartbeats arrives for `within` (a command for someone else must not).
    pub async fn hears_nothing_for(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                match self.inbound.message().await {
                    Ok(Some(pb::OpenResponse {
                        body: Some(Down::Heartbeat(_)),
                    })) => continue,
                    other => return other,
                }
            }
        })
        .await
        .is_err()
    }

    /// Closes the kiosk's side of the link.
    pub fn hang_up(self) {}
}
