//! ScanKiosk, the first instruction: the account and the kiosk are checked, every refusal
//! named at once, and the kiosk's offer (each type with free units and a price rule) is
//! answered and kept for CreateRental, with the account's reservations ready for pickup there.

use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::qr::QrPayload;
use sneakernet_runtime::wire::timestamp;
use sneakernet_runtime::{PreconditionViolation, UserId};

use crate::entity::kiosk;
use crate::error::OrdersError;
use crate::flows::{Flows, violation};
use crate::prices::price_list;

/// A ScanKiosk request, checked (see `convert.rs`).
#[derive(Clone, Debug)]
pub struct ScanAsk {
    /// The scanned code: the kiosk and its rotating code.
    pub qr: QrPayload,
}

impl Flows {
    /// The offer lines of a kiosk now: each type with free units and a price rule.
    async fn offer_lines(
        &self,
        site_id: &str,
        kiosk_id: &str,
    ) -> Result<Vec<pb::OfferLine>, OrdersError> {
        let available = self.store.available(kiosk_id).await?;
        let rules = self.store.pricing_rules(site_id).await?;
        let lines = available
            .into_iter()
            .filter_map(|(key, count)| {
                let priced = price_list(&rules, site_id, &key)?;
                Some(pb::OfferLine {
                    item_type: Some(key.to_proto()),
                    content_title: String::new(),
                    available: count,
                    write_protect: priced.write_protect.into(),
                    prices: priced.prices,
                    pricing: Some(priced.pricing),
                })
            })
            .collect();
        Ok(lines)
    }

    /// The QR code's rotating code checked against the kiosk's secret: `Some(QR_CODE_STALE)`
    /// when it is missing, wrong or too old (ScanKiosk and CollectReservation alike).
    pub(crate) fn stale_qr(
        &self,
        profile: &kiosk::Model,
        qr: &QrPayload,
    ) -> Result<Option<PreconditionViolation>, OrdersError> {
        let secret = self
            .sealing
            .open(qr.kiosk_id.as_str(), &profile.qr_secret)
            .map_err(|e| OrdersError::Corrupt(e.to_string()))?;
        let fresh = qr
            .code
            .as_deref()
            .is_some_and(|code| sneakernet_runtime::qr::verify(&secret, code, self.now()));
        Ok((!fresh).then(|| {
            violation(
                "QR_CODE_STALE",
                format!("kiosks/{}", qr.kiosk_id),
                "The code is missing or too old; scan the code on the kiosk's screen again.",
            )
        }))
    }

    /// First instruction: checks the account and the kiosk and answers the offer.
    pub async fn scan(&self, user: UserId, ask: ScanAsk) -> Result<pb::Offer, OrdersError> {
        let qr = ask.qr;
        let now = self.now();
        let kiosk_id = qr.kiosk_id.as_str();
        let Some(profile) = self.store.kiosk_profile(kiosk_id).await? else {
            return Err(OrdersError::KioskNotRegistered(kiosk_id.to_owned()));
        };
        let mut violations = Vec::new();
        let mut info = None;
        let kiosk_subject = format!("kiosks/{kiosk_id}");
        violations.extend(self.stale_qr(&profile, &qr)?);
        let user_key = user.to_string();
        let deposit = self.store.held_deposit(&user_key).await?;
        let account = self.store.account(&user_key).await?;
        if deposit.is_none() {
            let (v, i) = self.no_deposit(&user);
            violations.push(v);
            info = Some(i);
        } else if account.as_ref().is_none_or(|a| a.card_token.is_empty()) {
            violations.push(violation(
                "NO_PAYMENT_METHOD",
                format!("users/{user}"),
                "Add a payment method to rent.",
            ));
        }
        let ready = self
            .store
            .ready_reservations(&user_key, kiosk_id, now)
            .await?;
        // The account's open order may be a reservation ready here: then it is no item out,
        // and there is nothing more to rent until it is collected.
        let open = account.as_ref().and_then(|a| a.open_order_id.clone());
        let collecting = open
            .as_ref()
            .is_some_and(|open| ready.iter().any(|r| r.order_id == *open));
        if let Some(open) = open.filter(|_| !collecting) {
            violations.push(violation(
                "ITEM_OUT",
                format!("orders/{open}"),
                "Return the item you have before renting another.",
            ));
        }
        let online = self
            .store
            .kiosk(kiosk_id)
            .await?
            .is_some_and(|view| view.online);
        if profile.out_of_service {
            violations.push(violation(
                "KIOSK_DISABLED",
                kiosk_subject.clone(),
                "This kiosk is out of service.",
            ));
        } else if !online {
            violations.push(violation(
                "KIOSK_OFFLINE",
                kiosk_subject.clone(),
                "This kiosk is not connected right now; try again shortly.",
            ));
        }
        let lines = if collecting {
            Vec::new()
        } else {
            self.offer_lines(&profile.site_id, kiosk_id).await?
        };
        if lines.is_empty() && ready.is_empty() && online && !profile.out_of_service {
            violations.push(violation(
                "NOTHING_AVAILABLE",
                kiosk_subject,
                "This kiosk has nothing to rent right now.",
            ));
        }
        if !violations.is_empty() {
            return Err(OrdersError::refused(violations, info));
        }
        let expires_at = now
            + chrono::Duration::from_std(self.offer_ttl).unwrap_or(chrono::Duration::minutes(5));
        let mut offer = pb::Offer {
            offer_id: uuid::Uuid::new_v4().to_string(),
            kiosk_id: kiosk_id.to_owned(),
            site_name: profile.site_name.clone(),
            expires_at: Some(timestamp(expires_at)),
            lines,
            ready_reservations: Vec::with_capacity(ready.len()),
        };
        for row in &ready {
            offer
                .ready_reservations
                .push(self.store.order_proto(row).await?);
        }
        self.store.save_offer(&offer, &user_key, expires_at).await?;
        Ok(offer)
    }
}
