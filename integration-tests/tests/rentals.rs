//! Walk-up rentals end to end (issue #5, seed flow 1): an operator registers kiosks with their
//! QR secrets and sets prices; real kiosk agents with simulated bays hold the items; users pay
//! a deposit, scan a kiosk's QR code, rent, follow the order, and return the item at any
//! kiosk. Money and items stay consistent under races, retries, declines, jams and a killed
//! node, and FleetService.Audit agrees. Only gRPC, on every backend of this run.

use std::time::Duration;

use sneakernet_integration_tests::rentals::{
    self, CARD_CHARGES_THEN_TIMES_OUT, CARD_DECLINED, CARD_OK, Customer, DEPOSIT_MINOR_UNITS,
    SimKiosk, WAIT, assert_audit_clean, assert_moves_along, assert_refused, bad_fields, bays,
    create_rental, customer_with_deposit, drive, drive_type, follow, get_order, line, list_orders,
    movements, power_bank, power_bank_type, price_for, pricing, rental_request, scan,
    scan_until_available, set_default_pricing, start_priced, subject_of, wait_for_state, watch,
};
use sneakernet_integration_tests::{
    Backend, Child, Sandbox, authed, backends, binary, connect, eventually, test_config,
};
use sneakernet_kiosk_agent::config::SimFaults;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

async fn start(backend: &Backend) -> (Sandbox, Channel, String) {
    start_priced(
        backend,
        &[common::ItemKind::Drive, common::ItemKind::PowerBank],
    )
    .await
}

fn zero_or_unset(money: &Option<common::Money>) -> bool {
    money.as_ref().is_none_or(|m| m.minor_units == 0)
}

#[tokio::test]
async fn a_walk_up_rental_is_lent_by_the_kiosk_and_closed_when_returned_at_another_kiosk() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let address = sandbox.node().address;
        let k1 = SimKiosk::healthy(
            address,
            &operator,
            "K-1",
            vec![Some(drive("D-1")), Some(drive("D-2"))],
        )
        .await;
        let mut k2 =
            SimKiosk::healthy(address, &operator, "K-2", vec![Some(drive("D-9")), None]).await;
        let user = customer_with_deposit(&channel).await;

        // First instruction: the offer lists the type, how many, and the price per length.
        let offer = scan_until_available(&channel, &user.token, &k1, &drive_type(), 2).await;
        assert_eq!(offer.kiosk_id, "K-1", "{backend}");
        assert!(!offer.offer_id.is_empty(), "{backend}");
        assert!(!offer.site_name.is_empty(), "{backend}");
        let expires = offer.expires_at.expect("expires_at");
        assert!(
            expires.seconds > chrono::Utc::now().timestamp(),
            "{backend}: offer already expired: {expires:?}"
        );
        let drives = line(&offer, &drive_type()).expect("a drive line");
        let prices: Vec<(u32, Option<common::Money>)> = drives
            .prices
            .iter()
            .map(|p| (p.duration_days, p.price.clone()))
            .collect();
        let expected: Vec<(u32, Option<common::Money>)> = (1..=rentals::MAX_DURATION_DAYS)
            .map(|d| (d, Some(price_for(d))))
            .collect();
        assert_eq!(prices, expected, "{backend}: every length, shortest first");
        assert_eq!(drives.pricing, Some(pricing()), "{backend}");
        assert_ne!(
            drives.write_protect,
            pb::WriteProtectOption::NotApplicable as i32,
            "{backend}: a drive's write protection can be set"
        );

        // Second instruction, paid with the card remembered from the deposit.
        let created = create_rental(
            &channel,
            &user.token,
            rental_request(&offer, &drive_type(), 2, None, "walk-up-1"),
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: create rental: {s:?}"));
        assert_eq!(created.kind, pb::OrderKind::Rental as i32, "{backend}");
        assert_eq!(created.user_id, user.user_id, "{backend}");
        assert_eq!(created.kiosk_id, "K-1", "{backend}");
        assert_eq!(created.price, Some(price_for(2)), "{backend}");
        assert_eq!(created.amount_charged, Some(price_for(2)), "{backend}");
        assert_eq!(
            created.choice.as_ref().map(|c| c.duration_days),
            Some(2),
            "{backend}"
        );
        assert!(
            [S::Paid, S::Dispensing, S::Lent]
                .iter()
                .any(|s| *s as i32 == created.state),
            "{backend}: answered once charged: {created:?}"
        );

        // The result shown to the user: the order's states until the item is out.
        let mut stream = watch(&channel, &user.token, &created.order_id)
            .await
            .unwrap_or_else(|s| panic!("{backend}: watch: {s:?}"));
        let mut seen = follow(&mut stream, "until LENT", |m| m.state == S::Lent as i32).await;
        eprintln!("{backend}: watched {:?}", rentals::states(&seen));
        assert_moves_along(
            &seen,
            &[S::Paid, S::Dispensing, S::Lent],
            &backend.to_string(),
        );
        let lent = seen.last().and_then(|m| m.order.clone()).expect("order");
        assert!(
            ["D-1", "D-2"].contains(&lent.item_id.as_str()),
            "{backend}: the kiosk names an item it holds: {lent:?}"
        );
        assert_eq!(k1.eject_count(&lent.item_id), 1, "{backend}");
        assert_eq!(
            k1.eject_count("D-1") + k1.eject_count("D-2"),
            1,
            "{backend}: one item left the kiosk"
        );
        let lent_at = lent.lent_at.expect("lent_at");
        let due_at = lent.due_at.expect("due_at");
        assert_eq!(
            due_at.seconds - lent_at.seconds,
            2 * 24 * 3600,
            "{backend}: due two days after lent"
        );

        // GetOrder and ListOrders agree with the stream.
        let got = get_order(&channel, &user.token, &created.order_id)
            .await
            .expect("get order");
        assert_eq!(got.state, S::Lent as i32, "{backend}");
        assert_eq!(got.item_id, lent.item_id, "{backend}");
        let listed = list_orders(&channel, &user.token).await.expect("list");
        assert_eq!(listed.len(), 1, "{backend}: {listed:?}");
        assert_eq!(listed[0].order_id, created.order_id, "{backend}");
        assert_eq!(listed[0].state, S::Lent as i32, "{backend}");
        assert_audit_clean(&channel, &operator, &format!("{backend}: while lent")).await;

        // The user brings it back to another kiosk, on time.
        let mut returned = drive(&lent.item_id);
        returned.write_protected = lent.write_protected;
        k2.insert("A2", returned).await;
        let rest = follow(&mut stream, "until CLOSED", |m| m.state == S::Closed as i32).await;
        seen.extend(rest);
        assert_moves_along(
            &seen,
            &[S::Paid, S::Dispensing, S::Lent, S::Returned, S::Closed],
            &backend.to_string(),
        );
        let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends after a terminal state");
        assert!(matches!(end, Ok(None)), "{backend}: ends with OK: {end:?}");
        let closed = get_order(&channel, &user.token, &created.order_id)
            .await
            .expect("get order");
        assert_eq!(closed.state, S::Closed as i32, "{backend}");
        assert_eq!(closed.kiosk_id, "K-1", "{backend}");
        assert_eq!(closed.returned_kiosk_id, "K-2", "{backend}");
        assert_eq!(closed.item_id, lent.item_id, "{backend}");
        assert_eq!(closed.amount_charged, Some(price_for(2)), "{backend}");
        assert!(
            zero_or_unset(&closed.amount_refunded),
            "{backend}: {closed:?}"
        );
        let charges = movements(&closed, pb::MoneyMovementKind::Price);
        assert_eq!(charges.len(), 1, "{backend}: {:?}", closed.movements);
        assert_eq!(charges[0].amount, Some(price_for(2)), "{backend}");
        assert!(
            movements(&closed, pb::MoneyMovementKind::LateFee).is_empty(),
            "{backend}: returned on time"
        );
        assert!(closed.returned_at.is_some() && closed.closed_at.is_some());
        let audit = assert_audit_clean(&channel, &operator, &format!("{backend}: closed")).await;
        assert!(audit.orders_checked >= 1, "{backend}: {audit:?}");

        // Nothing is out any more: the user may rent again.
        let again = scan(&channel, &user.token, &k1.qr())
            .await
            .unwrap_or_else(|s| panic!("{backend}: scan after the return: {s:?}"));
        assert!(
            line(&again, &drive_type()).is_some(),
            "{backend}: {again:?}"
        );

        k2.stop().await;
        let mut k1 = k1;
        k1.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_users_racing_for_the_last_unit_get_one_order_and_ninety_nine_refusals() {
    const USERS: usize = 100;
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1")), None],
        )
        .await;

        let mut users: Vec<Customer> = Vec::new();
        for _ in 0..USERS / 10 {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..10 {
                let channel = channel.clone();
                batch.spawn(async move { customer_with_deposit(&channel).await });
            }
            users.extend(batch.join_all().await);
        }
        let mut offers = Vec::new();
        for user in &users {
            offers.push(
                scan_until_available(&channel, &user.token, &kiosk, &power_bank_type(), 1).await,
            );
        }

        let mut racers = tokio::task::JoinSet::new();
        for (n, (user, offer)) in users.iter().zip(&offers).enumerate() {
            let channel = channel.clone();
            let token = user.token.clone();
            let request = rental_request(offer, &power_bank_type(), 1, None, &format!("race-{n}"));
            racers.spawn(async move { (n, create_rental(&channel, &token, request).await) });
        }
        let results = racers.join_all().await;

        let winners: Vec<&(usize, Result<pb::Order, tonic::Status>)> =
            results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(
            winners.len(),
            1,
            "{backend}: exactly one order; errors: {:?}",
            results
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().map(|s| (s.code(), s.message().to_owned())))
                .collect::<Vec<_>>()
        );
        let (winner, order) = match winners[0] {
            (n, Ok(order)) => (*n, order.clone()),
            _ => unreachable!(),
        };
        for (n, result) in &results {
            if *n == winner {
                continue;
            }
            let status = assert_refused(
                result.clone(),
                "TYPE_UNAVAILABLE",
                &format!("{backend}: racer {n}"),
            );
            assert!(
                subject_of(&status, "TYPE_UNAVAILABLE")
                    .is_some_and(|s| s.starts_with("item_types/")),
                "{backend}: {status:?}"
            );
        }

        let lent =
            wait_for_state(&channel, &users[winner].token, &order.order_id, &[S::Lent]).await;
        assert_eq!(lent.item_id, "P-1", "{backend}");
        assert_eq!(kiosk.eject_count("P-1"), 1, "{backend}");
        assert_eq!(lent.amount_charged, Some(price_for(1)), "{backend}");
        for (n, user) in users.iter().enumerate() {
            let listed = list_orders(&channel, &user.token).await.expect("list");
            if n == winner {
                assert_eq!(listed.len(), 1, "{backend}");
            } else {
                assert!(listed.is_empty(), "{backend}: racer {n} has {listed:?}");
            }
        }
        // The kiosk's only unit is out: nothing left to offer.
        let loser = &users[(winner + 1) % USERS];
        assert_refused(
            scan(&channel, &loser.token, &kiosk.qr()).await,
            "NOTHING_AVAILABLE",
            &format!("{backend}: after the race"),
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_same_order_and_charges_once() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1")), Some(power_bank("P-2"))],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let offer =
            scan_until_available(&channel, &user.token, &kiosk, &power_bank_type(), 2).await;
        let request = rental_request(&offer, &power_bank_type(), 1, None, "same-key");

        let first = create_rental(&channel, &user.token, request.clone())
            .await
            .unwrap_or_else(|s| panic!("{backend}: first: {s:?}"));
        let again = create_rental(&channel, &user.token, request.clone())
            .await
            .unwrap_or_else(|s| panic!("{backend}: again: {s:?}"));
        assert_eq!(again.order_id, first.order_id, "{backend}");

        let mut longer = request.clone();
        longer.choice.as_mut().expect("choice").duration_days = 2;
        let status = create_rental(&channel, &user.token, longer)
            .await
            .expect_err("same key, different request");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{backend}: {status:?}"
        );
        assert!(
            bad_fields(&status).contains(&"idempotency_key".to_owned()),
            "{backend}: {status:?}"
        );

        let lent = wait_for_state(&channel, &user.token, &first.order_id, &[S::Lent]).await;
        // Whatever its state now, the same key answers the same order.
        let later = create_rental(&channel, &user.token, request.clone())
            .await
            .unwrap_or_else(|s| panic!("{backend}: after lent: {s:?}"));
        assert_eq!(later.order_id, first.order_id, "{backend}");
        assert_eq!(later.state, S::Lent as i32, "{backend}");
        assert_eq!(lent.amount_charged, Some(price_for(1)), "{backend}");
        assert_eq!(
            movements(&lent, pb::MoneyMovementKind::Price).len(),
            1,
            "{backend}: charged once: {:?}",
            lent.movements
        );
        assert_eq!(
            kiosk.eject_count("P-1") + kiosk.eject_count("P-2"),
            1,
            "{backend}: lent once"
        );
        assert_eq!(
            list_orders(&channel, &user.token).await.unwrap().len(),
            1,
            "{backend}"
        );

        // Two calls with one key at the same time: still one order, one charge.
        let other = customer_with_deposit(&channel).await;
        let offer =
            scan_until_available(&channel, &other.token, &kiosk, &power_bank_type(), 1).await;
        let request = rental_request(&offer, &power_bank_type(), 1, None, "twin-key");
        // ABORTED (the twin is still running) means "retry the same key later".
        let twin = || async {
            for _ in 0..20 {
                match create_rental(&channel, &other.token, request.clone()).await {
                    Err(status) if status.code() == Code::Aborted => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => return other,
                }
            }
            panic!("{backend}: still ABORTED after 20 tries");
        };
        let (a, b) = tokio::join!(twin(), twin());
        let (a, b) = (
            a.unwrap_or_else(|s| panic!("{backend}: twin a: {s:?}")),
            b.unwrap_or_else(|s| panic!("{backend}: twin b: {s:?}")),
        );
        assert_eq!(a.order_id, b.order_id, "{backend}");
        let lent = wait_for_state(&channel, &other.token, &a.order_id, &[S::Lent]).await;
        assert_eq!(lent.amount_charged, Some(price_for(1)), "{backend}");
        assert_eq!(
            list_orders(&channel, &other.token).await.unwrap().len(),
            1,
            "{backend}"
        );
        assert_eq!(
            kiosk.eject_count("P-1") + kiosk.eject_count("P-2"),
            2,
            "{backend}"
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_declined_card_makes_no_order_and_a_provider_timeout_charges_once() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1"))],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let offer =
            scan_until_available(&channel, &user.token, &kiosk, &power_bank_type(), 1).await;

        let declined = create_rental(
            &channel,
            &user.token,
            rental_request(
                &offer,
                &power_bank_type(),
                1,
                Some(CARD_DECLINED),
                "declined",
            ),
        )
        .await;
        assert_refused(
            declined,
            "PAYMENT_DECLINED",
            &format!("{backend}: declined card"),
        );
        assert!(
            list_orders(&channel, &user.token).await.unwrap().is_empty(),
            "{backend}: no order for a declined card"
        );
        // Nothing stays held for it.
        let offer =
            scan_until_available(&channel, &user.token, &kiosk, &power_bank_type(), 1).await;

        let request = rental_request(
            &offer,
            &power_bank_type(),
            1,
            Some(CARD_CHARGES_THEN_TIMES_OUT),
            "times-out",
        );
        let order = match create_rental(&channel, &user.token, request.clone()).await {
            Ok(order) => order,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{backend}: {status:?}");
                eprintln!("{backend}: the provider timed out; retrying with the same key");
                create_rental(&channel, &user.token, request.clone())
                    .await
                    .unwrap_or_else(|s| panic!("{backend}: retry with the same key: {s:?}"))
            }
        };
        let lent = wait_for_state(&channel, &user.token, &order.order_id, &[S::Lent]).await;
        assert_eq!(lent.amount_charged, Some(price_for(1)), "{backend}");
        assert_eq!(
            movements(&lent, pb::MoneyMovementKind::Price).len(),
            1,
            "{backend}: {:?}",
            lent.movements
        );
        let listed = list_orders(&channel, &user.token).await.unwrap();
        assert_eq!(listed.len(), 1, "{backend}: exactly one order: {listed:?}");
        assert_eq!(listed[0].order_id, order.order_id, "{backend}");
        assert_eq!(kiosk.eject_count("P-1"), 1, "{backend}");
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}

/// Units of `item_type` orders believes kiosk `kiosk_id` holds ready (its fleet view).
async fn fleet_ready(
    channel: &Channel,
    operator: &str,
    kiosk_id: &str,
    item_type: &common::ItemType,
) -> Option<u32> {
    let kiosk = rentals::fleet(channel)
        .get_kiosk(authed(
            pb::GetKioskRequest {
                kiosk_id: kiosk_id.into(),
            },
            operator,
        ))
        .await
        .ok()?
        .into_inner()
        .kiosk?;
    Some(
        kiosk
            .inventory?
            .lines
            .iter()
            .filter(|l| l.item_type.as_ref() == Some(item_type))
            .map(|l| l.ready)
            .sum(),
    )
}

#[tokio::test]
async fn a_jammed_bay_fails_the_order_refunds_it_and_releases_the_unit() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let faults = SimFaults {
            jammed_bays: vec!["A1".into()],
            // Time to open the watch before the kiosk answers.
            slow_eject: Duration::from_secs(1),
            ..SimFaults::default()
        };
        let mut kiosk = SimKiosk::start(
            sandbox.node().address,
            &operator,
            "K-1",
            bays(vec![Some(drive("D-1")), Some(power_bank("P-1"))]),
            faults,
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let offer = scan_until_available(&channel, &user.token, &kiosk, &drive_type(), 1).await;
        let order = create_rental(
            &channel,
            &user.token,
            rental_request(&offer, &drive_type(), 3, None, "jammed"),
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: create rental: {s:?}"));
        let mut stream = watch(&channel, &user.token, &order.order_id)
            .await
            .expect("watch");
        let seen = follow(&mut stream, "until REFUNDED", |m| {
            m.state == S::Refunded as i32
        })
        .await;
        assert_moves_along(
            &seen,
            &[S::Paid, S::Dispensing, S::Failed, S::Refunded],
            &backend.to_string(),
        );
        eprintln!("{backend}: watched {:?}", rentals::states(&seen));
        let failed = seen
            .iter()
            .find(|m| m.state == S::Failed as i32)
            .unwrap_or_else(|| panic!("{backend}: FAILED shown: {:?}", rentals::states(&seen)));
        assert!(!failed.reason.is_empty(), "{backend}: FAILED says why");
        let refunded = seen.last().expect("a message");
        assert!(!refunded.reason.is_empty(), "{backend}: REFUNDED says why");
        let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends after a terminal state");
        assert!(matches!(end, Ok(None)), "{backend}: {end:?}");

        let refunded = get_order(&channel, &user.token, &order.order_id)
            .await
            .expect("order");
        assert_eq!(refunded.state, S::Refunded as i32, "{backend}");
        assert!(!refunded.state_reason.is_empty(), "{backend}");
        assert!(refunded.item_id.is_empty(), "{backend}: nothing was lent");
        assert_eq!(refunded.amount_charged, Some(price_for(3)), "{backend}");
        assert_eq!(refunded.amount_refunded, Some(price_for(3)), "{backend}");
        assert_eq!(
            movements(&refunded, pb::MoneyMovementKind::Refund).len(),
            1,
            "{backend}: {:?}",
            refunded.movements
        );
        assert_eq!(kiosk.eject_count("D-1"), 0, "{backend}: nothing left");

        // No hold remains: the offer counts every drive orders believes ready (the jammed one
        // too, unless orders learned of the fault), with nothing held for the failed order.
        eventually(WAIT, "the offer to count every ready drive", || async {
            let ready = fleet_ready(&channel, &operator, "K-1", &drive_type()).await;
            let offered = scan(&channel, &user.token, &kiosk.qr())
                .await
                .ok()
                .map(|o| line(&o, &drive_type()).map_or(0, |l| l.available));
            ready.is_some() && ready == offered
        })
        .await;
        // After a failed lend orders asks the kiosk what it holds: the jammed drive is no
        // longer offered, so nobody else is charged for it.
        eventually(WAIT, "the jammed drive to leave the offer", || async {
            scan(&channel, &user.token, &kiosk.qr())
                .await
                .ok()
                .map(|o| line(&o, &drive_type()).map_or(0, |l| l.available))
                == Some(0)
        })
        .await;
        // And the account is free to rent again.
        let offer =
            scan_until_available(&channel, &user.token, &kiosk, &power_bank_type(), 1).await;
        let next = create_rental(
            &channel,
            &user.token,
            rental_request(&offer, &power_bank_type(), 1, None, "after-jam"),
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: rent after the jam: {s:?}"));
        let lent = wait_for_state(&channel, &user.token, &next.order_id, &[S::Lent]).await;
        assert_eq!(lent.item_id, "P-1", "{backend}");
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_ends_lent_or_refunded_when_the_node_is_killed_after_create_rental_and_mid_lend()
 {
    const USERS: usize = 3;
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&backend, &dir.path().join("server"));
        let listen = format!("127.0.0.1:{}", sneakernet_integration_tests::free_port());
        let env = [
            ("SNEAKERNET_GATEWAY__HEARTBEAT_INTERVAL", "200ms"),
            ("SNEAKERNET_GATEWAY__OFFLINE_AFTER", "1500ms"),
            ("SNEAKERNET_GATEWAY__COMMAND_POLL_INTERVAL", "100ms"),
            ("SNEAKERNET_GATEWAY__EXPIRY_SWEEP_INTERVAL", "100ms"),
            ("SNEAKERNET_ORDERS__LEND_DEADLINE", "20s"),
            ("SNEAKERNET_ORDERS__SWEEP_INTERVAL", "200ms"),
        ];
        let node = Child::standalone_at(binary!(), &config, &listen, &env)
            .await
            .expect("node");
        let address = node.address;
        let channel = connect(address).await;
        let operator = rentals::operator_token(&channel, &config).await;
        set_default_pricing(&channel, &operator, common::ItemKind::PowerBank)
            .await
            .expect("pricing");
        let mut kiosk = SimKiosk::start(
            address,
            &operator,
            "K-1",
            bays(
                (1..=USERS)
                    .map(|n| Some(power_bank(&format!("P-{n}"))))
                    .collect(),
            ),
            // Slow enough that a lend is seen DISPENSING before the kiosk answers.
            SimFaults {
                slow_eject: Duration::from_secs(3),
                ..SimFaults::default()
            },
        )
        .await;
        let mut users = Vec::new();
        let mut requests = Vec::new();
        for n in 0..USERS {
            let user = customer_with_deposit(&channel).await;
            let offer = scan_until_available(
                &channel,
                &user.token,
                &kiosk,
                &power_bank_type(),
                USERS as u32,
            )
            .await;
            requests.push(rental_request(
                &offer,
                &power_bank_type(),
                1,
                Some(CARD_OK),
                &format!("killed-{n}"),
            ));
            users.push(user);
        }

        let mut calls = tokio::task::JoinSet::new();
        for (user, request) in users.iter().zip(requests) {
            let channel = channel.clone();
            let token = user.token.clone();
            calls.spawn(async move { create_rental(&channel, &token, request).await });
        }
        let orders: Vec<pb::Order> = calls
            .join_all()
            .await
            .into_iter()
            .map(|r| r.unwrap_or_else(|s| panic!("{backend}: create rental: {s:?}")))
            .collect();
        eprintln!(
            "{backend}: killed with orders in {:?}",
            orders
                .iter()
                .map(|o| rentals::state_name(o.state))
                .collect::<Vec<_>>()
        );
        node.kill().await;

        let node = Child::standalone_at(binary!(), &config, &listen, &env)
            .await
            .expect("node restarted");
        let channel = connect(node.address).await;
        let owner = |order: &pb::Order| {
            users
                .iter()
                .find(|u| u.user_id == order.user_id)
                .expect("owner")
                .token
                .clone()
        };

        // Killed again while a kiosk is ejecting: its result reaches the next process.
        eventually(WAIT, "an order DISPENSING", || async {
            for order in &orders {
                if get_order(&channel, &owner(order), &order.order_id)
                    .await
                    .is_ok_and(|o| o.state == S::Dispensing as i32)
                {
                    return true;
                }
            }
            false
        })
        .await;
        node.kill().await;
        let node = Child::standalone_at(binary!(), &config, &listen, &env)
            .await
            .expect("node restarted again");
        let channel = connect(node.address).await;
        let mut lent_items = Vec::new();
        for order in &orders {
            let token = owner(order);
            let settled =
                wait_for_state(&channel, &token, &order.order_id, &[S::Lent, S::Refunded]).await;
            if settled.state == S::Lent as i32 {
                assert_eq!(
                    kiosk.eject_count(&settled.item_id),
                    1,
                    "{backend}: {settled:?}"
                );
                assert_eq!(settled.amount_charged, Some(price_for(1)), "{backend}");
                lent_items.push(settled.item_id.clone());
            } else {
                assert_eq!(settled.amount_refunded, Some(price_for(1)), "{backend}");
            }
            eprintln!("{backend}: settled {}", rentals::state_name(settled.state));
            assert_eq!(
                list_orders(&channel, &token).await.unwrap().len(),
                1,
                "{backend}: one order per user"
            );
        }
        lent_items.sort();
        lent_items.dedup();
        let ejected: u32 = (1..=USERS)
            .map(|n| kiosk.eject_count(&format!("P-{n}")))
            .sum();
        assert_eq!(
            ejected as usize,
            lent_items.len(),
            "{backend}: every eject belongs to a distinct LENT order"
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        node.kill().await;
        sneakernet_integration_tests::drop_schemas(&config).await;
    }
}

#[tokio::test]
async fn scan_kiosk_refuses_without_deposit_with_an_item_out_with_a_stale_code_and_offline() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let address = sandbox.node().address;
        let k1 = SimKiosk::healthy(
            address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1")), Some(power_bank("P-2"))],
        )
        .await;
        let mut k2 =
            SimKiosk::healthy(address, &operator, "K-2", vec![Some(power_bank("P-9"))]).await;

        // No deposit: refused, and told how much to pay.
        let user = rentals::register_user(&channel).await;
        let status = assert_refused(
            scan(&channel, &user.token, &k1.qr()).await,
            "NO_DEPOSIT",
            &format!("{backend}: no deposit"),
        );
        assert_eq!(
            subject_of(&status, "NO_DEPOSIT").as_deref(),
            Some(format!("users/{}", user.user_id).as_str()),
            "{backend}"
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "NO_DEPOSIT", "{backend}");
        assert_eq!(info.domain, "orders.sneakernet", "{backend}");
        let minor: i64 = info
            .metadata
            .get("deposit_minor_units")
            .and_then(|m| m.parse().ok())
            .expect("deposit_minor_units");
        let currency = info
            .metadata
            .get("deposit_currency")
            .cloned()
            .expect("deposit_currency");
        assert_eq!((minor, currency.as_str()), (DEPOSIT_MINOR_UNITS, "EUR"));
        rentals::pay_deposit(
            &channel,
            &user.token,
            common::Money {
                minor_units: minor,
                currency,
            },
            CARD_OK,
            "deposit",
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: deposit: {s:?}"));
        let offer = scan_until_available(&channel, &user.token, &k1, &power_bank_type(), 2).await;

        // Codes that do not prove the user stands at the kiosk.
        let old = rentals::qr_payload_at(
            "K-1",
            &k1.qr_secret,
            chrono::Utc::now() - chrono::Duration::minutes(5),
        );
        let wrong_secret = rentals::qr_payload("K-1", &rentals::new_qr_secret());
        for (what, payload) in [
            ("a five-minute-old code", old),
            (
                "a printed sticker without a code",
                "sneakernet://kiosk/K-1".to_owned(),
            ),
            ("another secret's code", wrong_secret),
        ] {
            let status = assert_refused(
                scan(&channel, &user.token, &payload).await,
                "QR_CODE_STALE",
                &format!("{backend}: {what}"),
            );
            assert_eq!(
                subject_of(&status, "QR_CODE_STALE").as_deref(),
                Some("kiosks/K-1"),
                "{backend}: {what}"
            );
        }
        let status = scan(&channel, &user.token, "https://example.com/K-1")
            .await
            .expect_err("not a kiosk payload");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{backend}: {status:?}"
        );
        let status = scan(
            &channel,
            &user.token,
            &rentals::qr_payload("K-404", &k1.qr_secret),
        )
        .await
        .expect_err("unknown kiosk");
        assert_eq!(status.code(), Code::NotFound, "{backend}: {status:?}");

        // An item out: refused at every kiosk until it is back.
        let order = create_rental(
            &channel,
            &user.token,
            rental_request(&offer, &power_bank_type(), 1, None, "out"),
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: rent: {s:?}"));
        wait_for_state(&channel, &user.token, &order.order_id, &[S::Lent]).await;
        for kiosk in [&k1, &k2] {
            let status = assert_refused(
                scan(&channel, &user.token, &kiosk.qr()).await,
                "ITEM_OUT",
                &format!("{backend}: item out, at {}", kiosk.id),
            );
            assert_eq!(
                subject_of(&status, "ITEM_OUT"),
                Some(format!("orders/{}", order.order_id)),
                "{backend}"
            );
        }

        // An offline kiosk can lend nothing: neither an offer nor a rental from an old offer.
        let other = customer_with_deposit(&channel).await;
        let k2_offer =
            scan_until_available(&channel, &other.token, &k2, &power_bank_type(), 1).await;
        k2.stop().await;
        eventually(WAIT, "K-2 refused as offline", || async {
            scan(&channel, &other.token, &k2.qr())
                .await
                .err()
                .is_some_and(|s| {
                    rentals::violations(&s)
                        .iter()
                        .any(|(t, subject)| t == "KIOSK_OFFLINE" && subject == "kiosks/K-2")
                })
        })
        .await;
        let status = assert_refused(
            scan(&channel, &other.token, &k2.qr()).await,
            "KIOSK_OFFLINE",
            &format!("{backend}: offline"),
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_refused(
            create_rental(
                &channel,
                &other.token,
                rental_request(&k2_offer, &power_bank_type(), 1, None, "offline"),
            )
            .await,
            "KIOSK_OFFLINE",
            &format!("{backend}: rent at an offline kiosk"),
        );
        assert!(
            list_orders(&channel, &other.token)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        let mut k1 = k1;
        k1.stop().await;
        sandbox.stop().await;
    }
}

fn forge_user_token(sandbox: &Sandbox, kid: &str, user_id: &str) -> String {
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let now = chrono::Utc::now().timestamp();
    let claims = sneakernet_runtime::caller::Claims {
        sub: user_id.into(),
        role: sneakernet_runtime::Role::User,
        aud: sandbox.config.auth.audience.clone(),
        iss: sandbox.config.auth.issuer.clone(),
        exp: now + 600,
        nbf: now - 5,
        iat: now - 5,
        jti: "forged".into(),
    };
    // Signed with a key auth never issued, under the real key's id.
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let der = SigningKey::from_bytes(&seed).to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

#[tokio::test]
async fn users_see_only_their_own_orders_and_each_role_only_its_service() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1"))],
        )
        .await;
        let alice = customer_with_deposit(&channel).await;
        let bob = customer_with_deposit(&channel).await;
        let offer = scan_until_available(&channel, &bob.token, &kiosk, &power_bank_type(), 1).await;
        let order = create_rental(
            &channel,
            &bob.token,
            rental_request(&offer, &power_bank_type(), 1, None, "bobs"),
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: rent: {s:?}"));
        wait_for_state(&channel, &bob.token, &order.order_id, &[S::Lent]).await;

        // Another user's order does not exist for Alice.
        let status = get_order(&channel, &alice.token, &order.order_id)
            .await
            .expect_err("not Alice's");
        assert_eq!(status.code(), Code::NotFound, "{backend}: {status:?}");
        let watched = match watch(&channel, &alice.token, &order.order_id).await {
            Err(status) => status,
            Ok(mut stream) => match tokio::time::timeout(WAIT, stream.message()).await {
                Ok(Err(status)) => status,
                other => panic!("{backend}: Alice watched Bob's order: {other:?}"),
            },
        };
        assert_eq!(watched.code(), Code::NotFound, "{backend}: {watched:?}");
        assert!(
            list_orders(&channel, &alice.token)
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );
        let status = get_order(&channel, &alice.token, &uuid::Uuid::new_v4().to_string())
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound, "{backend}");
        // Bob and operators see it.
        assert_eq!(
            list_orders(&channel, &bob.token).await.unwrap().len(),
            1,
            "{backend}"
        );
        let seen = get_order(&channel, &operator, &order.order_id)
            .await
            .unwrap_or_else(|s| panic!("{backend}: operator reads any order: {s:?}"));
        assert_eq!(seen.user_id, bob.user_id, "{backend}");

        // A kiosk token is not for OrderService.
        let kiosk_token = sandbox.kiosk_token("K-7").await;
        let status = scan(&channel, &kiosk_token, &kiosk.qr()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );
        let status = list_orders(&channel, &kiosk_token).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );
        let status = get_order(&channel, &kiosk_token, &order.order_id)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );

        // A user token is not for FleetService.
        let status =
            rentals::register_kiosk(&channel, &alice.token, "K-8", &rentals::new_qr_secret())
                .await
                .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );
        let status = rentals::audit(&channel, &alice.token).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );
        let status = set_default_pricing(&channel, &alice.token, common::ItemKind::Drive)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );

        // No token, or a forged one.
        let status = rentals::orders(&channel)
            .get_order(pb::GetOrderRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{backend}: {status:?}"
        );
        let status = rentals::fleet(&channel)
            .audit(pb::AuditRequest {})
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{backend}: {status:?}"
        );
        let (kid, _) = sandbox.signing_key().await;
        let forged = forge_user_token(&sandbox, &kid, &bob.user_id);
        let status = get_order(&channel, &forged, &order.order_id)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{backend}: {status:?}"
        );
        let status = scan(&channel, &forged, &kiosk.qr()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{backend}: {status:?}"
        );

        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}
