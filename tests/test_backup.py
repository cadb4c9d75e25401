"""`basalt backup` of a three-node cluster while 8 writers go on (the Python SDK), and `basalt
restore` of it into a fresh three-node cluster: the restored cluster's data digest (`cluster
check`) is the manifest's, every row acknowledged before the backup was asked for is there, and
the files come back byte for byte through any node."""
import hashlib
import json
import os
import random
import subprocess
import threading
import time

from appwrite.client import Client
from appwrite.id import ID
from appwrite.input_file import InputFile
from appwrite.permission import Permission
from appwrite.query import Query
from appwrite.role import Role
from appwrite.services.storage import Storage
from appwrite.services.tables_db import TablesDB

from harness import ROOT_KEY, TestCluster, basalt_bin, create_project, temp_dir

WRITERS = 8
MAX_WRITES = 2000  # per writer: the load stops by itself


def client(node, key):
    return Client().set_endpoint(node.url()).set_project("backp").set_key(key)


def rows_of(node, key):
    t, seen, cursor = TablesDB(client(node, key)), set(), None
    while True:
        qs = [Query.limit(1000)] + ([Query.cursor_after(cursor)] if cursor else [])
        page = t.list_rows("db", "t", qs)
        if not page.rows:
            return seen
        for r in page.rows:
            assert r.id not in seen, f"{r.id} twice"
            seen.add(r.id)
        cursor = page.rows[-1].id


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_backup_under_writes_restores_into_a_new_cluster():
    src = TestCluster(3).start()
    for n in src.nodes:
        n.allowed_errors = TestCluster.PEER_DOWN
    dst = None
    try:
        key = create_project(src.nodes[0], "backp")
        t = TablesDB(client(src.nodes[0], key))
        t.create("db", "db")
        t.create_table("db", "t", "t")
        t.create_integer_column("db", "t", "n", required=True)
        s = Storage(client(src.nodes[0], key))
        s.create_bucket("files", "files", permissions=[Permission.read(Role.any())])
        rnd = random.Random(5)
        files = {f"f{i}": rnd.randbytes(rnd.randint(1, 3 << 20)) for i in range(4)}
        for fid, data in files.items():
            s.create_file("files", fid, InputFile.from_bytes(data, f"{fid}.bin"))
        time.sleep(1)

        acked, lock, stop = set(), threading.Lock(), threading.Event()

        def writer(w):
            clients = [TablesDB(client(n, key)) for n in src.nodes]
            for i in range(MAX_WRITES):
                if stop.is_set():
                    return
                rid = ID.unique()
                try:
                    clients[(w + i) % 3].create_row("db", "t", rid, {"n": i})
                    with lock:
                        acked.add(rid)
                except Exception:  # noqa: BLE001 - none expected; the count below tells
                    pass

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for th in threads:
            th.start()
        time.sleep(2)
        via = next(n for n in src.nodes if n is not src.leader())
        backup_dir = os.path.join(temp_dir("basalt-backup-"), "b")
        with lock:
            before = set(acked)
        rss, done = [], threading.Event()

        def sample():
            while not done.is_set():
                rss.append(rss_kib(via.proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        began = time.time()
        r = subprocess.run([basalt_bin(), "backup", "--to", backup_dir, "--endpoint", via.endpoint,
                            "--root-key", ROOT_KEY], capture_output=True, timeout=300)
        took = time.time() - began
        done.set()
        sampler.join()
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        out = json.loads(r.stdout)
        time.sleep(1)  # writes go on after the backup
        stop.set()
        for th in threads:
            th.join(timeout=60)
        with open(os.path.join(backup_dir, "manifest.json")) as f:
            manifest = json.load(f)
        assert out["applied"] == manifest["applied"] and out["digest"] == manifest["digest"]
        assert manifest["blobs"] >= len(files) and manifest["blob_bytes"] >= sum(map(len, files.values()))
        assert len(acked) > len(before) > 100, (len(before), len(acked))
        print(f"\nbackup: {out['bytes']} bytes in {took:.2f} s ({out['bytes'] / took / 1e6:.1f} MB/s), "
              f"serving node RSS {min(rss) // 1024}-{max(rss) // 1024} MiB; "
              f"{len(before)} rows acknowledged before it, {len(acked)} in all")
        # The source still agrees with itself, and has moved on past the backup.
        assert src.assert_consistent()["applied"] > manifest["applied"]

        # A new cluster from the backup: node 1 on the restored data dir, 2 and 3 join it.
        dst = TestCluster(3)
        r = subprocess.run([basalt_bin(), "restore", "--from", backup_dir, "--data-dir", dst.nodes[0].data_dir],
                           capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        restored = json.loads(r.stdout)
        assert restored["digest"] == manifest["digest"] and restored["blobs"] == manifest["blobs"]
        # A restore never writes over a data dir.
        again = subprocess.run([basalt_bin(), "restore", "--from", backup_dir, "--data-dir", dst.nodes[0].data_dir],
                               capture_output=True, timeout=60)
        assert again.returncode != 0 and b"not empty" in again.stderr
        dst.start()
        for n in dst.nodes:
            n.allowed_errors = TestCluster.PEER_DOWN
        report = dst.assert_consistent()
        assert report["data_digest"] == manifest["digest"], (report, manifest)
        rows = rows_of(dst.nodes[2], key)
        lost = before - rows
        assert not lost, f"{len(lost)} rows acknowledged before the backup are missing, e.g. {sorted(lost)[:5]}"
        assert rows <= acked, "rows nobody acknowledged"
        for fid, data in files.items():
            got = Storage(client(dst.nodes[2], key)).get_file_download("files", fid)
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), fid
        # The new cluster takes writes of its own.
        TablesDB(client(dst.nodes[1], key)).create_row("db", "t", "after", {"n": -1})
    finally:
        src.shutdown()
        if dst:
            dst.shutdown()
    assert not src.unexpected_errors(), "\n".join(src.unexpected_errors())
    assert not dst.unexpected_errors(), "\n".join(dst.unexpected_errors())
