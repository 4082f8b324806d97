//! What an operator and their tooling see of any node: reflection, health, metrics.

use std::time::Duration;

use sneakernet_integration_tests::{Backend, Sandbox, backends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SNEAKERNET_SERVICES: [&str; 7] = [
    "sneakernet.auth.v1.AuthService",
    "sneakernet.orders.v1.OrderService",
    "sneakernet.orders.v1.FleetService",
    "sneakernet.content.v1.ContentService",
    "sneakernet.gateway.v1.KioskLinkService",
    "sneakernet.gateway.v1.DeviceCommandService",
    "sneakernet.gateway.v1.DeviceEventService",
];

async fn listed_services(sandbox: &Sandbox) -> Vec<String> {
    let mut client = ServerReflectionClient::new(sandbox.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection stream")
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("one answer")
        .expect("answer ok");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn standalone_lists_every_service_by_reflection_and_reports_each_serving() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let listed = listed_services(&sandbox).await;
        for service in SNEAKERNET_SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
            assert!(
                listed.iter().any(|s| s == service),
                "{backend}: {service} not in {listed:?}"
            );
        }

        let mut health = HealthClient::new(sandbox.channel().await);
        for service in SNEAKERNET_SERVICES {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|s| panic!("{backend}: health of {service}: {s:?}"))
                .into_inner()
                .status;
            assert_eq!(
                status,
                ServingStatus::Serving as i32,
                "{backend}: {service}"
            );
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await;
        assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn reflection_describes_the_auth_service_for_grpcurl() {
    let sandbox = Sandbox::start(&Backend::Sqlite).await;
    let mut client = ServerReflectionClient::new(sandbox.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "sneakernet.auth.v1.AuthService".into(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match responses.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty())
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
    sandbox.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_counts_grpc_calls_by_method_and_code() {
    let sandbox = Sandbox::start_with(&Backend::Sqlite, |config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut auth = sandbox.auth().await;
    let refused = auth
        .login(sneakernet_proto::auth::v1::LoginRequest {
            email: "nobody@example.com".into(),
            password: "x".repeat(12),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let address = sandbox.node().metrics_address.expect("metrics on");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let line = body
        .lines()
        .find(|l| l.starts_with("grpc_requests_total") && l.contains("AuthService/Login"))
        .unwrap_or_else(|| panic!("no Login counter in {body}"));
    // UNAUTHENTICATED is code 16.
    assert!(line.contains("code=\"16\""), "{line}");
    sandbox.stop().await;
}

#[tokio::test]
async fn responses_carry_a_request_id_and_echo_the_callers() {
    let sandbox = Sandbox::start(&Backend::Sqlite).await;
    let mut health = HealthClient::new(sandbox.channel().await);
    let generated = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    let id = generated
        .metadata()
        .get("x-request-id")
        .expect("generated request id");
    assert_eq!(id.to_str().unwrap().len(), 36, "a UUID");

    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-123".parse().unwrap());
    let echoed = health.check(request).await.unwrap();
    assert_eq!(
        echoed.metadata().get("x-request-id").unwrap(),
        "trace-me-123"
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn a_tls_listener_serves_tls_with_its_certificate_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let sandbox = Sandbox::start_with(&Backend::Sqlite, |config| {
        config.tls = Some(sneakernet_runtime::config::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let address = sandbox.node().address;

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS client trusting the certificate connects");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "sneakernet.auth.v1.AuthService".into(),
        })
        .await
        .expect("health over TLS")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let plaintext = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_err(),
    };
    assert!(refused, "plaintext is not served on a TLS listener");
    sandbox.stop().await;
}
