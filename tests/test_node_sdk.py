"""The official Node SDK (node-appwrite@27.1.0, installed by scripts/test outside the
checkout) against a real node: the auth flows (tests/sdk/node_flows.mjs) and relationships
(tests/sdk/node_relationships.mjs)."""
import os
import shutil
import subprocess

import pytest

SDK_DIR = os.environ.get("BASALT_NODE_SDK", os.path.expanduser("~/.cache/basalt/node"))


def run(project, script):
    node = shutil.which("node")
    if not os.path.isdir(os.path.join(SDK_DIR, "node_modules", "node-appwrite")):
        pytest.fail(f"node-appwrite is not installed in {SDK_DIR} (scripts/test installs it)")
    script = os.path.join(os.path.dirname(__file__), "sdk", script)
    env = dict(os.environ, ENDPOINT=project.node.url(), PROJECT=project.id, KEY=project.key,
               SDK_DIR=os.path.join(SDK_DIR, "node_modules"))
    r = subprocess.run([node, script], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr + r.stdout


def test_node_sdk_flows(project):
    run(project, "node_flows.mjs")


def test_node_sdk_relationships(project):
    run(project, "node_relationships.mjs")
