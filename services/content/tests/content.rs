//! The content service through gRPC only, as operators, kiosks and users call it: uploads that
//! break and resume (across a restart), upload errors, what unready packages hide, verified
//! and resumable downloads, and who may call what. Every test runs on SQLite and Postgres.

mod support;

use sneakernet_content::domain::{CHUNK_SIZE, ContentHash};
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;
use sneakernet_runtime::Role;
use sneakernet_runtime::testing::backends;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const CHUNK: usize = CHUNK_SIZE as usize;
const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_file_package_uploaded_with_breaks_and_a_restart_becomes_ready_with_matching_hashes()
{
    for backend in backends() {
        let server = Server::start(&backend).await;
        let mut client = server.client().await;
        // Three chunks, the last partial; a small file; an empty one; a file equal to the
        // film's first chunk (stored once).
        let film = bytes(2 * CHUNK + 123, 1);
        let notes = bytes(1000, 2);
        let copy = film[..CHUNK].to_vec();
        let package = create(
            &mut client,
            "Film",
            &[
                ("films/film.bin", &film),
                ("notes.txt", &notes),
                ("empty", b""),
                ("copy.bin", &copy),
            ],
        )
        .await;
        assert_eq!(package.state(), pb::PackageState::Uploading);
        assert_eq!(package.chunk_size_bytes, CHUNK_SIZE);
        assert_eq!(package.file_count, 4);
        let id = package.package_id.clone();

        // First part: past the first chunk, then the client closes: everything is kept.
        let first = upload_range(&mut client, &id, "films/film.bin", &film, 0, CHUNK + 7)
            .await
            .expect("first part");
        assert_eq!(
            (first.bytes_stored, first.complete),
            ((CHUNK + 7) as u64, false)
        );
        assert_eq!(
            stored(&mut client, &id, "films/film.bin").await,
            (CHUNK + 7) as u64
        );

        // A stream that breaks mid-way: the server keeps what it received.
        let open = open_upload(&client).await;
        open.tx
            .send(header(&id, "films/film.bin", &film, (CHUNK + 7) as u64))
            .await
            .expect("send");
        open.tx
            .send(data(&film[CHUNK + 7..CHUNK + 7 + MIB]))
            .await
            .expect("send");
        // Let the bytes reach the server before the client vanishes (no reply to wait on:
        // the stream is still open).
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        open.answer.abort();
        drop(open.tx);
        let kept = (CHUNK + 7 + MIB) as u64;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while stored(&mut client, &id, "films/film.bin").await != kept {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broken stream's bytes were not kept"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        // Nothing of it shows in a manifest or a download meanwhile.
        let not_ready = client
            .get_manifest(kiosk(pb::GetManifestRequest {
                package_id: id.clone(),
            }))
            .await;
        expect_code(not_ready, Code::FailedPrecondition);

        // The process restarts; the upload resumes from what the new one reports.
        let server = server.restart().await;
        let mut client = server.client().await;
        assert_eq!(stored(&mut client, &id, "films/film.bin").await, kept);
        let done = resume(&mut client, &id, "films/film.bin", &film).await;
        assert!(done.complete);
        assert_eq!(done.package_state(), pb::PackageState::Uploading);
        resume(&mut client, &id, "notes.txt", &notes).await;
        let last = resume(&mut client, &id, "copy.bin", &copy).await;
        assert_eq!(last.package_state(), pb::PackageState::Ready);

        // A complete file just answers complete.
        let again = upload_range(&mut client, &id, "notes.txt", &notes, 0, 0)
            .await
            .expect("again");
        assert!(again.complete);

        let manifest = client
            .get_manifest(kiosk(pb::GetManifestRequest {
                package_id: id.clone(),
            }))
            .await
            .expect("manifest")
            .into_inner()
            .manifest
            .expect("manifest");
        let paths: Vec<_> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["copy.bin", "empty", "films/film.bin", "notes.txt"]);
        let by_path = |path: &str| manifest.files.iter().find(|f| f.path == path).unwrap();
        assert_eq!(
            by_path("films/film.bin").chunk_hashes,
            chunk_hashes(&film, CHUNK)
        );
        assert_eq!(
            by_path("films/film.bin").blake3,
            ContentHash::of(&film).to_wire()
        );
        assert_eq!(
            by_path("notes.txt").chunk_hashes,
            chunk_hashes(&notes, CHUNK)
        );
        assert!(by_path("empty").chunk_hashes.is_empty());
        assert_eq!(
            by_path("copy.bin").chunk_hashes[0],
            by_path("films/film.bin").chunk_hashes[0]
        );
        assert!(manifest.package.expect("package").ready_at.is_some());

        // Downloading the film's chunks rebuilds it byte for byte.
        let (pieces, end) = download(
            &mut client,
            kiosk(chunks_request(
                &id,
                by_path("films/film.bin").chunk_hashes.clone(),
                0,
            )),
        )
        .await;
        assert!(end.is_none(), "{end:?}");
        assert!(pieces.iter().all(|p| p.data.len() <= MIB));
        let rebuilt: Vec<u8> = pieces.iter().flat_map(|p| p.data.clone()).collect();
        assert_eq!(rebuilt, film);

        // The shared chunk is one object; staging objects are gone.
        let mut chunk_files = 0;
        let mut dirs = vec![server.objects_dir()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    assert!(
                        path.to_string_lossy().contains("/chunks/"),
                        "left over: {}",
                        path.display()
                    );
                    chunk_files += 1;
                }
            }
        }
        assert_eq!(
            chunk_files, 4,
            "3 film chunks + notes; the copy shares the film's first"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_errors_are_clear_and_a_bad_hash_restarts_the_file_at_zero() {
    for backend in backends() {
        let server = Server::start(&backend).await;
        let mut client = server.client().await;
        let big = bytes(CHUNK + 10, 3);
        let small = bytes(100, 4);
        let package = create(&mut client, "Errors", &[("big", &big), ("small", &small)]).await;
        let id = package.package_id;

        // Data first, or a second header: INVALID_ARGUMENT.
        let no_header = upload_messages(&mut client, vec![data(b"x")]).await;
        expect_code(no_header, Code::InvalidArgument);
        let two_headers = upload_messages(
            &mut client,
            vec![
                header(&id, "small", &small, 0),
                header(&id, "small", &small, 0),
            ],
        )
        .await;
        expect_code(two_headers, Code::InvalidArgument);

        // A header that does not match the declaration.
        let wrong_size = upload_messages(&mut client, vec![header(&id, "small", &big, 0)]).await;
        expect_code(wrong_size, Code::InvalidArgument);

        // More bytes than declared.
        let mut too_much = small.clone();
        too_much.push(0);
        let mut messages = vec![header(&id, "small", &small, 0)];
        messages.push(data(&too_much));
        let over = upload_messages(&mut client, messages).await;
        let message = expect_code(over, Code::InvalidArgument);
        assert!(message.contains("more bytes"), "{message}");

        // An offset past what is stored names the count.
        upload_range(&mut client, &id, "small", &small, 0, 40)
            .await
            .expect("part");
        let far = upload_messages(&mut client, vec![header(&id, "small", &small, 41)]).await;
        let message = expect_code(far, Code::OutOfRange);
        assert!(message.contains("40 bytes"), "{message}");

        // An offset below what is stored replaces the rest.
        let redo = upload_range(&mut client, &id, "small", &small, 10, 20)
            .await
            .expect("redo");
        assert_eq!(redo.bytes_stored, 20);

        // Bytes that do not hash to the declaration: DATA_LOSS, and the file starts over.
        let mut wrong = big.clone();
        wrong[CHUNK + 1] ^= 1;
        let mut messages = vec![header(&id, "big", &big, 0)];
        messages.extend(wrong.chunks(MIB).map(data));
        let bad = upload_messages(&mut client, messages).await;
        let message = expect_code(bad, Code::DataLoss);
        assert!(
            message.contains(&ContentHash::of(&big).to_hex()),
            "{message}"
        );
        assert_eq!(stored(&mut client, &id, "big").await, 0);

        resume(&mut client, &id, "big", &big).await;
        resume(&mut client, &id, "small", &small).await;

        // A READY package is immutable.
        let other = bytes(100, 9);
        let ready = upload_messages(&mut client, vec![header(&id, "small", &other, 0)]).await;
        expect_code(ready, Code::FailedPrecondition);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_verify_every_chunk_resume_dedupe_and_hide_unready_packages() {
    for backend in backends() {
        let server = Server::start(&backend).await;
        let mut client = server.client().await;
        let film = bytes(CHUNK + 2 * MIB + 5, 5);
        let hashes = chunk_hashes(&film, CHUNK);
        let package = create(&mut client, "Verified", &[("film", &film)]).await;
        let id = package.package_id;

        // Half uploaded: no manifest, no download, not in kiosks' or users' lists.
        upload_range(&mut client, &id, "film", &film, 0, CHUNK + 1)
            .await
            .expect("half");
        for request in [
            kiosk(chunks_request(&id, hashes[..1].to_vec(), 0)),
            op(chunks_request(&id, hashes[..1].to_vec(), 0)),
        ] {
            let (pieces, end) = download(&mut client, request).await;
            assert!(pieces.is_empty());
            ended_with(end, Code::FailedPrecondition);
        }
        let lister = client.clone();
        let listed = |role: Role| {
            let mut client = lister.clone();
            async move {
                client
                    .list_packages(as_caller(
                        pb::ListPackagesRequest::default(),
                        Some(&token(role)),
                    ))
                    .await
                    .expect("list")
                    .into_inner()
                    .packages
                    .into_iter()
                    .map(|p| p.package_id)
                    .collect::<Vec<_>>()
            }
        };
        let getter = client.clone();
        let got = |role: Role| {
            let mut client = getter.clone();
            let id = id.clone();
            async move {
                client
                    .get_package(as_caller(
                        pb::GetPackageRequest { package_id: id },
                        Some(&token(role)),
                    ))
                    .await
                    .map(|answer| answer.into_inner().package.expect("a package").state)
            }
        };
        assert!(listed(Role::Operator).await.contains(&id));
        assert!(!listed(Role::Kiosk).await.contains(&id));
        assert!(!listed(Role::User).await.contains(&id));
        assert_eq!(
            got(Role::Operator).await.expect("operators see it"),
            i32::from(pb::PackageState::Uploading)
        );
        for role in [Role::Kiosk, Role::User, Role::Service] {
            expect_code(got(role).await, Code::NotFound);
        }
        resume(&mut client, &id, "film", &film).await;
        assert!(listed(Role::Kiosk).await.contains(&id));
        assert!(listed(Role::User).await.contains(&id));
        for role in [Role::Operator, Role::Kiosk, Role::User, Role::Service] {
            assert_eq!(
                got(role).await.expect("READY is everyone's"),
                i32::from(pb::PackageState::Ready),
                "{role:?}"
            );
        }

        // Checked before anything is sent.
        let unknown = ContentHash::of(b"not in this package");
        let (pieces, end) = download(
            &mut client,
            kiosk(chunks_request(
                &id,
                vec![hashes[1].clone(), unknown.to_wire()],
                0,
            )),
        )
        .await;
        assert!(pieces.is_empty());
        let message = ended_with(end, Code::NotFound);
        assert!(message.contains(&unknown.to_hex()), "{message}");
        for bad in [
            chunks_request(&id, vec![hashes[0].clone(); 4097], 0),
            chunks_request(&id, vec![vec![1; 31]], 0),
            chunks_request(&id, vec![hashes[1].clone()], (2 * MIB + 5) as u64),
        ] {
            let (_, end) = download(&mut client, kiosk(bad)).await;
            ended_with(end, Code::InvalidArgument);
        }

        // Resume inside the first chunk; a hash asked twice comes once.
        let (pieces, end) = download(
            &mut client,
            kiosk(chunks_request(
                &id,
                vec![hashes[0].clone(), hashes[1].clone(), hashes[0].clone()],
                1000,
            )),
        )
        .await;
        assert!(end.is_none(), "{end:?}");
        assert_eq!(pieces[0].offset, 1000);
        let first: Vec<u8> = pieces
            .iter()
            .filter(|p| p.hash == hashes[0])
            .flat_map(|p| p.data.clone())
            .collect();
        assert_eq!(first, film[1000..CHUNK]);
        let second: Vec<u8> = pieces
            .iter()
            .filter(|p| p.hash == hashes[1])
            .flat_map(|p| p.data.clone())
            .collect();
        assert_eq!(second, film[CHUNK..]);
        assert_eq!(pieces.iter().filter(|p| p.last).count(), 2);

        // A chunk corrupted in the store: DATA_LOSS naming it, none of its bytes sent.
        let corrupt_hash = ContentHash::from_wire(&hashes[1]).expect("hash");
        corrupt(&server.chunk_file(corrupt_hash));
        let (pieces, end) = download(
            &mut client,
            op(chunks_request(
                &id,
                vec![hashes[0].clone(), hashes[1].clone()],
                0,
            )),
        )
        .await;
        let message = ended_with(end, Code::DataLoss);
        assert!(message.contains(&corrupt_hash.to_hex()), "{message}");
        assert!(pieces.iter().all(|p| p.hash == hashes[0]));
        assert!(pieces.last().expect("first chunk sent").last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_idempotent_validated_and_paged_newest_first() {
    for backend in backends() {
        let server = Server::start(&backend).await;
        let mut client = server.client().await;
        let request = pb::CreatePackageRequest {
            title: "Empty".into(),
            description: String::new(),
            files: vec![declare("a/empty", b""), declare("b", b"")],
            idempotency_key: "same".into(),
        };
        let one = client
            .create_package(op(request.clone()))
            .await
            .expect("create")
            .into_inner();
        let two = client
            .create_package(op(request.clone()))
            .await
            .expect("repeat")
            .into_inner();
        assert_eq!(one.package, two.package);
        let package = one.package.expect("package");
        assert_eq!(
            package.state(),
            pb::PackageState::Ready,
            "every file is empty"
        );
        let mut changed = request.clone();
        changed.title = "Other".into();
        expect_code(
            client.create_package(op(changed)).await,
            Code::InvalidArgument,
        );

        let invalid = client
            .create_package(op(pb::CreatePackageRequest {
                title: String::new(),
                description: String::new(),
                files: vec![
                    declare("../up", b"x"),
                    declare("d", b"x"),
                    declare("d", b"y"),
                ],
                idempotency_key: "k2".into(),
            }))
            .await
            .expect_err("invalid");
        let details = tonic_types::StatusExt::get_details_bad_request(&invalid).expect("details");
        let fields: Vec<_> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["title", "files[0].path", "files[2].path"]);

        let newer = create(&mut client, "Newer", &[("x", b"")]).await;
        let newest = create(&mut client, "Newest", &[("x", b"1")]).await;
        let page = |token: String, state: pb::PackageState| pb::ListPackagesRequest {
            page_size: 1,
            page_token: token,
            state: state.into(),
        };
        let mut seen = Vec::new();
        let mut next = String::new();
        loop {
            let answer = client
                .list_packages(op(page(next, pb::PackageState::Unspecified)))
                .await
                .expect("page")
                .into_inner();
            seen.extend(answer.packages.into_iter().map(|p| p.title));
            next = answer.next_page_token;
            if next.is_empty() {
                break;
            }
            // A token from another filter, or a forged one, is refused.
            expect_code(
                client
                    .list_packages(op(page(next.clone(), pb::PackageState::Ready)))
                    .await,
                Code::InvalidArgument,
            );
            expect_code(
                client
                    .list_packages(op(page(format!("{next}x"), pb::PackageState::Unspecified)))
                    .await,
                Code::InvalidArgument,
            );
        }
        assert_eq!(seen, ["Newest", "Newer", "Empty"]);
        let ready_only = client
            .list_packages(kiosk(pb::ListPackagesRequest::default()))
            .await
            .expect("kiosk list")
            .into_inner();
        let titles: Vec<_> = ready_only
            .packages
            .iter()
            .map(|p| p.title.as_str())
            .collect();
        assert_eq!(titles, ["Newer", "Empty"]);
        assert_ne!(newer.package_id, newest.package_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_on_any_replica_until_the_first_one_stalls_past_its_claim() {
    for backend in backends() {
        let server = Server::start(&backend).await;
        let replica = server.replica().await;
        let mut client = server.client().await;
        let mut other = replica.client().await;
        let big = bytes(CHUNK + 10, 8);
        let id = create(&mut client, "Claims", &[("big", &big)])
            .await
            .package_id;

        let first = open_upload(&client).await;
        first
            .tx
            .send(header(&id, "big", &big, 0))
            .await
            .expect("send");
        for piece in big[..CHUNK].chunks(MIB) {
            first.tx.send(data(piece)).await.expect("send");
        }
        // Once a chunk is recorded the first stream certainly holds the file.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while stored(&mut client, &id, "big").await < CHUNK as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "first chunk never stored"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for client in [&mut client, &mut other] {
            let second = upload_messages(client, vec![header(&id, "big", &big, 0)]).await;
            let message = expect_code(second, Code::Aborted);
            assert!(message.contains("in progress"), "{message}");
        }

        // The first stream stalls past its claim: the replica's upload takes the file over
        // and finishes it; the stalled stream's last write is refused.
        let lease = chrono::Duration::from_std(sneakernet_content::upload::LEASE).expect("lease");
        replica.clock.advance(lease + chrono::Duration::seconds(1));
        let done = resume(&mut other, &id, "big", &big).await;
        assert_eq!(done.package_state(), pb::PackageState::Ready);
        first.tx.send(data(&big[CHUNK..])).await.expect("send");
        drop(first.tx);
        let late = first.answer.await.expect("join");
        let message = expect_code(late, Code::Aborted);
        assert!(message.contains("lost its claim"), "{message}");
        assert_eq!(stored(&mut client, &id, "big").await, big.len() as u64);
        drop(other);
        drop(replica);
    }
}

/// Asserts CreatePackage, UploadFile and GetUploadStatus refuse `token` with `code`.
async fn writes_refused(
    client: &mut ContentServiceClient<Channel>,
    package: &str,
    token: Option<&str>,
    code: Code,
) {
    let create = client
        .create_package(as_caller(
            pb::CreatePackageRequest {
                title: "T".into(),
                description: String::new(),
                files: vec![declare("f", b"")],
                idempotency_key: "auth".into(),
            },
            token,
        ))
        .await;
    expect_code(create, code);
    let content = b"0123456789";
    let upload = client
        .upload_file(as_caller(
            tokio_stream::iter(vec![header(package, "f", content, 0), data(content)]),
            token,
        ))
        .await;
    expect_code(upload, code);
    let status = client
        .get_upload_status(as_caller(
            pb::GetUploadStatusRequest {
                package_id: package.into(),
            },
            token,
        ))
        .await;
    expect_code(status, code);
}

/// Asserts GetManifest and DownloadChunks refuse `token` with `code`.
async fn reads_refused(
    client: &mut ContentServiceClient<Channel>,
    package: &str,
    token: Option<&str>,
    code: Code,
) {
    let manifest = client
        .get_manifest(as_caller(
            pb::GetManifestRequest {
                package_id: package.into(),
            },
            token,
        ))
        .await;
    expect_code(manifest, code);
    let hashes = chunk_hashes(b"0123456789", CHUNK);
    let (_, end) = download(client, as_caller(chunks_request(package, hashes, 0), token)).await;
    ended_with(end, code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_a_token_and_the_right_role() {
    for backend in backends() {
        let server = Server::start(&backend).await;
        let mut client = server.client().await;
        let id = create(&mut client, "Auth", &[("f", b"0123456789")])
            .await
            .package_id;
        let lister = client.clone();
        let list = |token: Option<String>| {
            let mut client = lister.clone();
            async move {
                client
                    .list_packages(as_caller(
                        pb::ListPackagesRequest::default(),
                        token.as_deref(),
                    ))
                    .await
            }
        };

        // No token: UNAUTHENTICATED everywhere; a bad one is refused before any handler.
        writes_refused(&mut client, &id, None, Code::Unauthenticated).await;
        reads_refused(&mut client, &id, None, Code::Unauthenticated).await;
        expect_code(list(None).await, Code::Unauthenticated);
        expect_code(list(Some("not-a-jwt".into())).await, Code::Unauthenticated);
        // Users list the catalog and nothing else.
        let user = token(Role::User);
        writes_refused(&mut client, &id, Some(&user), Code::PermissionDenied).await;
        reads_refused(&mut client, &id, Some(&user), Code::PermissionDenied).await;
        list(Some(user)).await.expect("users list READY packages");
        // Kiosks read, never write.
        let kiosk_token = token(Role::Kiosk);
        writes_refused(&mut client, &id, Some(&kiosk_token), Code::PermissionDenied).await;
        // Nobody, not even an operator, downloads an UPLOADING package.
        reads_refused(
            &mut client,
            &id,
            Some(&token(Role::Operator)),
            Code::FailedPrecondition,
        )
        .await;
        // Everything above was refused: the file is still not stored.
        assert_eq!(stored(&mut client, &id, "f").await, 0);
    }
}
