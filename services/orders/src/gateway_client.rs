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

    async fn authed<T>(&self, message: T) -> Result<tonic::Request<T>, tonic::Status> {
        let bearer = self
            .token
            .ready()
            .await
            .ok_or_else(|| tonic::Status::unavailable("orders has no service token yet"))?;
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {bearer}")
            .parse()
            .map_err(|_| tonic::Status::internal("service token is not ASCII"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    /// SendCommand: logs the command (idempotent by key) and returns its record.
    pub async fn send(
        &self,
        request: gateway::SendCommandRequest,
    ) -> Result<gateway::CommandRecord, tonic::Status> {
        let request = self.authed(request).await?;
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
            .authed(gateway::GetCommandRequest {
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
