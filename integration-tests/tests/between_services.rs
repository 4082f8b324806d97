//! The link between orders and the gateway is slow and breaks (issue 12's fault matrix: a proxy
//! between services). Orders reaches the gateway through a proxy that adds latency to every
//! byte and cuts every connection again and again while rentals are in flight: commands sent
//! from the outbox (SendCommand, retried under the same key) and the event stream they are
//! answered on (Subscribe, resumed from orders' cursor) cross it. Every order must still end
//! LENT once, with its own item, and the audit stay clean.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use sneakernet_integration_tests::proxy::CuttableProxy;
use sneakernet_integration_tests::rentals::{
    SimKiosk, WAIT, assert_audit_clean, create_rental, customer_with_deposit, get_order,
    power_bank, power_bank_type, rental_request, scan_until_available, start_priced_with,
};
use sneakernet_integration_tests::{backends, free_port};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1::OrderState as S;

/// Rentals in flight at once, spread over two kiosks.
const RENTALS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rentals_stay_whole_while_the_link_from_orders_to_the_gateway_is_slow_and_cut() {
    for backend in backends() {
        // The node's port is chosen first, so the proxy in front of it can exist before
        // orders starts and is told to reach the gateway through it.
        let node = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy = CuttableProxy::start(node).await.expect("proxy");
        let through = format!("http://{}", proxy.address);
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::PowerBank], |config| {
                config.listen = node;
                config.orders.gateway_url = Some(through);
            })
            .await;
        let banks = |prefix: &str| {
            (0..RENTALS / 2)
                .map(|n| Some(power_bank(&format!("{prefix}-{n}"))))
                .collect::<Vec<_>>()
        };
        let kiosks = [
            SimKiosk::healthy(sandbox.node().address, &operator, "K-S1", banks("P1")).await,
            SimKiosk::healthy(sandbox.node().address, &operator, "K-S2", banks("P2")).await,
        ];
        let mut renters = Vec::new();
        for n in 0..RENTALS {
            let user = customer_with_deposit(&channel).await;
            let kiosk = &kiosks[n % 2];
            // Nothing is rented yet: each kiosk offers all of its banks.
            let offer = scan_until_available(
                &channel,
                &user.token,
                kiosk,
                &power_bank_type(),
                (RENTALS / 2) as u32,
            )
            .await;
            renters.push((user, offer));
        }

        // From here every byte between orders and the gateway takes 100 ms each way, and
        // every connection through it is cut every 500 ms until every order is LENT: long
        // enough for a request to get through between cuts, short enough that cuts fall
        // between a command's send and its result's event.
        proxy.set_latency(Duration::from_millis(100));
        let mut rentals = tokio::task::JoinSet::new();
        for (n, (user, offer)) in renters.iter().enumerate() {
            let channel = channel.clone();
            let token = user.token.clone();
            let request = rental_request(offer, &power_bank_type(), 1, None, &format!("s-{n}"));
            rentals.spawn(async move { (n, create_rental(&channel, &token, request).await) });
        }
        let mut orders = Vec::new();
        for joined in rentals.join_all().await {
            let (n, rented) = joined;
            let order = rented.unwrap_or_else(|s| panic!("{backend}: rental refused: {s:?}"));
            orders.push((n, order));
        }
        let before_cuts = proxy.bytes_carried();
        let mut cuts = 0;
        // Cuts made while an order was provably not LENT yet (read right after the cut, and
        // states only move forward).
        let mut cuts_in_flight = 0;
        let deadline = tokio::time::Instant::now() + WAIT;
        let lent = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            proxy.cut();
            cuts += 1;
            let mut now = Vec::new();
            for (n, order) in &orders {
                let token = &renters[*n].0.token;
                now.push(
                    get_order(&channel, token, &order.order_id)
                        .await
                        .expect("order"),
                );
            }
            if now.iter().all(|o| o.state == S::Lent as i32) {
                break now;
            }
            cuts_in_flight += 1;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend}: not all LENT within {WAIT:?}: {now:?}"
            );
        };
        proxy.set_latency(Duration::ZERO);

        let items: HashSet<&str> = lent.iter().map(|o| o.item_id.as_str()).collect();
        assert_eq!(
            items.len(),
            RENTALS,
            "{backend}: each order its own item: {lent:?}"
        );
        for (order, (n, _)) in lent.iter().zip(&orders) {
            let kiosk = &kiosks[n % 2];
            assert_eq!(
                kiosk.eject_count(&order.item_id),
                1,
                "{backend}: {} left its bay once",
                order.item_id
            );
        }
        assert!(
            proxy.bytes_carried() > before_cuts,
            "{backend}: orders reached the gateway through the proxy"
        );
        assert!(
            cuts_in_flight > 0,
            "{backend}: no cut met a rental in flight ({cuts} cuts)"
        );
        assert_audit_clean(
            &channel,
            &operator,
            &format!("{backend}: after {cuts} cuts"),
        )
        .await;
        for mut kiosk in kiosks {
            kiosk.stop().await;
        }
        sandbox.stop().await;
    }
}
