//! The device gateway through gRPC only, with scripted kiosks: identity, sessions, the command
//! log's delivery guarantees, the event log's resume guarantees, and bad input.

use std::time::Duration;

use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::{Sandbox, authed, backends, eventually, fast_links};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tonic::Code;
use tonic_types::StatusExt;

fn wipe(item: &str) -> pb::CommandPayload {
    pb::CommandPayload {
        kind: Some(pb::command_payload::Kind::Wipe(pb::WipeCommand {
            item_id: item.into(),
        })),
    }
}

fn in_secs(secs: i64) -> prost_types::Timestamp {
    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

async fn send(
    sandbox: &Sandbox,
    token: &str,
    kiosk: &str,
    key: &str,
    payload: pb::CommandPayload,
    deadline: prost_types::Timestamp,
) -> Result<pb::CommandRecord, tonic::Status> {
    DeviceCommandServiceClient::new(sandbox.channel().await)
        .send_command(authed(
            pb::SendCommandRequest {
                kiosk_id: kiosk.into(),
                payload: Some(payload),
                idempotency_key: key.into(),
                deadline: Some(deadline),
                drive_id: String::new(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().command.expect("record"))
}

async fn command(sandbox: &Sandbox, token: &str, id: &str) -> pb::CommandRecord {
    DeviceCommandServiceClient::new(sandbox.channel().await)
        .get_command(authed(
            pb::GetCommandRequest {
                command_id: id.into(),
            },
            token,
        ))
        .await
        .expect("get command")
        .into_inner()
        .command
        .expect("record")
}

/// Every event from cursor 0 up to the newest, read through Subscribe.
async fn events(sandbox: &Sandbox, token: &str, after: u64, kiosk: Option<&str>) -> Vec<pb::Event> {
    let mut stream = DeviceEventServiceClient::new(sandbox.channel().await)
        .subscribe(authed(
            pb::SubscribeRequest {
                after_cursor: after,
                kiosk_ids: kiosk.map(|k| vec![k.to_owned()]).unwrap_or_default(),
                kinds: vec![],
                drive_ids: vec![],
            },
            token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    // The log is finite: read until the stream has nothing for a moment.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(700), stream.message())
        .await
        .map(|m| m.expect("stream ok"))
    {
        if let Some(pb::subscribe_response::Entry::Event(event)) = message.entry {
            events.push(event);
        }
    }
    events
}

fn describe(event: &pb::Event) -> String {
    use pb::event::Kind;
    match &event.kind {
        Some(Kind::KioskOnline(_)) => "online".into(),
        Some(Kind::KioskOffline(off)) => format!(
            "offline:{:?}",
            pb::OfflineReason::try_from(off.reason).unwrap_or_default()
        ),
        Some(Kind::InventoryChanged(_)) => "inventory".into(),
        Some(Kind::ItemReturned(r)) => format!(
            "returned:{}",
            r.item.as_ref().map(|i| i.item_id.as_str()).unwrap_or("")
        ),
        Some(Kind::CommandStateChanged(c)) => {
            let state = c.command.as_ref().map(|c| c.state).unwrap_or_default();
            format!(
                "command:{:?}",
                pb::CommandState::try_from(state).unwrap_or_default()
            )
        }
        None => "none".into(),
    }
}

#[tokio::test]
async fn only_a_kiosk_token_opens_a_link_and_it_speaks_only_as_its_own_kiosk() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let user = sandbox
            .register(&format!("u-{}@example.com", uuid::Uuid::new_v4().simple()))
            .await;
        let operator = sandbox.operator().await;

        let status = fake_kiosk::open_raw(
            sandbox.channel().await,
            Some(&user.access_token),
            fake_kiosk::hello(fake_kiosk::inventory(1)),
        )
        .await
        .expect_err("a user token cannot open a link");
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");
        let status = fake_kiosk::open_raw(
            sandbox.channel().await,
            None,
            fake_kiosk::hello(fake_kiosk::inventory(1)),
        )
        .await
        .expect_err("no token cannot open a link");
        assert_eq!(status.code(), Code::Unauthenticated, "{backend}");

        // K-2's link cannot report on K-1's command.
        let k1 = sandbox.kiosk_token("K-1").await;
        let k2 = sandbox.kiosk_token("K-2").await;
        let queued = send(
            &sandbox,
            &operator.access_token,
            "K-1",
            "w1",
            wipe("D-1"),
            in_secs(60),
        )
        .await
        .unwrap();
        let mut intruder =
            FakeKiosk::connect(sandbox.channel().await, &k2, fake_kiosk::inventory(1))
                .await
                .unwrap();
        intruder
            .send(
                "m-1",
                Up::Result(pb::CommandResult {
                    command_id: queued.command_id.clone(),
                    outcome: Some(pb::command_result::Outcome::Wipe(pb::WipeResult {
                        item_id: "D-1".into(),
                    })),
                    finished_at: None,
                }),
            )
            .await;
        let receipt = intruder.next_receipt().await;
        assert_eq!(
            receipt.status,
            pb::ReceiptStatus::Rejected as i32,
            "{backend}"
        );
        assert_eq!(
            command(&sandbox, &operator.access_token, &queued.command_id)
                .await
                .state,
            pb::CommandState::Queued as i32
        );

        // The events of the link name K-2, the token's subject.
        let _link = FakeKiosk::connect(sandbox.channel().await, &k1, fake_kiosk::inventory(1))
            .await
            .unwrap();
        let k2_events = events(&sandbox, &operator.access_token, 0, Some("K-2")).await;
        assert_eq!(describe(&k2_events[0]), "online", "{backend}");
        assert!(k2_events.iter().all(|e| e.kiosk_id == "K-2"));
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn the_first_message_must_be_hello() {
    let sandbox =
        Sandbox::start_with(&sneakernet_integration_tests::Backend::Sqlite, fast_links).await;
    let token = sandbox.kiosk_token("K-1").await;
    let heartbeat = pb::OpenRequest {
        message_id: String::new(),
        body: Some(Up::Heartbeat(pb::Heartbeat { sent_at: None })),
    };
    let outcome = match fake_kiosk::open_raw(sandbox.channel().await, Some(&token), heartbeat).await
    {
        Err(status) => status,
        Ok((_tx, mut rx)) => rx
            .message()
            .await
            .expect_err("the stream ends with an error"),
    };
    assert_eq!(outcome.code(), Code::FailedPrecondition);
    assert!(outcome.message().contains("Hello"), "{}", outcome.message());
    sandbox.stop().await;
}

#[tokio::test]
async fn a_new_link_replaces_the_old_one_and_online_offline_events_tell_the_truth() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let token = sandbox.kiosk_token("K-1").await;

        let mut first =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(2))
                .await
                .unwrap();
        let second = FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(2))
            .await
            .unwrap();
        assert_ne!(first.welcome.session_id, second.welcome.session_id);
        match first.next().await {
            Ok(Some(Down::Reconnect(reconnect))) => {
                assert_eq!(
                    reconnect.reason,
                    pb::ReconnectReason::Replaced as i32,
                    "{backend}"
                );
            }
            other => panic!("{backend}: the replaced link is told why, got {other:?}"),
        }
        // One session remains: no Offline was written for the replaced link.
        let so_far: Vec<String> = events(&sandbox, &operator.access_token, 0, Some("K-1"))
            .await
            .iter()
            .map(describe)
            .collect();
        assert_eq!(
            so_far,
            ["online", "inventory", "online", "inventory"],
            "{backend}"
        );

        // The kiosk goes silent (power cut): after offline_after it is offline, once.
        let silent = second;
        eventually(
            Duration::from_secs(10),
            "the silent kiosk to be marked offline",
            || async {
                events(&sandbox, &operator.access_token, 0, Some("K-1"))
                    .await
                    .iter()
                    .any(|e| describe(e) == "offline:HeartbeatTimeout")
            },
        )
        .await;
        drop(silent);
        let all: Vec<String> = events(&sandbox, &operator.access_token, 0, Some("K-1"))
            .await
            .iter()
            .map(describe)
            .collect();
        assert_eq!(
            all.iter().filter(|e| e.starts_with("offline")).count(),
            1,
            "{backend}: {all:?}"
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn commands_queue_while_offline_and_are_resent_after_reconnect_until_acknowledged() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let token = sandbox.kiosk_token("K-1").await;
        let first = send(
            &sandbox,
            &operator.access_token,
            "K-1",
            "w1",
            wipe("D-1"),
            in_secs(120),
        )
        .await
        .unwrap();
        let second = send(
            &sandbox,
            &operator.access_token,
            "K-1",
            "w2",
            wipe("D-2"),
            in_secs(120),
        )
        .await
        .unwrap();
        assert_eq!(
            first.state,
            pb::CommandState::Queued as i32,
            "{backend}: a kiosk has a queue, never a busy error"
        );

        let mut link =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(2))
                .await
                .unwrap();
        let got = link.next_command().await;
        assert_eq!(
            (got.command_id.as_str(), got.attempt),
            (first.command_id.as_str(), 1),
            "{backend}: oldest first"
        );
        assert_eq!(link.next_command().await.command_id, second.command_id);
        link.hang_up();

        // Reconnect without having acked: both come again, as second attempts.
        let mut link =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(2))
                .await
                .unwrap();
        let again = link.next_command().await;
        assert_eq!(
            (again.command_id.as_str(), again.attempt),
            (first.command_id.as_str(), 2),
            "{backend}"
        );
        link.send(
            "",
            Up::Ack(pb::Ack {
                command_id: first.command_id.clone(),
            }),
        )
        .await;
        let _ = link.next_command().await;
        eventually(
            Duration::from_secs(10),
            "the ack to be recorded",
            || async {
                command(&sandbox, &operator.access_token, &first.command_id)
                    .await
                    .state
                    == pb::CommandState::Acked as i32
            },
        )
        .await;
        link.hang_up();

        // An acked command is not resent; the unacked one is.
        let mut link =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(2))
                .await
                .unwrap();
        assert_eq!(
            link.next_command().await.command_id,
            second.command_id,
            "{backend}"
        );

        // The result is recorded once; a replay of the same message is a duplicate.
        let result = Up::Result(pb::CommandResult {
            command_id: first.command_id.clone(),
            outcome: Some(pb::command_result::Outcome::Wipe(pb::WipeResult {
                item_id: "D-1".into(),
            })),
            finished_at: None,
        });
        link.send("msg-1", result.clone()).await;
        let receipt = link.next_receipt().await;
        assert_eq!(
            (receipt.message_id.as_str(), receipt.status),
            ("msg-1", pb::ReceiptStatus::Accepted as i32),
            "{backend}"
        );
        link.send("msg-1", result).await;
        assert_eq!(
            link.next_receipt().await.status,
            pb::ReceiptStatus::Duplicate as i32,
            "{backend}"
        );
        let done = command(&sandbox, &operator.access_token, &first.command_id).await;
        assert_eq!(done.state, pb::CommandState::Succeeded as i32);
        assert!(done.result.is_some());
        let succeeded = events(&sandbox, &operator.access_token, 0, Some("K-1"))
            .await
            .iter()
            .filter(|e| describe(e) == "command:Succeeded")
            .count();
        assert_eq!(succeeded, 1, "{backend}: one result event");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn an_idempotency_key_names_one_command_and_refuses_other_parameters() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let deadline = in_secs(300);
        let a = send(
            &sandbox,
            &operator.access_token,
            "K-1",
            "key",
            wipe("D-1"),
            deadline,
        )
        .await
        .unwrap();
        let b = send(
            &sandbox,
            &operator.access_token,
            "K-1",
            "key",
            wipe("D-1"),
            deadline,
        )
        .await
        .unwrap();
        assert_eq!(a.command_id, b.command_id, "{backend}");
        let status = send(
            &sandbox,
            &operator.access_token,
            "K-1",
            "key",
            wipe("D-2"),
            deadline,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{backend}");
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "idempotency_key"
        );

        // Concurrent requests with one key still make one command.
        let mut racers = Vec::new();
        for _ in 0..8 {
            let channel = sandbox.channel().await;
            let token = operator.access_token.clone();
            racers.push(tokio::spawn(async move {
                DeviceCommandServiceClient::new(channel)
                    .send_command(authed(
                        pb::SendCommandRequest {
                            kiosk_id: "K-1".into(),
                            payload: Some(wipe("D-9")),
                            idempotency_key: "raced".into(),
                            deadline: Some(deadline),
                            drive_id: String::new(),
                        },
                        &token,
                    ))
                    .await
                    .map(|r| r.into_inner().command.unwrap().command_id)
            }));
        }
        let mut ids = std::collections::HashSet::new();
        for racer in racers {
            ids.insert(racer.await.unwrap().expect("every racer gets the command"));
        }
        assert_eq!(ids.len(), 1, "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn an_unacknowledged_command_expires_at_its_deadline_with_an_event() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let queued = send(
            &sandbox,
            &operator.access_token,
            "K-off",
            "w",
            wipe("D-1"),
            in_secs(3),
        )
        .await
        .unwrap();
        eventually(Duration::from_secs(10), "the command to expire", || async {
            command(&sandbox, &operator.access_token, &queued.command_id)
                .await
                .state
                == pb::CommandState::Expired as i32
        })
        .await;
        let log: Vec<String> = events(&sandbox, &operator.access_token, 0, Some("K-off"))
            .await
            .iter()
            .map(describe)
            .collect();
        assert_eq!(log, ["command:Queued", "command:Expired"], "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn bad_kiosk_messages_are_answered_and_the_link_survives() {
    let sandbox =
        Sandbox::start_with(&sneakernet_integration_tests::Backend::Sqlite, fast_links).await;
    let operator = sandbox.operator().await;
    let token = sandbox.kiosk_token("K-1").await;
    let mut link = FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
        .await
        .unwrap();

    link.send_raw(pb::OpenRequest {
        message_id: "m-empty".into(),
        body: None,
    })
    .await;
    assert_eq!(
        link.next_receipt().await.status,
        pb::ReceiptStatus::Rejected as i32
    );
    let unknown = Up::Result(pb::CommandResult {
        command_id: uuid::Uuid::new_v4().to_string(),
        outcome: Some(pb::command_result::Outcome::Failure(pb::Failure {
            reason: pb::FailureReason::Internal.into(),
            ..Default::default()
        })),
        finished_at: None,
    });
    link.send("m-unknown", unknown).await;
    let receipt = link.next_receipt().await;
    assert_eq!(receipt.status, pb::ReceiptStatus::Rejected as i32);
    assert!(
        receipt.error.contains("no such command"),
        "{}",
        receipt.error
    );
    link.send(
        "m-returned",
        Up::ItemReturned(pb::ItemReturned {
            bay_id: String::new(),
            item: None,
            returned_at: None,
        }),
    )
    .await;
    assert_eq!(
        link.next_receipt().await.status,
        pb::ReceiptStatus::Rejected as i32
    );

    // A result whose outcome does not fit the command's kind is refused too.
    let queued = send(
        &sandbox,
        &operator.access_token,
        "K-1",
        "w",
        wipe("D-1"),
        in_secs(60),
    )
    .await
    .unwrap();
    let command_id = link.next_command().await.command_id;
    assert_eq!(command_id, queued.command_id);
    link.send(
        "m-mismatch",
        Up::Result(pb::CommandResult {
            command_id: command_id.clone(),
            outcome: Some(pb::command_result::Outcome::Lend(pb::LendResult {
                item_id: "D-1".into(),
                ..Default::default()
            })),
            finished_at: None,
        }),
    )
    .await;
    let receipt = link.next_receipt().await;
    assert_eq!(receipt.status, pb::ReceiptStatus::Rejected as i32);
    assert!(
        receipt.error.contains("does not match"),
        "{}",
        receipt.error
    );

    // The link still works: a valid return is accepted.
    let returned = Up::ItemReturned(pb::ItemReturned {
        bay_id: "A1".into(),
        item: Some(sneakernet_proto::common::v1::Item {
            item_id: "D-7".into(),
            kind: sneakernet_proto::common::v1::ItemKind::Drive.into(),
            attributes: None,
        }),
        returned_at: None,
    });
    link.send("m-ok", returned).await;
    assert_eq!(
        link.next_receipt().await.status,
        pb::ReceiptStatus::Accepted as i32
    );

    // An oversized message ends the link with a clear status, and the gateway lives on.
    link.send(
        "m-huge",
        Up::ItemReturned(pb::ItemReturned {
            bay_id: "A1".into(),
            item: Some(sneakernet_proto::common::v1::Item {
                item_id: "x".repeat(400 * 1024),
                ..Default::default()
            }),
            returned_at: None,
        }),
    )
    .await;
    let ended = loop {
        match link.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
        .await
        .expect("the gateway still serves");
    sandbox.stop().await;
}

#[tokio::test]
async fn subscribe_resumes_from_a_cursor_with_no_gap_and_no_duplicate_across_a_restart() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        for n in 0..5 {
            send(
                &sandbox,
                &operator.access_token,
                "K-1",
                &format!("a{n}"),
                wipe("D-1"),
                in_secs(600),
            )
            .await
            .unwrap();
        }
        let before = events(&sandbox, &operator.access_token, 0, None).await;
        assert_eq!(before.len(), 5, "{backend}");
        let resume_at = before[2].cursor;

        let sandbox = sandbox.restart().await;
        let operator = sandbox.operator().await;
        for n in 0..5 {
            send(
                &sandbox,
                &operator.access_token,
                "K-1",
                &format!("b{n}"),
                wipe("D-1"),
                in_secs(600),
            )
            .await
            .unwrap();
        }
        let everything = events(&sandbox, &operator.access_token, 0, None).await;
        let resumed = events(&sandbox, &operator.access_token, resume_at, None).await;
        let expected: Vec<u64> = everything
            .iter()
            .map(|e| e.cursor)
            .filter(|c| *c > resume_at)
            .collect();
        let got: Vec<u64> = resumed.iter().map(|e| e.cursor).collect();
        assert_eq!(got, expected, "{backend}: no gap, no duplicate");
        assert_eq!(got.len(), 7, "{backend}");
        assert!(got.windows(2).all(|w| w[0] < w[1]));

        let beyond = DeviceEventServiceClient::new(sandbox.channel().await)
            .subscribe(authed(
                pb::SubscribeRequest {
                    after_cursor: 1_000_000,
                    kiosk_ids: vec![],
                    kinds: vec![],
                    drive_ids: vec![],
                },
                &operator.access_token,
            ))
            .await
            .expect_err("a cursor past the end is refused");
        assert_eq!(beyond.code(), Code::OutOfRange, "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn only_operators_command_kiosks_or_read_their_events() {
    let sandbox =
        Sandbox::start_with(&sneakernet_integration_tests::Backend::Sqlite, fast_links).await;
    let user = sandbox.register("someone@example.com").await;
    let kiosk = sandbox.kiosk_token("K-1").await;
    for token in [&user.access_token, &kiosk] {
        let status = send(&sandbox, token, "K-1", "k", wipe("D-1"), in_secs(60))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = DeviceEventServiceClient::new(sandbox.channel().await)
            .subscribe(authed(pb::SubscribeRequest::default(), token))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let operator = sandbox.operator().await;
    let status = send(
        &sandbox,
        &operator.access_token,
        "bad kiosk",
        "",
        wipe(""),
        in_secs(-5),
    )
    .await
    .unwrap_err();
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "kiosk_id",
            "payload.wipe.item_id",
            "idempotency_key",
            "deadline"
        ]
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn services_log_in_with_their_own_credential_and_may_command_kiosks_but_not_act_as_users() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let user = sandbox.register("someone-else@example.com").await;
        let mut auth = sandbox.auth().await;
        use sneakernet_proto::auth::v1 as auth_pb;

        let status = auth
            .issue_service_credential(authed(
                auth_pb::IssueServiceCredentialRequest {
                    service: "orders".into(),
                },
                &user.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");
        let status = auth
            .issue_service_credential(authed(
                auth_pb::IssueServiceCredentialRequest {
                    service: "billing".into(),
                },
                &operator.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "service",
            "{backend}"
        );

        let secret = auth
            .issue_service_credential(authed(
                auth_pb::IssueServiceCredentialRequest {
                    service: "orders".into(),
                },
                &operator.access_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .secret;
        let wrong = auth
            .service_login(auth_pb::ServiceLoginRequest {
                service: "content".into(),
                secret: secret.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            wrong.code(),
            Code::Unauthenticated,
            "{backend}: a secret opens only its own service"
        );
        let token = auth
            .service_login(auth_pb::ServiceLoginRequest {
                service: "orders".into(),
                secret,
            })
            .await
            .expect("service login")
            .into_inner()
            .access_token;
        let claims = sandbox.node().verifier.verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.role),
            ("orders", sneakernet_runtime::Role::Service)
        );

        let command = send(&sandbox, &token, "K-1", "svc", wipe("D-1"), in_secs(60))
            .await
            .expect("services command kiosks");
        assert_eq!(command.requested_by, "service:orders", "{backend}");
        let status = auth
            .logout(authed(
                auth_pb::LogoutRequest {
                    refresh_token: "x".into(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: a service is not a user"
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_live_subscriber_sees_every_event_of_concurrent_writers_once_in_cursor_order() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        const WRITERS: usize = 24;
        let mut live = DeviceEventServiceClient::new(sandbox.channel().await)
            .subscribe(authed(
                pb::SubscribeRequest::default(),
                &operator.access_token,
            ))
            .await
            .unwrap()
            .into_inner();
        let reader = tokio::spawn(async move {
            let mut cursors = Vec::new();
            while cursors.len() < WRITERS {
                let message = tokio::time::timeout(Duration::from_secs(30), live.message())
                    .await
                    .expect("events keep coming")
                    .expect("stream ok")
                    .expect("stream open");
                if let Some(pb::subscribe_response::Entry::Event(event)) = message.entry {
                    cursors.push(event.cursor);
                }
            }
            cursors
        });
        let mut writers = Vec::new();
        for n in 0..WRITERS {
            let channel = sandbox.channel().await;
            let token = operator.access_token.clone();
            writers.push(tokio::spawn(async move {
                DeviceCommandServiceClient::new(channel)
                    .send_command(authed(
                        pb::SendCommandRequest {
                            kiosk_id: format!("K-{}", n % 4),
                            payload: Some(wipe("D-1")),
                            idempotency_key: format!("c{n}"),
                            deadline: Some(in_secs(600)),
                            drive_id: String::new(),
                        },
                        &token,
                    ))
                    .await
                    .expect("send")
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let seen = reader.await.unwrap();
        let log: Vec<u64> = events(&sandbox, &operator.access_token, 0, None)
            .await
            .iter()
            .map(|e| e.cursor)
            .collect();
        assert_eq!(
            seen, log,
            "{backend}: the live stream is exactly the log, in order"
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_retried_shortcut_with_the_same_key_is_the_same_command() {
    let sandbox =
        Sandbox::start_with(&sneakernet_integration_tests::Backend::Sqlite, fast_links).await;
    let operator = sandbox.operator().await;
    let mut commands = DeviceCommandServiceClient::new(sandbox.channel().await);
    let eject = |key: &str| {
        authed(
            pb::ForceEjectRequest {
                kiosk_id: "K-1".into(),
                bay_id: "A1".into(),
                idempotency_key: key.into(),
            },
            &operator.access_token,
        )
    };
    let first = commands
        .force_eject(eject("stuck-A1"))
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap();
    sandbox.clock.advance(chrono::Duration::seconds(3));
    let retry = commands
        .force_eject(eject("stuck-A1"))
        .await
        .expect("a retry is not refused")
        .into_inner()
        .command
        .unwrap();
    assert_eq!(
        first.command_id, retry.command_id,
        "the bay is not opened twice"
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn a_link_ends_when_its_token_expires_and_the_kiosk_is_offline_for_that_reason() {
    let sandbox = Sandbox::start_with(&sneakernet_integration_tests::Backend::Sqlite, |config| {
        fast_links(config);
        config.auth.access_token_ttl = Duration::from_secs(2);
    })
    .await;
    let token = sandbox.kiosk_token("K-1").await;
    let mut link = FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
        .await
        .unwrap();
    // Keep the link alive with heartbeats until the gateway ends it.
    let ended = loop {
        link.send("", Up::Heartbeat(pb::Heartbeat { sent_at: None }))
            .await;
        match tokio::time::timeout(Duration::from_millis(200), link.next()).await {
            Err(_) | Ok(Ok(Some(_))) => continue,
            Ok(other) => break other,
        }
    };
    let status = ended.expect_err("the link ends with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // Logged in now: a token from before the link would have expired with it (a subscription
    // ends with its token).
    let operator = sandbox.operator().await;
    let last = events(&sandbox, &operator.access_token, 0, Some("K-1")).await;
    assert_eq!(describe(last.last().unwrap()), "offline:Unauthenticated");
    sandbox.stop().await;
}
