"""Bounded random bad input: every answer is a well-formed response (an Appwrite error body
for failures, never a 5xx), the node stays up, and the committed state is unchanged."""
import json
import random

from harness import http

NASTY = [None, True, -1, 0, 2**63, -(2**63) - 1, 1e308, 3.5, "", "x" * 5000, "unique()", "../..", "\u0000",
         "é", [], [None], [[1]], {}, {"a": {"b": []}}, "[", '{"method":"equal"}']


def rand_value(rng, depth=0):
    if depth < 2 and rng.random() < 0.2:
        return {rng.choice(["name", "n", "$id", "data", "queries", "x"]): rand_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if depth < 2 and rng.random() < 0.2:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(NASTY)


def rand_query(rng):
    q = {"method": rng.choice(["equal", "between", "search", "limit", "cursorAfter", "and", "or", "select", "nope", "orderAsc"])}
    if rng.random() < 0.7:
        q["attribute"] = rng.choice(["name", "n", "$id", "missing", "", "tags"])
    if rng.random() < 0.8:
        q["values"] = rand_value(rng) if rng.random() < 0.3 else [rand_value(rng)]
    return json.dumps(q) if rng.random() < 0.9 else rng.choice(["", "{", "[]", "null"])


def test_random_bad_requests(project, tables):
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_varchar_column("db", "t", "name", 8, True)
    tables.create_integer_column("db", "t", "n", False, min=0, max=10)
    tables.create_row("db", "t", "r1", {"name": "ok", "n": 1})
    base = project.node.url() + "/tablesdb/db/tables/t"
    paths = ["/rows", "/rows/r1", "/rows/r1/n/increment", "/columns/integer", "/columns/string", "/indexes",
             "/columns/n", "/rows/%00", "/rows/" + "x" * 300, ""]
    rng = random.Random(1234)
    before = http("GET", base + "/rows", headers=project.headers())[2]
    for i in range(400):
        method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE"])
        path = rng.choice(paths)
        if method == "GET":
            qs = "&".join(f"queries[{k}]={__import__('urllib.parse').parse.quote(rand_query(rng))}" for k in range(rng.randint(0, 3)))
            status, headers, body = http(method, base + path + ("?" + qs if qs else ""), headers=project.headers())
        else:
            payload = rand_value(rng) if rng.random() < 0.3 else {
                "rowId": rng.choice(["unique()", "bad id", "r9", "", None]),
                "data": rand_value(rng), "key": rng.choice(["k", "", None, "$x"]), "required": rand_value(rng),
                "queries": [rand_query(rng)], "rows": rand_value(rng),
            }
            raw = json.dumps(payload).encode() if rng.random() < 0.9 else b"{\"broken"
            # Never delete the fixtures: bulk deletes and row deletes go to a missing row only.
            if method == "DELETE":
                path = "/rows/missing-row"
            if method in ("POST", "PUT", "PATCH") and path in ("/rows", "/rows/r1", "/rows/r1/n/increment"):
                method = "POST" if path == "/rows" else method
            status, headers, body = http(method, base + path, raw, project.headers())
        assert status < 500, (i, method, path, status, body)
        if status >= 400:
            assert isinstance(body, dict) and {"message", "code", "type", "version"} <= set(body), (i, body)
    # Only valid creates could have changed anything: the fixture row is intact.
    after = http("GET", base + "/rows/r1", headers=project.headers())
    assert after[0] == 200 and after[2]["name"] == "ok"
    assert http("GET", project.node.url() + "/health/version")[0] == 200
    assert before["total"] >= 1
