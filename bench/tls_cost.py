"""What mutual TLS between nodes costs (benchmark, not a test): a three-node cluster with its
default mTLS against one started `--insecure`, alternately (A B A B, the machine is noisy),
each driven by `basalt bench` at 8 and 64 concurrent clients (row writes through node 1, the
leader, so every write crosses two TLS links to the followers). Prints writes/s and p99 per run
and the TLS/insecure ratio of the medians.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/tls_cost.py [writes] [rounds]
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

from cluster_vs_single import bench  # noqa: E402
from harness import TestCluster  # noqa: E402

CLIENTS = (8, 64)


def run(extra, writes):
    c = TestCluster(3, extra_args=extra).start()
    try:
        leader = c.leader()
        return {n: bench(leader.endpoint, n, writes) for n in CLIENTS}
    finally:
        c.shutdown()


def main():
    writes = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    runs = {"mtls": [], "insecure": []}
    for _ in range(rounds):
        runs["mtls"].append(run([], writes))
        runs["insecure"].append(run(["--insecure"], writes))
    summary = {}
    for n in CLIENTS:
        tls = statistics.median(r[n]["per_second"] for r in runs["mtls"])
        plain = statistics.median(r[n]["per_second"] for r in runs["insecure"])
        summary[n] = {"mtls_per_s": [r[n]["per_second"] for r in runs["mtls"]],
                      "insecure_per_s": [r[n]["per_second"] for r in runs["insecure"]],
                      "mtls_p99_ms": [r[n].get("p99_ms") for r in runs["mtls"]],
                      "insecure_p99_ms": [r[n].get("p99_ms") for r in runs["insecure"]],
                      "mtls_over_insecure": round(tls / plain, 2)}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
