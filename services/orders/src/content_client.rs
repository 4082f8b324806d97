//! Orders' reads of the content service, as service `orders`: what a reservation asks for
//! (a READY package, its title and size) is checked against the catalog, never trusted from
//! the request.

use sneakernet_proto::content::v1 as content;
use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;
use sneakernet_proto::ids::PackageId;
use sneakernet_runtime::service_token::ServiceToken;
use tonic::transport::{Channel, Endpoint};

/// A READY content package as orders needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageInfo {
    /// Its id.
    pub id: PackageId,
    /// Its title, shown to users.
    pub title: String,
    /// What a drive must hold at least, in bytes.
    pub total_bytes: u64,
}

/// A client of ContentService speaking as orders.
#[derive(Clone, Debug)]
pub struct ContentClient {
    channel: Channel,
    token: ServiceToken,
}

impl ContentClient {
    /// Connects lazily to `endpoint`.
    pub fn new(endpoint: &Endpoint, token: ServiceToken) -> Self {
        Self {
            channel: endpoint.connect_lazy(),
            token,
        }
    }

    /// The READY package `id`; `None` when it is unknown or not READY (the content service
    /// does not tell services apart from users there). Other failures are the content
    /// service's status (UNAVAILABLE while it is down).
    pub async fn ready_package(
        &self,
        id: &PackageId,
    ) -> Result<Option<PackageInfo>, tonic::Status> {
        let request = self
            .token
            .authorize(content::GetPackageRequest {
                package_id: id.to_string(),
            })
            .await?;
        let package = match ContentServiceClient::new(self.channel.clone())
            .get_package(request)
            .await
        {
            Ok(response) => response.into_inner().package,
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(status),
        };
        let package =
            package.ok_or_else(|| tonic::Status::internal("content answered without a package"))?;
        if content::PackageState::try_from(package.state) != Ok(content::PackageState::Ready) {
            return Ok(None);
        }
        Ok(Some(PackageInfo {
            id: id.clone(),
            title: package.title,
            total_bytes: package.total_size_bytes,
        }))
    }
}
