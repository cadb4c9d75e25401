//! Spatial columns (`point`, `line`, `polygon`) and the queries on them, as Appwrite 1.8+
//! has them: values are the nested coordinate arrays the SDKs send (`[x, y]` with x the
//! longitude; a line is an array of points; a polygon an array of closed rings, or one bare
//! ring), checked as Appwrite checks them; queries relate a column's geometry to the one the
//! query names — MariaDB's `ST_Intersects`, `ST_Crosses`, `ST_Overlaps`, `ST_Touches`,
//! `ST_Contains`, `ST_Equals` (the column first), planar `ST_Distance` in coordinate units, or
//! `ST_Distance_Sphere` in meters between points — computed with the `geo` crate's DE-9IM
//! relate, which is exact (robust predicates), and distances from IEEE's exact operations and
//! `libm`'s software functions alone, so a bulk change by a spatial query picks the same rows
//! on every replica.

use crate::value::Value;
use geo::{Coord, CoordsIter, Geometry, Intersects, LineString, Point, Polygon, Relate};
use serde::{Deserialize, Serialize};

/// The kind of geometry a spatial column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Point,
    Line,
    Polygon,
}

impl Shape {
    /// Appwrite's name for it (the column `type`, and its messages).
    pub fn name(self) -> &'static str {
        match self {
            Shape::Point => "point",
            Shape::Line => "linestring",
            Shape::Polygon => "polygon",
        }
    }
}

/// A relation between a column's geometry and a query's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Relation {
    Intersects,
    Crosses,
    Overlaps,
    Touches,
    /// The column's geometry contains the query's.
    Contains,
    Equals,
    /// The distance between them compared with `distance`: in the coordinates' units, or in
    /// meters over a sphere of the Earth's mean radius (points only).
    Distance {
        cmp: DistanceCmp,
        distance: f64,
        meters: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DistanceCmp {
    Equal,
    NotEqual,
    GreaterThan,
    LessThan,
}

/// MariaDB's `ST_Distance_Sphere` radius, as Appwrite passes it.
pub const EARTH_RADIUS_M: f64 = 6_371_000.0;

fn number(v: &Value) -> Option<f64> {
    v.as_f64().filter(|f| f.is_finite())
}

fn range(x: f64, y: f64) -> Result<(), String> {
    if !(-180.0..=180.0).contains(&x) {
        return Err(format!(
            "Longitude (x) must be between -180 and 180, got {x}"
        ));
    }
    if !(-90.0..=90.0).contains(&y) {
        return Err(format!("Latitude (y) must be between -90 and 90, got {y}"));
    }
    Ok(())
}

fn pair(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(p) if p.len() == 2 => Some(p),
        _ => None,
    }
}

fn check_point(v: &Value) -> Result<(), String> {
    let p = pair(v).ok_or("Point must be an array of two numeric values [x, y]")?;
    match (number(&p[0]), number(&p[1])) {
        (Some(x), Some(y)) => range(x, y),
        _ => Err("Point coordinates must be numeric values".into()),
    }
}

fn check_line(v: &Value) -> Result<(), String> {
    let points = match v {
        Value::Array(points) if points.len() >= 2 => points,
        _ => return Err("LineString must contain at least two points".into()),
    };
    for (i, p) in points.iter().enumerate() {
        let p = pair(p).ok_or("Each point in LineString must be an array of two values [x, y]")?;
        let (Some(x), Some(y)) = (number(&p[0]), number(&p[1])) else {
            return Err("Each point in LineString must have numeric coordinates".into());
        };
        range(x, y).map_err(|e| format!("Invalid coordinates at point #{i}: {e}"))?;
    }
    Ok(())
}

/// Is `v` a bare ring (an array of points) rather than an array of rings?
fn is_bare_ring(v: &[Value]) -> bool {
    v.first()
        .and_then(pair)
        .is_some_and(|p| !matches!(p[0], Value::Array(_)))
}

fn check_polygon(v: &Value) -> Result<Value, String> {
    let rings = match v {
        Value::Array(rings) if !rings.is_empty() => rings,
        _ => return Err("Polygon must contain at least one ring".into()),
    };
    let rings = match is_bare_ring(rings) {
        true => vec![v.clone()],
        false => rings.clone(),
    };
    for (r, ring) in rings.iter().enumerate() {
        let points = match ring {
            Value::Array(points) if !points.is_empty() => points,
            _ => return Err(format!("Ring #{r} must be an array of points")),
        };
        if points.len() < 4 {
            return Err(format!(
                "Ring #{r} must contain at least 4 points to form a closed polygon"
            ));
        }
        for (i, p) in points.iter().enumerate() {
            let p = pair(p).ok_or_else(|| {
                format!("Point #{i} in ring #{r} must be an array of two values [x, y]")
            })?;
            let (Some(x), Some(y)) = (number(&p[0]), number(&p[1])) else {
                return Err(format!(
                    "Coordinates of point #{i} in ring #{r} must be numeric"
                ));
            };
            range(x, y)
                .map_err(|e| format!("Invalid coordinates at point #{i} in ring #{r}: {e}"))?;
        }
        // Compared as given, types included (Appwrite's `!==`): [0,0] does not close [0.0,0].
        if points.first() != points.last() {
            return Err(format!(
                "Ring #{r} must be closed (first point must equal last point)"
            ));
        }
    }
    Ok(Value::Array(rings))
}

/// Checks a value for a column of `shape`; answers it as stored (a bare polygon ring wrapped
/// as the polygon's one ring), or why not, in Appwrite's words.
pub fn check(shape: Shape, v: &Value) -> Result<Value, String> {
    let checked = match shape {
        Shape::Point => check_point(v).map(|_| v.clone()),
        Shape::Line => check_line(v).map(|_| v.clone()),
        Shape::Polygon => check_polygon(v),
    };
    checked.map_err(|e| format!("Value must be a valid {}: {e}", shape.name()))
}

fn coord(v: &Value) -> Option<Coord<f64>> {
    let p = pair(v)?;
    Some(Coord {
        x: number(&p[0])?,
        y: number(&p[1])?,
    })
}

fn line(v: &Value) -> Option<LineString<f64>> {
    match v {
        Value::Array(points) if !points.is_empty() => points
            .iter()
            .map(coord)
            .collect::<Option<Vec<_>>>()
            .map(LineString::new),
        _ => None,
    }
}

/// The geometry a value describes, by its shape: `[x, y]` a point, an array of points a line
/// (one point: a point), an array of rings a polygon (its first ring the exterior, the others
/// holes). `None` for anything else.
pub fn geometry(v: &Value) -> Option<Geometry<f64>> {
    if let Some(c) = coord(v) {
        return Some(Geometry::Point(Point(c)));
    }
    let Value::Array(items) = v else {
        return None;
    };
    if is_bare_ring(items) {
        let l = line(v)?;
        return Some(match l.0.len() {
            1 => Geometry::Point(Point(l.0[0])),
            _ => Geometry::LineString(l),
        });
    }
    let mut rings = items
        .iter()
        .map(line)
        .collect::<Option<Vec<_>>>()?
        .into_iter();
    let exterior = rings.next()?;
    Some(Geometry::Polygon(Polygon::new(exterior, rings.collect())))
}

/// Appwrite's name for the kind of a query's geometry (its messages).
pub fn kind_name(g: &Geometry<f64>) -> &'static str {
    match g {
        Geometry::Point(_) => "point",
        Geometry::LineString(_) => "linestring",
        _ => "polygon",
    }
}

/// Whether every coordinate of `g` is a longitude and a latitude (what a query's geometry must
/// be: the spatial index's grid covers no more).
pub fn in_range(g: &Geometry<f64>) -> bool {
    g.coords_iter()
        .all(|c| (-180.0..=180.0).contains(&c.x) && (-90.0..=90.0).contains(&c.y))
}

/// A geometry's segments (a point: one of length zero).
fn segments(g: &Geometry<f64>) -> Vec<(Coord<f64>, Coord<f64>)> {
    let rings: Vec<&LineString<f64>> = match g {
        Geometry::Point(p) => return vec![(p.0, p.0)],
        Geometry::LineString(l) => vec![l],
        Geometry::Polygon(p) => std::iter::once(p.exterior()).chain(p.interiors()).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for r in rings {
        match r.0.as_slice() {
            [only] => out.push((*only, *only)),
            pts => out.extend(pts.windows(2).map(|w| (w[0], w[1]))),
        }
    }
    out
}

/// The distance from `p` to the segment `(a, b)`.
fn to_segment(p: Coord<f64>, (a, b): (Coord<f64>, Coord<f64>)) -> f64 {
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    let len2 = dx * dx + dy * dy;
    let t = match len2 > 0.0 {
        true => (((p.x - a.x) * dx + (p.y - a.y) * dy) / len2).clamp(0.0, 1.0),
        false => 0.0,
    };
    let (qx, qy) = (a.x + t * dx - p.x, a.y + t * dy - p.y);
    (qx * qx + qy * qy).sqrt()
}

/// The planar distance between two geometries (`ST_Distance`): zero where they meet, else the
/// least distance from a vertex of one to a segment of the other (where two segments do not
/// meet, their closest points include an end of one). `+ - * /` and `sqrt` only: IEEE makes
/// them exact, so every replica computes the same bits (a platform `hypot` need not).
fn planar_distance(a: &Geometry<f64>, b: &Geometry<f64>) -> f64 {
    if a.intersects(b) {
        return 0.0;
    }
    let (sa, sb) = (segments(a), segments(b));
    let mut best = f64::INFINITY;
    for (from, to) in [(&sa, &sb), (&sb, &sa)] {
        for &(p, q) in from.iter() {
            for &s in to.iter() {
                best = best.min(to_segment(p, s)).min(to_segment(q, s));
            }
        }
    }
    best
}

/// A DE-9IM relation between two geometries; `None` if the `geo` crate gives up on them (its
/// relate may panic on an invalid geometry, such as a self-crossing ring MariaDB stores): no
/// row matches then, and the apply that asked goes on.
fn related(
    column: &Geometry<f64>,
    query: &Geometry<f64>,
    test: impl FnOnce(&geo::relate::IntersectionMatrix) -> bool,
) -> Option<bool> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&column.relate(query)))).ok()
}

/// The great-circle distance between two points in meters (`ST_Distance_Sphere`), with
/// `libm`'s software trigonometry, so every replica computes the same bits.
pub fn sphere_distance(a: Point<f64>, b: Point<f64>) -> f64 {
    let (lat1, lat2) = (a.y().to_radians(), b.y().to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.x() - a.x()).to_radians();
    let (sl, so) = (libm::sin(dlat / 2.0), libm::sin(dlon / 2.0));
    let h = sl * sl + libm::cos(lat1) * libm::cos(lat2) * so * so;
    2.0 * EARTH_RADIUS_M * libm::asin(libm::sqrt(h.min(1.0)))
}

/// Does the relation hold between `column` and `query`? `None` where MariaDB's answer is
/// NULL, which neither a query nor its negation matches: `ST_Crosses` of a polygon, or with a
/// point; a distance in meters between anything but points.
pub fn holds(rel: Relation, column: &Geometry<f64>, query: &Geometry<f64>) -> Option<bool> {
    Some(match rel {
        Relation::Intersects => column.intersects(query),
        Relation::Crosses => {
            if matches!(column, Geometry::Polygon(_)) || matches!(query, Geometry::Point(_)) {
                return None;
            }
            return related(column, query, |m| m.is_crosses());
        }
        Relation::Overlaps => return related(column, query, |m| m.is_overlaps()),
        Relation::Touches => return related(column, query, |m| m.is_touches()),
        Relation::Contains => return related(column, query, |m| m.is_contains()),
        Relation::Equals => return related(column, query, |m| m.is_equal_topo()),
        Relation::Distance {
            cmp,
            distance,
            meters,
        } => {
            let d = match (meters, column, query) {
                (true, Geometry::Point(a), Geometry::Point(b)) => sphere_distance(*a, *b),
                (true, _, _) => return None,
                (false, a, b) => planar_distance(a, b),
            };
            match cmp {
                DistanceCmp::Equal => d == distance,
                DistanceCmp::NotEqual => d != distance,
                DistanceCmp::GreaterThan => d > distance,
                DistanceCmp::LessThan => d < distance,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(j: serde_json::Value) -> Value {
        Value::from_json(&j).unwrap()
    }

    #[test]
    fn values_are_checked_as_appwrite_checks_them() {
        let ok = |s: Shape, j| check(s, &v(j)).unwrap();
        let bad = |s: Shape, j| check(s, &v(j)).unwrap_err();
        assert_eq!(
            ok(Shape::Point, serde_json::json!([10, -20.5])),
            v(serde_json::json!([10, -20.5]))
        );
        assert_eq!(
            bad(Shape::Point, serde_json::json!([181, 0])),
            "Value must be a valid point: Longitude (x) must be between -180 and 180, got 181"
        );
        assert!(bad(Shape::Point, serde_json::json!([0, 91])).contains("Latitude (y)"));
        assert!(
            bad(Shape::Point, serde_json::json!([1, 2, 3])).contains("array of two numeric values")
        );
        assert!(bad(Shape::Point, serde_json::json!(["a", 2])).contains("must be numeric"));
        ok(Shape::Line, serde_json::json!([[0, 0], [1, 1]]));
        assert!(bad(Shape::Line, serde_json::json!([[0, 0]])).contains("at least two points"));
        assert!(bad(Shape::Line, serde_json::json!([[0, 0], [0, 100]]))
            .contains("Invalid coordinates at point #1"));
        let square = serde_json::json!([[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]);
        // A bare ring is the polygon's one ring.
        assert_eq!(
            ok(Shape::Polygon, square.clone()),
            v(serde_json::json!([square]))
        );
        assert!(bad(
            Shape::Polygon,
            serde_json::json!([[[0, 0], [0, 1], [0, 0]]])
        )
        .contains("at least 4 points"));
        assert!(bad(
            Shape::Polygon,
            serde_json::json!([[[0, 0], [0, 1], [1, 1], [1, 0]]])
        )
        .contains("must be closed"));
        assert!(bad(
            Shape::Polygon,
            serde_json::json!([[[0, 0], [0, 1], [1, 1], [0.0, 0]]])
        )
        .contains("must be closed"));
        assert!(bad(Shape::Polygon, serde_json::json!([])).contains("at least one ring"));
    }

    #[test]
    fn relations_follow_mariadb() {
        let g = |j| geometry(&v(j)).unwrap();
        let square = g(serde_json::json!([[
            [0, 0],
            [0, 4],
            [4, 4],
            [4, 0],
            [0, 0]
        ]]));
        let inside = g(serde_json::json!([1, 1]));
        let edge = g(serde_json::json!([0, 2]));
        let across = g(serde_json::json!([[-1, 2], [5, 2]]));
        let other = g(serde_json::json!([[
            [2, 2],
            [2, 6],
            [6, 6],
            [6, 2],
            [2, 2]
        ]]));
        assert_eq!(holds(Relation::Contains, &square, &inside), Some(true));
        assert_eq!(holds(Relation::Contains, &square, &edge), Some(false));
        assert_eq!(holds(Relation::Touches, &square, &edge), Some(true));
        assert_eq!(holds(Relation::Intersects, &square, &edge), Some(true));
        assert_eq!(holds(Relation::Overlaps, &square, &other), Some(true));
        assert_eq!(holds(Relation::Crosses, &across, &square), Some(true));
        assert_eq!(holds(Relation::Crosses, &square, &across), None);
        assert_eq!(holds(Relation::Equals, &square, &square), Some(true));
        let d = |cmp, distance, meters| Relation::Distance {
            cmp,
            distance,
            meters,
        };
        let six = g(serde_json::json!([6, 6]));
        let seven = g(serde_json::json!([7, 6]));
        assert_eq!(
            holds(d(DistanceCmp::Equal, 1.0, false), &seven, &six),
            Some(true)
        );
        assert_eq!(
            holds(d(DistanceCmp::LessThan, 1.0, false), &seven, &six),
            Some(false)
        );
        // Planar distances: vertex to edge, inside (zero), edge to edge.
        let dist = |a, b| planar_distance(&g(a), &g(b));
        assert_eq!(
            dist(
                serde_json::json!([7, 2]),
                serde_json::json!([[[0, 0], [0, 4], [4, 4], [4, 0], [0, 0]]])
            ),
            3.0
        );
        assert_eq!(
            dist(
                serde_json::json!([1, 1]),
                serde_json::json!([[[0, 0], [0, 4], [4, 4], [4, 0], [0, 0]]])
            ),
            0.0
        );
        assert_eq!(
            dist(
                serde_json::json!([[0, 5], [4, 5]]),
                serde_json::json!([[3, 0], [3, 2]])
            ),
            3.0
        );
        assert_eq!(
            dist(serde_json::json!([0, 0]), serde_json::json!([3, 4])),
            5.0
        );
        // A self-crossing ring (a bow tie) relates to no answer rather than a panic.
        let bowtie = g(serde_json::json!([[
            [0, 0],
            [4, 4],
            [4, 0],
            [0, 4],
            [0, 0]
        ]]));
        for rel in [
            Relation::Overlaps,
            Relation::Touches,
            Relation::Contains,
            Relation::Equals,
        ] {
            let _ = holds(rel, &bowtie, &square);
            let _ = holds(rel, &square, &bowtie);
        }
        assert!(!in_range(&g(serde_json::json!([0, 91]))));
        assert!(in_range(&g(serde_json::json!([-180, 90]))));
        // One degree of longitude at 6°N, over a sphere of 6,371 km.
        let m = sphere_distance(Point::new(7.0, 6.0), Point::new(6.0, 6.0));
        assert!((m - 110_576.0).abs() < 50.0, "{m}");
        assert_eq!(
            holds(d(DistanceCmp::LessThan, 120_000.0, true), &seven, &six),
            Some(true)
        );
        assert_eq!(
            holds(d(DistanceCmp::LessThan, 1.0, true), &square, &six),
            None
        );
    }
}
