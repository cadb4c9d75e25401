"""`basalt cluster rolling-restart` on three nodes under 8 writers (the Python SDK, each write to
the next node in turn): every node is restarted once, followers first and the leader last, each
with a graceful stop (SIGTERM) and a start on the same data dir, as `systemctl restart` would.
No acknowledged write may be lost or applied twice, the replicas must agree afterwards, and
writes may fail only while a node is down."""
import os
import subprocess
import threading
import time

from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.query import Query
from appwrite.services.tables_db import TablesDB

from harness import ROOT_KEY, TestCluster, basalt_bin, create_project

WRITERS = 8
MAX_WRITES = 1500  # per writer: the load stops by itself even if the restart never ends


def tables(node, key):
    return TablesDB(Client().set_endpoint(node.url()).set_project("rollp").set_key(key))


def test_a_rolling_restart_under_writers_loses_nothing():
    c = TestCluster(3).start()
    for n in c.nodes:
        n.allowed_errors = TestCluster.PEER_DOWN
    try:
        key = create_project(c.nodes[0], "rollp")
        t = tables(c.nodes[0], key)
        t.create("db", "db")
        t.create_table("db", "t", "t")
        t.create_integer_column("db", "t", "n", required=True)
        time.sleep(1)

        acked, failed, unknown = set(), [], set()
        lock, stop = threading.Lock(), threading.Event()

        def writer(w):
            clients = [tables(n, key) for n in c.nodes]
            for i in range(MAX_WRITES):
                if stop.is_set():
                    return
                rid = ID.unique()
                try:
                    clients[(w + i) % len(clients)].create_row("db", "t", rid, {"n": i})
                    with lock:
                        acked.add(rid)
                except Exception as e:  # noqa: BLE001 - a refused or cut-off request
                    with lock:
                        failed.append(type(e).__name__ + (f" {e.code}" if isinstance(e, AppwriteException) else ""))
                        unknown.add(rid)
                    time.sleep(0.05)

        # The restart command asks this test to restart the node, as systemd would, and waits.
        ctl = os.path.join(c.base_dir, "restarts")
        os.makedirs(ctl)
        restarts = []

        def restarter():
            while not stop.is_set():
                for n in c.nodes:
                    ask = os.path.join(ctl, f"restart-{n.node_id}")
                    if os.path.exists(ask):
                        os.remove(ask)
                        t0 = time.time()
                        n.stop()
                        n.start()
                        restarts.append((n.node_id, time.time() - t0))
                        open(os.path.join(ctl, f"restarted-{n.node_id}"), "w").close()
                time.sleep(0.05)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        helper = threading.Thread(target=restarter)
        for th in [*threads, helper]:
            th.start()
        try:
            time.sleep(2)  # the writers are going
            leader = c.leader().node_id
            command = (f"touch {ctl}/restart-{{id}} && "
                       f"while [ ! -e {ctl}/restarted-{{id}} ]; do sleep 0.05; done")
            began = time.time()
            r = subprocess.run([basalt_bin(), "cluster", "rolling-restart", "--endpoint", c.nodes[0].endpoint,
                                "--root-key", ROOT_KEY, "--restart", command, "--per-node", "60"],
                               capture_output=True, timeout=400)
            took = time.time() - began
            assert r.returncode == 0, r.stderr.decode()[-3000:]
            time.sleep(2)  # writes go on after the last restart
        finally:
            stop.set()
            for th in [*threads, helper]:
                th.join(timeout=60)
        order = [n for n, _ in restarts]
        assert sorted(order) == [1, 2, 3] and order[-1] == leader, (order, leader)
        print(f"\nrolling restart of 3 nodes: {took:.1f} s; node restarts {restarts}; "
              f"{len(acked)} writes acknowledged, {len(failed)} failed: {sorted(set(failed))}")
        assert len(acked) > 200, len(acked)

        seen, cursor = set(), None
        t = tables(c.leader(), key)
        while True:
            qs = [Query.limit(1000)] + ([Query.cursor_after(cursor)] if cursor else [])
            page = t.list_rows("db", "t", qs)
            if not page.rows:
                break
            for row in page.rows:
                assert row.id not in seen, f"{row.id} twice"
                seen.add(row.id)
            cursor = page.rows[-1].id
        lost = acked - seen
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {sorted(lost)[:5]}"
        assert seen <= acked | unknown, "rows nobody wrote"
        c.assert_consistent()
    finally:
        c.shutdown()
    assert not c.unexpected_errors(), "\n".join(c.unexpected_errors())
