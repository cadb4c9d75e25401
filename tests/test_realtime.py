"""Realtime (`/v1/realtime`) over real WebSockets against a three-node cluster: Appwrite's
protocol (connected, subscribe, unsubscribe, authentication, ping, errors), events made from
the applied log on every node (a subscriber on one node sees writes taken by another, in
commit order, with Appwrite's event names, channels and payloads), permission filtering,
subscription queries, transactions, account and team events, sign-out, resuming after a
cursor, and cutting off a subscriber that does not read."""
import json
import re
import socket
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus

from harness import create_project, http
from rt import Realtime, session_for, ws_url

P = "rt"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


@pytest.fixture(scope="module")
def app(cluster):
    n1 = cluster.nodes[0]
    key = create_project(n1, P)
    h = {"X-Appwrite-Project": P, "X-Appwrite-Key": key}

    def call(method, path, body=None, node=n1, headers=None, expect=None):
        status, _, out = http(method, node.url() + path, body, headers or h)
        if expect is not None:
            assert status == expect, (status, out)
        return out

    call("POST", "/tablesdb", {"databaseId": "app", "name": "App"}, expect=201)
    call("POST", "/tablesdb/app/tables", {"tableId": "notes", "name": "Notes", "rowSecurity": True,
                                         "permissions": ['create("users")']}, expect=201)
    call("POST", "/tablesdb/app/tables/notes/columns/varchar",
         {"key": "title", "size": 64, "required": False}, expect=202)
    call("POST", "/tablesdb/app/tables/notes/columns/text", {"key": "body", "required": False}, expect=202)
    call("POST", "/tablesdb/app/tables/notes/columns/integer", {"key": "n", "required": False}, expect=202)
    users = {}
    for u in ("ann", "bob"):
        call("POST", "/users", {"userId": u, "email": f"{u}@example.com", "password": "password-123",
                                "name": u.title()}, expect=201)
        users[u] = session_for(n1, P, key, u)
    return {"key": key, "call": call, "users": users, "cluster": cluster}


def row(app, title, read=None, node=0, **data):
    body = {"rowId": "unique()", "data": {"title": title, **data}}
    if read is not None:
        body["permissions"] = [f'read("{r}")' for r in read]
    return app["call"]("POST", "/tablesdb/app/tables/notes/rows", body,
                       node=app["cluster"].nodes[node], expect=201)


def rt(app, node, user=None, **params):
    session = app["users"][user][0] if user else None
    return Realtime(app["cluster"].nodes[node], P, session=session, **params)


def test_connecting_pinging_and_refusals(app):
    n = app["cluster"].nodes[1]
    for project in (None, "nope"):
        c = Realtime(n, project)
        assert c.connected == {"type": "error", "data": {"code": 1008, "message": "Missing or unknown project ID"}}
        assert c.closed()[0] == 1008
    c = Realtime(n, P, headers={"Origin": "https://evil.example"})
    assert c.connected["data"]["code"] == 1008
    assert c.connected["data"]["message"].startswith("Invalid Origin. Register your new client (evil.example)")
    c = Realtime(n, P, jwt="not.a.jwt")
    assert c.connected["type"] == "error" and c.connected["data"]["code"] == 401
    assert c.connected["data"]["message"].startswith("Failed to verify JWT")

    c = rt(app, 1)
    assert c.connected == {"type": "connected", "data": {"channels": [], "subscriptions": [], "user": None}}
    c.send("ping")
    assert c.recv() == {"type": "pong"}
    c.ws.send("not json")
    assert c.recv() == {"type": "error", "data": {"code": 1003, "message": "Message format is not valid."}}
    c.send("nope", {})
    assert c.recv()["data"] == {"code": 1003, "message": "Message type is not valid."}
    c.send("subscribe", [{"channels": ["rows"], "queries": [
        json.dumps({"method": "contains", "attribute": "title", "values": ["a"]})]}])
    err = c.recv()["data"]
    assert err["code"] == 1003 and "Query method 'contains' is not supported in Realtime queries" in err["message"]
    c.send("subscribe", [{"queries": []}])
    assert c.recv()["data"] == {"code": 1003, "message": "items: channels is not present in payload."}
    c.send("authentication", {"session": "bm90IGEgc2Vzc2lvbg=="})
    assert c.recv()["data"] == {"code": 1003, "message": "Session is not valid."}
    c.send("authentication", {})
    assert c.recv()["data"] == {"code": 1003, "message": "Payload is not valid. Session is required"}
    c.close()

    # Not a WebSocket: an Appwrite error.
    status, _, body = http("GET", n.url() + "/realtime?project=" + P)
    assert status == 400 and body["type"] == "general_argument_invalid"


def test_row_events_reach_subscribers_on_other_nodes_exactly(app):
    ann = rt(app, 2, "ann")
    assert ann.connected["data"]["user"]["$id"] == "ann"
    assert "password" not in ann.connected["data"]["user"]
    got = ann.subscribe(["tablesdb.app.tables.notes.rows"], sid="s-table")
    assert got == {"to": "subscribe", "success": True, "subscriptions": [
        {"subscriptionId": "s-table", "channels": ["tablesdb.app.tables.notes.rows"], "queries": []}]}
    ann.subscribe(["rows", "account"], sid="s-rows")
    guest = rt(app, 1)
    guest.subscribe(["rows"], sid="g")

    made = row(app, "for ann", read=["user:ann"], node=0)
    ev = ann.event()
    assert ev["payload"] == made
    assert sorted(ev["subscriptions"]) == ["s-rows", "s-table"]
    assert TS.match(ev["timestamp"])
    rid = made["$id"]
    assert ev["channels"] == [
        "documents", "databases.app.collections.notes.documents", f"databases.app.collections.notes.documents.{rid}",
        "rows", "databases.app.tables.notes.rows", f"databases.app.tables.notes.rows.{rid}",
        "tablesdb.app.tables.notes.rows", f"tablesdb.app.tables.notes.rows.{rid}",
        "documents.create", "databases.app.collections.notes.documents.create",
        f"databases.app.collections.notes.documents.{rid}.create",
        "rows.create", "databases.app.tables.notes.rows.create", f"databases.app.tables.notes.rows.{rid}.create",
        "tablesdb.app.tables.notes.rows.create", f"tablesdb.app.tables.notes.rows.{rid}.create"]
    assert len(ev["events"]) == 64 and len(set(ev["events"])) == 64
    assert ev["events"][:3] == [f"tablesdb.app.tables.notes.rows.{rid}.create",
                                f"databases.app.collections.notes.documents.{rid}.create",
                                f"databases.app.tables.notes.rows.{rid}.create"]
    assert ev["events"][-4:] == ["tablesdb.app", "databases.app", "tablesdb.*", "databases.*"]

    # What a guest may not read never reaches it; the next public row does, in order.
    public = row(app, "for all", read=["any"], node=1)
    assert guest.event()["payload"]["$id"] == public["$id"]
    assert ann.event()["payload"]["$id"] == public["$id"]

    updated = app["call"]("PATCH", f"/tablesdb/app/tables/notes/rows/{rid}", {"data": {"title": "edited"}},
                          node=app["cluster"].nodes[1], expect=200)
    ev = ann.event()
    assert ev["payload"] == updated and ev["events"][0].endswith(".update")
    app["call"]("DELETE", f"/tablesdb/app/tables/notes/rows/{rid}", node=app["cluster"].nodes[2], expect=204)
    ev = ann.event()
    assert ev["payload"] == updated and ev["events"][0] == f"tablesdb.app.tables.notes.rows.{rid}.delete"
    assert ev["channels"][-1] == f"tablesdb.app.tables.notes.rows.{rid}.delete"
    guest.nothing(0.5)

    # Unsubscribing one of two: events name the one left.
    ann.send("unsubscribe", [{"subscriptionId": "s-table"}, {"subscriptionId": "never"}])
    assert ann.next("response")["data"] == {"to": "unsubscribe", "success": True, "subscriptions": [
        {"subscriptionId": "s-table", "removed": True}, {"subscriptionId": "never", "removed": False}]}
    row(app, "again", read=["user:ann"])
    assert ann.event()["subscriptions"] == ["s-rows"]
    ann.close()
    guest.close()


def test_legacy_documents_and_queries(app):
    call = app["call"]
    call("POST", "/databases", {"databaseId": "old", "name": "Old"}, expect=201)
    call("POST", "/databases/old/collections", {"collectionId": "c", "name": "C",
                                                "permissions": ['read("any")']}, expect=201)
    call("POST", "/databases/old/collections/c/attributes/string", {"key": "k", "size": 16, "required": False},
         expect=202)
    c = rt(app, 1)
    c.subscribe(["databases.old.collections.c.documents"], sid="all")
    c.subscribe(["documents"], sid="only-b",
                queries=[json.dumps({"method": "equal", "attribute": "k", "values": ["b"]})])
    a = call("POST", "/databases/old/collections/c/documents", {"documentId": "a", "data": {"k": "a"}}, expect=201)
    ev = c.event()
    assert ev["payload"] == a and ev["payload"]["$collectionId"] == "c"
    assert ev["subscriptions"] == ["all"]
    assert len(ev["events"]) == 42 and ev["events"][0] == "databases.old.collections.c.documents.a.create"
    assert ev["events"][1] == "databases.old.tables.c.rows.a.create"
    assert len(ev["channels"]) == 16
    call("POST", "/databases/old/collections/c/documents", {"documentId": "b", "data": {"k": "b"}}, expect=201)
    assert sorted(c.event()["subscriptions"]) == ["all", "only-b"]
    c.close()


def test_a_transaction_is_heard_once_per_row_after_its_commit(app):
    call = app["call"]
    ann = rt(app, 1, "ann")
    ann.subscribe(["tablesdb.app.tables.notes.rows"])
    existing = row(app, "before", read=["user:ann"])
    assert ann.event()["payload"]["$id"] == existing["$id"]
    tx = call("POST", "/tablesdb/transactions", {"ttl": 60}, expect=201)["$id"]
    ops = [
        {"action": "create", "databaseId": "app", "tableId": "notes", "rowId": "t1",
         "data": {"title": "one", "$permissions": ['read("user:ann")']}},
        {"action": "update", "databaseId": "app", "tableId": "notes", "rowId": "t1", "data": {"title": "one+"}},
        {"action": "create", "databaseId": "app", "tableId": "notes", "rowId": "t2",
         "data": {"title": "two", "$permissions": ['read("user:ann")']}},
        {"action": "update", "databaseId": "app", "tableId": "notes", "rowId": existing["$id"],
         "data": {"title": "during"}},
    ]
    call("POST", f"/tablesdb/transactions/{tx}/operations", {"operations": ops}, expect=201)
    # Staged is not committed: the next event is a row written outside the transaction.
    outside = row(app, "outside", read=["user:ann"], node=2)
    assert ann.event()["payload"]["$id"] == outside["$id"]
    call("PATCH", f"/tablesdb/transactions/{tx}", {"commit": True}, node=app["cluster"].nodes[1], expect=200)
    evs = ann.events(3)
    got = [(e["payload"]["$id"], e["events"][0].rsplit(".", 1)[1], e["payload"]["title"]) for e in evs]
    assert got == [("t1", "create", "one+"), ("t2", "create", "two"), (existing["$id"], "update", "during")]
    ann.nothing(0.5)
    ann.close()


def test_account_team_and_membership_events_follow_roles(app):
    call, key = app["call"], app["key"]
    ann = rt(app, 2, "ann")
    ann.subscribe(["account", "teams", "memberships"], sid="mine")
    call("PATCH", "/users/ann/name", {"name": "Annie"}, expect=200)
    ev = ann.event()
    assert ev["events"] == ["users.ann.update", "users.*.update", "users.ann.update.name", "users.*.update.name",
                            "users.ann", "users.*"]
    assert ev["channels"] == ["account", "account.ann", "account.update", "account.ann.update"]
    assert ev["payload"]["name"] == "Annie" and "password" not in ev["payload"]

    # Bob's account is not Ann's business.
    call("PATCH", "/users/bob/name", {"name": "Bobby"}, expect=200)
    ann.nothing(0.5)

    # Ann makes a team: she holds its role when its event is delivered.
    ann_h = {"X-Appwrite-Project": P, "Cookie": f"a_session_{P}={app['users']['ann'][0]}"}
    call("POST", "/teams", {"teamId": "crew", "name": "Crew"}, headers=ann_h, expect=201)
    evs = [ann.event(), ann.event()]
    kinds = {e["events"][0] for e in evs}
    assert "teams.crew.create" in kinds, kinds
    team_ev = next(e for e in evs if e["events"][0] == "teams.crew.create")
    assert team_ev["channels"] == ["teams", "teams.crew", "teams.create", "teams.crew.create"]
    assert team_ev["payload"]["name"] == "Crew"

    # Bob, added by a key, hears of the team's membership changes while he is in it; removed,
    # he does not hear of his removal.
    bob = rt(app, 0, "bob")
    bob.subscribe(["memberships"])
    m = call("POST", "/teams/crew/memberships", {"userId": "bob", "roles": ["member"]}, expect=201)
    made = ann.event()
    assert made["events"][0] == f"teams.crew.memberships.{m['$id']}.create"
    assert made["payload"]["teamName"] == "Crew"
    assert made["channels"] == ["memberships", f"memberships.{m['$id']}", "memberships.create",
                                f"memberships.{m['$id']}.create"]
    assert bob.event()["payload"]["$id"] == m["$id"]
    call("DELETE", f"/teams/crew/memberships/{m['$id']}", expect=204)
    assert ann.event()["events"][0] == f"teams.crew.memberships.{m['$id']}.delete"
    bob.nothing(0.5)
    ann.close()
    bob.close()


def test_signing_in_and_out_on_the_socket(app):
    call, key = app["call"], app["key"]
    value, sid = session_for(app["cluster"].nodes[0], P, key, "bob")
    c = rt(app, 1)
    c.subscribe(["rows", "account"])
    row(app, "bob's", read=["user:bob"])
    c.nothing(0.5)
    c.send("authentication", {"session": value})
    got = c.next("response")["data"]
    assert got["to"] == "authentication" and got["success"] is True and got["user"]["$id"] == "bob"
    mine = row(app, "bob's again", read=["user:bob"])
    assert c.event()["payload"]["$id"] == mine["$id"]
    # Signing out (on another node): the session's end is heard, then nothing of Bob's.
    bob_h = {"X-Appwrite-Project": P, "X-Appwrite-Session": value}
    call("DELETE", "/account/sessions/current", node=app["cluster"].nodes[2], headers=bob_h, expect=204)
    ev = c.event()
    assert ev["events"][0] == f"users.bob.sessions.{sid}.delete"
    assert ev["channels"] == ["account", "account.bob"]
    assert ev["payload"]["secret"] == ""
    row(app, "bob's last", read=["user:bob"])
    public = row(app, "anyone's", read=["any"])
    assert c.event()["payload"]["$id"] == public["$id"]
    c.close()


def test_resuming_after_a_cursor_on_another_node(app):
    first = rt(app, 1, "ann")
    first.subscribe(["tablesdb.app.tables.notes.rows"])
    r1 = row(app, "r1", read=["user:ann"])
    seen = first.event()
    assert seen["payload"]["$id"] == r1["$id"]
    cursor = seen["cursor"]
    first.close()
    missed = [row(app, f"missed {i}", read=["user:ann"]) for i in range(3)]
    row(app, "not ann's", read=["user:bob"])
    again = rt(app, 2, "ann", after=cursor)
    again.subscribe(["tablesdb.app.tables.notes.rows"])
    replayed = again.events(3)
    assert [e["payload"]["$id"] for e in replayed] == [m["$id"] for m in missed]
    # Those the hub had not taken in yet when the client subscribed come live, after it.
    told = again.next("response")["data"]
    assert told["to"] == "resume" and told["success"] is True and 0 <= told["replayed"] <= 3, told
    live = row(app, "live", read=["user:ann"])
    assert again.event()["payload"]["$id"] == live["$id"]
    again.nothing(0.3)
    again.close()

    # Replayed rows are held to the table's rules of now too: a table disabled since hides them.
    probe = rt(app, 1, "ann")
    probe.subscribe(["tablesdb.app.tables.notes.rows"])
    row(app, "seen", read=["user:ann"])
    since = probe.event()["cursor"]
    probe.close()
    row(app, "while away", read=["user:ann"])
    table = {"name": "Notes", "permissions": ['create("users")'], "rowSecurity": True}
    app["call"]("PUT", "/tablesdb/app/tables/notes", {**table, "enabled": False}, expect=200)
    time.sleep(0.3)  # node 3's hub has taken both in: what follows is a replay, not live
    hidden = rt(app, 2, "ann", after=since)
    hidden.subscribe(["tablesdb.app.tables.notes.rows"])
    assert hidden.next("response")["data"] == {"to": "resume", "success": True, "replayed": 0}
    hidden.nothing(0.3)
    hidden.close()
    app["call"]("PUT", "/tablesdb/app/tables/notes", {**table, "enabled": True}, expect=200)

    # A node that restarted keeps nothing from before: it says so.
    n = app["cluster"].nodes[2]
    n.stop()
    n.restart()
    row(app, "after the restart", read=["user:ann"])
    old = rt(app, 2, "ann", after=cursor)
    old.subscribe(["rows"])
    told = old.next("response")["data"]
    assert told["to"] == "resume" and told["success"] is False, told
    assert "no longer kept" in told["message"]
    old.close()


def test_a_subscriber_that_does_not_read_is_cut_off(app):
    """A client that stops reading while events wait for it is closed with an error after ten
    seconds; one that reads keeps up with the same stream throughout."""
    node = app["cluster"].nodes[1]
    # A raw WebSocket client that subscribes and then never reads, with a small receive window.
    url = ws_url(node, P)
    host, port = node.url().split("//")[1].split("/")[0].split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    path = url.split(f"{host}:{port}", 1)[1]
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    payload = json.dumps({"type": "subscribe", "data": [{"channels": ["rows"]}]}).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + masked)
    healthy = rt(app, 1)
    healthy.subscribe(["rows"])
    time.sleep(0.5)

    heard = []
    stop = threading.Event()

    def read_healthy():
        while not stop.is_set():
            try:
                ev = healthy.event(timeout=1)
            except TimeoutError:
                continue
            heard.append(ev["payload"]["$id"])

    reader = threading.Thread(target=read_healthy, daemon=True)
    reader.start()
    big = "x" * 20_000
    written = []
    started = time.time()
    batch = 0
    while time.time() - started < 14:
        rows = [{"$id": f"big-{batch}-{i}", "title": "big", "body": big, "$permissions": ['read("any")']}
                for i in range(20)]
        app["call"]("POST", "/tablesdb/app/tables/notes/rows", {"rows": rows}, expect=201)
        written += [r["$id"] for r in rows]
        batch += 1
        time.sleep(0.25)
    # The reader that never read was closed: what it can still read ends in the error.
    s.settimeout(10)
    tail = b""
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            tail = (tail + chunk)[-4096:]
    except socket.timeout:
        pass
    s.close()
    assert b"fell too far behind" in tail, tail[-300:]
    deadline = time.time() + 30
    while time.time() < deadline and len([h for h in heard if h.startswith("big-")]) < len(written):
        time.sleep(0.2)
    stop.set()
    reader.join()
    assert [h for h in heard if h.startswith("big-")] == written
    healthy.close()
