"""TestCluster: real `basalt` processes on 127.0.0.1 with temp data dirs.

Each node runs the real binary (BASALT_BIN) with port 0 for HTTP and gRPC; the node writes
its bound addresses to <data-dir>/endpoint.json. Nodes can be stopped (SIGTERM), killed
(SIGKILL), paused (SIGSTOP), restarted on the same data dir, and, on a `Network` of
namespaces, partitioned. After every test the harness checks that no node logged an ERROR it
was not told to expect.
"""
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request

ROOT_KEY = "test-root-key-0123456789abcdef"

# Every temporary directory the tests made (data dirs, logs, results): removed when the whole
# run passes (conftest.py), kept for a look when it does not.
TEMP_DIRS = []


def temp_dir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    TEMP_DIRS.append(path)
    return path


def basalt_bin():
    path = os.environ.get("BASALT_BIN")
    if not path or not os.path.exists(path):
        raise RuntimeError("set BASALT_BIN to the built basalt binary (scripts/test does)")
    return path


def fault_bin():
    """The binary built with test-only fault points (`--features fault-points`), or None."""
    path = os.environ.get("BASALT_FAULT_BIN")
    return path if path and os.path.exists(path) else None


class Node:
    def __init__(self, node_id=1, base_dir=None, extra_args=(), host=None):
        self.node_id = node_id
        # The binary (None: BASALT_BIN) and extra environment, e.g. BASALT_FAULT for the
        # fault-point build; both apply from the next (re)start.
        self.binary = None
        self.env = {}
        # Where it runs: None is 127.0.0.1 in this namespace; else a `Host` of a `Network`.
        self.host = host
        self.base_dir = base_dir or temp_dir("basalt-test-")
        self.data_dir = os.path.join(self.base_dir, f"node{node_id}")
        # Appwrite's abuse limits are off for the suite (as in Appwrite's own e2e tests), on
        # for the tests that are about them (`abuse_limits = True`).
        self.abuse_limits = False
        self.extra_args = list(extra_args)
        self.root_key_file = None  # pass the root key in a file instead of on the command line
        self.root_key = ROOT_KEY  # None: start without one (a node joining with a token)
        # Programs the binary runs under (each execs the next in place), e.g. `fiu-run -x`.
        self.wrap = []
        self.proc = None
        self.endpoint = None
        self.grpc = None
        self.logs = []
        self.allowed_errors = []

    def start(self, timeout=30):
        endpoint_file = os.path.join(self.data_dir, "endpoint.json")
        if os.path.exists(endpoint_file):
            os.remove(endpoint_file)
        log_path = os.path.join(self.base_dir, f"node{self.node_id}-{len(self.logs)}.log")
        self.logs.append(log_path)
        self._log = open(log_path, "wb")
        # First start on port 0; restarts keep the addresses, as a real node's would.
        http_ip, grpc_ip = (self.host.client_ip, self.host.cluster_ip) if self.host else ("127.0.0.1",) * 2
        http_addr = self.endpoint.replace("http://", "") if self.endpoint else f"{http_ip}:0"
        grpc_addr = self.grpc or f"{grpc_ip}:0"
        # `ip netns exec` execs the binary in place: the pid (and its signals) stay the node's.
        wrap = ["ip", "netns", "exec", self.host.netns] if self.host else []
        args = [
            *wrap, *self.wrap, self.binary or basalt_bin(), "serve",
            "--data-dir", self.data_dir,
            "--http", http_addr,
            "--grpc", grpc_addr,
            "--node-id", str(self.node_id),
            *(["--root-key-file", self.root_key_file] if self.root_key_file
              else ["--root-key", self.root_key] if self.root_key else []),
            *([] if self.abuse_limits else ["--abuse-limits", "disabled"]),
            *self.extra_args,
        ]
        env = dict(os.environ, NO_COLOR="1", **self.env)  # the node's own log filter unless BASALT_LOG is set
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"basalt exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            if os.path.exists(endpoint_file):
                try:
                    with open(endpoint_file) as f:
                        info = json.load(f)
                    self.endpoint, self.grpc = info["http"], info["grpc"]
                    if self.ready():
                        return self
                except (ValueError, OSError):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"basalt did not become ready: {self.log_text()[-2000:]}")

    def ready(self):
        try:
            with urllib.request.urlopen(self.endpoint + "/v1/health/version", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self):
        """kill -9: no chance to flush anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def pause(self):
        """SIGSTOP: the process stays, but answers nothing (a hung or partitioned node)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        status, _, body = http("GET", self.url() + "/cluster/status",
                               headers={"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY})
        assert status == 200, body
        return body

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def restart(self, new_addresses=False):
        """Restart on the same data dir; by default on the same addresses."""
        if new_addresses:
            self.endpoint, self.grpc = None, None
        return self.start()

    def log_text(self):
        out = ""
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    out += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return out

    # openraft's deadline for an append is the heartbeat interval (150 ms), the follower's fsync
    # included; a loaded 2-core CI machine running four nodes misses it now and then (CI: two
    # in one run, during joins), and openraft logs each miss at ERROR before it retries. A late
    # follower is not a fault of the code under test; anything else a stall causes still is.
    SLOW_PEER = ["ms when AppendEntries", "TimeoutExpired(())"]

    def unexpected_errors(self):
        lines = [l for l in self.log_text().splitlines() if " ERROR " in l]
        allowed = self.allowed_errors + self.SLOW_PEER
        return [l for l in lines if not any(a in l for a in allowed)]

    def url(self):
        return self.endpoint + "/v1"


class TestCluster:
    __test__ = False  # a harness, not a pytest test class
    """N real nodes forming one Raft group: node 1 bootstraps, the others `--join` it."""

    # What openraft logs at ERROR while a peer is down or paused: expected in fault tests.
    # (openraft logs a membership change that reaches a node just after it lost the lead at
    # ERROR, "has to forward request to"; the change is then asked of the new leader.)
    PEER_DOWN = ["Unreachable node", "timeout while confirming leadership", "while requesting vote",
                 "RPCError err=", "error replication to target", "timeout after",
                 "has to forward request to"]

    def __init__(self, n=3, extra_args=(), network=None, regions=None, zones=None):
        self.base_dir = temp_dir("basalt-cluster-")
        self.extra_args = list(extra_args)
        self.network = network
        hosts = network.hosts if network else [None] * n
        # Node i's own flags: its `--region` and `--zone`, when `regions`/`zones` name one per node.
        self.own_args = [[*(["--region", regions[i]] if regions else []),
                          *(["--zone", zones[i]] if zones and zones[i] else [])] for i in range(n)]
        self.nodes = [Node(i + 1, self.base_dir, self.extra_args + self.own_args[i], hosts[i]) for i in range(n)]
        self.faults = False

    def start(self, timeout=60):
        first = self.nodes[0].start()
        for i, n in enumerate(self.nodes[1:], 1):
            n.extra_args = self.extra_args + self.own_args[i] + ["--join", first.grpc]
            n.start()
        self.wait_for_voters([n.node_id for n in self.nodes], timeout)
        return self

    def add_node(self, node_id):
        seed = next(n for n in self.nodes if n.alive())
        n = Node(node_id, self.base_dir, self.extra_args + ["--join", seed.grpc])
        self.nodes.append(n)
        return n.start()

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def wait_for_voters(self, ids, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                views = [n.status() for n in self.live()]
                if all(sorted(m["id"] for m in v["members"] if m["role"] == "voter") == sorted(ids)
                       and v["leader"] is not None for v in views):
                    return views[0]
            except (AssertionError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"voters never became {ids}: {[n.status() for n in self.live()]}")

    def leader(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for n in self.live():
                try:
                    lid = n.status()["leader"]
                except (AssertionError, OSError):
                    continue
                if lid is not None:
                    found = [x for x in self.live() if x.node_id == lid]
                    if found:
                        return found[0]
            time.sleep(0.05)
        raise AssertionError("no leader")

    def check(self, node=None):
        """`basalt cluster check` through `node` (default: the first live one): (exit code,
        its JSON report)."""
        node = node or self.live()[0]
        r = subprocess.run([basalt_bin(), "cluster", "check", "--endpoint", node.endpoint,
                            "--root-key", ROOT_KEY], capture_output=True, timeout=120)
        out = r.stdout.decode()
        return r.returncode, (json.loads(out) if out.strip() else {"stderr": r.stderr.decode()})

    def assert_consistent(self, timeout=30):
        """Every replica's state digest at one log entry is the same (retried while the
        cluster heals: a member that cannot answer yet is not a verdict)."""
        deadline = time.time() + timeout
        while True:
            code, report = self.check()
            if code == 0 or time.time() > deadline or (report.get("digests") and not report.get("errors")):
                break
            time.sleep(0.5)
        assert code == 0 and report["consistent"], report
        assert sorted(report["digests"]) == sorted(str(n.node_id) for n in self.nodes), report
        return report

    def shutdown(self):
        for n in self.nodes:
            if n.alive():
                n.resume()
                n.stop()

    def expect_faults(self):
        """Peers will be killed or paused: their unreachability is not an error of the test."""
        self.faults = True
        for n in self.nodes:
            n.allowed_errors = self.PEER_DOWN

    def unexpected_errors(self):
        if self.faults:
            for n in self.nodes:
                n.allowed_errors = self.PEER_DOWN
        return [e for n in self.nodes for e in n.unexpected_errors()]


class Host:
    """One machine of a `Network`: a namespace with a client link and a cluster link."""

    def __init__(self, netns, client_ip, cluster_ip, client_link, cluster_link):
        self.netns, self.client_ip, self.cluster_ip = netns, client_ip, cluster_ip
        # Its veths' ends in the root namespace.
        self.client_link, self.cluster_link = client_link, cluster_link


class Network:
    """N hosts in network namespaces, each with two links: one to a client bridge (HTTP; the
    tests reach it from here) and one to a cluster bridge (gRPC and gossip between nodes).
    `partition` moves cluster links onto separate bridges, so packets between sides are dropped
    silently, as by a real network split, while clients still reach every node; `heal` puts
    them back. Needs root (CAP_NET_ADMIN) and `ip`; `Network.create` says why it cannot."""

    _made = 0

    def __init__(self, n):
        Network._made += 1  # names unique per network: the kernel may tear an old one down late
        tag = f"{os.getpid() % 100000}{chr(96 + Network._made % 26 + 1)}"
        self.tag = tag
        self.client_bridge = f"bc{tag}"
        self.bridges = []  # cluster bridges: [0] is the whole network, more per partition side
        self.hosts = [Host(f"basalt{tag}n{i}", f"10.231.0.{10 + i}", f"10.232.0.{10 + i}", f"c{tag}n{i}", f"r{tag}n{i}")
                      for i in range(1, n + 1)]

    @staticmethod
    def _ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    @classmethod
    def create(cls, n):
        """Builds the network; returns (network, None), or (None, why not) where it cannot."""
        net = cls(n)
        try:
            net._build()
            return net, None
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            net.destroy()
            return None, f"network namespaces unavailable: {e} {detail.decode(errors='replace').strip()}"

    def _bridge(self, name):
        self._ip("link", "add", name, "type", "bridge")
        self._ip("link", "set", name, "up")

    def _build(self):
        self._bridge(self.client_bridge)
        self._ip("addr", "add", "10.231.0.1/24", "dev", self.client_bridge)
        self.bridges.append(f"bs{self.tag}x0")
        self._bridge(self.bridges[0])
        for i, h in enumerate(self.hosts, 1):
            self._ip("netns", "add", h.netns)
            self._ip("-n", h.netns, "link", "set", "lo", "up")
            for link, inner, ip, bridge in ((h.client_link, "client0", h.client_ip, self.client_bridge),
                                            (h.cluster_link, "cluster0", h.cluster_ip, self.bridges[0])):
                self._ip("link", "add", link, "type", "veth", "peer", "name", inner, "netns", h.netns)
                self._ip("link", "set", link, "master", bridge, "up")
                self._ip("-n", h.netns, "addr", "add", f"{ip}/24", "dev", inner)
                self._ip("-n", h.netns, "link", "set", inner, "up")

    def partition(self, *sides):
        """Splits the cluster network: each side is a list of nodes (or hosts) that still
        reach each other; hosts on no side keep the original bridge."""
        for k, side in enumerate(sides, 1):
            while len(self.bridges) <= k:
                self.bridges.append(f"bs{self.tag}x{len(self.bridges)}")
                self._bridge(self.bridges[-1])
            for member in side:
                host = getattr(member, "host", member)
                self._ip("link", "set", host.cluster_link, "master", self.bridges[k])

    def heal(self):
        for h in self.hosts:
            self._ip("link", "set", h.cluster_link, "master", self.bridges[0])

    def destroy(self):
        """Removes everything it made. Veths go explicitly: a deleted namespace can outlive
        its name for a while, and its links with it."""
        for h in self.hosts:
            for link in (h.client_link, h.cluster_link):
                subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True, timeout=10)
        for b in [self.client_bridge, *self.bridges]:
            subprocess.run(["ip", "link", "del", b], capture_output=True, timeout=10)


def _headers(msg):
    """Response headers by lower-cased name; repeated ones (Set-Cookie) joined by newlines."""
    out = {}
    for k, v in msg.items():
        k = k.lower()
        out[k] = out[k] + "\n" + v if k in out else v
    return out


def http(method, url, body=None, headers=None):
    """A raw HTTP call: returns (status, headers, parsed JSON or raw text)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            status, hdrs = r.status, _headers(r.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, _headers(e.headers)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return status, hdrs, parsed


def create_project(node, project_id):
    h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    status, _, body = http("POST", node.url() + "/projects", {"projectId": project_id, "name": project_id}, h)
    assert status == 201, body
    status, _, key = http("POST", node.url() + f"/projects/{project_id}/keys", {"name": "tests", "scopes": ALL_SCOPES}, h)
    assert status == 201, key
    return key["secret"]


ALL_SCOPES = [
    "databases.read", "databases.write", "tables.read", "tables.write", "columns.read", "columns.write",
    "indexes.read", "indexes.write", "rows.read", "rows.write", "collections.read", "collections.write",
    "attributes.read", "attributes.write", "documents.read", "documents.write", "health.read",
    "users.read", "users.write", "sessions.read", "sessions.write", "teams.read", "teams.write",
    "buckets.read", "buckets.write", "files.read", "files.write", "tokens.read", "tokens.write",
]
