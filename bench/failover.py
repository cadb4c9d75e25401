"""Failover benchmark (not a test): kill -9 the leader of a real 3-node cluster and time the
first successful write through a survivor. Repeats, then prints median and max. Also times how
long gossip takes to report the killed node dead on a survivor.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/failover.py [trials]
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import TestCluster, create_project, http  # noqa: E402


def wait_all_alive(cluster, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(m["health"] == "alive" for n in cluster.nodes for m in n.status()["members"]):
            return
        time.sleep(0.05)
    raise AssertionError("gossip never saw every node alive")


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cluster = TestCluster(3).start()
    cluster.expect_faults()
    try:
        key = create_project(cluster.nodes[0], "fo")
        h = {"X-Appwrite-Project": "fo", "X-Appwrite-Key": key}
        url = cluster.nodes[0].url()
        assert http("POST", url + "/tablesdb", {"databaseId": "db", "name": "db"}, h)[0] == 201
        assert http("POST", url + "/tablesdb/db/tables", {"tableId": "t", "name": "t"}, h)[0] == 201
        results, elections, detections = [], [], []
        for trial in range(trials):
            wait_all_alive(cluster)  # so the gossip figure is detection, not start-up
            leader = cluster.leader()
            survivor = next(n for n in cluster.live() if n is not leader)
            leader.kill()
            killed = time.time()
            while True:
                lid = survivor.status()["leader"]
                if lid is not None and lid != leader.node_id:
                    break
                time.sleep(0.01)
            elections.append(time.time() - killed)
            n = 0
            while True:
                n += 1
                status, _, _ = http("POST", survivor.url() + "/tablesdb/db/tables/t/rows",
                                    {"rowId": f"t{trial}-{n}", "data": {}}, h)
                if status == 201:
                    break
            results.append(time.time() - killed)
            while True:
                view = {m["id"]: m["health"] for m in survivor.status()["members"]}
                if view[leader.node_id] == "dead" or time.time() - killed > 30:
                    break
                time.sleep(0.02)
            detections.append(time.time() - killed)
            leader.restart()
            cluster.wait_for_voters([1, 2, 3])
        print(json.dumps({
            "trials": trials,
            "failover_seconds": [round(r, 3) for r in results],
            "median": round(statistics.median(results), 3),
            "max": round(max(results), 3),
            "new_leader_known_seconds": [round(r, 3) for r in elections],
            "election_median": round(statistics.median(elections), 3),
            "gossip_dead_seconds": [round(r, 3) for r in detections],
            "gossip_dead_median": round(statistics.median(detections), 3),
            "gossip_dead_max": round(max(detections), 3),
        }, indent=2))
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
