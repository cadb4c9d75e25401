"""Network partitions: three nodes on hosts in network namespaces, split by moving their
cluster links onto separate bridges (packets across the split vanish silently; clients still
reach every node). An isolated leader must stop answering within a bounded time, the majority
must elect a new one and keep taking writes, and once the split heals every acknowledged write
is on every node exactly once."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from appwrite.exception import AppwriteException

from harness import Network, TestCluster
from test_cluster import Writers, all_rows, assert_acked_everywhere, eventually, setup_table, tdb, wait_health


@pytest.fixture
def net_cluster():
    net, why = Network.create(3)
    if net is None:
        pytest.skip(why)
    c = TestCluster(3, network=net)
    try:
        c.start()
        yield c
    finally:
        c.shutdown()
        net.destroy()
    errors = c.unexpected_errors()
    assert not errors, "\n".join(errors)


def leader_seen_by(nodes, not_id=None, timeout=15):
    """The leader every node in `nodes` agrees on (other than `not_id`), or fails."""
    deadline = time.time() + timeout
    while True:
        views = {n.status()["leader"] for n in nodes}
        if len(views) == 1 and None not in views and not_id not in views:
            return views.pop()
        assert time.time() < deadline, f"no agreed leader among {[n.node_id for n in nodes]}: {views}"
        time.sleep(0.05)


def expect_503(call, within, *args):
    started = time.time()
    with pytest.raises(AppwriteException) as e:
        call(*args)
    assert e.value.code == 503, e.value
    assert time.time() - started < within


def test_isolated_leader_steps_aside_and_no_acknowledged_write_is_lost(net_cluster):
    cluster = net_cluster
    key = setup_table(cluster)
    cluster.expect_faults()
    # Before the split every writer picks any node; after it, writer 0 keeps writing to the
    # isolated node (none of those may be acknowledged) and the others use the majority.
    split = {"at": None, "old": None}
    lone_acks = []

    def pick(w, rng):
        old = split["old"]
        if old is None:
            return rng.choice(cluster.nodes)
        if w == 0:
            return old
        return rng.choice([n for n in cluster.nodes if n is not old])

    def on_ack(node, started):
        if node is split["old"] and split["at"] is not None and started > split["at"]:
            lone_acks.append(started)

    with Writers(cluster, key, pick, on_ack=on_ack) as writers:
        try:
            time.sleep(1.5)
            old = cluster.leader()
            majority = [n for n in cluster.nodes if n is not old]
            cluster.network.partition([old], majority)
            cut = time.time()
            with writers.lock:
                before = len(writers.acked)
                split.update(at=cut, old=old)
            # The majority elects a new leader and writes go on through it.
            new_id = leader_seen_by(majority, not_id=old.node_id)
            assert time.time() - cut < 10, "the majority took too long to elect a leader"
            while writers.count() < before + 50 and time.time() - cut < 20:
                time.sleep(0.05)
            assert writers.count() >= before + 50, "writes did not resume on the majority side"
            # The isolated old leader cannot confirm its leadership: bounded 503s, no acks.
            lone = tdb(old, "clu", key)
            expect_503(lambda: lone.list_rows("db", "t"), within=12)
            expect_503(lambda: lone.create_row("db", "t", "lone", {"n": 0}), within=12)
            # Gossip on the majority side no longer hears it.
            for n in majority:
                assert wait_health(n, old.node_id, {"suspect", "dead"}, timeout=10) != "alive"
        finally:
            with writers.lock:
                split["at"] = None  # from here on the old node may ack again
            cluster.network.heal()
        assert not lone_acks, f"the isolated node acknowledged {len(lone_acks)} writes while cut off"
        healed = time.time()
        # Healed: one leader again (the old one stepped down, its term is stale), everyone serves.
        assert leader_seen_by(cluster.nodes, timeout=20) == new_id
        assert eventually(lambda: tdb(old, "clu", key).list_rows("db", "t")).total >= before
        assert time.time() - healed < 20
        for n in majority:
            assert wait_health(n, old.node_id, {"alive"}) == "alive"
    with pytest.raises(AppwriteException) as e:
        tdb(old, "clu", key).get_row("db", "t", "lone")  # refused while isolated: never applied
    assert e.value.code == 404
    assert_acked_everywhere(cluster, key, writers.acked)


def test_no_majority_anywhere_answers_503_then_recovers(net_cluster):
    cluster = net_cluster
    key = setup_table(cluster)
    cluster.expect_faults()
    tdb(cluster.nodes[0], "clu", key).create_row("db", "t", "before", {"n": 1})
    cluster.network.partition(*[[n] for n in cluster.nodes])
    try:
        time.sleep(1.0)  # let any leader lease run out
        with ThreadPoolExecutor(len(cluster.nodes)) as pool:  # all three at once: each waits
            calls = [pool.submit(expect_503, tdb(n, "clu", key).list_rows, 12, "db", "t")
                     for n in cluster.nodes]
            for call in calls:
                call.result()
    finally:
        cluster.network.heal()
    leader_seen_by(cluster.nodes, timeout=20)
    for n in cluster.nodes:
        t = tdb(n, "clu", key)
        eventually(lambda: t.create_row("db", "t", f"after{n.node_id}", {"n": n.node_id}))
    for n in cluster.nodes:
        rows = all_rows(tdb(n, "clu", key))
        assert set(rows) == {"before", "after1", "after2", "after3"}, rows
