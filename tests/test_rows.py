"""Rows/documents: CRUD, bulk operations, increments, and every Query the SDK builds,
checked against a brute-force evaluation of the same filter in Python."""
import random
import re

import pytest
from appwrite.enums.tables_db_index_type import TablesDBIndexType
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.permission import Permission
from appwrite.query import Query
from appwrite.role import Role


@pytest.fixture
def people(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "people", "People")
    tables.create_varchar_column("db", "people", "name", 64, True)
    tables.create_integer_column("db", "people", "age", False)
    tables.create_float_column("db", "people", "score", False)
    tables.create_boolean_column("db", "people", "active", False)
    tables.create_varchar_column("db", "people", "city", 32, False)
    tables.create_text_column("db", "people", "bio", False)
    tables.create_varchar_column("db", "people", "tags", 16, False, array=True)
    tables.create_datetime_column("db", "people", "born", False)
    tables.create_index("db", "people", "by_age", TablesDBIndexType.KEY, ["age"])
    tables.create_index("db", "people", "by_city_age", TablesDBIndexType.KEY, ["city", "age"])
    tables.create_index("db", "people", "by_name", TablesDBIndexType.UNIQUE, ["name"])
    tables.create_index("db", "people", "ft_bio", TablesDBIndexType.FULLTEXT, ["bio"])
    tables.create_index("db", "people", "by_tags", TablesDBIndexType.KEY, ["tags"])
    return tables


def test_row_crud(people):
    t = people
    r = t.create_row("db", "people", "ada", {"name": "Ada", "age": 36}, permissions=[Permission.read(Role.any()), Permission.write(Role.user("u1"))])
    assert r.id == "ada" and r.sequence == "1" and r.tableid == "people" and r.databaseid == "db"
    assert r.permissions == ['read("any")', 'update("user:u1")', 'delete("user:u1")']
    assert r.createdat.endswith("+00:00") and r.createdat == r.updatedat
    got = t.get_row("db", "people", "ada")
    assert got.data["name"] == "Ada" and got.data["age"] == 36 and got.data["city"] is None
    upd = t.update_row("db", "people", "ada", {"age": 37})
    assert upd.data["age"] == 37 and upd.data["name"] == "Ada" and upd.updatedat >= upd.createdat
    assert upd.permissions == r.permissions
    perms = t.update_row("db", "people", "ada", permissions=[Permission.read(Role.users())])
    assert perms.permissions == ['read("users")'] and perms.data["age"] == 37
    ups = t.upsert_row("db", "people", "bob", {"name": "Bob", "age": 20})
    assert ups.id == "bob" and ups.sequence == "2"
    ups2 = t.upsert_row("db", "people", "bob", {"age": 21})
    assert ups2.data == {**ups2.data, "name": "Bob", "age": 21} and ups2.sequence == "2"
    selected = t.get_row("db", "people", "ada", queries=[Query.select(["name"])])
    assert selected.data.get("name") == "Ada" and "age" not in selected.data
    t.delete_row("db", "people", "ada")
    with pytest.raises(AppwriteException) as e:
        t.get_row("db", "people", "ada")
    assert e.value.code == 404 and e.value.type == "row_not_found"
    with pytest.raises(AppwriteException) as e:
        t.delete_row("db", "people", "ada")
    assert e.value.code == 404
    with pytest.raises(AppwriteException) as e:
        t.create_row("db", "people", "bob", {"name": "Other"})
    assert e.value.code == 409 and e.value.type == "row_already_exists"
    with pytest.raises(AppwriteException) as e:
        t.update_row("db", "people", "bob")
    assert e.value.code == 400 and e.value.type == "row_missing_payload"
    # A new row gets a fresh sequence even after deletes.
    assert t.create_row("db", "people", "cy", {"name": "Cy"}).sequence == "3"


def test_bulk_operations(people):
    t = people
    created = t.create_rows("db", "people", [{"$id": f"p{i}", "name": f"n{i}", "age": i} for i in range(10)])
    assert created.total == 10 and [r.id for r in created.rows] == [f"p{i}" for i in range(10)]
    # All-or-nothing: one bad row (duplicate name) and none land.
    with pytest.raises(AppwriteException) as e:
        t.create_rows("db", "people", [{"$id": "x1", "name": "fresh"}, {"$id": "x2", "name": "n3"}])
    assert e.value.type == "row_unique_constraint_violation"
    assert t.list_rows("db", "people").total == 10
    up = t.upsert_rows("db", "people", [{"$id": "p0", "name": "n0", "age": 100}, {"$id": "p10", "name": "n10", "age": 10}])
    assert up.total == 2 and t.get_row("db", "people", "p0").data["age"] == 100
    changed = t.update_rows("db", "people", {"city": "Oslo"}, queries=[Query.less_than("age", 5)])
    assert changed.total == 4
    assert t.list_rows("db", "people", [Query.equal("city", "Oslo")]).total == 4
    deleted = t.delete_rows("db", "people", queries=[Query.greater_than_equal("age", 9)])
    assert sorted(r.id for r in deleted.rows) == ["p0", "p10", "p9"]
    assert t.list_rows("db", "people").total == 8
    everything = t.delete_rows("db", "people")
    assert everything.total == 8 and t.list_rows("db", "people").total == 0


def test_bulk_changes_by_query_over_many_rows_go_in_chunks(people):
    # 5,000 rows: more than one chunk of rows changed (500) and one run of rows looked at
    # (2,000) per log entry; the answers are as if it were one.
    t = people
    for b in range(5):
        t.create_rows("db", "people", [{"$id": f"b{b}-{i}", "name": f"n{b}-{i}", "age": i % 10} for i in range(1000)])
    changed = t.update_rows("db", "people", {"city": "Rome"}, queries=[Query.less_than("age", 3)])
    # `total` counts every row changed; the answer lists the first 100, as Appwrite's does.
    assert changed.total == 1500 and len({r.id for r in changed.rows}) == 100
    assert t.list_rows("db", "people", [Query.equal("city", "Rome")]).total == 1500
    limited = t.delete_rows("db", "people", queries=[Query.equal("age", [8, 9]), Query.limit(700)])
    assert limited.total == 700
    assert t.list_rows("db", "people", [Query.equal("age", [8, 9])]).total == 1000 - 700
    everything = t.delete_rows("db", "people")
    assert everything.total == 5000 - 700 and t.list_rows("db", "people").total == 0


def test_ordered_bulk_changes_pick_rows_in_order_and_go_in_chunks(people):
    # With an order, offset or cursor the rows are picked in the query's order from one view,
    # then changed by id, 500 per log entry, each only if it still matches.
    t = people
    for b in range(3):
        t.create_rows("db", "people", [{"$id": f"o{b}-{i}", "name": f"o{b}-{i}", "age": b * 1000 + i} for i in range(1000)])
    top = t.update_rows("db", "people", {"city": "Top"},
                        queries=[Query.greater_than("age", 100), Query.order_desc("age"), Query.limit(1200)])
    assert top.total == 1200
    assert [r.data["age"] for r in top.rows[:3]] == [2999, 2998, 2997]
    assert all(r.data["city"] == "Top" for r in top.rows)
    assert t.list_rows("db", "people", [Query.equal("city", "Top")]).total == 1200
    assert t.list_rows("db", "people", [Query.equal("city", "Top"), Query.order_asc("age"), Query.limit(1)]).rows[0].data["age"] == 1800
    skipped = t.delete_rows("db", "people", queries=[Query.order_asc("age"), Query.offset(10), Query.limit(600)])
    assert [r.data["age"] for r in skipped.rows[:2]] == [10, 11] and skipped.total == 600
    assert t.list_rows("db", "people").total == 3000 - 600
    after = t.delete_rows("db", "people", queries=[Query.cursor_after("o2-989"), Query.order_asc("age")])
    assert sorted(r.data["age"] for r in after.rows) == list(range(2990, 3000))


def test_increment_decrement(people):
    t = people
    t.create_row("db", "people", "a", {"name": "A", "age": 5, "score": 1.5})
    assert t.increment_row_column("db", "people", "a", "age").data["age"] == 6
    assert t.increment_row_column("db", "people", "a", "age", value=4, max=10).data["age"] == 10
    with pytest.raises(AppwriteException) as e:
        t.increment_row_column("db", "people", "a", "age", value=1, max=10)
    assert e.value.code == 400 and e.value.type == "column_limit_exceeded"
    assert t.decrement_row_column("db", "people", "a", "age", value=7, min=0).data["age"] == 3
    with pytest.raises(AppwriteException) as e:
        t.decrement_row_column("db", "people", "a", "age", value=4, min=0)
    assert e.value.type == "column_limit_exceeded"
    assert t.get_row("db", "people", "a").data["age"] == 3
    assert t.increment_row_column("db", "people", "a", "score", value=0.25).data["score"] == 1.75
    with pytest.raises(AppwriteException) as e:
        t.increment_row_column("db", "people", "a", "name")
    assert e.value.type == "column_type_invalid"
    with pytest.raises(AppwriteException) as e:
        t.increment_row_column("db", "people", "missing", "age")
    assert e.value.code == 404


CITIES = ["Oslo", "Lima", "Kyiv", "Pune", None]
WORDS = ["rust", "raft", "rocks", "river", "ruby", "stone", "basalt", "lava"]


def make_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({
            "$id": f"r{i:03d}",
            "name": f"{rng.choice(['ann', 'bob', 'cat', 'dan'])}-{i:03d}",
            "age": rng.choice([None, *range(0, 60)]),
            "score": round(rng.uniform(0, 10), 2),
            "active": rng.choice([True, False, None]),
            "city": rng.choice(CITIES),
            "bio": " ".join(rng.sample(WORDS, 3)),
            "tags": rng.sample(["a", "b", "c", "d"], rng.randint(0, 3)),
            "born": f"19{rng.randint(50, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T00:00:00.000+00:00",
        })
    return rows


def py_match(row, q):
    """Brute-force evaluation of one query dict against a row (SQL null semantics)."""
    m, a, vals = q["method"], q.get("attribute"), q.get("values", [])
    if m == "exists":
        return any(row.get(x) is not None for x in vals)
    if m == "notExists":
        return any(row.get(x) is None for x in vals)
    if m == "and":
        return all(py_match(row, x) for x in vals)
    if m == "or":
        return any(py_match(row, x) for x in vals)
    v = row.get(a)
    if m == "isNull":
        return v is None
    if m == "isNotNull":
        return v is not None
    if v is None:
        return False
    if m == "equal":
        return v in vals
    if m == "notEqual":
        return v not in vals
    if m == "lessThan":
        return any(v < x for x in vals)
    if m == "lessThanEqual":
        return any(v <= x for x in vals)
    if m == "greaterThan":
        return any(v > x for x in vals)
    if m == "greaterThanEqual":
        return any(v >= x for x in vals)
    if m == "between":
        return vals[0] <= v <= vals[1]
    if m == "notBetween":
        return not (vals[0] <= v <= vals[1])
    if m == "startsWith":
        return v.startswith(vals[0])
    if m == "endsWith":
        return v.endswith(vals[0])
    if m == "notStartsWith":
        return not v.startswith(vals[0])
    if m == "notEndsWith":
        return not v.endswith(vals[0])
    if m in ("contains", "containsAny"):
        return any(x in v for x in vals)
    if m == "containsAll":
        return all(x in v for x in vals)
    if m == "notContains":
        return not any(x in v for x in vals)
    if m == "regex":
        # MariaDB's REGEXP under Appwrite's case-insensitive collation.
        return re.search(vals[0], v, re.IGNORECASE) is not None
    if m == "search":
        words = v.lower().split()
        terms = vals[0].lower().split()
        return any(w == t or (i == len(terms) - 1 and w.startswith(t)) for i, t in enumerate(terms) for w in words)
    raise AssertionError(m)


def test_queries_match_brute_force(people):
    import json
    t = people
    rows = make_rows(300, seed=7)
    for i in range(0, len(rows), 100):
        t.create_rows("db", "people", rows[i:i + 100])
    filters = [
        Query.equal("age", [30]), Query.equal("age", [1, 2, 3]), Query.not_equal("age", 30),
        Query.less_than("age", 20), Query.less_than_equal("age", 20), Query.greater_than("age", 50),
        Query.greater_than_equal("score", 9.5), Query.between("age", 10, 12), Query.not_between("age", 5, 55),
        Query.starts_with("name", "bob"), Query.ends_with("name", "7"), Query.not_starts_with("name", "a"),
        Query.not_ends_with("name", "0"), Query.contains("tags", ["a"]), Query.contains("name", ["-01"]),
        Query.not_contains("tags", ["b"]), Query.contains_all("tags", ["a", "c"]), Query.contains_any("tags", ["d", "b"]), Query.search("bio", "basalt"), Query.search("bio", "lav"),
        Query.search("bio", "ruby stone"), Query.is_null("age"), Query.is_not_null("city"),
        Query.equal("active", [True]), Query.equal("city", ["Oslo"]),
        Query.or_queries([Query.equal("city", ["Lima"]), Query.less_than("age", 3)]),
        Query.and_queries([Query.equal("city", ["Kyiv"]), Query.greater_than("age", 30)]),
        Query.greater_than("born", "1980-01-01T00:00:00.000+00:00"),
        Query.equal("$id", ["r001", "r010", "nope"]), Query.greater_than("$id", "r290"),
        Query.regex("name", "^(ann|BOB)-0[0-4]"), Query.regex("city", "o$"), Query.regex("bio", "r[a-z]+ s"),
        Query.exists(["age"]), Query.exists(["age", "active"]), Query.not_exists(["active"]),
        Query.not_exists(["age", "city"]),
    ]
    combos = [[f] for f in filters] + [
        [Query.equal("city", ["Pune"]), Query.between("age", 20, 40)],
        [Query.greater_than("age", 10), Query.less_than("score", 5.0), Query.equal("active", [False])],
        [Query.contains("tags", ["c"]), Query.search("bio", "river")],
    ]
    for qs in combos:
        dicts = [json.loads(q) for q in qs]
        expect = sorted(r["$id"] for r in rows if all(py_match(r, d) for d in dicts))
        got = t.list_rows("db", "people", qs + [Query.limit(5000)])
        assert got.total == len(expect), qs
        assert sorted(r.id for r in got.rows) == expect, qs


def test_order_limit_offset_cursor(people):
    t = people
    rows = make_rows(60, seed=3)
    t.create_rows("db", "people", rows)
    default = t.list_rows("db", "people")
    assert default.total == 60 and len(default.rows) == 25
    assert [r.id for r in default.rows] == [r["$id"] for r in rows[:25]]
    page = t.list_rows("db", "people", [Query.limit(10), Query.offset(20)])
    assert [r.id for r in page.rows] == [r["$id"] for r in rows[20:30]] and page.total == 60
    with_age = [r for r in rows if r["age"] is not None]
    # Ties go by creation ($sequence) ascending whatever the order's direction, as in Appwrite.
    desc = sorted(with_age, key=lambda r: (-r["age"], int(r["$id"][1:])))
    got = t.list_rows("db", "people", [Query.is_not_null("age"), Query.order_desc("age"), Query.limit(100)])
    assert [r.id for r in got.rows] == [r["$id"] for r in desc]
    asc = sorted(with_age, key=lambda r: (r["age"], int(r["$id"][1:])))
    seen, cursor = [], None
    while True:
        qs = [Query.is_not_null("age"), Query.order_asc("age"), Query.limit(7)]
        if cursor:
            qs.append(Query.cursor_after(cursor))
        batch = t.list_rows("db", "people", qs).rows
        if not batch:
            break
        seen += [r.id for r in batch]
        cursor = batch[-1].id
    assert seen == [r["$id"] for r in asc]
    before = t.list_rows("db", "people", [Query.cursor_before(rows[10]["$id"]), Query.limit(3)])
    assert [r.id for r in before.rows] == [r["$id"] for r in rows[7:10]]
    sel = t.list_rows("db", "people", [Query.select(["name", "age"]), Query.limit(1)])
    assert set(sel.rows[0].data.keys()) == {"name", "age"}
    assert t.list_rows("db", "people", [Query.limit(1)], total=False).total == 0
    created = t.list_rows("db", "people", [Query.created_before("2000-01-01T00:00:00.000+00:00")])
    assert created.total == 0
    assert t.list_rows("db", "people", [Query.created_after("2000-01-01T00:00:00.000+00:00")]).total == 60
    assert t.list_rows("db", "people", [Query.updated_between("2000-01-01", "2999-01-01")]).total == 60
    with pytest.raises(AppwriteException) as e:
        t.list_rows("db", "people", [Query.cursor_after("nope")])
    assert e.value.code == 400 and e.value.type == "general_cursor_not_found"


def test_order_random(people):
    t = people
    rows = make_rows(120, seed=5)
    t.create_rows("db", "people", rows[:100])
    t.create_rows("db", "people", rows[100:])
    firsts = set()
    for _ in range(4):
        page = t.list_rows("db", "people", [Query.order_random(), Query.limit(200)])
        assert page.total == 120 and sorted(r.id for r in page.rows) == sorted(r["$id"] for r in rows)
        firsts.add(tuple(r.id for r in page.rows[:10]))
    assert len(firsts) > 1, "four shuffles of 120 rows came out alike"
    # Filters and earlier orders still apply; the shuffle decides among their ties.
    active = t.list_rows("db", "people", [Query.equal("active", [True]), Query.order_desc("score"), Query.order_random(), Query.limit(200)])
    expect = sorted((r for r in rows if r["active"] is True), key=lambda r: -r["score"])
    assert [r.data["score"] for r in active.rows] == [r["score"] for r in expect]
    page = t.list_rows("db", "people", [Query.order_random(), Query.limit(7), Query.offset(3)])
    assert len(page.rows) == 7 and page.total == 120
    # A bulk change may pick its rows at random (where the request arrives), not a staged one.
    picked = t.update_rows("db", "people", {"city": "Rand"}, queries=[Query.order_random(), Query.limit(9)])
    assert picked.total == 9 and t.list_rows("db", "people", [Query.equal("city", "Rand")]).total == 9
    tx = t.create_transaction()
    with pytest.raises(AppwriteException) as e:
        t.update_rows("db", "people", {"city": "X"}, queries=[Query.order_random(), Query.limit(1)], transaction_id=tx.id)
    assert e.value.code == 400 and e.value.type == "general_query_invalid"
    with pytest.raises(AppwriteException) as e:
        t.list_rows("db", "people", [Query.order_random(), Query.cursor_after(rows[0]["$id"])])
    assert e.value.code == 400 and e.value.type == "general_query_invalid"


def test_query_errors(people):
    t = people
    bad = [
        [Query.equal("missing", [1])],
        [Query.search("name", "x")],
        [Query.equal("tags", ["a"])],
        [Query.less_than("age", "old")],
        ['{"method":"frobnicate","attribute":"age","values":[1]}'],
        ["not json"],
        [Query.limit(6000)],
        [Query.order_asc("tags")],
        [Query.regex("name", "(")],
        [Query.regex("age", "1")],
        [Query.regex("tags", "a")],
        [Query.exists(["missing"])],
        [Query.elem_match("tags", [Query.equal("x", [1])])],
    ]
    for qs in bad:
        with pytest.raises(AppwriteException) as e:
            t.list_rows("db", "people", qs)
        assert e.value.code == 400 and e.value.type == "general_query_invalid", qs
