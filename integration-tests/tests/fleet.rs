//! What operators see of the fleet: the orders service's kiosk view, kept from the gateway's
//! event log (online state, last inventory), through FleetService.

use std::time::Duration;

use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::{Sandbox, authed, backends, eventually, fast_links};
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use tonic::Code;

async fn kiosk(sandbox: &Sandbox, token: &str, id: &str) -> Option<pb::Kiosk> {
    FleetServiceClient::new(sandbox.channel().await)
        .get_kiosk(authed(
            pb::GetKioskRequest {
                kiosk_id: id.into(),
            },
            token,
        ))
        .await
        .ok()
        .and_then(|r| r.into_inner().kiosk)
}

#[tokio::test]
async fn operators_see_each_kiosk_online_state_and_last_inventory() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let token = sandbox.kiosk_token("K-1").await;

        let link = FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(3))
            .await
            .unwrap();
        eventually(
            Duration::from_secs(20),
            "K-1 online in the fleet view",
            || async {
                // Online and inventory are two events; wait for both.
                kiosk(&sandbox, &operator.access_token, "K-1")
                    .await
                    .is_some_and(|k| k.online && k.inventory.is_some())
            },
        )
        .await;
        let seen = kiosk(&sandbox, &operator.access_token, "K-1")
            .await
            .unwrap();
        assert_eq!(seen.agent_version, "0.0.1-test", "{backend}");
        let summary = seen.inventory.expect("inventory summary");
        assert_eq!(
            summary.lines.iter().map(|l| l.ready).sum::<u32>(),
            3,
            "{backend}"
        );

        link.hang_up();
        eventually(
            Duration::from_secs(20),
            "K-1 offline in the fleet view",
            || async {
                kiosk(&sandbox, &operator.access_token, "K-1")
                    .await
                    .is_some_and(|k| !k.online)
            },
        )
        .await;

        // Paging by kiosk id, and the online filter.
        for id in ["K-2", "K-3"] {
            let token = sandbox.kiosk_token(id).await;
            std::mem::forget(
                FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
                    .await
                    .unwrap(),
            );
        }
        let mut fleet = FleetServiceClient::new(sandbox.channel().await);
        eventually(Duration::from_secs(20), "three kiosks in the view", || {
            let mut fleet = fleet.clone();
            let token = operator.access_token.clone();
            async move {
                fleet
                    .list_kiosks(authed(
                        pb::ListKiosksRequest {
                            page_size: 10,
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await
                    .is_ok_and(|r| r.into_inner().kiosks.len() == 3)
            }
        })
        .await;
        let first = fleet
            .list_kiosks(authed(
                pb::ListKiosksRequest {
                    page_size: 2,
                    ..Default::default()
                },
                &operator.access_token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.kiosks.len(), 2, "{backend}");
        let second = fleet
            .list_kiosks(authed(
                pb::ListKiosksRequest {
                    page_size: 2,
                    page_token: first.next_page_token.clone(),
                    ..Default::default()
                },
                &operator.access_token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.kiosks.len(), 1, "{backend}");
        assert!(second.next_page_token.is_empty(), "{backend}");
        let online = fleet
            .list_kiosks(authed(
                pb::ListKiosksRequest {
                    online_only: true,
                    ..Default::default()
                },
                &operator.access_token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(online.kiosks.len(), 2, "{backend}: K-1 hung up");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn the_fleet_view_is_for_operators_and_checks_its_input() {
    let sandbox =
        Sandbox::start_with(&sneakernet_integration_tests::Backend::Sqlite, fast_links).await;
    let user = sandbox.register("curious@example.com").await;
    let operator = sandbox.operator().await;
    let mut fleet = FleetServiceClient::new(sandbox.channel().await);
    let status = fleet
        .list_kiosks(authed(pb::ListKiosksRequest::default(), &user.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = fleet
        .list_kiosks(pb::ListKiosksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = fleet
        .list_kiosks(authed(
            pb::ListKiosksRequest {
                page_token: "not-ours!".into(),
                ..Default::default()
            },
            &operator.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = fleet
        .get_kiosk(authed(
            pb::GetKioskRequest {
                kiosk_id: "K-404".into(),
            },
            &operator.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    sandbox.stop().await;
}

fn registration(kiosk_id: &str, site_id: &str) -> pb::RegisterKioskRequest {
    pb::RegisterKioskRequest {
        kiosk_id: kiosk_id.into(),
        site_id: site_id.into(),
        site_name: format!("Site {site_id}"),
        location: Some(sneakernet_proto::common::v1::Location {
            latitude: 48.1374,
            longitude: 11.5755,
        }),
        qr_secret: vec![7; 32],
        out_of_service: false,
    }
}

#[tokio::test]
async fn registered_kiosks_are_listed_by_site_page_by_page_and_bad_profiles_are_named() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let operator = sandbox.operator().await.access_token;
        let mut fleet = FleetServiceClient::new(sandbox.channel().await);
        // Interleaved ids: the site filter must skip the others without ending early.
        for (id, site) in [
            ("K-1", "north"),
            ("K-2", "south"),
            ("K-3", "north"),
            ("K-4", "south"),
            ("K-5", "south"),
            ("K-6", "north"),
        ] {
            fleet
                .register_kiosk(authed(registration(id, site), &operator))
                .await
                .unwrap_or_else(|s| panic!("{backend}: register {id}: {s:?}"));
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = fleet
                .list_kiosks(authed(
                    pb::ListKiosksRequest {
                        page_size: 1,
                        page_token: token.clone(),
                        site_id: "north".into(),
                        online_only: false,
                    },
                    &operator,
                ))
                .await
                .unwrap_or_else(|s| panic!("{backend}: list: {s:?}"))
                .into_inner();
            for kiosk in page.kiosks {
                let profile = kiosk.profile.expect("a registered kiosk has a profile");
                assert_eq!(profile.site_id, "north", "{backend}");
                assert!(!kiosk.online, "{backend}: never connected");
                seen.push(profile.kiosk_id);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, ["K-1", "K-3", "K-6"], "{backend}");

        let mut bad = registration("bad id", "");
        bad.location = Some(sneakernet_proto::common::v1::Location {
            latitude: 91.0,
            longitude: 0.0,
        });
        bad.qr_secret = vec![1; 8];
        let status = fleet
            .register_kiosk(authed(bad, &operator))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{backend}");
        let details = tonic_types::StatusExt::get_details_bad_request(&status).expect("fields");
        let mut fields: Vec<_> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            ["kiosk_id", "location.latitude", "qr_secret", "site_id"],
            "{backend}"
        );
        sandbox.stop().await;
    }
}
