"""Three Basalt nodes against a three-member etcd (not a test), same machine, same run,
loopback only. etcd (Debian's `etcd-server`, installed if missing) takes linearizable puts of
256-byte values from `loadgen` (bench/loadgen, ours); Basalt takes row creates (three columns,
one secondary index maintained) from `basalt bench`. Both drive the leader, one request at a
time per client, at 8 and 64 clients; each pair runs twice, alternating.

    BASALT_BIN=~/.cache/basalt/target/release/basalt \\
    LOADGEN_BIN=~/.cache/basalt/target/release/loadgen python bench/vs_etcd.py [ops]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import ROOT_KEY, TestCluster, basalt_bin  # noqa: E402

CLIENTS = (8, 64)


def etcd_cluster(base):
    if not shutil.which("etcd"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), capture_output=True)
    names = [f"e{i}" for i in range(3)]
    peer = {n: f"http://127.0.0.1:{23800 + i}" for i, n in enumerate(names)}
    client = {n: f"http://127.0.0.1:{23790 + i}" for i, n in enumerate(names)}
    initial = ",".join(f"{n}={peer[n]}" for n in names)
    procs = []
    for n in names:
        procs.append(subprocess.Popen([
            "etcd", "--name", n, "--data-dir", os.path.join(base, n),
            "--listen-peer-urls", peer[n], "--initial-advertise-peer-urls", peer[n],
            "--listen-client-urls", client[n], "--advertise-client-urls", client[n],
            "--initial-cluster", initial, "--initial-cluster-state", "new",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(client[names[0]] + "/health", timeout=2) as r:
                if json.load(r).get("health") == "true":
                    break
        except OSError:
            pass
        time.sleep(0.2)
    leader = None
    for n in names:
        req = urllib.request.Request(client[n] + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            st = json.load(r)
        if st["header"]["member_id"] == st["leader"]:
            leader = client[n]
    return procs, leader


def etcd_run(loadgen, endpoint, clients, ops):
    out = subprocess.run([loadgen, "etcd", endpoint, str(clients), str(ops), "256"],
                         check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout)


def basalt_run(endpoint, clients, ops):
    out = subprocess.run([basalt_bin(), "bench", "--endpoint", endpoint, "--root-key", ROOT_KEY,
                          "--clients", str(clients), "--writes", str(ops), "--rows", "0", "--queries", "0"],
                         check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout)["write_phase"]["result"]


def main():
    ops = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
    loadgen = os.environ["LOADGEN_BIN"]
    base = tempfile.mkdtemp(prefix="vs-etcd-")
    procs, etcd_leader = etcd_cluster(base)
    cluster = TestCluster(3).start()
    results = []
    try:
        basalt_leader = cluster.leader().endpoint
        for rnd in range(2):
            for c in CLIENTS:
                e = etcd_run(loadgen, etcd_leader, c, ops)
                b = basalt_run(basalt_leader, c, ops)
                results.append({"round": rnd, "clients": c,
                                "etcd_puts_per_s": round(e["per_second"]), "etcd_p99_ms": round(e["p99_ms"], 2),
                                "basalt_creates_per_s": round(b["per_second"]), "basalt_p99_ms": round(b["p99_ms"], 2),
                                "basalt_over_etcd": round(b["per_second"] / e["per_second"], 2)})
    finally:
        cluster.shutdown()
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
