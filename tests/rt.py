"""A realtime client for the tests: Appwrite's WebSocket protocol as the web SDK speaks it, over
the `websockets` package (its blocking client), with helpers to wait for messages."""
import json
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness import http


def ws_url(node, project, **params):
    url = node.url().replace("http://", "ws://") + "/realtime"
    query = [("project", project)] if project is not None else []
    for k, v in params.items():
        if isinstance(v, (list, tuple)):
            query += [(f"{k}[]", x) for x in v]
        elif v is not None:
            query.append((k, v))
    if query:
        from urllib.parse import urlencode
        url += "?" + urlencode(query)
    return url


class Realtime:
    """One connection. `connected` is the server's first message."""

    def __init__(self, node, project, session=None, headers=None, **params):
        h = dict(headers or {})
        if session is not None:
            h["Cookie"] = f"a_session_{project}={session}"
        self.ws = connect(ws_url(node, project, **params), additional_headers=h, open_timeout=10,
                          max_size=None, max_queue=None, close_timeout=2)
        self.pending = []
        self.connected = self.recv()

    def send(self, kind, data=None):
        msg = {"type": kind}
        if data is not None:
            msg["data"] = data
        self.ws.send(json.dumps(msg))

    def recv(self, timeout=10):
        if self.pending:
            return self.pending.pop(0)
        return json.loads(self.ws.recv(timeout=timeout))

    def next(self, kind, timeout=10):
        """The next message of `kind`; others that come first are kept for later."""
        deadline = time.time() + timeout
        skipped = []
        try:
            while True:
                msg = self.recv(timeout=max(0.01, deadline - time.time()))
                if msg["type"] == kind:
                    return msg
                skipped.append(msg)
        finally:
            self.pending = skipped + self.pending

    def event(self, timeout=10):
        return self.next("event", timeout)["data"]

    def events(self, n, timeout=15):
        return [self.event(timeout) for _ in range(n)]

    def nothing(self, seconds=1.0):
        """Asserts that no event arrives within `seconds`."""
        try:
            msg = self.next("event", timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event: {json.dumps(msg)[:500]}")

    def subscribe(self, channels, queries=(), sid=None):
        item = {"channels": list(channels), "queries": list(queries)}
        if sid is not None:
            item["subscriptionId"] = sid
        self.send("subscribe", [item])
        return self.next("response")["data"]

    def closed(self, timeout=10):
        """Reads until the server closes; answers (close code, messages seen before)."""
        seen = []
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                seen.append(json.loads(self.ws.recv(timeout=max(0.01, deadline - time.time()))))
        except ConnectionClosed as e:
            return (e.rcvd.code if e.rcvd else None), seen
        raise AssertionError(f"still open after {timeout}s: {seen[-3:]}")

    def close(self):
        self.ws.close()


def session_for(node, project, key, user_id):
    """A fresh session for `user_id` (made with the key): its cookie value and id."""
    h = {"X-Appwrite-Project": project, "X-Appwrite-Key": key}
    status, _, s = http("POST", node.url() + f"/users/{user_id}/sessions", {}, h)
    assert status == 201, s
    return s["secret"], s["$id"]
