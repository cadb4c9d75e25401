"""Update operators (Appwrite 1.8+, `appwrite.operator.Operator`): a column's new value computed
from its current value when the write applies, so concurrent updates compose; on updates,
upserts, bulk updates and inside transactions. Misuse is a 400 that changes nothing."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from appwrite.exception import AppwriteException
from appwrite.operator import Condition, Operator
from appwrite.query import Query

DB, T = "ops", "items"


@pytest.fixture
def t(tables):
    tables.create(database_id=DB, name=DB)
    tables.create_table(DB, T, "Items")
    tables.create_integer_column(DB, T, "n", False, min=0, max=1000)
    tables.create_float_column(DB, T, "f", False)
    tables.create_varchar_column(DB, T, "name", 10, False)
    tables.create_text_column(DB, T, "note", False)
    tables.create_boolean_column(DB, T, "flag", False)
    tables.create_datetime_column(DB, T, "when", False)
    tables.create_integer_column(DB, T, "tags", False, array=True)
    tables.create_varchar_column(DB, T, "labels", 20, False, array=True)
    tables.create_row(DB, T, "a", {
        "n": 10, "f": 1.5, "name": "ab", "flag": False,
        "when": "2026-01-30T10:00:00.000+00:00", "tags": [1, 2], "labels": ["x", "y", "x"],
    })
    return tables


def row(t, rid="a"):
    return t.get_row(DB, T, rid).data


def refused(fn):
    with pytest.raises(AppwriteException) as e:
        fn()
    return e.value


def test_each_kind_computes_from_the_current_value(t):
    got = t.update_row(DB, T, "a", {
        "n": Operator.increment(5),
        "f": Operator.multiply(2),
        "name": Operator.string_concat("cd"),
        "flag": Operator.toggle(),
        "when": Operator.date_add_days(2),
        "tags": Operator.array_append([3, 4]),
        "labels": Operator.array_unique(),
    }).data
    # The answer carries the computed values, as the stored row does.
    want = {
        "n": 15, "f": 3.0, "name": "abcd", "flag": True,
        "when": "2026-02-01T10:00:00.000+00:00", "tags": [1, 2, 3, 4], "labels": ["x", "y"],
    }
    for k, v in want.items():
        assert got[k] == v, k
        assert row(t)[k] == v, k
    t.update_row(DB, T, "a", {
        "n": Operator.decrement(4),
        "tags": Operator.array_insert(0, 9),
        "labels": Operator.array_remove("y"),
        "name": Operator.string_replace("cd", "!"),
        "when": Operator.date_sub_days(32),
    })
    t.update_row(DB, T, "a", {
        "n": Operator.modulo(4),
        "tags": Operator.array_filter(Condition.GREATER_THAN, 2),
        "f": Operator.power(2),
    })
    r = row(t)
    assert (r["n"], r["tags"], r["labels"], r["name"], r["f"]) == (3, [9, 3, 4], ["x"], "ab!", 9.0)
    assert r["when"] == "2025-12-31T10:00:00.000+00:00"
    t.update_row(DB, T, "a", {"tags": Operator.array_diff([3]), "labels": Operator.array_prepend(["w"])})
    t.update_row(DB, T, "a", {"tags": Operator.array_intersect([4, 9, 7]), "n": Operator.divide(2)})
    r = row(t)
    assert (r["tags"], r["labels"], r["n"]) == ([9, 4], ["w", "x"], 2)


def test_limits_clamp_and_the_column_range_holds(t):
    assert t.update_row(DB, T, "a", {"n": Operator.increment(100, max=50)}).data["n"] == 50
    assert t.update_row(DB, T, "a", {"n": Operator.decrement(100, min=7)}).data["n"] == 7
    # Past the column's own range (max 1000): refused like any value, nothing changes.
    e = refused(lambda: t.update_row(DB, T, "a", {"n": Operator.multiply(1000)}))
    assert (e.code, e.type) == (400, "row_invalid_structure")
    assert row(t)["n"] == 7


def test_concurrent_operators_all_count(t):
    def bump(i):
        t.update_row(DB, T, "a", {"n": Operator.increment(1), "tags": Operator.array_append([100 + i])})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(bump, range(40)))
    r = row(t)
    assert r["n"] == 50
    assert sorted(r["tags"][2:]) == list(range(100, 140))


def test_misuse_is_refused_and_changes_nothing(t):
    before = row(t)
    e = refused(lambda: t.update_row(DB, T, "a", {"n": Operator.array_append([1]), "f": 2.0}))
    assert (e.code, e.type) == (400, "row_invalid_structure")
    assert e.message == "Invalid row structure: Cannot apply arrayAppend operator to non-array field 'n'"
    e = refused(lambda: t.update_row(DB, T, "a", {"tags": Operator.array_append(["text"])}))
    assert (e.code, e.type) == (400, "row_invalid_structure")
    e = refused(lambda: t.update_row(DB, T, "a", {"tags": Operator.array_insert(9, 1)}))
    assert "index 9 is out of bounds for array of length 2" in e.message
    e = refused(lambda: t.update_row(DB, T, "a", {"name": Operator.string_concat("123456789")}))
    assert "exceed maximum length of 10" in e.message
    e = refused(lambda: t.update_row(DB, T, "a", {"tags": Operator.array_filter(Condition.CONTAINS, 1)}))
    assert "Invalid array filter condition 'contains'" in e.message
    e = refused(lambda: t.update_row(DB, T, "a", {"n": '{"method":"increment","values":5}'}))
    assert (e.code, e.type) == (400, "general_bad_request")
    assert e.message == 'Invalid operator for attribute "n": Invalid operator values. Must be an array, got integer'
    assert row(t) == before


def test_upserts_bulk_updates_and_creates(t):
    # An upsert that creates the row starts from the defaults (none: zero, empty).
    r = t.upsert_row(DB, T, "b", {"n": Operator.increment(5), "tags": Operator.array_append([7])}).data
    assert (r["n"], r["tags"]) == (5, [7])
    r = t.upsert_row(DB, T, "b", {"n": Operator.increment(5), "tags": Operator.array_append([8])}).data
    assert (r["n"], r["tags"]) == (10, [7, 8])
    # A bulk update computes each row from its own value.
    done = t.update_rows(DB, T, {"n": Operator.multiply(3)}, queries=[Query.greater_than("n", 0)])
    assert done.total == 2
    assert (row(t, "a")["n"], row(t, "b")["n"]) == (30, 30)
    # A create takes the text as it is, as Appwrite does.
    literal = Operator.toggle()
    assert t.create_row(DB, T, "c", {"note": literal}).data["note"] == literal


def test_inside_a_transaction_operators_apply_at_commit(t):
    tx = t.create_transaction()
    staged = t.update_row(DB, T, "a", {"tags": Operator.array_append([3])}, transaction_id=tx.id)
    # A staged write echoes the operator; its result is known at commit.
    assert staged.data["tags"] == Operator.array_append([3])
    t.create_operations(tx.id, [
        {"action": "update", "databaseId": DB, "tableId": T, "rowId": "a",
         "data": {"tags": Operator.array_append([4]), "n": Operator.increment(1)}},
        {"action": "upsert", "databaseId": DB, "tableId": T, "rowId": "new",
         "data": {"tags": Operator.array_append([5])}},
    ])
    assert row(t)["tags"] == [1, 2]
    assert t.update_transaction(tx.id, commit=True).status == "committed"
    assert (row(t)["tags"], row(t)["n"]) == ([1, 2, 3, 4], 11)
    assert row(t, "new")["tags"] == [5]


def test_databases_api_words(project):
    d = project.databases()
    d.create(DB, DB)
    d.create_collection(DB, "c", "c")
    d.create_integer_attribute(DB, "c", "n", False)
    d.create_document(DB, "c", "a", {"n": 1})
    assert d.update_document(DB, "c", "a", {"n": Operator.increment(2)}).data["n"] == 3
    e = refused(lambda: d.update_document(DB, "c", "a", {"n": Operator.toggle()}))
    assert (e.code, e.type) == (400, "document_invalid_structure")
    assert e.message == "Invalid document structure: Cannot apply toggle operator to non-boolean field 'n'"
