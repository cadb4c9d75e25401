"""The Web SDK (npm `appwrite@27.0.0`) in a real browser against a three-node cluster:
tests/sdk/browser_flows.mjs drives Debian's Chromium through playwright-core (both installed
by scripts/test) for cookies across nodes, X-Fallback-Cookies, JWTs, row ownership, sign-out
everywhere and CORS for registered and unregistered origins."""
import os
import shutil
import subprocess

import pytest
from appwrite.permission import Permission
from appwrite.role import Role
from appwrite.services.tables_db import TablesDB

from harness import ROOT_KEY, create_project

WEB_DIR = os.environ.get("BASALT_WEB_SDK", os.path.expanduser("~/.cache/basalt/web"))
CHROMIUM = os.environ.get("BASALT_CHROMIUM", "/usr/bin/chromium")


def test_web_sdk_in_a_browser(cluster):
    modules = os.path.join(WEB_DIR, "node_modules")
    for need in ("appwrite", "playwright-core"):
        if not os.path.isdir(os.path.join(modules, need)):
            pytest.fail(f"{need} is not installed in {WEB_DIR} (scripts/test installs it)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM} (scripts/deps.sh installs Debian's chromium)")
    first = cluster.nodes[0]
    pid = "browser"
    key = create_project(first, pid)
    from appwrite.client import Client
    db = TablesDB(Client().set_endpoint(first.url()).set_project(pid).set_key(key))
    db.create(database_id="app", name="App")
    db.create_table(database_id="app", table_id="notes", name="Notes", row_security=True,
                    permissions=[Permission.create(Role.users())])
    db.create_varchar_column(database_id="app", table_id="notes", key="title", size=64, required=False)
    # The browser calls every node by `localhost`: one site for the cookies, as one domain
    # in front of a cluster would be.
    endpoints = ",".join(n.url().replace("127.0.0.1", "localhost") for n in cluster.nodes)
    env = dict(os.environ, ENDPOINTS=endpoints, PROJECT=pid, KEY=key, ROOT_KEY=ROOT_KEY,
               DATABASE="app", TABLE="notes", WEB_DIR=modules, CHROMIUM=CHROMIUM)
    script = os.path.join(os.path.dirname(__file__), "sdk", "browser_flows.mjs")
    r = subprocess.run([shutil.which("node"), script], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr + r.stdout
    cluster.assert_consistent()
