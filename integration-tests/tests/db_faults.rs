//! Fault matrix cell (issue 12, docs/reliability.md): Postgres connections dropped during
//! rentals. Every pooled connection of this test's node carries its own `application_name`, so
//! the test terminates exactly those backends (`pg_terminate_backend`), again and again, while
//! users rent: transactions die mid-flight, pools reconnect. What must hold afterwards
//! (DESIGN.md §10): every user's retried request (same idempotency key) made at most one
//! order; every order ends lent or refunded; no item left a kiosk twice or for two orders; and
//! the auditor finds every payment matched by a lend or a refund.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use sneakernet_integration_tests::rentals::{
    Customer, SimKiosk, WAIT, assert_audit_clean, create_rental, customer_with_deposit,
    list_orders, power_bank, power_bank_type, rental_request, scan, start_priced, wait_for_state,
};
use sneakernet_integration_tests::{Backend, skip_or_fail};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const USERS: usize = 8;

/// Codes a client retries with the same idempotency key: the database was unreachable or a
/// concurrent change got in the way, and nothing final was said. A database fault must be
/// answered with one of these, never INTERNAL (which says "a bug; do not retry").
fn worth_retrying(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Aborted)
}

/// `url` with `application_name=tag` added to its query.
fn tagged(url: &str, tag: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={tag}")
}

/// Terminates every backend named `tag`, every `every`, until `stop`; counts what it ended.
async fn terminate_until(
    url: String,
    tag: String,
    every: Duration,
    stop: CancellationToken,
    ended: Arc<AtomicU64>,
) {
    let admin = Database::connect(url).await.expect("admin connection");
    let terminate = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
        [tag.into()],
    );
    while !stop.is_cancelled() {
        let rows = admin
            .query_all_raw(terminate.clone())
            .await
            .expect("pg_terminate_backend");
        ended.fetch_add(rows.len() as u64, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Scans and rents with one idempotency key, retrying what may be retried, until an answer
/// that is final: the order, or a refusal.
async fn rent_through_faults(
    channel: &tonic::transport::Channel,
    user: &Customer,
    qr: &str,
    key: &str,
    retried: &AtomicU64,
) -> Result<pb::Order, tonic::Status> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempt = async {
            let offer = scan(channel, &user.token, qr).await?;
            create_rental(
                channel,
                &user.token,
                rental_request(&offer, &power_bank_type(), 1, None, key),
            )
            .await
        };
        match attempt.await {
            Err(status)
                if worth_retrying(status.code()) && tokio::time::Instant::now() < deadline =>
            {
                eprintln!(
                    "{key}: retrying after {:?}: {}",
                    status.code(),
                    status.message()
                );
                retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
}

#[tokio::test]
async fn rentals_keep_money_and_items_whole_while_postgres_connections_are_terminated() {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => return skip_or_fail("Postgres", "DATABASE_URL"),
    };
    let tag = format!(
        "sn_fault_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let backend = Backend::Postgres(tagged(&url, &tag));
    let (sandbox, channel, operator) = start_priced(
        &backend,
        &[common::ItemKind::Drive, common::ItemKind::PowerBank],
    )
    .await;
    let units: Vec<String> = (1..=USERS).map(|n| format!("P-{n}")).collect();
    let mut kiosk = SimKiosk::healthy(
        sandbox.node().address,
        &operator,
        "K-1",
        units.iter().map(|id| Some(power_bank(id))).collect(),
    )
    .await;
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(customer_with_deposit(&channel).await);
    }

    // The connections to end are there: the terminator cannot pass by finding none.
    let admin = Database::connect(url.clone())
        .await
        .expect("admin connection");
    let named = admin
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            [tag.clone().into()],
        ))
        .await
        .expect("pg_stat_activity");
    assert!(!named.is_empty(), "the node's connections carry {tag}");

    let stop = CancellationToken::new();
    let ended = Arc::new(AtomicU64::new(0));
    let terminator = tokio::spawn(terminate_until(
        url.clone(),
        tag.clone(),
        Duration::from_millis(1000),
        stop.clone(),
        ended.clone(),
    ));

    let retried = Arc::new(AtomicU64::new(0));
    let mut renters = tokio::task::JoinSet::new();
    for (n, user) in users.iter().enumerate() {
        let (channel, user, qr) = (channel.clone(), user.clone(), kiosk.qr());
        let retried = retried.clone();
        renters.spawn(async move {
            let key = format!("fault-{n}");
            (
                n,
                rent_through_faults(&channel, &user, &qr, &key, &retried).await,
            )
        });
    }
    let answers = renters.join_all().await;
    // The faults go on while the lends settle (orders' events, the kiosk's results).
    for (n, answer) in &answers {
        if let Ok(order) = answer {
            wait_for_state(
                &channel,
                &users[*n].token,
                &order.order_id,
                &[S::Lent, S::Refunded],
            )
            .await;
        }
    }
    stop.cancel();
    terminator.await.expect("terminator");
    let ended = ended.load(Ordering::Relaxed);
    let retried = retried.load(Ordering::Relaxed);
    eprintln!("terminated {ended} Postgres backends; {retried} calls answered retry");
    assert!(
        ended > 0,
        "the fault was injected: no backend was terminated"
    );
    assert!(
        retried > 0,
        "the faults reached the users' calls, answered UNAVAILABLE or ABORTED"
    );

    // Each user got one final answer; every order reaches lent or refunded.
    let mut lent_items = HashSet::new();
    for (n, answer) in &answers {
        let user = &users[*n];
        let order = match answer {
            Ok(order) => order.clone(),
            Err(status) => {
                assert!(
                    !worth_retrying(status.code()),
                    "user {n}: no final answer within {WAIT:?}: {status:?}"
                );
                assert_ne!(
                    status.code(),
                    Code::Internal,
                    "user {n}: a database fault answered as a defect: {status:?}"
                );
                // A refusal made no order.
                let listed = list_orders(&channel, &user.token).await.expect("list");
                assert!(
                    listed.is_empty(),
                    "user {n} refused ({status:?}) but has {listed:?}"
                );
                continue;
            }
        };
        let settled = wait_for_state(
            &channel,
            &user.token,
            &order.order_id,
            &[S::Lent, S::Refunded],
        )
        .await;
        if settled.state == S::Lent as i32 {
            assert!(
                lent_items.insert(settled.item_id.clone()),
                "item {} lent to two orders",
                settled.item_id
            );
            assert_eq!(
                kiosk.eject_count(&settled.item_id),
                1,
                "user {n}: {settled:?}"
            );
        }
        let listed = list_orders(&channel, &user.token).await.expect("list");
        assert_eq!(listed.len(), 1, "user {n}: one key, one order: {listed:?}");
    }
    for unit in &units {
        if !lent_items.contains(unit) {
            assert_eq!(
                kiosk.eject_count(unit),
                0,
                "{unit} left without a lent order"
            );
        }
    }
    assert!(
        !lent_items.is_empty(),
        "some rental got through between the faults"
    );
    assert_audit_clean(&channel, &operator, "after the connection faults").await;

    kiosk.stop().await;
    sandbox.stop().await;
}
