//! Orders' calls to the device gateway, as service `orders` (its own token as bearer), each
//! cut at a timeout so a gateway that does not answer never holds up a flow or the worker.

use std::future::Future;
use std::time::Duration;

use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_runtime::service_token::ServiceToken;
use tonic::transport::{Channel, Endpoint};

/// A client of DeviceCommandService speaking as orders.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    channel: Channel,
    token: ServiceToken,
    timeout: Duration,
}

/// The timeout of a client made by [`GatewayClient::new`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl GatewayClient {
    /// Connects lazily to `endpoint`.
    pub fn new(endpoint: &Endpoint, token: ServiceToken) -> Self {
        Self {
            channel: endpoint.connect_lazy(),
            token,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client, each call cut at `timeout` (`orders.gateway_timeout`).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// `call`, or DEADLINE_EXCEEDED once the timeout has passed (the request is also sent with
    /// it as its gRPC deadline, so the gateway stops working on it too).
    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "the gateway did not answer within {:?}",
                    self.timeout
                )))
            })
    }

    /// The endpoint's channel (for the event subscription).
    pub fn token(&self) -> &ServiceToken {
        &self.token
    }

    /// SendCommand: logs the command (idempotent by key) and returns its record.
    pub async fn send(
        &self,
        request: gateway::SendCommandRequest,
    ) -> Result<gateway::CommandRecord, tonic::Status> {
        let mut request = self.token.authorize(request).await?;
        request.set_timeout(self.timeout);
        self.within(DeviceCommandServiceClient::new(self.channel.clone()).send_command(request))
            .await?
            .into_inner()
            .command
            .ok_or_else(|| tonic::Status::internal("gateway answered without a command"))
    }

    /// GetCommand.
    pub async fn get(&self, command_id: &str) -> Result<gateway::CommandRecord, tonic::Status> {
        let request = self
            .token
            .authorize(gateway::GetCommandRequest {
                command_id: command_id.to_owned(),
            })
            .await?;
        let mut request = request;
        request.set_timeout(self.timeout);
        self.within(DeviceCommandServiceClient::new(self.channel.clone()).get_command(request))
            .await?
            .into_inner()
            .command
            .ok_or_else(|| tonic::Status::internal("gateway answered without a command"))
    }
}
