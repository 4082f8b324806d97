//! Reservations end to end (issue 11, seed flow 2): a package published through ContentService
//! is reserved at a kiosk, provisioned by a real kiosk agent onto a simulated drive, collected
//! with the kiosk's QR code and returned; provisioning failures, cancels and no-shows cost
//! what the contract says and give the drive back; two users racing for the last drive get one
//! reservation and one refusal, and no walk-up lend takes a pinned drive. Only gRPC, on every
//! backend of this run.

use std::time::Duration;

use sneakernet_integration_tests::content::MIB;
use sneakernet_integration_tests::kiosk;
use sneakernet_integration_tests::rentals::{
    BASE_PRICE, STATION, SimKiosk, WAIT, assert_audit_clean, assert_refused, bad_fields, bays,
    create_rental, customer_with_deposit, get_order, list_orders, price_for, qr_payload_at,
    rental_request, scan, scan_until_available, start_priced_with, wait_for_state,
};
use sneakernet_integration_tests::reservations::{
    bay_of, blank_drive, cancel_reservation, collect_reservation, create_reservation,
    eventually_reserved, publish, reservation_request, silent_address,
};
use sneakernet_integration_tests::{Backend, Sandbox, authed, backends, eventually, fast_links};
use sneakernet_kiosk_agent::bays::BayState;
use sneakernet_kiosk_agent::config::SimFaults;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::clock::Clock;
use tonic::Code;
use tonic::transport::Channel;

const FILES: [(&str, u64); 3] = [
    ("films/feature.mkv", 9 * MIB + 17),
    ("README.txt", 4097),
    ("empty", 0),
];
/// The capacity of the drives reserved here.
const CAPACITY: u64 = 64 * MIB;

async fn start(
    backend: &Backend,
    adjust: impl FnOnce(&mut sneakernet_runtime::Config),
) -> (Sandbox, Channel, String) {
    start_priced_with(backend, &[common::ItemKind::Drive], adjust).await
}

/// Waits until `kiosk`'s bay holding `item_id` is READY with a blank drive (released).
async fn wait_released(kiosk: &SimKiosk, item_id: &str, context: &str) {
    eventually(
        WAIT,
        &format!("{context}: {item_id} released blank"),
        || async { bay_of(kiosk, item_id) == Some((BayState::Ready, true)) },
    )
    .await;
}

#[tokio::test]
async fn a_reservation_is_provisioned_collected_as_the_pinned_drive_with_the_package_bytes_returned_and_closed()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let source = tempfile::tempdir().unwrap();
        let (package, package_id) =
            publish(&channel, &operator, source.path(), "reserved", &FILES).await;
        let address = sandbox.node().address;
        let here = SimKiosk::healthy(
            address,
            &operator,
            "K-R1",
            vec![
                Some(blank_drive("D-1", CAPACITY)),
                Some(blank_drive("D-2", CAPACITY)),
                None,
            ],
        )
        .await;
        let elsewhere = SimKiosk::healthy(address, &operator, "K-R2", vec![None]).await;
        let user = customer_with_deposit(&channel).await;
        let other = customer_with_deposit(&channel).await;
        let request = reservation_request("K-R1", &package_id, CAPACITY, true, 2, "r-1");

        // A package the catalog does not hold, and a capacity below the package: the field.
        let unknown = reservation_request(
            "K-R1",
            &uuid::Uuid::new_v4().to_string(),
            CAPACITY,
            false,
            1,
            "r-unknown",
        );
        let refused = create_reservation(&channel, &user.token, unknown)
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{backend}: {refused:?}"
        );
        assert_eq!(
            bad_fields(&refused),
            ["choice.spec.item_type.content_package_id"]
        );
        let small = reservation_request("K-R1", &package_id, MIB, false, 1, "r-small");
        let refused = create_reservation(&channel, &user.token, small)
            .await
            .unwrap_err();
        assert_eq!(
            bad_fields(&refused),
            ["choice.spec.item_type.capacity_bytes"],
            "{backend}"
        );

        let order = eventually_reserved(&channel, &user.token, request.clone(), &backend).await;
        assert_eq!(order.kind, pb::OrderKind::Reservation as i32);
        assert_eq!(order.price, Some(price_for(2)), "{backend}");
        assert_eq!(order.content_title, "reserved", "{backend}");
        let again = create_reservation(&channel, &user.token, request)
            .await
            .unwrap();
        assert_eq!(
            again.order_id, order.order_id,
            "{backend}: same key, same order"
        );

        let ready =
            wait_for_state(&channel, &user.token, &order.order_id, &[S::ReadyForPickup]).await;
        assert!(!ready.item_id.is_empty(), "{backend}: {ready:?}");
        assert!(ready.pickup_deadline.is_some(), "{backend}");
        assert!(
            ready.write_protected,
            "{backend}: write protection as asked"
        );
        let pinned = ready.item_id.clone();
        assert_eq!(
            bay_of(&here, &pinned).map(|(state, _)| state),
            Some(BayState::Pinned {
                order_id: order.order_id.clone()
            }),
            "{backend}"
        );
        let drive = here.agent().bays().drive_dir(&pinned);
        for file in &package.files {
            assert_eq!(
                std::fs::read(drive.join(&file.path)).expect("on the drive"),
                std::fs::read(package.dir.join(&file.path)).expect("uploaded"),
                "{backend}: {} is the package's",
                file.path
            );
        }

        // Listed by a scan at its kiosk (no refusal); not by a scan elsewhere.
        let offer = scan(&channel, &user.token, &here.qr())
            .await
            .expect("scan here");
        let listed: Vec<&str> = offer
            .ready_reservations
            .iter()
            .map(|o| o.order_id.as_str())
            .collect();
        assert_eq!(listed, [order.order_id.as_str()], "{backend}");
        match scan(&channel, &user.token, &elsewhere.qr()).await {
            Ok(offer) => assert!(offer.ready_reservations.is_empty(), "{backend}"),
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{backend}"),
        }

        // Another user's reservation does not exist for them; the wrong kiosk is refused.
        for status in [
            cancel_reservation(&channel, &other.token, &order.order_id)
                .await
                .unwrap_err(),
            collect_reservation(&channel, &other.token, &order.order_id, &here.qr())
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::NotFound, "{backend}: {status:?}");
        }
        assert_refused(
            collect_reservation(&channel, &user.token, &order.order_id, &elsewhere.qr()).await,
            "WRONG_KIOSK",
            &format!("{backend}: collect elsewhere"),
        );

        let collecting = collect_reservation(&channel, &user.token, &order.order_id, &here.qr())
            .await
            .expect("collect");
        assert!(
            [S::Dispensing as i32, S::Lent as i32].contains(&collecting.state),
            "{backend}: {collecting:?}"
        );
        let lent = wait_for_state(&channel, &user.token, &order.order_id, &[S::Lent]).await;
        assert_eq!(lent.item_id, pinned, "{backend}: the pinned drive was lent");
        let again = collect_reservation(&channel, &user.token, &order.order_id, &here.qr())
            .await
            .expect("collect again");
        assert_eq!(again.order_id, order.order_id);
        assert_eq!(here.eject_count(&pinned), 1, "{backend}: lent once");
        assert_refused(
            cancel_reservation(&channel, &user.token, &order.order_id).await,
            "NOT_CANCELLABLE",
            &format!("{backend}: cancel once lent"),
        );

        // Returned at the other kiosk: the rental life cycle closes it at its price.
        let mut back = blank_drive(&pinned, CAPACITY);
        back.write_protected = true;
        back.content_package_id = Some(package_id.clone());
        elsewhere.insert("A1", back).await;
        let closed = wait_for_state(&channel, &user.token, &order.order_id, &[S::Closed]).await;
        assert_eq!(closed.returned_kiosk_id, "K-R2", "{backend}");
        assert_eq!(closed.amount_charged, Some(price_for(2)), "{backend}");
        assert_audit_clean(&channel, &operator, &format!("{backend}: after return")).await;
        sandbox.stop().await;
    }
}

/// Refunded in full with a reason; the audit agrees.
async fn assert_refunded_in_full(
    channel: &Channel,
    user: &str,
    operator: &str,
    order_id: &str,
    context: &str,
) -> pb::Order {
    let refunded = wait_for_state(channel, user, order_id, &[S::Refunded]).await;
    assert_eq!(
        refunded.amount_refunded, refunded.amount_charged,
        "{context}: {refunded:?}"
    );
    let history = sneakernet_integration_tests::rentals::list_orders(channel, user)
        .await
        .unwrap();
    assert!(history.iter().any(|o| o.order_id == order_id));
    assert_audit_clean(channel, operator, context).await;
    refunded
}

#[tokio::test]
async fn provisioning_that_fails_or_never_reaches_an_offline_kiosk_is_cancelled_and_refunded_with_its_reason()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |config| {
            config.orders.provision_deadline = Duration::from_secs(8);
        })
        .await;
        let source = tempfile::tempdir().unwrap();
        let (_, package_id) = publish(&channel, &operator, source.path(), "failing", &FILES).await;
        let address = sandbox.node().address;
        // A drive of exactly the package's size: orders lets it take the package, the kiosk
        // finds no room for the manifest beside it (DRIVE_FULL).
        let exact: u64 = FILES.iter().map(|(_, size)| size).sum();
        let kiosk = SimKiosk::healthy(
            address,
            &operator,
            "K-F1",
            vec![
                Some(blank_drive("D-1", CAPACITY)),
                Some(blank_drive("D-2", exact)),
            ],
        )
        .await;

        let user = customer_with_deposit(&channel).await;
        let full = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-F1", &package_id, exact, false, 1, "f-full"),
            &backend,
        )
        .await;
        let refunded = assert_refunded_in_full(
            &channel,
            &user.token,
            &operator,
            &full.order_id,
            &format!("{backend}: too small"),
        )
        .await;
        let reasons = order_reasons(&channel, &user.token, &full.order_id).await;
        assert!(
            reasons.iter().any(|r| r.contains("does not fit")),
            "{backend}: the user reads why: {reasons:?} {refunded:?}"
        );

        // A chunk corrupted in the store: the kiosk cannot copy the content intact.
        let manifest =
            sneakernet_integration_tests::content::manifest(&channel, &operator, &package_id).await;
        let manifest =
            sneakernet_kiosk_agent::content_source::Manifest::try_from(manifest).expect("manifest");
        let victim = manifest
            .files
            .iter()
            .find(|f| f.path == "films/feature.mkv")
            .unwrap()
            .chunks[1];
        let path = sneakernet_integration_tests::content::local_chunk_path(
            &sandbox.config,
            victim.as_bytes(),
        );
        let mut bytes = std::fs::read(&path).expect("stored chunk");
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let user = customer_with_deposit(&channel).await;
        let corrupt = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-F1", &package_id, CAPACITY, false, 1, "f-corrupt"),
            &backend,
        )
        .await;
        assert_refunded_in_full(
            &channel,
            &user.token,
            &operator,
            &corrupt.order_id,
            &format!("{backend}: corrupt"),
        )
        .await;
        let reasons = order_reasons(&channel, &user.token, &corrupt.order_id).await;
        assert!(
            reasons.iter().any(|r| r.contains("refunded")),
            "{backend}: {reasons:?}"
        );
        wait_released(&kiosk, "D-1", &format!("{backend}: nothing pinned")).await;

        // A kiosk that goes offline with the provision in flight (its content never
        // answers, then it stops): past the deadline the reservation is cancelled, refunded.
        let (silent, _silent) = silent_address().await;
        let mut offline = SimKiosk::start_with(
            address,
            &operator,
            "K-F2",
            STATION,
            bays(vec![Some(blank_drive("D-9", CAPACITY))]),
            SimFaults::default(),
            |config| config.content.url = Some(format!("http://{silent}")),
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let stranded = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-F2", &package_id, CAPACITY, false, 1, "f-offline"),
            &backend,
        )
        .await;
        wait_for_state(
            &channel,
            &user.token,
            &stranded.order_id,
            &[S::Provisioning],
        )
        .await;
        offline.stop().await;
        assert_refunded_in_full(
            &channel,
            &user.token,
            &operator,
            &stranded.order_id,
            &format!("{backend}: offline"),
        )
        .await;
        let reasons = order_reasons(&channel, &user.token, &stranded.order_id).await;
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("in time") || r.contains("could not")),
            "{backend}: {reasons:?}"
        );
        sandbox.stop().await;
    }
}

/// Every reason the order's watch replays, oldest first.
async fn order_reasons(channel: &Channel, token: &str, order_id: &str) -> Vec<String> {
    let order = get_order(channel, token, order_id).await.expect("order");
    let mut reasons = vec![order.state_reason.clone()];
    let mut stream = sneakernet_integration_tests::rentals::watch(channel, token, order_id)
        .await
        .expect("watch");
    while let Ok(Some(message)) = stream.message().await {
        reasons.push(message.reason);
    }
    reasons
}

#[tokio::test]
async fn two_users_reserving_the_last_free_drive_get_one_reservation_and_one_refusal_and_no_walk_up_lend_takes_the_pinned_drive()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(blank_drive("D-1", CAPACITY))],
        )
        .await;
        let first = customer_with_deposit(&channel).await;
        let second = customer_with_deposit(&channel).await;
        // Wait until orders knows the drive, then race for it: a blank reservation each.
        let probe = customer_with_deposit(&channel).await;
        eventually(WAIT, "the kiosk's drive reached orders", || async {
            scan(&channel, &probe.token, &kiosk.qr()).await.is_ok()
        })
        .await;
        let (a, b) = tokio::join!(
            create_reservation(
                &channel,
                &first.token,
                reservation_request("K-1", "", CAPACITY, false, 1, "race")
            ),
            create_reservation(
                &channel,
                &second.token,
                reservation_request("K-1", "", CAPACITY, false, 1, "race")
            ),
        );
        let (won, lost, loser) = match (a, b) {
            (Ok(order), Err(status)) => (order, status, &second),
            (Err(status), Ok(order)) => (order, status, &first),
            other => panic!("{backend}: one reservation and one refusal, got {other:?}"),
        };
        let winner = if loser.user_id == first.user_id {
            &second
        } else {
            &first
        };
        assert_refused::<()>(
            Err(lost),
            "TYPE_UNAVAILABLE",
            &format!("{backend}: the loser"),
        );
        assert!(
            list_orders(&channel, &loser.token)
                .await
                .unwrap()
                .is_empty(),
            "{backend}: nothing charged to the loser"
        );
        let ready =
            wait_for_state(&channel, &winner.token, &won.order_id, &[S::ReadyForPickup]).await;
        assert_eq!(ready.item_id, "D-1", "{backend}");
        assert_eq!(
            bay_of(&kiosk, "D-1"),
            Some((
                BayState::Pinned {
                    order_id: won.order_id.clone()
                },
                true
            )),
            "{backend}: a blank drive, pinned"
        );

        // Walk-up: orders offers nothing, and a lend by type straight to the kiosk finds no
        // drive it may take.
        assert_refused(
            scan(&channel, &probe.token, &kiosk.qr()).await,
            "NOTHING_AVAILABLE",
            &format!("{backend}: walk-up scan"),
        );
        let spec = common::ItemSpec {
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: CAPACITY,
                content_package_id: String::new(),
            }),
            write_protect: false,
        };
        let lend = gateway::CommandPayload {
            kind: Some(gateway::command_payload::Kind::Lend(gateway::LendCommand {
                target: Some(gateway::lend_command::Target::Spec(spec)),
                order_id: "walk-up".into(),
            })),
        };
        let command = kiosk::send_command(&channel, &operator, lend, "walk-up-lend").await;
        let record = kiosk::finished_command(&channel, &operator, &command, WAIT).await;
        assert_eq!(
            record.state,
            gateway::CommandState::Failed as i32,
            "{backend}: {record:?}"
        );
        assert_eq!(kiosk.eject_count("D-1"), 0, "{backend}");
        assert_audit_clean(&channel, &operator, &format!("{backend}: race")).await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn cancelling_before_or_at_ready_refunds_everything_and_releases_the_pinned_drive_wiped() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let source = tempfile::tempdir().unwrap();
        let (_, package_id) =
            publish(&channel, &operator, source.path(), "cancelled", &FILES).await;
        let address = sandbox.node().address;
        let kiosk = SimKiosk::healthy(
            address,
            &operator,
            "K-C1",
            vec![
                Some(blank_drive("D-1", CAPACITY)),
                Some(blank_drive("D-2", CAPACITY)),
            ],
        )
        .await;
        let (silent, _silent) = silent_address().await;
        let mut slow = SimKiosk::start_with(
            address,
            &operator,
            "K-C2",
            STATION,
            bays(vec![Some(blank_drive("D-7", CAPACITY))]),
            SimFaults::default(),
            |config| config.content.url = Some(format!("http://{silent}")),
        )
        .await;

        // Before READY (the kiosk is still fetching the content): everything back.
        let user = customer_with_deposit(&channel).await;
        let early = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-C2", &package_id, CAPACITY, false, 1, "c-early"),
            &backend,
        )
        .await;
        let cancelled = cancel_reservation(&channel, &user.token, &early.order_id)
            .await
            .expect("cancel");
        assert!(
            [S::Cancelled as i32, S::Refunded as i32].contains(&cancelled.state),
            "{backend}: {cancelled:?}"
        );
        assert_refunded_in_full(
            &channel,
            &user.token,
            &operator,
            &early.order_id,
            &format!("{backend}: early"),
        )
        .await;
        let again = cancel_reservation(&channel, &user.token, &early.order_id)
            .await
            .expect("again");
        assert_eq!(again.state, S::Refunded as i32, "{backend}: unchanged");

        // At READY: everything back, the pinned drive released and wiped.
        let user = customer_with_deposit(&channel).await;
        let order = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-C1", &package_id, CAPACITY, true, 3, "c-ready"),
            &backend,
        )
        .await;
        let ready =
            wait_for_state(&channel, &user.token, &order.order_id, &[S::ReadyForPickup]).await;
        cancel_reservation(&channel, &user.token, &ready.order_id)
            .await
            .expect("cancel");
        let refunded = assert_refunded_in_full(
            &channel,
            &user.token,
            &operator,
            &order.order_id,
            &format!("{backend}: at ready"),
        )
        .await;
        assert_eq!(refunded.amount_refunded, Some(price_for(3)), "{backend}");
        wait_released(&kiosk, &ready.item_id, &format!("{backend}: cancelled")).await;

        slow.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_rental_is_not_cancellable_and_bad_requests_name_their_fields() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let user = customer_with_deposit(&channel).await;
        let status = sneakernet_integration_tests::rentals::orders(&channel)
            .create_reservation(authed(pb::CreateReservationRequest::default(), &user.token))
            .await
            .unwrap_err();
        assert_eq!(
            bad_fields(&status),
            [
                "kiosk_id",
                "choice.spec",
                "choice.duration_days",
                "idempotency_key"
            ],
            "{backend}"
        );
        let missing = cancel_reservation(&channel, &user.token, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{backend}");
        // A real rental, cancelled: refused as NOT_CANCELLABLE, and the order goes on.
        let kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-R1",
            vec![Some(blank_drive("D-1", CAPACITY))],
        )
        .await;
        let drive = common::ItemType {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: CAPACITY,
            content_package_id: String::new(),
        };
        let offer = scan_until_available(&channel, &user.token, &kiosk, &drive, 1).await;
        let rental = create_rental(
            &channel,
            &user.token,
            rental_request(&offer, &drive, 1, None, "r-not-cancellable"),
        )
        .await
        .expect("rental");
        assert_refused(
            cancel_reservation(&channel, &user.token, &rental.order_id).await,
            "NOT_CANCELLABLE",
            &format!("{backend}: a rental"),
        );
        let lent = wait_for_state(&channel, &user.token, &rental.order_id, &[S::Lent]).await;
        assert_eq!(lent.item_id, "D-1", "{backend}: the rental went on");
        sandbox.stop().await;
    }
}

/// A ready reservation whose kiosk went offline and whose pickup window then passed: the
/// order EXPIRED (keeping the base price, audit clean) while the kiosk is still away, its
/// release waiting in the gateway's log.
struct OfflineNoShow {
    sandbox: Sandbox,
    channel: Channel,
    kiosk: SimKiosk,
    user: sneakernet_integration_tests::rentals::Customer,
    operator: String,
    item_id: String,
}

async fn no_show_at_an_offline_kiosk(backend: &Backend, key: &str) -> OfflineNoShow {
    let (sandbox, channel, operator) = start(backend, fast_links).await;
    let source = tempfile::tempdir().unwrap();
    let (_, package_id) = publish(&channel, &operator, source.path(), key, &FILES).await;
    let mut kiosk = SimKiosk::healthy(
        sandbox.node().address,
        &operator,
        "K-C1",
        vec![Some(blank_drive("D-1", CAPACITY))],
    )
    .await;
    let mut user = customer_with_deposit(&channel).await;
    let order = eventually_reserved(
        &channel,
        &user.token,
        reservation_request("K-C1", &package_id, CAPACITY, false, 3, key),
        backend,
    )
    .await;
    let ready = wait_for_state(&channel, &user.token, &order.order_id, &[S::ReadyForPickup]).await;
    kiosk.stop().await;
    // Orders learns the kiosk is gone from the gateway's events (a scan, which changes
    // nothing, says when); then collecting is refused and the order stays ready.
    eventually(WAIT, "orders to see the kiosk offline", || async {
        scan(&channel, &user.token, &kiosk.qr())
            .await
            .err()
            .and_then(|s| sneakernet_integration_tests::rentals::subject_of(&s, "KIOSK_OFFLINE"))
            .is_some()
    })
    .await;
    let refused = collect_reservation(&channel, &user.token, &order.order_id, &kiosk.qr())
        .await
        .expect_err("collecting at an offline kiosk is refused");
    assert!(
        sneakernet_integration_tests::rentals::subject_of(&refused, "KIOSK_OFFLINE").is_some(),
        "{backend}: {refused:?}"
    );
    sandbox.clock.advance(chrono::Duration::hours(25));
    // Tokens are judged by the clock that issued them: the old ones expired meanwhile.
    user.log_in_again(&channel).await;
    let operator =
        sneakernet_integration_tests::rentals::operator_token(&channel, &sandbox.config).await;
    let expired = wait_for_state(&channel, &user.token, &order.order_id, &[S::Expired]).await;
    let price = price_for(3).minor_units;
    assert_eq!(
        expired.amount_refunded.as_ref().map(|m| m.minor_units),
        Some(price - BASE_PRICE),
        "{backend}: the base price is kept: {expired:?}"
    );
    assert_audit_clean(&channel, &operator, &format!("{backend}: no-show")).await;
    OfflineNoShow {
        sandbox,
        channel,
        kiosk,
        user,
        operator,
        item_id: ready.item_id,
    }
}

#[tokio::test]
async fn a_no_show_at_a_kiosk_gone_offline_expires_keeping_the_base_price_with_a_clean_audit() {
    for backend in backends() {
        // A no-show whose kiosk went offline: collecting says so, the window runs on, the
        // reservation expires keeping the base price, and the drive is released (unpinned and
        // wiped) once the kiosk is back.
        let mut no_show = no_show_at_an_offline_kiosk(&backend, "c-no-show").await;
        // Back online, the kiosk gets the release that waited in the log.
        no_show.kiosk.restart().await;
        wait_released(
            &no_show.kiosk,
            &no_show.item_id,
            &format!("{backend}: no-show"),
        )
        .await;
        assert_audit_clean(
            &no_show.channel,
            &no_show.operator,
            &format!("{backend}: released"),
        )
        .await;
        no_show.kiosk.stop().await;
        no_show.sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_release_that_expired_while_its_kiosk_was_offline_is_sent_again_when_the_kiosk_is_back() {
    for backend in backends() {
        let mut no_show = no_show_at_an_offline_kiosk(&backend, "c-lapsed").await;
        // The kiosk stays away past the release's own deadline: the gateway lets that
        // command lapse and never delivers it. When the kiosk is back, its inventory still
        // shows the drive pinned for a finished order, and orders releases it again.
        no_show.sandbox.clock.advance(chrono::Duration::days(8));
        no_show.user.log_in_again(&no_show.channel).await;
        let operator = sneakernet_integration_tests::rentals::operator_token(
            &no_show.channel,
            &no_show.sandbox.config,
        )
        .await;
        no_show.kiosk.restart().await;
        wait_released(
            &no_show.kiosk,
            &no_show.item_id,
            &format!("{backend}: released again"),
        )
        .await;
        // Orders sees it ready again too: the next walk-up scan offers it (the QR code is
        // judged by the sandbox's clock, eight days ahead).
        eventually(
            WAIT,
            &format!("{backend}: the drive offered again"),
            || async {
                let qr = qr_payload_at(
                    &no_show.kiosk.id,
                    &no_show.kiosk.qr_secret,
                    Clock::now(&no_show.sandbox.clock),
                );
                scan(&no_show.channel, &no_show.user.token, &qr)
                    .await
                    .is_ok_and(|offer| offer.lines.iter().any(|line| line.available > 0))
            },
        )
        .await;
        assert_audit_clean(
            &no_show.channel,
            &operator,
            &format!("{backend}: released again"),
        )
        .await;
        no_show.kiosk.stop().await;
        no_show.sandbox.stop().await;
    }
}

#[tokio::test]
async fn collecting_before_ready_is_not_ready_and_past_the_pickup_window_is_pickup_expired_and_not_cancellable()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let source = tempfile::tempdir().unwrap();
        let (_, package_id) = publish(&channel, &operator, source.path(), "windows", &FILES).await;
        let address = sandbox.node().address;
        let kiosk = SimKiosk::healthy(
            address,
            &operator,
            "K-W1",
            vec![Some(blank_drive("D-1", CAPACITY))],
        )
        .await;
        let (silent, _silent) = silent_address().await;
        let mut slow = SimKiosk::start_with(
            address,
            &operator,
            "K-W2",
            STATION,
            bays(vec![Some(blank_drive("D-7", CAPACITY))]),
            SimFaults::default(),
            |config| config.content.url = Some(format!("http://{silent}")),
        )
        .await;

        // Still provisioning (the kiosk cannot fetch the content): NOT_READY.
        let user = customer_with_deposit(&channel).await;
        let early = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-W2", &package_id, CAPACITY, false, 1, "w-early"),
            &backend,
        )
        .await;
        assert_refused(
            collect_reservation(&channel, &user.token, &early.order_id, &slow.qr()).await,
            "NOT_READY",
            &format!("{backend}: provisioning"),
        );

        // Ready, then the pickup window (a day) passes: collecting is PICKUP_EXPIRED and
        // cancelling is NOT_CANCELLABLE, whether or not the no-show has been booked yet.
        let mut user = customer_with_deposit(&channel).await;
        let order = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-W1", &package_id, CAPACITY, false, 3, "w-ready"),
            &backend,
        )
        .await;
        wait_for_state(&channel, &user.token, &order.order_id, &[S::ReadyForPickup]).await;
        sandbox.clock.advance(chrono::Duration::hours(25));
        user.log_in_again(&channel).await;
        let qr = qr_payload_at(&kiosk.id, &kiosk.qr_secret, Clock::now(&sandbox.clock));
        assert_refused(
            collect_reservation(&channel, &user.token, &order.order_id, &qr).await,
            "PICKUP_EXPIRED",
            &format!("{backend}: past the window"),
        );
        assert_refused(
            cancel_reservation(&channel, &user.token, &order.order_id).await,
            "NOT_CANCELLABLE",
            &format!("{backend}: past the window"),
        );
        let expired = wait_for_state(&channel, &user.token, &order.order_id, &[S::Expired]).await;
        assert!(expired.item_id == "D-1", "{backend}: {expired:?}");
        slow.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_no_show_at_an_online_kiosk_expires_with_its_fee_and_the_drive_is_released_for_the_next_user()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let source = tempfile::tempdir().unwrap();
        let (_, package_id) = publish(&channel, &operator, source.path(), "online", &FILES).await;
        let kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-N1",
            vec![Some(blank_drive("D-1", CAPACITY))],
        )
        .await;
        let mut user = customer_with_deposit(&channel).await;
        let order = eventually_reserved(
            &channel,
            &user.token,
            reservation_request("K-N1", &package_id, CAPACITY, false, 2, "n-online"),
            &backend,
        )
        .await;
        let ready =
            wait_for_state(&channel, &user.token, &order.order_id, &[S::ReadyForPickup]).await;
        assert_eq!(ready.item_id, "D-1", "{backend}");
        // The pickup window (24 h by default) passes while the kiosk stays online.
        sandbox.clock.advance(chrono::Duration::hours(25));
        user.log_in_again(&channel).await;
        let operator =
            sneakernet_integration_tests::rentals::operator_token(&channel, &sandbox.config).await;
        let expired = wait_for_state(&channel, &user.token, &order.order_id, &[S::Expired]).await;
        assert_eq!(
            expired.amount_refunded.as_ref().map(|m| m.minor_units),
            Some(price_for(2).minor_units - BASE_PRICE),
            "{backend}: the base price is kept as the no-show fee: {expired:?}"
        );
        // The kiosk is there: the release reaches it at once, and the drive is blank again.
        wait_released(&kiosk, "D-1", &format!("{backend}: online no-show")).await;
        // A code shown on the kiosk's screen now, by the moved clock: what is refused is the
        // reservation, not the scan.
        let qr = qr_payload_at(&kiosk.id, &kiosk.qr_secret, Clock::now(&sandbox.clock));
        assert_refused(
            collect_reservation(&channel, &user.token, &order.order_id, &qr).await,
            "PICKUP_EXPIRED",
            &format!("{backend}: collected after the window"),
        );
        // The next user reserves that drive.
        let next_user = customer_with_deposit(&channel).await;
        let next = eventually_reserved(
            &channel,
            &next_user.token,
            reservation_request("K-N1", &package_id, CAPACITY, false, 1, "n-next"),
            &backend,
        )
        .await;
        let next_ready = wait_for_state(
            &channel,
            &next_user.token,
            &next.order_id,
            &[S::ReadyForPickup],
        )
        .await;
        assert_eq!(next_ready.item_id, "D-1", "{backend}: {next_ready:?}");
        assert_audit_clean(&channel, &operator, &format!("{backend}: online no-show")).await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_reservation_key_reused_for_the_same_request_answers_the_same_order_and_for_another_is_invalid()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let source = tempfile::tempdir().unwrap();
        let (_, package_id) = publish(&channel, &operator, source.path(), "keys", &FILES).await;
        let _kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-I1",
            vec![
                Some(blank_drive("D-1", CAPACITY)),
                Some(blank_drive("D-2", CAPACITY)),
            ],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let request = reservation_request("K-I1", &package_id, CAPACITY, false, 1, "i-key");
        let first = eventually_reserved(&channel, &user.token, request.clone(), &backend).await;
        let again = create_reservation(&channel, &user.token, request.clone())
            .await
            .expect("the same request again");
        assert_eq!(
            again.order_id, first.order_id,
            "{backend}: one order per key"
        );
        // The same key with another duration, another kiosk, another package: refused,
        // naming the key, and nothing more charged.
        let mut longer = request.clone();
        longer.choice.as_mut().expect("choice").duration_days = 2;
        let mut other_kiosk = request.clone();
        other_kiosk.kiosk_id = "K-I2".into();
        let mut blank = request;
        blank
            .choice
            .as_mut()
            .and_then(|c| c.spec.as_mut())
            .and_then(|s| s.item_type.as_mut())
            .expect("item type")
            .content_package_id
            .clear();
        for (what, changed) in [
            ("another duration", longer),
            ("another kiosk", other_kiosk),
            ("another package", blank),
        ] {
            let status = create_reservation(&channel, &user.token, changed)
                .await
                .expect_err(what);
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{backend}: {what}: {status:?}"
            );
            assert_eq!(
                bad_fields(&status),
                ["idempotency_key"],
                "{backend}: {what}"
            );
        }
        let orders = list_orders(&channel, &user.token).await.expect("orders");
        assert_eq!(orders.len(), 1, "{backend}: one order: {orders:?}");
        assert_audit_clean(&channel, &operator, &format!("{backend}: keys")).await;
        sandbox.stop().await;
    }
}
