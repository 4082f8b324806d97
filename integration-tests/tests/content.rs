//! Content packages through the whole system: an upload cut halfway is resumed and its
//! manifest matches what was uploaded; a chunk corrupted in the store is refused by name; only
//! the right callers read or write.

use sneakernet_integration_tests::content::{self, MIB};
use sneakernet_integration_tests::{Sandbox, authed, backends};
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;
use tokio_stream::StreamExt;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_upload_cut_halfway_resumes_and_the_manifest_matches_every_byte() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let dir = tempfile::tempdir().unwrap();
        // Tens of MiB over several files, with a file shorter than a chunk, an empty one, a
        // nested path, and two files that share every chunk.
        let package = content::generate(
            dir.path(),
            "resume",
            "Resumed upload",
            &[
                ("a/film.mkv", 21 * MIB + 123),
                ("b/extras.mkv", 9 * MIB),
                ("c.txt", 4097),
                ("empty", 0),
            ],
        );
        // Three chunks' worth sent; the break comes once two whole chunks are durable.
        let (package_id, kept) =
            content::upload_with_a_break(&channel, &operator, &package, 12 * MIB, 8 * MIB).await;
        assert!(
            (8 * MIB..=12 * MIB).contains(&kept),
            "{backend}: the server held {kept} bytes of the 12 MiB sent"
        );

        // `sneakernet content upload` of the same directory finds the package and resumes.
        let mut stored = Vec::new();
        let ready =
            sneakernet::content::upload_dir(&channel, &operator, &package, |s| stored.push(s))
                .await
                .expect("resumed upload");
        assert_eq!(ready.package_id, package_id, "{backend}: the same package");
        assert_eq!(ready.state(), pb::PackageState::Ready, "{backend}");
        // The cut stream's unfinished chunk may still be saved after the break: the resumed
        // upload starts from at least what the server held then, never from zero.
        let resumed_from = stored.first().copied().unwrap_or_default();
        assert!(
            (kept..=12 * MIB).contains(&resumed_from),
            "{backend}: resumed from {resumed_from}, held {kept} at the break"
        );

        let manifest = content::manifest(&channel, &operator, &package_id).await;
        assert_eq!(manifest.files.len(), package.files.len(), "{backend}");
        for (declared, listed) in package.files.iter().zip(&manifest.files) {
            assert_eq!(listed.path, declared.path, "{backend}");
            assert_eq!(listed.size_bytes, declared.size, "{backend}");
            assert_eq!(listed.blake3, declared.blake3.to_vec(), "{backend}");
            let expected_chunks = declared.size.div_ceil(u64::from(manifest.chunk_size_bytes));
            assert_eq!(
                listed.chunk_hashes.len() as u64,
                expected_chunks,
                "{backend}"
            );
            let bytes = content::download_file(&channel, &operator, &package_id, listed)
                .await
                .expect("download");
            assert_eq!(
                blake3::hash(&bytes).as_bytes().to_vec(),
                declared.blake3.to_vec(),
                "{backend}: {} rebuilt from its chunks",
                listed.path
            );
        }
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_chunk_corrupted_in_the_store_is_refused_by_name() {
    // The local object store only: the data dir is the sandbox's on both backends.
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let dir = tempfile::tempdir().unwrap();
        let package = content::generate(dir.path(), "corrupt", "Corrupt", &[("f.bin", 6 * MIB)]);
        let ready = sneakernet::content::upload_dir(&channel, &operator, &package, |_| {})
            .await
            .expect("upload");
        let manifest = content::manifest(&channel, &operator, &ready.package_id).await;
        let file = &manifest.files[0];
        let victim = &file.chunk_hashes[1];
        let path = content::local_chunk_path(&sandbox.config, victim);
        let mut bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{backend}: chunk file {}: {e}", path.display()));
        bytes[10] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();

        let refused = content::download_file(&channel, &operator, &ready.package_id, file)
            .await
            .expect_err("a corrupt chunk is not served");
        assert_eq!(
            refused.code(),
            tonic::Code::DataLoss,
            "{backend}: {refused:?}"
        );
        assert!(
            refused.message().contains(&hex(victim)),
            "{backend}: the refusal names the chunk: {}",
            refused.message()
        );
        // The healthy chunk before it still downloads on its own.
        let mut healthy = ContentServiceClient::new(channel.clone())
            .download_chunks(authed(
                pb::DownloadChunksRequest {
                    package_id: ready.package_id.clone(),
                    chunk_hashes: vec![file.chunk_hashes[0].clone()],
                    first_chunk_offset: 0,
                },
                &operator,
            ))
            .await
            .expect("download")
            .into_inner();
        let mut received = 0;
        while let Some(piece) = healthy.next().await {
            received += piece.expect("healthy piece").data.len();
        }
        assert_eq!(
            received as u64,
            u64::from(manifest.chunk_size_bytes),
            "{backend}"
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn only_operators_write_kiosks_read_users_browse_ready_packages_and_strangers_nothing() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let user = sandbox.register("reader@example.com").await.access_token;
        let kiosk = sandbox.kiosk_token("K-1").await;
        let dir = tempfile::tempdir().unwrap();
        let ready_package = content::generate(dir.path(), "ready", "Ready", &[("r", 1000)]);
        let ready = sneakernet::content::upload_dir(&channel, &operator, &ready_package, |_| {})
            .await
            .expect("upload");
        let half_dir = tempfile::tempdir().unwrap();
        let half = content::generate(half_dir.path(), "half", "Half", &[("h", 3 * MIB)]);
        let half_id = content::declare(&channel, &operator, &half).await;

        let client = || ContentServiceClient::new(channel.clone());
        let create = |token: &str| {
            let request = pb::CreatePackageRequest {
                title: "x".into(),
                description: String::new(),
                files: vec![pb::FileDeclaration {
                    path: "x".into(),
                    size_bytes: 1,
                    blake3: blake3::hash(b"x").as_bytes().to_vec(),
                }],
                idempotency_key: "k".into(),
            };
            let mut client = client();
            let token = token.to_owned();
            async move {
                if token.is_empty() {
                    client.create_package(request).await.map(|_| ())
                } else {
                    client
                        .create_package(authed(request, &token))
                        .await
                        .map(|_| ())
                }
            }
        };
        // Nobody without a token, on every RPC.
        let mut anonymous = client();
        let id = || ready.package_id.clone();
        let codes = [
            create("").await.unwrap_err().code(),
            anonymous
                .get_upload_status(pb::GetUploadStatusRequest { package_id: id() })
                .await
                .unwrap_err()
                .code(),
            anonymous
                .get_manifest(pb::GetManifestRequest { package_id: id() })
                .await
                .unwrap_err()
                .code(),
            anonymous
                .list_packages(pb::ListPackagesRequest::default())
                .await
                .unwrap_err()
                .code(),
            anonymous
                .download_chunks(pb::DownloadChunksRequest {
                    package_id: id(),
                    chunk_hashes: vec![vec![0; 32]],
                    first_chunk_offset: 0,
                })
                .await
                .unwrap_err()
                .code(),
            anonymous
                .upload_file(tokio_stream::iter(Vec::<pb::UploadFileRequest>::new()))
                .await
                .unwrap_err()
                .code(),
        ];
        assert!(
            codes.iter().all(|c| *c == tonic::Code::Unauthenticated),
            "{backend}: {codes:?}"
        );
        // Users and kiosks never write.
        for (who, token) in [("user", &user), ("kiosk", &kiosk)] {
            let code = create(token).await.unwrap_err().code();
            assert_eq!(
                code,
                tonic::Code::PermissionDenied,
                "{backend}: {who} creates"
            );
            let header = pb::UploadFileRequest {
                part: Some(pb::upload_file_request::Part::Header(pb::UploadHeader {
                    package_id: half_id.clone(),
                    path: "h".into(),
                    size_bytes: 3 * MIB,
                    blake3: half.files[0].blake3.to_vec(),
                    offset: 0,
                })),
            };
            let code = client()
                .upload_file(authed(tokio_stream::iter(vec![header]), token))
                .await
                .unwrap_err()
                .code();
            assert_eq!(
                code,
                tonic::Code::PermissionDenied,
                "{backend}: {who} uploads"
            );
        }
        // Users browse READY packages only, and download nothing.
        let listed = client()
            .list_packages(authed(pb::ListPackagesRequest::default(), &user))
            .await
            .expect("users list the catalog")
            .into_inner()
            .packages;
        assert!(
            listed.iter().all(|p| p.state() == pb::PackageState::Ready)
                && listed.iter().any(|p| p.package_id == ready.package_id)
                && !listed.iter().any(|p| p.package_id == half_id),
            "{backend}: {listed:?}"
        );
        let manifest = content::manifest(&channel, &operator, &ready.package_id).await;
        let refused =
            content::download_file(&channel, &user, &ready.package_id, &manifest.files[0])
                .await
                .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{backend}");
        // Kiosks read READY packages; nobody downloads one still uploading.
        content::download_file(&channel, &kiosk, &ready.package_id, &manifest.files[0])
            .await
            .expect("a kiosk downloads a READY package");
        for token in [&kiosk, &operator] {
            let refused = client()
                .download_chunks(authed(
                    pb::DownloadChunksRequest {
                        package_id: half_id.clone(),
                        chunk_hashes: vec![vec![0; 32]],
                        first_chunk_offset: 0,
                    },
                    token,
                ))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{backend}");
            let refused = client()
                .get_manifest(authed(
                    pb::GetManifestRequest {
                        package_id: half_id.clone(),
                    },
                    token,
                ))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{backend}");
        }
        sandbox.stop().await;
    }
}
