//! Seed flow 1, the walk-up rental: scan (the offer), rent, follow the order until the kiosk
//! lent the item it chose, return the item at another kiosk, follow the order until it closed
//! with its charge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sneakernet_kiosk_agent::bays::{BayState, ItemFacts, ItemInfo};
use sneakernet_kiosk_agent::config::{SimItemConfig, SimItemKind};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

use super::describe::{days, describe_movement, describe_offer_line, describe_type, money, time};
use super::watch::OrderWatch;
use super::{Narrator, SCAN_WAIT, card, scan};
use crate::client::{self, authed};
use crate::standalone::{Fleet, SimulatedKiosk};

/// Tells the walk-up rental at `here`, returning the item at `there`.
pub(super) async fn tell(
    narrator: &mut Narrator,
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    fleet: &Fleet,
    here: &SimulatedKiosk,
    there: &SimulatedKiosk,
) -> anyhow::Result<()> {
    let offer = scan_until_offered(orders, user, here).await?;
    narrator.step(format!(
        "Scanned {} ({}) again; the offer holds until {}:",
        here.site.kiosk_id,
        offer.site_name,
        time(offer.expires_at.as_ref())
    ));
    for line in &offer.lines {
        narrator.detail(describe_offer_line(line, Some(&fleet.catalog)));
    }

    let line = choose(&offer, &fleet.catalog.film_classics.package_id)?;
    let item_type = line
        .item_type
        .clone()
        .context("the chosen offer line has no item type")?;
    let write_protect = matches!(
        pb::WriteProtectOption::try_from(line.write_protect),
        Ok(pb::WriteProtectOption::Choosable | pb::WriteProtectOption::AlwaysOn)
    );
    let duration = line
        .prices
        .first()
        .context("the chosen offer line lists no rental length")?;
    // What the kiosk holds before it lends: the facts of whichever item it will choose.
    let before = items_in(here);
    let order = client::call(
        "rent",
        orders.create_rental(authed(
            pb::CreateRentalRequest {
                kiosk_id: here.site.kiosk_id.to_owned(),
                offer_id: offer.offer_id.clone(),
                choice: Some(pb::ItemChoice {
                    spec: Some(common::ItemSpec {
                        item_type: Some(item_type.clone()),
                        write_protect,
                    }),
                    duration_days: duration.duration_days,
                }),
                payment_method: Some(card()),
                idempotency_key: format!("demo-rental-{}", uuid::Uuid::new_v4()),
            },
            user,
        )?),
    )
    .await?
    .order
    .context("rent: the answer carries no order")?;
    narrator.step(format!(
        "Rented a {} for {}{}: order {}, charged {}.",
        describe_type(&item_type, &line.content_title, Some(&fleet.catalog)),
        days(duration.duration_days),
        if write_protect {
            ", write-protected"
        } else {
            ""
        },
        order.order_id,
        order
            .price
            .as_ref()
            .map(money)
            .unwrap_or_else(|| "nothing".into())
    ));

    narrator.step("Following the order (WatchOrder):");
    let mut watch = OrderWatch::open(orders, user, &order.order_id).await?;
    let lent = watch.until(narrator, pb::OrderState::Lent).await?;
    let (bay, item) = before.get(&lent.item_id).with_context(|| {
        format!(
            "the kiosk reports lending {:?}, which was not in it",
            lent.item_id
        )
    })?;
    narrator.detail(format!(
        "the kiosk chose {} from its bay {}; due back {}",
        lent.item_id,
        bay,
        time(lent.due_at.as_ref())
    ));
    still_in(here, &lent.item_id)?;

    return_at(narrator, &mut watch, item, &lent, there).await
}

/// Every item in `kiosk`'s bays, by id: its bay and facts.
pub(super) fn items_in(kiosk: &SimulatedKiosk) -> HashMap<String, (String, ItemInfo)> {
    kiosk
        .bays()
        .snapshot()
        .into_iter()
        .filter_map(|bay| {
            bay.item
                .map(|item| (item.item_id.clone(), (bay.bay_id.clone(), item)))
        })
        .collect()
}

/// An error when `item_id`, which the order says was lent, is still in `kiosk`.
pub(super) fn still_in(kiosk: &SimulatedKiosk, item_id: &str) -> anyhow::Result<()> {
    if kiosk
        .bays()
        .snapshot()
        .iter()
        .any(|b| b.item.as_ref().is_some_and(|i| i.item_id == item_id))
    {
        bail!(
            "order LENT but {item_id} is still in {}",
            kiosk.site.kiosk_id
        );
    }
    Ok(())
}

/// Returns the lent `item` into a free bay of `there`, as a person would, and follows the
/// order until it closed there with its charges.
pub(super) async fn return_at(
    narrator: &mut Narrator,
    watch: &mut OrderWatch,
    item: &ItemInfo,
    lent: &pb::Order,
    there: &SimulatedKiosk,
) -> anyhow::Result<()> {
    let empty_bay = there
        .bays()
        .snapshot()
        .into_iter()
        .find(|b| b.state == BayState::Empty)
        .with_context(|| format!("{} has no empty bay for the return", there.site.kiosk_id))?;
    there
        .bays()
        .insert(&empty_bay.bay_id, returned(item, lent.write_protected))
        .await
        .with_context(|| {
            format!(
                "cannot insert {} into {}",
                lent.item_id, there.site.kiosk_id
            )
        })?;
    narrator.step(format!(
        "Returned {} at another kiosk: into bay {} of {} ({}).",
        lent.item_id, empty_bay.bay_id, there.site.kiosk_id, there.site.site_name
    ));
    let closed = watch.until(narrator, pb::OrderState::Closed).await?;
    if closed.returned_kiosk_id != there.site.kiosk_id {
        bail!(
            "the order says the item came back to {:?}, not {}",
            closed.returned_kiosk_id,
            there.site.kiosk_id
        );
    }
    narrator.detail(format!(
        "charged {} in total ({}); refunded {}",
        closed
            .amount_charged
            .as_ref()
            .map(money)
            .unwrap_or_else(|| "nothing".into()),
        closed
            .movements
            .iter()
            .map(describe_movement)
            .collect::<Vec<_>>()
            .join(", "),
        closed
            .amount_refunded
            .as_ref()
            .map(money)
            .unwrap_or_else(|| "nothing".into()),
    ));

    Ok(())
}

/// Scans, retrying while the kiosk is not yet known to be online or to hold anything.
async fn scan_until_offered(
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    kiosk: &SimulatedKiosk,
) -> anyhow::Result<pb::Offer> {
    let deadline = Instant::now() + SCAN_WAIT;
    loop {
        let status = match scan(orders, user, kiosk).await? {
            Ok(offer) => return Ok(offer),
            Err(status) => status,
        };
        let waiting = status.code() == tonic::Code::FailedPrecondition
            && client::precondition_violations(&status)
                .iter()
                .all(|v| v.r#type == "KIOSK_OFFLINE" || v.r#type == "NOTHING_AVAILABLE");
        if !waiting || Instant::now() >= deadline {
            bail!("scan after the deposit: {}", client::describe(&status));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The line the demo rents: a drive of `preferred_package` if available, else any content
/// drive, else anything available.
fn choose<'a>(offer: &'a pb::Offer, preferred_package: &str) -> anyhow::Result<&'a pb::OfferLine> {
    let available = || {
        offer
            .lines
            .iter()
            .filter(|l| l.available > 0 && !l.prices.is_empty())
    };
    let holds = |line: &pb::OfferLine, package: Option<&str>| {
        line.item_type.as_ref().is_some_and(|t| {
            t.kind == common::ItemKind::Drive as i32
                && match package {
                    Some(package) => t.content_package_id == package,
                    None => !t.content_package_id.is_empty(),
                }
        })
    };
    available()
        .find(|l| holds(l, Some(preferred_package)))
        .or_else(|| available().find(|l| holds(l, None)))
        .or_else(|| available().next())
        .context("the offer has nothing available to rent")
}

/// The returned item as the other kiosk's bay identifies it.
fn returned(item: &ItemInfo, write_protected: bool) -> SimItemConfig {
    match &item.facts {
        ItemFacts::Drive {
            capacity_bytes,
            content_package_id,
            write_protected: was_protected,
            remote_link,
        } => SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: item.item_id.clone(),
            capacity_bytes: Some(*capacity_bytes),
            content_package_id: content_package_id.clone(),
            write_protected: write_protected || *was_protected,
            charge_percent: None,
            remote_link: *remote_link,
        },
        ItemFacts::PowerBank { charge_percent } => SimItemConfig {
            kind: SimItemKind::PowerBank,
            item_id: item.item_id.clone(),
            capacity_bytes: None,
            content_package_id: None,
            write_protected: false,
            charge_percent: Some(*charge_percent),
            remote_link: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::eur;
    use crate::simulated_fleet;

    const FILM: &str = "p-film";
    const NATURE: &str = "p-nature";

    #[test]
    fn the_demo_rents_film_classics_when_offered() {
        let line = |package: &str, available: u32| pb::OfferLine {
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: simulated_fleet::TB,
                content_package_id: package.into(),
            }),
            available,
            prices: vec![pb::DurationPrice {
                duration_days: 1,
                price: Some(eur(400)),
            }],
            ..Default::default()
        };
        let mut offer = pb::Offer {
            lines: vec![line("", 3), line(NATURE, 1), line(FILM, 2)],
            ..Default::default()
        };
        assert_eq!(
            choose(&offer, FILM)
                .unwrap()
                .item_type
                .as_ref()
                .unwrap()
                .content_package_id,
            FILM
        );
        offer.lines[2].available = 0;
        assert_eq!(
            choose(&offer, FILM)
                .unwrap()
                .item_type
                .as_ref()
                .unwrap()
                .content_package_id,
            NATURE
        );
        offer.lines.clear();
        assert!(choose(&offer, FILM).is_err());
    }
}
