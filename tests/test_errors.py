"""Bad input gets an Appwrite error body with the right status and type, and changes nothing."""
import pytest
from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.services.tables_db import TablesDB

from harness import ROOT_KEY, http


def check_error(status, headers, body, code, typ):
    assert status == code, body
    assert headers.get("content-type", "").startswith("application/json")
    assert set(body) == {"message", "code", "type", "version"}, body
    assert body["code"] == code and body["type"] == typ and body["message"], body


@pytest.fixture
def base(project, tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_varchar_column("db", "t", "name", 8, True)
    tables.create_integer_column("db", "t", "n", False, min=0, max=10)
    tables.create_row("db", "t", "r1", {"name": "ok", "n": 1})
    return project


def state(project):
    status, _, rows = http("GET", project.node.url() + "/tablesdb/db/tables/t/rows", headers=project.headers())
    _, _, cols = http("GET", project.node.url() + "/tablesdb/db/tables/t/columns", headers=project.headers())
    assert status == 200
    return rows, cols


def test_bad_requests_change_nothing(base):
    url = base.node.url() + "/tablesdb/db/tables/t/rows"
    h = base.headers()
    before = state(base)
    cases = [
        (b"{not json", 400, "general_argument_invalid"),
        (b"[1,2]", 400, "general_argument_invalid"),
        ({"rowId": "bad id!", "data": {"name": "x"}}, 400, "general_argument_invalid"),
        ({"rowId": "x" * 37, "data": {"name": "x"}}, 400, "general_argument_invalid"),
        ({"rowId": "r2", "data": {"name": "much too long"}}, 400, "row_invalid_structure"),
        ({"rowId": "r2", "data": {"name": "x", "n": 11}}, 400, "row_invalid_structure"),
        ({"rowId": "r2", "data": {"name": "x", "n": "1"}}, 400, "row_invalid_structure"),
        ({"rowId": "r2", "data": {"name": "x", "ghost": 1}}, 400, "row_invalid_structure"),
        ({"rowId": "r2", "data": {"name": {"nested": 1}}}, 400, "row_invalid_structure"),
        ({"rowId": "r2", "data": {"n": 1}}, 400, "row_invalid_structure"),
        ({"rowId": "r2"}, 400, "row_missing_data"),
        ({"rowId": "r2", "data": {"name": "x"}, "permissions": ['read("nobody")']}, 400, "general_argument_invalid"),
        ({"rowId": "r2", "data": {"name": "x"}, "permissions": ['create("any")']}, 400, "general_argument_invalid"),
        ({"rowId": "r1", "data": {"name": "x"}}, 409, "row_already_exists"),
        ({"rows": [{"name": "a"}], "data": {"name": "b"}}, 400, "general_bad_request"),
    ]
    for body, code, typ in cases:
        status, headers, reply = http("POST", url, body, h)
        check_error(status, headers, reply, code, typ)
    status, headers, reply = http("GET", url + "?queries[0]=%7B%22method%22%3A%22nope%22%7D", headers=h)
    check_error(status, headers, reply, 400, "general_query_invalid")
    status, headers, reply = http("PATCH", url + "/r1", {"data": {"n": -1}}, h)
    check_error(status, headers, reply, 400, "row_invalid_structure")
    status, headers, reply = http("POST", base.node.url() + "/tablesdb/db/tables/t/columns/integer", {"key": "k", "required": "yes"}, h)
    check_error(status, headers, reply, 400, "general_argument_invalid")
    status, headers, reply = http("POST", base.node.url() + "/tablesdb/db/tables/t/columns/integer", {"key": "k"}, h)
    check_error(status, headers, reply, 400, "general_argument_invalid")
    status, headers, reply = http("GET", base.node.url() + "/tablesdb/db/nothing/here", headers=h)
    check_error(status, headers, reply, 404, "general_route_not_found")
    assert state(base) == before


def test_auth_errors(base):
    url = base.node.url() + "/tablesdb/db/tables/t/rows"
    status, headers, reply = http("GET", url)
    check_error(status, headers, reply, 404, "project_not_found")
    status, headers, reply = http("GET", url, headers={"X-Appwrite-Key": base.key})
    check_error(status, headers, reply, 403, "project_id_missing")
    # A guest may list rows, but this table grants no one read.
    status, headers, reply = http("GET", url, headers={"X-Appwrite-Project": base.id})
    check_error(status, headers, reply, 401, "user_unauthorized")
    status, headers, reply = http("GET", base.node.url() + "/tablesdb", headers={"X-Appwrite-Project": base.id})
    check_error(status, headers, reply, 401, "general_unauthorized_scope")
    status, headers, reply = http("GET", url, headers={"X-Appwrite-Project": base.id, "X-Appwrite-Key": "standard_bogus"})
    check_error(status, headers, reply, 401, "user_unauthorized")
    status, headers, reply = http("GET", url, headers={"X-Appwrite-Project": "nope", "X-Appwrite-Key": base.key})
    check_error(status, headers, reply, 404, "project_not_found")
    # A key scoped to reading rows cannot write them or change the schema.
    console = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    status, _, key = http("POST", base.node.url() + f"/projects/{base.id}/keys", {"name": "ro", "scopes": ["rows.read"]}, console)
    assert status == 201
    ro = TablesDB(Client().set_endpoint(base.node.url()).set_project(base.id).set_key(key["secret"]))
    assert ro.list_rows("db", "t").total == 1
    with pytest.raises(AppwriteException) as e:
        ro.create_row("db", "t", "x", {"name": "x"})
    assert e.value.code == 401 and e.value.type == "general_unauthorized_scope"
    with pytest.raises(AppwriteException) as e:
        ro.create_integer_column("db", "t", "k", False)
    assert e.value.code == 401
    # Expired keys are refused.
    status, _, old = http("POST", base.node.url() + f"/projects/{base.id}/keys",
                          {"name": "old", "scopes": ["rows.read"], "expire": "2020-01-01T00:00:00.000+00:00"}, console)
    assert status == 201
    status, headers, reply = http("GET", url, headers={"X-Appwrite-Project": base.id, "X-Appwrite-Key": old["secret"]})
    check_error(status, headers, reply, 401, "project_key_expired")
    # Operator routes need the root key.
    status, headers, reply = http("POST", base.node.url() + "/projects", {"projectId": "x", "name": "x"}, {"X-Appwrite-Key": base.key})
    check_error(status, headers, reply, 401, "general_unauthorized_scope")
    assert state(base)[0]["total"] == 1


def test_wire_details(base):
    h = base.headers()
    status, headers, _ = http("DELETE", base.node.url() + "/tablesdb/db/tables/t/rows/r1", {}, h)
    assert status == 204 and "content-type" in headers and not headers["content-type"].startswith("application/json")
    status, _, body = http("GET", base.node.url() + "/health/version")
    assert status == 200 and body == {"version": "1.9.6"}
    status, _, body = http("GET", base.node.url() + "/health", headers=h)
    assert status == 200 and body["status"] == "pass"
    status, _, body = http("GET", base.node.url() + f"/tablesdb?project={base.id}", headers={"X-Appwrite-Key": base.key})
    assert status == 200 and body["total"] == 1


def test_a_request_larger_than_one_log_entry_is_refused_and_changes_nothing(base, tables):
    tables.create_longtext_column("db", "t", "body", False)
    before = state(base)
    # ~10 MiB of rows in one bulk create: more than one command may replicate (8 MiB).
    big = [{"$id": f"big{i}", "name": "x", "body": "y" * 10_000} for i in range(1000)]
    status, headers, reply = http("POST", base.node.url() + "/tablesdb/db/tables/t/rows", {"rows": big}, base.headers())
    check_error(status, headers, reply, 400, "general_argument_invalid")
    assert "too large" in reply["message"]
    assert state(base) == before
    # Under the cap, the same rows go in.
    status, _, reply = http("POST", base.node.url() + "/tablesdb/db/tables/t/rows", {"rows": big[:500]}, base.headers())
    assert status == 201, reply


def test_tables_errors_keep_the_ids_the_client_sent(base, tables):
    # TablesDB words for the error, the client's own id untouched (not 'my_row').
    with pytest.raises(AppwriteException) as e:
        tables.get_row("db", "t", "my_document")
    assert e.value.type == "row_not_found"
    assert e.value.message == "Row with the requested ID 'my_document' could not be found."


def test_a_query_past_the_scan_budget_times_out_and_indexed_ones_do_not():
    """An unindexed filter examines at most `--scan-budget` rows, then answers Appwrite's
    `database_timeout` (408); a plain listing counts from the index and an indexed filter
    examines only its matches, so both still answer."""
    import time
    from appwrite.enums.tables_db_index_type import TablesDBIndexType
    from appwrite.query import Query
    from harness import Node, create_project
    from conftest import Project
    node = Node(extra_args=["--scan-budget", "100"]).start()
    try:
        project = Project(node, "budget", create_project(node, "budget"))
        tables = project.tables()
        tables.create(database_id="db", name="db")
        tables.create_table("db", "t", "T")
        tables.create_integer_column("db", "t", "n", False)
        tables.create_integer_column("db", "t", "m", False)
        tables.create_rows("db", "t", [{"n": i, "m": i % 3} for i in range(150)])
        tables.create_index("db", "t", "by_n", TablesDBIndexType.KEY, ["n"])
        deadline = time.time() + 30
        while tables.get_index("db", "t", "by_n").status != "available":
            assert time.time() < deadline
            time.sleep(0.05)
        with pytest.raises(AppwriteException) as e:
            tables.list_rows("db", "t", [Query.equal("m", 1)])
        assert (e.value.code, e.value.type) == (408, "database_timeout"), e.value
        assert "adding an index" in e.value.message
        assert tables.list_rows("db", "t").total == 150
        assert tables.list_rows("db", "t", [Query.less_than("n", 50)]).total == 50
    finally:
        node.stop()
    assert not node.unexpected_errors()
