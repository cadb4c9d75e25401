"""Placement by region (`basalt cluster placement`): which regions hold voters and which hold
read replicas (Raft learners), kept so by the leader as the policy changes; and where the
leader should be, which the cluster returns to once the preferred region is back."""
import json
import subprocess
import time

import pytest

from harness import ROOT_KEY, TestCluster, basalt_bin, create_project, http

OP = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}


def placement(node, *flags):
    r = subprocess.run([basalt_bin(), "cluster", "placement", *flags, "--endpoint", node.endpoint,
                        "--root-key", ROOT_KEY], capture_output=True, text=True, timeout=60)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else r.stderr)


def roles(node):
    return {m["id"]: m["role"] for m in node.status()["members"]}


def wait_for(what, f, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            value = f()
            if value:
                return value
        except (AssertionError, OSError):
            value = None
        assert time.time() < deadline, f"{what}: never"
        time.sleep(0.1)


@pytest.fixture
def regions():
    # Node 4 is a second node in region c, in another zone.
    c = TestCluster(4, regions=["a", "b", "c", "c"], zones=[None, None, "c1", "c2"]).start()
    yield c
    c.shutdown()
    assert not c.unexpected_errors(), "\n".join(c.unexpected_errors())


def write_rows(node, key, n, tag):
    h = {"X-Appwrite-Project": "regions", "X-Appwrite-Key": key}
    for i in range(n):
        status, _, body = http("POST", node.url() + "/tablesdb/db/tables/t/rows",
                               {"rowId": f"{tag}{i}", "data": {"n": i}}, h)
        assert status == 201, body


def test_voters_learners_and_the_leader_follow_the_policy(regions):
    c = regions
    n1 = c.nodes[0]
    code, policy = placement(n1)
    assert code == 0 and policy == {"voters": [], "learners": [], "leaderRegion": None}, policy
    st = n1.status()
    assert {m["id"]: m["region"] for m in st["members"]} == {1: "a", 2: "b", 3: "c", 4: "c"}
    wait_for("zones recorded", lambda: {m["id"]: m["zone"] for m in n1.status()["members"]}
             == {1: None, 2: None, 3: "c1", 4: "c2"})
    assert all("lag" in m and "rtt_ms" in m for m in st["members"]), st
    assert st["placement"] == policy

    # Voters in three regions must survive losing any one: region c keeps one voter, and its
    # second node becomes a read replica (four voters, two in c, would not survive losing c).
    code, policy = placement(n1, "--voters", "a,b,c")
    assert code == 0 and policy["voters"] == ["a", "b", "c"], policy
    want = {1: "voter", 2: "voter", 3: "voter", 4: "learner"}
    wait_for("region c down to one voter", lambda: all(roles(n) == want for n in c.nodes))

    key = create_project(n1, "regions")
    h = {"X-Appwrite-Project": "regions", "X-Appwrite-Key": key}
    assert http("POST", n1.url() + "/tablesdb", {"databaseId": "db", "name": "db"}, h)[0] == 201
    assert http("POST", n1.url() + "/tablesdb/db/tables", {"tableId": "t", "name": "t"}, h)[0] == 201
    assert http("POST", n1.url() + "/tablesdb/db/tables/t/columns/integer", {"key": "n", "required": False}, h)[0] == 202
    wait_for("column available", lambda: http("GET", n1.url() + "/tablesdb/db/tables/t/columns/n", headers=h)[2]["status"] == "available")
    write_rows(n1, key, 20, "x")

    # The leader moves to the preferred region.
    code, policy = placement(n1, "--leader-region", "b")
    assert code == 0 and policy == {"voters": ["a", "b", "c"], "learners": [], "leaderRegion": "b"}, policy
    wait_for("leader in region b", lambda: all(n.status()["leader"] == 2 for n in c.nodes), timeout=40)

    # Losing the preferred region: the others take over (they campaign once no preferred
    # voter is healthy); back, it takes the lead again.
    c.expect_faults()
    c.nodes[1].kill()
    new = wait_for("a leader outside region b", lambda: c.leader(timeout=5).node_id != 2 and c.leader(timeout=5), timeout=40)
    write_rows(new, key, 10, "y")
    c.nodes[1].restart()
    wait_for("leader back in region b", lambda: all(n.status()["leader"] == 2 for n in c.live()), timeout=60)
    write_rows(c.nodes[1], key, 10, "z")

    # A region of read replicas: its voter steps down to a learner and keeps its copy.
    code, policy = placement(n1, "--voters", "a,b", "--learners", "c")
    assert code == 0 and policy["learners"] == ["c"], policy
    want = {1: "voter", 2: "voter", 3: "learner", 4: "learner"}
    wait_for("region c read replicas", lambda: all(roles(n) == want for n in c.nodes))
    write_rows(n1, key, 5, "w")
    c.assert_consistent()
    rows = http("GET", c.nodes[3].url() + "/tablesdb/db/tables/t/rows", headers=h)[2]
    assert rows["total"] == 45, rows


def test_placement_refuses_bad_policies_and_non_operators(regions):
    n1 = regions.nodes[0]
    for flags, why in ((["--voters", "a,b", "--leader-region", "c"], "holds no voters"),
                       (["--voters", "a,a"], "named twice"),
                       (["--voters", "a", "--learners", "a"], "named twice"),
                       (["--voters", "a b"], "not a region name")):
        code, err = placement(n1, *flags)
        assert code != 0 and why in err, (flags, err)
    status, _, body = http("PUT", n1.url() + "/cluster/placement", {"voters": [], "learners": ["c"]}, OP)
    assert status == 400 and body["type"] == "general_argument_invalid", body
    status, _, body = http("PUT", n1.url() + "/cluster/placement", {"voters": 5}, OP)
    assert status == 400, body
    status, _, body = http("PUT", n1.url() + "/cluster/placement", {"voters": ["a"]},
                           {"X-Appwrite-Project": "console", "X-Appwrite-Key": "wrong"})
    assert status == 401, body
    # Nothing changed.
    assert placement(n1) == (0, {"voters": [], "learners": [], "leaderRegion": None})
    assert all(r == "voter" for r in roles(n1).values())


def test_bounded_staleness_reads_through_a_follower(regions):
    """`X-Basalt-Max-Staleness` through the SDK's header hook and raw HTTP: a follower answers
    from its own state with a staleness within the bound, and never misses a write that was
    acknowledged before its staleness horizon; a bound tighter than it can prove is served
    with a read barrier (staleness 0, the write seen); a malformed bound is a 400."""
    from appwrite.client import Client
    from appwrite.services.tables_db import TablesDB

    c = regions
    leader = c.leader()
    follower = next(n for n in c.nodes if n is not leader)
    key = create_project(leader, "stale")
    admin = TablesDB(Client().set_endpoint(leader.url()).set_project("stale").set_key(key))
    admin.create(database_id="db", name="db")
    admin.create_table("db", "t", "T")
    admin.create_integer_column("db", "t", "n", True)
    wait_for("column available", lambda: admin.get_column("db", "t", "n").status.value == "available")

    sdk = TablesDB(Client().set_endpoint(follower.url()).set_project("stale").set_key(key)
                   .add_header("X-Basalt-Max-Staleness", "2s"))
    h = {"X-Appwrite-Project": "stale", "X-Appwrite-Key": key}
    for i in range(30):
        admin.create_row("db", "t", f"r{i}", {"n": i})
        acked = time.time()
        time.sleep(0.05)
        sent = time.time()
        status, hdrs, body = http("GET", follower.url() + "/tablesdb/db/tables/t/rows",
                                  headers={**h, "X-Basalt-Max-Staleness": "2s"})
        assert status == 200, body
        stale = int(hdrs["x-basalt-staleness-ms"])
        assert 0 <= stale <= 2000 and int(hdrs["x-basalt-applied-index"]) > 0, hdrs
        seen = {r["$id"] for r in body["rows"]}
        # Acknowledged before the horizon the answer vouches for: it must be there.
        if acked < sent - stale / 1000:
            assert f"r{i}" in seen, (i, stale)
        assert sdk.list_rows("db", "t").total <= i + 1
    # Tighter than a follower can prove (a heartbeat is 150 ms): a barrier, current.
    admin.create_row("db", "t", "last", {"n": 99})
    status, hdrs, body = http("GET", follower.url() + "/tablesdb/db/tables/t/rows/last",
                              headers={**h, "X-Basalt-Max-Staleness": "1ms"})
    assert status == 200 and hdrs["x-basalt-staleness-ms"] == "0", (status, hdrs, body)
    # Without the header: linearizable, and no staleness headers.
    status, hdrs, _ = http("GET", follower.url() + "/tablesdb/db/tables/t/rows", headers=h)
    assert status == 200 and "x-basalt-staleness-ms" not in hdrs
    # The SDK's header hook carries the header (a malformed one is refused).
    from appwrite.exception import AppwriteException
    bad_sdk = TablesDB(Client().set_endpoint(follower.url()).set_project("stale").set_key(key)
                       .add_header("X-Basalt-Max-Staleness", "soon"))
    with pytest.raises(AppwriteException) as e:
        bad_sdk.list_rows("db", "t")
    assert e.value.code == 400
    for bad in ("soon", "-1s", "2h", "1e9s"):
        status, _, body = http("GET", follower.url() + "/tablesdb/db/tables/t/rows",
                               headers={**h, "X-Basalt-Max-Staleness": bad})
        assert status == 400 and body["type"] == "general_argument_invalid", (bad, body)
