//! Geometry for FindKiosks (issue 11): checked coordinates and search radius, the distance
//! between two points, a bounding box for the SQL prefilter, and the nearest-first order.
//!
//! Rules:
//! - Coordinates are WGS 84 degrees as the contract (`common.v1.Location`,
//!   `FindKiosksRequest`) states them: latitude -90 to 90, longitude -180 to 180, both
//!   finite. Anything else is refused, naming the field; nothing is wrapped or clamped.
//! - The radius is whole meters, 1 to [`MAX_RADIUS_METERS`] (50 km), the contract's limits.
//! - Distance is the geodesic ("great-circle" on the WGS 84 ellipsoid) in meters, computed with
//!   `geographiclib-rs`: the georust port of Karney's GeographicLib, accurate to nanometres
//!   everywhere (antipodes and poles included), pure Rust, and its only dependency is `libm`.
//!   The `geo` crate would bring the same algorithm (its `Geodesic` metric calls this crate)
//!   plus a polygon toolkit we do not need; its `Haversine` uses a sphere and is off by up to
//!   0.5 % against WGS 84, which the kiosk coordinates are in.
//! - The bounding box is a superset of the circle, so the SQL prefilter never misses a kiosk;
//!   the exact distance filter ([`nearest_first`]) follows it. Why it is a superset is written
//!   at [`BoundingBox::around`].
//! - Nearest first; equal distances by the candidates' own key, so the order is total and the
//!   same on every call (paging relies on it).

use std::cmp::Ordering;

use geographiclib_rs::{Geodesic, InverseGeodesic};
use sneakernet_proto::common::v1::Location;

/// The largest search radius the contract allows (`FindKiosksRequest.radius_meters`).
pub const MAX_RADIUS_METERS: u32 = 50_000;

/// WGS 84 semi-major axis, meters.
const WGS84_A: f64 = 6_378_137.0;
/// WGS 84 flattening.
const WGS84_F: f64 = 1.0 / 298.257_223_563;
/// The smallest radius of curvature anywhere on WGS 84: the meridian's at the equator,
/// a(1 − e²) ≈ 6 335 439 m. No path on the ellipsoid is shorter than this radius times the
/// angle it spans on the unit sphere (see [`BoundingBox::around`]).
const MIN_CURVATURE_RADIUS: f64 = WGS84_A * (1.0 - WGS84_F * (2.0 - WGS84_F));
/// Added to the radius before the box is drawn, so that rounding in the box and in the
/// distance can never put a point within the radius outside the box. A metre costs the
/// prefilter nothing.
const BOX_MARGIN_METERS: f64 = 1.0;

/// Why a coordinate or radius was refused. Each names the request field it concerns.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GeoError {
    /// NaN or an infinity.
    #[error("{field} must be a finite number of degrees, got {value}")]
    NotFinite {
        /// The field: `latitude` or `longitude`.
        field: &'static str,
        /// What was sent.
        value: f64,
    },
    /// A finite number outside the field's range.
    #[error("{field} must be from {min} to {max} degrees, got {value}")]
    OutOfRange {
        /// The field: `latitude` or `longitude`.
        field: &'static str,
        /// What was sent.
        value: f64,
        /// The smallest value allowed.
        min: f64,
        /// The largest value allowed.
        max: f64,
    },
    /// A radius of 0 or above [`MAX_RADIUS_METERS`].
    #[error("radius_meters must be 1 to {MAX_RADIUS_METERS}, got {0}")]
    Radius(u32),
}

impl GeoError {
    /// The request field this error is about, for a `BadRequest` field violation (a caller
    /// that nests coordinates, as `Location` does, prefixes its own path).
    pub fn field(&self) -> &'static str {
        match self {
            GeoError::NotFinite { field, .. } | GeoError::OutOfRange { field, .. } => field,
            GeoError::Radius(_) => "radius_meters",
        }
    }
}

/// A point on Earth in WGS 84 degrees; holding one proves both values are finite and in range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coordinates {
    latitude: f64,
    longitude: f64,
}

impl Coordinates {
    /// The point, if latitude is within [-90, 90] and longitude within [-180, 180]. Both are
    /// checked, so every wrong field is reported, not only the first.
    pub fn new(latitude: f64, longitude: f64) -> Result<Self, Vec<GeoError>> {
        let errors: Vec<GeoError> = [
            check_degrees("latitude", latitude, 90.0).err(),
            check_degrees("longitude", longitude, 180.0).err(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if errors.is_empty() {
            Ok(Self {
                latitude,
                longitude,
            })
        } else {
            Err(errors)
        }
    }

    /// Degrees north, -90 to 90.
    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    /// Degrees east, -180 to 180.
    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// Geodesic distance to `other` on WGS 84, in meters: never negative, and the same in
    /// both directions (to the last bit: the pair is put in one order before computing).
    pub fn distance_to(&self, other: &Coordinates) -> f64 {
        let (a, b) = if self.key().cmp(&other.key()) == Ordering::Greater {
            (other, self)
        } else {
            (self, other)
        };
        let meters: f64 =
            Geodesic::wgs84().inverse(a.latitude, a.longitude, b.latitude, b.longitude);
        meters.max(0.0)
    }

    /// A total order on points, used only to make distance symmetric.
    fn key(&self) -> (u64, u64) {
        (self.latitude.to_bits(), self.longitude.to_bits())
    }
}

fn check_degrees(field: &'static str, value: f64, limit: f64) -> Result<f64, GeoError> {
    if !value.is_finite() {
        return Err(GeoError::NotFinite { field, value });
    }
    if !(-limit..=limit).contains(&value) {
        return Err(GeoError::OutOfRange {
            field,
            value,
            min: -limit,
            max: limit,
        });
    }
    Ok(value)
}

impl TryFrom<&Location> for Coordinates {
    type Error = Vec<GeoError>;

    fn try_from(location: &Location) -> Result<Self, Self::Error> {
        Coordinates::new(location.latitude, location.longitude)
    }
}

impl TryFrom<Location> for Coordinates {
    type Error = Vec<GeoError>;

    fn try_from(location: Location) -> Result<Self, Self::Error> {
        Coordinates::try_from(&location)
    }
}

impl From<Coordinates> for Location {
    fn from(coordinates: Coordinates) -> Self {
        Location {
            latitude: coordinates.latitude,
            longitude: coordinates.longitude,
        }
    }
}

/// A search radius: whole meters, 1 to [`MAX_RADIUS_METERS`] (finite by its type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Radius(u32);

impl Radius {
    /// The radius, if it is 1 to [`MAX_RADIUS_METERS`] meters.
    pub fn from_meters(meters: u32) -> Result<Self, GeoError> {
        if (1..=MAX_RADIUS_METERS).contains(&meters) {
            Ok(Self(meters))
        } else {
            Err(GeoError::Radius(meters))
        }
    }

    /// The radius in meters.
    pub fn meters(&self) -> u32 {
        self.0
    }
}

/// Where FindKiosks looks: a checked centre and radius, from the request's `latitude`,
/// `longitude` and `radius_meters`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchArea {
    /// The point asked about.
    pub center: Coordinates,
    /// How far from it a kiosk may be.
    pub radius: Radius,
}

impl SearchArea {
    /// The area, or every field that is wrong (for one `INVALID_ARGUMENT` naming them all).
    pub fn new(latitude: f64, longitude: f64, radius_meters: u32) -> Result<Self, Vec<GeoError>> {
        let center = Coordinates::new(latitude, longitude);
        let radius = Radius::from_meters(radius_meters);
        match (center, radius) {
            (Ok(center), Ok(radius)) => Ok(Self { center, radius }),
            (center, radius) => Err(center
                .err()
                .unwrap_or_default()
                .into_iter()
                .chain(radius.err())
                .collect()),
        }
    }

    /// The box to prefilter with; see [`BoundingBox::around`].
    pub fn bounding_box(&self) -> BoundingBox {
        BoundingBox::around(self.center, self.radius)
    }
}

/// Longitudes from `west` to `east` inclusive, in degrees, with `west <= east`; never wraps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LongitudeRange {
    /// The western edge, -180 to 180.
    pub west: f64,
    /// The eastern edge, -180 to 180, not less than `west`.
    pub east: f64,
}

impl LongitudeRange {
    /// Every longitude.
    pub const ALL: LongitudeRange = LongitudeRange {
        west: -180.0,
        east: 180.0,
    };

    fn contains(&self, longitude: f64) -> bool {
        (self.west..=self.east).contains(&longitude)
    }
}

/// The longitudes a box spans: one range, or two when it crosses the antimeridian (±180°).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Longitudes {
    One(LongitudeRange),
    Two([LongitudeRange; 2]),
}

/// A latitude/longitude box that holds every point within a radius of a centre (and some
/// more): what the SQL prefilter asks for, as
/// `latitude BETWEEN south AND north AND (longitude BETWEEN west AND east [OR ...])`, one
/// `BETWEEN` per range, so an index on (latitude, longitude) serves it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundingBox {
    south: f64,
    north: f64,
    longitudes: Longitudes,
}

impl BoundingBox {
    /// The box around the circle of `radius` about `center`.
    ///
    /// It is a superset of the circle, so the prefilter never misses a kiosk:
    /// - On WGS 84 a path's length is `ds² = M² dφ² + N² cos²φ dλ²` with the meridian radius
    ///   `M ≥ a(1 − e²)` and the normal radius `N ≥ a`, so every path is at least
    ///   [`MIN_CURVATURE_RADIUS`] times as long as the path with the same latitudes and
    ///   longitudes on the unit sphere. A point within `r` meters therefore lies within the
    ///   angle `δ = r / MIN_CURVATURE_RADIUS` of the centre on that sphere (δ is drawn a metre
    ///   wider, against rounding).
    /// - On the sphere, latitude changes by at most δ; longitude by at most
    ///   `asin(sin δ / cos φ)` while the circle does not hold a pole.
    /// - Latitude is clamped at the poles. When the circle holds a pole (|φ| + δ ≥ 90°) every
    ///   longitude is in the box.
    /// - A longitude range that passes ±180° is split in two: [west, 180] and [-180, east].
    pub fn around(center: Coordinates, radius: Radius) -> Self {
        Self::around_meters(center, f64::from(radius.meters()))
    }

    /// [`BoundingBox::around`] for any radius in meters (tests draw wider circles than the
    /// contract allows, to reach the poles and the antimeridian more often).
    fn around_meters(center: Coordinates, meters: f64) -> Self {
        let delta = (meters + BOX_MARGIN_METERS) / MIN_CURVATURE_RADIUS;
        let phi = center.latitude.to_radians();
        let south = (phi - delta).to_degrees().max(-90.0);
        let north = (phi + delta).to_degrees().min(90.0);
        let all = Self {
            south,
            north,
            longitudes: Longitudes::One(LongitudeRange::ALL),
        };
        if phi.abs() + delta >= std::f64::consts::FRAC_PI_2 {
            return all;
        }
        let ratio = delta.sin() / phi.cos();
        if ratio >= 1.0 {
            return all;
        }
        let spread = ratio.asin().to_degrees();
        if spread >= 180.0 {
            return all;
        }
        let west = center.longitude - spread;
        let east = center.longitude + spread;
        let longitudes = if west < -180.0 {
            Longitudes::Two([
                LongitudeRange {
                    west: west + 360.0,
                    east: 180.0,
                },
                LongitudeRange { west: -180.0, east },
            ])
        } else if east > 180.0 {
            Longitudes::Two([
                LongitudeRange { west, east: 180.0 },
                LongitudeRange {
                    west: -180.0,
                    east: east - 360.0,
                },
            ])
        } else {
            Longitudes::One(LongitudeRange { west, east })
        };
        Self {
            south,
            north,
            longitudes,
        }
    }

    /// The southern edge, degrees (-90 at the lowest).
    pub fn south(&self) -> f64 {
        self.south
    }

    /// The northern edge, degrees (90 at the highest).
    pub fn north(&self) -> f64 {
        self.north
    }

    /// One range, or two when the box crosses the antimeridian; [`LongitudeRange::ALL`] alone
    /// when the circle holds a pole. A point is in the box when its longitude is in any of them.
    pub fn longitude_ranges(&self) -> &[LongitudeRange] {
        match &self.longitudes {
            Longitudes::One(range) => std::slice::from_ref(range),
            Longitudes::Two(ranges) => ranges,
        }
    }

    /// Whether the point is in the box (what the SQL prefilter would answer).
    pub fn contains(&self, point: Coordinates) -> bool {
        (self.south..=self.north).contains(&point.latitude)
            && self
                .longitude_ranges()
                .iter()
                .any(|range| range.contains(point.longitude))
    }
}

/// The candidates within `radius` of `center` (inclusive), each with its distance in meters,
/// nearest first; equal distances in the order of the candidates' keys.
pub fn nearest_first<T: Ord>(
    center: Coordinates,
    radius: Radius,
    candidates: impl IntoIterator<Item = (T, Coordinates)>,
) -> Vec<(T, f64)> {
    let limit = f64::from(radius.meters());
    let mut within: Vec<(T, f64)> = candidates
        .into_iter()
        .map(|(key, point)| (key, center.distance_to(&point)))
        .filter(|(_, meters)| *meters <= limit)
        .collect();
    within.sort_by(|(a_key, a_meters), (b_key, b_meters)| {
        a_meters.total_cmp(b_meters).then_with(|| a_key.cmp(b_key))
    });
    within
}

#[cfg(test)]
mod tests {
    use super::*;
    use geographiclib_rs::DirectGeodesic;
    use proptest::prelude::*;

    fn at(latitude: f64, longitude: f64) -> Coordinates {
        Coordinates::new(latitude, longitude).unwrap()
    }

    fn radius(meters: u32) -> Radius {
        Radius::from_meters(meters).unwrap()
    }

    /// Haversine on the mean-radius sphere: an independent check of the geodesic, which it
    /// must match within 0.5 % (the sphere's error against WGS 84).
    fn haversine(a: Coordinates, b: Coordinates) -> f64 {
        let (p1, p2) = (a.latitude.to_radians(), b.latitude.to_radians());
        let dp = p2 - p1;
        let dl = (b.longitude - a.longitude).to_radians();
        let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * 6_371_008.8 * h.sqrt().min(1.0).asin()
    }

    const BERLIN: &[(&str, f64, f64)] = &[
        ("alexanderplatz", 52.5219, 13.4132),
        ("gesundbrunnen", 52.5487, 13.3884),
        ("hauptbahnhof", 52.5251, 13.3694),
        ("ostbahnhof", 52.5105, 13.4346),
        ("spandau", 52.5344, 13.1968),
        ("suedkreuz", 52.4754, 13.3655),
        ("zoologischer-garten", 52.5069, 13.3325),
    ];

    #[test]
    fn out_of_range_or_non_finite_coordinates_are_refused_naming_each_field() {
        let cases: &[(f64, f64, &[&str])] = &[
            (90.0, 180.0, &[]),
            (-90.0, -180.0, &[]),
            (0.0, 0.0, &[]),
            (90.000_001, 0.0, &["latitude"]),
            (-91.0, 0.0, &["latitude"]),
            (0.0, 180.5, &["longitude"]),
            (0.0, -181.0, &["longitude"]),
            (f64::NAN, 0.0, &["latitude"]),
            (0.0, f64::INFINITY, &["longitude"]),
            (f64::NEG_INFINITY, f64::NAN, &["latitude", "longitude"]),
            (100.0, 200.0, &["latitude", "longitude"]),
        ];
        for &(latitude, longitude, fields) in cases {
            let named: Vec<&str> = match Coordinates::new(latitude, longitude) {
                Ok(_) => vec![],
                Err(errors) => errors.iter().map(GeoError::field).collect(),
            };
            assert_eq!(named, fields, "({latitude}, {longitude})");
        }
        let nan = Coordinates::new(f64::NAN, 0.0).unwrap_err();
        assert!(matches!(nan[0], GeoError::NotFinite { .. }));
        let location = Location {
            latitude: 52.52,
            longitude: 13.41,
        };
        let checked = Coordinates::try_from(&location).unwrap();
        assert_eq!(Location::from(checked), location);
    }

    #[test]
    fn the_radius_is_one_meter_to_the_contracts_fifty_kilometres() {
        assert_eq!(Radius::from_meters(0), Err(GeoError::Radius(0)));
        assert_eq!(Radius::from_meters(1).map(|r| r.meters()), Ok(1));
        assert_eq!(Radius::from_meters(50_000).map(|r| r.meters()), Ok(50_000));
        assert_eq!(Radius::from_meters(50_001), Err(GeoError::Radius(50_001)));
        assert_eq!(GeoError::Radius(0).field(), "radius_meters");
    }

    #[test]
    fn a_search_area_reports_every_wrong_field_at_once() {
        let errors = SearchArea::new(f64::NAN, 181.0, 0).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(GeoError::field).collect();
        assert_eq!(fields, ["latitude", "longitude", "radius_meters"]);
        let area = SearchArea::new(52.52, 13.41, 5_000).unwrap();
        assert!(area.bounding_box().contains(area.center));
    }

    #[test]
    fn distances_match_known_wgs84_lengths() {
        // (from, to, meters, tolerance): degree lengths and the quarter meridian of WGS 84.
        let cases = [
            (at(0.0, 0.0), at(0.0, 1.0), 111_319.491, 0.01),
            (at(0.0, 0.0), at(1.0, 0.0), 110_574.389, 0.01),
            (at(0.0, 0.0), at(90.0, 0.0), 10_001_965.729, 0.01),
            (at(-90.0, 0.0), at(90.0, 123.0), 20_003_931.459, 0.01),
            (at(52.5, 13.4), at(52.5, 13.4), 0.0, 0.0),
        ];
        for (from, to, meters, tolerance) in cases {
            let got = from.distance_to(&to);
            assert!(
                (got - meters).abs() <= tolerance,
                "{from:?} → {to:?}: {got}"
            );
        }
    }

    #[test]
    fn distances_agree_with_haversine_within_the_spheres_error() {
        let pairs = [
            (at(52.5219, 13.4132), at(48.8566, 2.3522)), // Berlin – Paris
            (at(51.5074, -0.1278), at(40.7128, -74.0060)), // London – New York
            (at(-33.8688, 151.2093), at(-36.8485, 174.7633)), // Sydney – Auckland
            (at(-18.1416, 178.4419), at(-16.8, -179.9)), // Suva – Taveuni across ±180
        ];
        for (a, b) in pairs {
            let (geodesic, sphere) = (a.distance_to(&b), haversine(a, b));
            assert!((geodesic - sphere).abs() / sphere < 0.005, "{a:?} {b:?}");
        }
    }

    #[test]
    fn berlin_stations_come_nearest_first_and_stop_at_the_radius() {
        let stations = BERLIN.iter().map(|&(name, lat, lon)| (name, at(lat, lon)));
        let found = nearest_first(at(52.5219, 13.4132), radius(6_000), stations);
        let names: Vec<&str> = found.iter().map(|(name, _)| *name).collect();
        // Südkreuz (≈ 6.1 km) and Spandau (≈ 14.7 km) are beyond 6 km.
        assert_eq!(
            names,
            [
                "alexanderplatz",
                "ostbahnhof",
                "hauptbahnhof",
                "gesundbrunnen",
                "zoologischer-garten"
            ]
        );
        assert_eq!(found[0].1, 0.0);
        assert!(found.windows(2).all(|w| w[0].1 <= w[1].1));
        let boxed = BoundingBox::around(at(52.5219, 13.4132), radius(6_000));
        assert_eq!(boxed.longitude_ranges().len(), 1);
        for &(name, lat, lon) in BERLIN {
            if found.iter().any(|(found, _)| *found == name) {
                assert!(boxed.contains(at(lat, lon)), "{name}");
            }
        }
    }

    #[test]
    fn equal_distances_are_ordered_by_key() {
        let center = at(0.0, 0.0);
        let candidates = [
            ("west", at(0.0, -0.1)),
            ("east", at(0.0, 0.1)),
            ("far", at(0.0, 0.2)),
            ("centre", center),
        ];
        let found = nearest_first(center, radius(50_000), candidates);
        let names: Vec<&str> = found.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["centre", "east", "west", "far"]);
    }

    #[test]
    fn the_edge_of_the_radius_at_the_equator() {
        let center = at(0.0, 0.0);
        let candidates = [
            ("east-in", at(0.0, 0.449)),   // ≈ 49 982 m
            ("east-out", at(0.0, 0.45)),   // ≈ 50 094 m
            ("north-in", at(0.45, 0.0)),   // ≈ 49 758 m
            ("south-out", at(-0.46, 0.0)), // ≈ 50 864 m
        ];
        let found = nearest_first(center, radius(50_000), candidates);
        let names: Vec<&str> = found.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["north-in", "east-in"]);
        let boxed = BoundingBox::around(center, radius(50_000));
        assert!(boxed.contains(at(0.0, 0.449)) && boxed.contains(at(0.45, 0.0)));
        assert!(!boxed.contains(at(1.0, 0.0)) && !boxed.contains(at(0.0, -1.0)));
    }

    #[test]
    fn across_the_antimeridian_in_fiji_the_box_splits_in_two() {
        // Taveuni straddles ±180°: a kiosk on either side of the line is found from the other.
        let west_of_line = at(-16.8, 179.9);
        let east_of_line = at(-16.8, -179.9);
        let found = nearest_first(west_of_line, radius(50_000), [("taveuni", east_of_line)]);
        assert_eq!(found.len(), 1);
        assert!((found[0].1 - 21_300.0).abs() < 200.0, "{}", found[0].1);

        for (center, other) in [(west_of_line, east_of_line), (east_of_line, west_of_line)] {
            let boxed = BoundingBox::around(center, radius(50_000));
            let ranges = boxed.longitude_ranges();
            assert_eq!(ranges.len(), 2, "{center:?}");
            assert!(ranges.iter().all(|r| r.west <= r.east));
            assert!(ranges.iter().any(|r| r.east == 180.0));
            assert!(ranges.iter().any(|r| r.west == -180.0));
            assert!(boxed.contains(other) && boxed.contains(center));
            assert!(boxed.contains(at(-16.8, 180.0)) && boxed.contains(at(-16.8, -180.0)));
            assert!(!boxed.contains(at(-16.8, 0.0)));
        }
        // Exactly on the line, both ways round.
        for longitude in [180.0, -180.0] {
            let boxed = BoundingBox::around(at(-17.0, longitude), radius(10_000));
            assert_eq!(boxed.longitude_ranges().len(), 2);
            assert!(boxed.contains(at(-17.0, 179.95)) && boxed.contains(at(-17.0, -179.95)));
        }
        // Suva is 170 km away: outside the box and the radius.
        let suva = at(-18.1416, 178.4419);
        assert!(!BoundingBox::around(east_of_line, radius(50_000)).contains(suva));
    }

    #[test]
    fn a_circle_holding_a_pole_covers_every_longitude() {
        // (centre, a kiosk across the pole, its distance)
        let cases = [
            (at(89.9, 0.0), at(89.9, 180.0), 22_300.0),
            (at(-90.0, 0.0), at(-89.8, 45.0), 22_300.0),
            (at(-89.9, -170.0), at(-89.9, 10.0), 22_300.0),
        ];
        for (center, kiosk, meters) in cases {
            let boxed = BoundingBox::around(center, radius(50_000));
            assert_eq!(
                boxed.longitude_ranges(),
                [LongitudeRange::ALL],
                "{center:?}"
            );
            assert!(boxed.north() <= 90.0 && boxed.south() >= -90.0);
            assert!(boxed.north() == 90.0 || boxed.south() == -90.0);
            assert!(boxed.contains(kiosk));
            let found = nearest_first(center, radius(50_000), [("kiosk", kiosk)]);
            assert_eq!(found.len(), 1, "{center:?}");
            assert!((found[0].1 - meters).abs() < 200.0, "{}", found[0].1);
        }
    }

    #[test]
    fn near_but_not_over_a_pole_the_longitudes_widen() {
        // At 89° N a 50 km circle spans about ±27° of longitude; the box must hold a kiosk 25°
        // round the parallel (≈ 48 km away) and leave out one 40° round.
        let center = at(89.0, 10.0);
        let boxed = BoundingBox::around(center, radius(50_000));
        assert_eq!(boxed.longitude_ranges().len(), 1);
        assert!(boxed.north() < 90.0);
        let inside = at(89.0, 35.0);
        assert!(center.distance_to(&inside) <= 50_000.0);
        assert!(boxed.contains(inside));
        assert!(!boxed.contains(at(89.0, 50.0)));
        // Near the antimeridian as well: the wide span splits.
        let boxed = BoundingBox::around(at(-89.0, 170.0), radius(50_000));
        assert_eq!(boxed.longitude_ranges().len(), 2);
        assert!(boxed.contains(at(-89.0, -165.0)));
    }

    /// Centres anywhere, and often near a pole or the antimeridian, where boxes go wrong.
    fn any_center() -> impl Strategy<Value = Coordinates> {
        let latitude = prop_oneof![
            -90.0..=90.0f64,
            85.0..=90.0f64,
            -90.0..=-85.0f64,
            Just(90.0),
            Just(-90.0),
            Just(0.0),
        ];
        let longitude = prop_oneof![
            -180.0..=180.0f64,
            175.0..=180.0f64,
            -180.0..=-175.0f64,
            Just(180.0),
            Just(-180.0),
        ];
        (latitude, longitude).prop_map(|(lat, lon)| at(lat, lon))
    }

    /// How far along the radius to walk: anywhere, and often right at its edge.
    fn any_fraction() -> impl Strategy<Value = f64> {
        prop_oneof![0.0..=1.0f64, Just(1.0), Just(1.0 - 1e-9)]
    }

    /// Which way to walk: any bearing, and often due north, east, south or west, where the
    /// box is tightest.
    fn any_azimuth() -> impl Strategy<Value = f64> {
        prop_oneof![
            -180.0..180.0f64,
            Just(0.0),
            Just(90.0),
            Just(180.0),
            Just(-90.0)
        ]
    }

    fn any_point() -> impl Strategy<Value = Coordinates> {
        (-90.0..=90.0f64, -180.0..=180.0f64).prop_map(|(lat, lon)| at(lat, lon))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// A point reached by walking at most the radius from the centre, in any direction,
        /// is in the box: the prefilter never misses a kiosk.
        #[test]
        fn a_point_within_the_radius_is_always_in_the_box(
            center in any_center(),
            meters in 1..=MAX_RADIUS_METERS,
            fraction in any_fraction(),
            azimuth in any_azimuth(),
        ) {
            let walked = f64::from(meters) * fraction;
            let (lat, lon): (f64, f64) =
                Geodesic::wgs84().direct(center.latitude, center.longitude, azimuth, walked);
            let point = Coordinates::new(lat, lon.clamp(-180.0, 180.0));
            prop_assume!(point.is_ok());
            let point = point.unwrap();
            let boxed = BoundingBox::around(center, radius(meters));
            if center.distance_to(&point) <= f64::from(meters) {
                prop_assert!(boxed.contains(point), "{center:?} {meters} {point:?} {boxed:?}");
            }
            for range in boxed.longitude_ranges() {
                prop_assert!(range.west <= range.east);
                prop_assert!(LongitudeRange::ALL.contains(range.west));
                prop_assert!(LongitudeRange::ALL.contains(range.east));
            }
        }

        /// The same for circles up to 3 000 km, which reach over poles and the antimeridian.
        #[test]
        fn a_point_within_a_wide_circle_is_in_its_box(
            center in any_center(),
            meters in 1.0..3_000_000.0f64,
            fraction in any_fraction(),
            azimuth in any_azimuth(),
        ) {
            let (lat, lon): (f64, f64) =
                Geodesic::wgs84().direct(center.latitude, center.longitude, azimuth, meters * fraction);
            let point = Coordinates::new(lat, lon.clamp(-180.0, 180.0));
            prop_assume!(point.is_ok());
            let point = point.unwrap();
            let boxed = BoundingBox::around_meters(center, meters);
            if center.distance_to(&point) <= meters {
                prop_assert!(boxed.contains(point), "{center:?} {meters} {point:?} {boxed:?}");
            }
        }

        /// Random pairs: whatever is within the radius is in the box, and whatever
        /// `nearest_first` keeps is within the radius, nearest first.
        #[test]
        fn random_points_within_the_radius_are_in_the_box(
            center in any_center(),
            meters in 1..=MAX_RADIUS_METERS,
            points in proptest::collection::vec(any_point(), 0..20),
        ) {
            let boxed = BoundingBox::around(center, radius(meters));
            let found = nearest_first(center, radius(meters), points.iter().copied().enumerate());
            for (index, point) in points.iter().enumerate() {
                let within = center.distance_to(point) <= f64::from(meters);
                prop_assert_eq!(within, found.iter().any(|(i, _)| *i == index));
                prop_assert!(!within || boxed.contains(*point));
            }
            prop_assert!(found.windows(2).all(|w| w[0].1 <= w[1].1));
        }

        /// Distance is never negative, zero to itself, and the same both ways.
        #[test]
        fn distance_is_symmetric_and_non_negative(a in any_point(), b in any_center()) {
            let there = a.distance_to(&b);
            prop_assert!(there >= 0.0 && there.is_finite());
            prop_assert_eq!(there.to_bits(), b.distance_to(&a).to_bits());
            prop_assert_eq!(a.distance_to(&a), 0.0);
            // Never more than half a meridian's round trip.
            prop_assert!(there <= 20_003_932.0);
        }
    }
}
