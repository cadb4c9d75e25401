"""The write path under faults, on real three-node clusters: a log entry lands whole or not at
all, a retried proposal is applied once, replicas stay byte-identical (`basalt cluster check`,
which is also shown to catch a replica that diverges), and a revoked key is refused through
every node. Fault points live only in the binary built with `--features fault-points`
(BASALT_FAULT_BIN); without it these tests are skipped, with the reason printed."""
import threading
import time

import pytest
from appwrite.exception import AppwriteException

from harness import ROOT_KEY, TestCluster, create_project, fault_bin, http
from test_cluster import Writers, all_rows, assert_acked_everywhere, eventually, setup_table, tdb, wait_for_total

needs_faults = pytest.mark.skipif(fault_bin() is None, reason="BASALT_FAULT_BIN (the fault-point build) is not set")


def start(faults=None, extra_args=()):
    """A three-node cluster; `faults` maps node ids to a BASALT_FAULT value (those nodes run the
    fault-point build; the others too, so every node runs the same code)."""
    c = TestCluster(3, extra_args=extra_args)
    if faults is not None:
        for n in c.nodes:
            n.binary = fault_bin()
            if n.node_id in faults:
                n.env = {"BASALT_FAULT": faults[n.node_id]}
    return c.start()


@pytest.fixture
def clusters():
    made = []
    yield lambda *a, **k: made.append(start(*a, **k)) or made[-1]
    for c in made:
        c.shutdown()
    errors = [e for c in made for e in c.unexpected_errors()]
    assert not errors, "\n".join(errors)


def counter_table(cluster):
    key = setup_table(cluster)
    tdb(cluster.nodes[0], "clu", key).create_row("db", "t", "counter", {"n": 0})
    return key


def counter(cluster, key):
    return eventually(lambda: tdb(cluster.nodes[0], "clu", key).get_row("db", "t", "counter").data["n"])


def test_cluster_check_reports_one_digest_for_identical_replicas(clusters):
    cluster = clusters()
    key = setup_table(cluster)
    for i in range(30):
        tdb(cluster.nodes[i % 3], "clu", key).create_row("db", "t", f"r{i}", {"n": i})
    report = cluster.assert_consistent()
    assert len(set(report["digests"].values())) == 1
    assert report["applied"] > 30
    # A later check is at a later entry, with a different digest (the state moved on).
    tdb(cluster.nodes[1], "clu", key).create_row("db", "t", "later", {"n": 1})
    later = cluster.assert_consistent()
    assert later["applied"] > report["applied"]
    assert set(later["digests"].values()) != set(report["digests"].values())


@needs_faults
def test_cluster_check_catches_a_replica_that_diverges(clusters):
    cluster = clusters(faults={3: "diverge"})
    key = setup_table(cluster)
    tdb(cluster.nodes[0], "clu", key).create_row("db", "t", "a", {"n": 1})
    code, report = cluster.check()
    assert code == 1, report
    assert report["consistent"] is False
    d = report["digests"]
    assert d["1"] == d["2"] and d["3"] != d["1"], report


@needs_faults
def test_a_forward_whose_reply_is_lost_is_applied_once(clusters):
    # Node 2 never hears the leader's first answer to a forwarded write: it retries the same
    # envelope, which the leader has already committed.
    cluster = clusters(faults={2: "lose-forward-reply"})
    key = counter_table(cluster)
    via = next(n for n in cluster.nodes if n.node_id == 2)
    if cluster.leader().node_id == 2:
        pytest.skip("node 2 was elected: it forwards nothing")
    t = tdb(via, "clu", key)
    for _ in range(20):
        t.increment_row_column("db", "t", "counter", "n", 1)
    # Creates too: a retried create answers its first outcome, not "already exists".
    for i in range(5):
        assert t.create_row("db", "t", f"c{i}", {"n": i}).id == f"c{i}"
    assert counter(cluster, key) == 20
    assert via.log_text().count("fault point lose-forward-reply") >= 25, "the fault point never fired"
    cluster.assert_consistent()


@needs_faults
def test_a_crash_in_the_middle_of_a_batched_entry_leaves_all_or_nothing(clusters):
    # Node 3 dies while applying the first log entry that carries several envelopes (group
    # commit makes them under concurrent writes); restarted, it applies the entry again.
    # The fault is armed once the cluster is set up: entries batched while the nodes join
    # (their own concurrent proposals) would fire it before the test begins.
    cluster = clusters(faults={})
    key = setup_table(cluster)
    victim = cluster.nodes[2]
    victim.stop()
    victim.env = {"BASALT_FAULT": "apply-mid-entry"}
    victim.restart()
    cluster.wait_for_voters([1, 2, 3])
    cluster.expect_faults()
    leader = cluster.leader()
    if leader is victim:
        pytest.skip("node 3 leads: it would take the cluster's writes down with it")
    with Writers(cluster, key, lambda w, rng: leader, n=16) as writers:
        deadline = time.time() + 30
        while victim.alive() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    assert not victim.alive(), "the fault point never fired (no batched entry?)"
    assert "fault point apply-mid-entry" in victim.log_text()
    victim.proc.wait(timeout=10)
    victim.env = {}
    victim.restart()
    cluster.wait_for_voters([1, 2, 3])
    assert len(writers.acked) > 0
    assert_acked_everywhere(cluster, key, writers.acked)


def test_followers_killed_repeatedly_under_32_writers_stay_identical(clusters):
    cluster = clusters()
    key = setup_table(cluster)
    cluster.expect_faults()
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    with Writers(cluster, key, lambda w, rng: leader, n=32) as writers:
        for round in range(6):
            victim = followers[round % 2]
            time.sleep(0.7)
            victim.kill()
            time.sleep(0.3)
            victim.restart()
        time.sleep(1.0)
    assert len(writers.acked) > 100, len(writers.acked)
    cluster.wait_for_voters([1, 2, 3])
    assert_acked_everywhere(cluster, key, writers.acked)


def test_leader_killed_repeatedly_under_increments_through_followers(clusters):
    cluster = clusters()
    key = counter_table(cluster)
    cluster.expect_faults()
    attempted, acked, lock, stop = [0], [0], threading.Lock(), threading.Event()

    def run(w):
        while not stop.is_set():
            live = [n for n in cluster.nodes if n.alive()]
            try:
                lid = cluster.leader(timeout=5).node_id
            except AssertionError:
                continue
            via = [n for n in live if n.node_id != lid] or live
            node = via[w % len(via)]
            with lock:
                attempted[0] += 1
            try:
                tdb(node, "clu", key).increment_row_column("db", "t", "counter", "n", 1)
            except Exception:
                continue
            with lock:
                acked[0] += 1

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(8)]
    for th in threads:
        th.start()
    try:
        for _ in range(3):
            time.sleep(1.5)
            leader = cluster.leader()
            leader.kill()
            time.sleep(1.5)
            leader.restart()
            cluster.wait_for_voters([1, 2, 3])
        time.sleep(1.0)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    final = counter(cluster, key)
    # Every acknowledged increment counted once; unknown outcomes at most once each.
    assert acked[0] <= final <= attempted[0], (acked[0], final, attempted[0])
    assert acked[0] > 20, acked[0]
    cluster.assert_consistent()


def test_a_key_revoked_through_one_node_is_refused_through_another(clusters):
    cluster = clusters()
    setup_table(cluster)
    h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    n1, n2, n3 = cluster.nodes
    status, _, key = http("POST", n1.url() + "/projects/clu/keys", {"name": "k2", "scopes": ["rows.write", "rows.read"]}, h)
    assert status == 201, key
    tdb(n2, "clu", key["secret"]).create_row("db", "t", "before", {"n": 1})
    status, _, listed = http("GET", n3.url() + "/projects/clu/keys", None, h)
    assert status == 200 and key["$id"] in [k["$id"] for k in listed["keys"]], listed
    assert all(k["secret"] == "" for k in listed["keys"])
    status, _, body = http("DELETE", n1.url() + f"/projects/clu/keys/{key['$id']}", None, h)
    assert status == 204, body
    with pytest.raises(AppwriteException) as e:
        tdb(n3, "clu", key["secret"]).create_row("db", "t", "after", {"n": 2})
    assert e.value.code == 401
    with pytest.raises(AppwriteException) as e:
        tdb(n2, "clu", key["secret"]).create_row("db", "t", "after", {"n": 2})
    assert e.value.code == 401
    status, _, body = http("GET", n2.url() + f"/projects/clu/keys/{key['$id']}", None, h)
    assert status == 404 and body["type"] == "key_not_found", body
    rows = all_rows(tdb(n1, "clu", create_project_key(n1)))
    assert "before" in rows and "after" not in rows


def create_project_key(node):
    h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    status, _, key = http("POST", node.url() + "/projects/clu/keys", {"name": "reader", "scopes": ["rows.read"]}, h)
    assert status == 201, key
    return key["secret"]


def vm_kib(node, field):
    with open(f"/proc/{node.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def test_a_snapshot_many_chunks_long_catches_a_node_up(clusters):
    # ~12 MiB of rows: four times openraft's 3 MiB snapshot chunk. The lagging node receives
    # the snapshot into a file and ingests it; the leader streams it from a file.
    cluster = clusters(extra_args=["--snapshot-every", "20"])
    key = setup_table(cluster)
    t0 = tdb(cluster.nodes[0], "clu", key)
    t0.create_string_column("db", "t", "pad", 4000, False)
    cluster.expect_faults()
    leader = cluster.leader()
    lagging = next(n for n in cluster.nodes if n is not leader)
    assert lagging.stop() == 0
    writer = tdb(leader, "clu", key)
    pad = "x" * 3000
    for b in range(8):
        writer.create_rows("db", "t", [{"$id": f"b{b}-{k}", "n": k, "pad": pad} for k in range(500)])
    for i in range(30):
        writer.create_row("db", "t", f"s{i}", {"n": i})
    lagging.restart()
    wait_for_total(lagging, key, 4030, timeout=60)
    assert "installing a snapshot from the leader" in lagging.log_text()
    cluster.assert_consistent()
    print(f"snapshot catch-up: receiver peak RSS {vm_kib(lagging, 'VmHWM')} KiB, "
          f"sender peak RSS {vm_kib(leader, 'VmHWM')} KiB")
