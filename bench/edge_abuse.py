"""HTTP edge benchmark (not a test): a well-behaved client reads one row over and over, alone,
then while (a) 200 connections trickle their headers a byte at a time (slowloris) and (b) 8
senders flood unauthenticated requests announcing 30 MiB bodies. Prints the client's p50/p99 in
each phase, the ratio to the quiet phase (the aim: p99 at most 2x), and the node's CPU use in
cores (the attackers run on the same machine and compete for its cores too).

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/edge_abuse.py [seconds]
"""
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import Node, create_project  # noqa: E402
from harness import http as call  # noqa: E402


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def measure(host, port, headers, seconds):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    lat = []
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        conn.request("GET", "/v1/tablesdb/db/tables/t/rows/r1", headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {"requests": len(lat), "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2)}


def slowloris(host, port, stop, count=200):
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            pass
    while not stop.is_set():
        for i, s in enumerate(socks):
            try:
                s.sendall(b"X")
            except OSError:
                # Cut off by the header timeout: open another one.
                try:
                    n = socket.create_connection((host, port), timeout=5)
                    n.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
                    socks[i] = n
                except OSError:
                    pass
        time.sleep(0.2)
    for s in socks:
        s.close()


def flood(host, port, stop):
    head = (b"POST /v1/tablesdb HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Appwrite-Project: p\r\nContent-Length: 31457280\r\n\r\n")
    chunk = b"x" * 65536
    while not stop.is_set():
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(head)
            s.sendall(chunk)  # the start of the body; the server answers without reading it
            s.recv(4096)
            s.close()
        except OSError:
            pass


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8
    node = Node(extra_args=["--header-timeout", "2"]).start()
    try:
        secret = create_project(node, "p")
        h = {"X-Appwrite-Project": "p", "X-Appwrite-Key": secret, "Content-Type": "application/json"}
        url = node.url()
        assert call("POST", url + "/tablesdb", {"databaseId": "db", "name": "db"}, h)[0] == 201
        assert call("POST", url + "/tablesdb/db/tables", {"tableId": "t", "name": "t"}, h)[0] == 201
        assert call("POST", url + "/tablesdb/db/tables/t/columns/string",
                    {"key": "s", "size": 32, "required": False}, h)[0] == 202
        time.sleep(0.5)
        assert call("POST", url + "/tablesdb/db/tables/t/rows", {"rowId": "r1", "data": {"s": "x"}}, h)[0] == 201
        host, port = node.endpoint.replace("http://", "").split(":")
        port = int(port)
        before = cpu_s(node.proc.pid)
        out = {"quiet": measure(host, port, h, seconds)}
        out["quiet"]["node_cpu_share"] = round((cpu_s(node.proc.pid) - before) / seconds, 2)
        for name, attack, threads in (("slowloris_200", slowloris, 1), ("flood_30MiB_x8", flood, 8)):
            stop = threading.Event()
            ts = [threading.Thread(target=attack, args=(host, port, stop), daemon=True) for _ in range(threads)]
            for t in ts:
                t.start()
            time.sleep(1)
            before = cpu_s(node.proc.pid)
            out[name] = measure(host, port, h, seconds)
            out[name]["node_cpu_share"] = round((cpu_s(node.proc.pid) - before) / seconds, 2)
            stop.set()
            for t in ts:
                t.join(10)
        for name in ("slowloris_200", "flood_30MiB_x8"):
            out[name]["p99_over_quiet"] = round(out[name]["p99_ms"] / out["quiet"]["p99_ms"], 2)
        print(json.dumps(out, indent=2))
    finally:
        node.stop()


if __name__ == "__main__":
    main()
