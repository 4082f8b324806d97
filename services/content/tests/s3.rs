//! The S3 object store against a real S3-protocol server (moto in CI): a package uploaded,
//! READY, and downloaded back byte for byte, on SQLite.
//!
//! Needs `S3_TEST_ENDPOINT` (e.g. `http://127.0.0.1:5000`) and `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` (any values for moto) in the environment; without the endpoint the
//! test is skipped loudly, or fails under `TEST_REQUIRE_SERVICES=1`.

mod support;

use sneakernet_content::domain::CHUNK_SIZE;
use sneakernet_runtime::config::ObjectStoreKind;
use sneakernet_runtime::testing::{Backend, skip_or_fail};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Creates `bucket` with a plain unsigned `PUT /<bucket>` (moto accepts it; object_store
/// cannot create buckets).
async fn create_bucket(endpoint: &str, bucket: &str) {
    let url = url::Url::parse(endpoint).expect("S3_TEST_ENDPOINT is a URL");
    let host = url.host_str().expect("host");
    let port = url.port_or_known_default().expect("port");
    let mut socket = tokio::net::TcpStream::connect((host, port))
        .await
        .unwrap_or_else(|e| panic!("cannot reach the S3 test server at {endpoint}: {e}"));
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "bucket creation failed: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_round_trips_through_an_s3_store() {
    let endpoint = match std::env::var("S3_TEST_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => {
            skip_or_fail("S3", "S3_TEST_ENDPOINT");
            return;
        }
    };
    assert!(
        std::env::var("AWS_ACCESS_KEY_ID").is_ok()
            && std::env::var("AWS_SECRET_ACCESS_KEY").is_ok(),
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any values for moto) with S3_TEST_ENDPOINT"
    );
    let bucket = format!("sneakernet-{}", uuid::Uuid::new_v4().simple());
    create_bucket(&endpoint, &bucket).await;
    let server = Server::start_with(&Backend::Sqlite, |config| {
        config.content.object_store = ObjectStoreKind::S3;
        config.content.s3_endpoint = Some(endpoint.clone());
        config.content.s3_bucket = Some(bucket.clone());
        config.content.s3_region = "us-east-1".into();
        config.content.s3_allow_http = true;
    })
    .await;
    let mut client = server.client().await;
    let chunk = CHUNK_SIZE as usize;
    let film = bytes(chunk + 4096, 11);
    let package = create(&mut client, "On S3", &[("film", &film)]).await;
    let id = package.package_id;
    // A partial chunk goes to a staging object in the bucket, then the rest completes it.
    upload_range(&mut client, &id, "film", &film, 0, 1000)
        .await
        .expect("part");
    let done = resume(&mut client, &id, "film", &film).await;
    assert!(done.complete);
    let (pieces, end) = download(
        &mut client,
        kiosk(chunks_request(&id, chunk_hashes(&film, chunk), 0)),
    )
    .await;
    assert!(end.is_none(), "{end:?}");
    let rebuilt: Vec<u8> = pieces.into_iter().flat_map(|p| p.data).collect();
    assert_eq!(rebuilt, film);
}
