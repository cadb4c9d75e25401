"""Throughput benchmark (not a test): one single node and one three-node cluster, started
with the same binary in the same run, each driven by `basalt bench` at 1, 8 and 64 concurrent
clients (row writes, one per request). Prints writes/s, p50 and p99 per setup and the cluster's
ratio to the single node, plus each node's resident memory when idle.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/cluster_vs_single.py [writes]

Everything runs on this machine over loopback, so the three nodes share its cores.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import ROOT_KEY, Node, TestCluster, basalt_bin  # noqa: E402

CLIENTS = (1, 8, 64)


def rss_kib(node):
    with open(f"/proc/{node.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def bench(endpoint, clients, writes):
    out = subprocess.run(
        [basalt_bin(), "bench", "--endpoint", endpoint, "--root-key", ROOT_KEY,
         "--clients", str(clients), "--writes", str(writes), "--rows", "0", "--queries", "0"],
        check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout)["write_phase"]["result"]


def measure(name, nodes, writes):
    time.sleep(3)  # idle: let start-up settle before reading memory
    idle = [rss_kib(n) for n in nodes]
    runs = {c: bench(nodes[0].endpoint, c, writes) for c in CLIENTS}
    return {"setup": name, "idle_rss_kib": idle, "writes": runs}


def main():
    writes = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    single = Node(1).start()
    try:
        one = measure("single", [single], writes)
    finally:
        single.stop()
    cluster = TestCluster(3).start()
    try:
        three = measure("three", cluster.nodes, writes)
    finally:
        cluster.shutdown()
    ratios = {c: round(three["writes"][c]["per_second"] / one["writes"][c]["per_second"], 2) for c in CLIENTS}
    print(json.dumps({"single": one, "three": three, "three_over_single": ratios}, indent=2))


if __name__ == "__main__":
    main()
