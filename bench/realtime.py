"""Realtime under load (benchmark, not a test). One Basalt node on loopback; `loadgen
realtime` (bench/loadgen) opens the subscribers, each a signed-in user's WebSocket subscribed
to one of the tables, and writes rows at a steady rate with an API key:

- commit → receipt latency: from the leader's stamp on the write (the event's `timestamp`)
  and from the moment the write was sent (`t0` in the row) to the moment a subscriber
  received its event, p50/p99, over every delivery;
- RSS per idle connection: the node's resident memory with the subscribers connected and
  subscribed, less before, per connection;
- CPU per delivered event: the node's CPU time during the write load with the subscribers,
  less the same load with none, per event delivered.

    BASALT_BIN=~/.cache/basalt/target/release/basalt \\
    LOADGEN=~/.cache/basalt/target/release/loadgen \\
        python bench/realtime.py [subscribers] [tables] [writes/s] [seconds] [users]

Defaults: 5,000 subscribers, 50 tables, 200 writes/s, 20 s, 100 users. The load generator
runs on the same two cores as the node: its share is reported too.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import Node, create_project, http  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def load(loadgen, base, key, sessions, subscribers, tables, rate, seconds, node_pid):
    """Runs one load: answers (the load's report, node RSS before and after subscribing,
    node CPU and loadgen CPU during the writes)."""
    rss_before = rss_bytes(node_pid)
    p = subprocess.Popen([loadgen, "realtime", base, "rtbench", key, sessions, str(subscribers), str(tables),
                          str(rate), str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert json.loads(line) == {"subscribed": subscribers}, line
    time.sleep(2)
    rss_after = rss_bytes(node_pid)
    cpu0, gen0 = cpu_seconds(node_pid), cpu_seconds(p.pid)
    p.stdin.write("go\n")
    p.stdin.flush()
    report = json.loads(p.stdout.readline())
    cpu1 = cpu_seconds(node_pid)
    gen1 = cpu_seconds(p.pid) if p.poll() is None else gen0
    p.wait(timeout=60)
    return report, rss_before, rss_after, cpu1 - cpu0, gen1 - gen0


def main():
    args = [int(a) for a in sys.argv[1:]]
    subscribers, tables, rate, seconds, users = (args + [5000, 50, 200, 20, 100][len(args):])[:5]
    loadgen = os.environ.get("LOADGEN", os.path.expanduser("~/.cache/basalt/target/release/loadgen"))
    node = Node(1).start()
    try:
        key = create_project(node, "rtbench")
        kh = {"X-Appwrite-Project": "rtbench", "X-Appwrite-Key": key}
        base = node.url()
        status, _, out = http("POST", base + "/tablesdb", {"databaseId": "bench", "name": "bench"}, kh)
        assert status == 201, out
        for t in range(tables):
            status, _, out = http("POST", base + "/tablesdb/bench/tables", {
                "tableId": f"t{t}", "name": f"t{t}", "permissions": ['read("users")'],
                "columns": [{"key": "t0", "type": "float", "required": False}]}, kh)
            assert status == 201, out
        with tempfile.NamedTemporaryFile("w", suffix=".sessions", delete=False) as f:
            for u in range(users):
                status, _, out = http("POST", base + "/users", {"userId": f"u{u}", "email": f"u{u}@example.com"}, kh)
                assert status == 201, out
                status, _, s = http("POST", base + f"/users/u{u}/sessions", {}, kh)
                assert status == 201, s
                f.write(s["secret"] + "\n")
            sessions = f.name
        pid = node.proc.pid
        quiet, _, _, quiet_cpu, _ = load(loadgen, base, key, sessions, 0, tables, rate, seconds, pid)
        report, rss0, rss1, cpu, gen_cpu = load(loadgen, base, key, sessions, subscribers, tables, rate,
                                                seconds, pid)
        delivered = report["events_received"]
        out = {
            "subscribers": subscribers, "tables": tables, "users": users, "rate": rate, "seconds": seconds,
            "without_subscribers": {"writes_per_second": quiet["writes_per_second"],
                                    "write_p50_ms": quiet["write_p50_ms"], "node_cpu_s": round(quiet_cpu, 2)},
            "with_subscribers": report,
            "node_cpu_s": round(cpu, 2),
            "loadgen_cpu_s": round(gen_cpu, 2),
            "rss_per_idle_connection_kib": round((rss1 - rss0) / max(subscribers, 1) / 1024, 1),
            "node_rss_mib": round(rss1 / 2**20, 1),
            "cpu_us_per_delivered_event": round((cpu - quiet_cpu) / max(delivered, 1) * 1e6, 2),
        }
        print(json.dumps(out, indent=2))
    finally:
        node.stop()


if __name__ == "__main__":
    main()
