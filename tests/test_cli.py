"""The operator CLI of CONTRACT.md: JSON on stdout and exit 0, or one line on stderr and non-zero."""
import json
import os
import stat
import subprocess
import time

from harness import ROOT_KEY, Node, basalt_bin, temp_dir


def run(*args, env=None):
    return subprocess.run([basalt_bin(), *args], capture_output=True, text=True, timeout=60, env=env)


def test_project_key_and_status(node):
    common = ["--endpoint", node.endpoint, "--root-key", ROOT_KEY]
    r = run("project", "create", "--id", "clip", "--name", "CLI project", *common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["$id"] == "clip"
    r = run("key", "create", "--project", "clip", "--all-scopes", *common)
    assert r.returncode == 0, r.stderr
    key = json.loads(r.stdout)
    assert key["secret"].startswith("standard_") and "rows.write" in key["scopes"]
    r = run("key", "create", "--project", "clip", "--scopes", "rows.read,rows.write", *common)
    assert json.loads(r.stdout)["scopes"] == ["rows.read", "rows.write"]
    r = run("cluster", "status", *common)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["leader"] == 1 and status["term"] >= 1
    [member] = status["members"]
    assert member["id"] == 1 and member["role"] == "voter" and member["health"] == "alive"
    assert member["applied"] >= 3 and member["http"] == node.endpoint
    r = run("project", "create", "--id", "clip", "--name", "again", *common)
    assert r.returncode != 0 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    r = run("cluster", "status", "--endpoint", node.endpoint, "--root-key", "wrong")
    assert r.returncode != 0 and "401" in r.stderr


def test_identity_and_generated_root_key():
    base = temp_dir("basalt-id-")
    data = os.path.join(base, "data")
    env = dict(os.environ)
    env.pop("BASALT_ROOT_KEY", None)
    proc = subprocess.Popen(
        [basalt_bin(), "serve", "--data-dir", data, "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "root_key_generated" and len(first["root_key"]) == 64
        key_file = os.path.join(data, "root-key")
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700, "the data dir is its owner's alone"
        with open(key_file) as f:
            assert f.read().strip() == first["root_key"]
        listening = json.loads(proc.stdout.readline())
        assert listening["event"] == "listening"
        r = run("cluster", "status", "--endpoint", listening["http"], "--root-key", first["root_key"])
        assert r.returncode == 0, r.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    # The data dir remembers node 1: starting it as node 2 is refused with a clear message.
    r = run("serve", "--data-dir", data, "--node-id", "2", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0")
    assert r.returncode != 0 and "belongs to node 1" in r.stderr
    # Restarting as itself does not print the root key again.
    proc = subprocess.Popen(
        [basalt_bin(), "serve", "--data-dir", data, "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        line = json.loads(proc.stdout.readline())
        assert line["event"] == "listening"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_sigterm_is_a_clean_shutdown():
    n = Node().start()
    started = time.time()
    assert n.stop() == 0
    assert time.time() - started < 15
    assert "node stopped" in n.log_text()
