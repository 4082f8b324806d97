//! ListOrders: a user's own orders, or any user's for an operator, newest first, filtered by
//! kind and states, a page at a time with a token bound to the filter it was issued for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::{FieldViolation, UserId};

use crate::domain::order::{OrderKind, OrderState};
use crate::error::OrdersError;
use crate::flows::Flows;
use crate::store::orders::OrderFilter;

/// Orders on a page when the request names no size.
pub const DEFAULT_ORDER_PAGE: u32 = 20;
/// The most orders on one page.
pub const MAX_ORDER_PAGE: u32 = 100;

/// A ListOrders request, every field checked (see `convert.rs`); the page token is checked
/// against the filter here, since a user's filter is their own id.
#[derive(Clone, Debug)]
pub struct ListOrdersAsk {
    /// Orders on the page (the default when the request named none).
    pub page_size: u32,
    /// Only this user's orders (operators only).
    pub user_id: Option<UserId>,
    /// Only this kind.
    pub kind: Option<OrderKind>,
    /// Only these states (empty: all).
    pub states: Vec<OrderState>,
    /// The page to go on from, as the request sent it (empty: the first).
    pub page_token: String,
    /// The request's kind and states as sent: the page token's fingerprint is of them.
    pub fingerprint_of: (i32, Vec<i32>),
}

/// Who lists: a user (their own orders only) or an operator.
#[derive(Clone, Debug)]
pub enum Lister {
    /// A user, by account.
    User(UserId),
    /// Any operator.
    Operator,
}

impl Flows {
    /// One page of orders as `lister` may see them. A user naming a user, or a page token not
    /// issued for this filter, is INVALID_ARGUMENT naming both at once.
    pub async fn list_orders(
        &self,
        lister: &Lister,
        ask: ListOrdersAsk,
    ) -> Result<pb::ListOrdersResponse, OrdersError> {
        let mut violations = Vec::new();
        let user_id = match (lister, &ask.user_id) {
            (Lister::User(_), Some(_)) => {
                violations.push(FieldViolation::new(
                    "user_id",
                    "only operators may filter by user",
                ));
                None
            }
            (Lister::User(user), None) => Some(user.to_string()),
            (Lister::Operator, named) => named.as_ref().map(UserId::to_string),
        };
        let fingerprint = crate::flows::fingerprint(&[
            user_id.as_deref().unwrap_or(""),
            &ask.fingerprint_of.0.to_string(),
            &format!("{:?}", ask.fingerprint_of.1),
        ]);
        let before = if ask.page_token.is_empty() {
            None
        } else {
            let decoded = decode_order_token(&ask.page_token, &fingerprint);
            if decoded.is_none() {
                violations.push(FieldViolation::new(
                    "page_token",
                    "was not issued by ListOrders with this filter",
                ));
            }
            decoded
        };
        if !violations.is_empty() {
            return Err(OrdersError::Invalid(violations));
        }
        let filter = OrderFilter {
            user_id,
            kind: ask.kind,
            states: ask.states,
        };
        let size = ask.page_size;
        let rows = self
            .store
            .list_orders(&filter, before, u64::from(size).saturating_add(1))
            .await
            .map_err(crate::store::StoreError::from)?;
        let page_len = usize::try_from(size).unwrap_or(usize::MAX);
        let more = rows.len() > page_len;
        let page = &rows[..rows.len().min(page_len)];
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => URL_SAFE_NO_PAD.encode(format!(
                "{}|{}|{fingerprint}",
                last.created_at.timestamp_micros(),
                last.order_id
            )),
            _ => String::new(),
        };
        let mut orders = Vec::with_capacity(page.len());
        for row in page {
            orders.push(
                self.store
                    .order_proto(row)
                    .await
                    .map_err(crate::store::StoreError::from)?,
            );
        }
        Ok(pb::ListOrdersResponse {
            orders,
            next_page_token,
        })
    }
}

/// The position a page token names, if it was issued for `fingerprint`.
fn decode_order_token(
    token: &str,
    fingerprint: &str,
) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '|');
    let micros: i64 = parts.next()?.parse().ok()?;
    let id = parts.next()?.to_owned();
    if parts.next()? != fingerprint {
        return None;
    }
    uuid::Uuid::parse_str(&id).ok()?;
    Some((chrono::DateTime::from_timestamp_micros(micros)?, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_is_accepted_only_for_the_filter_it_was_issued_for() {
        let id = uuid::Uuid::new_v4();
        let token = URL_SAFE_NO_PAD.encode(format!("1800000000000000|{id}|f1"));
        let (at, order_id) = decode_order_token(&token, "f1").unwrap();
        assert_eq!((at.timestamp(), order_id), (1_800_000_000, id.to_string()));
        assert!(decode_order_token(&token, "f2").is_none());
        assert!(decode_order_token("not base64!", "f1").is_none());
        let not_an_id = URL_SAFE_NO_PAD.encode("1|x|f1");
        assert!(decode_order_token(&not_an_id, "f1").is_none());
    }
}
