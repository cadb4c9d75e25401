//! The spatial index's grid: a quadtree over longitude [-180, 180] and latitude [-90, 90].
//! A geometry is filed under the cells of the finest level at which its bounding box spans at
//! most two cells on each axis (at most four cells; a point, one cell of the finest level),
//! each cell keyed by its level and its Morton code (x and y bits interleaved), so the cells
//! of one coarser cell lie in one run of keys. A query reads, at every level, the runs of the
//! few coarse cells that cover its own bounding box (grown by a distance, for the distance
//! queries): every geometry whose box meets that box is among what it reads; the executor
//! then checks the relation itself on each candidate.

use geo::{BoundingRect, Coord, Geometry, Rect};

/// The finest level: cells of 360/2^18 degrees (about 150 m of latitude).
pub const MAX_LEVEL: u8 = 18;
/// Cells on each axis a query's box is covered with at one level, at most (so at most 16
/// runs a level).
const COVER_SPAN: u64 = 4;
/// Slack added to grown boxes, in degrees, against rounding.
const SLACK: f64 = 1e-9;

fn cell_x(lon: f64, level: u8) -> u64 {
    let n = 1u64 << level;
    (((lon + 180.0) / 360.0 * n as f64).floor().max(0.0) as u64).min(n - 1)
}

fn cell_y(lat: f64, level: u8) -> u64 {
    let n = 1u64 << level;
    (((lat + 90.0) / 180.0 * n as f64).floor().max(0.0) as u64).min(n - 1)
}

/// `x` and `y` (each under 2^32) with their bits interleaved: x in the even bits.
fn morton(x: u64, y: u64) -> u64 {
    fn spread(mut v: u64) -> u64 {
        v &= 0xFFFF_FFFF;
        v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
        v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
        v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        (v | (v << 1)) & 0x5555_5555_5555_5555
    }
    spread(x) | (spread(y) << 1)
}

/// The cells of `level` a box spans: `(x0..=x1, y0..=y1)`.
fn span(r: &Rect<f64>, level: u8) -> (u64, u64, u64, u64) {
    (
        cell_x(r.min().x, level),
        cell_x(r.max().x, level),
        cell_y(r.min().y, level),
        cell_y(r.max().y, level),
    )
}

/// Where a geometry is filed: its level and the Morton codes of its cells there. `None` for
/// a geometry with no box (none a column can hold).
pub fn cells_of(g: &Geometry<f64>) -> Option<(u8, Vec<u64>)> {
    let r = g.bounding_rect()?;
    let level = (0..=MAX_LEVEL)
        .rev()
        .find(|l| {
            let (x0, x1, y0, y1) = span(&r, *l);
            x1 - x0 < 2 && y1 - y0 < 2
        })
        .unwrap_or(0);
    let (x0, x1, y0, y1) = span(&r, level);
    let mut out = Vec::new();
    for x in x0..=x1 {
        for y in y0..=y1 {
            out.push(morton(x, y));
        }
    }
    Some((level, out))
}

/// The runs of Morton codes of `level` to read for a query whose box is `r`: each the cells
/// of `level` under one cell of a coarser level, `[start, end)`.
pub fn cover(r: &Rect<f64>, level: u8) -> Vec<(u64, u64)> {
    let coarse = (0..=level)
        .rev()
        .find(|c| {
            let (x0, x1, y0, y1) = span(r, *c);
            x1 - x0 < COVER_SPAN && y1 - y0 < COVER_SPAN
        })
        .unwrap_or(0);
    let shift = 2 * u32::from(level - coarse);
    let (x0, x1, y0, y1) = span(r, coarse);
    let mut runs = Vec::new();
    for x in x0..=x1 {
        for y in y0..=y1 {
            let p = morton(x, y);
            runs.push((p << shift, (p + 1) << shift));
        }
    }
    runs.sort_unstable();
    runs
}

/// A query geometry's box, grown by `by` (in degrees, or in meters over the sphere), clamped
/// to the globe. Growing by meters near a pole, or across the antimeridian, covers every
/// longitude.
pub fn query_box(g: &Geometry<f64>, by: Option<(f64, bool)>) -> Option<Rect<f64>> {
    let r = g.bounding_rect()?;
    let (min, max) = (r.min(), r.max());
    let (dx, dy) = match by {
        None => (0.0, 0.0),
        Some((d, false)) => (d + SLACK, d + SLACK),
        Some((d, true)) => {
            // On the sphere, two points d apart differ by at most d/R in latitude, and, both
            // within latitude ±φ, by at most 2·asin(sin(d/2R)/cos φ) in longitude.
            let half = d / (2.0 * model::spatial::EARTH_RADIUS_M);
            if half >= std::f64::consts::FRAC_PI_2 {
                return Some(Rect::new(
                    Coord {
                        x: -180.0,
                        y: -90.0,
                    },
                    Coord { x: 180.0, y: 90.0 },
                ));
            }
            let dy = (2.0 * half).to_degrees() * (1.0 + 1e-9) + SLACK;
            let lat = (min.y.abs().max(max.y.abs()) + dy).min(90.0).to_radians();
            let ratio = half.sin() / lat.cos();
            let dx = match ratio < 1.0 {
                true => (2.0 * ratio.asin()).to_degrees() * (1.0 + 1e-9) + SLACK,
                false => 360.0,
            };
            (dx, dy)
        }
    };
    let wraps = matches!(by, Some((_, true))) && (min.x - dx < -180.0 || max.x + dx > 180.0);
    let (x0, x1) = match wraps {
        true => (-180.0, 180.0),
        false => ((min.x - dx).max(-180.0), (max.x + dx).min(180.0)),
    };
    Some(Rect::new(
        Coord {
            x: x0,
            y: (min.y - dy).max(-90.0),
        },
        Coord {
            x: x1,
            y: (max.y + dy).min(90.0),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Intersects, Point};
    use rand::{Rng, SeedableRng};

    fn boxed(x0: f64, y0: f64, x1: f64, y1: f64) -> Geometry<f64> {
        Geometry::Rect(Rect::new(Coord { x: x0, y: y0 }, Coord { x: x1, y: y1 }))
    }

    /// Every geometry whose box meets a query's box is among the cells the query reads.
    #[test]
    fn a_query_reads_every_cell_a_meeting_geometry_is_filed_under() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let random_box = |rng: &mut rand::rngs::StdRng| {
            let size: f64 = [0.0, 0.001, 0.1, 3.0, 40.0][rng.gen_range(0..5)];
            let x = rng.gen_range(-180.0..180.0 - size);
            let y = rng.gen_range(-90.0..90.0 - size.min(179.0));
            boxed(x, y, x + size, (y + size).min(90.0))
        };
        for _ in 0..3000 {
            let stored = random_box(&mut rng);
            let query = random_box(&mut rng);
            let qr = query_box(&query, None).unwrap();
            if !stored.bounding_rect().unwrap().intersects(&qr) {
                continue;
            }
            let (level, cells) = cells_of(&stored).unwrap();
            assert!(cells.len() <= 4);
            let runs = cover(&qr, level);
            assert!(runs.len() <= 16);
            assert!(
                cells
                    .iter()
                    .any(|c| runs.iter().any(|(s, e)| s <= c && c < e)),
                "{stored:?} filed at level {level} {cells:?}, query {qr:?} reads {runs:?}"
            );
        }
        let (level, cells) = cells_of(&Geometry::Point(Point::new(180.0, 90.0))).unwrap();
        assert_eq!((level, cells.len()), (MAX_LEVEL, 1));
    }

    #[test]
    fn boxes_grow_by_distances() {
        let p = Geometry::Point(Point::new(10.0, 50.0));
        let r = query_box(&p, Some((1.0, false))).unwrap();
        assert!((r.min().x - 9.0).abs() < 1e-6 && (r.max().y - 51.0).abs() < 1e-6);
        // 111.2 km is a degree of latitude, and more than one of longitude at 50°N.
        let r = query_box(&p, Some((111_195.0, true))).unwrap();
        assert!((r.max().y - 51.0).abs() < 1e-3 && r.max().x > 11.5, "{r:?}");
        // Every point within d meters of another lies in the other's box grown by d.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20_000 {
            let a: Point<f64> =
                Point::new(rng.gen_range(-180.0..180.0), rng.gen_range(-90.0..90.0));
            let b = match rng.gen_bool(0.5) {
                true => Point::new(rng.gen_range(-180.0..180.0), rng.gen_range(-90.0..90.0)),
                false => Point::new(
                    (a.x() + rng.gen_range(-3.0f64..3.0)).clamp(-180.0, 180.0),
                    (a.y() + rng.gen_range(-3.0f64..3.0)).clamp(-90.0, 90.0),
                ),
            };
            let d = model::spatial::sphere_distance(a, b);
            let r = query_box(&Geometry::Point(a), Some((d, true))).unwrap();
            assert!(r.intersects(&b), "{a:?} {b:?} {d} {r:?}");
        }
        let r = query_box(
            &Geometry::Point(Point::new(179.5, 0.0)),
            Some((200_000.0, true)),
        )
        .unwrap();
        assert_eq!((r.min().x, r.max().x), (-180.0, 180.0));
    }
}
