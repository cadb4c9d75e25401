"""Backup and restore benchmark (not a test): a three-node cluster is loaded with MB of rows and
MB/4 of files; then `basalt backup` runs through a follower while 4 writers go on, and `basalt
restore` rebuilds a data dir from it. Prints each one's throughput beside the disk's own
sequential write and read speed measured in the same run (dd, synced / direct), and the serving
node's resident memory (VmRSS) before and at its peak during the backup.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/backup_restore.py [MB]
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from appwrite.client import Client  # noqa: E402
from appwrite.id import ID  # noqa: E402
from appwrite.input_file import InputFile  # noqa: E402
from appwrite.services.storage import Storage  # noqa: E402
from appwrite.services.tables_db import TablesDB  # noqa: E402

from harness import ROOT_KEY, TestCluster, basalt_bin, create_project, temp_dir  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def dd_mb_s(args):
    out = subprocess.run(["dd", *args], capture_output=True, text=True).stderr
    m = re.search(r"([\d.,]+) ([kMG])B/s", out)
    value = float(m.group(1).replace(",", "."))
    return value * {"k": 1e-3, "M": 1, "G": 1e3}[m.group(2)]


def main():
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    work = temp_dir("basalt-bench-backup-")
    probe = os.path.join(work, "dd.bin")
    disk_write = dd_mb_s(["if=/dev/zero", f"of={probe}", "bs=1M", "count=512", "conv=fdatasync"])
    disk_read = dd_mb_s([f"if={probe}", "of=/dev/null", "bs=1M", "iflag=direct"])
    os.remove(probe)
    c = TestCluster(3).start()
    try:
        leader = c.leader()
        key = create_project(leader, "bk")
        cl = Client().set_endpoint(leader.url()).set_project("bk").set_key(key)
        t = TablesDB(cl)
        t.create("db", "db")
        t.create_table("db", "t", "T")
        t.create_string_column("db", "t", "pad", 4000, False)
        time.sleep(1)
        pad = "x" * 3000
        rows = mb * 1024 * 1024 // 3000
        for b in range(0, rows, 1000):
            t.create_rows("db", "t", [{"$id": f"r{b + k}", "pad": pad} for k in range(min(1000, rows - b))])
        s = Storage(cl)
        s.create_bucket("files", "files")
        for i in range(max(1, mb // 4 // 8)):
            s.create_file("files", f"f{i}", InputFile.from_bytes(os.urandom(8 << 20), f"f{i}.bin"))

        stop = threading.Event()

        def writer():
            w = TablesDB(Client().set_endpoint(leader.url()).set_project("bk").set_key(key))
            while not stop.is_set():
                w.create_row("db", "t", ID.unique(), {"pad": "w"})

        writers = [threading.Thread(target=writer) for _ in range(4)]
        for th in writers:
            th.start()
        via = next(n for n in c.nodes if n is not leader)
        rss_before, peak, done = rss_kib(via.proc.pid), [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(via.proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        backup = os.path.join(work, "backup")
        started = time.time()
        r = subprocess.run([basalt_bin(), "backup", "--to", backup, "--endpoint", via.endpoint,
                            "--root-key", ROOT_KEY], capture_output=True, check=True)
        backup_s = time.time() - started
        done.set()
        sampler.join()
        stop.set()
        for th in writers:
            th.join()
        out = json.loads(r.stdout)
        started = time.time()
        restored = subprocess.run([basalt_bin(), "restore", "--from", backup, "--data-dir",
                                   os.path.join(work, "restored")], capture_output=True, check=True)
        restore_s = time.time() - started
        assert json.loads(restored.stdout)["digest"] == out["digest"]
        size_mb = out["bytes"] / 1e6
        print(json.dumps({
            "backup_mb": round(size_mb, 1),
            "backup_s": round(backup_s, 2), "backup_mb_s": round(size_mb / backup_s, 1),
            "restore_s": round(restore_s, 2), "restore_mb_s": round(size_mb / restore_s, 1),
            "disk_seq_write_mb_s": round(disk_write, 1), "disk_seq_read_mb_s": round(disk_read, 1),
            "backup_vs_disk_write": round(size_mb / backup_s / disk_write, 2),
            "restore_vs_disk_write": round(size_mb / restore_s / disk_write, 2),
            "serving_rss_before_mib": rss_before // 1024, "serving_rss_peak_mib": peak[0] // 1024,
        }, indent=2))
    finally:
        c.shutdown()


if __name__ == "__main__":
    main()
