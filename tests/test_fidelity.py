"""Where Basalt answers as Appwrite 1.9 does in the details: staged writes rendered with the
row model, bulk answers, index and column limits, row widths, key scopes."""
import pytest
from appwrite.client import Client
from appwrite.enums.tables_db_index_type import TablesDBIndexType
from appwrite.exception import AppwriteException
from appwrite.permission import Permission
from appwrite.query import Query
from appwrite.role import Role
from appwrite.services.tables_db import TablesDB

from harness import ALL_SCOPES, ROOT_KEY, http


@pytest.fixture
def table(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T", permissions=[Permission.create(Role.users())], row_security=True)
    tables.create_varchar_column("db", "t", "name", 32, False)
    tables.create_integer_column("db", "t", "n", False)
    return tables


def test_staged_writes_answer_the_row_model(table):
    t = table
    t.create_row("db", "t", "old", {"name": "Old", "n": 1}, permissions=[Permission.read(Role.any())])
    stored = t.get_row("db", "t", "old")
    tx = t.create_transaction()
    created = t.create_row("db", "t", "new", {"name": "New"}, permissions=[Permission.read(Role.any())], transaction_id=tx.id)
    body = created.to_dict() if hasattr(created, "to_dict") else None
    assert created.id == "new" and created.tableid == "t" and created.databaseid == "db"
    # Fields only the commit gives are empty, as Appwrite's staged answer has them.
    assert (created.sequence, created.createdat, created.updatedat) == ("", "", "")
    assert created.permissions == ['read("any")'] and created.data["name"] == "New"
    # An update shows the stored row with the change over it.
    updated = t.update_row("db", "t", "old", {"n": 2}, transaction_id=tx.id)
    assert updated.sequence == stored.sequence and updated.createdat == stored.createdat
    assert updated.data["name"] == "Old" and updated.data["n"] == 2
    assert updated.permissions == stored.permissions
    upserted = t.upsert_row("db", "t", "up", {"name": "Up"}, transaction_id=tx.id)
    assert upserted.sequence == "" and upserted.data["name"] == "Up"
    stepped = t.increment_row_column("db", "t", "old", "n", value=5, transaction_id=tx.id)
    assert stepped.data["n"] == 5
    assert body is None or "$sequence" in body
    t.update_transaction(tx.id, commit=True)
    assert t.get_row("db", "t", "old").data["n"] == 7
    assert t.get_row("db", "t", "new").sequence != ""


def test_staged_create_by_a_user_shows_the_permissions_the_row_will_get(project, table):
    node = project.node
    guest = {"X-Appwrite-Project": project.id}
    status, _, _ = http("POST", node.url() + "/account", {"userId": "u1", "email": "u1@x.io", "password": "password123"}, guest)
    assert status == 201
    status, _, session = http("POST", node.url() + "/account/sessions/email", {"email": "u1@x.io", "password": "password123"}, project.headers())
    assert status == 201, session
    user = {**guest, "X-Appwrite-Session": session["secret"]}
    status, _, tx = http("POST", node.url() + "/tablesdb/transactions", {}, user)
    assert status == 201, tx
    status, _, row = http("POST", node.url() + "/tablesdb/db/tables/t/rows", {"rowId": "mine", "data": {"name": "Mine"}, "transactionId": tx["$id"]}, user)
    assert status == 201, row
    assert row["$permissions"] == ['read("user:u1")', 'update("user:u1")', 'delete("user:u1")']
    assert row["$sequence"] == "" and row["$createdAt"] == ""
    # Over a row the user may not read, a staged update shows only what was sent.
    table.create_row("db", "t", "hidden", {"name": "Secret", "n": 3}, permissions=[Permission.update(Role.user("u1"))])
    status, _, row = http("PATCH", node.url() + "/tablesdb/db/tables/t/rows/hidden", {"data": {"n": 4}, "transactionId": tx["$id"]}, user)
    assert status == 200, row
    assert "name" not in row and row["n"] == 4 and row["$sequence"] == ""


def test_bulk_changes_answer_every_row_counted_and_the_first_hundred(table):
    t = table
    t.create_rows("db", "t", [{"$id": f"r{i}", "name": f"n{i}", "n": i} for i in range(250)])
    changed = t.update_rows("db", "t", {"name": "x"}, queries=[Query.greater_than_equal("n", 20)])
    assert changed.total == 230 and len(changed.rows) == 100
    assert [r.id for r in changed.rows[:2]] == ["r20", "r21"]
    upserted = t.upsert_rows("db", "t", [{"$id": f"r{i}", "n": -i} for i in range(120)])
    assert upserted.total == 120 and len(upserted.rows) == 100
    deleted = t.delete_rows("db", "t", queries=[Query.less_than("n", 0)])
    assert deleted.total == 119 and len(deleted.rows) == 100
    assert t.list_rows("db", "t", total=True).total == 131
    tx = t.create_transaction()
    staged = t.delete_rows("db", "t", transaction_id=tx.id)
    assert staged.total == 0 and staged.rows == []


def test_index_limits_and_lengths(table):
    t = table
    for i in range(64):
        t.create_integer_column("db", "t", f"c{i}", False)
    for i in range(62):
        t.create_index("db", "t", f"i{i}", TablesDBIndexType.KEY, [f"c{i}"])
    # 64 with the two below: then the table is full.
    t.create_index("db", "t", "i62", TablesDBIndexType.KEY, ["c62"], lengths=[None])
    t.create_index("db", "t", "i63", TablesDBIndexType.KEY, ["c63"], lengths=[0])
    with pytest.raises(AppwriteException) as e:
        t.create_index("db", "t", "one_more", TablesDBIndexType.KEY, ["n"])
    assert (e.value.code, e.value.type) == (400, "column_index_limit_exceeded")
    assert e.value.message == "The maximum number of indexes for table 't' has been reached."
    t.delete_index("db", "t", "i0")
    for bad in (["10"], [10.5], [True], [1, 2]):
        with pytest.raises(AppwriteException) as e:
            t.create_index("db", "t", "bad", TablesDBIndexType.KEY, ["name"], lengths=bad)
        assert e.value.code == 400, bad
        assert e.value.type in ("general_argument_invalid", "column_index_invalid"), bad
    with pytest.raises(AppwriteException) as e:
        t.create_index("db", "t", "neg", TablesDBIndexType.KEY, ["name"], lengths=[-1])
    assert (e.value.code, e.value.type) == (400, "column_index_invalid")
    assert t.list_indexes("db", "t").total == 63
    ok = t.create_index("db", "t", "len", TablesDBIndexType.KEY, ["name"], lengths=[16])
    assert ok.lengths == [16]


def test_shrinking_a_column_checks_the_stored_values(project, table):
    t = table
    t.create_row("db", "t", "a", {"name": "x" * 20})
    t.create_varchar_column("db", "t", "tags", 16, False, array=True)
    t.create_row("db", "t", "b", {"tags": ["short", "y" * 12]})
    with pytest.raises(AppwriteException) as e:
        t.update_varchar_column("db", "t", "name", False, None, size=10)
    assert (e.value.code, e.value.type) == (400, "column_invalid_resize")
    assert e.value.message == "Existing data is too large for new size, truncate your existing data then try again."
    assert t.get_column("db", "t", "name").size == 32
    with pytest.raises(AppwriteException) as e:
        t.update_varchar_column("db", "t", "tags", False, None, size=8)
    assert e.value.type == "column_invalid_resize"
    assert t.update_varchar_column("db", "t", "name", False, None, size=20).size == 20
    with pytest.raises(AppwriteException) as e:
        t.create_row("db", "t", "c", {"name": "z" * 21})
    assert e.value.type == "row_invalid_structure"
    # The legacy API words it as Appwrite's does.
    legacy = project.databases()
    with pytest.raises(AppwriteException) as e:
        legacy.update_string_attribute("db", "t", "name", False, None, size=5)
    assert e.value.type == "attribute_invalid_resize"


def test_row_width_as_appwrite_reports_it(tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "w", "W")
    assert (tables.get_table("db", "w").bytesmax, tables.get_table("db", "w").bytesused) == (65535, 1067)
    tables.create_varchar_column("db", "w", "v", 100, False)      # 4*100+1
    tables.create_string_column("db", "w", "s", 1000, False)      # 4*1000+2
    tables.create_string_column("db", "w", "big", 20000, False)   # off the row: 20
    tables.create_integer_column("db", "w", "i", False, max=100)  # 4 (by its max alone)
    tables.create_integer_column("db", "w", "n", False, min=-2**40, max=2**31 - 1)  # 4
    tables.create_integer_column("db", "w", "l", False, max=2**40)  # 8
    tables.create_integer_column("db", "w", "u", False)           # 8 (no max: PHP_INT_MAX)
    tables.create_float_column("db", "w", "f", False)             # 8
    tables.create_boolean_column("db", "w", "b", False)           # 1
    tables.create_datetime_column("db", "w", "d", False)          # 7
    tables.create_email_column("db", "w", "e", False)             # 4*254+1
    tables.create_text_column("db", "w", "t", False)              # 20
    tables.create_integer_column("db", "w", "a", False, array=True)  # 20
    expect = 1067 + 401 + 4002 + 20 + 4 + 4 + 8 + 8 + 8 + 1 + 7 + (4 * 254 + 1) + 20 + 20
    table = tables.get_table("db", "w")
    assert table.bytesused == expect
    assert tables.list_tables("db").tables[0].bytesused == expect


def test_keys_take_every_scope_appwrite_has(node):
    # Appwrite's app/config/scopes/project.php, as a console would send them.
    appwrite_scopes = ALL_SCOPES + [
        "project.read", "project.write", "keys.read", "keys.write", "platforms.read", "platforms.write",
        "mocks.read", "mocks.write", "policies.read", "policies.write", "project.policies.read",
        "project.policies.write", "project.oauth2.read", "project.oauth2.write", "templates.read",
        "templates.write", "stages.read", "stages.write", "embeddings.write", "functions.read",
        "functions.write", "executions.read", "executions.write", "execution.read", "execution.write",
        "sites.read", "sites.write", "log.read", "log.write", "providers.read", "providers.write",
        "topics.read", "topics.write", "subscribers.read", "subscribers.write", "targets.read",
        "targets.write", "messages.read", "messages.write", "rules.read", "rules.write",
        "webhooks.read", "webhooks.write", "locale.read", "avatars.read", "assistant.read",
        "migrations.read", "migrations.write", "schedules.read", "schedules.write", "vcs.read",
        "vcs.write", "insights.read", "insights.write", "reports.read", "reports.write",
        "presences.read", "presences.write",
    ]
    h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    status, _, body = http("POST", node.url() + "/projects", {"projectId": "scopes", "name": "scopes"}, h)
    assert status == 201, body
    status, _, key = http("POST", node.url() + "/projects/scopes/keys", {"name": "all", "scopes": appwrite_scopes}, h)
    assert status == 201, key
    assert sorted(key["scopes"]) == sorted(set(appwrite_scopes))
    status, _, err = http("POST", node.url() + "/projects/scopes/keys", {"name": "bad", "scopes": ["rows.read", "frobnicate.write"]}, h)
    assert status == 400, err
    client = Client().set_endpoint(node.url()).set_project("scopes").set_key(key["secret"])
    assert TablesDB(client).list().total == 0
