//! The auditor: re-adds the books and checks the orders against them (FleetService.Audit,
//! `sneakernet audit`). It reads a snapshot and changes nothing. Every paid order is lent,
//! refunded in full, expired with exactly its no-show fee kept, closed, or still in flight
//! within the deadline of its step (a lend, a provision, a pickup, a refund).
//!
//! It loads the ledger and the orders into memory: fine for one site's years of rentals; a
//! network-wide audit at scale would page and keep running sums.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use prost::Message;
use sea_orm::{
    AccessMode, DbBackend, DbErr, EntityTrait, IsolationLevel, TransactionOptions, TransactionTrait,
};
use sneakernet_proto::orders::v1 as pb;

use super::Store;
use crate::domain::order::OrderState;
use crate::domain::payment_attempt::AttemptState;
use crate::entity::{ledger_entry, ledger_transaction, order, payment_attempt};

/// What the audit found.
#[derive(Clone, Debug, Default)]
pub struct AuditReport {
    /// Every transaction balances.
    pub ledger_balanced: bool,
    /// Everything wrong.
    pub violations: Vec<pb::AuditViolation>,
    /// Orders checked.
    pub orders_checked: u64,
    /// Transactions checked.
    pub transactions_checked: u64,
}

fn violation(
    kind: pb::AuditViolationKind,
    order_id: &str,
    description: String,
) -> pb::AuditViolation {
    pb::AuditViolation {
        order_id: order_id.to_owned(),
        kind: kind.into(),
        description,
    }
}

impl Store {
    /// Audits everything as of `now`. An order counts as unsettled once the deadline of its
    /// current step is more than `grace` ago (the sweeper's own lag).
    pub async fn audit(&self, now: DateTime<Utc>, grace: Duration) -> Result<AuditReport, DbErr> {
        // One read-only snapshot: REPEATABLE READ on Postgres (one snapshot for every query of
        // the transaction); on SQLite a read transaction sees one state of the file.
        let options = match self.db.get_database_backend() {
            DbBackend::Postgres => TransactionOptions {
                isolation_level: Some(IsolationLevel::RepeatableRead),
                access_mode: Some(AccessMode::ReadOnly),
                ..TransactionOptions::default()
            },
            _ => TransactionOptions::default(),
        };
        let txn = self.db.begin_with_options(options).await?;
        let transactions = ledger_transaction::Entity::find().all(&txn).await?;
        let entries = ledger_entry::Entity::find().all(&txn).await?;
        let orders = order::Entity::find().all(&txn).await?;
        let attempts = payment_attempt::Entity::find().all(&txn).await?;
        txn.commit().await?;

        let mut report = AuditReport {
            ledger_balanced: true,
            orders_checked: orders.len() as u64,
            transactions_checked: transactions.len() as u64,
            ..AuditReport::default()
        };
        use pb::AuditViolationKind as K;

        let mut sums: HashMap<&str, BTreeMap<&str, i64>> = HashMap::new();
        for entry in &entries {
            *sums
                .entry(entry.txn_id.as_str())
                .or_default()
                .entry(entry.currency.as_str())
                .or_default() += entry.amount;
        }
        for txn in &transactions {
            let unbalanced: Vec<String> = match sums.get(txn.txn_id.as_str()) {
                None => vec!["it has no entries".into()],
                Some(per_currency) => per_currency
                    .iter()
                    .filter(|(_, sum)| **sum != 0)
                    .map(|(currency, sum)| format!("{currency} off by {sum} minor units"))
                    .collect(),
            };
            if !unbalanced.is_empty() {
                report.ledger_balanced = false;
                report.violations.push(violation(
                    K::UnbalancedTransaction,
                    &txn.order_id,
                    format!(
                        "transaction {} ({}): {}",
                        txn.txn_id,
                        txn.movement,
                        unbalanced.join(", ")
                    ),
                ));
            }
        }

        let mut charges_by_key: HashMap<&str, usize> = HashMap::new();
        let mut per_order: HashMap<&str, (i64, i64, usize)> = HashMap::new();
        for txn in &transactions {
            let charge = matches!(
                txn.movement.as_str(),
                "price" | "late_fee" | "lost_item_fee"
            );
            if charge && !txn.payment_key.is_empty() {
                *charges_by_key.entry(txn.payment_key.as_str()).or_default() += 1;
            }
            if txn.order_id.is_empty() {
                continue;
            }
            let sums = per_order.entry(txn.order_id.as_str()).or_default();
            match txn.movement.as_str() {
                "price" => {
                    sums.0 += txn.amount;
                    sums.2 += 1;
                }
                "late_fee" | "lost_item_fee" => sums.0 += txn.amount,
                "refund" => sums.1 += txn.amount,
                _ => {}
            }
        }
        for (key, count) in &charges_by_key {
            if *count > 1 {
                report.violations.push(violation(
                    K::DuplicateCharge,
                    "",
                    format!("payment key {key} was booked as a charge {count} times"),
                ));
            }
        }

        let mut lent_items: HashMap<&str, Vec<&str>> = HashMap::new();
        for order in &orders {
            let id = order.order_id.as_str();
            let (charged, refunded, prices) = per_order.get(id).copied().unwrap_or_default();
            if prices > 1 {
                report.violations.push(violation(
                    K::DuplicateCharge,
                    id,
                    format!("the price was booked {prices} times"),
                ));
            }
            if charged != order.amount_charged || refunded != order.amount_refunded {
                report.violations.push(violation(
                    K::LedgerMismatch,
                    id,
                    format!(
                        "order says charged {} refunded {}; the ledger holds charged {charged} refunded {refunded} ({})",
                        order.amount_charged, order.amount_refunded, order.currency
                    ),
                ));
            }
            if order.amount_refunded > order.amount_charged {
                report.violations.push(violation(
                    K::OverRefund,
                    id,
                    format!(
                        "refunded {} of {} charged ({})",
                        order.amount_refunded, order.amount_charged, order.currency
                    ),
                ));
            }
            let state: Option<OrderState> = order.state.parse().ok();
            // Every state between the charge and its end waits for a step with a deadline:
            // a lend, a provision, a pickup (pickup_deadline), a refund, a settlement.
            let waiting = matches!(
                state,
                Some(
                    OrderState::Paid
                        | OrderState::Provisioning
                        | OrderState::ReadyForPickup
                        | OrderState::Dispensing
                        | OrderState::Failed
                        | OrderState::Returned
                        | OrderState::Cancelled
                )
            );
            // A refunded order (a failed lend, a cancelled reservation) got everything back;
            // an expired reservation kept exactly its no-show fee, the base price.
            if state == Some(OrderState::Refunded) && order.amount_refunded != order.amount_charged
            {
                report.violations.push(violation(
                    K::LedgerMismatch,
                    id,
                    format!(
                        "refunded {} of {} charged ({}), not all of it",
                        order.amount_refunded, order.amount_charged, order.currency
                    ),
                ));
            }
            if state == Some(OrderState::Expired) {
                let fee = pb::Pricing::decode(order.pricing.as_slice())
                    .ok()
                    .and_then(|p| p.base_price)
                    .map_or(0, |m| m.minor_units)
                    .min(order.amount_charged);
                let kept = order.amount_charged - order.amount_refunded;
                if kept != fee {
                    report.violations.push(violation(
                        K::LedgerMismatch,
                        id,
                        format!(
                            "expired reservation kept {kept}, its no-show fee is {fee} ({})",
                            order.currency
                        ),
                    ));
                }
            }
            if waiting && order.deadline + grace < now {
                report.violations.push(violation(
                    K::PaidNotSettled,
                    id,
                    format!(
                        "{} since its deadline {} (now {now})",
                        order.state, order.deadline
                    ),
                ));
            }
            if state == Some(OrderState::Lent) && !order.item_id.is_empty() {
                lent_items
                    .entry(order.item_id.as_str())
                    .or_default()
                    .push(id);
            }
            if let Some(item) = &order.late_item_id {
                report.violations.push(violation(
                    K::LentAfterFailure,
                    id,
                    format!(
                        "the kiosk reported lending item {item} after the order was {}",
                        order.state
                    ),
                ));
            }
        }
        for (item, holders) in lent_items {
            if holders.len() > 1 {
                for holder in &holders {
                    report.violations.push(violation(
                        K::ItemDoubleLent,
                        holder,
                        format!("item {item} is lent under orders {}", holders.join(", ")),
                    ));
                }
            }
        }
        for attempt in &attempts {
            let stale = attempt.updated_at + grace + Duration::minutes(5) < now;
            if stale
                && matches!(
                    AttemptState::parse(&attempt.state),
                    Some(AttemptState::Pending | AttemptState::Resolving | AttemptState::Refunding)
                )
            {
                report.violations.push(violation(
                    K::PaidNotSettled,
                    "",
                    format!(
                        "payment {} ({} {} {}) has had no known outcome since {}",
                        attempt.payment_key,
                        attempt.purpose,
                        attempt.amount,
                        attempt.currency,
                        attempt.updated_at
                    ),
                ));
            }
        }
        Ok(report)
    }
}
