//! Deposits: PayDeposit charges the deposit under a payment attempt and books it held;
//! RefundDeposit starts its refund (paid by the settling worker) once nothing is open.

use sneakernet_runtime::UserId;

use crate::domain::money::Money;
use crate::domain::payment_attempt::AttemptState;
use crate::entity::deposit;
use crate::error::OrdersError;
use crate::flows::{Flows, declined, fingerprint, violation};
use crate::ids::IdempotencyKey;
use crate::payments::{ChargeRequest, ProviderKey};
use crate::store::money::{DepositCharge, DepositStart, RefundStart};

/// PayDeposit's input, checked at the edge.
#[derive(Clone, Debug)]
pub struct DepositAsk {
    /// The deposit the client was shown (refused if it is not the one asked now).
    pub amount: Money,
    /// The card.
    pub card_token: String,
    /// The key.
    pub idempotency_key: IdempotencyKey,
}

impl Flows {
    /// PayDeposit.
    pub async fn pay_deposit(
        &self,
        user: UserId,
        ask: DepositAsk,
    ) -> Result<deposit::Model, OrdersError> {
        let DepositAsk {
            amount,
            card_token,
            idempotency_key,
        } = ask;
        let idempotency_key = idempotency_key.to_string();
        let user_key = user.to_string();
        let hash = fingerprint(&[&amount.to_string(), &card_token]);
        // A key that already paid is answered as it was, even if the deposit asked changed
        // since.
        if let Some(paid) = self
            .store
            .payment_attempt(&format!("deposit:{user_key}:{idempotency_key}"))
            .await?
            .filter(|a| AttemptState::parse(&a.state) == Some(AttemptState::Charged))
        {
            if paid.request_hash != hash {
                return Err(OrdersError::invalid(
                    "idempotency_key",
                    "was used for another PayDeposit request",
                ));
            }
            if let Some(deposit) = self.store.deposit(&paid.subject_id).await? {
                return Ok(deposit);
            }
        }
        if amount != self.deposit {
            return Err(self.deposit_changed());
        }
        let now = self.now();
        let start = self
            .store
            .begin_deposit(&user_key, &idempotency_key, &hash, amount, &card_token, now)
            .await?;
        let (payment_key, deposit_id) = match start {
            DepositStart::Existing(deposit) => return Ok(deposit),
            DepositStart::KeyReused => {
                return Err(OrdersError::invalid(
                    "idempotency_key",
                    "was used for another PayDeposit request",
                ));
            }
            DepositStart::AlreadyHeld => {
                return Err(OrdersError::DepositAlreadyHeld);
            }
            DepositStart::Declined => return Err(declined()),
            DepositStart::Abandoned => return Err(OrdersError::PaymentAbandoned),
            DepositStart::Resolving => return Err(OrdersError::PaymentResolving),
            DepositStart::Charge {
                payment_key,
                deposit_id,
            } => (payment_key, deposit_id),
        };
        let charge = self
            .charge_or_give_up(
                ChargeRequest {
                    idempotency_key: ProviderKey::derive(&payment_key),
                    card_token: card_token.clone(),
                    amount,
                },
                |outcome| {
                    self.store.abandon_deposit(
                        &user_key,
                        &payment_key,
                        &deposit_id,
                        outcome,
                        self.now(),
                    )
                },
                "the payment provider did not answer; retry with the same idempotency key",
            )
            .await?;
        let charge_id = charge.charge_id.clone();
        let booked = self
            .store
            .finish_deposit(
                DepositCharge {
                    user_id: user_key.clone(),
                    deposit_id: deposit_id.clone(),
                    payment_key: payment_key.clone(),
                    charge_id: charge.charge_id,
                    amount,
                    card_token,
                    idempotency_key,
                },
                self.now(),
            )
            .await;
        self.orphan_on_race(booked, &payment_key, &charge_id).await
    }

    /// RefundDeposit: the refund itself is paid by the settling worker, at once.
    pub async fn refund_deposit(
        &self,
        user: UserId,
        idempotency_key: IdempotencyKey,
    ) -> Result<deposit::Model, OrdersError> {
        match self
            .store
            .begin_deposit_refund(&user.to_string(), idempotency_key.as_str(), self.now())
            .await?
        {
            RefundStart::Existing(deposit) => Ok(deposit),
            RefundStart::NoDeposit => Err(OrdersError::NoDepositHeld),
            RefundStart::Busy(order_id) => {
                let open = self.store.order(&order_id).await?;
                let kind = match open.as_ref().map(|o| o.state.as_str()) {
                    Some("lent") => "ITEM_OUT",
                    _ => "ORDER_IN_FLIGHT",
                };
                Err(OrdersError::refused(
                    vec![violation(
                        kind,
                        format!("orders/{order_id}"),
                        "The deposit can be refunded once every order is settled and nothing is out.",
                    )],
                    None,
                ))
            }
            RefundStart::Refund(deposit) => {
                self.wake.notify_one();
                Ok(deposit)
            }
        }
    }
}
