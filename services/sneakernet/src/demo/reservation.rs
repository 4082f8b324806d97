//! Seed flow 2, the reservation: find kiosks near a point, reserve a content package at the
//! nearest one that can take it and pay, follow the kiosk provisioning a drive, walk to the
//! kiosk, scan it and collect the drive that was pinned for the order, toggle its write
//! protection on the road (over the drive's own remote link when it has one; refused
//! NO_REMOTE_LINK when not), return it at another kiosk, follow the order until it closed.

use anyhow::{Context, bail};
use sneakernet_kiosk_agent::bays::ItemFacts;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

use super::describe::{days, describe_type, money, time};
use super::walk_up::{items_in, return_at, still_in};
use super::watch::OrderWatch;
use super::{Narrator, card, scan};
use crate::client::{self, authed};
use crate::standalone::{Fleet, SimulatedKiosk};

/// How far from the user the app looks for kiosks.
const SEARCH_RADIUS_METERS: u32 = 5_000;

/// Where the user stands when they reserve: a café a few hundred meters from a kiosk.
const NEAR: (f64, f64) = (52.520_8, 13.409_5);

/// Tells the reservation, returning the drive at whichever simulated kiosk it was not
/// collected at.
pub(super) async fn tell(
    narrator: &mut Narrator,
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    fleet: &Fleet,
) -> anyhow::Result<()> {
    let package = &fleet.catalog.nature_documentaries;
    let (latitude, longitude) = NEAR;
    let found = client::call(
        "find kiosks",
        orders.find_kiosks(authed(
            pb::FindKiosksRequest {
                latitude,
                longitude,
                radius_meters: SEARCH_RADIUS_METERS,
                item_type: Some(common::ItemType {
                    kind: common::ItemKind::Drive.into(),
                    capacity_bytes: 0,
                    content_package_id: package.package_id.clone(),
                }),
                max_results: 5,
                page_token: String::new(),
            },
            user,
        )?),
    )
    .await?;
    narrator.step(format!(
        "Looked for kiosks within {} km of {latitude:.4}° N {longitude:.4}° E that can provide {:?} (FindKiosks):",
        SEARCH_RADIUS_METERS / 1000,
        package.package.title
    ));
    for kiosk in &found.kiosks {
        narrator.detail(describe_nearby(kiosk));
    }
    let (nearby, line) = found
        .kiosks
        .iter()
        .filter(|k| k.online)
        .find_map(|k| {
            k.availability
                .iter()
                .find(|a| a.reservable > 0 && !a.prices.is_empty())
                .map(|line| (k, line))
        })
        .context("no kiosk nearby can take the reservation")?;
    let kiosk = fleet
        .kiosk(&nearby.kiosk_id)
        .with_context(|| format!("{} is not one of the simulated kiosks", nearby.kiosk_id))?;
    let item_type = line
        .item_type
        .clone()
        .context("the reservable line has no item type")?;
    let duration = line
        .prices
        .first()
        .context("the reservable line lists no rental length")?;

    let reserved = client::call(
        "reserve",
        orders.create_reservation(authed(
            pb::CreateReservationRequest {
                kiosk_id: nearby.kiosk_id.clone(),
                choice: Some(pb::ItemChoice {
                    spec: Some(common::ItemSpec {
                        item_type: Some(item_type.clone()),
                        write_protect: false,
                    }),
                    duration_days: duration.duration_days,
                }),
                payment_method: Some(card()),
                idempotency_key: format!("demo-reservation-{}", uuid::Uuid::new_v4()),
            },
            user,
        )?),
    )
    .await?
    .order
    .context("reserve: the answer carries no order")?;
    narrator.step(format!(
        "Reserved a {} for {} at {} ({}, {} m away): order {}, charged {}.",
        describe_type(&item_type, &line.content_title, Some(&fleet.catalog)),
        days(duration.duration_days),
        nearby.kiosk_id,
        nearby.site_name,
        nearby.distance_meters,
        reserved.order_id,
        reserved
            .price
            .as_ref()
            .map(money)
            .unwrap_or_else(|| "nothing".into())
    ));

    narrator.step("Following the reservation while the kiosk provisions a drive (WatchOrder):");
    let mut watch = OrderWatch::open(orders, user, &reserved.order_id).await?;
    let ready = watch
        .until(narrator, pb::OrderState::ReadyForPickup)
        .await?;
    narrator.detail(format!(
        "drive {} is pinned to the order; collect it before {}",
        ready.item_id,
        time(ready.pickup_deadline.as_ref())
    ));

    collect(narrator, orders, user, kiosk, &ready).await?;
    let before = items_in(kiosk);
    let (bay, item) = before.get(&ready.item_id).cloned().with_context(|| {
        format!(
            "the order pins {:?}, which is not in {}",
            ready.item_id, kiosk.site.kiosk_id
        )
    })?;
    let lent = watch.until(narrator, pb::OrderState::Lent).await?;
    if lent.item_id != ready.item_id {
        bail!(
            "the kiosk lent {:?}, not the pinned drive {:?}",
            lent.item_id,
            ready.item_id
        );
    }
    narrator.detail(format!(
        "the kiosk handed out the pinned drive {} from bay {bay}; due back {}",
        lent.item_id,
        time(lent.due_at.as_ref())
    ));
    still_in(kiosk, &lent.item_id)?;
    let has_link = matches!(
        item.facts,
        ItemFacts::Drive {
            remote_link: true,
            ..
        }
    );
    let lent = toggle_write_protect(narrator, orders, user, &mut watch, &lent, has_link).await?;

    let there = fleet
        .kiosks
        .iter()
        .find(|k| k.site.kiosk_id != kiosk.site.kiosk_id)
        .context("the demo needs a second kiosk for the return")?;
    return_at(narrator, &mut watch, &item, &lent, there).await
}

/// On the road: the user turns the drive's write protection around (SetWriteProtect). A drive
/// with a remote link module (standalone runs the module of every such drive) confirms over
/// its own link, and the order shows it; a drive without one is refused NO_REMOTE_LINK, as
/// the contract says. Returns the order as it is afterwards.
async fn toggle_write_protect(
    narrator: &mut Narrator,
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    watch: &mut OrderWatch,
    lent: &pb::Order,
    has_link: bool,
) -> anyhow::Result<pb::Order> {
    let on = !lent.write_protected;
    let setting = if on { "on" } else { "off" };
    let asked = orders
        .set_write_protect(authed(
            pb::SetWriteProtectRequest {
                order_id: lent.order_id.clone(),
                on,
            },
            user,
        )?)
        .await;
    match (asked, has_link) {
        (Ok(answer), true) => {
            let answer = answer.into_inner();
            narrator.step(format!(
                "On the road, turned write protection of drive {} {setting} (SetWriteProtect): {}",
                lent.item_id,
                if answer.applied {
                    "the drive already had it."
                } else {
                    "sent over the drive's own remote link."
                }
            ));
            let confirmed = watch.until_write_protected(narrator, on).await?;
            narrator.detail(format!(
                "the drive confirmed: write protection {setting} ({})",
                confirmed.state_reason
            ));
            Ok(confirmed)
        }
        (Err(status), false) if status.code() == tonic::Code::FailedPrecondition => {
            narrator.step(format!(
                "On the road, asked to turn write protection of drive {} {setting} (SetWriteProtect): refused NO_REMOTE_LINK. {}",
                lent.item_id,
                status.message()
            ));
            Ok(lent.clone())
        }
        (Ok(_), false) => bail!(
            "SetWriteProtect on drive {} without a remote link was accepted",
            lent.item_id
        ),
        (Err(status), _) => bail!("set write protection: {}", client::describe(&status)),
    }
}

/// At the kiosk: scan (the ready reservation shows in the offer) and collect it.
async fn collect(
    narrator: &mut Narrator,
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    kiosk: &SimulatedKiosk,
    ready: &pb::Order,
) -> anyhow::Result<()> {
    let offer = scan(orders, user, kiosk)
        .await?
        .map_err(|status| anyhow::anyhow!("scan at pickup: {}", client::describe(&status)))?;
    if !offer
        .ready_reservations
        .iter()
        .any(|o| o.order_id == ready.order_id)
    {
        bail!(
            "scanning {} does not list the ready reservation {}",
            kiosk.site.kiosk_id,
            ready.order_id
        );
    }
    narrator.step(format!(
        "Walked to {} ({}) and scanned it: the reservation is ready here.",
        kiosk.site.kiosk_id, kiosk.site.site_name
    ));
    let collecting = client::call(
        "collect",
        orders.collect_reservation(authed(
            pb::CollectReservationRequest {
                order_id: ready.order_id.clone(),
                qr_payload: kiosk.qr_payload(chrono::Utc::now()),
            },
            user,
        )?),
    )
    .await?
    .order
    .context("collect: the answer carries no order")?;
    narrator.step(format!(
        "Collected the reservation (CollectReservation): the order is {}.",
        super::describe::state_name(collecting.state)
    ));
    Ok(())
}

/// `K-BER-ALEX  Berlin Alexanderplatz  812 m  online  2 TB drive, Nature: 0 now, 1 reservable`.
fn describe_nearby(kiosk: &pb::NearbyKiosk) -> String {
    let lines = kiosk
        .availability
        .iter()
        .map(|a| {
            let kind = a
                .item_type
                .as_ref()
                .map(|t| describe_type(t, &a.content_title, None))
                .unwrap_or_else(|| "(no type)".into());
            format!(
                "{kind}: {} now, {} reservable",
                a.available_now, a.reservable
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "{:<15} {:<22} {:>5} m  {:<7}  {lines}",
        kiosk.kiosk_id,
        kiosk.site_name,
        kiosk.distance_meters,
        if kiosk.online { "online" } else { "offline" }
    )
}
