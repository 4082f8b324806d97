//! One kiosk must not reach across the fleet (issue #12, defect 7). An honest kiosk K-A (the
//! real agent on simulated bays) holds drive D-1; a lying kiosk K-B, driven by hand, names
//! D-1 as its own: in its inventory (partial and full), in a lend result and a failed lend,
//! and in a return while D-1 sits in K-A's bay, lent to nobody. After each lie D-1 is still
//! offered at K-A and not at K-B, a rental at K-A still goes LENT and CLOSED, nothing is
//! parked and the audit is clean. A return at any kiosk stays legitimate: D-1 rented at K-A
//! and handed in at K-B closes the renter's order with its price alone and becomes K-B's.
//! Only gRPC, on every backend of this run.

use sneakernet_integration_tests::fake_kiosk::FakeKiosk;
use sneakernet_integration_tests::hand_kiosk::{
    HandKiosk, a_healthy_rental_goes_lent_and_closed, a_rental_at_a_hand_driven_kiosk,
    assert_accepted, bay, connect_hand_kiosk, lend_result_of, parked_events, reported_drive,
    reported_drive_protected, returned, say, start_for_hand_kiosks,
};
use sneakernet_integration_tests::rentals::{
    self, Customer, SimKiosk, WAIT, assert_audit_clean, create_rental, customer_with_deposit,
    drive, drive_type, new_qr_secret, qr_payload, rental_request, scan, scan_until_available,
    wait_for_state,
};
use sneakernet_integration_tests::{Backend, Sandbox, backends, eventually};
use sneakernet_proto::gateway::v1 as gw;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::wire::timestamp;
use tonic::transport::Channel;

/// The honest kiosk.
const HONEST: &str = "K-A";
/// The lying kiosk.
const LIAR: &str = "K-B";
/// The honest kiosk's drive, which the liar names.
const THEIRS: &str = "D-1";

/// A sandbox with the honest kiosk online, its drive on offer, and a customer who only
/// looks (scans never rent, so they never stop for an open order).
struct Fleet {
    sandbox: Sandbox,
    channel: Channel,
    operator: String,
    honest: SimKiosk,
    looker: Customer,
}

async fn an_honest_kiosk_holding_its_drive(backend: &Backend) -> Fleet {
    let (sandbox, channel, operator) = start_for_hand_kiosks(backend).await;
    let honest = SimKiosk::healthy(
        sandbox.node().address,
        &operator,
        HONEST,
        vec![Some(drive(THEIRS)), None],
    )
    .await;
    let looker = customer_with_deposit(&channel).await;
    scan_until_available(&channel, &looker.token, &honest, &drive_type(), 1).await;
    Fleet {
        sandbox,
        channel,
        operator,
        honest,
        looker,
    }
}

/// How many drives of the rentals' type the kiosk showing `qr` offers now (a kiosk with
/// nothing to rent, or not yet seen online, answers FAILED_PRECONDITION: none).
async fn offered(channel: &Channel, looker: &Customer, qr: &str) -> u32 {
    match scan(channel, &looker.token, qr).await {
        Ok(offer) => rentals::line(&offer, &drive_type()).map_or(0, |l| l.available),
        Err(status)
            if status.code() == tonic::Code::FailedPrecondition
                && (status.message().contains("nothing to rent")
                    || status.message().contains("not connected")) =>
        {
            0
        }
        Err(status) => panic!("scan: {status:?}"),
    }
}

/// The lying kiosk, linked beside `fleet`'s honest one with its own drive L-1 in bay B1 and
/// `empty_bay` empty, offering just that drive; and its QR payload.
async fn a_liar_beside(fleet: &Fleet, empty_bay: &str, backend: &Backend) -> (FakeKiosk, String) {
    let secret = new_qr_secret();
    let liar_qr = qr_payload(LIAR, &secret);
    let liar = connect_hand_kiosk(
        &fleet.sandbox,
        &fleet.channel,
        &fleet.operator,
        LIAR,
        &secret,
        vec![bay("B1", Some(reported_drive("L-1"))), bay(empty_bay, None)],
    )
    .await;
    the_liar_offers_only_its_own(fleet, &liar_qr, 1, &format!("{backend}: hello")).await;
    (liar, liar_qr)
}

/// Waits until the liar offers at least `own` drives (the event that says so came after the
/// lie, and orders applies a kiosk's events in order), then asserts it offers exactly its own
/// `own`, none of them the honest kiosk's.
async fn the_liar_offers_only_its_own(fleet: &Fleet, liar_qr: &str, own: u32, context: &str) {
    eventually(WAIT, &format!("{context}: {LIAR} offers {own}"), || async {
        offered(&fleet.channel, &fleet.looker, liar_qr).await >= own
    })
    .await;
    assert_eq!(
        offered(&fleet.channel, &fleet.looker, liar_qr).await,
        own,
        "{context}: {LIAR} offers only its own drives, not {THEIRS}"
    );
}

/// D-1 is still on offer at the honest kiosk, a rental there goes LENT and CLOSED, nothing
/// was parked and the audit is clean.
async fn the_honest_kiosk_is_unharmed(fleet: &Fleet, context: &str) {
    assert_eq!(
        offered(&fleet.channel, &fleet.looker, &fleet.honest.qr()).await,
        1,
        "{context}: {THEIRS} still offered at {HONEST}"
    );
    a_healthy_rental_goes_lent_and_closed(&fleet.channel, &fleet.honest, (1, 1, "A2"), context)
        .await;
    assert!(
        parked_events(&fleet.channel, &fleet.operator)
            .await
            .is_empty(),
        "{context}: nothing parked"
    );
    assert_audit_clean(&fleet.channel, &fleet.operator, context).await;
}

/// The liar reports its own drive `item_id` in a new bay `bay_id` (a partial inventory): the
/// marker that its lie before it has been applied once the drive is on offer.
async fn and_then_its_own_drive(liar: &mut FakeKiosk, bay_id: &str, item_id: &str) {
    let receipt = say(
        liar,
        &format!("marker-{item_id}"),
        Up::InventoryChanged(gw::InventoryChanged {
            change: Some(gw::inventory_changed::Change::Partial(gw::Inventory {
                bays: vec![bay(bay_id, Some(reported_drive(item_id)))],
                taken_at: None,
            })),
        }),
    )
    .await;
    assert_accepted(&receipt);
}

#[tokio::test]
async fn a_kiosk_reporting_another_kiosks_drive_in_its_inventory_does_not_take_it() {
    for backend in backends() {
        let fleet = an_honest_kiosk_holding_its_drive(&backend).await;
        let (mut liar, liar_qr) = a_liar_beside(&fleet, "B2", &backend).await;

        // A partial inventory: D-1 in the liar's empty bay, beside a new drive of its own.
        let receipt = say(
            &mut liar,
            "partial",
            Up::InventoryChanged(gw::InventoryChanged {
                change: Some(gw::inventory_changed::Change::Partial(gw::Inventory {
                    bays: vec![
                        bay("B2", Some(reported_drive(THEIRS))),
                        bay("B3", Some(reported_drive("L-2"))),
                    ],
                    taken_at: None,
                })),
            }),
        )
        .await;
        assert_accepted(&receipt);
        let context = format!("{backend}: partial inventory");
        the_liar_offers_only_its_own(&fleet, &liar_qr, 2, &context).await;
        assert_eq!(
            offered(&fleet.channel, &fleet.looker, &fleet.honest.qr()).await,
            1,
            "{context}: {THEIRS} still offered at {HONEST}"
        );

        // A full inventory saying the same, with one more drive of its own.
        let receipt = say(
            &mut liar,
            "full",
            Up::InventoryChanged(gw::InventoryChanged {
                change: Some(gw::inventory_changed::Change::Full(gw::Inventory {
                    bays: vec![
                        bay("B1", Some(reported_drive("L-1"))),
                        bay("B2", Some(reported_drive(THEIRS))),
                        bay("B3", Some(reported_drive("L-2"))),
                        bay("B4", Some(reported_drive("L-3"))),
                    ],
                    taken_at: None,
                })),
            }),
        )
        .await;
        assert_accepted(&receipt);
        let context = format!("{backend}: full inventory");
        the_liar_offers_only_its_own(&fleet, &liar_qr, 3, &context).await;
        the_honest_kiosk_is_unharmed(&fleet, &context).await;
        fleet.sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_lend_result_naming_another_kiosks_drive_leaves_that_drive_where_it_is() {
    for backend in backends() {
        let fleet = an_honest_kiosk_holding_its_drive(&backend).await;
        let HandKiosk {
            link: mut liar,
            renter,
            order,
            lend,
            qr_secret,
        } = a_rental_at_a_hand_driven_kiosk(&fleet.sandbox, &fleet.channel, &fleet.operator, LIAR)
            .await;
        let receipt = say(
            &mut liar,
            "lend",
            lend_result_of(&lend, THEIRS, timestamp(chrono::Utc::now())),
        )
        .await;
        assert_accepted(&receipt);
        // The liar's own order takes what its kiosk says; whatever that is, it is settled.
        wait_for_state(
            &fleet.channel,
            &renter.token,
            &order.order_id,
            &[S::Lent, S::Returned, S::Closed],
        )
        .await;
        let context = format!("{backend}: lend result");
        let liar_qr = qr_payload(LIAR, &qr_secret);
        and_then_its_own_drive(&mut liar, "A3", "L-2").await;
        the_liar_offers_only_its_own(&fleet, &liar_qr, 2, &context).await;
        the_honest_kiosk_is_unharmed(&fleet, &context).await;
        fleet.sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_failed_lend_naming_another_kiosks_drive_leaves_that_drive_on_offer() {
    for backend in backends() {
        let fleet = an_honest_kiosk_holding_its_drive(&backend).await;
        let HandKiosk {
            link: mut liar,
            renter,
            order,
            lend,
            qr_secret,
        } = a_rental_at_a_hand_driven_kiosk(&fleet.sandbox, &fleet.channel, &fleet.operator, LIAR)
            .await;
        let failed = Up::Result(gw::CommandResult {
            command_id: lend.command_id.clone(),
            outcome: Some(gw::command_result::Outcome::Failure(gw::Failure {
                reason: gw::FailureReason::EjectJammed.into(),
                message: "jammed".into(),
                bay_id: "A1".into(),
                item_id: THEIRS.into(),
            })),
            finished_at: Some(timestamp(chrono::Utc::now())),
        });
        assert_accepted(&say(&mut liar, "failed", failed).await);
        wait_for_state(
            &fleet.channel,
            &renter.token,
            &order.order_id,
            &[S::Failed, S::Refunded],
        )
        .await;
        let context = format!("{backend}: failed lend");
        let liar_qr = qr_payload(LIAR, &qr_secret);
        and_then_its_own_drive(&mut liar, "A3", "L-2").await;
        the_liar_offers_only_its_own(&fleet, &liar_qr, 2, &context).await;
        the_honest_kiosk_is_unharmed(&fleet, &context).await;
        fleet.sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_return_of_a_drive_sitting_in_another_kiosks_bay_does_not_move_it() {
    for backend in backends() {
        let fleet = an_honest_kiosk_holding_its_drive(&backend).await;
        let (mut liar, liar_qr) = a_liar_beside(&fleet, "A2", &backend).await;
        // Write-protected: were the claim taken, D-1 would be on offer at the liar at once.
        let receipt = say(
            &mut liar,
            "return",
            returned(reported_drive_protected(THEIRS, true), chrono::Utc::now()),
        )
        .await;
        assert_accepted(&receipt);
        and_then_its_own_drive(&mut liar, "B3", "L-2").await;
        let context = format!("{backend}: return of a drive in a bay");
        the_liar_offers_only_its_own(&fleet, &liar_qr, 2, &context).await;
        the_honest_kiosk_is_unharmed(&fleet, &context).await;
        fleet.sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_drive_rented_at_one_kiosk_and_returned_at_another_closes_the_order_and_joins_that_kiosk()
{
    for backend in backends() {
        let fleet = an_honest_kiosk_holding_its_drive(&backend).await;
        let secret = new_qr_secret();
        let other_qr = qr_payload(LIAR, &secret);
        let mut other = connect_hand_kiosk(
            &fleet.sandbox,
            &fleet.channel,
            &fleet.operator,
            LIAR,
            &secret,
            vec![bay("B1", Some(reported_drive("L-1"))), bay("A2", None)],
        )
        .await;
        the_liar_offers_only_its_own(&fleet, &other_qr, 1, &format!("{backend}: hello")).await;

        let renter = customer_with_deposit(&fleet.channel).await;
        let offer = scan_until_available(
            &fleet.channel,
            &renter.token,
            &fleet.honest,
            &drive_type(),
            1,
        )
        .await;
        let order = create_rental(
            &fleet.channel,
            &renter.token,
            rental_request(&offer, &drive_type(), 1, None, "there-and-back"),
        )
        .await
        .expect("rent at the honest kiosk");
        let lent = wait_for_state(&fleet.channel, &renter.token, &order.order_id, &[S::Lent]).await;
        assert_eq!(lent.item_id, THEIRS, "{backend}");

        let receipt = say(
            &mut other,
            "return",
            returned(reported_drive_protected(THEIRS, true), chrono::Utc::now()),
        )
        .await;
        assert_accepted(&receipt);
        let closed =
            wait_for_state(&fleet.channel, &renter.token, &order.order_id, &[S::Closed]).await;
        assert_eq!(
            closed.amount_charged,
            Some(rentals::price_for(1)),
            "{backend}: the price alone"
        );
        assert_eq!(closed.returned_kiosk_id, LIAR, "{backend}");
        let context = format!("{backend}: returned elsewhere");
        the_liar_offers_only_its_own(&fleet, &other_qr, 2, &context).await;
        assert_eq!(
            offered(&fleet.channel, &fleet.looker, &fleet.honest.qr()).await,
            0,
            "{context}: {THEIRS} is no longer offered at {HONEST}"
        );
        assert!(
            parked_events(&fleet.channel, &fleet.operator)
                .await
                .is_empty(),
            "{context}: nothing parked"
        );
        assert_audit_clean(&fleet.channel, &fleet.operator, &context).await;
        fleet.sandbox.stop().await;
    }
}
