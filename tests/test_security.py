"""A secure cluster: nodes join with join tokens or the root key over mutual TLS, and every
node-to-node RPC refuses whoever the cluster did not admit (no certificate, a self-signed one,
a CA-signed one for a node that is not a member or whose key the cluster never admitted, a
removed node's). Each refusal changes nothing."""
import json
import os
import subprocess
import time

import pytest
from appwrite.client import Client
from appwrite.services.tables_db import TablesDB

from harness import ROOT_KEY, Node, TestCluster, basalt_bin, create_project, fault_bin, http

METHODS = {"vote", "append", "snapshot", "forward", "read_index", "digest", "ping",
           "announce", "join", "remove", "renew"}


def cli(node, *args, check=True):
    r = subprocess.run([basalt_bin(), *args, "--endpoint", node.endpoint, "--root-key", ROOT_KEY],
                       capture_output=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr.decode()
    return r


def join_token(node, ttl="10m"):
    return json.loads(cli(node, "cluster", "join-token", "--ttl", ttl).stdout)


def probe(node, identity, claim):
    """Every RPC of `node`, called as `identity`, acting as node `claim`."""
    r = subprocess.run([fault_bin(), "probe-rpc", "--grpc", node.grpc, "--as", identity,
                        "--claim", str(claim)], capture_output=True, timeout=180)
    assert r.returncode == 0, r.stderr.decode()
    answers = json.loads(r.stdout)
    assert set(answers) == METHODS, answers
    return answers


def refused(answer):
    """An RPC refused by the node's authorisation, or a connection its TLS layer would not
    complete (a certificate that no cluster CA signed)."""
    return answer.startswith(("Unauthenticated", "PermissionDenied", "handshake:", "tls-refused:", "Refused:"))


def assert_all_refused(answers, context):
    for method, answer in answers.items():
        assert refused(answer), f"{context}: {method} answered {answer}"


def members(node):
    return sorted((m["id"], m["role"]) for m in node.status()["members"])


def no_hijack(node):
    """The project the probe's forwarded write would create does not exist."""
    status, _, body = http("GET", node.url() + "/projects/probe-hijack",
                           headers={"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY})
    return status == 404 and body["type"] == "project_not_found"


def start_refused(node, timeout=60):
    """Starts `node`, expecting it to give up: returns what it logged."""
    with pytest.raises(RuntimeError) as e:
        node.start(timeout=timeout)
    return str(e.value)


@pytest.fixture
def cluster():
    c = TestCluster(3).start()
    yield c
    c.shutdown()
    errors = c.unexpected_errors()
    assert not errors, "\n".join(errors)


def test_a_node_joins_with_a_token_that_then_works_no_more(cluster):
    n1 = cluster.nodes[0]
    token = join_token(n1)
    assert token["token"].startswith("basalt1.") and token["expires"].endswith("+00:00")
    n4 = Node(4, cluster.base_dir, ["--join", cluster.nodes[1].grpc, "--join-token", token["token"]])
    n4.root_key = None  # the token is its only credential; it learns the cluster's root key digest
    cluster.nodes.append(n4)
    n4.start()
    cluster.wait_for_voters([1, 2, 3, 4])
    # The cluster's root key works on the token-joined node, and every member reports when
    # its certificate expires (as its answer to the next probe says).
    deadline = time.time() + 10
    while not all(m["cert_expires"] for m in n4.status()["members"]):
        assert time.time() < deadline, n4.status()
        time.sleep(0.2)
    code, report = cluster.check()
    assert code == 0, report
    before = members(n1)

    # The same token again: refused, and nothing changes.
    again = Node(5, cluster.base_dir, ["--join", n1.grpc, "--join-token", token["token"]])
    again.root_key = None
    assert "already used" in start_refused(again)
    # A token with a wrong secret (same id and CA), and one naming another CA.
    fp, tid, secret = token["token"].split(".")[1:]
    wrong = Node(6, cluster.base_dir, ["--join", n1.grpc, "--join-token", f"basalt1.{fp}.{tid}.{'0' * 32}"])
    wrong.root_key = None
    assert "not valid" in start_refused(wrong)
    other_ca = Node(7, cluster.base_dir, ["--join", n1.grpc, "--join-token", f"basalt1.{'ab' * 32}.{tid}.{secret}"])
    other_ca.root_key = None
    assert "token names" in start_refused(other_ca)
    # An expired one.
    short = join_token(n1, ttl="1s")
    time.sleep(1.5)
    late = Node(8, cluster.base_dir, ["--join", n1.grpc, "--join-token", short["token"]])
    late.root_key = None
    assert "expired" in start_refused(late)
    # The wrong root key, and none at all.
    bad_key = Node(9, cluster.base_dir, ["--join", n1.grpc])
    bad_key.root_key = "not-the-root-key"
    assert "root key does not match" in start_refused(bad_key)
    assert members(n1) == before


def test_an_insecure_node_cannot_join_a_secure_cluster(cluster):
    before = members(cluster.nodes[0])
    n = Node(4, cluster.base_dir, ["--join", cluster.nodes[0].grpc, "--insecure"])
    n.start(timeout=60)  # it serves HTTP (answering 503) but never hears from the cluster
    time.sleep(3)
    assert members(cluster.nodes[0]) == before
    assert "cannot reach join address" in n.log_text()
    n.kill()


@pytest.mark.skipif(not fault_bin(), reason="needs the fault-points build (BASALT_FAULT_BIN)")
def test_every_rpc_refuses_whoever_the_cluster_did_not_admit(cluster):
    n1, n2, n3 = cluster.nodes
    target = cluster.leader()
    assert_all_refused(probe(target, "anonymous", 2), "no certificate")
    assert_all_refused(probe(target, "self-signed:2", 2), "a self-signed certificate")
    # Signed by the cluster's CA (someone who stole the CA key), for a node that is not a member...
    assert_all_refused(probe(target, f"minted:{n1.data_dir}:99", 99), "a valid certificate for a non-member")
    # ...or for a member, acting as that member, but with a key the cluster never admitted for it.
    other = n2 if target is not n2 else n3
    assert_all_refused(probe(target, f"minted:{n1.data_dir}:{other.node_id}", other.node_id),
                       "a minted certificate for a member")
    # None of those outsiders' forwarded writes was applied.
    assert no_hijack(target)
    # A member's real certificate may not act as another node (votes, appends, announcements);
    # forwarding a client's write is what members do (its write is applied).
    answers = probe(target, f"files:{other.data_dir}", 99)
    for method in ("vote", "append", "snapshot", "announce"):
        assert answers[method].startswith("PermissionDenied"), (method, answers[method])
    assert answers["forward"] == "ok" and not no_hijack(target)

    # A removed node's certificate is refused everywhere, and it cannot join again.
    n4 = cluster.add_node(4)
    # Stopped moments after it joined, it may be inside an append from the leader when its
    # Raft core stops (openraft logs that at ERROR on the stopping node).
    n4.allowed_errors = ["core_result=Err(Stopped)", "recv_msg error=Stopped"]
    # Leadership may move while node 4 is removed (to node 4 too): the removal then starts again
    # at the new leader. openraft logs a membership change refused by a node that just lost the
    # lead at ERROR, and node 4, if it led, its last appends after its retirement committed.
    for n in (n1, n2, n3):
        n.allowed_errors = n.allowed_errors + ["has to forward request to"]
    n4.allowed_errors += ["has to forward request to", "was removed from this cluster"]
    cluster.wait_for_voters([1, 2, 3, 4])
    cli(n1, "cluster", "remove", "--node-id", "4")
    n4.stop()  # a removed node that runs on campaigns alone: nobody answers it
    cluster.wait_for_voters([1, 2, 3])
    for node in (n1, n2, n3):
        answers = probe(node, f"files:{n4.data_dir}", 4)
        assert_all_refused(answers, f"a removed node's certificate, at node {node.node_id}")
        # Refused before it ran, not run and failed (the project exists by now).
        assert not answers["forward"].startswith("Refused:"), answers["forward"]
    # Restarted, it asks to join again (with its old certificate) and is refused; its
    # campaign for votes is refused too (openraft logs that as an ERROR, on the removed node).
    n4.start()
    time.sleep(2)
    assert "removed from this cluster" in n4.log_text()
    n4.stop()
    # Every member held the root key's digest that root-key proofs are keyed with, n4 too:
    # until the key is rotated, joining by root key is refused (tokens still work).
    n5 = Node(5, cluster.base_dir, ["--join", n1.grpc])
    assert "rotate it" in start_refused(n5)
    assert members(n1) == [(1, "voter"), (2, "voter"), (3, "voter")]
    code, report = cluster.check()
    assert code == 0, report


def test_certificate_files_are_private_and_name_their_node(cluster):
    for n in cluster.nodes:
        tls = os.path.join(n.data_dir, "tls")
        for f in ("ca-key.pem", "node-key.pem", "gossip.key"):
            assert os.stat(os.path.join(tls, f)).st_mode & 0o777 == 0o600, f
        assert os.stat(tls).st_mode & 0o777 == 0o700


def test_certificates_renew_before_they_expire_without_a_restart():
    c = TestCluster(3, extra_args=["--cert-ttl", "15"]).start()
    try:
        n1 = c.nodes[0]
        deadline = time.time() + 10
        while True:
            first = {m["id"]: m["cert_expires"] for m in n1.status()["members"]}
            if all(first.values()) or time.time() > deadline:
                break
            time.sleep(0.2)
        # Each renews when a third of its 15 s is left; after 25 s every first certificate
        # has expired, and each node holds a later one.
        time.sleep(25)
        later = {}
        deadline = time.time() + 10
        while True:
            later = {m["id"]: m["cert_expires"] for m in n1.status()["members"]}
            if all(later[i] and first[i] and later[i] > first[i] for i in first) or time.time() > deadline:
                break
            time.sleep(0.5)
        assert all(later[i] > first[i] for i in first), (first, later)
        # New connections (a restarted node, and its peers' connections to it) are made with
        # the renewed certificates: the restarted node catches up and the replicas agree.
        c.expect_faults()
        c.nodes[2].stop()
        create_project(n1, "after-renewal")
        c.nodes[2].start()
        c.wait_for_voters([1, 2, 3])
        code, report = c.check()
        assert code == 0, report
        assert "renewed this node's certificate" in n1.log_text()
    finally:
        c.shutdown()
    errors = c.unexpected_errors()
    assert not errors, "\n".join(errors)


def test_the_root_key_is_the_clusters_and_rotates_everywhere_at_once(cluster):
    n1, n2, n3 = cluster.nodes
    token = join_token(n1)
    n4 = Node(4, cluster.base_dir, ["--join", n2.grpc, "--join-token", token["token"]])
    n4.root_key = "a-root-key-of-its-own-0123456789"  # ignored: the cluster's key rules
    cluster.nodes.append(n4)
    n4.start()
    cluster.wait_for_voters([1, 2, 3, 4])
    own = {"X-Appwrite-Project": "console", "X-Appwrite-Key": n4.root_key}
    assert http("GET", n4.url() + "/cluster/status", headers=own)[0] == 401

    new_key = "the-new-root-key-0123456789abcdef"
    r = subprocess.run([basalt_bin(), "cluster", "rotate-root-key", "--endpoint", n3.endpoint,
                        "--root-key", ROOT_KEY], env=dict(os.environ, BASALT_NEW_ROOT_KEY=new_key),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    old = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    new = {"X-Appwrite-Project": "console", "X-Appwrite-Key": new_key}
    deadline = time.time() + 10
    for n in cluster.nodes:
        while http("GET", n.url() + "/cluster/status", headers=new)[0] != 200:
            assert time.time() < deadline, f"node {n.node_id} never took the new key"
            time.sleep(0.1)
        assert http("GET", n.url() + "/cluster/status", headers=old)[0] == 401
    # Back, so the fixture's own checks (made with the harness's key) work.
    r = subprocess.run([basalt_bin(), "cluster", "rotate-root-key", "--endpoint", n1.endpoint,
                        "--root-key", new_key], env=dict(os.environ, BASALT_NEW_ROOT_KEY=ROOT_KEY),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()


def test_a_joiner_takes_the_log_from_a_leader_its_old_memberships_lack(cluster):
    """Found by jepsen/ (seed 3020): a joiner replays the log from its start, and the old
    memberships in it lack members added since. Once it had applied one, it refused the
    appends of a leader added later (`node 4 is not a member of this cluster`) and never
    caught up. The members it was told of when it enrolled count as members meanwhile."""
    n1 = cluster.nodes[0]
    # More entries than one append carries, so a joiner gets the first memberships alone.
    key = create_project(n1, "long")
    t = TablesDB(Client().set_endpoint(n1.url()).set_project("long").set_key(key))
    t.create(database_id="db", name="db")
    t.create_table("db", "t", "T")
    for i in range(400):
        t.create_row("db", "t", f"r{i}", {})
    n4 = Node(4, cluster.base_dir, ["--join", n1.grpc, "--join-token", join_token(n1)["token"]])
    n4.root_key = None
    cluster.nodes.append(n4)
    n4.start()
    cluster.wait_for_voters([1, 2, 3, 4])
    # Peers go away: their unreachability is expected, and so is a removed member's Raft core
    # stopping with requests still in flight.
    for n in cluster.nodes:
        n.allowed_errors = TestCluster.PEER_DOWN + ["error=Stopped", "core_result=Err(Stopped)"]
    h = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    # Node 4, in no membership of the log's first entries, ends up alone and leading.
    left = [1, 2, 3, 4]
    for victim in cluster.nodes[:3]:
        deadline = time.time() + 30
        while True:
            status, _, body = http("POST", n4.url() + "/cluster/remove", {"nodeId": victim.node_id}, h)
            if status != 503 or time.time() > deadline:
                break
            time.sleep(0.2)  # electing a leader after the last removal
        assert status == 200, body
        victim.stop()
        left.remove(victim.node_id)
        cluster.wait_for_voters(left)
    n5 = Node(5, cluster.base_dir, ["--join", n4.grpc, "--join-token", join_token(n4)["token"]])
    n5.root_key = None
    n5.allowed_errors = TestCluster.PEER_DOWN
    cluster.nodes.append(n5)
    n5.start()
    cluster.wait_for_voters([4, 5], timeout=30)
    code, report = cluster.check(n5)
    assert code == 0 and report["consistent"], report
    assert sorted(report["digests"]) == ["4", "5"], report
    t5 = TablesDB(Client().set_endpoint(n5.url()).set_project("long").set_key(key))
    assert t5.list_rows("db", "t").total == 400
