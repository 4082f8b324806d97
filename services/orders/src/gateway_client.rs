//! Orders' calls to the device gateway, as service `orders` (its own token as bearer).

use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_runtime::service_token::ServiceToken;
use tonic::transport::{Channel, Endpoint};

/// A client of DeviceCommandService speaking as orders.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    channel: Channel,
    token: ServiceToken,
}

impl GatewayClient {
    /// Connects lazily to `endpoint`.
    pub fn new(endpoint: &Endpoint, token: ServiceToken) -> Self {
        Self {
            channel: endpoint.connect_lazy(),
            token,
        }
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
        let request = self.token.authorize(request).await?;
        DeviceCommandServiceClient::new(self.channel.clone())
            .send_command(request)
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
        DeviceCommandServiceClient::new(self.channel.clone())
            .get_command(request)
            .await?
            .into_inner()
            .command
            .ok_or_else(|| tonic::Status::internal("gateway answered without a command"))
    }
}
