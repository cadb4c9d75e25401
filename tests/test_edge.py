"""The HTTP edge: slow headers are cut off, large unauthenticated bodies are refused unread,
requests past the concurrency bound are answered 429 at once, slow ones 503 after the request
timeout — and a well-behaved client is served throughout. The root key can come from a file."""
import json
import os
import socket
import time

import pytest

from harness import ROOT_KEY, Node, create_project, http


@pytest.fixture(scope="module")
def edge_node():
    n = Node(extra_args=["--header-timeout", "1", "--request-timeout", "3", "--max-requests", "4"])
    n.start()
    yield n
    n.stop()
    assert not n.unexpected_errors()


def connect(node):
    host, port = node.endpoint.replace("http://", "").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def read_response(s, timeout=5):
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else None
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return status, body


def healthy(node):
    status, _, _ = http("GET", node.url() + "/health/version")
    return status == 200


def test_slow_headers_are_cut_off_and_others_are_served(edge_node):
    s = connect(edge_node)
    s.sendall(b"GET /v1/health/version HTTP/1.1\r\nHost: x\r\n")
    started = time.time()
    closed = False
    while time.time() - started < 6:
        try:
            s.sendall(b"X")  # one byte at a time, never finishing the headers
            assert healthy(edge_node)
            time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        s.settimeout(0.01)
        try:
            if s.recv(4096) == b"":
                closed = True
                break
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
            break
    assert closed, "a connection trickling its headers was kept open"
    assert time.time() - started < 4


def test_a_large_unauthenticated_body_is_refused_unread(edge_node):
    s = connect(edge_node)
    s.sendall(b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Appwrite-Project: nope\r\nContent-Length: 31457280\r\n\r\n")
    started = time.time()
    status, body = read_response(s)
    assert status == 401, body
    assert json.loads(body)["type"] == "user_unauthorized"
    assert time.time() - started < 2, "the server waited for the body"
    s.close()
    assert healthy(edge_node)


def test_requests_past_the_bound_get_429_and_slow_ones_503(edge_node):
    secret = create_project(edge_node, "edge")
    held = []
    head = ("POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Appwrite-Project: edge\r\nX-Appwrite-Key: {secret}\r\nContent-Length: 100\r\n\r\n{{").encode()
    for _ in range(4):
        s = connect(edge_node)
        s.sendall(head)  # a body that never completes: each holds a request slot
        held.append(s)
    time.sleep(0.3)
    status, _, body = http("GET", edge_node.url() + "/health/version")
    assert status == 429 and body["type"] == "general_rate_limit_exceeded", body
    # The request timeout ends them, with Appwrite's error body.
    for s in held:
        status, body = read_response(s, timeout=6)
        assert status == 503, body
        s.close()
    assert healthy(edge_node)


def test_the_root_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "root-key"
    key_file.write_text(ROOT_KEY + "\n")
    os.chmod(key_file, 0o600)
    n = Node()
    n.root_key_file = str(key_file)
    n.start()
    try:
        create_project(n, "fromfile")
        status, _, _ = http("GET", n.url() + "/projects", headers={"X-Appwrite-Project": "console", "X-Appwrite-Key": "wrong"})
        assert status == 401
    finally:
        n.stop()
