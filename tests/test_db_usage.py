"""The console's usage and log routes of Databases and TablesDB: figures from the replicated
usage counters (rows, tables, databases, bytes, reads and writes, by hour and by day), and the
audit trail of who wrote what from where, through both services' routes."""
import time
from urllib.parse import quote

import pytest
from appwrite.client import Client
from appwrite.id import ID
from appwrite.permission import Permission
from appwrite.query import Query
from appwrite.role import Role
from appwrite.services.account import Account
from appwrite.services.tables_db import TablesDB

from harness import TestCluster, create_project, http


def get(project, path, node=None, key=True):
    h = {"X-Appwrite-Project": project.id}
    if key:
        h["X-Appwrite-Key"] = project.key
    return http("GET", (node or project.node).url() + path, headers=h)


def ok(project, path, node=None):
    status, _, body = get(project, path, node)
    assert status == 200, (path, body)
    return body


def last(series):
    return series[-1]["value"]


def test_usage_counts_rows_tables_bytes_and_writes(tables, project):
    t = tables
    t.create(database_id="u", name="u")
    t.create_table("u", "t", "t")
    t.create_varchar_column("u", "t", "name", 64, False)
    time.sleep(0.3)
    for i in range(3):
        t.create_row("u", "t", f"r{i}", {"name": f"row {i}"})
    t.update_row("u", "t", "r0", {"name": "renamed"})
    t.delete_row("u", "t", "r2")
    t.create_table("u", "t2", "t2")

    all_ = ok(project, "/tablesdb/usage?range=24h")
    assert all_["range"] == "24h"
    assert (all_["databasesTotal"], all_["tablesTotal"], all_["collectionsTotal"]) == (1, 2, 2)
    assert (all_["rowsTotal"], all_["documentsTotal"]) == (2, 2)
    assert all_["databasesWritesTotal"] == 5
    assert all_["storageTotal"] > 0
    for k in ("databases", "tables", "rows", "storage", "databasesReads", "databasesWrites"):
        assert len(all_[k]) == 24, k
    assert (last(all_["databases"]), last(all_["tables"]), last(all_["rows"])) == (1, 2, 2)
    assert last(all_["databasesWrites"]) == 5
    assert last(all_["storage"]) == all_["storageTotal"]
    now = all_["rows"][-1]["date"]
    assert now.endswith(":00:00.000+00:00") and now[:13] == time.strftime("%Y-%m-%dT%H", time.gmtime())

    db = ok(project, "/tablesdb/u/usage")
    assert db["range"] == "30d" and len(db["rows"]) == 30
    assert db["rows"][-1]["date"].endswith("T00:00:00.000+00:00")
    assert (db["tablesTotal"], db["rowsTotal"], db["databaseWritesTotal"]) == (2, 2, 5)
    assert db["storageTotal"] == all_["storageTotal"]
    legacy = ok(project, "/databases/u/usage?range=90d")
    assert len(legacy["documents"]) == 90 and legacy["collectionsTotal"] == 2

    table = ok(project, "/tablesdb/u/tables/t/usage?range=24h")
    assert (table["rowsTotal"], last(table["rows"])) == (2, 2) and "documents" not in table
    coll = ok(project, "/databases/u/collections/t/usage")
    assert (coll["documentsTotal"], last(coll["documents"])) == (2, 2)

    # Bad ranges, missing tables, callers without a key.
    status, _, body = get(project, "/tablesdb/usage?range=7d")
    assert (status, body["type"]) == (400, "general_argument_invalid")
    status, _, body = get(project, "/tablesdb/u/tables/nope/usage")
    assert (status, body["type"]) == (404, "table_not_found")
    status, _, body = get(project, "/databases/nope/usage")
    assert (status, body["type"]) == (404, "database_not_found")
    status, _, body = get(project, "/databases/usage", key=False)
    assert status == 401, body

    # A deleted table takes its rows and bytes out of the figures.
    t.delete_table("u", "t")
    after = ok(project, "/tablesdb/usage?range=24h")
    assert (after["tablesTotal"], after["rowsTotal"], after["storageTotal"]) == (1, 0, 0)
    assert (last(after["tables"]), last(after["rows"])) == (1, 0)
    # A table made again with the same id starts from nothing.
    t.create_table("u", "t", "t")
    again = ok(project, "/tablesdb/u/tables/t/usage?range=24h")
    assert again["rowsTotal"] == 0 and all(b["value"] == 0 for b in again["rows"])
    t.delete("u")
    gone = ok(project, "/tablesdb/usage?range=24h")
    assert (gone["databasesTotal"], last(gone["databases"]), gone["tablesTotal"]) == (0, 0, 0)


def test_bytes_follow_the_stored_rows_through_a_column_delete(tables, project):
    t = tables
    t.create(database_id="b", name="b")
    t.create_table("b", "w", "w")
    t.create_varchar_column("b", "w", "name", 64, False)
    t.create_varchar_column("b", "w", "extra", 512, False)
    time.sleep(0.3)
    for i in range(3):
        t.create_row("b", "w", f"r{i}", {"name": "n", "extra": "x" * 400})
    full = ok(project, "/tablesdb/b/usage?range=24h")["storageTotal"]
    assert full > 1200
    # Deleting the column rewrites the stored rows (a background job): the bytes go with it.
    t.delete_column("b", "w", "extra")
    deadline = time.time() + 20
    while ok(project, "/tablesdb/b/usage?range=24h")["storageTotal"] > full - 1200 and time.time() < deadline:
        time.sleep(0.2)
    assert ok(project, "/tablesdb/b/usage?range=24h")["storageTotal"] < full - 1200
    for i in range(3):
        t.delete_row("b", "w", f"r{i}")
    db = ok(project, "/tablesdb/b/usage?range=24h")
    assert db["storageTotal"] == 0 and last(db["storage"]) == 0 and db["rowsTotal"] == 0


def test_reads_reach_the_counters(tables, project):
    t = tables
    t.create(database_id="r", name="r")
    t.create_table("r", "t", "t")
    t.create_varchar_column("r", "t", "name", 64, False)
    time.sleep(0.3)
    t.create_row("r", "t", "a", {"name": "a"})
    for _ in range(3):
        t.list_rows("r", "t")
    t.get_row("r", "t", "a")
    deadline = time.time() + 40
    while True:
        db = ok(project, "/tablesdb/r/usage?range=24h")
        if db["databaseReadsTotal"] >= 4 or time.time() > deadline:
            break
        time.sleep(1)
    assert db["databaseReadsTotal"] == 4 and last(db["databaseReads"]) == 4
    assert ok(project, "/databases/usage?range=24h")["databasesReadsTotal"] == 4


def test_logs_record_who_wrote_what(tables, project):
    t = tables
    t.create(database_id="l", name="l")
    t.create_table("l", "t", "t", permissions=[Permission.create(Role.users())], row_security=True)
    t.create_varchar_column("l", "t", "name", 64, False)
    time.sleep(0.3)
    t.create_index("l", "t", "by_name", "key", ["name"])
    t.create_row("l", "t", "r1", {"name": "one"})
    t.update_row("l", "t", "r1", {"name": "uno"})

    rows = ok(project, "/tablesdb/l/tables/t/rows/r1/logs")
    assert rows["total"] == 2
    assert [x["event"] for x in rows["logs"]] == ["row.update", "row.create"]
    first = rows["logs"][0]
    assert (first["mode"], first["userType"], first["userId"], first["ip"]) == ("admin", "keys", "", "127.0.0.1")
    assert first["time"].endswith("+00:00") and first["countryCode"] == "--"
    docs = ok(project, "/databases/l/collections/t/documents/r1/logs")
    assert [x["event"] for x in docs["logs"]] == ["document.update", "document.create"]
    page = ok(project, "/tablesdb/l/tables/t/rows/r1/logs?queries[]=" + quote(Query.limit(1)) + "&queries[]=" + quote(Query.offset(1)))
    assert page["total"] == 2 and [x["event"] for x in page["logs"]] == ["row.create"]

    table = ok(project, "/tablesdb/l/tables/t/logs")
    assert [x["event"] for x in table["logs"]] == ["index.create", "column.create", "table.create"]
    legacy = ok(project, "/databases/l/collections/t/logs")
    assert [x["event"] for x in legacy["logs"]] == ["index.create", "attribute.create", "collection.create"]
    assert [x["event"] for x in ok(project, "/databases/l/logs")["logs"]] == ["database.create"]

    # A bulk change is one entry on its table.
    t.update_rows("l", "t", {"name": "all"}, [Query.equal("name", "uno")])
    assert ok(project, "/tablesdb/l/tables/t/logs")["logs"][0]["event"] == "rows.update"

    # A user's write names the user.
    client = Client().set_endpoint(project.node.url()).set_project(project.id)
    account = Account(client)
    account.create(ID.unique(), "logs@example.com", "password1234", "Logger")
    # The SSR flow: a key-holding client makes the session, the user's client sends it.
    session = Account(project.client()).create_email_password_session("logs@example.com", "password1234")
    client.set_session(session.secret)
    TablesDB(client).create_row("l", "t", "mine", {"name": "mine"})
    mine = ok(project, "/tablesdb/l/tables/t/rows/mine/logs")["logs"][0]
    assert (mine["event"], mine["userId"], mine["userEmail"], mine["userName"]) == (
        "row.create", session.userid, "logs@example.com", "Logger")
    assert (mine["mode"], mine["userType"]) == ("default", "user")

    # Only limit and offset; missing rows; no database log route in TablesDB; keys only.
    status, _, body = get(project, "/tablesdb/l/tables/t/logs?queries[]=" + quote(Query.equal("event", "x")))
    assert (status, body["type"]) == (400, "general_query_invalid")
    status, _, body = get(project, "/tablesdb/l/tables/t/rows/nope/logs")
    assert (status, body["type"]) == (404, "row_not_found")
    status, _, body = get(project, "/tablesdb/l/logs")
    assert (status, body["type"]) == (404, "general_route_not_found")
    status, _, body = http("GET", project.node.url() + "/tablesdb/l/tables/t/rows/mine/logs",
                           headers={"X-Appwrite-Project": project.id, "X-Appwrite-Session": session.secret})
    assert status == 401, body


@pytest.fixture
def three():
    c = TestCluster(3).start()
    yield c
    c.shutdown()
    errors = c.unexpected_errors()
    assert not errors, "\n".join(errors)


def test_every_node_answers_the_same_figures(three):
    class P:
        pass

    p = P()
    p.node = three.leader()
    p.id = "usage3"
    p.key = create_project(p.node, p.id)
    nodes = three.live()
    t = TablesDB(Client().set_endpoint(nodes[1].url()).set_project(p.id).set_key(p.key))
    t.create(database_id="d", name="d")
    t.create_table("d", "t", "t")
    t.create_varchar_column("d", "t", "name", 64, False)
    time.sleep(0.5)
    for i in range(5):
        t.create_row("d", "t", f"r{i}", {"name": str(i)})
    reader = TablesDB(Client().set_endpoint(nodes[2].url()).set_project(p.id).set_key(p.key))
    for _ in range(2):
        reader.list_rows("d", "t")
    deadline = time.time() + 40
    while ok(p, "/tablesdb/d/usage?range=24h", nodes[0])["databaseReadsTotal"] < 2 and time.time() < deadline:
        time.sleep(1)
    answers = [ok(p, "/tablesdb/d/usage?range=24h", n) for n in nodes]
    for a in answers:
        del a["databaseReads"], a["databaseWrites"], a["rows"], a["documents"], a["tables"], a["collections"], a["storage"]
    assert answers[0]["rowsTotal"] == 5 and answers[0]["databaseWritesTotal"] == 5
    assert answers[0]["databaseReadsTotal"] == 2
    assert answers[1] == answers[0] and answers[2] == answers[0]
    logs = [ok(p, "/tablesdb/d/tables/t/rows/r3/logs", n) for n in nodes]
    assert logs[0]["total"] == 1 and logs[1] == logs[0] and logs[2] == logs[0]
    three.assert_consistent()
