"""Three real nodes in one Raft group: replication, linearizable reads through any node,
leader failover under load with no acknowledged write lost, catch-up by snapshot, membership
changes, and a bounded 503 from a node that cannot reach a quorum."""
import json
import random
import subprocess
import threading
import time

import pytest
from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.query import Query
from appwrite.services.tables_db import TablesDB

from harness import TestCluster, create_project, fault_bin, http


def tdb(node, project, key):
    return TablesDB(Client().set_endpoint(node.url()).set_project(project).set_key(key))


def eventually(fn, timeout=30):
    """Retries `fn` while the cluster answers 503 (healing after a fault)."""
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except AppwriteException as e:
            if e.code != 503 or time.time() > deadline:
                raise
            time.sleep(0.2)


def all_rows(t):
    return eventually(lambda: _all_rows(t))


def _all_rows(t):
    seen, cursor = {}, None
    while True:
        qs = [Query.limit(1000)] + ([Query.cursor_after(cursor)] if cursor else [])
        page = t.list_rows("db", "t", qs).rows
        if not page:
            return seen
        for r in page:
            assert r.id not in seen, f"{r.id} appears twice"
            seen[r.id] = r.data["n"]
        cursor = page[-1].id


class Writers:
    """Threads that create rows `w{w}-{i}` through the node `pick(w, rng)` names, as fast as
    they can, while the test does harm. `acked` maps every acknowledged row to its value; a
    failed or timed-out write is not recorded (its outcome is unknown: it may or may not be
    present, but never twice). `on_ack(node, started)` runs under the lock for each ack.
    A context manager: the threads stop when the block ends, however it ends."""

    def __init__(self, cluster, key, pick, n=6, on_ack=None):
        self.cluster, self.key, self.pick, self.on_ack = cluster, key, pick, on_ack
        self.acked, self.lock, self.stop = {}, threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(n)]

    def _run(self, w):
        rng = random.Random(w)
        i = 0
        while not self.stop.is_set():
            node = self.pick(w, rng)
            rid = f"w{w}-{i}"
            i += 1
            started = time.time()
            try:
                tdb(node, "clu", self.key).create_row("db", "t", rid, {"n": i})
            except Exception:
                continue
            with self.lock:
                self.acked[rid] = i
                if self.on_ack:
                    self.on_ack(node, started)

    def count(self):
        with self.lock:
            return len(self.acked)

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=60)


def wait_for_total(node, key, total, timeout):
    """Waits until `node` lists `total` rows (it answers 503 while it catches up)."""
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        try:
            seen = tdb(node, "clu", key).list_rows("db", "t").total
            if seen == total:
                return
        except AppwriteException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"node {node.node_id} lists {seen} rows, not {total}, after {timeout} s")


def assert_acked_everywhere(cluster, key, acked):
    """Every acknowledged row is on every node, once, with its value; and every replica holds
    byte-identical state at one log entry (`basalt cluster check`)."""
    for node in cluster.nodes:
        seen = all_rows(tdb(node, "clu", key))
        missing = [r for r in acked if r not in seen]
        assert not missing, f"node {node.node_id} lacks {len(missing)} acknowledged rows, e.g. {missing[:3]}"
        assert all(seen[r] == n for r, n in acked.items())
    cluster.assert_consistent()


@pytest.fixture
def cluster(request):
    c = TestCluster(3, extra_args=getattr(request, "param", []))
    c.start()
    yield c
    c.shutdown()
    errors = c.unexpected_errors()
    assert not errors, "\n".join(errors)


def setup_table(cluster):
    nodes = cluster.nodes
    key = create_project(nodes[1], "clu")
    t = tdb(nodes[2], "clu", key)
    t.create(database_id="db", name="db")
    t.create_table("db", "t", "T")
    t.create_integer_column("db", "t", "n", True)
    return key


def test_replication_and_linearizable_reads_through_any_node(cluster):
    key = setup_table(cluster)
    clients = [tdb(n, "clu", key) for n in cluster.nodes]
    for i in range(60):
        clients[i % 3].create_row("db", "t", f"r{i}", {"n": i})
        # Read-your-writes through a different node, right after the acknowledgement.
        assert clients[(i + 1) % 3].get_row("db", "t", f"r{i}").data["n"] == i
        clients[(i + 2) % 3].update_row("db", "t", f"r{i}", {"n": i * 10})
        assert clients[i % 3].get_row("db", "t", f"r{i}").data["n"] == i * 10
    for c in clients:
        assert c.list_rows("db", "t").total == 60
    # Any node's status shows every member's role, health and applied index.
    for node in cluster.nodes:
        deadline = time.time() + 5
        while True:
            status = node.status()
            if all(m["health"] == "alive" and (m["applied"] or 0) >= 100 for m in status["members"]) \
                    or time.time() > deadline:
                break
            time.sleep(0.1)
        assert sorted(m["id"] for m in status["members"]) == [1, 2, 3]
        assert all(m["role"] == "voter" and m["health"] == "alive" for m in status["members"]), status
        assert all(m["applied"] >= 100 for m in status["members"]), status
        assert len({m["gossip"] for m in status["members"]}) == 3, status


def test_leader_kill_9_under_load_loses_no_acknowledged_write(cluster):
    key = setup_table(cluster)
    cluster.expect_faults()
    dead = set()

    def live_node(w, rng):
        return rng.choice([n for n in cluster.nodes if n.node_id not in dead])

    with Writers(cluster, key, live_node) as writers:
        time.sleep(1.5)
        leader = cluster.leader()
        before_kill = writers.count()
        dead.add(leader.node_id)
        leader.kill()
        killed_at = time.time()
        # Writes resume through the survivors once a new leader is elected.
        while writers.count() < before_kill + 50 and time.time() - killed_at < 20:
            time.sleep(0.05)
        time.sleep(1.0)
    assert len(writers.acked) >= before_kill + 50, "writes did not resume after the leader died"
    new_leader = cluster.leader()
    assert new_leader.node_id != leader.node_id
    # The survivors see the killed node go silent: suspect, then dead.
    assert wait_health(new_leader, leader.node_id, {"dead"}, timeout=10) == "dead"
    assert wait_health(new_leader, new_leader.node_id, {"alive"}, timeout=0) == "alive"
    leader.restart()
    cluster.wait_for_voters([1, 2, 3])
    assert_acked_everywhere(cluster, key, writers.acked)


@pytest.mark.parametrize("cluster", [["--snapshot-every", "20"]], indirect=True)
def test_lagging_node_catches_up_through_a_snapshot(cluster):
    key = setup_table(cluster)
    cluster.expect_faults()
    lagging = next(n for n in cluster.nodes if n is not cluster.leader())
    assert lagging.stop() == 0
    writer = tdb(cluster.leader(), "clu", key)
    for i in range(0, 300, 3):
        writer.create_rows("db", "t", [{"$id": f"r{i + k}", "n": i + k} for k in range(3)])
    for i in range(60):
        writer.create_row("db", "t", f"s{i}", {"n": i})
    lagging.restart()
    wait_for_total(lagging, key, 360, timeout=30)
    assert len(all_rows(tdb(lagging, "clu", key))) == 360
    assert "installing a snapshot from the leader" in lagging.log_text()


def test_join_a_fourth_node_then_remove_one(cluster):
    key = setup_table(cluster)
    cluster.expect_faults()
    t = tdb(cluster.nodes[0], "clu", key)
    t.create_rows("db", "t", [{"$id": f"r{i}", "n": i} for i in range(30)])
    fourth = cluster.add_node(4)
    cluster.wait_for_voters([1, 2, 3, 4])
    assert tdb(fourth, "clu", key).list_rows("db", "t").total == 30
    victim = next(n for n in cluster.nodes if n is not cluster.leader() and n.node_id != 4)
    h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": "test-root-key-0123456789abcdef"}
    status, _, body = http("POST", fourth.url() + "/cluster/remove", {"nodeId": victim.node_id}, h)
    assert status == 200, body
    victim.stop()
    remaining = sorted(n.node_id for n in cluster.nodes if n is not victim)
    cluster.wait_for_voters(remaining)
    tdb(fourth, "clu", key).create_row("db", "t", "after", {"n": 1})
    assert tdb(cluster.nodes[0], "clu", key).get_row("db", "t", "after").data["n"] == 1
    # Asked again (an answer lost), the removal is done; a node never admitted is refused.
    status, _, body = http("POST", fourth.url() + "/cluster/remove", {"nodeId": victim.node_id}, h)
    assert status == 200, body
    status, _, body = http("POST", fourth.url() + "/cluster/remove", {"nodeId": 99}, h)
    assert status == 400, body
    # The leader itself, asked through a follower, then asked through itself: it leaves the
    # membership, then the members it left retire it, and those left go on.
    for n_rows, through_itself in ((32, False), (33, True)):
        leader = cluster.leader()
        left = [n for n in cluster.live() if n is not leader]
        via = leader if through_itself else left[0]
        status, _, body = http("POST", via.url() + "/cluster/remove", {"nodeId": leader.node_id}, h)
        assert status == 200, body
        leader.stop()
        cluster.wait_for_voters([n.node_id for n in left])
        t = tdb(left[0], "clu", key)
        t.create_row("db", "t", f"after-leader-{n_rows}", {"n": 2})
        assert len(all_rows(t)) == n_rows
        code, report = cluster.check()
        assert code == 0, report
        # It was retired too: its certificate is refused as a removed node's.
        if fault_bin():
            r = subprocess.run([fault_bin(), "probe-rpc", "--grpc", left[0].grpc, "--as",
                                f"files:{leader.data_dir}", "--claim", str(leader.node_id)],
                               capture_output=True, timeout=180)
            assert r.returncode == 0, r.stderr.decode()
            answers = json.loads(r.stdout)
            assert "was removed from this cluster" in answers["ping"], answers


def test_minority_answers_503_within_bounded_time(cluster):
    key = setup_table(cluster)
    cluster.expect_faults()
    lone = cluster.nodes[2]
    t = tdb(lone, "clu", key)
    t.create_row("db", "t", "before", {"n": 1})
    others = [n for n in cluster.nodes if n is not lone]
    for n in others:
        n.pause()
    try:
        for call in (lambda: t.list_rows("db", "t"), lambda: t.create_row("db", "t", "during", {"n": 2})):
            started = time.time()
            with pytest.raises(AppwriteException) as e:
                call()
            assert e.value.code == 503
            assert time.time() - started < 12
        # A request without credentials for a route no guest may use is refused on the node's
        # own state: no quorum round to wait for, so it is answered at once even here. A
        # guest's read of rows (which permissions may allow) waits for the quorum like any
        # read, and gets its 503 in bounded time.
        anonymous = TablesDB(Client().set_endpoint(lone.url()).set_project("clu"))
        started = time.time()
        with pytest.raises(AppwriteException) as e:
            anonymous.list()
        assert e.value.code == 401 and time.time() - started < 2
        started = time.time()
        with pytest.raises(AppwriteException) as e:
            anonymous.list_rows("db", "t")
        assert e.value.code == 503 and time.time() - started < 12
    finally:
        for n in others:
            n.resume()
    cluster.wait_for_voters([1, 2, 3])
    deadline = time.time() + 20
    while True:
        try:
            t.create_row("db", "t", "after", {"n": 3})
            break
        except AppwriteException:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    assert t.get_row("db", "t", "before").data["n"] == 1


def test_a_node_restarted_on_new_addresses_is_found_again(cluster):
    key = setup_table(cluster)
    cluster.expect_faults()
    mover = next(n for n in cluster.nodes if n is not cluster.leader())
    old_grpc = mover.grpc
    assert mover.stop() == 0
    writer = tdb(cluster.leader(), "clu", key)
    writer.create_row("db", "t", "while-away", {"n": 1})
    mover.restart(new_addresses=True)
    assert mover.grpc != old_grpc
    deadline = time.time() + 20
    while True:
        members = {m["id"]: m for m in cluster.leader().status()["members"]}
        if members[mover.node_id]["grpc"] == mover.grpc or time.time() > deadline:
            break
        time.sleep(0.2)
    assert members[mover.node_id]["grpc"] == mover.grpc
    # Gossip finds it at its new port too (same id, new address).
    assert wait_health(cluster.leader(), mover.node_id, {"alive"}) == "alive"
    writer.create_row("db", "t", "after-move", {"n": 2})
    moved = tdb(mover, "clu", key)
    assert eventually(lambda: moved.get_row("db", "t", "after-move")).data["n"] == 2
    assert moved.get_row("db", "t", "while-away").data["n"] == 1


def wait_health(observer, node_id, wanted, timeout=15):
    """Polls `observer`'s status until `node_id`'s health is one of `wanted`; returns the last."""
    deadline = time.time() + timeout
    while True:
        health = {m["id"]: m["health"] for m in observer.status()["members"]}[node_id]
        if health in wanted or time.time() > deadline:
            return health
        time.sleep(0.1)


def test_gossip_health_follows_a_paused_node(cluster):
    setup_table(cluster)
    cluster.expect_faults()
    frozen = next(n for n in cluster.nodes if n is not cluster.leader())
    watchers = [n for n in cluster.nodes if n is not frozen]
    for w in watchers:
        for n in cluster.nodes:
            assert wait_health(w, n.node_id, {"alive"}) == "alive"
    frozen.pause()
    try:
        # Silent: first no longer alive, then declared dead by gossip on every other node.
        for w in watchers:
            assert wait_health(w, frozen.node_id, {"suspect", "dead"}, timeout=5) != "alive"
        for w in watchers:
            assert wait_health(w, frozen.node_id, {"dead"}, timeout=10) == "dead"
        # The others still hear each other.
        assert wait_health(watchers[0], watchers[1].node_id, {"alive"}) == "alive"
    finally:
        frozen.resume()
    # Back: it refutes its death and every node hears it again, and it hears them.
    for w in watchers:
        assert wait_health(w, frozen.node_id, {"alive"}) == "alive"
        assert wait_health(frozen, w.node_id, {"alive"}) == "alive"


def test_a_leader_restarted_on_new_addresses_is_found_again(cluster):
    """Found by jepsen/ (a refused `announce` in a restarted node's log): a member passed a
    restarted node's address announcement on to the leader under its own certificate, which
    the leader refuses; and a leader restarted fast enough to keep its term was told by every
    member in turn, each passing it back to it, so its new addresses were never recorded
    while it led. Now a node announces to the leader itself, or records its own if it leads."""
    key = setup_table(cluster)
    cluster.expect_faults()
    mover = cluster.leader()
    old_grpc = mover.grpc
    assert mover.stop() == 0
    mover.restart(new_addresses=True)
    assert mover.grpc != old_grpc
    deadline = time.time() + 20
    while True:
        views = [{m["id"]: m for m in n.status()["members"]}[mover.node_id]["grpc"] for n in cluster.nodes]
        if all(v == mover.grpc for v in views) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert views == [mover.grpc] * 3, views
    writer = tdb(cluster.leader(), "clu", key)
    writer.create_row("db", "t", "after-leader-move", {"n": 3})
    assert eventually(lambda: tdb(mover, "clu", key).get_row("db", "t", "after-leader-move")).data["n"] == 3
    assert "the certificate names node" not in "".join(n.log_text() for n in cluster.nodes)
