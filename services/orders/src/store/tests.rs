//! What kiosk events do to orders and units, on the store alone (SQLite): the orderings a
//! whole-system test cannot force.

use chrono::{DateTime, Utc};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::Config;
use sneakernet_runtime::testing::{Backend, backends};
use sneakernet_runtime::wire::timestamp;

use super::Store;
use super::fleet::TypeKey;
use super::money::DepositCharge;
use super::orders::{Opening, OrderOpening, PaidOrder};
use crate::domain::money::{Currency, Money};
use crate::entity::{kiosk_item, order};
use crate::lending::{CommandTarget, FollowUp};

const CONSUMER: &str = "test";

pub(crate) struct World {
    pub(crate) store: Store,
    /// The card every order here is paid with (fees go to it).
    pub(crate) card: &'static str,
    cursor: u64,
    _dir: tempfile::TempDir,
}

pub(crate) fn drive(id: &str) -> common::Item {
    common::Item {
        item_id: id.into(),
        kind: common::ItemKind::Drive.into(),
        attributes: Some(common::ItemAttributes {
            kind: Some(common::item_attributes::Kind::Drive(
                common::DriveAttributes {
                    capacity_bytes: 1000,
                    content_package_id: String::new(),
                    write_protected: true,
                    remote_link: false,
                },
            )),
        }),
    }
}

/// The terms of every order here: 4.00 a day, 1 h grace, 3.00 per late day capped at 15.00,
/// 80.00 when lost 14 days after due.
pub(crate) fn terms() -> pb::Pricing {
    let eur = |minor| {
        Some(common::Money {
            minor_units: minor,
            currency: "EUR".into(),
        })
    };
    pb::Pricing {
        base_price: eur(400),
        price_per_extra_day: eur(150),
        max_duration_days: 14,
        grace_period: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        late_fee_per_day: eur(300),
        late_fee_cap: eur(1500),
        lost_item_fee: eur(8000),
        lost_after_days: 14,
        pickup_window: None,
    }
}

pub(crate) fn wanted() -> TypeKey {
    TypeKey::of_item(&drive("x"))
}

pub(crate) fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").unwrap())
}

impl World {
    pub(crate) async fn new() -> Self {
        Self::on(&Backend::Sqlite).await
    }

    /// A world on `backend` (Postgres in schemas no other test uses).
    pub(crate) async fn on(backend: &Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        backend.configure(&mut config);
        let db = sneakernet_runtime::db::open_and_migrate::<crate::migration::Migrator>(
            &config, "orders",
        )
        .await
        .unwrap();
        Self {
            store: Store::new(db),
            card: crate::payments::sandbox::APPROVES,
            cursor: 0,
            _dir: dir,
        }
    }

    async fn event(&mut self, kiosk: &str, kind: gateway::event::Kind) {
        self.event_at(kiosk, kind, Utc::now()).await;
    }

    /// An event the gateway wrote at `at` (its receive time of the kiosk's report).
    async fn event_at(&mut self, kiosk: &str, kind: gateway::event::Kind, at: DateTime<Utc>) {
        self.cursor += 1;
        let event = gateway::Event {
            cursor: self.cursor,
            kiosk_id: kiosk.into(),
            occurred_at: Some(timestamp(at)),
            kind: Some(kind),
            drive_id: String::new(),
        };
        assert!(
            self.store
                .apply_kiosk_event(CONSUMER, &event)
                .await
                .unwrap()
        );
    }

    pub(crate) async fn inventory(&mut self, kiosk: &str, items: &[&str]) {
        let bays = items
            .iter()
            .enumerate()
            .map(|(i, id)| gateway::Bay {
                bay_id: format!("A{i}"),
                state: gateway::BayState::Ready.into(),
                item: Some(drive(id)),
                pinned_order_id: String::new(),
            })
            .collect();
        let inventory = gateway::Inventory {
            bays,
            taken_at: Some(timestamp(Utc::now())),
        };
        self.event(
            kiosk,
            gateway::event::Kind::InventoryChanged(gateway::KioskInventory {
                inventory: Some(inventory),
            }),
        )
        .await;
    }

    /// The rental [`World::begin_rental`] opens (key `r`, 4.00), as a retry would send it.
    pub(crate) fn opening(user: &str, kiosk: &str) -> OrderOpening {
        OrderOpening {
            kind: crate::domain::order::OrderKind::Rental,
            user_id: user.into(),
            idempotency_key: "r".into(),
            request_hash: "h".into(),
            attempt_hash: "h".into(),
            kiosk_id: kiosk.into(),
            wanted: wanted(),
            reservable: None,
            card_token: crate::payments::sandbox::APPROVES.into(),
            price: eur(400),
        }
    }

    /// A user with a deposit who rents one drive at `kiosk`; the order is PAID.
    pub(crate) async fn rent(&self, user: &str, kiosk: &str) -> order::Model {
        let (payment_key, order_id) = self.begin_rental(user, kiosk).await;
        let command = gateway::CommandPayload::default();
        self.finish(user, kiosk, payment_key, order_id, command)
            .await
    }

    /// A user with a deposit whose rental at `kiosk` holds a unit and is about to be charged:
    /// (payment key, order id).
    pub(crate) async fn begin_rental(&self, user: &str, kiosk: &str) -> (String, String) {
        self.begin_order(user, kiosk, crate::domain::order::OrderKind::Rental)
            .await
    }

    /// [`Self::begin_rental`] for an order of `kind` (a reservation holds a blank drive of
    /// the drives' capacity).
    pub(crate) async fn begin_order(
        &self,
        user: &str,
        kiosk: &str,
        kind: crate::domain::order::OrderKind,
    ) -> (String, String) {
        let now = Utc::now();
        let super::money::DepositStart::Charge {
            payment_key,
            deposit_id,
        } = self
            .store
            .begin_deposit(
                user,
                "d",
                "h",
                eur(5000),
                crate::payments::sandbox::APPROVES,
                now,
            )
            .await
            .unwrap()
        else {
            panic!("deposit not started");
        };
        // Paid for real in the sandbox, so the deposit can be refunded.
        use crate::payments::PaymentProvider;
        let charge = crate::payments::sandbox::SandboxProvider::new(self.store.db.clone())
            .charge(crate::payments::ChargeRequest {
                idempotency_key: crate::payments::ProviderKey::derive(&payment_key),
                card_token: crate::payments::sandbox::APPROVES.into(),
                amount: eur(5000),
            })
            .await
            .unwrap();
        self.store
            .finish_deposit(
                DepositCharge {
                    user_id: user.into(),
                    deposit_id,
                    payment_key,
                    charge_id: charge.charge_id,
                    amount: eur(5000),
                    card_token: crate::payments::sandbox::APPROVES.into(),
                    idempotency_key: "d".into(),
                },
                now,
            )
            .await
            .unwrap();
        let mut request = Self::opening(user, kiosk);
        if kind == crate::domain::order::OrderKind::Reservation {
            request.kind = kind;
            request.reservable = Some(crate::domain::reservable::DriveAsk {
                capacity_bytes: 1000,
                package_bytes: 0,
            });
        }
        let Opening::Charge {
            payment_key,
            order_id,
        } = self.store.open_order(&request, now).await.unwrap()
        else {
            panic!("{kind:?} not started");
        };
        (payment_key, order_id)
    }

    async fn finish(
        &self,
        user: &str,
        kiosk: &str,
        payment_key: String,
        order_id: String,
        command: gateway::CommandPayload,
    ) -> order::Model {
        let now = Utc::now();
        let choice = pb::ItemChoice {
            spec: Some(common::ItemSpec {
                item_type: Some(wanted().to_proto()),
                write_protect: true,
            }),
            duration_days: 1,
        };
        let row = crate::checkout::NewOrder {
            kind: crate::domain::order::OrderKind::Rental,
            order_id: order_id.clone(),
            user_id: user.into(),
            kiosk_id: kiosk.into(),
            choice,
            pricing: terms(),
            price: eur(400),
            idempotency_key: "r".into(),
            request_hash: "h".into(),
            charge_id: "ch".into(),
            card_token: self.card.into(),
            deadline: now + chrono::Duration::minutes(2),
            content_title: String::new(),
        }
        .paid_row(now);
        self.store
            .book_paid_order(
                PaidOrder {
                    order: row,
                    payment_key,
                    reason: "Paid. Asking the kiosk to hand out your item.".into(),
                    command,
                    command_key: format!("lend:{order_id}"),
                },
                now,
            )
            .await
            .unwrap()
    }

    pub(crate) async fn lent(&mut self, kiosk: &str, order_id: &str, item: &str) {
        let now = Utc::now();
        self.lent_reported(kiosk, order_id, item, timestamp(now), now)
            .await;
    }

    /// The kiosk says it lent `item` at `finished_at`; the gateway got that at `received_at`.
    pub(crate) async fn lent_reported(
        &mut self,
        kiosk: &str,
        order_id: &str,
        item: &str,
        finished_at: prost_types::Timestamp,
        received_at: DateTime<Utc>,
    ) {
        let record = gateway::CommandRecord {
            command_id: format!("cmd-{order_id}"),
            kiosk_id: kiosk.into(),
            payload: Some(gateway::CommandPayload {
                kind: Some(gateway::command_payload::Kind::Lend(gateway::LendCommand {
                    target: None,
                    order_id: order_id.into(),
                })),
            }),
            state: gateway::CommandState::Succeeded.into(),
            result: Some(gateway::CommandResult {
                command_id: format!("cmd-{order_id}"),
                outcome: Some(gateway::command_result::Outcome::Lend(
                    gateway::LendResult {
                        item_id: item.into(),
                        bay_id: "A0".into(),
                        item: Some(drive(item)),
                    },
                )),
                finished_at: Some(finished_at),
            }),
            requested_by: "service:orders".into(),
            ..Default::default()
        };
        self.event_at(
            kiosk,
            gateway::event::Kind::CommandStateChanged(gateway::CommandStateChanged {
                command: Some(record),
            }),
            received_at,
        )
        .await;
    }

    async fn returned(&mut self, kiosk: &str, item: &str) {
        self.returned_at(kiosk, item, Utc::now()).await;
    }

    /// The kiosk reports a return at `at`, and the gateway receives it then.
    pub(crate) async fn returned_at(&mut self, kiosk: &str, item: &str, at: chrono::DateTime<Utc>) {
        self.reported_return(kiosk, item, at, at).await;
    }

    /// The kiosk says the item came back at `kiosk_time`; the gateway received that at
    /// `received_at`.
    pub(crate) async fn reported_return(
        &mut self,
        kiosk: &str,
        item: &str,
        kiosk_time: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) {
        self.event_at(
            kiosk,
            gateway::event::Kind::ItemReturned(gateway::ItemReturned {
                bay_id: "A9".into(),
                item: Some(drive(item)),
                returned_at: Some(timestamp(kiosk_time)),
            }),
            received_at,
        )
        .await;
    }

    pub(crate) async fn order(&self, id: &str) -> order::Model {
        self.store.order(id).await.unwrap().unwrap()
    }

    async fn holders(&self) -> Vec<(String, Option<String>)> {
        use sea_orm::EntityTrait;
        let mut rows: Vec<_> = kiosk_item::Entity::find()
            .all(&self.store.db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.item_id, row.held_by))
            .collect();
        rows.sort();
        rows
    }
}

pub(crate) fn user(n: u8) -> String {
    uuid::Uuid::from_bytes([n; 16]).to_string()
}

#[tokio::test]
async fn the_kiosk_lending_a_unit_another_order_held_hands_that_order_our_hold() {
    let mut world = World::new().await;
    world.inventory("K1", &["U", "V"]).await;
    let x = world.rent(&user(1), "K1").await;
    let y = world.rent(&user(2), "K1").await;
    let holders = world.holders().await;
    let held_by = |id: &str| holders.iter().find(|(i, _)| i == id).unwrap().1.clone();
    let (x_unit, y_unit) = if held_by("U") == Some(x.order_id.clone()) {
        ("U", "V")
    } else {
        ("V", "U")
    };
    assert_eq!(held_by(y_unit), Some(y.order_id.clone()));

    // The kiosk chose Y's unit for X.
    world.lent("K1", &x.order_id, y_unit).await;
    assert_eq!(world.order(&x.order_id).await.state, "lent");
    assert_eq!(
        world.holders().await,
        vec![(x_unit.to_owned(), Some(y.order_id.clone()))],
        "Y still holds a unit; nothing is free for a third order"
    );
    assert!(world.store.available("K1").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_return_elsewhere_before_the_late_lend_result_closes_the_order_not_a_lost_item() {
    let mut world = World::new().await;
    world.inventory("K1", &["D1"]).await;
    world.inventory("K2", &[]).await;
    let x = world.rent(&user(1), "K1").await;
    // K1 ejected D1 and went offline; the user returned it at K2 first.
    world.returned("K2", "D1").await;
    assert_eq!(world.order(&x.order_id).await.state, "paid");
    world.lent("K1", &x.order_id, "D1").await;
    let order = world.order(&x.order_id).await;
    assert_eq!(order.state, "returned");
    assert_eq!(order.returned_kiosk_id, "K2");
    assert_eq!(
        world.holders().await,
        vec![("D1".to_owned(), None)],
        "D1 stays a unit of K2"
    );
    let account = world.store.account(&user(1)).await.unwrap().unwrap();
    assert_eq!(account.open_order_id, None, "the account may rent again");
}

#[tokio::test]
async fn a_drive_links_events_make_no_kiosk_and_move_the_cursor() {
    let world = World::new().await;
    let drive_event = |cursor: u64, kind: gateway::event::Kind| gateway::Event {
        cursor,
        kiosk_id: String::new(),
        occurred_at: Some(timestamp(Utc::now())),
        kind: Some(kind),
        drive_id: "D1".into(),
    };
    let online = gateway::event::Kind::KioskOnline(gateway::KioskOnline {
        session_id: "s".into(),
        agent_version: "1".into(),
    });
    let offline = gateway::event::Kind::KioskOffline(gateway::KioskOffline::default());
    for (cursor, kind) in [(1, online), (2, offline)] {
        assert!(
            world
                .store
                .apply_kiosk_event(CONSUMER, &drive_event(cursor, kind))
                .await
                .unwrap()
        );
    }
    assert!(world.store.kiosks("", 10, false).await.unwrap().is_empty());
    assert!(world.store.kiosk("").await.unwrap().is_none());
    assert!(world.store.kiosk("D1").await.unwrap().is_none());
    assert_eq!(world.store.cursor(CONSUMER).await.unwrap(), 2);
}

#[tokio::test]
async fn replayed_events_change_nothing_and_a_lend_after_failure_is_kept_for_the_audit() {
    let mut world = World::new().await;
    world.inventory("K1", &["D1"]).await;
    let x = world.rent(&user(1), "K1").await;
    world
        .store
        .fail_lend(&x.order_id, "test", Utc::now())
        .await
        .unwrap();
    world.lent("K1", &x.order_id, "D1").await;
    let order = world.order(&x.order_id).await;
    assert_eq!(order.state, "failed");
    assert_eq!(order.late_item_id.as_deref(), Some("D1"));
    let report = world
        .store
        .audit(Utc::now(), chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(report.ledger_balanced);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.kind == i32::from(pb::AuditViolationKind::LentAfterFailure)),
        "{:?}",
        report.violations
    );
    // A replay of an applied event is refused by the cursor.
    let replay = gateway::Event {
        cursor: world.cursor,
        kiosk_id: "K1".into(),
        occurred_at: None,
        kind: None,
        drive_id: String::new(),
    };
    assert!(
        !world
            .store
            .apply_kiosk_event(CONSUMER, &replay)
            .await
            .unwrap()
    );
}

fn inventory_event(cursor: u64, kiosk: &str, items: &[&str]) -> gateway::Event {
    let bays = items
        .iter()
        .enumerate()
        .map(|(i, id)| gateway::Bay {
            bay_id: format!("A{i}"),
            state: gateway::BayState::Ready.into(),
            item: Some(drive(id)),
            pinned_order_id: String::new(),
        })
        .collect();
    gateway::Event {
        cursor,
        kiosk_id: kiosk.into(),
        occurred_at: Some(timestamp(Utc::now())),
        kind: Some(gateway::event::Kind::InventoryChanged(
            gateway::KioskInventory {
                inventory: Some(gateway::Inventory {
                    bays,
                    taken_at: None,
                }),
            },
        )),
        drive_id: String::new(),
    }
}

#[tokio::test]
async fn a_parked_event_moves_the_cursor_on_and_a_retry_applies_it_without_rolling_back_newer_ones()
{
    let world = World::new().await;
    let store = &world.store;
    let older = inventory_event(1, "K1", &["D1"]);
    store
        .park(CONSUMER, &older, "cannot store it", Utc::now())
        .await
        .unwrap();
    assert_eq!(store.cursor(CONSUMER).await.unwrap(), 1, "moved past it");
    let parked = store.parked(0, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].error, "cannot store it");
    assert!(store.available("K1").await.unwrap().is_empty());

    // A newer inventory of K1 arrives and is applied; then the operator retries the old one.
    let newer = inventory_event(2, "K1", &["D1", "D2"]);
    assert!(store.apply_kiosk_event(CONSUMER, &newer).await.unwrap());
    assert!(matches!(
        store.retry_parked(1, Utc::now()).await.unwrap(),
        super::parked::Retried::Applied
    ));
    assert!(store.parked(0, 10).await.unwrap().is_empty());
    let units: u32 = store
        .available("K1")
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(units, 2, "the newer inventory stands");
    assert!(matches!(
        store.retry_parked(1, Utc::now()).await.unwrap(),
        super::parked::Retried::NotFound
    ));

    // Parked and dropped: gone without being applied.
    let other = inventory_event(3, "K2", &["D9"]);
    store
        .park(CONSUMER, &other, "bad", Utc::now())
        .await
        .unwrap();
    assert!(store.drop_parked(3).await.unwrap());
    assert!(!store.drop_parked(3).await.unwrap());
    assert!(store.available("K2").await.unwrap().is_empty());
}

/// Marking a command sent locks its order before its outbox row, the order every other writer
/// takes them in (a cancel, a failed lend: order, then outbox), so one committing at the same
/// moment waits instead of deadlocking. Postgres only: SQLite takes one lock for every write.
#[tokio::test]
async fn marking_a_lend_sent_takes_the_order_lock_first_so_a_concurrent_failure_never_deadlocks() {
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        return;
    };
    let mut world = World::on(&backend).await;
    world.inventory("K1", &["U"]).await;
    let (payment_key, order_id) = world.begin_rental(&user(1), "K1").await;
    let lend = gateway::CommandPayload {
        kind: Some(gateway::command_payload::Kind::Lend(
            gateway::LendCommand::default(),
        )),
    };
    world
        .finish(&user(1), "K1", payment_key, order_id.clone(), lend)
        .await;
    let row = world
        .store
        .unsent_commands(10)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.order_id == order_id)
        .expect("the lend waits in the outbox");

    // A writer holding the order (as fail_lend and cancel_reservation do) ...
    let txn = world.store.write().await.unwrap();
    super::orders::lock_order(&txn, &order_id).await.unwrap();
    let holder: i32 = pid(&txn).await;
    // ... while the outbox marks the lend sent: it must wait for the order.
    let store = world.store.clone();
    let sending = tokio::spawn(async move { store.command_sent(&row, "cmd-1", Utc::now()).await });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while blocked_by(&world.store.db, holder).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never waited for the order"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The holder now takes the outbox rows too, and commits: no deadlock on either side.
    super::orders::fail_lend_in(&txn, &order_id, "the kiosk said no", Utc::now())
        .await
        .expect("the failure is booked, not broken off as a deadlock");
    txn.commit().await.unwrap();
    sending
        .await
        .unwrap()
        .expect("the outbox's note is booked after the failure");
    assert_eq!(world.order(&order_id).await.state, "failed");
}

/// The Postgres backend process of `db`'s connection.
async fn pid<C: sea_orm::ConnectionTrait>(db: &C) -> i32 {
    use sea_orm::{FromQueryResult, Statement};
    #[derive(FromQueryResult)]
    struct Pid {
        pid: i32,
    }
    Pid::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT pg_backend_pid() AS pid",
    ))
    .one(db)
    .await
    .unwrap()
    .unwrap()
    .pid
}

/// How many Postgres sessions wait for a lock `holder` holds.
async fn blocked_by(db: &sea_orm::DatabaseConnection, holder: i32) -> i64 {
    use sea_orm::{FromQueryResult, Statement};
    #[derive(FromQueryResult)]
    struct Count {
        n: i64,
    }
    Count::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT count(*) AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        [holder.into()],
    ))
    .one(db)
    .await
    .unwrap()
    .unwrap()
    .n
}

#[tokio::test]
async fn a_drives_own_link_confirms_a_write_protect_change_on_its_order_and_makes_no_kiosk() {
    let mut world = World::new().await;
    world.inventory("K1", &["D1"]).await;
    let x = world.rent(&user(1), "K1").await;
    world.lent("K1", &x.order_id, "D1").await;
    let lent = world.order(&x.order_id).await;
    assert!(lent.write_protected, "lent as the kiosk reported it");
    let key = format!("write-protect:{}:{}", x.order_id, lent.version);
    let off = FollowUp {
        target: CommandTarget::Drive("D1".into()),
        key: key.clone(),
        command: gateway::CommandPayload {
            kind: Some(gateway::command_payload::Kind::SetWriteProtect(
                gateway::SetWriteProtectCommand {
                    item_id: "D1".into(),
                    on: false,
                },
            )),
        },
        within: chrono::Duration::days(1),
    };
    let wanting = world
        .store
        .want_write_protect(
            &x.order_id,
            lent.version,
            false,
            "off",
            Some(&off),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(wanting.write_protect_wanted, Some(false));
    assert!(wanting.write_protected, "not before the drive confirms");
    let stale = world
        .store
        .want_write_protect(
            &x.order_id,
            lent.version,
            false,
            "off",
            Some(&off),
            Utc::now(),
        )
        .await;
    assert!(
        matches!(stale, Err(super::StoreError::Raced(_))),
        "{stale:?}"
    );
    let queued = world.store.unsent_commands(10).await.unwrap();
    let row = queued
        .iter()
        .find(|r| r.idempotency_key == key)
        .expect("queued");
    assert_eq!(
        (
            row.kiosk_id.as_str(),
            row.drive_id.as_str(),
            row.order_id.as_str()
        ),
        ("", "D1", x.order_id.as_str())
    );

    // The drive's confirmation is an event of its own link: no kiosk_id.
    let record = gateway::CommandRecord {
        command_id: "c-wp".into(),
        kiosk_id: String::new(),
        drive_id: "D1".into(),
        payload: Some(off.command.clone()),
        state: gateway::CommandState::Succeeded.into(),
        result: Some(gateway::CommandResult {
            command_id: "c-wp".into(),
            outcome: Some(gateway::command_result::Outcome::SetWriteProtect(
                gateway::SetWriteProtectResult {
                    item_id: "D1".into(),
                    write_protected: false,
                },
            )),
            finished_at: None,
        }),
        requested_by: "service:orders".into(),
        idempotency_key: key,
        ..Default::default()
    };
    world.cursor += 1;
    let event = gateway::Event {
        cursor: world.cursor,
        kiosk_id: String::new(),
        occurred_at: Some(timestamp(Utc::now())),
        kind: Some(gateway::event::Kind::CommandStateChanged(
            gateway::CommandStateChanged {
                command: Some(record),
            },
        )),
        drive_id: "D1".into(),
    };
    let mut changes = world.store.wakeups().follow(&x.order_id);
    assert!(
        world
            .store
            .apply_kiosk_event(CONSUMER, &event)
            .await
            .unwrap()
    );
    let confirmed = world.order(&x.order_id).await;
    assert!(!confirmed.write_protected);
    assert_eq!(confirmed.write_protect_wanted, None);
    assert!(
        confirmed.version > wanting.version,
        "a change row for WatchOrder"
    );
    assert!(
        confirmed.state_reason.contains("off"),
        "{}",
        confirmed.state_reason
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed())
        .await
        .expect("the order's watchers are woken");
    let kiosks: Vec<String> = world
        .store
        .kiosks("", 10, false)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kiosk_id)
        .collect();
    assert_eq!(kiosks, ["K1"]);
}

/// Where each unit is: (item, kiosk, ready), by item.
async fn units(world: &World) -> Vec<(String, String, bool)> {
    use sea_orm::EntityTrait;
    let mut rows: Vec<_> = kiosk_item::Entity::find()
        .all(&world.store.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.item_id, row.kiosk_id, row.ready))
        .collect();
    rows.sort();
    rows
}

impl World {
    /// The kiosk says the lend of `order_id` failed at `item`'s bay (jammed).
    async fn lend_failed(&mut self, kiosk: &str, order_id: &str, item: &str) {
        let record = gateway::CommandRecord {
            command_id: format!("cmd-{order_id}"),
            kiosk_id: kiosk.into(),
            payload: Some(gateway::CommandPayload {
                kind: Some(gateway::command_payload::Kind::Lend(gateway::LendCommand {
                    target: None,
                    order_id: order_id.into(),
                })),
            }),
            state: gateway::CommandState::Failed.into(),
            result: Some(gateway::CommandResult {
                command_id: format!("cmd-{order_id}"),
                outcome: Some(gateway::command_result::Outcome::Failure(
                    gateway::Failure {
                        reason: gateway::FailureReason::EjectJammed.into(),
                        message: "jammed".into(),
                        bay_id: "A0".into(),
                        item_id: item.into(),
                    },
                )),
                finished_at: Some(timestamp(Utc::now())),
            }),
            requested_by: "service:orders".into(),
            ..Default::default()
        };
        self.event(
            kiosk,
            gateway::event::Kind::CommandStateChanged(gateway::CommandStateChanged {
                command: Some(record),
            }),
        )
        .await;
    }
}

/// Issue #12, defect 7, on the store: K2 names K1's drive D1 in its inventory, in a return
/// (K1 lending nothing), in a failed lend and in a lend result of its own order; D1 stays
/// K1's, ready, on every backend.
#[tokio::test]
async fn a_kiosk_naming_another_kiosks_unit_neither_takes_nor_unreadies_nor_removes_it() {
    for backend in backends() {
        let mut world = World::on(&backend).await;
        world.inventory("K1", &["D1"]).await;
        world.inventory("K2", &["D1", "E1"]).await;
        let k1_has_d1 = vec![
            ("D1".to_owned(), "K1".to_owned(), true),
            ("E1".to_owned(), "K2".to_owned(), true),
        ];
        assert_eq!(units(&world).await, k1_has_d1, "{backend}: inventory");

        world.returned("K2", "D1").await;
        assert_eq!(units(&world).await, k1_has_d1, "{backend}: return");

        let x = world.rent(&user(1), "K2").await;
        world.lend_failed("K2", &x.order_id, "D1").await;
        assert_eq!(world.order(&x.order_id).await.state, "failed");
        assert_eq!(units(&world).await, k1_has_d1, "{backend}: failed lend");

        let y = world.rent(&user(2), "K2").await;
        world.lent("K2", &y.order_id, "D1").await;
        assert_eq!(
            units(&world).await,
            k1_has_d1,
            "{backend}: lend result naming D1"
        );
        assert_eq!(world.store.available("K1").await.unwrap().len(), 1);

        // K1 lends D1 itself: only then may another kiosk's bay take it.
        let z = world.rent(&user(3), "K1").await;
        world.lent("K1", &z.order_id, "D1").await;
        assert_eq!(world.order(&z.order_id).await.state, "lent", "{backend}");
        world.returned("K2", "D1").await;
        assert_eq!(
            world.order(&z.order_id).await.state,
            "returned",
            "{backend}: returns count at any kiosk"
        );
        assert_eq!(
            units(&world).await,
            vec![
                ("D1".to_owned(), "K2".to_owned(), true),
                ("E1".to_owned(), "K2".to_owned(), true),
            ],
            "{backend}: D1 came back at K2"
        );
    }
}

/// The one exception for returns is narrow: K1 has a rental in flight (PAID, holding one of
/// its two drives). K2 returning K1's other drive takes nothing; only the drive that order
/// holds, which may really have left by the lend whose result is on its way, can come back
/// elsewhere.
#[tokio::test]
async fn a_return_takes_a_busy_kiosks_drive_only_if_its_lend_in_flight_holds_it() {
    use sea_orm::EntityTrait;
    for backend in backends() {
        let mut world = World::on(&backend).await;
        world.inventory("K1", &["D1", "D2"]).await;
        let x = world.rent(&user(1), "K1").await;
        let rows = kiosk_item::Entity::find()
            .all(&world.store.db)
            .await
            .unwrap();
        let held = rows
            .iter()
            .find(|row| row.held_by.as_deref() == Some(x.order_id.as_str()))
            .map(|row| row.item_id.clone())
            .expect("the rental holds a drive");
        let free = if held == "D1" { "D2" } else { "D1" };

        world.returned("K2", free).await;
        assert_eq!(
            units(&world).await,
            vec![
                ("D1".to_owned(), "K1".to_owned(), true),
                ("D2".to_owned(), "K1".to_owned(), true),
            ],
            "{backend}: a return naming a drive no lend in flight holds takes nothing"
        );
        world.returned("K2", &held).await;
        let moved: Vec<_> = units(&world)
            .await
            .into_iter()
            .filter(|(item, kiosk, _)| item == &held && kiosk == "K2")
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "{backend}: the held drive may have left by its lend"
        );
    }
}

/// Two kiosks claim a new item at once: the second claim waits for the first and, the item
/// being the first kiosk's by then, changes nothing (the condition is in the upsert, not a
/// read before it). Postgres only: SQLite takes one lock for every write.
#[tokio::test]
async fn of_two_kiosks_claiming_one_new_item_at_once_the_first_keeps_it() {
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        return;
    };
    let world = World::on(&backend).await;
    let first = world.store.write().await.unwrap();
    let taken = super::fleet::claim_unit(
        &first,
        "K1",
        &drive("N1"),
        true,
        None,
        super::fleet::ClaimBy::Report,
    )
    .await
    .unwrap();
    assert_eq!(taken, super::fleet::Claim::Taken);
    let holder = pid(&first).await;
    let store = world.store.clone();
    let second = tokio::spawn(async move {
        let txn = store.write().await.unwrap();
        let claim = super::fleet::claim_unit(
            &txn,
            "K2",
            &drive("N1"),
            true,
            None,
            super::fleet::ClaimBy::Report,
        )
        .await
        .unwrap();
        txn.commit().await.unwrap();
        claim
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while blocked_by(&world.store.db, holder).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second claim never waited for the first"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.commit().await.unwrap();
    assert_eq!(
        second.await.unwrap(),
        super::fleet::Claim::HeldElsewhere {
            holder: "K1".into()
        }
    );
    assert_eq!(
        units(&world).await,
        vec![("N1".to_owned(), "K1".to_owned(), true)]
    );
}

#[tokio::test]
async fn the_audit_names_an_expired_reservation_refunded_wrongly_and_one_provisioning_past_its_deadline()
 {
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    for backend in backends() {
        let mut world = World::on(&backend).await;
        world.inventory("K1", &["D1", "D2"]).await;
        let now = Utc::now();
        // Two paid orders made into what the audit must catch (no flow writes either): an
        // expired reservation that paid everything back, keeping no no-show fee, and a
        // reservation still provisioning two hours after its deadline.
        let refunded_all = world.rent(&user(1), "K1").await;
        let mut row = refunded_all.clone().into_active_model();
        row.kind = Set("reservation".into());
        row.state = Set("expired".into());
        row.amount_refunded = Set(refunded_all.amount_charged);
        row.update(&world.store.db).await.unwrap();
        let stuck = world.rent(&user(2), "K1").await;
        let mut row = stuck.clone().into_active_model();
        row.kind = Set("reservation".into());
        row.state = Set("provisioning".into());
        row.deadline = Set(now - chrono::Duration::hours(2));
        row.update(&world.store.db).await.unwrap();

        let report = world
            .store
            .audit(now, chrono::Duration::hours(1))
            .await
            .unwrap();
        let found = |order_id: &str, kind: pb::AuditViolationKind| {
            report
                .violations
                .iter()
                .any(|v| v.order_id == order_id && v.kind == i32::from(kind))
        };
        assert!(
            found(
                &refunded_all.order_id,
                pb::AuditViolationKind::LedgerMismatch
            ),
            "{backend}: an expired reservation keeping no fee: {:?}",
            report.violations
        );
        assert!(
            found(&stuck.order_id, pb::AuditViolationKind::PaidNotSettled),
            "{backend}: provisioning past its deadline: {:?}",
            report.violations
        );
    }
}

/// Lends noted unanswered (issue 12, defect 3) wait for an operator or a late result; however
/// many there are, the settling worker's batch of overdue lends still reaches newer ones, and
/// each noted one is asked about again after a while.
#[tokio::test]
async fn lends_noted_unanswered_never_crowd_newer_overdue_lends_out_of_the_batch_and_keep_their_deadline()
 {
    for backend in backends() {
        let mut world = World::on(&backend).await;
        let mut dispensing = Vec::new();
        // Item ids are global: each kiosk holds its own unit.
        for (n, (kiosk, item)) in [("K1", "U1"), ("K2", "U2")].into_iter().enumerate() {
            world.inventory(kiosk, &[item]).await;
            let user = user(n as u8 + 1);
            let (payment_key, order_id) = world.begin_rental(&user, kiosk).await;
            let lend = gateway::CommandPayload {
                kind: Some(gateway::command_payload::Kind::Lend(
                    gateway::LendCommand::default(),
                )),
            };
            world
                .finish(&user, kiosk, payment_key, order_id.clone(), lend)
                .await;
            let row = world
                .store
                .unsent_commands(10)
                .await
                .unwrap()
                .into_iter()
                .find(|row| row.order_id == order_id)
                .expect("the lend waits in the outbox");
            world
                .store
                .command_sent(&row, &format!("cmd-{n}"), Utc::now())
                .await
                .unwrap();
            dispensing.push(order_id);
        }
        let noted = "never answered";
        let far = Utc::now() + chrono::Duration::days(1);
        let due = |quiet_since| {
            let store = world.store.clone();
            async move {
                let mut ids: Vec<String> = store
                    .dispensing_due(far, noted, quiet_since, 10)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|o| o.order_id)
                    .collect();
                ids.sort();
                ids
            }
        };
        let mut both = dispensing.clone();
        both.sort();
        let hour_ago = Utc::now() - chrono::Duration::hours(1);
        assert_eq!(due(hour_ago).await, both, "{backend}: both overdue");

        let before = world.order(&dispensing[0]).await;
        assert!(
            world
                .store
                .note_lend_unanswered(&dispensing[0], noted, Utc::now())
                .await
                .unwrap()
        );
        assert_eq!(
            due(hour_ago).await,
            vec![dispensing[1].clone()],
            "{backend}: the noted lend leaves the batch"
        );
        let in_a_second = Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(
            due(in_a_second).await,
            both,
            "{backend}: and comes back for its recheck"
        );
        // Past its quiet spell it comes after every lend not noted, whatever its deadline
        // (it is the older one here): a full batch never holds it instead of a newer lend.
        let first_of_batch = world
            .store
            .dispensing_due(far, noted, in_a_second, 1)
            .await
            .unwrap();
        assert_eq!(
            first_of_batch
                .iter()
                .map(|o| o.order_id.clone())
                .collect::<Vec<_>>(),
            vec![dispensing[1].clone()],
            "{backend}: the noted lend comes last"
        );
        let after = world.order(&dispensing[0]).await;
        assert_eq!(
            after.deadline, before.deadline,
            "{backend}: the audit still sees it late"
        );
        assert_eq!(
            after.state,
            crate::domain::order::OrderState::Dispensing.as_str(),
            "{backend}"
        );
    }
}
