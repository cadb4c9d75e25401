"""Realtime with the Web SDK (npm `appwrite@27.0.0`, its `Realtime` service and `Channel`
builder) in a real browser, against a three-node cluster behind a TCP proxy (as a load
balancer would be): the page subscribes through node 3, rows are written through node 1 with
the Python SDK and arrive with the exact row; a user who may not read a row hears nothing of
it; a transaction's rows arrive once each, after its commit; and when node 3 is killed, the
SDK reconnects through the proxy to another node and the page keeps receiving."""
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time

import pytest
from appwrite.client import Client
from appwrite.id import ID
from appwrite.permission import Permission
from appwrite.role import Role
from appwrite.services.tables_db import TablesDB

from harness import create_project, http

WEB_DIR = os.environ.get("BASALT_WEB_SDK", os.path.expanduser("~/.cache/basalt/web"))
CHROMIUM = os.environ.get("BASALT_CHROMIUM", "/usr/bin/chromium")
P = "rtweb"


class Proxy:
    """Accepts TCP connections on localhost and pipes each to the first node of `targets`
    that accepts it: what a load balancer in front of a cluster does."""

    def __init__(self, targets):
        self.targets = targets
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.served = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client):
        upstream = None
        for host, port in self.targets():
            try:
                upstream = socket.create_connection((host, port), timeout=2)
                self.served.append(port)
                break
            except OSError:
                continue
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        pair = {client: upstream, upstream: client}
        try:
            while True:
                ready, _, _ = select.select(list(pair), [], [], 60)
                if not ready:
                    continue
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


class Browser:
    def __init__(self, env):
        script = os.path.join(os.path.dirname(__file__), "sdk", "browser_driver.mjs")
        self.proc = subprocess.Popen([shutil.which("node"), script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}, self.proc.stderr.read()

    def do(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        out = json.loads(line)
        assert "error" not in out, out["error"]
        return out["value"]

    def page(self, name):
        return self.do(op="page", name=name)

    def run(self, page, body, /, **arg):
        return self.do(op="eval", name=page, body=body, arg=arg)

    def close(self):
        try:
            self.do(op="quit")
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()


# In the page: subscribe with the SDK, keeping every event in `window.events[name]`.
SUBSCRIBE = """
  window.events = window.events || {};
  window.events[arg.name] = [];
  window.rt = window.rt || new Appwrite.Realtime(client(arg.endpoint));
  const sub = await window.rt.subscribe(arg.channels, (e) => window.events[arg.name].push(e));
  window.subs = window.subs || {};
  window.subs[arg.name] = sub;
  return true;
"""
EVENTS = "return window.events[arg.name];"


def wait_for(browser, page, name, n, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = browser.run(page, EVENTS, name=name)
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{page}/{name}: {len(got)} events of {n}: {json.dumps(got)[:800]}")


def test_web_sdk_realtime_across_nodes_and_a_failover(cluster):
    modules = os.path.join(WEB_DIR, "node_modules")
    for need in ("appwrite", "playwright-core"):
        if not os.path.isdir(os.path.join(modules, need)):
            pytest.fail(f"{need} is not installed in {WEB_DIR} (scripts/test installs it)")
    n1, n2, n3 = cluster.nodes
    key = create_project(n1, P)
    server = Client().set_endpoint(n1.url()).set_project(P).set_key(key)
    db = TablesDB(server)
    db.create(database_id="app", name="App")
    db.create_table(database_id="app", table_id="notes", name="Notes", row_security=True,
                    permissions=[Permission.create(Role.users())])
    db.create_varchar_column(database_id="app", table_id="notes", key="title", size=64, required=False)

    # Node 3 first, then the others: the proxy's choice for each new connection.
    def targets():
        order = [n3, n1, n2]
        return [tuple(n.endpoint.split("//")[1].split(":")) for n in order if n.alive()]
    proxy = Proxy(lambda: [(h, int(p)) for h, p in targets()])
    via_proxy = f"http://localhost:{proxy.port}/v1"

    env = dict(os.environ, PROJECT=P, WEB_DIR=modules, CHROMIUM=CHROMIUM)
    b = Browser(env)
    try:
        for name, email in (("ann", "ann@example.com"), ("bob", "bob@example.com")):
            b.page(name)
            b.run(name, """
              const account = new Appwrite.Account(client(arg.endpoint));
              await account.create({ userId: arg.name, email: arg.email, password: "password-123" });
              await account.createEmailPasswordSession({ email: arg.email, password: "password-123" });
              return true;
            """, endpoint=via_proxy, name=name, email=email)
        channel = "Appwrite.Channel.tablesdb('app').table('notes').row()"
        for name in ("ann", "bob"):
            b.run(name, f"arg.channels = [{channel}]; " + SUBSCRIBE, endpoint=via_proxy, name="rows", channels=None)

        # The SDK subscribes once the server says it is connected: public rows are written
        # until both pages have heard one.
        deadline = time.time() + 30
        while time.time() < deadline:
            db.create_row(database_id="app", table_id="notes", row_id=ID.unique(), data={"title": "probe"},
                          permissions=[Permission.read(Role.any())])
            time.sleep(0.3)
            if all(b.run(name, EVENTS, name="rows") for name in ("ann", "bob")):
                break
        for name in ("ann", "bob"):
            wait_for(b, name, "rows", 1)
        time.sleep(0.5)
        for name in ("ann", "bob"):
            b.run(name, "window.events.rows = []; return true;")

        # A row only Ann may read, written through node 1 by the Python SDK; the event carries
        # the row exactly as the API shows it.
        written = db.create_row(database_id="app", table_id="notes", row_id="r1", data={"title": "for ann"},
                                permissions=[Permission.read(Role.user("ann"))])
        status, _, made = http("GET", n1.url() + "/tablesdb/app/tables/notes/rows/r1", None,
                               {"X-Appwrite-Project": P, "X-Appwrite-Key": key})
        assert status == 200 and made["$id"] == written.id and made["$sequence"] == written.sequence, made
        public = db.create_row(database_id="app", table_id="notes", row_id="r2", data={"title": "for all"},
                               permissions=[Permission.read(Role.users())])
        ann = wait_for(b, "ann", "rows", 2)
        assert ann[0]["payload"] == made
        assert ann[0]["events"][0] == "tablesdb.app.tables.notes.rows.r1.create"
        assert "tablesdb.app.tables.notes.rows" in ann[0]["channels"] and len(ann[0]["channels"]) == 16
        assert ann[1]["payload"]["$id"] == public.id
        bob = wait_for(b, "bob", "rows", 1)
        assert [e["payload"]["$id"] for e in bob] == ["r2"], "Bob hears nothing of Ann's row"

        # A transaction: nothing while staged, one event per row after the commit.
        tx = db.create_transaction(ttl=60)
        db.create_operations(transaction_id=tx.id, operations=[
            {"action": "create", "databaseId": "app", "tableId": "notes", "rowId": "t1",
             "data": {"title": "one", "$permissions": ['read("user:ann")']}},
            {"action": "update", "databaseId": "app", "tableId": "notes", "rowId": "t1", "data": {"title": "one!"}},
            {"action": "update", "databaseId": "app", "tableId": "notes", "rowId": "r1", "data": {"title": "again"}},
        ])
        time.sleep(0.5)
        assert len(b.run("ann", EVENTS, name="rows")) == 2, "staged operations are not events"
        db.update_transaction(transaction_id=tx.id, commit=True)
        ann = wait_for(b, "ann", "rows", 4)
        assert [(e["payload"]["$id"], e["payload"]["title"], e["events"][0].rsplit(".", 1)[1]) for e in ann[2:]] == [
            ("t1", "one!", "create"), ("r1", "again", "update")]

        # Node 3, which the pages' sockets go through, dies: the SDK reconnects through the
        # proxy to another node, subscribes again, and hears the next row.
        served_before = len(proxy.served)
        n3.kill()
        deadline = time.time() + 30
        while len(proxy.served) == served_before and time.time() < deadline:
            time.sleep(0.2)
        assert len(proxy.served) > served_before, "the SDK did not reconnect"
        time.sleep(1.0)
        after = None
        for _ in range(20):
            try:
                after = db.create_row(database_id="app", table_id="notes", row_id=ID.unique(),
                                      data={"title": "after failover"}, permissions=[Permission.read(Role.users())])
                break
            except Exception:
                time.sleep(0.5)
        assert after is not None
        ann = wait_for(b, "ann", "rows", 5, timeout=30)
        assert ann[4]["payload"]["$id"] == after.id
        bob = wait_for(b, "bob", "rows", 2, timeout=30)
        assert bob[-1]["payload"]["$id"] == after.id
    finally:
        b.close()
        proxy.sock.close()
