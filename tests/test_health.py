"""Appwrite's Health service on a three-node cluster, through the Python SDK's client (the
27.x SDKs have no Health service: its routes are called as the older SDKs' Health service
called them, with `Client.call`), and the unauthenticated live/ready probes. Each check must
answer for what it claims: `db` fails once the node reached has no quorum, `time` once its
clock is skewed (libfaketime) past Appwrite's 60 s gap."""
import glob
import os
import time

import pytest
from appwrite.client import Client
from appwrite.exception import AppwriteException

from harness import ROOT_KEY, TestCluster, create_project, http

QUEUES = ["audits", "builds", "certificates", "databases", "deletes", "functions", "logs", "mails",
          "messaging", "migrations", "stats-resources", "stats-usage", "webhooks"]
FAILED = ["v1-database", "v1-deletes", "v1-audits", "v1-mails", "v1-functions", "v1-stats-resources",
          "v1-stats-usage", "v1-webhooks", "v1-certificates", "v1-builds", "v1-screenshots",
          "v1-messaging", "v1-migrations"]


def libfaketime():
    found = glob.glob("/usr/lib/*-linux-gnu/faketime/libfaketime.so.1")
    if not found:
        pytest.skip("libfaketime is not installed (scripts/deps.sh installs it)")
    return found[0]


@pytest.fixture(scope="module")
def cluster():
    c = TestCluster(3)
    # Node 3's wall clock reads its offset from a file (libfaketime), as jepsen's clock nemesis
    # does: only the wall clock, timers run on the monotonic one.
    clock = os.path.join(c.base_dir, "node3.clock")
    with open(clock, "w") as f:
        f.write("+0\n")
    c.nodes[2].env = {"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": clock,
                      "FAKETIME_CACHE_DURATION": "1", "DONT_FAKE_MONOTONIC": "1"}
    c.clock_file = clock
    c.start()
    for n in c.nodes:
        n.allowed_errors = TestCluster.PEER_DOWN
    yield c
    c.shutdown()
    assert not c.unexpected_errors(), "\n".join(c.unexpected_errors())


@pytest.fixture(scope="module")
def key(cluster):
    return create_project(cluster.nodes[0], "healthp")


def client(node, key, project="healthp"):
    return Client().set_endpoint(node.url()).set_project(project).set_key(key)


def health(c, path, **params):
    """A Health route, called as the SDK's services call theirs (each names the project)."""
    headers = {"content-type": "application/json", "X-Appwrite-Project": c.get_config("project")}
    return c.call("get", "/health" + path, headers, params)


def refused(c, path, **params):
    with pytest.raises(AppwriteException) as e:
        health(c, path, **params)
    return e.value


def test_every_health_route_answers_the_sdk(cluster, key):
    for node in cluster.nodes:
        c = client(node, key)
        h = health(c, "")
        assert (h["name"], h["status"]) == ("http", "pass") and h["ping"] >= 0, h
        db = health(c, "/db")
        assert db["total"] == 2 and [s["name"] for s in db["statuses"]] == ["store", "raft"], db
        assert all(s["status"] == "pass" and s["ping"] >= 0 for s in db["statuses"]), db
        assert [s["name"] for s in health(c, "/cache")["statuses"]] == ["rate limits"]
        assert [s["name"] for s in health(c, "/pubsub")["statuses"]] == ["realtime"]
        assert health(c, "/storage")["status"] == "pass"
        assert health(c, "/storage/local")["status"] == "pass"
        assert health(c, "/anti-virus") == {"version": "", "status": "disabled"}
        t = health(c, "/time")
        assert abs(t["diff"]) < 2000 and abs(t["remoteTime"] - t["localTime"]) <= 2, t
        assert abs(t["localTime"] - time.time()) < 5, t
        for q in QUEUES:
            assert health(c, f"/queue/{q}")["size"] == 0 or q == "databases", q
            assert health(c, f"/queue/{q}", threshold=1_000_000)["size"] < 1_000_000
        assert health(c, "/queue/databases", name="database_db_main")["size"] >= 0
        for name in FAILED:
            assert health(c, f"/queue/failed/{name}") == {"size": 0}, name


def test_a_queue_at_its_threshold_answers_503(cluster, key):
    c = client(cluster.nodes[0], key)
    e = refused(c, "/queue/mails", threshold=0)
    assert (e.code, e.type) == (503, "health_queue_size_exceeded"), e
    assert "Current value is 0 and threshold is 0" in e.message
    e = refused(c, "/queue/failed/v1-mails", threshold=0)
    assert (e.code, e.type) == (503, "health_queue_size_exceeded") and "failed jobs" in e.message
    e = refused(c, "/queue/failed/v1-nothing")
    assert (e.code, e.type) == (400, "general_argument_invalid") and "v1-database" in e.message
    e = refused(c, "/queue/webhooks", threshold="many")
    assert (e.code, e.type) == (400, "general_argument_invalid"), e


def test_the_certificate_is_the_nodes_own(cluster, key):
    for node in cluster.nodes:
        c = client(node, key)
        name = f"node-{node.node_id}.basalt"
        cert = health(c, "/certificate", domain=name)
        assert cert["name"] == f"/CN={name}" and cert["subjectSN"] == name, cert
        assert int(cert["validFrom"]) < time.time() < int(cert["validTo"]), cert
        assert cert["signatureTypeSN"] == "ecdsa-with-SHA256", cert
        # As a URL, or by the host it is reached at.
        assert health(c, "/certificate", domain=f"https://{name}/")["subjectSN"] == name
        assert health(c, "/certificate", domain="127.0.0.1")["subjectSN"] == name
    e = refused(client(cluster.nodes[0], key), "/certificate", domain="node-2.basalt")
    assert (e.code, e.type) == (404, "health_invalid_host"), e
    e = refused(client(cluster.nodes[0], key), "/certificate", domain="example.com")
    assert (e.code, e.type) == (404, "health_invalid_host"), e
    # `domain` is optional: the node's own certificate.
    assert health(client(cluster.nodes[0], key), "/certificate")["subjectSN"] == "node-1.basalt"


def test_health_takes_the_health_read_scope(cluster, key):
    node = cluster.nodes[0]
    # Guests hold `health.read`, as in Appwrite (app/config/roles.php).
    guest = Client().set_endpoint(node.url()).set_project("healthp")
    assert health(guest, "")["status"] == "pass"
    e = refused(Client().set_endpoint(node.url()).set_project("nothere"), "")
    assert (e.code, e.type) == (404, "project_not_found"), e
    h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    status, _, narrow = http("POST", node.url() + "/projects/healthp/keys",
                             {"name": "narrow", "scopes": ["databases.read"]}, h)
    assert status == 201, narrow
    e = refused(client(node, narrow["secret"]), "/db")
    assert (e.code, e.type) == (401, "general_unauthorized_scope"), e
    # The probes a load balancer uses take nothing.
    for path in ["/live", "/ready", "/version"]:
        status, _, body = http("GET", node.url() + "/health" + path)
        assert status == 200, (path, body)
    assert http("GET", node.url() + "/health/ready")[2]["status"] == "pass"


def skew(cluster, offset):
    """Sets node 3's clock offset (libfaketime reads the file whole: written aside, renamed)."""
    with open(cluster.clock_file + ".next", "w") as f:
        f.write(offset + "\n")
    os.rename(cluster.clock_file + ".next", cluster.clock_file)


def test_time_fails_on_the_node_whose_clock_is_off(cluster, key):
    skewed, other = cluster.nodes[2], cluster.nodes[0]
    try:
        skew(cluster, "-120")
        deadline = time.time() + 15
        while True:
            try:
                health(client(skewed, key), "/time")
            except AppwriteException as e:
                assert (e.code, e.type) == (500, "general_server_error"), e
                assert "Server time gaps detected" in e.message and "behind" in e.message, e
                break
            assert time.time() < deadline, "a clock two minutes behind was never noticed"
            time.sleep(0.5)
        # The others' clock is the cluster's: the median is not moved by one skewed member.
        t = health(client(other, key), "/time")
        assert abs(t["diff"]) < 2000, t
    finally:
        skew(cluster, "+0")
    deadline = time.time() + 15
    while True:
        try:
            assert abs(health(client(skewed, key), "/time")["diff"]) < 2000
            break
        except AppwriteException:
            assert time.time() < deadline, "the clock came back but /health/time still fails"
            time.sleep(0.5)


def test_db_and_storage_fail_without_a_quorum_and_recover(cluster, key):
    survivor = cluster.nodes[0]
    c = client(survivor, key)
    for n in cluster.nodes[1:]:
        n.stop()
    try:
        e = refused(c, "/db")
        assert (e.code, e.type) == (500, "general_server_error") and "DB failure on: raft" in e.message, e
        e = refused(c, "/storage")
        assert (e.code, e.type) == (500, "general_server_error"), e
        # What needs no quorum still passes: the node itself, its store, its file directory.
        assert health(c, "")["status"] == "pass"
        assert health(c, "/storage/local")["status"] == "pass"
        assert health(c, "/pubsub")["statuses"][0]["status"] == "pass"
        deadline = time.time() + 15
        while http("GET", survivor.url() + "/health/ready")[0] != 503:
            assert time.time() < deadline, "a node alone kept saying it was ready"
            time.sleep(0.2)
        assert "lead" in http("GET", survivor.url() + "/health/ready")[2]["reason"]
        assert http("GET", survivor.url() + "/health/live")[0] == 200
    finally:
        for n in cluster.nodes[1:]:
            n.start()
    cluster.wait_for_voters([1, 2, 3])
    deadline = time.time() + 20
    while True:
        try:
            assert health(c, "/db")["total"] == 2
            break
        except AppwriteException:
            assert time.time() < deadline, "/health/db never passed again"
            time.sleep(0.5)
    assert health(c, "/storage")["status"] == "pass"
