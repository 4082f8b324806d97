//! A drive's own remote link (the NB-IoT module of the seed): a write-protect toggle sent
//! through the gateway reaches a lent simulated drive and its user's writes follow it; a
//! drive speaks only as itself, only on its link; its events never pass for a kiosk's.

use std::time::Duration;

use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::kiosk::{
    self, agent_config, drive_config, finished_command, send_write_protect, with_remote_links,
};
use sneakernet_integration_tests::{Sandbox, authed, backends, eventually, fast_links, rentals};
use sneakernet_kiosk_agent::bays::DriveError;
use sneakernet_kiosk_agent::drive::{self, SimulatedModule};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::orders::v1 as orders;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;

const WITHIN: Duration = Duration::from_secs(30);

fn write_protect_result(record: &pb::CommandRecord) -> Option<&pb::SetWriteProtectResult> {
    match record.result.as_ref()?.outcome.as_ref()? {
        pb::command_result::Outcome::SetWriteProtect(result) => Some(result),
        _ => None,
    }
}

/// The kiosks orders lists for operators: id (empty for one never registered) and online.
async fn listed_kiosks(sandbox: &Sandbox, operator: &str) -> Vec<(String, bool)> {
    FleetServiceClient::new(sandbox.channel().await)
        .list_kiosks(authed(
            orders::ListKiosksRequest {
                page_size: 500,
                ..Default::default()
            },
            operator,
        ))
        .await
        .expect("list kiosks")
        .into_inner()
        .kiosks
        .into_iter()
        .map(|k| (k.profile.map(|p| p.kiosk_id).unwrap_or_default(), k.online))
        .collect()
}

#[tokio::test]
async fn a_toggle_reaches_the_lent_drive_and_its_users_writes_follow_it() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let address = sandbox.node().address;
        let operator = sandbox.operator().await.access_token;
        let channel = sandbox.channel().await;
        let dir = tempfile::tempdir().unwrap();
        let secret = sandbox.kiosk_secret("K-1").await;
        let mut config = agent_config(dir.path(), "K-1", &secret, address, 1);
        with_remote_links(&mut config, &["D-1"]);
        let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");
        rentals::register_kiosk(&channel, &operator, "K-1", &[7; 32])
            .await
            .expect("register K-1");

        // The kiosk lends D-1: it is on the road, and says it has a module.
        let lend = kiosk::send_lend(channel.clone(), &operator, "order-1").await;
        let lent = finished_command(&channel, &operator, &lend, WITHIN).await;
        let Some(pb::command_result::Outcome::Lend(lent)) = lent.result.and_then(|r| r.outcome)
        else {
            panic!("{backend}: the lend succeeds");
        };
        assert!(
            matches!(
                lent.item.and_then(|i| i.attributes).and_then(|a| a.kind),
                Some(common::item_attributes::Kind::Drive(d)) if d.remote_link
            ),
            "{backend}: the kiosk reports the drive's module"
        );

        let module_secret = sandbox.drive_secret("D-1").await;
        let module = drive::start(
            drive_config(dir.path(), "D-1", &module_secret, address, address),
            SimulatedModule {
                bays: agent.bays().clone(),
                item_id: "D-1".into(),
            },
        )
        .await
        .expect("drive module");
        // It left write-protected, as the lend asked: the user cannot write.
        assert_eq!(
            agent.bays().write_as_user("D-1", "mine.txt", b"1"),
            Err(DriveError::WriteProtected("D-1".into())),
            "{backend}: lent protected"
        );

        let off = send_write_protect(&channel, &operator, "D-1", false, "wp:off").await;
        let done = finished_command(&channel, &operator, &off, WITHIN).await;
        assert_eq!(done.state, pb::CommandState::Succeeded as i32, "{backend}");
        assert_eq!(
            (done.kiosk_id.as_str(), done.drive_id.as_str()),
            ("", "D-1"),
            "{backend}: the record names the drive, not a kiosk"
        );
        assert!(
            write_protect_result(&done).is_some_and(|r| !r.write_protected && r.item_id == "D-1")
        );
        assert_eq!(
            agent.bays().write_as_user("D-1", "mine.txt", b"22"),
            Ok(2),
            "{backend}: writable on the road"
        );

        let on = send_write_protect(&channel, &operator, "D-1", true, "wp:on").await;
        let done = finished_command(&channel, &operator, &on, WITHIN).await;
        assert!(write_protect_result(&done).is_some_and(|r| r.write_protected));
        assert_eq!(
            agent.bays().write_as_user("D-1", "mine.txt", b"333"),
            Err(DriveError::WriteProtected("D-1".into())),
            "{backend}: the user's write is refused again"
        );

        // The confirmation is in the event log, as a drive's event.
        let mut events = DeviceEventServiceClient::new(channel.clone())
            .subscribe(authed(
                pb::SubscribeRequest {
                    after_cursor: 0,
                    kiosk_ids: vec![],
                    kinds: vec![pb::EventKind::CommandStateChanged as i32],
                    drive_ids: vec!["D-1".into()],
                },
                &operator,
            ))
            .await
            .expect("subscribe")
            .into_inner();
        let confirmed = loop {
            let message = tokio::time::timeout(WITHIN, events.message())
                .await
                .expect("an event in time")
                .expect("stream")
                .expect("open");
            let Some(pb::subscribe_response::Entry::Event(event)) = message.entry else {
                continue;
            };
            assert_eq!(
                (event.kiosk_id.as_str(), event.drive_id.as_str()),
                ("", "D-1")
            );
            let Some(pb::event::Kind::CommandStateChanged(changed)) = event.kind else {
                continue;
            };
            let record = changed.command.expect("record");
            if record.command_id == on && record.state == pb::CommandState::Succeeded as i32 {
                break record;
            }
        };
        assert!(write_protect_result(&confirmed).is_some_and(|r| r.write_protected));

        // Orders keeps a view of kiosks from the same log: the drive is not one (no kiosk
        // listed but K-1, nothing parked; that an event with an empty kiosk_id writes no row
        // at all is orders' store test `a_drive_links_events_make_no_kiosk_...`). Once the
        // kiosk's offline event (written after every drive event) shows, all were applied.
        module.stop().await;
        agent.stop().await;
        let operator_ = operator.clone();
        eventually(WITHIN, "orders to see the kiosk go offline", || {
            let operator = operator_.clone();
            let sandbox = &sandbox;
            async move { listed_kiosks(sandbox, &operator).await == [("K-1".to_owned(), false)] }
        })
        .await;
        let parked = FleetServiceClient::new(channel.clone())
            .list_parked_events(authed(
                orders::ListParkedEventsRequest::default(),
                &operator,
            ))
            .await
            .expect("parked events")
            .into_inner();
        assert!(parked.events.is_empty(), "{backend}: {:?}", parked.events);
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_drive_speaks_only_as_itself_and_only_on_its_own_link() {
    for backend in backends() {
        // Default link timing: the scripted links send no heartbeats.
        let sandbox = Sandbox::start(&backend).await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        let d1_secret = sandbox.drive_secret("D-1").await;
        let d2 = sandbox.drive_token("D-2").await;
        // A kiosk whose id is spelled like the drive's: it still never gets the drive's commands.
        let kiosk_d1 = sandbox.kiosk_token("D-1").await;

        let refused = fake_kiosk::open_raw(
            channel.clone(),
            Some(&d2),
            fake_kiosk::hello(fake_kiosk::inventory(1)),
        )
        .await;
        let code = match refused {
            Err(status) => status.code(),
            Ok((_up, mut down)) => down.message().await.expect_err("refused").code(),
        };
        assert_eq!(
            code,
            tonic::Code::InvalidArgument,
            "{backend}: a drive has no inventory"
        );

        let mut drive_2 = FakeKiosk::connect_drive(channel.clone(), &d2)
            .await
            .expect("drive D-2 links");
        let mut kiosk = FakeKiosk::connect(channel.clone(), &kiosk_d1, fake_kiosk::inventory(1))
            .await
            .expect("kiosk D-1 links");

        let for_d1 = send_write_protect(&channel, &operator, "D-1", true, "wp:d1").await;
        assert!(
            drive_2.hears_nothing_for(Duration::from_secs(1)).await,
            "{backend}: D-2's token does not get D-1's command"
        );
        assert!(
            kiosk.hears_nothing_for(Duration::from_millis(200)).await,
            "{backend}: nor does kiosk D-1"
        );
        let record = kiosk::command_record(&channel, &operator, &for_d1)
            .await
            .expect("record");
        assert_eq!(record.state, pb::CommandState::Queued as i32, "{backend}");

        let for_d2 = send_write_protect(&channel, &operator, "D-2", true, "wp:d2").await;
        let command = drive_2.next_command().await;
        assert_eq!(command.command_id, for_d2, "{backend}");

        // A drive reports no returns or inventory: refused, never applied.
        drive_2
            .send(
                "m-1",
                Up::ItemReturned(pb::ItemReturned {
                    bay_id: "A1".into(),
                    item: None,
                    returned_at: None,
                }),
            )
            .await;
        let receipt = drive_2.next_receipt().await;
        assert_eq!(
            receipt.status,
            pb::ReceiptStatus::Rejected as i32,
            "{backend}"
        );
        // Its own result is taken.
        drive_2
            .send(
                "m-2",
                Up::Result(pb::CommandResult {
                    command_id: for_d2.clone(),
                    outcome: Some(pb::command_result::Outcome::SetWriteProtect(
                        pb::SetWriteProtectResult {
                            item_id: "D-2".into(),
                            write_protected: true,
                        },
                    )),
                    finished_at: None,
                }),
            )
            .await;
        assert_eq!(
            drive_2.next_receipt().await.status,
            pb::ReceiptStatus::Accepted as i32
        );
        // D-2 cannot answer for D-1's command.
        drive_2
            .send(
                "m-3",
                Up::Result(pb::CommandResult {
                    command_id: for_d1.clone(),
                    outcome: Some(pb::command_result::Outcome::SetWriteProtect(
                        pb::SetWriteProtectResult::default(),
                    )),
                    finished_at: None,
                }),
            )
            .await;
        assert_eq!(
            drive_2.next_receipt().await.status,
            pb::ReceiptStatus::Rejected as i32
        );

        // D-1's secret logs in only as D-1.
        let wrong = sandbox
            .auth()
            .await
            .drive_login(auth::DriveLoginRequest {
                item_id: "D-2".into(),
                secret: d1_secret.clone(),
            })
            .await
            .expect_err("another drive's secret");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);

        // What a drive is sent is checked where it is sent.
        let mut commands = DeviceCommandServiceClient::new(channel.clone());
        let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
        let send = |kiosk_id: &str, drive_id: &str, payload: pb::CommandPayload| {
            authed(
                pb::SendCommandRequest {
                    kiosk_id: kiosk_id.into(),
                    payload: Some(payload),
                    idempotency_key: format!("bad:{}", uuid::Uuid::new_v4()),
                    deadline: Some(prost_types::Timestamp {
                        seconds: deadline.timestamp(),
                        nanos: 0,
                    }),
                    drive_id: drive_id.into(),
                },
                &operator,
            )
        };
        let protect = |item: &str| pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::SetWriteProtect(
                pb::SetWriteProtectCommand {
                    item_id: item.into(),
                    on: true,
                },
            )),
        };
        for (request, field) in [
            (send("", "D-1", kiosk::lend("o")), "payload"),
            (
                send("", "D-1", protect("D-2")),
                "payload.set_write_protect.item_id",
            ),
            (send("K-1", "D-1", protect("D-1")), "drive_id"),
            (send("", "", protect("D-1")), "kiosk_id"),
        ] {
            let status = commands.send_command(request).await.expect_err(field);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
            assert!(
                status.message().contains(field),
                "{field}: {}",
                status.message()
            );
        }
        // A drive's token commands nothing and reads no events.
        let status = commands
            .send_command(authed(
                pb::SendCommandRequest {
                    drive_id: "D-2".into(),
                    payload: Some(protect("D-2")),
                    idempotency_key: "self".into(),
                    ..Default::default()
                },
                &d2,
            ))
            .await
            .expect_err("a drive sends no commands");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{backend}");
        let status = DeviceEventServiceClient::new(channel.clone())
            .subscribe(authed(pb::SubscribeRequest::default(), &d2))
            .await
            .expect_err("a drive reads no events");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{backend}");

        drive_2.hang_up();
        kiosk.hang_up();
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_drive_credential_logs_in_only_as_its_drive_and_stops_when_revoked() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let operator = sandbox.operator().await.access_token;
        let user = sandbox.register("renter@example.com").await.access_token;
        let secret = sandbox.drive_secret("D-1").await;
        let mut auth = sandbox.auth().await;
        let login = |item: &str, secret: &str| auth::DriveLoginRequest {
            item_id: item.into(),
            secret: secret.into(),
        };
        let token = auth
            .drive_login(login("D-1", &secret))
            .await
            .expect("the drive logs in")
            .into_inner()
            .access_token;
        FakeKiosk::connect_drive(sandbox.channel().await, &token)
            .await
            .expect("and opens its link")
            .hang_up();
        // A kiosk spelled like the drive has no credential from it.
        let as_kiosk = auth
            .kiosk_login(auth::KioskLoginRequest {
                kiosk_id: "D-1".into(),
                secret: secret.clone(),
            })
            .await
            .expect_err("a drive's secret is not a kiosk's");
        assert_eq!(as_kiosk.code(), tonic::Code::Unauthenticated, "{backend}");
        let by_user = auth
            .issue_drive_credential(authed(
                auth::IssueDriveCredentialRequest {
                    item_id: "D-9".into(),
                },
                &user,
            ))
            .await
            .expect_err("users issue nothing");
        assert_eq!(by_user.code(), tonic::Code::PermissionDenied, "{backend}");

        let revoke = || {
            authed(
                auth::RevokeDriveCredentialRequest {
                    item_id: "D-1".into(),
                },
                &operator,
            )
        };
        auth.revoke_drive_credential(revoke())
            .await
            .expect("an operator revokes it");
        let refused = auth
            .drive_login(login("D-1", &secret))
            .await
            .expect_err("revoked");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{backend}");
        let again = auth
            .revoke_drive_credential(revoke())
            .await
            .expect_err("nothing left to revoke");
        assert_eq!(again.code(), tonic::Code::NotFound, "{backend}");
        sandbox.stop().await;
    }
}
