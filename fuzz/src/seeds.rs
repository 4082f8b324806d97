//! The seed corpus: a few real messages of each kind, encoded with prost, that pass the checks
//! (so the fuzzer starts from the accepted paths). Regenerate with
//! `cargo test --manifest-path fuzz/Cargo.toml -- --ignored write_seed_corpus`; the config
//! seeds are the README's examples, kept by hand under `corpus/*_config/`.

use std::path::Path;

use prost::Message;
use prost_types::{Duration, Timestamp};
use sneakernet_kiosk_agent::content_source::{Manifest, ManifestFile};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::content::v1 as content_pb;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use sneakernet_runtime::caller::Claims;
use sneakernet_runtime::{KioskId, Role, qr};

use crate::{
    LINK_KIOSK, NOW_SECONDS, QR_SECRET, TOKEN_AUDIENCE, TOKEN_ISSUER, TOKEN_KEY_ID, TOKEN_KEY_SEED,
    now,
};

fn at(seconds_before_now: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: NOW_SECONDS - seconds_before_now,
        nanos: 0,
    })
}

fn drive(item_id: &str, package: &str) -> common::Item {
    common::Item {
        item_id: item_id.into(),
        kind: common::ItemKind::Drive.into(),
        attributes: Some(common::ItemAttributes {
            kind: Some(common::item_attributes::Kind::Drive(
                common::DriveAttributes {
                    capacity_bytes: 1_000_000_000_000,
                    content_package_id: package.into(),
                    write_protected: true,
                    remote_link: true,
                },
            )),
        }),
    }
}

fn bay(bay_id: &str, state: pb::BayState, item: Option<common::Item>, pin: &str) -> pb::Bay {
    pb::Bay {
        bay_id: bay_id.into(),
        state: state.into(),
        item,
        pinned_order_id: pin.into(),
    }
}

fn up(message_id: &str, body: Up) -> pb::OpenRequest {
    pb::OpenRequest {
        message_id: message_id.into(),
        body: Some(body),
    }
}

/// An access token for [`LINK_KIOSK`] as the auth service issues it (EdDSA, its claims), signed
/// with the key the target's verifier trusts and valid for 15 minutes from now.
fn kiosk_access_token() -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let claims = Claims {
        sub: LINK_KIOSK.into(),
        role: Role::Kiosk,
        aud: TOKEN_AUDIENCE.into(),
        iss: TOKEN_ISSUER.into(),
        exp: NOW_SECONDS + 900,
        nbf: NOW_SECONDS,
        iat: NOW_SECONDS,
        jti: "0192c3a4555570008000000000000000".into(),
    };
    let der = ed25519_dalek::SigningKey::from_bytes(&TOKEN_KEY_SEED)
        .to_pkcs8_der()
        .unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(TOKEN_KEY_ID.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

fn kiosk_messages() -> Vec<(&'static str, pb::OpenRequest)> {
    let inventory = pb::Inventory {
        bays: vec![
            bay("A01", pb::BayState::Ready, Some(drive("D-0001", "")), ""),
            bay("A02", pb::BayState::Empty, None, ""),
            bay(
                "A03",
                pb::BayState::Pinned,
                Some(drive("D-0002", "P-films")),
                "O-7",
            ),
        ],
        taken_at: at(5),
    };
    let partial = pb::Inventory {
        bays: vec![bay(
            "A02",
            pb::BayState::Ready,
            Some(common::Item {
                item_id: "B-0001".into(),
                kind: common::ItemKind::PowerBank.into(),
                attributes: Some(common::ItemAttributes {
                    kind: Some(common::item_attributes::Kind::PowerBank(
                        common::PowerBankAttributes {
                            charge_percent: 80,
                            ..Default::default()
                        },
                    )),
                }),
            }),
            "",
        )],
        taken_at: at(1),
    };
    let result = |outcome| pb::CommandResult {
        command_id: "0192c3a4-1111-7000-8000-000000000001".into(),
        outcome: Some(outcome),
        finished_at: at(2),
    };
    use pb::command_result::Outcome;
    vec![
        (
            "hello",
            up(
                "",
                Up::Hello(pb::Hello {
                    agent_version: "0.1.0".into(),
                    inventory: Some(inventory.clone()),
                    last_finished_command_id: "0192c3a4-1111-7000-8000-000000000000".into(),
                }),
            ),
        ),
        (
            "heartbeat",
            up("", Up::Heartbeat(pb::Heartbeat { sent_at: at(0) })),
        ),
        (
            "ack",
            up(
                "",
                Up::Ack(pb::Ack {
                    command_id: "0192c3a4-1111-7000-8000-000000000001".into(),
                }),
            ),
        ),
        (
            "result_lend",
            up(
                "M-1",
                Up::Result(result(Outcome::Lend(pb::LendResult {
                    item_id: "D-0001".into(),
                    bay_id: "A01".into(),
                    item: Some(drive("D-0001", "")),
                }))),
            ),
        ),
        (
            "result_failure",
            up(
                "M-2",
                Up::Result(result(Outcome::Failure(pb::Failure {
                    reason: pb::FailureReason::DeadlineExceeded.into(),
                    message: "received after its deadline".into(),
                    bay_id: "A01".into(),
                    item_id: String::new(),
                }))),
            ),
        ),
        (
            "progress",
            up(
                "",
                Up::Progress(pb::Progress {
                    command_id: "0192c3a4-1111-7000-8000-000000000002".into(),
                    bytes_done: 1 << 20,
                    bytes_total: 8 << 20,
                    phase: pb::ProgressPhase::Downloading.into(),
                }),
            ),
        ),
        (
            "item_returned",
            up(
                "M-3",
                Up::ItemReturned(pb::ItemReturned {
                    bay_id: "A01".into(),
                    item: Some(drive("D-0001", "")),
                    returned_at: at(60),
                }),
            ),
        ),
        (
            "inventory_full",
            up(
                "M-4",
                Up::InventoryChanged(pb::InventoryChanged {
                    change: Some(pb::inventory_changed::Change::Full(inventory)),
                }),
            ),
        ),
        (
            "inventory_partial",
            up(
                "M-5",
                Up::InventoryChanged(pb::InventoryChanged {
                    change: Some(pb::inventory_changed::Change::Partial(partial)),
                }),
            ),
        ),
        (
            "renew_token",
            up(
                "",
                Up::RenewToken(pb::RenewToken {
                    access_token: kiosk_access_token(),
                }),
            ),
        ),
    ]
}

fn gateway_messages() -> Vec<(&'static str, pb::OpenResponse)> {
    use pb::command_payload::Kind;
    let down = |body| pb::OpenResponse { body: Some(body) };
    let command = |n: u32, kind| {
        down(Down::Command(pb::Command {
            command_id: format!("0192c3a4-2222-7000-8000-00000000000{n}"),
            deadline: at(-120),
            payload: Some(pb::CommandPayload { kind: Some(kind) }),
            attempt: 1,
        }))
    };
    vec![
        (
            "welcome",
            down(Down::Welcome(pb::Welcome {
                session_id: "0192c3a4-3333-7000-8000-000000000000".into(),
                server_time: at(0),
                heartbeat_interval: Some(Duration {
                    seconds: 15,
                    nanos: 0,
                }),
                offline_after: Some(Duration {
                    seconds: 45,
                    nanos: 0,
                }),
            })),
        ),
        (
            "lend_spec",
            command(
                1,
                Kind::Lend(pb::LendCommand {
                    target: Some(pb::lend_command::Target::Spec(common::ItemSpec {
                        item_type: Some(common::ItemType {
                            kind: common::ItemKind::Drive.into(),
                            capacity_bytes: 1_000_000_000_000,
                            content_package_id: String::new(),
                        }),
                        write_protect: true,
                    })),
                    order_id: "O-1".into(),
                }),
            ),
        ),
        (
            "lend_item",
            command(
                2,
                Kind::Lend(pb::LendCommand {
                    target: Some(pb::lend_command::Target::ItemId("D-0002".into())),
                    order_id: "O-7".into(),
                }),
            ),
        ),
        (
            "provision",
            command(
                3,
                Kind::Provision(pb::ProvisionCommand {
                    order_id: "O-7".into(),
                    package_id: "P-films".into(),
                    capacity_bytes: 1_000_000_000_000,
                    write_protect: true,
                }),
            ),
        ),
        (
            "set_write_protect",
            command(
                4,
                Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                    item_id: "D-0001".into(),
                    on: true,
                }),
            ),
        ),
        (
            "wipe",
            command(
                5,
                Kind::Wipe(pb::WipeCommand {
                    item_id: "D-0001".into(),
                }),
            ),
        ),
        (
            "force_eject",
            command(
                6,
                Kind::ForceEject(pb::ForceEjectCommand {
                    bay_id: "A01".into(),
                }),
            ),
        ),
        (
            "request_inventory",
            command(7, Kind::RequestInventory(pb::RequestInventoryCommand {})),
        ),
        (
            "release",
            command(
                8,
                Kind::Release(pb::ReleaseCommand {
                    order_id: "O-7".into(),
                    item_id: "D-0002".into(),
                }),
            ),
        ),
        (
            "receipt",
            down(Down::Receipt(pb::Receipt {
                message_id: "M-1".into(),
                status: pb::ReceiptStatus::Accepted.into(),
                error: String::new(),
            })),
        ),
        (
            "heartbeat",
            down(Down::Heartbeat(pb::Heartbeat { sent_at: at(0) })),
        ),
        (
            "token_renewal",
            down(Down::TokenRenewal(pb::TokenRenewal {
                expires_at: at(-900),
                error: String::new(),
            })),
        ),
        (
            "token_renewal_refused",
            down(Down::TokenRenewal(pb::TokenRenewal {
                expires_at: None,
                error: "access token is for another device".into(),
            })),
        ),
        (
            "reconnect",
            down(Down::Reconnect(pb::Reconnect {
                reason: pb::ReconnectReason::Shutdown.into(),
                message: "gateway shutting down".into(),
                retry_after: Some(Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                gateway_address: String::new(),
            })),
        ),
    ]
}

/// A package of two small files and one empty one, as `stock` or the content service makes it.
fn manifest() -> Manifest {
    let file = |path: &str, bytes: &[u8]| ManifestFile {
        path: path.into(),
        size: bytes.len() as u64,
        blake3: blake3::hash(bytes),
        chunks: if bytes.is_empty() {
            vec![]
        } else {
            vec![blake3::hash(bytes)]
        },
    };
    let files = vec![
        file(
            "films/night-of-the-living-dead.txt",
            b"public domain, 1968\n",
        ),
        file("README.txt", b"two films\n"),
        file("empty", b""),
    ];
    Manifest {
        package_id: "0192c3a4-4444-7000-8000-000000000000".into(),
        title: "Public domain films".into(),
        chunk_size: 1 << 20,
        total_bytes: files.iter().map(|f| f.size).sum(),
        files,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn every_seed_is_accepted_by_the_code_it_feeds() {
    for (name, message) in kiosk_messages() {
        assert_eq!(
            sneakernet_proto::link_rules::check_message(&message, now()),
            Ok(()),
            "{name}"
        );
        if let Some(Up::RenewToken(renew)) = &message.body {
            let expires_at = crate::judge_renewal(renew).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(expires_at.timestamp(), NOW_SECONDS + 900, "{name}");
        }
    }
    for (name, message) in gateway_messages() {
        if let Some(Down::Command(command)) = &message.body {
            sneakernet_kiosk_agent::command::validate(command.payload.as_ref())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let manifest = manifest();
    assert_eq!(
        Manifest::try_from(content_pb::Manifest::from(&manifest)).unwrap(),
        manifest
    );
    let kiosk = KioskId::parse("K-0001").unwrap();
    assert!(qr::parse(&qr::payload(&kiosk, QR_SECRET, now())).is_ok());
}

#[test]
#[ignore = "writes the seed corpus; run by hand after a contract change"]
fn write_seed_corpus() {
    // From the fuzz crate or a sibling one, the same directory.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");

    let dir = corpus.join("kiosk_message");
    let mut session = Vec::new();
    for (name, message) in kiosk_messages() {
        write(&dir, name, &message.encode_to_vec());
        message.encode_length_delimited(&mut session).unwrap();
    }
    // A whole link as a stream: Hello, then everything else.
    write(&dir, "session", &session);

    let dir = corpus.join("gateway_message");
    for (name, message) in gateway_messages() {
        write(&dir, name, &message.encode_to_vec());
    }

    let dir = corpus.join("qr_payload");
    let kiosk = KioskId::parse("K-0001").unwrap();
    write(
        &dir,
        "screen",
        qr::payload(&kiosk, QR_SECRET, now()).as_bytes(),
    );
    write(&dir, "sticker", b"sneakernet://kiosk/K-0001");
    write(&dir, "stale", b"sneakernet://kiosk/K-0001?c=12345678&v=2");

    let manifest = manifest();
    write(
        &corpus.join("content_manifest"),
        "three_files",
        &content_pb::Manifest::from(&manifest).encode_to_vec(),
    );
    write(
        &corpus.join("drive_manifest"),
        "manifest.json",
        manifest.to_json().as_bytes(),
    );
}
