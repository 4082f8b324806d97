//! How the client commands print: a few lines of text by default; with `--json`, one JSON
//! object per result on one line (proto3's JSON mapping of the answer, from the contract's
//! descriptors, so field and enum names are the contract's own).

use std::sync::OnceLock;

use anyhow::Context;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;

/// Text or JSON.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// One JSON object per result.
    pub json: bool,
}

impl Output {
    /// Prints one result: `value` as a JSON line, or else the `text` lines.
    pub fn print(&self, value: serde_json::Value, text: impl FnOnce() -> Vec<String>) {
        if self.json {
            println!("{value}");
        } else {
            for line in text() {
                println!("{line}");
            }
        }
    }
}

fn pool() -> anyhow::Result<&'static DescriptorPool> {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let pool = DescriptorPool::decode(sneakernet_proto::FILE_DESCRIPTOR_SET)
        .context("the contract's descriptors do not decode")?;
    Ok(POOL.get_or_init(|| pool))
}

/// `message` (of the contract type `full_name`, e.g. `sneakernet.orders.v1.Order`) as proto3
/// JSON, every field present (defaults too), enums by name.
pub fn json<M: prost::Message>(full_name: &str, message: &M) -> anyhow::Result<serde_json::Value> {
    let descriptor = pool()?
        .get_message_by_name(full_name)
        .with_context(|| format!("no message {full_name} in the contract"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .with_context(|| format!("cannot read a {full_name}"))?;
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .with_context(|| format!("cannot write a {full_name} as JSON"))
}

/// `LENT` for an order state number.
pub fn state_name(state: i32) -> &'static str {
    pb::OrderState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
        .trim_start_matches("ORDER_STATE_")
}

/// `12.50 EUR`, in the currency's own minor-unit exponent.
pub fn money(amount: Option<&common::Money>) -> String {
    use sneakernet_orders::domain::money::{Currency, Money};
    let Some(amount) = amount else {
        return "nothing".into();
    };
    match Currency::parse(&amount.currency) {
        Ok(currency) => Money::new(amount.minor_units, currency).to_string(),
        Err(_) => format!(
            "{} minor units of {:?}",
            amount.minor_units, amount.currency
        ),
    }
}

/// `2026-11-29 19:00:00 UTC`, or `-` when unset.
pub fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(sneakernet_runtime::wire::from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `drive 1000000000000 B, Film classics (package p-1)`, `blank drive 2000000000000 B`,
/// `power bank`.
pub fn item_type(item_type: Option<&common::ItemType>, title: &str) -> String {
    let Some(t) = item_type else {
        return "(no type)".into();
    };
    if t.kind != common::ItemKind::Drive as i32 {
        return "power bank".into();
    }
    let size = if t.capacity_bytes % 1_000_000_000_000 == 0 {
        format!("{} TB", t.capacity_bytes / 1_000_000_000_000)
    } else if t.capacity_bytes % 1_000_000_000 == 0 {
        format!("{} GB", t.capacity_bytes / 1_000_000_000)
    } else {
        format!("{} bytes", t.capacity_bytes)
    };
    if t.content_package_id.is_empty() {
        format!("{size} blank drive")
    } else if title.is_empty() {
        format!("{size} drive, package {}", t.content_package_id)
    } else {
        format!("{size} drive, {title} (package {})", t.content_package_id)
    }
}

/// One line per order: id, kind, state, what, where.
pub fn order_line(order: &pb::Order) -> String {
    let kind = pb::OrderKind::try_from(order.kind)
        .map(|k| k.as_str_name())
        .unwrap_or("UNKNOWN")
        .trim_start_matches("ORDER_KIND_")
        .to_lowercase();
    let what = item_type(
        order
            .choice
            .as_ref()
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.item_type.as_ref()),
        &order.content_title,
    );
    let item = if order.item_id.is_empty() {
        String::new()
    } else {
        format!(", item {}", order.item_id)
    };
    format!(
        "{} {kind} {} at {}: {what}{item}, charged {}",
        order.order_id,
        state_name(order.state),
        order.kiosk_id,
        money(order.amount_charged.as_ref())
    )
}

/// How an offer line or an availability line prints its prices: `1 day 4.00 EUR, 2 days ...`.
pub fn prices(prices: &[pb::DurationPrice]) -> String {
    if prices.is_empty() {
        return "no price".into();
    }
    let shown: Vec<String> = prices
        .iter()
        .take(3)
        .map(|p| {
            format!(
                "{} day{} {}",
                p.duration_days,
                if p.duration_days == 1 { "" } else { "s" },
                money(p.price.as_ref())
            )
        })
        .collect();
    let more = if prices.len() > 3 {
        format!(" ... up to {} days", prices[prices.len() - 1].duration_days)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_prints_as_the_contracts_json() {
        let order = pb::Order {
            order_id: "o-1".into(),
            state: pb::OrderState::Lent as i32,
            price: Some(common::Money {
                minor_units: 400,
                currency: "EUR".into(),
            }),
            ..Default::default()
        };
        let value = json("sneakernet.orders.v1.Order", &order).unwrap();
        assert_eq!(value["orderId"], "o-1");
        assert_eq!(value["state"], "ORDER_STATE_LENT");
        assert_eq!(value["price"]["minorUnits"], "400");
        assert_eq!(value["itemId"], "");
    }
}
