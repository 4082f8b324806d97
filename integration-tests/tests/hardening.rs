//! Hardening (issue #12): defects an outside reading found, each shown by a test that failed
//! before its fix. Only gRPC, on every backend of this run.

use sneakernet_integration_tests::rentals::{
    CARD_OK, DEPOSIT_MINOR_UNITS, SimKiosk, assert_audit_clean, bays, create_rental, drive,
    drive_type, eur, get_order, movements, pay_deposit, power_bank, price_for, register_user,
    rental_request, scan_until_available, start_priced, wait_for_state,
};
use sneakernet_integration_tests::{Sandbox, authed, backends, fast_links, kiosk};
use sneakernet_kiosk_agent::config::SimFaults;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use tonic::Code;

/// The longest idempotency key the contract allows: 128 characters, most of them several
/// bytes long (512 bytes in all but a few), starting with `tag`.
fn longest_key(tag: char) -> String {
    let key = format!("{tag}{}{}", "é".repeat(63), "𝄞".repeat(64));
    assert_eq!(key.chars().count(), 128);
    key
}

/// Defect 1: the provider key grew with the user's key (`rental:<user>:<key>`) past the
/// provider's 128-byte limit, so such a payment could not be made or paid back.
#[tokio::test]
async fn the_longest_idempotency_keys_pay_a_deposit_charge_a_rental_and_refund_its_failed_lend() {
    for backend in backends() {
        let (sandbox, channel, operator) = start_priced(
            &backend,
            &[common::ItemKind::Drive, common::ItemKind::PowerBank],
        )
        .await;
        let faults = SimFaults {
            jammed_bays: vec!["A1".into()],
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
        let user = register_user(&channel).await;
        let deposit = pay_deposit(
            &channel,
            &user.token,
            eur(DEPOSIT_MINOR_UNITS),
            CARD_OK,
            &longest_key('d'),
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: deposit with the longest key: {s:?}"));
        assert_eq!(deposit.state, pb::DepositState::Held as i32, "{backend}");

        let offer = scan_until_available(&channel, &user.token, &kiosk, &drive_type(), 1).await;
        let request = rental_request(&offer, &drive_type(), 2, None, &longest_key('r'));
        let order = create_rental(&channel, &user.token, request.clone())
            .await
            .unwrap_or_else(|s| panic!("{backend}: rental with the longest key: {s:?}"));
        let again = create_rental(&channel, &user.token, request)
            .await
            .unwrap_or_else(|s| panic!("{backend}: the same longest key again: {s:?}"));
        assert_eq!(
            again.order_id, order.order_id,
            "{backend}: one order per key"
        );

        // The jammed bay fails the lend: the order is paid back in full.
        wait_for_state(&channel, &user.token, &order.order_id, &[S::Refunded]).await;
        let refunded = get_order(&channel, &user.token, &order.order_id)
            .await
            .expect("order");
        assert_eq!(refunded.amount_charged, Some(price_for(2)), "{backend}");
        assert_eq!(refunded.amount_refunded, Some(price_for(2)), "{backend}");
        assert_eq!(
            movements(&refunded, pb::MoneyMovementKind::Price).len(),
            1,
            "{backend}: charged once: {:?}",
            refunded.movements
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}

fn send_request(key: &str, payload: gateway::CommandPayload) -> gateway::SendCommandRequest {
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    gateway::SendCommandRequest {
        kiosk_id: "K-1".into(),
        payload: Some(payload),
        idempotency_key: key.into(),
        deadline: Some(prost_types::Timestamp {
            seconds: deadline.timestamp(),
            nanos: 0,
        }),
        drive_id: String::new(),
    }
}

fn wipe(item: &str) -> gateway::CommandPayload {
    gateway::CommandPayload {
        kind: Some(gateway::command_payload::Kind::Wipe(gateway::WipeCommand {
            item_id: item.into(),
        })),
    }
}

/// Defect 9: the gateway let every service credential send every command to every kiosk.
/// Now each service may send only the kinds it needs (orders: lend, provision, write
/// protection, wipe, release, inventory; content: none) and read events only if it needs to.
#[tokio::test]
async fn a_service_credential_sends_only_the_command_kinds_its_service_needs() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await.access_token;
        let content = sandbox.service_token(&operator, "content").await;
        let orders = sandbox.service_token(&operator, "orders").await;
        let mut commands = DeviceCommandServiceClient::new(sandbox.channel().await);

        for (key, payload) in [("c-lend", kiosk::lend("order-c")), ("c-wipe", wipe("D-1"))] {
            let status = commands
                .send_command(authed(send_request(key, payload), &content))
                .await
                .expect_err("content commands no kiosk");
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{backend}: {status:?}"
            );
            assert!(
                status.message().contains("content"),
                "{backend}: the refusal names the service: {status:?}"
            );
        }
        let status = commands
            .request_inventory(authed(
                gateway::RequestInventoryRequest {
                    kiosk_id: "K-1".into(),
                    idempotency_key: "c-inventory".into(),
                },
                &content,
            ))
            .await
            .expect_err("content asks no inventory");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );
        let status = DeviceEventServiceClient::new(sandbox.channel().await)
            .subscribe(authed(gateway::SubscribeRequest::default(), &content))
            .await
            .expect_err("content reads no kiosk events");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );

        let lend = commands
            .send_command(authed(
                send_request("o-lend", kiosk::lend("order-o")),
                &orders,
            ))
            .await
            .unwrap_or_else(|s| panic!("{backend}: orders lends: {s:?}"))
            .into_inner()
            .command
            .expect("record");
        assert_eq!(lend.requested_by, "service:orders", "{backend}");
        commands
            .get_command(authed(
                gateway::GetCommandRequest {
                    command_id: lend.command_id.clone(),
                },
                &orders,
            ))
            .await
            .unwrap_or_else(|s| panic!("{backend}: orders reads its command: {s:?}"));
        let status = commands
            .force_eject(authed(
                gateway::ForceEjectRequest {
                    kiosk_id: "K-1".into(),
                    bay_id: "A1".into(),
                    idempotency_key: "o-eject".into(),
                },
                &orders,
            ))
            .await
            .expect_err("orders never forces a bay open");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{backend}: {status:?}"
        );
        commands
            .force_eject(authed(
                gateway::ForceEjectRequest {
                    kiosk_id: "K-1".into(),
                    bay_id: "A1".into(),
                    idempotency_key: "op-eject".into(),
                },
                &operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("{backend}: an operator forces a bay open: {s:?}"));
        sandbox.stop().await;
    }
}
