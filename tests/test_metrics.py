"""`GET /metrics` on a three-node cluster, parsed by the Prometheus client library's own
text-format parser: the key series are there on every node, and move under a load of 8
writers driving the Python SDK."""
import threading
import time

from appwrite.id import ID
from appwrite.services.tables_db import TablesDB
from prometheus_client.parser import text_string_to_metric_families

from harness import create_project, http
from rt import Realtime

WRITERS, WRITES = 8, 40


def scrape(node):
    """Every sample of the node's /metrics: {(name, frozenset(labels)): value}, and the names
    of the families (with their type)."""
    status, headers, text = http("GET", node.url().replace("/v1", "") + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    samples, families = {}, {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def total(samples, name, **labels):
    """The sum of a series over the labels not given."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_every_node_exposes_the_key_series(cluster):
    leader = cluster.leader()
    for node in cluster.nodes:
        samples, families = scrape(node)
        for name, kind in [
            ("basalt_http_requests", "counter"), ("basalt_http_request_duration_seconds", "histogram"),
            ("basalt_raft_term", "gauge"), ("basalt_raft_leader_id", "gauge"),
            ("basalt_raft_applied_index", "gauge"), ("basalt_raft_apply_lag_entries", "gauge"),
            ("basalt_raft_apply_seconds", "histogram"), ("basalt_raft_leader_changes", "counter"),
            ("basalt_raft_snapshot_bytes", "gauge"), ("basalt_rocksdb_keys", "gauge"),
            ("basalt_rocksdb_sst_bytes", "gauge"), ("basalt_rocksdb_block_cache_bytes", "gauge"),
            ("basalt_gossip_members", "gauge"), ("basalt_realtime_connections", "gauge"),
            ("process_resident_memory_bytes", "gauge"), ("process_open_fds", "gauge"),
            ("process_cpu_seconds", "counter"),
        ]:
            assert families.get(name) == kind, (node.node_id, name, families.get(name))
        assert value(samples, "basalt_raft_leader_id") == leader.node_id
        assert value(samples, "basalt_raft_is_leader") == (1 if node is leader else 0)
        assert value(samples, "basalt_raft_voters") == 3 and value(samples, "basalt_raft_term") >= 1
        assert value(samples, "process_resident_memory_bytes") > 1e6
        assert value(samples, "process_open_fds") > 10
        for db in ["log", "state"]:
            assert value(samples, "basalt_rocksdb_keys", db=db) > 0, db
            assert value(samples, "basalt_rocksdb_block_cache_capacity_bytes", db=db) > 0, db
    # Gossip: every node sees its two peers alive (gossip converges within seconds).
    deadline = time.time() + 20
    while not all(value(scrape(n)[0], "basalt_gossip_members", health="alive") == 2 for n in cluster.nodes):
        assert time.time() < deadline, [scrape(n)[0] for n in cluster.nodes]
        time.sleep(0.5)


def test_the_series_move_under_load(cluster):
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    key = create_project(follower, "metricsp")

    def tables():
        from appwrite.client import Client
        return TablesDB(Client().set_endpoint(follower.url()).set_project("metricsp").set_key(key))

    t = tables()
    t.create(database_id="db", name="db")
    t.create_table(database_id="db", table_id="t", name="t")
    t.create_varchar_column(database_id="db", table_id="t", key="v", size=32, required=False)
    time.sleep(1)  # the column becomes available
    conn = Realtime(follower, "metricsp", channels=["rows"])
    before = {n.node_id: scrape(n)[0] for n in cluster.nodes}
    assert value(before[follower.node_id], "basalt_realtime_connections") == 1

    failures = []

    def writer(w):
        c = tables()
        try:
            for i in range(WRITES):
                c.create_row(database_id="db", table_id="t", row_id=ID.unique(), data={"v": f"{w}-{i}"})
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures, failures
    conn.close()
    after = {n.node_id: scrape(n)[0] for n in cluster.nodes}
    b, a = before[follower.node_id], after[follower.node_id]
    route = "/v1/tablesdb/{db}/tables/{coll}/rows"
    grew = total(a, "basalt_http_requests_total", route=route, status="201") - \
        total(b, "basalt_http_requests_total", route=route, status="201")
    assert grew == WRITERS * WRITES, (grew, sorted(k for k in a if k[0] == "basalt_http_requests_total"))
    assert total(a, "basalt_http_request_duration_seconds_count", route=route) - \
        total(b, "basalt_http_request_duration_seconds_count", route=route) == WRITERS * WRITES
    # The leader proposed them, in fewer entries than writes (group commit), and timed each.
    bl, al = before[leader.node_id], after[leader.node_id]
    entries = total(al, "basalt_raft_batch_envelopes_count") - total(bl, "basalt_raft_batch_envelopes_count")
    envelopes = total(al, "basalt_raft_batch_envelopes_sum") - total(bl, "basalt_raft_batch_envelopes_sum")
    assert envelopes >= WRITERS * WRITES and 0 < entries <= envelopes, (entries, envelopes)
    assert total(al, "basalt_raft_commit_seconds_count", outcome="ok") - \
        total(bl, "basalt_raft_commit_seconds_count", outcome="ok") == entries
    for peer in [n for n in cluster.nodes if n is not leader]:
        assert value(al, "basalt_raft_replication_lag_entries", peer=str(peer.node_id)) is not None
    # Every replica applied them.
    for n in cluster.nodes:
        grew = value(after[n.node_id], "basalt_raft_applied_index") - value(before[n.node_id], "basalt_raft_applied_index")
        assert grew >= entries, (n.node_id, grew, entries)
        assert total(after[n.node_id], "basalt_raft_apply_seconds_count") > \
            total(before[n.node_id], "basalt_raft_apply_seconds_count")
        assert value(after[n.node_id], "basalt_rocksdb_keys", db="state") > \
            value(before[n.node_id], "basalt_rocksdb_keys", db="state")
    assert value(a, "basalt_realtime_connections") == 0


def test_a_leader_change_is_counted(cluster):
    old = cluster.leader()
    others = [n for n in cluster.nodes if n is not old]
    counted = {n.node_id: value(scrape(n)[0], "basalt_raft_leader_changes_total") for n in others}
    old.stop()
    try:
        new = cluster.leader()
        assert new is not old
        deadline = time.time() + 10
        while any(value(scrape(n)[0], "basalt_raft_leader_changes_total") <= counted[n.node_id] for n in others):
            assert time.time() < deadline, "no leader change counted"
            time.sleep(0.2)
        assert value(scrape(new)[0], "basalt_raft_is_leader") == 1
    finally:
        old.start()
    cluster.wait_for_voters([1, 2, 3])
