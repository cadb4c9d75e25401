"""Spatial columns (point, line, polygon), spatial indexes, and every spatial query the SDK
builds, checked against a brute-force evaluation of the same relation with Shapely (GEOS,
whose DE-9IM predicates are the OGC ones MariaDB implements), over tables with and without
a spatial index."""
import json
import math
import random

import pytest
from appwrite.enums.tables_db_index_type import TablesDBIndexType
from appwrite.exception import AppwriteException
from appwrite.query import Query
from shapely.geometry import LineString, Point, Polygon

EARTH_RADIUS_M = 6_371_000.0  # MariaDB's ST_Distance_Sphere radius, as Appwrite passes it


def shape(coords):
    """The Shapely geometry of coordinates as the SDK sends them."""
    if isinstance(coords[0], (int, float)):
        return Point(coords)
    if isinstance(coords[0][0], (int, float)):
        return LineString(coords) if len(coords) > 1 else Point(coords[0])
    return Polygon(coords[0], coords[1:])


def sphere(a, b):
    (x1, y1), (x2, y2) = a.coords[0], b.coords[0]
    p1, p2 = math.radians(y1), math.radians(y2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(x2 - x1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(h, 1.0)))


def holds(q, column):
    """Does spatial query `q` (its JSON) match a row whose column holds `column`? None when
    MariaDB's answer is NULL (neither the query nor its negation matches)."""
    m, values = q["method"], q["values"]
    if column is None:
        return None
    g = shape(column)
    if m.startswith("distance"):
        target, d, meters = values[0]
        t = shape(target)
        if meters:
            if not (isinstance(g, Point) and isinstance(t, Point)):
                return None
            dist = sphere(g, t)
        else:
            dist = g.distance(t)
        return {"distanceEqual": dist == d, "distanceNotEqual": dist != d,
                "distanceGreaterThan": dist > d, "distanceLessThan": dist < d}[m]
    t = shape(values[0])
    negate = m.startswith("not")
    base = m[3].lower() + m[4:] if negate else m
    if base == "crosses" and (isinstance(g, Polygon) or isinstance(t, Point)):
        return None
    result = {
        "intersects": g.intersects, "crosses": g.crosses, "overlaps": g.overlaps, "touches": g.touches,
        "contains": g.contains, "equal": g.equals,
    }["equal" if base == "equal" else base](t)
    return (not result) if negate else result


SPOTS = [(10.0, 50.0), (-73.9, 40.7), (179.5, -0.5)]


def point(rng, spread):
    cx, cy = rng.choice(SPOTS)
    x = max(-180.0, min(180.0, cx + rng.uniform(-spread, spread)))
    y = max(-90.0, min(90.0, cy + rng.uniform(-spread, spread)))
    return [round(x), round(y)] if rng.random() < 0.3 else [x, y]


def geometry(rng, kind):
    spread = rng.choice([0.01, 0.5, 3.0])
    if kind == "point":
        return point(rng, spread)
    if kind == "line":
        return [point(rng, spread) for _ in range(rng.randint(2, 4))]
    x, y = point(rng, spread)
    w = rng.uniform(0.05, 2.0)
    # A proper box: one squashed flat against the edge of the map is not a valid polygon
    # (GEOS and MariaDB answer differently there).
    x, y = min(x, 180.0 - w), min(y, 90.0 - w)
    x1, y1 = x + w, y + w
    return [[[x, y], [x1, y], [x1, y1], [x, y1], [x, y]]]


@pytest.fixture
def places(tables):
    tables.create(database_id="geo", name="geo")
    for table in ("plain", "indexed"):
        tables.create_table("geo", table, table)
        tables.create_point_column("geo", table, "pt", False)
        tables.create_line_column("geo", table, "path", False)
        tables.create_polygon_column("geo", table, "area", False)
    for key, col in (("by_pt", "pt"), ("by_path", "path"), ("by_area", "area")):
        idx = tables.create_index("geo", "indexed", key, TablesDBIndexType.SPATIAL, [col])
        assert idx.type == "spatial" and idx.columns == [col]
    return tables


def test_spatial_columns_and_values(places):
    t = places
    cols = {c["key"] if isinstance(c, dict) else c.key: c for c in t.list_columns("geo", "plain").columns}
    assert {k: (c["type"] if isinstance(c, dict) else c.type) for k, c in cols.items()} == {
        "pt": "point", "path": "linestring", "area": "polygon"}
    c = t.create_point_column("geo", "plain", "home", False, default=[1, 2])
    assert (c.type, c.default, c.required) == ("point", [1, 2], False)
    c = t.update_point_column("geo", "plain", "home", False, default=[3, 4])
    assert c.default == [3, 4]
    # Appwrite's spatial updates always set the default: left out, it goes.
    assert t.update_point_column("geo", "plain", "home", False).default is None
    t.update_point_column("geo", "plain", "home", False, default=[5, 6])
    ring = [[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]
    row = t.create_row("geo", "plain", "r1", {"pt": [12.5, -3], "path": [[0, 0], [1, 1], [2, 0]], "area": ring})
    assert row.data["pt"] == [12.5, -3] and row.data["path"] == [[0, 0], [1, 1], [2, 0]]
    assert row.data["area"] == [ring], "a bare ring is the polygon's one ring"
    assert row.data["home"] == [5, 6], "the default fills a row created without it"
    assert t.get_row("geo", "plain", "r1").data["area"] == [ring]
    bad = [
        ({"pt": [181, 0]}, "Longitude (x) must be between -180 and 180"),
        ({"pt": [0, -91]}, "Latitude (y) must be between -90 and 90"),
        ({"pt": [1, 2, 3]}, "Point must be an array of two numeric values"),
        ({"pt": "here"}, "Point must be an array of two numeric values"),
        ({"path": [[0, 0]]}, "LineString must contain at least two points"),
        ({"area": [[[0, 0], [0, 1], [1, 1], [1, 0]]]}, "must be closed"),
        ({"area": [[[0, 0], [0, 1], [0, 0]]]}, "at least 4 points"),
    ]
    for data, words in bad:
        with pytest.raises(AppwriteException) as e:
            t.create_row("geo", "plain", "bad", data)
        assert (e.value.code, e.value.type) == (400, "row_invalid_structure"), data
        assert words in e.value.message, (data, e.value.message)
    with pytest.raises(AppwriteException) as e:
        t.create_point_column("geo", "plain", "reqd", True, default=[0, 0])
    assert e.value.type == "column_default_unsupported"
    with pytest.raises(AppwriteException) as e:
        t.create_polygon_column("geo", "plain", "badd", False, default=[[[0, 0], [1, 1], [0, 0]]])
    assert e.value.code == 400


def test_spatial_index_rules(places):
    t = places
    t.create_varchar_column("geo", "plain", "name", 16, False)
    cases = [
        (lambda: t.create_index("geo", "plain", "k", TablesDBIndexType.KEY, ["pt"]), "Cannot create key index on spatial"),
        (lambda: t.create_index("geo", "plain", "u", TablesDBIndexType.UNIQUE, ["area"]), "Cannot create unique index on spatial"),
        (lambda: t.create_index("geo", "plain", "s", TablesDBIndexType.SPATIAL, ["name"]), "Spatial index can only be created on spatial"),
        (lambda: t.create_index("geo", "plain", "s", TablesDBIndexType.SPATIAL, ["$id"]), '"$id" is of type "string"'),
        (lambda: t.create_index("geo", "plain", "s2", TablesDBIndexType.SPATIAL, ["pt", "area"]), "Spatial index must have exactly one column"),
    ]
    for call, words in cases:
        with pytest.raises(AppwriteException) as e:
            call()
        assert (e.value.code, e.value.type) == (400, "column_index_invalid")
        assert words in e.value.message, e.value.message
    bad_queries = [
        Query.intersects("name", [1, 2]),
        Query.distance_less_than("area", [1, 2], 10, True),  # meters: points only
        Query.less_than("pt", [1, 2]),
        Query.distance_less_than("pt", [0, 91], 10),  # no latitude
        Query.intersects("area", [[[0, 0], [0, 1], [200, 1], [0, 0]]]),  # no longitude
        '{"method":"distanceLessThan","attribute":"pt","values":[[[1,2]]]}',
    ]
    for q in bad_queries:
        with pytest.raises(AppwriteException) as e:
            t.list_rows("geo", "plain", [q])
        assert (e.value.code, e.value.type) == (400, "general_query_invalid"), q


def test_every_spatial_query_against_brute_force(places):
    t = places
    rng = random.Random(17)
    rows = []
    for i in range(150):
        row = {"$id": f"r{i}"}
        for col, kind in (("pt", "point"), ("path", "line"), ("area", "polygon")):
            if rng.random() < 0.9:
                row[col] = geometry(rng, kind)
        rows.append(row)
    for table in ("plain", "indexed"):
        t.create_rows("geo", table, rows[:75])
        t.create_rows("geo", table, rows[75:])
    # An index built over rows that were already there files them too.
    idx = t.create_index("geo", "plain", "late", TablesDBIndexType.SPATIAL, ["pt"])
    assert idx.type == "spatial"
    methods = [
        ("intersects", Query.intersects), ("notIntersects", Query.not_intersects),
        ("crosses", Query.crosses), ("notCrosses", Query.not_crosses),
        ("overlaps", Query.overlaps), ("notOverlaps", Query.not_overlaps),
        ("touches", Query.touches), ("notTouches", Query.not_touches),
        ("equal", lambda a, g: Query.equal(a, [g])), ("notEqual", lambda a, g: Query.not_equal(a, [g])),
        ("contains", lambda a, g: Query.contains(a, [g])), ("notContains", lambda a, g: Query.not_contains(a, [g])),
    ]
    distances = [
        (Query.distance_equal, 0.0), (Query.distance_not_equal, 0.0), (Query.distance_greater_than, 1.5),
        (Query.distance_less_than, 1.5), (Query.distance_less_than, 0.2),
    ]
    checked = matched = 0
    for col in ("pt", "path", "area"):
        for _ in range(12):
            g = geometry(rng, rng.choice(["point", "line", "polygon"]))
            queries = [build(col, g) for _, build in methods]
            queries += [build(col, g, d, False) for build, d in distances]
            if col == "pt" and isinstance(g[0], (int, float)):
                queries += [build(col, g, d * 111_000, True) for build, d in distances]
            # A stored row's own geometry: equal, touches and contains hold exactly.
            own = rng.choice([r for r in rows if col in r])[col]
            queries += [Query.equal(col, [own]), Query.contains(col, [own]), Query.touches(col, own)]
            for q in queries:
                parsed = json.loads(q)
                expect = sorted(
                    (r["$id"] for r in rows if holds(parsed, r.get(col))),
                    key=lambda i: int(i[1:]))
                for table in ("plain", "indexed"):
                    got = t.list_rows("geo", table, [q, Query.limit(500)])
                    assert [r.id for r in got.rows] == expect, (table, q)
                    assert got.total == len(expect), (table, q)
                checked += 1
                matched += 0 < len(expect) < len(rows)
    assert matched > checked // 4, (matched, checked)
    # With other filters and orders too.
    g = rows[3]["pt"]
    got = t.list_rows("geo", "indexed", [Query.distance_less_than("pt", g, 3.0, False), Query.order_desc("$sequence"), Query.limit(5)])
    expect = [r["$id"] for r in reversed(rows) if "pt" in r and shape(r["pt"]).distance(shape(g)) < 3.0][:5]
    assert [r.id for r in got.rows] == expect
