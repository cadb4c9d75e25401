"""End users under load (benchmark, not a test). One Basalt node on loopback, driven by `wrk`:

- email/password sign-ins per second (each one an argon2id verification and a session written
  through Raft), at 2 and 8 connections, per core of this machine;
- `getRow` by a signed-in user (`X-Appwrite-Session`) against the same with an API key, p50/p99;
- a list (`limit(25)`, with the total) by a user who may read 1% of 100,000 rows (row security,
  read by the built-in `$read` index) against the same list with an API key (all rows);
- the user's list filtered on an indexed column half the rows share (`equal("kind", "a")`): the
  planner's counts pick the user's `$read` runs (1,000 entries) over the column's (50,000).

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/auth.py [seconds]

Prints JSON with each run's rate, p50 and p99, and the ratios.
"""
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

from harness import Node, create_project, http  # noqa: E402
from vs_pocketbase import ensure_tools, q, run_wrk, wrk  # noqa: E402

ROWS = 100_000
PASSWORD = "correct-horse-battery"


def wrk_post(url, path, body, headers, connections, seconds):
    lua = f"wrk.method = 'POST'\nwrk.body = {json.dumps(json.dumps(body))}\n"
    return run_wrk(url + path, lua, {**headers, "Content-Type": "application/json"}, connections, seconds)


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    ensure_tools()
    node = Node(1).start()
    try:
        key = create_project(node, "auth")
        url = node.endpoint
        kh = {"X-Appwrite-Project": "auth", "X-Appwrite-Key": key}
        base = url + "/v1"
        status, _, u = http("POST", base + "/users", {"userId": "reader", "email": "reader@example.com",
                                                     "password": PASSWORD}, kh)
        assert status == 201, u
        status, _, s = http("POST", base + "/account/sessions/email",
                            {"email": "reader@example.com", "password": PASSWORD}, kh)
        assert status == 201 and s["secret"], s
        uh = {"X-Appwrite-Project": "auth", "X-Appwrite-Session": s["secret"]}
        for path, body in [
            ("/tablesdb", {"databaseId": "bench", "name": "bench"}),
            ("/tablesdb/bench/tables", {
                "tableId": "items", "name": "items", "rowSecurity": True,
                "columns": [{"key": "n", "type": "integer", "required": True},
                            {"key": "kind", "type": "varchar", "size": 8, "required": False}],
                "indexes": [{"key": "by_kind", "type": "key", "columns": ["kind"]}],
            }),
        ]:
            status, _, resp = http("POST", base + path, body, kh)
            assert status == 201, resp
        for start in range(0, ROWS, 1000):
            batch = [{"$id": f"r{i}", "n": i, "kind": "ab"[i % 2],
                      "$permissions": ['read("user:reader")' if i % 100 == 0 else 'read("user:other")']}
                     for i in range(start, start + 1000)]
            status, _, resp = http("POST", base + "/tablesdb/bench/tables/items/rows", {"rows": batch}, kh)
            assert status == 201, resp
        lists = ["/v1/tablesdb/bench/tables/items/rows?queries%5B0%5D="
                 + urllib.parse.quote(q("limit", values=[25]))]
        status, _, mine = http("GET", url + lists[0], headers=uh)
        assert status == 200 and mine["total"] == ROWS // 100 and len(mine["rows"]) == 25, (status, mine)
        status, _, everything = http("GET", url + lists[0], headers=kh)
        assert status == 200 and everything["total"] == 5000, everything
        kind_a = ["/v1/tablesdb/bench/tables/items/rows?queries%5B0%5D="
                  + urllib.parse.quote(q("limit", values=[25])) + "&queries%5B1%5D="
                  + urllib.parse.quote(q("equal", "kind", ["a"]))]
        status, _, mine_a = http("GET", url + kind_a[0], headers=uh)
        assert status == 200 and mine_a["total"] == ROWS // 100 and len(mine_a["rows"]) == 25, (status, mine_a)
        out = {"rows": ROWS, "readable_by_user": ROWS // 100}
        out["list_user_kind_a_c8"] = wrk(url, kind_a, uh, 8, seconds)
        for c in (8, 64):
            out[f"list_key_c{c}"] = wrk(url, lists, kh, c, seconds)
            out[f"list_user_c{c}"] = wrk(url, lists, uh, c, seconds)
            out[f"list_user_over_key_c{c}"] = round(
                out[f"list_key_c{c}"]["per_second"] / out[f"list_user_c{c}"]["per_second"], 2)
        gets = ["/v1/tablesdb/bench/tables/items/rows/r500"]
        out["get_key"] = wrk(url, gets, kh, 8, seconds)
        out["get_user"] = wrk(url, gets, uh, 8, seconds)
        ph = {"X-Appwrite-Project": "auth"}
        cores = os.cpu_count()
        for c in (2, 8):
            r = wrk_post(url, "/v1/account/sessions/email", {"email": "reader@example.com", "password": PASSWORD},
                         ph, c, seconds)
            r["per_core"] = round(r["per_second"] / cores, 1)
            out[f"sign_ins_c{c}"] = r
        print(json.dumps(out, indent=2))
    finally:
        node.stop()


if __name__ == "__main__":
    main()
