//! The settling worker: everything that happens after a request was answered, driven by the
//! state in the database so a crash loses nothing. Woken when a flow leaves work, and every
//! `orders.sweep_interval` regardless. Each step is idempotent (provider keys, conditional
//! state changes), so two replicas running it at once cost work, never money.
//!
//! Steps: hand outbox commands to the gateway; fail lends and provisions past their deadline;
//! ask the gateway about dispensing and provisioning orders whose event is late; refund failed
//! and cancelled orders; expire reservations not collected in their pickup window (the no-show
//! fee kept, the rest paid back, the drive released); charge fees and close returned ones;
//! charge the lost-item fee; pay back deposits asked back; resolve payment attempts whose
//! outcome is unknown.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::supervise::{self, Supervised, TaskHealth};
use sneakernet_runtime::wire::timestamp;

use crate::convert;
use crate::domain::money::{Currency, Money};
use crate::domain::order::{OrderKind, OrderState};
use crate::domain::payment_attempt::AttemptState;
use crate::flows::Flows;
use crate::gateway_client::GatewayClient;
use crate::payments::{ChargeRequest, PaymentError, ProviderKey, RefundRequest};
use crate::store::StoreError;
use crate::store::money::Movement;
use crate::store::reservations::NoShow;

/// Rows handled per step per round.
const BATCH: u64 = 100;
/// How long after its deadline a lend is given up (clock skew, a result in flight).
const LEND_MARGIN: chrono::Duration = chrono::Duration::seconds(10);
/// How long past its command's deadline an acknowledged lend may stay unanswered before it
/// is escalated (a result held in an offline kiosk's outbox arrives within this, usually).
const UNANSWERED_MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// How long a lend noted unanswered stays out of the worker's batch; afterwards it comes after
/// every overdue lend not noted (its late result still decides it).
const UNANSWERED_RECHECK: chrono::Duration = chrono::Duration::hours(1);
/// What a user and operators read on a lend the kiosk acknowledged and never answered.
pub const UNANSWERED: &str = "The kiosk started handing out your drive but never said whether it did. An operator has been alerted to settle it; nothing more is charged meanwhile.";
/// What a user reads when a paid reservation's provision never reached the kiosk in time.
fn not_provisioned() -> String {
    format!(
        "{} {}",
        crate::lending::NOT_PROVISIONED_IN_TIME,
        crate::lending::REFUNDING_IN_FULL
    )
}
/// What the user reads once an order's money is back: a cancelled reservation keeps saying
/// why it was cancelled.
fn refunded_reason(order: &crate::entity::order::Model, amount: Money) -> String {
    if order.state == OrderState::Cancelled.as_str() {
        format!("{} Refunded {amount}.", order.state_reason)
    } else {
        format!("Refunded {amount}.")
    }
}

/// What the user reads once a fee is booked.
fn fee_reason(fee: crate::store::orders::FeeBooked) -> String {
    use crate::store::orders::FeeBooked;
    match fee {
        FeeBooked::Charged {
            movement: Movement::LostItemFee,
            amount,
        } => format!("The item counts as lost: charged {amount}."),
        FeeBooked::Charged { amount, .. } => format!("Charged {amount} for the late return."),
        FeeBooked::FromDeposit { amount, kept } => {
            format!("The card declined a fee of {amount}; {kept} was taken from the deposit.")
        }
    }
}

/// What the user reads once the rental is settled.
fn closed_reason(total: Money) -> String {
    format!("Closed. You paid {total} in total.")
}

/// How long a payment attempt may stay unknown before the worker resolves it.
const ATTEMPT_STALE: chrono::Duration = chrono::Duration::minutes(2);

/// Runs the worker until shutdown: one supervised task (health NOT_SERVING for `serves`
/// while it is down, restarted after a panic).
pub fn spawn(
    flows: Flows,
    gateway: GatewayClient,
    interval: Duration,
    shutdown: &Shutdown,
    health: TaskHealth,
    serves: Vec<&'static str>,
) {
    let stop = shutdown.clone();
    let task = Supervised {
        name: "orders-settle",
        serves,
    };
    supervise::spawn(shutdown, health, task, move || {
        let worker = Worker {
            flows: flows.clone(),
            gateway: gateway.clone(),
        };
        let stop = stop.clone();
        async move {
            loop {
                if let Err(error) = worker.round().await {
                    tracing::warn!(%error, "settling round failed; retrying next round");
                }
                tokio::select! {
                    () = stop.triggered() => return Ok::<(), std::convert::Infallible>(()),
                    () = worker.flows.wake.notified() => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
    });
}

struct Worker {
    flows: Flows,
    gateway: GatewayClient,
}

impl Worker {
    fn now(&self) -> DateTime<Utc> {
        self.flows.clock.now()
    }

    /// One pass over every step. A step that fails is logged and the others still run: one
    /// bad row must not stop refunds elsewhere.
    async fn round(&self) -> Result<(), StoreError> {
        let steps = [
            ("outbox", self.send_outbox().await),
            ("overdue lends", self.fail_overdue().await),
            ("late lend results", self.ask_dispensing().await),
            ("late provision results", self.ask_provisioning().await),
            ("refunds", self.refund_failed().await),
            ("no-shows", self.expire_no_shows().await),
            ("returns", self.settle_returned().await),
            ("lost items", self.charge_lost().await),
            ("deposit refunds", self.refund_deposits().await),
            ("unknown payments", self.resolve_attempts().await),
        ];
        for (step, outcome) in steps {
            if let Err(error) = outcome {
                tracing::warn!(step, %error, "settling step failed; retrying next round");
            }
        }
        let store = &self.flows.store;
        store
            .forget_offers(self.now() - chrono::Duration::hours(1))
            .await?;
        Ok(())
    }

    async fn send_outbox(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        for row in store.unsent_commands(BATCH).await? {
            // Tests make the worker panic here (a command waits), to see it restarted.
            sneakernet_runtime::failpoint::pause_point("orders::settle::outbox").await;
            let Ok(payload) = gateway::CommandPayload::decode(row.payload.as_slice()) else {
                tracing::error!(
                    outbox_id = row.outbox_id,
                    "unreadable outbox row; dropping it"
                );
                store.command_sent(&row, "", self.now()).await?;
                continue;
            };
            let request = gateway::SendCommandRequest {
                kiosk_id: row.kiosk_id.clone(),
                payload: Some(payload),
                idempotency_key: row.idempotency_key.clone(),
                deadline: Some(timestamp(row.deadline)),
                drive_id: row.drive_id.clone(),
            };
            match self.gateway.send(request).await {
                Ok(record) => {
                    store
                        .command_sent(&row, &record.command_id, self.now())
                        .await?
                }
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    // A deadline already past, or a payload the gateway refuses: it will never
                    // be sent. The order's own deadline fails it.
                    tracing::error!(outbox_id = row.outbox_id, kiosk_id = %row.kiosk_id, drive_id = %row.drive_id, error = %status.message(), "gateway refused a command; dropping it");
                    store.command_sent(&row, "", self.now()).await?;
                    if let Some(outcome) = crate::write_protect::never_sent(&row) {
                        store.apply_write_protect(&outcome, self.now()).await?;
                    }
                }
                Err(status) => {
                    tracing::warn!(kiosk_id = %row.kiosk_id, drive_id = %row.drive_id, code = ?status.code(), error = %status.message(), "gateway unreachable; command stays queued");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn fail_overdue(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        for order in store
            .orders_due(OrderState::Paid, self.now() - LEND_MARGIN, BATCH)
            .await?
        {
            if OrderKind::parse(&order.kind) == Some(OrderKind::Reservation) {
                tracing::warn!(order_id = %order.order_id, "provision never reached the kiosk in time");
                store
                    .fail_provision(&order.order_id, &not_provisioned(), self.now())
                    .await?;
                continue;
            }
            tracing::warn!(order_id = %order.order_id, "lend never reached the kiosk in time");
            store
                .fail_lend(
                    &order.order_id,
                    crate::lending::NOT_ASKED_IN_TIME,
                    self.now(),
                )
                .await?;
        }
        Ok(())
    }

    /// Provisioning orders past their deadline: the gateway's record decides if it has a
    /// result; otherwise (the kiosk offline, or still at it after the deadline) the
    /// reservation is cancelled and refunded, and a drive pinned by a late result is released
    /// when that result comes.
    async fn ask_provisioning(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        for order in store
            .orders_due(OrderState::Provisioning, self.now() - LEND_MARGIN, BATCH)
            .await?
        {
            let record = match order.command_id.as_deref().filter(|c| !c.is_empty()) {
                None => None,
                Some(command_id) => match self.gateway.get(command_id).await {
                    Ok(record) => Some(record),
                    Err(status) if status.code() == tonic::Code::NotFound => None,
                    Err(status) => {
                        tracing::warn!(order_id = %order.order_id, error = %status.message(), "cannot ask the gateway about a late provision");
                        return Ok(());
                    }
                },
            };
            let finished = record.as_ref().is_some_and(|r| {
                matches!(
                    gateway::CommandState::try_from(r.state),
                    Ok(gateway::CommandState::Succeeded
                        | gateway::CommandState::Failed
                        | gateway::CommandState::Expired)
                )
            });
            if let Some(record) = record.filter(|_| finished) {
                store.apply_command_record(&record, self.now()).await?;
                continue;
            }
            tracing::warn!(order_id = %order.order_id, "kiosk did not provision in time; cancelling the reservation");
            store
                .fail_provision(&order.order_id, &not_provisioned(), self.now())
                .await?;
        }
        Ok(())
    }

    /// READY_FOR_PICKUP reservations past their pickup deadline: the base price kept as the
    /// no-show fee, the rest paid back (first, under its own key, so a retry pays nothing
    /// twice), then EXPIRED with both in the ledger and the drive's release queued. Collecting
    /// and cancelling refuse past the deadline, so nothing moves the order meanwhile.
    async fn expire_no_shows(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        for order in store
            .orders_due(OrderState::ReadyForPickup, self.now() - LEND_MARGIN, BATCH)
            .await?
        {
            let currency = crate::store::orders::currency(&order)?;
            let pricing = pb::Pricing::decode(order.pricing.as_slice()).ok();
            let Ok(terms) = convert::terms("pricing", pricing.as_ref()) else {
                tracing::error!(order_id = %order.order_id, "ready reservation without readable terms; left for an operator");
                continue;
            };
            let paid = order.amount_charged - order.amount_refunded;
            let kept = terms.base_price.minor().clamp(0, paid.max(0));
            let (kept, refunded) = (
                Money::new(kept, currency),
                Money::new(paid - kept, currency),
            );
            let refund_key = format!("no-show-refund:{}", order.order_id);
            if !self.pay_back(&refund_key, &order.charge_id, refunded).await {
                continue;
            }
            let no_show = NoShow {
                kept,
                refunded,
                refund_key,
                reason: crate::lending::expired_reason(&kept.to_string(), &refunded.to_string()),
                follow_ups: (!order.item_id.is_empty())
                    .then(|| {
                        crate::lending::release(&order.kiosk_id, &order.order_id, &order.item_id)
                    })
                    .into_iter()
                    .collect(),
            };
            store
                .expire_reservation(&order.order_id, order.version, &no_show, self.now())
                .await?;
        }
        Ok(())
    }

    async fn ask_dispensing(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        let now = self.now();
        for order in store
            .dispensing_due(
                now - LEND_MARGIN,
                UNANSWERED,
                now - UNANSWERED_RECHECK,
                BATCH,
            )
            .await?
        {
            let Some(command_id) = order.command_id.as_deref().filter(|c| !c.is_empty()) else {
                // Never logged at the gateway: nothing can be lent any more.
                store
                    .fail_lend(
                        &order.order_id,
                        crate::lending::NOT_ASKED_IN_TIME,
                        self.now(),
                    )
                    .await?;
                continue;
            };
            match self.gateway.get(command_id).await {
                Ok(record) => {
                    if let Err(error) = store.apply_command_record(&record, self.now()).await {
                        tracing::warn!(order_id = %order.order_id, %error, "late lend result not applied");
                    }
                    self.escalate_unanswered(&order, &record).await?;
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    // The gateway lost its log; the kiosk refuses a lend past its deadline,
                    // so none can happen any more.
                    tracing::error!(order_id = %order.order_id, command_id, "gateway does not know the lend; failing the order");
                    store
                        .fail_lend(
                            &order.order_id,
                            crate::lending::NOT_ASKED_IN_TIME,
                            self.now(),
                        )
                        .await?;
                }
                Err(status) => {
                    tracing::warn!(order_id = %order.order_id, error = %status.message(), "cannot ask the gateway about a late lend");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A lend the kiosk acknowledged (ACKED) and never answered, past its command's deadline
    /// and [`UNANSWERED_MARGIN`]: the gateway never expires an acknowledged command, so
    /// without this the order would wait in DISPENSING forever, unseen. Said once per order:
    /// at ERROR naming order, kiosk and command, counted (`orders_lends_unanswered_total`),
    /// and on the order itself (a new version whose reason says so, which WatchOrder shows).
    async fn escalate_unanswered(
        &self,
        order: &crate::entity::order::Model,
        record: &gateway::CommandRecord,
    ) -> Result<(), StoreError> {
        if record.state() != gateway::CommandState::Acked {
            return Ok(());
        }
        let deadline = record
            .deadline
            .as_ref()
            .and_then(sneakernet_runtime::wire::from_timestamp)
            .unwrap_or(order.deadline);
        if self.now() < deadline + UNANSWERED_MARGIN {
            return Ok(());
        }
        if self
            .flows
            .store
            .note_lend_unanswered(&order.order_id, UNANSWERED, self.now())
            .await?
        {
            tracing::error!(order_id = %order.order_id, kiosk_id = %record.kiosk_id, command_id = %record.command_id, %deadline, "kiosk acknowledged a lend and never answered; order left DISPENSING for an operator");
            metrics::counter!("orders_lends_unanswered_total").increment(1);
        }
        Ok(())
    }

    /// Pays `amount` of `charge_id` back under `key` (nothing to do for zero); whether it is
    /// paid. A refund not done is logged and retried next round with the same key.
    async fn pay_back(&self, key: &str, charge_id: &str, amount: Money) -> bool {
        if amount.minor() <= 0 {
            return true;
        }
        let refund = self
            .flows
            .provider
            .refund(RefundRequest {
                idempotency_key: ProviderKey::derive(key),
                charge_id: charge_id.to_owned(),
                amount,
            })
            .await;
        if let Err(error) = &refund {
            tracing::warn!(key, %error, "refund not done; retrying later");
        }
        refund.is_ok()
    }

    async fn refund_failed(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        let far = self.now() + chrono::Duration::days(3650);
        let mut owed = store.orders_due(OrderState::Failed, far, BATCH).await?;
        owed.extend(store.orders_due(OrderState::Cancelled, far, BATCH).await?);
        for order in owed {
            let currency = crate::store::orders::currency(&order)?;
            let owed = Money::new(order.amount_charged - order.amount_refunded, currency);
            let key = format!("refund:{}", order.order_id);
            if !self.pay_back(&key, &order.charge_id, owed).await {
                continue;
            }
            store
                .refunded(&order.order_id, &key, owed, refunded_reason, self.now())
                .await?;
        }
        Ok(())
    }

    /// Charges `amount` to the order's card under `key`: true if charged, false if declined
    /// (the fee is then taken from the deposit), None if the outcome is not known yet.
    async fn charge_fee(&self, card: &str, key: &str, amount: Money) -> Option<bool> {
        match self
            .flows
            .provider
            .charge(ChargeRequest {
                idempotency_key: ProviderKey::derive(key),
                card_token: card.to_owned(),
                amount,
            })
            .await
        {
            Ok(_) => Some(true),
            Err(PaymentError::Declined(_) | PaymentError::Invalid(_) | PaymentError::KeyReused) => {
                Some(false)
            }
            Err(error) => {
                tracing::warn!(%error, key, "fee charge not done; retrying later");
                None
            }
        }
    }

    async fn settle_returned(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        let far = self.now() + chrono::Duration::days(3650);
        'orders: for order in store.orders_due(OrderState::Returned, far, BATCH).await? {
            let pricing = pb::Pricing::decode(order.pricing.as_slice()).ok();
            let overtime = match (
                convert::terms("pricing", pricing.as_ref()),
                order.due_at,
                order.returned_at,
            ) {
                (Ok(terms), Some(due), Some(back)) => terms.overtime(due, back).ok(),
                _ => None,
            };
            let Some(overtime) = overtime else {
                tracing::error!(order_id = %order.order_id, "returned order without readable terms or times; left for an operator");
                continue;
            };
            let mut fees = vec![(Movement::LateFee, overtime.late_fee, "late")];
            if let Some(lost) = overtime.lost_item_fee
                && !order.lost_fee_charged
            {
                fees.push((Movement::LostItemFee, lost, "lost"));
            }
            for (movement, amount, name) in fees {
                if amount.minor() <= 0 {
                    continue;
                }
                let key = format!("fee:{}:{name}", order.order_id);
                let Some(charged) = self.charge_fee(&order.card_token, &key, amount).await else {
                    continue 'orders;
                };
                store
                    .fee_booked(
                        &order.order_id,
                        movement,
                        amount,
                        &key,
                        charged,
                        fee_reason,
                        self.now(),
                    )
                    .await?;
            }
            store
                .close(&order.order_id, closed_reason, self.now())
                .await?;
        }
        Ok(())
    }

    async fn charge_lost(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        let now = self.now();
        // Lost after at least one day past due; each order's own terms decide.
        for order in store
            .lent_overdue(now - chrono::Duration::days(1), BATCH)
            .await?
        {
            let pricing = pb::Pricing::decode(order.pricing.as_slice()).ok();
            let Ok(terms) = convert::terms("pricing", pricing.as_ref()) else {
                continue;
            };
            let Some(due) = order.due_at else { continue };
            let Ok(overtime) = terms.overtime(due, now) else {
                continue;
            };
            let Some(fee) = overtime.lost_item_fee else {
                continue;
            };
            let key = format!("fee:{}:lost", order.order_id);
            if fee.minor() <= 0 {
                continue;
            }
            if let Some(charged) = self.charge_fee(&order.card_token, &key, fee).await {
                store
                    .fee_booked(
                        &order.order_id,
                        Movement::LostItemFee,
                        fee,
                        &key,
                        charged,
                        fee_reason,
                        now,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn refund_deposits(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        for deposit in store.deposits_refunding(BATCH).await? {
            let currency = Currency::parse(&deposit.currency)
                .map_err(|e| StoreError::Corrupt(format!("deposit {}: {e}", deposit.deposit_id)))?;
            let back = Money::new(deposit.amount - deposit.withheld, currency);
            let key = format!("deposit-refund:{}", deposit.deposit_id);
            if !self.pay_back(&key, &deposit.charge_id, back).await {
                continue;
            }
            store
                .finish_deposit_refund(&deposit, &key, back, self.now())
                .await?;
        }
        Ok(())
    }

    async fn resolve_attempts(&self) -> Result<(), StoreError> {
        let store = &self.flows.store;
        let now = self.now();
        let mut attempts = store
            .claim_stale_attempts(now - ATTEMPT_STALE, now, BATCH)
            .await?;
        attempts.extend(
            store
                .stuck_resolving(now - ATTEMPT_STALE * 5, BATCH)
                .await?,
        );
        let refunding = store.refunding_attempts(BATCH).await?;
        for attempt in attempts.into_iter().chain(refunding) {
            let claimed = attempt.state != AttemptState::Refunding.as_str();
            // Looked up, never charged again: asking to charge would make a charge that never
            // arrived the first time.
            let provider_key = ProviderKey::derive(&attempt.payment_key);
            match self.flows.provider.find_charge(&provider_key).await {
                Ok(Some(charge)) => {
                    // Marked before paying back, so a late answer or a retry of the key can
                    // no longer book the charge once any of it may be paid back.
                    if claimed
                        && !store
                            .start_refund(&attempt.payment_key, &charge.charge_id, now)
                            .await?
                    {
                        continue;
                    }
                    let refund_key = format!("orphan-refund:{}", attempt.payment_key);
                    if self
                        .pay_back(&refund_key, &charge.charge_id, charge.amount)
                        .await
                    {
                        tracing::warn!(payment_key = %attempt.payment_key, "a charge nothing took was paid back");
                        store
                            .finish_resolving(
                                &attempt,
                                Some((&charge.charge_id, &refund_key, charge.amount)),
                                false,
                                now,
                            )
                            .await?;
                    }
                }
                Ok(None) if !claimed => {
                    tracing::error!(payment_key = %attempt.payment_key, "a charge being paid back is gone at the provider; left for an operator");
                }
                Ok(None) => {
                    // Nothing was charged: the key may be retried.
                    store.finish_resolving(&attempt, None, false, now).await?;
                }
                Err(error) => {
                    tracing::warn!(payment_key = %attempt.payment_key, %error, "provider cannot say what happened; asking later");
                    if claimed {
                        store.unclaim_attempt(&attempt.payment_key, now).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::payment_attempt::AttemptState;
    use crate::payments::sandbox::{APPROVES, SandboxProvider};
    use crate::payments::{Charge, PaymentFuture, PaymentProvider, Refund};
    use crate::store::money::Abandon;
    use crate::store::tests::{World, eur, user};
    use sneakernet_proto::orders::v1 as pb;
    use sneakernet_runtime::clock::{Clock, OffsetClock};
    use sneakernet_runtime::service_token::ServiceToken;

    /// The sandbox, except that every charge's answer is lost on the way back.
    #[derive(Debug)]
    struct LostAnswers(SandboxProvider);

    impl PaymentProvider for LostAnswers {
        fn charge(&self, request: ChargeRequest) -> PaymentFuture<'_, Charge> {
            Box::pin(async move {
                let _ = self.0.charge(request).await;
                Err(PaymentError::Timeout)
            })
        }
        fn refund(&self, request: RefundRequest) -> PaymentFuture<'_, Refund> {
            self.0.refund(request)
        }
        fn find_charge<'a>(&'a self, key: &'a ProviderKey) -> PaymentFuture<'a, Option<Charge>> {
            self.0.find_charge(key)
        }
    }

    #[tokio::test]
    async fn a_charge_whose_answer_was_lost_is_found_and_paid_back_and_the_unit_freed() {
        let mut world = World::new().await;
        world.inventory("K1", &["D1"]).await;
        let sandbox = SandboxProvider::new(world.store.connection().clone());
        let clock = std::sync::Arc::new(OffsetClock::new());
        let flows = Flows {
            store: world.store.clone(),
            provider: std::sync::Arc::new(LostAnswers(sandbox.clone())),
            clock: clock.clone(),
            sealing: crate::sealing::SealingKey::from_bytes([0; 32]),
            deposit: eur(5000),
            offer_ttl: Duration::from_secs(300),
            lend_deadline: Duration::from_secs(120),
            provision_deadline: Duration::from_secs(600),
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            content: unreachable_content(),
            gateway: unreachable_gateway(),
        };
        // What CreateRental does when the provider never answers: hold, charge, give up.
        let owner = user(1);
        let (payment_key, order_id) = world.begin_rental(&owner, "K1").await;
        let asked = flows
            .provider
            .charge(ChargeRequest {
                idempotency_key: ProviderKey::derive(&payment_key),
                card_token: APPROVES.into(),
                amount: eur(400),
            })
            .await;
        assert_eq!(asked, Err(PaymentError::Timeout));
        world
            .store
            .abandon_order(&payment_key, &order_id, Abandon::Unknown, clock.now())
            .await
            .unwrap();
        assert_eq!(
            world.store.available("K1").await.unwrap().len(),
            1,
            "nothing held"
        );

        let worker = Worker {
            flows,
            gateway: GatewayClient::new(
                &tonic::transport::Endpoint::from_static("http://127.0.0.1:9"),
                ServiceToken::fixed("unused"),
            ),
        };
        worker.round().await.unwrap();
        let attempt = world
            .store
            .payment_attempt(&payment_key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            attempt.state,
            AttemptState::Pending.as_str(),
            "too fresh to resolve"
        );

        clock.advance(chrono::Duration::minutes(3));
        worker.round().await.unwrap();
        let attempt = world
            .store
            .payment_attempt(&payment_key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempt.state, AttemptState::Refunded.as_str());
        assert_eq!(sandbox.refunds_of(&attempt.charge_id).await.unwrap(), 1);
        let report = world
            .store
            .audit(clock.now(), chrono::Duration::minutes(1))
            .await
            .unwrap();
        assert!(
            report.ledger_balanced && report.violations.is_empty(),
            "{report:?}"
        );
        let account = world.store.account(&owner).await.unwrap().unwrap();
        assert_eq!(account.open_order_id, None);

        // Another round finds nothing left to do.
        worker.round().await.unwrap();
        assert_eq!(
            sandbox.refunds_of(&attempt.charge_id).await.unwrap(),
            1,
            "refunded once"
        );
    }

    /// The sandbox, except that a charge's late answer arrives while the worker pays that
    /// charge back: the booking it tries loses (the attempt is not pending) and, as
    /// `Flows::book` does then, leaves the charge orphaned for a retry to find.
    #[derive(Debug)]
    struct AnswerDuringRefund {
        sandbox: SandboxProvider,
        store: crate::store::Store,
        payment_key: String,
        charge_id: String,
    }

    impl PaymentProvider for AnswerDuringRefund {
        fn charge(&self, request: ChargeRequest) -> PaymentFuture<'_, Charge> {
            self.sandbox.charge(request)
        }
        fn refund(&self, request: RefundRequest) -> PaymentFuture<'_, Refund> {
            Box::pin(async move {
                self.store
                    .orphan_attempt(&self.payment_key, &self.charge_id, chrono::Utc::now())
                    .await
                    .map_err(|e| PaymentError::Unavailable(e.to_string()))?;
                self.sandbox.refund(request).await
            })
        }
        fn find_charge<'a>(&'a self, key: &'a ProviderKey) -> PaymentFuture<'a, Option<Charge>> {
            self.sandbox.find_charge(key)
        }
    }

    #[tokio::test]
    async fn a_charge_the_worker_pays_back_stays_paid_back_when_its_late_answer_arrives() {
        let mut world = World::new().await;
        world.inventory("K1", &["D1"]).await;
        let sandbox = SandboxProvider::new(world.store.connection().clone());
        let clock = std::sync::Arc::new(OffsetClock::new());
        let owner = user(1);
        // CreateRental holds a unit and asks for the charge; the charge goes through, its
        // answer is slower than the stale limit.
        let (payment_key, _) = world.begin_rental(&owner, "K1").await;
        let charge = sandbox
            .charge(ChargeRequest {
                idempotency_key: ProviderKey::derive(&payment_key),
                card_token: APPROVES.into(),
                amount: eur(400),
            })
            .await
            .unwrap();
        let mut worker = worker(&world, &clock);
        worker.flows.provider = std::sync::Arc::new(AnswerDuringRefund {
            sandbox: sandbox.clone(),
            store: world.store.clone(),
            payment_key: payment_key.clone(),
            charge_id: charge.charge_id.clone(),
        });

        clock.advance(chrono::Duration::minutes(3));
        worker.round().await.unwrap();
        let attempt = world
            .store
            .payment_attempt(&payment_key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            attempt.state,
            AttemptState::Refunded.as_str(),
            "paid back is final"
        );
        assert_eq!(sandbox.refunds_of(&charge.charge_id).await.unwrap(), 1);
        // A retry of the key is told the payment was paid back: it charges and books nothing.
        let retry = world
            .store
            .open_order(&World::opening(&owner, "K1"), clock.now())
            .await
            .unwrap();
        assert!(
            matches!(retry, crate::store::orders::Opening::Abandoned),
            "{retry:?}"
        );
        let report = world
            .store
            .audit(clock.now(), chrono::Duration::minutes(1))
            .await
            .unwrap();
        assert!(
            report.ledger_balanced && report.violations.is_empty(),
            "{report:?}"
        );
    }

    /// A gateway nobody answers at.
    fn unreachable_gateway() -> GatewayClient {
        GatewayClient::new(
            &tonic::transport::Endpoint::from_static("http://127.0.0.1:9"),
            ServiceToken::fixed("unused"),
        )
    }

    /// A content service nobody answers at: these tests never reserve.
    fn unreachable_content() -> crate::content_client::ContentClient {
        crate::content_client::ContentClient::new(
            &tonic::transport::Endpoint::from_static("http://127.0.0.1:9"),
            sneakernet_runtime::service_token::ServiceToken::fixed("unused"),
        )
    }

    fn worker(world: &World, clock: &std::sync::Arc<OffsetClock>) -> Worker {
        Worker {
            flows: Flows {
                store: world.store.clone(),
                provider: std::sync::Arc::new(SandboxProvider::new(
                    world.store.connection().clone(),
                )),
                clock: clock.clone(),
                sealing: crate::sealing::SealingKey::from_bytes([0; 32]),
                deposit: eur(5000),
                offer_ttl: Duration::from_secs(300),
                lend_deadline: Duration::from_secs(120),
                provision_deadline: Duration::from_secs(600),
                wake: std::sync::Arc::new(tokio::sync::Notify::new()),
                content: unreachable_content(),
                gateway: unreachable_gateway(),
            },
            gateway: GatewayClient::new(
                &tonic::transport::Endpoint::from_static("http://127.0.0.1:9"),
                ServiceToken::fixed("unused"),
            ),
        }
    }

    /// The process died between holding and charging (nothing was charged, nothing given
    /// up): the worker resolves the attempt and frees what it claimed, the account's slot and
    /// the unit, for a reservation as for a rental.
    #[tokio::test]
    async fn an_attempt_a_crash_left_frees_its_slot_and_unit_for_rentals_and_reservations() {
        for kind in [OrderKind::Rental, OrderKind::Reservation] {
            let mut world = World::new().await;
            world.inventory("K1", &["D1"]).await;
            let clock = std::sync::Arc::new(OffsetClock::new());
            let worker = worker(&world, &clock);
            let owner = user(1);
            let (payment_key, _) = world.begin_order(&owner, "K1", kind).await;
            assert!(
                world.store.available("K1").await.unwrap().is_empty(),
                "{kind:?}: the unit is held"
            );

            clock.advance(chrono::Duration::minutes(3));
            worker.round().await.unwrap();
            let attempt = world
                .store
                .payment_attempt(&payment_key)
                .await
                .unwrap()
                .unwrap();
            assert_ne!(
                attempt.state,
                AttemptState::Pending.as_str(),
                "{kind:?}: resolved"
            );
            let account = world.store.account(&owner).await.unwrap().unwrap();
            assert_eq!(account.open_order_id, None, "{kind:?}: the slot is free");
            assert_eq!(
                world.store.available("K1").await.unwrap().len(),
                1,
                "{kind:?}: the unit is free"
            );
        }
    }

    #[tokio::test]
    async fn a_kiosk_clock_a_month_ahead_charges_no_fee_and_the_year_262142_lends_by_server_time() {
        let mut world = World::new().await;
        world.inventory("K1", &["D1"]).await;
        let clock = std::sync::Arc::new(OffsetClock::new());
        let worker = worker(&world, &clock);
        let order = world.rent(&user(1), "K1").await;
        let received = clock.now();
        // A lend result stamped late in the year 262142 (valid for chrono, absurd for a kiosk):
        // the lend counts from when the gateway received it, and nothing overflows.
        let far = prost_types::Timestamp {
            seconds: 8_210_266_833_599,
            nanos: 0,
        };
        world
            .lent_reported("K1", &order.order_id, "D1", far, received)
            .await;
        let lent = world.order(&order.order_id).await;
        assert_eq!(lent.state, "lent");
        assert_eq!(lent.lent_at, Some(received));
        assert_eq!(lent.due_at, Some(received + chrono::Duration::days(1)));

        // Returned at once, by a kiosk whose clock says a month later: no late or lost fee.
        world
            .reported_return("K1", "D1", received + chrono::Duration::days(30), received)
            .await;
        worker.round().await.unwrap();
        let closed = world.order(&order.order_id).await;
        assert_eq!(closed.state, "closed");
        assert_eq!(closed.amount_charged, 400, "only the price");
        assert_eq!(closed.returned_at, Some(received));
    }

    #[tokio::test]
    async fn a_return_reported_late_by_an_offline_kiosk_is_charged_from_its_time_within_the_window()
    {
        let mut world = World::new().await;
        world.inventory("K1", &["D1"]).await;
        let clock = std::sync::Arc::new(OffsetClock::new());
        let worker = worker(&world, &clock);
        let order = world.rent(&user(1), "K1").await;
        world.lent("K1", &order.order_id, "D1").await;
        let lent_at = world.order(&order.order_id).await.lent_at.expect("lent");
        // Back two days after the lend (a day late, past the hour of grace), but the kiosk was
        // offline and reports it four days later: the fee is a day's, not five.
        let back = lent_at + chrono::Duration::days(2);
        clock.advance(chrono::Duration::days(6));
        world.reported_return("K1", "D1", back, clock.now()).await;
        worker.round().await.unwrap();
        let closed = world.order(&order.order_id).await;
        assert_eq!(closed.state, "closed");
        assert_eq!(closed.returned_at, Some(back));
        assert_eq!(closed.amount_charged, 400 + 300);

        // A kiosk that claims the item came back before it was lent is believed only as far as
        // the lend.
        let order = world.rent(&user(2), "K1").await;
        world.lent("K1", &order.order_id, "D1").await;
        let lent_at = world.order(&order.order_id).await.lent_at.expect("lent");
        world
            .reported_return("K1", "D1", lent_at - chrono::Duration::days(9), clock.now())
            .await;
        worker.round().await.unwrap();
        let closed = world.order(&order.order_id).await;
        assert_eq!(closed.returned_at, Some(lent_at));
        assert_eq!(closed.amount_charged, 400);
    }

    #[tokio::test]
    async fn a_lost_item_is_charged_its_fee_once_and_its_late_return_the_capped_late_fee() {
        let mut world = World::new().await;
        world.inventory("K1", &["D1"]).await;
        let clock = std::sync::Arc::new(OffsetClock::new());
        let worker = worker(&world, &clock);
        let order = world.rent(&user(1), "K1").await;
        world.lent("K1", &order.order_id, "D1").await;
        let lent = world.order(&order.order_id).await;
        assert_eq!(lent.state, "lent");
        let due = lent.due_at.expect("due");

        // A day late: nothing is charged while the item is out.
        clock.advance(chrono::Duration::days(2));
        worker.round().await.unwrap();
        assert_eq!(world.order(&order.order_id).await.amount_charged, 400);

        // 14 days after due it counts as lost: the lost-item fee, once.
        clock.advance(chrono::Duration::days(14));
        worker.round().await.unwrap();
        worker.round().await.unwrap();
        let lost = world.order(&order.order_id).await;
        assert_eq!(lost.state, "lent", "a lost item's order stays open");
        assert!(lost.lost_fee_charged);
        assert_eq!(lost.amount_charged, 400 + 8000);

        // It comes back after all: late fees up to the cap, the lost fee not again.
        world.returned_at("K1", "D1", clock.now()).await;
        worker.round().await.unwrap();
        let closed = world.order(&order.order_id).await;
        assert_eq!(closed.state, "closed");
        assert_eq!(closed.amount_charged, 400 + 8000 + 1500);
        assert!(closed.returned_at.unwrap() > due);
        let statement = world.store.order_proto(&closed).await.unwrap().movements;
        let kinds: Vec<i32> = statement.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                pb::MoneyMovementKind::Price as i32,
                pb::MoneyMovementKind::LostItemFee as i32,
                pb::MoneyMovementKind::LateFee as i32,
            ]
        );
        let report = world
            .store
            .audit(clock.now(), chrono::Duration::minutes(1))
            .await
            .unwrap();
        assert!(
            report.ledger_balanced && report.violations.is_empty(),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_fee_the_card_declines_is_taken_from_the_deposit_which_pays_back_the_rest() {
        let mut world = World::new().await;
        world.card = crate::payments::sandbox::DECLINES;
        world.inventory("K1", &["D1"]).await;
        let clock = std::sync::Arc::new(OffsetClock::new());
        let worker = worker(&world, &clock);
        let owner = user(1);
        let order = world.rent(&owner, "K1").await;
        world.lent("K1", &order.order_id, "D1").await;
        // Back a little over three days after due: 4 started days of 3.00.
        clock.advance(chrono::Duration::days(4));
        world.returned_at("K1", "D1", clock.now()).await;
        worker.round().await.unwrap();
        let closed = world.order(&order.order_id).await;
        assert_eq!(closed.state, "closed");
        assert_eq!(closed.amount_charged, 400, "the card paid no fee");
        let deposit = world
            .store
            .held_deposit(&owner)
            .await
            .unwrap()
            .expect("held");
        assert_eq!(deposit.withheld, 1200);

        let crate::store::money::RefundStart::Refund(_) = world
            .store
            .begin_deposit_refund(&owner, "refund", clock.now())
            .await
            .unwrap()
        else {
            panic!("nothing is out: the deposit can be refunded");
        };
        worker.round().await.unwrap();
        let refunded = world
            .store
            .deposit(&deposit.deposit_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refunded.state, "refunded");
        assert_eq!(refunded.refunded, 5000 - 1200);
        let report = world
            .store
            .audit(clock.now(), chrono::Duration::minutes(1))
            .await
            .unwrap();
        assert!(
            report.ledger_balanced && report.violations.is_empty(),
            "{report:?}"
        );
    }
}
