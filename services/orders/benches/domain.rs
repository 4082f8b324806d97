//! The orders service's hot pure rules (docs/benchmarks.md, scenario 4): the order life cycle's
//! transition, the price rule and offer line a choice gets, which drives a reservation may take
//! and a kiosk's lines under a filter (FindKiosks runs these per kiosk in a page), and the
//! check of a scanned kiosk QR code (unseal the kiosk's secret, parse, verify the TOTP code).
//! Under `cargo test --benches` each body runs once.
//!
//! Baselines measured beside them, in the same run: a linear scan of the same rules or units
//! that only compares one field (what any rule choice costs at least), and `qr::verify` alone
//! beside the whole scan check.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use sneakernet_orders::domain::availability::{self, TypeFilter, Unit};
use sneakernet_orders::domain::offer::{self, TypeKey};
use sneakernet_orders::domain::order::{self, OrderEvent, OrderKind, OrderState};
use sneakernet_orders::domain::reservable::{self, DriveAsk, UnitFacts};
use sneakernet_orders::entity::pricing_rule;
use sneakernet_orders::sealing::SealingKey;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::{KioskId, qr};

const TB: i64 = 1_000_000_000_000;
const DRIVE: i32 = common::ItemKind::Drive as i32;

fn order_transition(c: &mut Criterion) {
    use OrderEvent as E;
    let rental = [E::LendRequested, E::Lent, E::Returned, E::Settled];
    let reservation = [
        E::ProvisionRequested,
        E::Provisioned,
        E::LendRequested,
        E::Lent,
        E::Returned,
        E::Settled,
    ];
    let walk = |kind: OrderKind, events: &[OrderEvent]| {
        let mut state = OrderState::Paid;
        for &event in events {
            if let Ok(to) = order::transition(black_box(kind), black_box(state), black_box(event)) {
                state = to;
            }
        }
        state
    };
    let mut group = c.benchmark_group("orders_order_transition");
    group.bench_function("rental_life_4_events", |b| {
        b.iter(|| walk(OrderKind::Rental, black_box(&rental)))
    });
    group.bench_function("reservation_life_6_events", |b| {
        b.iter(|| walk(OrderKind::Reservation, black_box(&reservation)))
    });
    group.finish();
}

/// `n` price rules over 4 sites, 4 capacities and 8 packages, plus network defaults.
fn rules(n: usize) -> Vec<pricing_rule::Model> {
    (0..n)
        .map(|i| pricing_rule::Model {
            rule_key: format!("rule-{i}"),
            site_id: if i % 5 == 0 {
                String::new()
            } else {
                format!("site-{}", i % 4)
            },
            kind: DRIVE,
            capacity_bytes: if i % 3 == 0 {
                0
            } else {
                (i as i64 % 4 + 1) * TB
            },
            content_package_id: if i % 2 == 0 {
                String::new()
            } else {
                format!("pkg-{}", i % 8)
            },
            pricing: Vec::new(),
            updated_at: Utc::now(),
        })
        .collect()
}

fn offer_with(lines: usize) -> pb::Offer {
    pb::Offer {
        offer_id: "offer".into(),
        kiosk_id: "K-1".into(),
        lines: (0..lines)
            .map(|i| pb::OfferLine {
                item_type: Some(common::ItemType {
                    kind: DRIVE,
                    capacity_bytes: (i as u64 % 4 + 1) * TB as u64,
                    content_package_id: format!("pkg-{i}"),
                }),
                prices: (1..=7)
                    .map(|days| pb::DurationPrice {
                        duration_days: days,
                        price: Some(common::Money {
                            minor_units: 500 * i64::from(days),
                            currency: "EUR".into(),
                        }),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn offer_choice(c: &mut Criterion) {
    let rules = rules(64);
    let wanted = TypeKey {
        kind: DRIVE,
        capacity_bytes: 2 * TB,
        content_package_id: "pkg-3".into(),
    };
    let offer = offer_with(16);
    let line_wanted = TypeKey {
        kind: DRIVE,
        capacity_bytes: 4 * TB,
        content_package_id: "pkg-15".into(),
    };
    let mut group = c.benchmark_group("orders_offer_choice");
    group.bench_function("best_rule_of_64", |b| {
        b.iter(|| offer::best_rule(black_box(&rules), black_box("site-2"), black_box(&wanted)))
    });
    group.bench_function("baseline_scan_64_by_site", |b| {
        b.iter(|| {
            black_box(&rules)
                .iter()
                .rfind(|r| r.site_id == black_box("site-2"))
        })
    });
    group.bench_function("priced_line_last_of_16_for_7_days", |b| {
        b.iter(|| offer::priced_line(black_box(&offer), black_box(&line_wanted), black_box(7)))
    });
    group.finish();
}

/// A kiosk's 64 bays: drives of 1–4 TB holding 8 packages, some held or busy, a few power banks.
fn units() -> Vec<Unit> {
    (0..64)
        .map(|i: i64| {
            let bank = i % 16 == 15;
            let capacity = if bank { 0 } else { (i % 4 + 1) * TB };
            Unit {
                key: TypeKey {
                    kind: if bank {
                        common::ItemKind::PowerBank as i32
                    } else {
                        DRIVE
                    },
                    capacity_bytes: capacity,
                    content_package_id: if bank || i % 3 == 0 {
                        String::new()
                    } else {
                        format!("pkg-{}", i % 8)
                    },
                },
                facts: UnitFacts {
                    kind: if bank {
                        common::ItemKind::PowerBank as i32
                    } else {
                        DRIVE
                    },
                    capacity_bytes: capacity as u64,
                    ready: i % 7 != 0,
                    held: i % 5 == 0,
                },
            }
        })
        .collect()
}

fn selection(c: &mut Criterion) {
    let units = units();
    let facts: Vec<UnitFacts> = units.iter().map(|u| u.facts).collect();
    let ask = DriveAsk {
        capacity_bytes: 2 * TB as u64,
        package_bytes: 300_000_000_000,
    };
    let filter = TypeFilter {
        kind: DRIVE,
        capacity_bytes: None,
        content_package_id: Some("pkg-3".into()),
    };
    let sizes = |package: &str| (package != "pkg-7").then_some(200_000_000_000u64);
    let mut group = c.benchmark_group("orders_selection");
    group.bench_function("reservable_count_of_64", |b| {
        b.iter(|| reservable::count(black_box(&facts), black_box(&ask)))
    });
    group.bench_function("baseline_count_64_by_capacity", |b| {
        b.iter(|| {
            black_box(&facts)
                .iter()
                .filter(|u| u.capacity_bytes == black_box(ask.capacity_bytes))
                .count()
        })
    });
    group.bench_function("availability_lines_of_64_filtered", |b| {
        b.iter(|| availability::lines(black_box(&units), Some(black_box(&filter)), sizes))
    });
    group.bench_function("availability_lines_of_64_unfiltered", |b| {
        b.iter(|| availability::lines(black_box(&units), None, sizes))
    });
    group.finish();
}

fn scan_check(c: &mut Criterion) {
    let kiosk = KioskId::parse("K-0042").expect("a valid kiosk id");
    let secret = [7u8; 32];
    let key = SealingKey::from_bytes([9u8; 32]);
    let sealed = key.seal(kiosk.as_str(), &secret);
    let now = Utc::now();
    let scanned = qr::payload(&kiosk, &secret, now);
    let mut group = c.benchmark_group("orders_scan_qr_check");
    group.bench_function("unseal_parse_verify", |b| {
        b.iter(|| {
            let payload = qr::parse(black_box(&scanned)).expect("a valid payload");
            let secret = key
                .open(payload.kiosk_id.as_str(), black_box(&sealed))
                .expect("sealed by this key");
            let code = payload.code.as_deref().unwrap_or_default();
            qr::verify(&secret, code, now)
        })
    });
    group.bench_function("baseline_verify_only", |b| {
        let code = qr::parse(&scanned)
            .expect("a valid payload")
            .code
            .unwrap_or_default();
        b.iter(|| qr::verify(black_box(&secret), black_box(&code), now))
    });
    group.finish();
}

criterion_group!(
    benches,
    order_transition,
    offer_choice,
    selection,
    scan_check
);
criterion_main!(benches);
