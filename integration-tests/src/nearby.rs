//! Finding kiosks near a point as a phone app does (OrderService.FindKiosks), through gRPC
//! only.

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use tonic::Status;
use tonic::transport::Channel;

use crate::authed;
use crate::rentals::{WAIT, orders};

/// A point on Earth.
pub fn at(latitude: f64, longitude: f64) -> common::Location {
    common::Location {
        latitude,
        longitude,
    }
}

/// A FindKiosks request around `center` within `radius_meters`, no filter, default page.
pub fn around(center: common::Location, radius_meters: u32) -> pb::FindKiosksRequest {
    pb::FindKiosksRequest {
        latitude: center.latitude,
        longitude: center.longitude,
        radius_meters,
        ..Default::default()
    }
}

/// OrderService.FindKiosks as `token`.
pub async fn find_kiosks(
    channel: &Channel,
    token: &str,
    request: pb::FindKiosksRequest,
) -> Result<pb::FindKiosksResponse, Status> {
    orders(channel)
        .find_kiosks(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// The kiosk ids of an answer, in its order.
pub fn ids(answer: &pb::FindKiosksResponse) -> Vec<&str> {
    answer.kiosks.iter().map(|k| k.kiosk_id.as_str()).collect()
}

/// Every kiosk of a search, page after page (asserting each page holds at most
/// `max_results`).
pub async fn find_all_pages(
    channel: &Channel,
    token: &str,
    request: pb::FindKiosksRequest,
) -> Vec<pb::NearbyKiosk> {
    let mut all = Vec::new();
    let mut request = request;
    loop {
        let page = find_kiosks(channel, token, request.clone())
            .await
            .unwrap_or_else(|s| panic!("find kiosks {request:?}: {s:?}"));
        assert!(
            page.kiosks.len() <= request.max_results as usize,
            "{page:?}"
        );
        all.extend(page.kiosks);
        if page.next_page_token.is_empty() {
            return all;
        }
        request.page_token = page.next_page_token;
    }
}

/// Asks FindKiosks until its answer satisfies `done` (kiosks' inventories and links reach
/// orders through the gateway's events); returns that answer.
pub async fn find_until(
    channel: &Channel,
    token: &str,
    request: pb::FindKiosksRequest,
    what: &str,
    done: impl Fn(&pb::FindKiosksResponse) -> bool,
) -> pb::FindKiosksResponse {
    let mut last = None;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match find_kiosks(channel, token, request.clone()).await {
                Ok(answer) if done(&answer) => return answer,
                other => last = Some(other),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}; last answer: {last:#?}"))
}

/// The line of `kiosk` for `item_type`, if any.
pub fn availability<'a>(
    kiosk: &'a pb::NearbyKiosk,
    item_type: &common::ItemType,
) -> Option<&'a pb::Availability> {
    kiosk
        .availability
        .iter()
        .find(|line| line.item_type.as_ref() == Some(item_type))
}

/// A kiosk's lines as (kind, capacity, package, available now, reservable).
pub fn counts(kiosk: &pb::NearbyKiosk) -> Vec<(i32, u64, String, u32, u32)> {
    kiosk
        .availability
        .iter()
        .map(|line| {
            let t = line.item_type.clone().unwrap_or_default();
            (
                t.kind,
                t.capacity_bytes,
                t.content_package_id,
                line.available_now,
                line.reservable,
            )
        })
        .collect()
}
