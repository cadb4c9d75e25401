"""Snapshot catch-up benchmark (not a test): a three-node cluster snapshots every 20 entries;
one follower is stopped while MB rows of padding go in through the leader, then restarted, and
catches up by snapshot (streamed from a file in openraft's 3 MiB chunks, received into a file,
ingested as SST files). Prints the data size, the time to catch up, and the peak resident
memory (VmHWM) of the sender and the receiver — bounded by buffers, not by the data.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/snapshot_catchup.py [MB]
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from appwrite.client import Client  # noqa: E402
from appwrite.services.tables_db import TablesDB  # noqa: E402

from harness import TestCluster, create_project  # noqa: E402


def vm_kib(node, field):
    with open(f"/proc/{node.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def main():
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    cluster = TestCluster(3, extra_args=["--snapshot-every", "20"]).start()
    try:
        leader = cluster.leader()
        key = create_project(leader, "snap")
        t = TablesDB(Client().set_endpoint(leader.url()).set_project("snap").set_key(key))
        t.create(database_id="db", name="db")
        t.create_table("db", "t", "T")
        t.create_string_column("db", "t", "pad", 4000, False)
        time.sleep(1)
        lagging = next(n for n in cluster.nodes if n is not leader)
        lagging.stop()
        pad = "x" * 3000
        rows = mb * 1024 * 1024 // 3000
        for b in range(0, rows, 1000):
            t.create_rows("db", "t", [{"$id": f"r{b + k}", "pad": pad} for k in range(min(1000, rows - b))])
        for i in range(30):
            t.create_row("db", "t", f"s{i}", {"pad": "y"})
        sender_before = vm_kib(leader, "VmHWM")
        started = time.time()
        lagging.restart()
        lt = TablesDB(Client().set_endpoint(lagging.url()).set_project("snap").set_key(key))
        while lt.list_rows("db", "t").total != rows + 30:
            time.sleep(0.2)
        took = time.time() - started
        print(json.dumps({
            "data_mb": mb, "rows": rows + 30, "catch_up_s": round(took, 2),
            "receiver_peak_rss_kib": vm_kib(lagging, "VmHWM"),
            "sender_peak_rss_kib_before_send": sender_before,
            "sender_peak_rss_kib": vm_kib(leader, "VmHWM"),
            "snapshot_installed": "installing a snapshot from the leader" in lagging.log_text(),
        }, indent=2))
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
