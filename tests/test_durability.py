"""kill -9 and restart: every acknowledged write is still there, nothing appears twice."""
import os
import threading
import time

from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.services.tables_db import TablesDB

from harness import Node, create_project


def client(node, project, key):
    return TablesDB(Client().set_endpoint(node.url()).set_project(project).set_key(key))


def test_kill_9_loses_no_acknowledged_write():
    node = Node().start()
    try:
        key = create_project(node, "dur")
        t = client(node, "dur", key)
        t.create(database_id="db", name="db")
        t.create_table("db", "t", "T")
        t.create_integer_column("db", "t", "n", True)
        t.create_varchar_column("db", "t", "w", 16, True)
        acked, lock, stop = {}, threading.Lock(), threading.Event()

        def writer(w):
            c = client(node, "dur", key)
            i = 0
            while not stop.is_set():
                rid = f"w{w}-{i}"
                try:
                    c.create_row("db", "t", rid, {"n": i, "w": f"writer{w}"})
                except Exception:  # the node died under us: unknown outcome
                    return
                with lock:
                    acked[rid] = i
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        for th in threads:
            th.start()
        time.sleep(2.0)
        node.kill()
        stop.set()
        for th in threads:
            th.join(timeout=30)
        assert len(acked) > 50, f"only {len(acked)} writes were acknowledged before the kill"

        node.restart()
        t = client(node, "dur", key)
        from appwrite.query import Query
        seen = {}
        cursor = None
        while True:
            qs = [Query.limit(1000)]
            if cursor:
                qs.append(Query.cursor_after(cursor))
            page = t.list_rows("db", "t", qs)
            if not page.rows:
                break
            for r in page.rows:
                assert r.id not in seen, f"{r.id} appears twice"
                seen[r.id] = r.data["n"]
            cursor = page.rows[-1].id
        missing = [rid for rid in acked if rid not in seen]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        assert all(seen[rid] == n for rid, n in acked.items())
        assert t.list_rows("db", "t").total == len(seen)
        # The node keeps serving writes, with sequences continuing past the old ones.
        r = t.create_row("db", "t", "after", {"n": -1, "w": "after"})
        assert int(r.sequence) > len(acked)
    finally:
        if node.proc.poll() is None:
            node.stop()
    assert not node.unexpected_errors(), node.unexpected_errors()


def test_clean_restart_keeps_schema_and_rows():
    node = Node().start()
    try:
        key = create_project(node, "keep")
        t = client(node, "keep", key)
        t.create(database_id="db", name="db")
        t.create_table("db", "t", "T")
        t.create_varchar_column("db", "t", "name", 16, True)
        t.create_index("db", "t", "uniq", "unique", ["name"])
        t.create_rows("db", "t", [{"$id": f"r{i}", "name": f"n{i}"} for i in range(50)])
        assert node.stop() == 0
        node.restart()
        t = client(node, "keep", key)
        assert t.list_rows("db", "t").total == 50
        assert t.get_index("db", "t", "uniq").type == "unique"
        try:
            t.create_row("db", "t", "dup", {"name": "n7"})
            raise AssertionError("unique index lost across restart")
        except AppwriteException as e:
            assert e.type == "row_unique_constraint_violation"
    finally:
        if node.proc.poll() is None:
            node.stop()


def test_snapshot_and_log_purge_survive_restart():
    node = Node(extra_args=["--snapshot-every", "20"]).start()
    try:
        key = create_project(node, "snap")
        t = client(node, "snap", key)
        t.create(database_id="db", name="db")
        t.create_table("db", "t", "T")
        t.create_integer_column("db", "t", "n", True)
        for i in range(120):
            t.create_row("db", "t", f"r{i}", {"n": i})
        snapshots = os.path.join(node.data_dir, "snapshots")
        deadline = time.time() + 10
        while not os.path.exists(os.path.join(snapshots, "current.meta")) and time.time() < deadline:
            time.sleep(0.1)
        assert os.path.exists(os.path.join(snapshots, "current.meta")), "no snapshot was taken"
        node.kill()
        node.restart()
        t = client(node, "snap", key)
        assert t.list_rows("db", "t").total == 120
        t.create_row("db", "t", "after", {"n": 1})
        assert t.get_row("db", "t", "r119").data["n"] == 119
    finally:
        if node.proc.poll() is None:
            node.stop()
    assert not node.unexpected_errors(), node.unexpected_errors()


def test_a_failing_fsync_stops_the_node_and_a_restart_recovers(tmp_path):
    """Found by jepsen/'s disk nemesis: when its log's fdatasync failed, the Raft core quit but
    the process stayed up, answering 503 for ever while its health probe said 200 (and,
    once made to exit, exit(3)'s static destructors aborted it under RocksDB's threads). Now
    it stops at once with status 70 (fail-stop), and a restart recovers: what it acknowledged
    is there, and it takes writes again."""
    if not os.path.exists("/usr/lib/fiu/fiu_posix_preload.so"):
        import pytest
        pytest.skip("needs libfiu (scripts/deps.sh installs it)")
    import subprocess
    fifo = str(tmp_path / "fiu")
    node = Node()
    node.wrap = ["fiu-run", "-x", "-f", fifo]
    node.allowed_errors = ["fdatasync", "fsync", "the Raft core stopped on a fatal error", "RaftCore"]
    node.start()
    key = create_project(node, "disk")
    t = client(node, "disk", key)
    t.create(database_id="db", name="db")
    t.create_table("db", "t", "T")
    t.create_integer_column("db", "t", "n", True)
    t.create_row("db", "t", "before", {"n": 1})
    subprocess.run(["fiu-ctrl", "-f", fifo, "-c", "enable name=posix/io/sync/*", str(node.proc.pid)], check=True)
    try:
        t.create_row("db", "t", "during", {"n": 2})
    except Exception:
        pass  # no answer, or a 503: its outcome is unknown, as after a crash
    assert node.proc.wait(timeout=30) == 70, node.log_text()[-3000:]
    assert "exiting so that the node restarts and recovers" in node.log_text()
    node.wrap = []
    node.start()
    try:
        assert t.get_row("db", "t", "before").data["n"] == 1
        t.create_row("db", "t", "after", {"n": 3})
        assert t.get_row("db", "t", "after").data["n"] == 3
    finally:
        node.stop()
