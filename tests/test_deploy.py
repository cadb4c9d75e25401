"""deploy/, checked with what this machine can run (no container engine): the systemd unit by
`systemd-analyze verify`, the Kubernetes manifests against Kubernetes' OpenAPI schemas and the
compose file against the Compose specification's JSON schema, both also checked for what makes
them work, the Grafana dashboard's queries against the series /metrics really has,
and the compose file's own start-up commands run, as written, against local processes."""
import copy
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest
import yaml

from harness import ROOT_KEY, basalt_bin, http, temp_dir

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")


def read(*path):
    with open(os.path.join(DEPLOY, *path)) as f:
        return f.read()


def test_the_systemd_unit_verifies():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    d = temp_dir("basalt-unit-")
    key = os.path.join(d, "root-key")
    with open(key, "w") as f:
        f.write(ROOT_KEY + "\n")
    # The unit as shipped, with the paths of this machine's binary and files.
    unit = read("systemd", "basalt.service") \
        .replace("/usr/local/bin/basalt", basalt_bin()) \
        .replace("/etc/basalt/basalt.env", os.path.join(DEPLOY, "systemd", "basalt.env")) \
        .replace("/etc/basalt/root-key", key)
    path = os.path.join(d, "basalt.service")
    with open(path, "w") as f:
        f.write(unit)
    r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    # Every variable the environment file sets is a flag `basalt serve` reads.
    serve_help = subprocess.run([basalt_bin(), "serve", "--help"], capture_output=True, text=True).stdout
    for line in read("systemd", "basalt.env").splitlines():
        m = re.match(r"#?(BASALT_[A-Z_]+)=", line)
        if m and m.group(1) != "BASALT_LOG":
            assert f"env: {m.group(1)}" in serve_help, m.group(1)


def test_the_kubernetes_manifests_hold_together():
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError
    docs = {d["kind"] + "/" + d["metadata"]["name"]: d for d in yaml.safe_load_all(read("kubernetes", "basalt.yaml"))}
    # Kubernetes' own OpenAPI schemas (1.33), unknown fields refused.
    for d in docs.values():
        kubernetes_validate.validate(d, "1.33", strict=True)
    bad = copy.deepcopy(docs["StatefulSet/basalt"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(bad, "1.33", strict=True)
    assert set(docs) == {"Service/basalt-headless", "Service/basalt", "PodDisruptionBudget/basalt",
                         "StatefulSet/basalt"}, set(docs)
    for d in docs.values():
        assert d["apiVersion"] in {"v1", "apps/v1", "policy/v1"}, d["apiVersion"]
    sts, headless = docs["StatefulSet/basalt"], docs["Service/basalt-headless"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert spec["serviceName"] == "basalt-headless" and spec["selector"]["matchLabels"].items() <= labels.items()
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert spec["podManagementPolicy"] == "Parallel" and spec["replicas"] == 3
    pdb = docs["PodDisruptionBudget/basalt"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"].items() <= labels.items()
    c = pod["containers"][0]
    ports = {p["name"] for p in c["ports"]}
    for svc in ["Service/basalt-headless", "Service/basalt"]:
        assert docs[svc]["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in docs[svc]["spec"]["ports"]} <= ports
    assert c["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert mounts["data"] == env["BASALT_DATA_DIR"] and spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert env["BASALT_ROOT_KEY_FILE"].startswith(mounts["root-key"] + "/")
    # The start-up script, run by a shell as the pod's would: pod basalt-2 is node 3 and joins.
    script = c["args"][0].replace("exec basalt", "echo basalt")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         env={"HOSTNAME": "basalt-2", "POD_IP": "10.1.2.3", "PATH": os.environ["PATH"]}).stdout
    assert out.split() == ["basalt", "serve", "--node-id", "3", "--advertise-http",
                           "http://basalt-2.basalt-headless:8080", "--advertise-grpc",
                           "basalt-2.basalt-headless:9090", "--advertise-gossip", "10.1.2.3:7946",
                           "--join", "basalt-0.basalt-headless:9090"], out
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         env={"HOSTNAME": "basalt-0", "POD_IP": "10.1.2.1", "PATH": os.environ["PATH"]}).stdout
    assert "--node-id 1 " in out and "--join" not in out, out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Compose:
    """The compose file's services run as local processes: the same commands and environment,
    with the names and ports a container network gives each service mapped to this host."""

    def __init__(self):
        self.spec = yaml.safe_load(read("compose.yaml"))
        self.dir = temp_dir("basalt-compose-")
        self.bin = os.path.join(self.dir, "bin")
        os.makedirs(self.bin)
        os.symlink(basalt_bin(), os.path.join(self.bin, "basalt"))
        self.tokens = os.path.join(self.dir, "tokens")
        os.makedirs(self.tokens)
        self.secret = os.path.join(self.dir, "root_key")
        with open(self.secret, "w") as f:
            f.write(ROOT_KEY + "\n")
        self.ports = {n: {"http": free_port(), "grpc": free_port(), "gossip": free_port()} for n in (1, 2, 3)}
        self.procs = {}

    def env(self, service):
        s = self.spec["services"][service]
        me = int(service[-1]) if service[-1].isdigit() else None
        out = {}
        for k, v in s["environment"].items():
            v = str(v)
            for n, p in self.ports.items():
                v = v.replace(f"basalt{n}:8080", f"127.0.0.1:{p['http']}").replace(f"basalt{n}:9090", f"127.0.0.1:{p['grpc']}")
            if me:
                v = v.replace("0.0.0.0:8080", f"127.0.0.1:{self.ports[me]['http']}") \
                     .replace("0.0.0.0:9090", f"127.0.0.1:{self.ports[me]['grpc']}")
                if k == "GOSSIP_PORT":
                    v = str(self.ports[me]["gossip"])
                if k == "BASALT_DATA_DIR":
                    v = os.path.join(self.dir, f"data{me}")
            v = v.replace("/run/secrets/root_key", self.secret).replace("/tokens/", self.tokens + "/")
            out[k] = v
        return out

    def command(self, service):
        s = self.spec["services"][service]
        assert s["entrypoint"] == ["sh", "-c"], s["entrypoint"]
        # Compose's `$$` is a `$` for the shell; the container's paths are this run's.
        cmd = s["command"][0].replace("$$", "$").replace("/run/secrets/root_key", self.secret) \
            .replace("/tokens", self.tokens)
        # `hostname -i` in a container is its own address; here, loopback.
        return cmd.replace("hostname -i", "echo 127.0.0.1")

    def start(self, service):
        env = dict(os.environ, PATH=self.bin + ":" + os.environ["PATH"], NO_COLOR="1", **self.env(service))
        env.pop("BASALT_ROOT_KEY", None)
        log = open(os.path.join(self.dir, f"{service}-{len(self.procs)}.log"), "ab")
        p = subprocess.Popen(["sh", "-c", self.command(service)], env=env, stdout=log, stderr=log)
        self.procs[service] = p
        return p

    def url(self, n):
        return f"http://127.0.0.1:{self.ports[n]['http']}"

    def wait_ready(self, n, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if http("GET", self.url(n) + "/v1/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"compose node {n} never became ready")

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)


def compose_schema():
    """The Compose specification's JSON schema, from the docker-compose package's data (found
    without importing the package, whose dependencies are not installed)."""
    spec = importlib.util.find_spec("compose")
    if spec is None:
        pytest.skip("docker-compose 1.29.2 (for its schema) is not installed; scripts/test installs it")
    with open(os.path.join(spec.submodule_search_locations[0], "config", "compose_spec.json")) as f:
        return json.load(f)


def test_the_compose_file_follows_the_compose_specification():
    import jsonschema
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    doc = yaml.safe_load(read("compose.yaml"))
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    bad = copy.deepcopy(doc)
    bad["services"]["basalt1"]["depends_on"] = {"join-tokens": {"condition": "whenever"}}
    assert list(validator.iter_errors(bad)), "the schema refuses nothing"


def test_the_compose_start_up_forms_a_cluster_and_the_dashboard_reads_it():
    c = Compose()
    services = c.spec["services"]
    assert set(services) == {"basalt1", "join-tokens", "basalt2", "basalt3"}
    for n in ("basalt2", "basalt3"):
        assert services[n]["depends_on"]["join-tokens"]["condition"] == "service_completed_successfully"
        assert "BASALT_ROOT_KEY_FILE" not in services[n]["environment"], "joiners take a token, not the root key"
    try:
        c.start("basalt1")
        c.wait_ready(1)
        tokens = c.start("join-tokens")
        assert tokens.wait(timeout=120) == 0, open(os.path.join(c.dir, "join-tokens-1.log")).read()
        for n in (2, 3):
            assert len(open(os.path.join(c.tokens, f"node-{n}")).read().strip()) > 20
            c.start(f"basalt{n}")
            c.wait_ready(n)
        h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
        deadline = time.time() + 60
        while True:
            status = http("GET", c.url(3) + "/v1/cluster/status", headers=h)[2]
            voters = sorted(m["id"] for m in status["members"] if m["role"] == "voter")
            if voters == [1, 2, 3]:
                break
            assert time.time() < deadline, status
            time.sleep(0.5)
        # A joiner restarted with the same command (its token already spent) comes back.
        c.procs["basalt2"].terminate()
        c.procs["basalt2"].wait(timeout=30)
        c.start("basalt2")
        c.wait_ready(2)

        # Every series the dashboard queries is one /metrics has (on some node, once each has
        # served writes and linearizable reads).
        for n in (1, 2, 3):
            assert http("POST", c.url(n) + "/v1/projects", {"projectId": f"dash{n}", "name": "d"}, h)[0] == 201
            assert http("GET", c.url(n) + "/v1/projects", headers=h)[0] == 200
        families = set()
        for n in (1, 2, 3):
            families |= set(re.findall(r"^# TYPE (\S+) ", http("GET", c.url(n) + "/metrics")[2], re.M))
        dash = json.loads(read("grafana", "basalt.json"))
        assert dash["panels"]
        for panel in dash["panels"]:
            for target in panel["targets"]:
                names = set(re.findall(r"\b((?:basalt|process)_[a-z_]+)", target["expr"]))
                assert names, target["expr"]
                for name in names:
                    base = re.sub(r"_(bucket|sum|count)$", "", name)
                    assert name in families or base in families, (panel["title"], name)
    finally:
        c.stop_all()
