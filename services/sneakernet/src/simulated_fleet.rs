//! What `standalone` simulates: three kiosk sites in one city, the items in their bays on the
//! first start (their content drives hold the demo packages of [`crate::demo_content`]), and
//! the price terms of those sites. Plain data, no I/O; [`crate::standalone`] brings it to life.

use sneakernet_kiosk_agent::config::{SimBayConfig, SimItemConfig, SimItemKind};

use crate::demo_content::DemoCatalog;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;

/// One terabyte, as drives report their nominal capacity.
pub const TB: u64 = 1_000_000_000_000;

/// One simulated kiosk: where it stands and its bays on the first start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KioskSite {
    /// The kiosk's id (the QR code's id, the credential's subject).
    pub kiosk_id: &'static str,
    /// The site it stands at; its price rules are set per site.
    pub site_id: &'static str,
    /// The site's display name.
    pub site_name: &'static str,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// Prefix of its items' ids, so item ids are unique across the network.
    item_prefix: &'static str,
}

/// The three simulated kiosks, at three stations in Berlin.
pub const SITES: [KioskSite; 3] = [
    KioskSite {
        kiosk_id: "K-BER-HBF",
        site_id: "ber-hauptbahnhof",
        site_name: "Berlin Hauptbahnhof",
        latitude: 52.525_084,
        longitude: 13.369_402,
        item_prefix: "HBF",
    },
    KioskSite {
        kiosk_id: "K-BER-ALEX",
        site_id: "ber-alexanderplatz",
        site_name: "Berlin Alexanderplatz",
        latitude: 52.521_918,
        longitude: 13.413_215,
        item_prefix: "ALX",
    },
    KioskSite {
        kiosk_id: "K-BER-OSTKREUZ",
        site_id: "ber-ostkreuz",
        site_name: "Berlin Ostkreuz",
        latitude: 52.503_118,
        longitude: 13.469_203,
        item_prefix: "OKZ",
    },
];

impl KioskSite {
    /// The bays on the first start: five drives (1 TB film classics twice, 2 TB nature
    /// documentaries, a blank 2 TB and a blank 1 TB), two charged power banks, and two empty
    /// bays for returns. Content drives name the packages of `catalog`. The first film drive,
    /// the documentaries drive and the blank 1 TB drive (the one a 1 TB reservation is copied
    /// onto) have a remote link module (standalone runs their links), the others none.
    pub fn bays(&self, catalog: &DemoCatalog) -> Vec<SimBayConfig> {
        let film_classics = Some(catalog.film_classics.package_id.as_str());
        let nature_documentaries = Some(catalog.nature_documentaries.package_id.as_str());
        let drive = |n: u32, capacity: u64, package: Option<&str>, remote_link| SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: format!("{}-D{n:02}", self.item_prefix),
            capacity_bytes: Some(capacity),
            content_package_id: package.map(str::to_owned),
            write_protected: false,
            charge_percent: None,
            remote_link,
        };
        let power_bank = |n: u32, charge: u32| SimItemConfig {
            kind: SimItemKind::PowerBank,
            item_id: format!("{}-P{n:02}", self.item_prefix),
            capacity_bytes: None,
            content_package_id: None,
            write_protected: false,
            charge_percent: Some(charge),
            remote_link: false,
        };
        let items = [
            ("A01", Some(drive(1, TB, film_classics, true))),
            ("A02", Some(drive(2, TB, film_classics, false))),
            ("A03", Some(drive(3, 2 * TB, nature_documentaries, true))),
            ("A04", Some(drive(4, 2 * TB, None, false))),
            ("A05", Some(drive(5, TB, None, true))),
            ("B01", Some(power_bank(1, 95))),
            ("B02", Some(power_bank(2, 88))),
            ("C01", None),
            ("C02", None),
        ];
        items
            .into_iter()
            .map(|(bay, item)| SimBayConfig {
                id: bay.to_owned(),
                item,
            })
            .collect()
    }

    /// The drives of this site with a remote link module (their item ids): standalone issues
    /// each a drive credential and runs its link.
    pub fn drives_with_remote_link(&self, catalog: &DemoCatalog) -> Vec<String> {
        self.bays(catalog)
            .into_iter()
            .filter_map(|bay| bay.item)
            .filter(|item| item.kind == SimItemKind::Drive && item.remote_link)
            .map(|item| item.item_id)
            .collect()
    }
}

/// The simulated sites' price terms for `kind`, in EUR: 4.00 for the first day, 1.50 per extra
/// day, up to 14 days, one hour's grace, 2.00 per day late capped at 20.00, and a lost-item
/// fee (60.00 for a drive, 30.00 for a power bank) once 14 days overdue.
pub fn pricing(kind: common::ItemKind) -> pb::Pricing {
    let eur = |minor_units: i64| common::Money {
        minor_units,
        currency: "EUR".to_owned(),
    };
    let lost_item_fee = match kind {
        common::ItemKind::PowerBank => 3000,
        _ => 6000,
    };
    pb::Pricing {
        base_price: Some(eur(400)),
        price_per_extra_day: Some(eur(150)),
        max_duration_days: 14,
        grace_period: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        late_fee_per_day: Some(eur(200)),
        late_fee_cap: Some(eur(2000)),
        lost_item_fee: Some(eur(lost_item_fee)),
        lost_after_days: 14,
        pickup_window: Some(prost_types::Duration {
            seconds: 24 * 3600,
            nanos: 0,
        }),
    }
}

/// The kinds every simulated site has a price rule for (an offer lists only priced types).
pub const PRICED_KINDS: [common::ItemKind; 2] =
    [common::ItemKind::Drive, common::ItemKind::PowerBank];

#[cfg(test)]
mod tests {
    use sneakernet_kiosk_agent::config::{AgentConfig, LinkConfig, SimFaults, SimulationConfig};

    use super::*;
    use crate::demo_content::test_catalog;

    #[test]
    fn every_site_is_a_valid_agent_configuration_with_empty_bays_for_returns() {
        let mut item_ids = std::collections::HashSet::new();
        for site in SITES {
            let bays = site.bays(&test_catalog());
            assert!(bays.iter().filter(|b| b.item.is_none()).count() >= 1);
            for item in bays.iter().filter_map(|b| b.item.as_ref()) {
                assert!(item_ids.insert(item.item_id.clone()), "{}", item.item_id);
                if item.kind == SimItemKind::PowerBank {
                    assert!(item.charge_percent.unwrap_or(0) >= 80);
                }
            }
            let config = AgentConfig {
                content: Default::default(),
                kiosk_id: site.kiosk_id.into(),
                credential_file: "kiosk.secret".into(),
                auth_url: "http://127.0.0.1:1".into(),
                gateway_url: "http://127.0.0.1:1".into(),
                data_dir: "kiosk".into(),
                allow_plaintext: false,
                qr_secret_file: None,
                link: LinkConfig::default(),
                simulation: Some(SimulationConfig {
                    bays,
                    faults: SimFaults::default(),
                }),
            };
            config.validate().expect("valid agent configuration");
        }
    }

    #[test]
    fn prices_are_in_one_currency_and_the_lost_item_fee_depends_on_the_kind() {
        let drive = pricing(common::ItemKind::Drive);
        let bank = pricing(common::ItemKind::PowerBank);
        assert_eq!(drive.lost_item_fee.map(|m| m.minor_units), Some(6000));
        assert_eq!(bank.lost_item_fee.map(|m| m.minor_units), Some(3000));
        assert_eq!(test_catalog().title("p-film"), Some("Film classics"));
        assert_eq!(test_catalog().title("unknown"), None);
    }
}
