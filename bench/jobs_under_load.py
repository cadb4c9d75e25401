"""Big jobs under load (not a test): on a three-node cluster, 8 clients keep creating rows
(`basalt bench`) while, in another project, an index is created over 100k rows (built in
chunks by the leader) and then all 100k rows are updated by one query (applied in chunks).
Prints the writers' p50/p99 with no job, during the index build and during the bulk update,
and how long each job took.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/jobs_under_load.py [rows]
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from appwrite.client import Client  # noqa: E402
from appwrite.enums.tables_db_index_type import TablesDBIndexType  # noqa: E402
from appwrite.query import Query  # noqa: E402
from appwrite.services.tables_db import TablesDB  # noqa: E402

from harness import ROOT_KEY, TestCluster, basalt_bin, create_project  # noqa: E402


def writers(endpoint, writes):
    return subprocess.Popen(
        [basalt_bin(), "bench", "--endpoint", endpoint, "--root-key", ROOT_KEY, "--clients", "8",
         "--writes", str(writes), "--rows", "0", "--queries", "0"],
        stdout=subprocess.PIPE, text=True)


def result(p):
    out, _ = p.communicate(timeout=600)
    r = json.loads(out)["write_phase"]["result"]
    return {"per_second": round(r["per_second"]), "seconds": round(r["seconds"], 2),
            "p50_ms": round(r["p50_ms"], 2), "p99_ms": round(r["p99_ms"], 2)}


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    cluster = TestCluster(3).start()
    try:
        leader = cluster.leader()
        key = create_project(leader, "jobs")
        t = TablesDB(Client().set_endpoint(leader.url()).set_project("jobs").set_key(key))
        t.create(database_id="db", name="db")
        t.create_table("db", "t", "T")
        t.create_integer_column("db", "t", "n", False)
        t.create_integer_column("db", "t", "m", False)
        for b in range(0, rows, 1000):
            t.create_rows("db", "t", [{"$id": f"r{b + i}", "n": (b + i) % 1000, "m": 0} for i in range(1000)])
        baseline = result(writers(leader.endpoint, 4000))

        # Each job starts just after a writer run; the writers' wall time is printed beside the
        # job's, to show how much of the run overlapped the job.
        w = writers(leader.endpoint, 6000)
        time.sleep(0.2)
        started = time.time()
        t.create_index("db", "t", "by_n", TablesDBIndexType.KEY, ["n"])
        while t.get_index("db", "t", "by_n").status != "available":
            time.sleep(0.05)
        index_s = time.time() - started
        during_index = result(w)

        w = writers(leader.endpoint, 6000)
        time.sleep(0.2)
        started = time.time()
        changed = t.update_rows("db", "t", {"m": 1}, queries=[Query.greater_than_equal("n", 0)])
        update_s = time.time() - started
        during_update = result(w)
        print(json.dumps({
            "rows": rows, "baseline_writers": baseline,
            "index_build_s": round(index_s, 2), "writers_during_index_build": during_index,
            "bulk_update_rows": changed.total, "bulk_update_s": round(update_s, 2),
            "writers_during_bulk_update": during_update,
        }, indent=2))
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
