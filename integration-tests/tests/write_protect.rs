//! OrderService.SetWriteProtect end to end (issue 11, seed flow 2): before pickup the kiosk
//! applies the user's toggle to the pinned drive in its bay; on the road it goes over the
//! drive's own remote link (a user's write fails after ON and succeeds after OFF), survives a
//! cut of that link and is executed once when it is back; a drive without a module, a power
//! bank, a finished order and another user's order are refused as the contract says. Real
//! kiosk agents and drive modules, only gRPC, on every backend of this run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sneakernet_integration_tests::kiosk::{CountedModule, drive_config, with_remote_links};
use sneakernet_integration_tests::proxy::CuttableProxy;
use sneakernet_integration_tests::rentals::{
    CARD_OK, STATION, SimKiosk, assert_refused, bays, create_rental, customer_with_deposit, drive,
    drive_type, get_order, power_bank, power_bank_type, rental_request, scan_until_available,
    start_priced_with, wait_for_state,
};
use sneakernet_integration_tests::reservations::{
    blank_drive, cancel_reservation, collect_reservation, eventually_reserved, reservation_request,
    set_write_protect, wait_write_protected,
};
use sneakernet_integration_tests::{backends, eventually};
use sneakernet_kiosk_agent::bays::DriveError;
use sneakernet_kiosk_agent::config::SimFaults;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1::OrderState as S;
use tonic::Code;

/// The capacity of the drives reserved here.
const CAPACITY: u64 = 64 << 20;
/// How long a test waits for a drive's module to act.
const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_kiosk_applies_a_toggle_before_pickup_and_the_drives_own_link_on_the_road_once_even_across_a_cut()
 {
    for backend in backends() {
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::Drive], |_| {}).await;
        let address = sandbox.node().address;
        let here = SimKiosk::start_with(
            address,
            &operator,
            "K-W1",
            STATION,
            bays(vec![Some(blank_drive("D-1", CAPACITY))]),
            SimFaults::default(),
            |config| with_remote_links(config, &["D-1"]),
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let other = customer_with_deposit(&channel).await;
        let request = reservation_request("K-W1", "", CAPACITY, false, 1, "w-1");
        let order = eventually_reserved(&channel, &user.token, request, &backend).await;
        let id = order.order_id.as_str();
        let ready = wait_for_state(&channel, &user.token, id, &[S::ReadyForPickup]).await;
        assert_eq!(ready.item_id, "D-1", "{backend}");
        assert!(!ready.write_protected, "{backend}: writable, as reserved");

        // Not theirs, or not at all: NOT_FOUND alike.
        let unknown = uuid::Uuid::new_v4().to_string();
        for (token, order_id) in [(&other.token, id), (&user.token, unknown.as_str())] {
            let status = set_write_protect(&channel, token, order_id, true)
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::NotFound, "{backend}: {status:?}");
        }
        // What the drive already has: applied, nothing sent.
        let same = set_write_protect(&channel, &user.token, id, false)
            .await
            .expect("same setting");
        assert!(same.applied, "{backend}");

        // Before pickup: the kiosk protects the drive in its bay.
        let asked = set_write_protect(&channel, &user.token, id, true)
            .await
            .expect("on before pickup");
        assert!(!asked.applied, "{backend}: on its way");
        wait_write_protected(&channel, &user.token, id, true).await;
        let bays_here = here.agent().bays();
        assert_eq!(bays_here.write_protected_anywhere("D-1"), Some(true));
        assert_eq!(
            bays_here.write_as_user("D-1", "mine.txt", b"1"),
            Err(DriveError::WriteProtected("D-1".into())),
            "{backend}: protected in the bay"
        );

        collect_reservation(&channel, &user.token, id, &here.qr())
            .await
            .expect("collect");
        let lent = wait_for_state(&channel, &user.token, id, &[S::Lent]).await;
        assert!(lent.write_protected, "{backend}: left protected");

        // On the road: the drive's module reaches the gateway over a network the test controls.
        let proxy = CuttableProxy::start(address).await.unwrap();
        let counted = CountedModule::of(bays_here, "D-1");
        let calls = counted.counter();
        let module_dir = tempfile::tempdir().unwrap();
        let module_secret = sandbox.drive_secret("D-1").await;
        let module = sneakernet_kiosk_agent::drive::start(
            drive_config(
                module_dir.path(),
                "D-1",
                &module_secret,
                address,
                proxy.address,
            ),
            counted,
        )
        .await
        .expect("drive module");

        let off = set_write_protect(&channel, &user.token, id, false)
            .await
            .expect("off on the road");
        assert!(!off.applied, "{backend}");
        wait_write_protected(&channel, &user.token, id, false).await;
        assert_eq!(
            bays_here.write_as_user("D-1", "mine.txt", b"22"),
            Ok(2),
            "{backend}: the user writes on the road"
        );
        set_write_protect(&channel, &user.token, id, true)
            .await
            .expect("on on the road");
        wait_write_protected(&channel, &user.token, id, true).await;
        assert_eq!(
            bays_here.write_as_user("D-1", "mine.txt", b"333"),
            Err(DriveError::WriteProtected("D-1".into())),
            "{backend}: refused again"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{backend}");

        // Out of coverage: the toggle waits in the gateway's log.
        proxy.take_down();
        let waiting = set_write_protect(&channel, &user.token, id, false)
            .await
            .expect("off out of coverage");
        assert!(!waiting.applied, "{backend}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{backend}: not delivered");
        let meanwhile = get_order(&channel, &user.token, id).await.expect("order");
        assert!(meanwhile.write_protected, "{backend}: not confirmed yet");
        // Asking again while it is on its way sends nothing more.
        let again = set_write_protect(&channel, &user.token, id, false)
            .await
            .expect("off again");
        assert!(!again.applied, "{backend}");

        // Back in coverage: delivered, executed once, confirmed on the order.
        proxy.bring_up();
        wait_write_protected(&channel, &user.token, id, false).await;
        assert_eq!(
            bays_here.write_as_user("D-1", "mine.txt", b"4444"),
            Ok(4),
            "{backend}: writable after the link came back"
        );
        eventually(WITHIN, "the module to settle", || async {
            calls.load(Ordering::SeqCst) >= 3
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{backend}: executed once");
        let done = set_write_protect(&channel, &user.token, id, false)
            .await
            .expect("same on the road");
        assert!(done.applied, "{backend}: the drive already has it");

        // Support turns it back on for the renter: an operator may change any order's drive.
        set_write_protect(&channel, &operator, id, true)
            .await
            .expect("an operator toggles the renter's drive");
        wait_write_protected(&channel, &user.token, id, true).await;
        eventually(
            WITHIN,
            "the module to apply the operator's change",
            || async { calls.load(Ordering::SeqCst) >= 4 },
        )
        .await;
        assert_eq!(
            bays_here.write_as_user("D-1", "mine.txt", b"55555"),
            Err(DriveError::WriteProtected("D-1".into())),
            "{backend}: protected again by support"
        );

        module.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_drive_without_a_module_a_power_bank_and_a_finished_order_are_refused_and_a_wish_made_while_provisioning_reaches_the_drive()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start_priced_with(
            &backend,
            &[common::ItemKind::Drive, common::ItemKind::PowerBank],
            |_| {},
        )
        .await;
        let address = sandbox.node().address;
        let here = SimKiosk::healthy(
            address,
            &operator,
            "K-W2",
            vec![
                Some(drive("D-2")),
                Some(power_bank("P-1")),
                Some(blank_drive("D-3", CAPACITY)),
            ],
        )
        .await;

        // A walk-up drive without a module, on the road: NO_REMOTE_LINK.
        let renter = customer_with_deposit(&channel).await;
        let offer = scan_until_available(&channel, &renter.token, &here, &drive_type(), 1).await;
        let request = rental_request(&offer, &drive_type(), 1, Some(CARD_OK), "wr-d");
        let rental = create_rental(&channel, &renter.token, request)
            .await
            .expect("rent a drive");
        wait_for_state(&channel, &renter.token, &rental.order_id, &[S::Lent]).await;
        assert_refused(
            set_write_protect(&channel, &renter.token, &rental.order_id, true).await,
            "NO_REMOTE_LINK",
            &format!("{backend}: lent drive without a module"),
        );

        // A power bank: NOT_A_DRIVE.
        let charger = customer_with_deposit(&channel).await;
        let offer =
            scan_until_available(&channel, &charger.token, &here, &power_bank_type(), 1).await;
        let request = rental_request(&offer, &power_bank_type(), 1, Some(CARD_OK), "wr-p");
        let bank = create_rental(&channel, &charger.token, request)
            .await
            .expect("rent a power bank");
        wait_for_state(&channel, &charger.token, &bank.order_id, &[S::Lent]).await;
        assert_refused(
            set_write_protect(&channel, &charger.token, &bank.order_id, false).await,
            "NOT_A_DRIVE",
            &format!("{backend}: a power bank"),
        );

        // Asked right after reserving (the drive still being prepared): the kiosk applies it
        // once the drive is ready, whichever came first.
        let reserver = customer_with_deposit(&channel).await;
        let request = reservation_request("K-W2", "", CAPACITY, false, 1, "wr-r");
        let order = eventually_reserved(&channel, &reserver.token, request, &backend).await;
        let id = order.order_id.as_str();
        let asked = set_write_protect(&channel, &reserver.token, id, true)
            .await
            .expect("on while provisioning");
        assert!(!asked.applied, "{backend}");
        let ready = wait_for_state(&channel, &reserver.token, id, &[S::ReadyForPickup]).await;
        assert_eq!(ready.item_id, "D-3", "{backend}");
        wait_write_protected(&channel, &reserver.token, id, true).await;
        assert_eq!(
            here.agent().bays().write_protected_anywhere("D-3"),
            Some(true),
            "{backend}: the pinned drive is protected"
        );

        // Finished: ORDER_FINISHED.
        cancel_reservation(&channel, &reserver.token, id)
            .await
            .expect("cancel");
        assert_refused(
            set_write_protect(&channel, &reserver.token, id, false).await,
            "ORDER_FINISHED",
            &format!("{backend}: a cancelled reservation"),
        );
        sandbox.stop().await;
    }
}
