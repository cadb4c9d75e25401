"""`basalt drill`: a failure rehearsed under a steady write load, with the time to recover and
the proof that nothing acknowledged was lost (every acknowledged ledger entry read back through
every node, exactly once, and `cluster check` consistent). Against a throw-away local cluster
(`--local`: real kill -9 and restart) and against a running one, where the target node does
the fault to itself: it dies (this test restarts it, as its supervisor would) or cuts itself
off from its peers for a while."""
import json
import os
import subprocess
import time

import pytest

from harness import ROOT_KEY, TestCluster, basalt_bin, http


def report_of(r):
    assert r.stdout.strip(), r.stderr
    return json.loads(r.stdout)


def assert_proved(rep):
    """What every drill must show: it recovered, and lost or doubled nothing."""
    assert rep["ok"] is True, rep
    assert rep["time-to-recover-ms"] is not None and rep["time-to-recover-ms"] < 30_000, rep
    led = rep["ledger"]
    assert led["acknowledged"] > 50 and led["lost"] == 0 and led["duplicates"] == 0, led
    assert led["failed-but-present"] == 0, led
    assert rep["cluster-check"]["consistent"] is True, rep["cluster-check"]
    for node, seen in led["by-node"].items():
        assert seen["entries"] >= led["acknowledged"], (node, seen)


def test_local_leader_drill():
    r = subprocess.run([basalt_bin(), "drill", "leader", "--local"], capture_output=True, text=True, timeout=300)
    rep = report_of(r)
    assert r.returncode == 0, r.stderr
    assert_proved(rep)
    assert rep["fault"] == {"fault": "kill", "nodes": [rep["leader-before"]]}
    assert rep["leader-after"] not in (None, rep["leader-before"]), rep
    # Writes wait for an election: timed from when the leader was dead, not before.
    assert rep["time-to-recover-ms"] >= 100, rep
    assert sorted(rep["ledger"]["by-node"]) == ["1", "2", "3"]


def test_local_region_drill_loses_only_that_region():
    r = subprocess.run([basalt_bin(), "drill", "region", "--region", "r2", "--local"],
                       capture_output=True, text=True, timeout=300)
    rep = report_of(r)
    assert r.returncode == 0, r.stderr
    assert_proved(rep)
    assert rep["fault"] == {"fault": "kill", "nodes": [2]}


@pytest.fixture
def running():
    c = TestCluster(3).start()
    c.expect_faults()
    # The node doing a drill's fault to itself says so.
    for n in c.nodes:
        n.allowed_errors = TestCluster.PEER_DOWN + ["isolated by an operator drill"]
    yield c
    c.shutdown()
    assert not c.unexpected_errors(), "\n".join(c.unexpected_errors())


def drill(c, *args, timeout=300):
    return subprocess.Popen([basalt_bin(), "drill", *args, "--endpoint", c.nodes[0].endpoint,
                             "--root-key", ROOT_KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_running_cluster_leader_drill_with_a_supervisor(running):
    c = running
    leader = c.leader()
    p = drill(c, "leader", "--seconds", "30")
    # The leader kills itself (SIGKILL); this test is its supervisor and restarts it.
    deadline = time.time() + 60
    while leader.alive():
        assert time.time() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.05)
    assert leader.proc.returncode == -9
    # A supervisor restarts it once the others have taken over (on a loaded machine an
    # election can outlast a fixed pause, and the restarted node could win it back).
    assert c.leader(timeout=60).node_id != leader.node_id
    leader.restart()
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err + out
    rep = json.loads(out)
    assert_proved(rep)
    assert rep["cluster"] == "running" and rep["leader-before"] == leader.node_id
    assert rep["leader-after"] != leader.node_id
    assert rep["time-to-recover-ms"] >= 100, rep


def test_running_cluster_partition_drill(running):
    c = running
    leader = c.leader()
    p = drill(c, "partition", "--seconds", "6")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err + out
    rep = json.loads(out)
    assert_proved(rep)
    assert rep["fault"]["shape"] == "isolate-leader" and rep["leader-before"] == leader.node_id
    # Cut off, the old leader lost the lead; the others elected another and kept writing.
    assert rep["leader-after"] not in (None, leader.node_id), rep
    assert rep["fault-lasted-ms"] >= 6000
    assert rep["time-to-recover-ms"] >= 100, rep
    assert leader.alive()


def test_drill_route_refuses_bad_input_and_non_operators(running):
    url = running.nodes[0].url() + "/cluster/drill"
    op = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    status, _, body = http("POST", url, {"fault": "explode"}, op)
    assert status == 400 and body["type"] == "general_argument_invalid", body
    status, _, body = http("POST", url, {"fault": "isolate", "seconds": 0}, op)
    assert status == 400, body
    status, _, body = http("POST", url, {"fault": "crash"}, {"X-Appwrite-Project": "console", "X-Appwrite-Key": "wrong"})
    assert status == 401, body
    assert all(n.alive() for n in running.nodes)
    r = subprocess.run([basalt_bin(), "drill", "region", "--region", "nowhere", "--endpoint",
                        running.nodes[0].endpoint, "--root-key", ROOT_KEY], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no member is in region" in r.stderr and r.stdout == ""
