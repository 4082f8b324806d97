//! FindKiosks (issue 11, seed flow 2 step 1) end to end: an operator registers kiosks at known
//! coordinates and real kiosk agents report what their bays hold; a user finds the kiosks near
//! a point, nearest first, with what each can lend now and what can be reserved there. Only
//! gRPC, on every backend of this run.

use sneakernet_integration_tests::nearby::{
    around, at, availability, counts, find_all_pages, find_kiosks, find_until, ids,
};
use sneakernet_integration_tests::rentals::{
    CAPACITY, PACKAGE, SimKiosk, bad_fields, bays, drive_of, fleet, new_qr_secret, power_bank,
    power_bank_type, pricing, register_kiosk_at, register_user, start_priced,
};
use sneakernet_integration_tests::{Backend, Sandbox, authed, backends, content};
use sneakernet_kiosk_agent::config::SimFaults;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

const DRIVE: i32 = common::ItemKind::Drive as i32;
const BANK: i32 = common::ItemKind::PowerBank as i32;

async fn start(backend: &Backend) -> (Sandbox, Channel, String) {
    start_priced(
        backend,
        &[common::ItemKind::Drive, common::ItemKind::PowerBank],
    )
    .await
}

/// Berlin stations (from Alexanderplatz: Ostbahnhof ≈ 1.9 km, Hauptbahnhof ≈ 3.0 km,
/// Südkreuz ≈ 6.1 km, Spandau ≈ 14.7 km), Fiji either side of the antimeridian, and both
/// poles.
const KIOSKS: &[(&str, f64, f64)] = &[
    ("alexanderplatz", 52.5219, 13.4132),
    ("ostbahnhof", 52.5105, 13.4346),
    ("hauptbahnhof", 52.5251, 13.3694),
    ("suedkreuz", 52.4754, 13.3655),
    ("spandau", 52.5344, 13.1968),
    ("taveuni-west", -16.8, 179.99),
    ("taveuni-east", -16.8, -179.99),
    ("suva", -18.1416, 178.4419),
    ("north-pole-a", 89.9, 0.0),
    ("north-pole-b", 89.9, 180.0),
    ("south-pole", -89.95, 45.0),
    ("arctic", 89.0, 35.0),
];

async fn register_all(channel: &Channel, operator: &str) {
    for &(id, latitude, longitude) in KIOSKS {
        register_kiosk_at(
            channel,
            operator,
            id,
            &new_qr_secret(),
            at(latitude, longitude),
        )
        .await
        .unwrap_or_else(|s| panic!("register {id}: {s:?}"));
    }
    // Out of service next to Alexanderplatz: never found.
    fleet(channel)
        .register_kiosk(authed(
            pb::RegisterKioskRequest {
                kiosk_id: "closed".into(),
                site_id: "site-closed".into(),
                site_name: "Closed".into(),
                location: Some(at(52.5220, 13.4133)),
                qr_secret: new_qr_secret(),
                out_of_service: true,
            },
            operator,
        ))
        .await
        .expect("register the closed kiosk");
}

#[tokio::test]
async fn kiosks_are_found_nearest_first_within_the_radius_across_the_antimeridian_and_at_the_poles()
{
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let user = register_user(&channel).await.token;
        register_all(&channel, &operator).await;
        let find = |request: pb::FindKiosksRequest| {
            let (channel, user, backend) = (channel.clone(), user.clone(), backend.clone());
            async move {
                find_kiosks(&channel, &user, request)
                    .await
                    .unwrap_or_else(|s| panic!("{backend}: {s:?}"))
            }
        };
        let alexanderplatz = at(52.5219, 13.4132);

        let near = find(around(alexanderplatz, 6_000)).await;
        assert_eq!(
            ids(&near),
            ["alexanderplatz", "ostbahnhof", "hauptbahnhof"],
            "{backend}"
        );
        let meters: Vec<u32> = near.kiosks.iter().map(|k| k.distance_meters).collect();
        assert_eq!(meters[0], 0, "{backend}");
        assert!((1_850..2_000).contains(&meters[1]), "{backend}: {meters:?}");
        assert!((2_900..3_100).contains(&meters[2]), "{backend}: {meters:?}");
        let first = &near.kiosks[0];
        assert_eq!(first.location, Some(alexanderplatz), "{backend}");
        assert_eq!(
            (first.site_id.as_str(), first.site_name.as_str()),
            (
                "site-alexanderplatz",
                "Central Station, kiosk alexanderplatz"
            ),
        );
        assert!(!first.online, "{backend}: no agent ever connected");
        assert!(first.availability.is_empty(), "{backend}: nothing reported");
        assert!(near.next_page_token.is_empty(), "{backend}");

        // The radius's edge: Hauptbahnhof is in a metre beyond its distance, out a metre short.
        let edge = meters[2];
        assert_eq!(
            ids(&find(around(alexanderplatz, edge + 1)).await).last(),
            Some(&"hauptbahnhof"),
            "{backend}"
        );
        assert_eq!(
            ids(&find(around(alexanderplatz, edge - 1)).await),
            ["alexanderplatz", "ostbahnhof"],
            "{backend}"
        );
        assert_eq!(
            ids(&find(around(alexanderplatz, 50_000)).await),
            [
                "alexanderplatz",
                "ostbahnhof",
                "hauptbahnhof",
                "suedkreuz",
                "spandau"
            ],
            "{backend}: the closed kiosk is never listed"
        );

        // Across the antimeridian, from either side; Suva (≈ 170 km) is not in reach.
        for (from, expected) in [
            (at(-16.8, -179.99), ["taveuni-east", "taveuni-west"]),
            (at(-16.8, 179.99), ["taveuni-west", "taveuni-east"]),
        ] {
            let fiji = find(around(from, 50_000)).await;
            assert_eq!(ids(&fiji), expected, "{backend}: from {from:?}");
            assert!(
                (2_000..2_300).contains(&fiji.kiosks[1].distance_meters),
                "{backend}: {fiji:?}"
            );
        }

        // Near the poles every longitude is in reach.
        assert_eq!(
            ids(&find(around(at(89.95, -90.0), 50_000)).await),
            ["north-pole-a", "north-pole-b"],
            "{backend}"
        );
        // ≈ 15.7 km to each, a quarter turn round the pole either way: equal, so by id.
        let pole = find(around(at(89.9, 90.0), 20_000)).await;
        assert_eq!(ids(&pole), ["north-pole-a", "north-pole-b"], "{backend}");
        assert_eq!(
            pole.kiosks[0].distance_meters, pole.kiosks[1].distance_meters,
            "{backend}"
        );
        // At 89° N, 25° of longitude is ≈ 48 km: the box widens with latitude.
        assert_eq!(
            ids(&find(around(at(89.0, 10.0), 50_000)).await),
            ["arctic"],
            "{backend}"
        );
        assert_eq!(
            ids(&find(around(at(-90.0, 0.0), 10_000)).await),
            ["south-pole"],
            "{backend}"
        );
        assert!(
            find(around(at(0.0, -30.0), 50_000)).await.kiosks.is_empty(),
            "{backend}: the middle of the Atlantic"
        );

        // Pages: two at a time, the same kiosks in the same order, none twice.
        let mut paged = around(alexanderplatz, 50_000);
        paged.max_results = 2;
        let first_page = find(paged.clone()).await;
        assert_eq!(
            ids(&first_page),
            ["alexanderplatz", "ostbahnhof"],
            "{backend}"
        );
        assert!(!first_page.next_page_token.is_empty(), "{backend}");
        let all = find_all_pages(&channel, &user, paged).await;
        let all: Vec<&str> = all.iter().map(|k| k.kiosk_id.as_str()).collect();
        assert_eq!(
            all,
            [
                "alexanderplatz",
                "ostbahnhof",
                "hauptbahnhof",
                "suedkreuz",
                "spandau"
            ],
            "{backend}"
        );
        sandbox.stop().await;
    }
}

/// Size of the package the availability test uploads: more than the smallest drive holds.
const SMALL_DRIVE: u64 = 4_096;

#[tokio::test]
async fn lines_show_what_can_be_lent_now_and_reserved_and_filters_leave_kiosks_out() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let address = sandbox.node().address;
        let user = register_user(&channel).await.token;
        let dir = tempfile::tempdir().expect("temp dir");
        let upload = content::generate(
            dir.path(),
            "nearby",
            "Nearby films",
            &[("a.bin", 6_000), ("b.bin", 3_000)],
        );
        let films = sneakernet::content::upload_dir(&channel, &operator, &upload, |_| {})
            .await
            .expect("upload the package");
        assert!(films.total_size_bytes > SMALL_DRIVE, "{backend}");
        let big = 2 * CAPACITY;
        // Alexanderplatz: a drive of the walk-up test package (unknown to the content
        // service), a blank drive twice as big, a power bank. Ostbahnhof: one drive too small
        // for the uploaded package. Hauptbahnhof: a power bank.
        let start_at = |id: &'static str, location, items| {
            SimKiosk::start_at(
                address,
                &operator,
                id,
                location,
                bays(items),
                SimFaults::default(),
            )
        };
        let _alex = start_at(
            "alexanderplatz",
            at(52.5219, 13.4132),
            vec![
                Some(drive_of("D-ALEX-1", CAPACITY, Some(PACKAGE))),
                Some(drive_of("D-ALEX-2", big, None)),
                Some(power_bank("P-ALEX")),
            ],
        )
        .await;
        let _ost = start_at(
            "ostbahnhof",
            at(52.5105, 13.4346),
            vec![Some(drive_of("D-OST", SMALL_DRIVE, None))],
        )
        .await;
        let mut hbf = start_at(
            "hauptbahnhof",
            at(52.5251, 13.3694),
            vec![Some(power_bank("P-HBF"))],
        )
        .await;
        let alexanderplatz = at(52.5219, 13.4132);
        let everything = find_until(
            &channel,
            &user,
            around(alexanderplatz, 5_000),
            "every kiosk online with its inventory",
            |answer| {
                answer.kiosks.len() == 3
                    && answer
                        .kiosks
                        .iter()
                        .all(|k| k.online && !k.availability.is_empty())
            },
        )
        .await;
        assert_eq!(
            ids(&everything),
            ["alexanderplatz", "ostbahnhof", "hauptbahnhof"],
            "{backend}"
        );
        let alex = &everything.kiosks[0];
        // The walk-up package is not READY in the content service: lendable, not reservable.
        // A blank drive reservation can take either free drive of its capacity.
        assert_eq!(
            counts(alex),
            [
                (DRIVE, CAPACITY, PACKAGE.to_owned(), 1, 0),
                (DRIVE, big, String::new(), 1, 1),
                (BANK, 0, String::new(), 1, 0),
            ],
            "{backend}"
        );
        let bank = availability(alex, &power_bank_type()).expect("power bank line");
        assert_eq!(bank.pricing, Some(pricing()), "{backend}");
        assert_eq!(
            bank.prices.first().map(|p| p.duration_days),
            Some(1),
            "{backend}"
        );
        assert_eq!(
            bank.write_protect,
            pb::WriteProtectOption::NotApplicable as i32
        );
        assert_eq!(
            counts(&everything.kiosks[1]),
            [(DRIVE, SMALL_DRIVE, String::new(), 1, 1)],
            "{backend}"
        );

        let filtered = |item_type: common::ItemType| {
            let (channel, user) = (channel.clone(), user.clone());
            async move {
                let mut request = around(alexanderplatz, 5_000);
                request.item_type = Some(item_type);
                find_kiosks(&channel, &user, request).await
            }
        };
        let banks = filtered(power_bank_type()).await.expect("power banks");
        assert_eq!(ids(&banks), ["alexanderplatz", "hauptbahnhof"], "{backend}");
        assert!(
            banks
                .kiosks
                .iter()
                .all(|k| counts(k) == [(BANK, 0, String::new(), 1, 0)]),
            "{backend}: {banks:?}"
        );
        let big_drives = filtered(common::ItemType {
            kind: DRIVE,
            capacity_bytes: big,
            content_package_id: String::new(),
        })
        .await
        .expect("big drives");
        assert_eq!(ids(&big_drives), ["alexanderplatz"], "{backend}");
        assert_eq!(
            counts(&big_drives.kiosks[0]),
            [(DRIVE, big, String::new(), 1, 1)]
        );

        // The uploaded package: no drive holds it, both free drives at Alexanderplatz can take
        // it; Ostbahnhof's drive is too small and Hauptbahnhof has none, so they are left out.
        let package = filtered(common::ItemType {
            kind: DRIVE,
            capacity_bytes: 0,
            content_package_id: films.package_id.clone(),
        })
        .await
        .expect("the package");
        assert_eq!(ids(&package), ["alexanderplatz"], "{backend}");
        assert_eq!(
            counts(&package.kiosks[0]),
            [
                (DRIVE, CAPACITY, films.package_id.clone(), 0, 1),
                (DRIVE, big, films.package_id.clone(), 0, 1),
            ],
            "{backend}"
        );
        assert!(
            package.kiosks[0]
                .availability
                .iter()
                .all(|line| line.content_title == "Nearby films"
                    && line.write_protect == pb::WriteProtectOption::Choosable as i32),
            "{backend}: {package:?}"
        );
        let unknown = filtered(common::ItemType {
            kind: DRIVE,
            capacity_bytes: 0,
            content_package_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("a package nobody uploaded");
        assert_eq!(unknown.code(), Code::InvalidArgument, "{backend}");
        assert_eq!(
            bad_fields(&unknown),
            ["item_type.content_package_id"],
            "{backend}"
        );

        // A kiosk that goes offline is still found, offline, with what it last reported.
        hbf.stop().await;
        let offline = find_until(
            &channel,
            &user,
            around(alexanderplatz, 5_000),
            "hauptbahnhof offline",
            |answer| {
                answer
                    .kiosks
                    .iter()
                    .any(|k| k.kiosk_id == "hauptbahnhof" && !k.online)
            },
        )
        .await;
        assert_eq!(
            ids(&offline),
            ["alexanderplatz", "ostbahnhof", "hauptbahnhof"],
            "{backend}"
        );
        assert!(offline.kiosks[0].online, "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn bad_positions_and_limits_are_refused_naming_the_field_and_kiosks_may_not_ask() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let user = register_user(&channel).await.token;
        let berlin = at(52.52, 13.41);
        let cases: Vec<(pb::FindKiosksRequest, Vec<&str>)> = vec![
            (around(at(90.5, 13.41), 1_000), vec!["latitude"]),
            (around(at(-91.0, 13.41), 1_000), vec!["latitude"]),
            (around(at(52.52, 180.01), 1_000), vec!["longitude"]),
            (around(at(52.52, -181.0), 1_000), vec!["longitude"]),
            (
                around(at(f64::NAN, f64::INFINITY), 1_000),
                vec!["latitude", "longitude"],
            ),
            (around(berlin, 0), vec!["radius_meters"]),
            (around(berlin, 50_001), vec!["radius_meters"]),
            (
                pb::FindKiosksRequest {
                    max_results: 101,
                    ..around(berlin, 1_000)
                },
                vec!["max_results"],
            ),
            (
                pb::FindKiosksRequest {
                    page_token: "not-a-token".into(),
                    ..around(berlin, 1_000)
                },
                vec!["page_token"],
            ),
            (
                pb::FindKiosksRequest {
                    item_type: Some(common::ItemType::default()),
                    ..around(berlin, 1_000)
                },
                vec!["item_type.kind"],
            ),
            (
                pb::FindKiosksRequest {
                    item_type: Some(common::ItemType {
                        kind: DRIVE,
                        capacity_bytes: 0,
                        content_package_id: "films".into(),
                    }),
                    ..around(berlin, 1_000)
                },
                vec!["item_type.content_package_id"],
            ),
            (
                pb::FindKiosksRequest {
                    max_results: 500,
                    ..around(at(95.0, 0.0), 0)
                },
                vec!["latitude", "radius_meters", "max_results"],
            ),
        ];
        for (request, fields) in cases {
            let status = find_kiosks(&channel, &user, request.clone())
                .await
                .expect_err("a bad request");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{backend}: {request:?}"
            );
            assert_eq!(bad_fields(&status), fields, "{backend}: {request:?}");
        }
        // The edges themselves are fine.
        for request in [
            around(at(90.0, 180.0), 50_000),
            around(at(-90.0, -180.0), 1),
            pb::FindKiosksRequest {
                max_results: 100,
                ..around(berlin, 1)
            },
        ] {
            find_kiosks(&channel, &user, request.clone())
                .await
                .unwrap_or_else(|s| panic!("{backend}: {request:?}: {s:?}"));
        }
        find_kiosks(&channel, &operator, around(berlin, 1_000))
            .await
            .unwrap_or_else(|s| panic!("{backend}: an operator may ask: {s:?}"));
        let kiosk = sandbox.kiosk_token("K-1").await;
        let refused = find_kiosks(&channel, &kiosk, around(berlin, 1_000))
            .await
            .expect_err("a kiosk may not ask");
        assert_eq!(refused.code(), Code::PermissionDenied, "{backend}");
        sandbox.stop().await;
    }
}
