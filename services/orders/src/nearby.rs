//! FindKiosks, seed flow 2 step 1: the kiosks near the user, nearest first, each with what it
//! can lend now and what can be reserved there, and at what price.
//!
//! Steps: a named content package must be READY (else the filter names nothing and the field
//! is refused); the store returns the kiosks in the search circle's bounding box (an index
//! range, [`crate::store::nearby`]); [`nearest_first`] keeps those within the radius by
//! WGS 84 distance; past the page token's position, kiosks are described a batch at a time
//! (units, link state and price rules in one query each, package sizes and titles from the
//! content service once per package) until the page is full, leaving out, under a filter,
//! kiosks with no matching line. The lines follow [`crate::domain::availability`] and are
//! priced as ScanKiosk prices them ([`crate::prices`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::ids::PackageId;
use sneakernet_proto::orders::v1 as pb;

use crate::content_client::PackageInfo;
use crate::domain::availability::{self, TypeFilter, Unit};
use crate::domain::geo::{Coordinates, SearchArea, nearest_first};
use crate::entity::kiosk;
use crate::error::OrdersError;
use crate::flows::Flows;
use crate::prices::price_list;

/// Kiosks per answer when the caller does not say.
pub const DEFAULT_RESULTS: u32 = 20;
/// Most kiosks per answer.
pub const MAX_RESULTS: u32 = 100;
/// Fewest kiosks described per batch of reads under a filter: it may leave many out, so
/// fewer and larger batches. Without one every kiosk is shown and a batch is what the page
/// still needs.
const MIN_FILTERED_BATCH: usize = 32;

/// A FindKiosks request, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct NearbyAsk {
    /// Where to look.
    pub area: SearchArea,
    /// Which types, when the caller asked for some.
    pub filter: Option<TypeFilter>,
    /// Kiosks per answer, 1 to [`MAX_RESULTS`].
    pub max_results: u32,
    /// Where the previous page ended.
    pub after: Option<PagePosition>,
}

/// A kiosk's place in the nearest-first order: its distance (to the bit, as
/// [`nearest_first`] measured it) and its id for ties.
#[derive(Clone, Debug, PartialEq)]
pub struct PagePosition {
    /// Meters from the centre.
    pub meters: f64,
    /// The kiosk's id.
    pub kiosk_id: String,
}

impl PagePosition {
    /// Whether a kiosk `meters` away with `kiosk_id` comes after this position.
    fn precedes(&self, meters: f64, kiosk_id: &str) -> bool {
        self.meters
            .total_cmp(&meters)
            .then_with(|| self.kiosk_id.as_str().cmp(kiosk_id))
            .is_lt()
    }

    /// The token naming this position in the search `search` (see [`search_key`]).
    pub fn token(&self, search: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{:016x}|{}|{search}",
            self.meters.to_bits(),
            self.kiosk_id
        ))
    }

    /// The position a token names, if it was issued for the search `search`.
    pub fn from_token(token: &str, search: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let mut parts = text.splitn(3, '|');
        let bits = u64::from_str_radix(parts.next()?, 16).ok()?;
        let kiosk_id = parts.next()?.to_owned();
        let meters = f64::from_bits(bits);
        (parts.next()? == search && meters.is_finite() && meters >= 0.0)
            .then_some(Self { meters, kiosk_id })
    }
}

/// What binds a page token to one search: the centre (to the bit), the radius and the
/// filter. The page size may change between pages.
pub fn search_key(area: &SearchArea, filter: Option<&TypeFilter>) -> String {
    crate::flows::fingerprint(&[
        &area.center.latitude().to_bits().to_string(),
        &area.center.longitude().to_bits().to_string(),
        &area.radius.meters().to_string(),
        &format!("{filter:?}"),
    ])
}

/// A kiosk within the radius, not described yet.
struct Candidate {
    profile: kiosk::Model,
    meters: f64,
}

/// Package ids to what the content service said of them: `None` when unknown or not READY.
type Packages = HashMap<String, Option<PackageInfo>>;

impl Flows {
    /// FindKiosks: the kiosks within the radius, nearest first, one page of them.
    pub async fn find_kiosks(&self, ask: NearbyAsk) -> Result<pb::FindKiosksResponse, OrdersError> {
        let filter = ask.filter.as_ref();
        let mut packages = Packages::new();
        if let Some(package) = filter.and_then(|f| f.content_package_id.as_ref()) {
            self.look_up_packages(&mut packages, [package.clone()].into())
                .await?;
            if packages.get(package).is_none_or(Option::is_none) {
                return Err(OrdersError::invalid(
                    "item_type.content_package_id",
                    "is not a READY content package",
                ));
            }
        }
        let mut profiles: HashMap<String, kiosk::Model> = self
            .store
            .kiosks_in_box(&ask.area.bounding_box())
            .await?
            .into_iter()
            .map(|p| (p.kiosk_id.clone(), p))
            .collect();
        let located = profiles.values().filter_map(|p| {
            // RegisterKiosk checks locations; a row that is not one is skipped, not fatal.
            let at = Coordinates::new(p.latitude, p.longitude).ok()?;
            Some((p.kiosk_id.clone(), at))
        });
        let candidates: Vec<Candidate> = nearest_first(
            ask.area.center,
            ask.area.radius,
            located.collect::<Vec<_>>(),
        )
        .into_iter()
        .filter(|(id, meters)| ask.after.as_ref().is_none_or(|p| p.precedes(*meters, id)))
        .filter_map(|(id, meters)| {
            Some(Candidate {
                profile: profiles.remove(&id)?,
                meters,
            })
        })
        .collect();

        // One more than the page, to know whether another page follows.
        let wanted = ask.max_results as usize + 1;
        let mut found: Vec<(PagePosition, pb::NearbyKiosk)> = Vec::new();
        let smallest_batch = if filter.is_some() {
            MIN_FILTERED_BATCH
        } else {
            1
        };
        let mut rest = candidates.as_slice();
        while !rest.is_empty() && found.len() < wanted {
            let take = (wanted - found.len()).max(smallest_batch).min(rest.len());
            let (batch, after) = rest.split_at(take);
            rest = after;
            for (candidate, shown) in batch
                .iter()
                .zip(self.describe(batch, filter, &mut packages).await?)
            {
                if let Some(shown) = shown {
                    let position = PagePosition {
                        meters: candidate.meters,
                        kiosk_id: candidate.profile.kiosk_id.clone(),
                    };
                    found.push((position, shown));
                }
            }
        }
        found.truncate(wanted);
        let next_page_token = if found.len() == wanted {
            found.pop();
            found
                .last()
                .map(|(position, _)| position.token(&search_key(&ask.area, filter)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::FindKiosksResponse {
            kiosks: found.into_iter().map(|(_, kiosk)| kiosk).collect(),
            next_page_token,
        })
    }

    /// Each candidate as FindKiosks shows it, in order; `None` for one the filter leaves out.
    async fn describe(
        &self,
        batch: &[Candidate],
        filter: Option<&TypeFilter>,
        packages: &mut Packages,
    ) -> Result<Vec<Option<pb::NearbyKiosk>>, OrdersError> {
        let ids: Vec<String> = batch.iter().map(|c| c.profile.kiosk_id.clone()).collect();
        let sites: Vec<String> = batch
            .iter()
            .map(|c| c.profile.site_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut units: BTreeMap<String, Vec<Unit>> = BTreeMap::new();
        for row in self.store.units_at(&ids).await? {
            units
                .entry(row.kiosk_id.clone())
                .or_default()
                .push(Unit::from(&row));
        }
        let online: BTreeSet<String> = self
            .store
            .kiosk_views(&ids)
            .await?
            .into_iter()
            .filter(|view| view.online)
            .map(|view| view.kiosk_id)
            .collect();
        let rules = self.store.pricing_rules_of_sites(&sites).await?;
        let held = units
            .values()
            .flat_map(|units| availability::packages_held(units, filter))
            .collect();
        self.look_up_packages(packages, held).await?;

        let size = |package: &str| {
            packages
                .get(package)
                .and_then(|info| info.as_ref().map(|i| i.total_bytes))
        };
        let title = |package: &str| {
            packages
                .get(package)
                .and_then(|info| info.as_ref().map(|i| i.title.clone()))
                .unwrap_or_default()
        };
        let mut shown = Vec::with_capacity(batch.len());
        for candidate in batch {
            let profile = &candidate.profile;
            let held_here = units.get(&profile.kiosk_id).map_or(&[][..], Vec::as_slice);
            let lines: Vec<pb::Availability> = availability::lines(held_here, filter, size)
                .into_iter()
                .filter_map(|line| {
                    let priced = price_list(&rules, &profile.site_id, &line.key)?;
                    Some(pb::Availability {
                        item_type: Some(line.key.to_proto()),
                        content_title: title(&line.key.content_package_id),
                        available_now: line.available_now,
                        reservable: line.reservable,
                        write_protect: priced.write_protect.into(),
                        prices: priced.prices,
                        pricing: Some(priced.pricing),
                    })
                })
                .collect();
            if filter.is_some() && lines.is_empty() {
                shown.push(None);
                continue;
            }
            shown.push(Some(pb::NearbyKiosk {
                kiosk_id: profile.kiosk_id.clone(),
                site_id: profile.site_id.clone(),
                site_name: profile.site_name.clone(),
                location: Some(common::Location {
                    latitude: profile.latitude,
                    longitude: profile.longitude,
                }),
                // At most 50 km: the radius.
                distance_meters: candidate.meters.round() as u32,
                online: online.contains(&profile.kiosk_id),
                availability: lines,
            }));
        }
        Ok(shown)
    }

    /// Asks the content service about each package of `ids` not asked yet. A package id no
    /// content package can have (kiosks report what their drives say) is unknown without
    /// asking. The content service not answering fails the request: titles and what can be
    /// reserved would be wrong.
    async fn look_up_packages(
        &self,
        packages: &mut Packages,
        ids: BTreeSet<String>,
    ) -> Result<(), OrdersError> {
        let ask: Vec<(String, Option<PackageId>)> = ids
            .into_iter()
            .filter(|id| !packages.contains_key(id))
            .map(|id| {
                let checked = uuid::Uuid::parse_str(&id)
                    .ok()
                    .and_then(|_| PackageId::parse(&id).ok());
                (id, checked)
            })
            .collect();
        let answers = futures::future::try_join_all(ask.iter().map(|(_, id)| async move {
            match id {
                Some(id) => self.content.ready_package(id).await,
                None => Ok(None),
            }
        }))
        .await
        .map_err(|status| OrdersError::content_unavailable(&status))?;
        for ((id, _), answer) in ask.into_iter().zip(answers) {
            packages.insert(id, answer);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_names_a_position_in_one_search_only() {
        let area = SearchArea::new(52.52, 13.41, 5_000).unwrap();
        let search = search_key(&area, None);
        let position = PagePosition {
            meters: 1_234.567_891,
            kiosk_id: "K-1".into(),
        };
        let token = position.token(&search);
        assert_eq!(
            PagePosition::from_token(&token, &search),
            Some(position.clone())
        );
        let wider = SearchArea::new(52.52, 13.41, 5_001).unwrap();
        assert_eq!(
            PagePosition::from_token(&token, &search_key(&wider, None)),
            None
        );
        let drives = TypeFilter {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: None,
            content_package_id: None,
        };
        assert_eq!(
            PagePosition::from_token(&token, &search_key(&area, Some(&drives))),
            None
        );
        assert_eq!(PagePosition::from_token("not base64!", &search), None);
        assert_eq!(PagePosition::from_token("", &search), None);
    }

    #[test]
    fn a_page_continues_after_its_last_kiosk_in_distance_then_id_order() {
        let last = PagePosition {
            meters: 100.0,
            kiosk_id: "K-2".into(),
        };
        assert!(!last.precedes(99.0, "K-9"));
        assert!(!last.precedes(100.0, "K-1"));
        assert!(
            !last.precedes(100.0, "K-2"),
            "the last kiosk is not repeated"
        );
        assert!(last.precedes(100.0, "K-3"));
        assert!(last.precedes(100.000_001, "K-0"));
    }
}
