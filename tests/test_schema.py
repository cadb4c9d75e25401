"""Databases, tables/collections, columns/attributes of every scalar type, indexes —
through the official Python SDK, and the same storage seen through both APIs."""
import pytest
from appwrite.enums.order_by import OrderBy
from appwrite.enums.tables_db_index_type import TablesDBIndexType
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.permission import Permission
from appwrite.role import Role


def test_database_crud(tables):
    db = tables.create(database_id="shop", name="Shop")
    assert db.id == "shop" and db.name == "Shop" and db.enabled
    assert db.type.value == "tablesdb"
    auto = tables.create(database_id=ID.unique(), name="Auto")
    assert len(auto.id) == 20
    generated = tables.create(database_id="unique()", name="Server id")
    assert generated.id != "unique()" and len(generated.id) == 20
    assert tables.get("shop").name == "Shop"
    updated = tables.update("shop", name="Shop 2", enabled=False)
    assert updated.name == "Shop 2" and updated.enabled is False
    listed = tables.list()
    assert listed.total == 3
    assert {d.id for d in listed.databases} == {"shop", auto.id, generated.id}
    from appwrite.query import Query
    only = tables.list(queries=[Query.equal("name", ["Auto"])])
    assert [d.id for d in only.databases] == [auto.id]
    assert tables.list(total=False).total == 0
    tables.delete("shop")
    with pytest.raises(AppwriteException) as e:
        tables.get("shop")
    assert e.value.code == 404 and e.value.type == "database_not_found"
    with pytest.raises(AppwriteException) as e:
        tables.create(database_id=auto.id, name="dup")
    assert e.value.code == 409 and e.value.type == "database_already_exists"


def test_every_column_type(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T", permissions=[Permission.read(Role.any())], row_security=True)
    made = [
        tables.create_string_column("db", "t", "s", 10, False, default="dflt"),
        tables.create_varchar_column("db", "t", "v", 32, True),
        tables.create_text_column("db", "t", "tx", False),
        tables.create_mediumtext_column("db", "t", "mt", False),
        tables.create_longtext_column("db", "t", "lt", False),
        tables.create_integer_column("db", "t", "i", False, min=-5, max=5, default=1),
        tables.create_big_int_column("db", "t", "bi", False),
        tables.create_float_column("db", "t", "f", False, min=0.5, max=9.5),
        tables.create_boolean_column("db", "t", "b", False, default=True),
        tables.create_datetime_column("db", "t", "dt", False),
        tables.create_email_column("db", "t", "em", False),
        tables.create_url_column("db", "t", "u", False),
        tables.create_ip_column("db", "t", "ip", False),
        tables.create_enum_column("db", "t", "en", ["red", "green"], False, default="red"),
        tables.create_string_column("db", "t", "tags", 16, False, array=True),
        tables.create_integer_column("db", "t", "nums", False, array=True),
    ]
    types = [c.type for c in made]
    assert types == [
        "string", "varchar", "text", "mediumtext", "longtext", "integer", "bigint", "double",
        "boolean", "datetime", "string", "string", "string", "string", "string", "integer",
    ]
    assert made[10].format == "email" and made[11].format == "url" and made[12].format == "ip"
    assert made[13].elements == ["red", "green"]
    assert all(c.status.value == "available" for c in made)
    cols = tables.list_columns("db", "t")
    assert cols.total == 16
    assert [c.key for c in cols.columns][:3] == ["s", "v", "tx"]
    assert tables.get_column("db", "t", "em").format == "email"
    table = tables.get_table("db", "t")
    assert table.rowsecurity is True and len(table.columns) == 16
    assert table.permissions == ['read("any")']

    row = tables.create_row(
        "db", "t", "r1",
        {
            "v": "hello", "i": 3, "bi": 9007199254740993, "f": 2.5, "dt": "2026-01-02T03:04:05.000+00:00",
            "em": "a@example.com", "u": "https://example.com/x", "ip": "10.1.2.3", "en": "green",
            "tags": ["a", "b"], "nums": [1, 2, 3],
        },
    )
    d = row.data
    assert d["s"] == "dflt" and d["b"] is True and d["i"] == 3 and d["bi"] == 9007199254740993
    assert d["dt"] == "2026-01-02T03:04:05.000+00:00" and d["tags"] == ["a", "b"]
    assert d["tx"] is None and d["en"] == "green"

    bad_values = [
        {"v": "x" * 33}, {"v": "ok", "i": 6}, {"v": "ok", "i": "3"}, {"v": "ok", "f": 0.1},
        {"v": "ok", "b": "yes"}, {"v": "ok", "dt": "not a date"}, {"v": "ok", "em": "nope"},
        {"v": "ok", "u": "example.com"}, {"v": "ok", "ip": "999.1.1.1"}, {"v": "ok", "en": "blue"},
        {"v": "ok", "tags": "a"}, {"v": "ok", "nums": [1, "2"]}, {"v": "ok", "zzz": 1}, {"i": 1},
        {"v": "ok", "s": "01234567890"},
    ]
    for data in bad_values:
        with pytest.raises(AppwriteException) as e:
            tables.create_row("db", "t", ID.unique(), data)
        assert e.value.code == 400 and e.value.type == "row_invalid_structure", data
    assert tables.list_rows("db", "t").total == 1


def test_column_update_rename_delete(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_integer_column("db", "t", "n", False, min=0, max=10)
    tables.create_row("db", "t", "a", {"n": 7})
    c = tables.update_integer_column("db", "t", "n", False, None, min=0, max=100, new_key="m")
    assert c.key == "m" and c.max == 100
    assert tables.get_row("db", "t", "a").data["m"] == 7
    with pytest.raises(AppwriteException) as e:
        tables.get_column("db", "t", "n")
    assert e.value.type == "column_not_found"
    tables.create_index("db", "t", "by_m", TablesDBIndexType.KEY, ["m"])
    with pytest.raises(AppwriteException) as e:
        tables.delete_column("db", "t", "m")
    assert e.value.code == 409 and e.value.type == "column_index_dependency"
    tables.delete_index("db", "t", "by_m")
    tables.delete_column("db", "t", "m")
    assert tables.list_columns("db", "t").total == 0
    assert "m" not in tables.get_row("db", "t", "a").data


def test_column_definition_errors(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_integer_column("db", "t", "n", False)
    cases = [
        (lambda: tables.create_integer_column("db", "t", "n", False), 409, "column_already_exists"),
        (lambda: tables.create_integer_column("db", "t", "r", True, default=3), 400, "column_default_unsupported"),
        (lambda: tables.create_integer_column("db", "t", "mm", False, min=5, max=1), 400, "column_value_invalid"),
        (lambda: tables.create_enum_column("db", "t", "e", ["a"], False, default="b"), 400, "column_value_invalid"),
        (lambda: tables.create_string_column("db", "t", "bad key!", 5, False), 400, "general_argument_invalid"),
        (lambda: tables.create_string_column("db", "t", "z", 0, False), 400, "general_argument_invalid"),
        (lambda: tables.create_integer_column("db", "nope", "x", False), 404, "table_not_found"),
        (lambda: tables.create_integer_column("nodb", "t", "x", False), 404, "database_not_found"),
    ]
    for call, code, typ in cases:
        with pytest.raises(AppwriteException) as e:
            call()
        assert (e.value.code, e.value.type) == (code, typ)
    assert tables.list_columns("db", "t").total == 1


def wait_index(tables, key, wanted, timeout=30):
    """Polls an index until its status is one of `wanted`, as the SDK's users do."""
    import time
    deadline = time.time() + timeout
    while True:
        idx = tables.get_index("db", "t", key)
        if idx.status in wanted or time.time() > deadline:
            assert idx.status in wanted, idx
            return idx
        time.sleep(0.05)


def test_an_index_over_many_rows_is_built_in_chunks_while_writes_go_on(tables):
    from appwrite.query import Query
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_integer_column("db", "t", "n", False)
    for b in range(3):
        tables.create_rows("db", "t", [{"$id": f"r{b}-{i}", "n": i % 50} for i in range(1000)])
    idx = tables.create_index("db", "t", "by_n", TablesDBIndexType.KEY, ["n"])
    assert idx.status == "processing"
    # Writes during the build are indexed by the writes themselves.
    for i in range(20):
        tables.create_row("db", "t", f"late{i}", {"n": 7})
    wait_index(tables, "by_n", {"available"})
    page = tables.list_rows("db", "t", [Query.equal("n", 7), Query.limit(5000)])
    assert page.total == 60 + 20
    # A table with no rows has nothing to build.
    tables.create_table("db", "empty", "E")
    tables.create_integer_column("db", "empty", "n", False)
    assert tables.create_index("db", "empty", "by_n", TablesDBIndexType.KEY, ["n"]).status == "available"


def test_renaming_and_deleting_columns_of_many_rows(tables):
    """Both are whole at once; the stored rows are rewritten by a background job in chunks,
    and until it is through the old key cannot name a new column."""
    import time
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_integer_column("db", "t", "n", False)
    tables.create_integer_column("db", "t", "x", False)
    for b in range(3):
        tables.create_rows("db", "t", [{"$id": f"r{b}-{i}", "n": i, "x": 1} for i in range(1000)])
    tables.update_integer_column("db", "t", "n", False, None, new_key="m")
    tables.delete_column("db", "t", "x")
    row = tables.get_row("db", "t", "r2-999")
    assert row.data["m"] == 999 and "n" not in row.data and "x" not in row.data
    deadline = time.time() + 30
    while True:
        try:
            tables.create_integer_column("db", "t", "x", False)
            break
        except AppwriteException as e:
            assert (e.code, e.type) == (409, "column_already_exists"), e
            assert time.time() < deadline, "the rewrite did not finish"
            time.sleep(0.05)
    from appwrite.query import Query
    page = tables.list_rows("db", "t", [Query.is_null("x"), Query.limit(1)])
    assert page.total == 3000, "old values of a deleted column never come back"
    assert tables.get_row("db", "t", "r0-5").data["m"] == 5


def test_indexes(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_varchar_column("db", "t", "email", 64, False)
    tables.create_integer_column("db", "t", "age", False)
    tables.create_text_column("db", "t", "bio", False)
    idx = tables.create_index("db", "t", "by_age", TablesDBIndexType.KEY, ["age"], orders=[OrderBy.DESC])
    assert idx.key == "by_age" and idx.columns == ["age"] and idx.orders == ["desc"]
    tables.create_index("db", "t", "uniq_email", TablesDBIndexType.UNIQUE, ["email"])
    tables.create_index("db", "t", "ft_bio", TablesDBIndexType.FULLTEXT, ["bio"])
    assert tables.list_indexes("db", "t").total == 3
    assert tables.get_index("db", "t", "uniq_email").type == "unique"
    tables.create_row("db", "t", "a", {"email": "a@x.io"})
    with pytest.raises(AppwriteException) as e:
        tables.create_row("db", "t", "b", {"email": "a@x.io"})
    assert e.value.code == 409 and e.value.type == "row_unique_constraint_violation"
    with pytest.raises(AppwriteException) as e:
        tables.update_row("db", "t", "a", {"email": "a@x.io", "age": 3})
        tables.create_row("db", "t", "c", {"email": "c@x.io"})
        tables.update_row("db", "t", "c", {"email": "a@x.io"})
    assert e.value.type == "row_unique_constraint_violation"
    # Rows without a value do not collide in a unique index.
    tables.create_row("db", "t", "n1", {})
    tables.create_row("db", "t", "n2", {})
    with pytest.raises(AppwriteException) as e:
        tables.create_index("db", "t", "by_age", TablesDBIndexType.KEY, ["age"])
    assert e.value.code == 409 and e.value.type == "column_index_already_exists"
    with pytest.raises(AppwriteException) as e:
        tables.create_index("db", "t", "bad", TablesDBIndexType.KEY, ["missing"])
    assert e.value.code == 400 and e.value.type == "column_unknown"
    with pytest.raises(AppwriteException) as e:
        tables.create_index("db", "t", "ft2", TablesDBIndexType.FULLTEXT, ["age"])
    assert e.value.code == 400 and e.value.type == "column_index_invalid"
    # An index over existing rows is built in the background, as Appwrite does: created
    # `processing`, then `available`; over duplicate values a unique one ends `failed`, with
    # its error, and holds nothing.
    tables.create_row("db", "t", "d1", {"age": 5})
    tables.create_row("db", "t", "d2", {"age": 5})
    idx = tables.create_index("db", "t", "uniq_age", TablesDBIndexType.UNIQUE, ["age"])
    assert idx.status == "processing", idx
    failed = wait_index(tables, "uniq_age", {"failed"})
    assert "duplicate" in failed.error
    tables.create_row("db", "t", "d3", {"age": 5})  # a failed index constrains nothing
    tables.delete_index("db", "t", "uniq_age")
    assert tables.list_indexes("db", "t").total == 3
    tables.delete_index("db", "t", "by_age")
    with pytest.raises(AppwriteException) as e:
        tables.get_index("db", "t", "by_age")
    assert e.value.code == 404 and e.value.type == "column_index_not_found"


def test_inline_columns_and_legacy_api_share_storage(project):
    tables, databases = project.tables(), project.databases()
    tables.create(database_id="db", name="db")
    t = tables.create_table(
        "db", "books", "Books",
        columns=[
            {"key": "title", "type": "varchar", "size": 100, "required": True},
            {"key": "year", "type": "integer", "required": False},
        ],
        indexes=[{"key": "by_year", "type": "key", "attributes": ["year"]}],
    )
    assert [c["key"] if isinstance(c, dict) else c.key for c in t.columns] == ["title", "year"]
    row = tables.create_row("db", "books", "b1", {"title": "Dune", "year": 1965})
    doc = databases.get_document("db", "books", "b1")
    assert doc.data["title"] == "Dune" and doc.sequence == row.sequence
    coll = databases.get_collection("db", "books")
    assert coll.documentsecurity is False and [a.key for a in coll.attributes] == ["title", "year"]
    assert [i.key for i in coll.indexes] == ["by_year"]
    databases.create_document("db", "books", "b2", {"title": "Emma", "year": 1815})
    assert tables.list_rows("db", "books").total == 2
    databases.create_collection("db", "c2", "Legacy", document_security=True)
    assert tables.get_table("db", "c2").rowsecurity is True
    tables.update_table("db", "books", name="Books!", enabled=False)
    assert databases.get_collection("db", "books").name == "Books!"
    assert tables.list_tables("db").total == 2
    tables.delete_table("db", "c2")
    with pytest.raises(AppwriteException) as e:
        databases.get_collection("db", "c2")
    assert e.value.type == "collection_not_found"
    with pytest.raises(AppwriteException) as e:
        tables.get_row("db", "books", "nope")
    assert e.value.type == "row_not_found"
    with pytest.raises(AppwriteException) as e:
        databases.get_document("db", "books", "nope")
    assert e.value.type == "document_not_found"


def test_delete_database_removes_everything(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_integer_column("db", "t", "n", False)
    tables.create_index("db", "t", "by_n", TablesDBIndexType.KEY, ["n"])
    tables.create_rows("db", "t", [{"$id": f"r{i}", "n": i} for i in range(20)])
    tables.delete("db")
    tables.create(database_id="db", name="again")
    tables.create_table("db", "t", "T")
    tables.create_integer_column("db", "t", "n", False)
    assert tables.list_rows("db", "t").total == 0
    tables.create_row("db", "t", "r1", {"n": 1})
    assert tables.get_row("db", "t", "r1").sequence == "1"


def test_list_search_and_queries_on_metadata(tables):
    from appwrite.query import Query
    tables.create(database_id="db", name="db")
    for tid, name in [("orders", "Orders"), ("order_lines", "Order lines"), ("users", "People")]:
        tables.create_table("db", tid, name)
    assert {t.id for t in tables.list_tables("db", search="order").tables} == {"orders", "order_lines"}
    assert [t.id for t in tables.list_tables("db", queries=[Query.equal("name", ["People"])]).tables] == ["users"]
    page = tables.list_tables("db", queries=[Query.limit(1), Query.offset(1)])
    assert page.total == 3 and [t.id for t in page.tables] == ["order_lines"]
    after = tables.list_tables("db", queries=[Query.cursor_after("orders")])
    assert [t.id for t in after.tables] == ["order_lines", "users"]
