"""Storage against a three-node cluster, driven by the official Python SDK where it covers the
feature: buckets, uploads small and large (the SDK's 5 MiB chunks, sent in parallel and out of
order), byte-exact downloads through another node, ranges, resuming a cut-off upload, limits
and extensions, permissions per user and team, compression and encryption at rest (no
plaintext on disk), a node that was down catching up on the bytes, and reclaiming a deleted
file's bytes on every node."""
import glob
import hashlib
import json
import os
import random
import threading
import time
import urllib.request

import pytest
from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.input_file import InputFile
from appwrite.permission import Permission
from appwrite.query import Query
from appwrite.role import Role
from appwrite.services.storage import Storage

from harness import TestCluster, create_project, http
from rt import Realtime, session_for

P = "st"
MIB = 1024 * 1024
CHUNK = 5 * MIB


@pytest.fixture(scope="module")
def cluster():
    # Unnamed blobs are reclaimed after 10 s here (an hour by default), so the test can see it;
    # the grace must be twice the request timeout at least.
    c = TestCluster(3, extra_args=["--request-timeout", "5", "--blob-grace", "10"]).start()
    yield c
    c.shutdown()
    assert not c.unexpected_errors(), "\n".join(c.unexpected_errors())


@pytest.fixture(scope="module")
def app(cluster):
    n1 = cluster.nodes[0]
    key = create_project(n1, P)
    for u in ("ann", "bob"):
        status, _, out = http("POST", n1.url() + "/users",
                              {"userId": u, "email": f"{u}@example.com", "password": "password-123"},
                              {"X-Appwrite-Project": P, "X-Appwrite-Key": key})
        assert status == 201, out
    return {"key": key, "cluster": cluster}


def storage(app, node=0, key=True, session=None):
    c = Client().set_endpoint(app["cluster"].nodes[node].url()).set_project(P)
    if key:
        c.set_key(app["key"])
    if session:
        c.set_session(session)
    return Storage(c)


def payload(n, seed=1, compressible=False):
    if compressible:
        line = b"the quick brown fox jumps over the lazy dog %d\n"
        out = bytearray()
        i = 0
        while len(out) < n:
            out += line % i
            i += 1
        return bytes(out[:n])
    return random.Random(seed).randbytes(n)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def raw(app, method, path, node=0, headers=None, body=None):
    """A raw request: (status, headers, body bytes)."""
    h = {"X-Appwrite-Project": P, "X-Appwrite-Key": app["key"]}
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    req = urllib.request.Request(app["cluster"].nodes[node].url() + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def multipart(fields, filename, data):
    boundary = "basaltboundary%d" % random.randrange(1 << 30)
    out = bytearray()
    for k, v in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def send_chunk(app, bucket, file_id, data, index, node=0, headers=None, fields=None):
    """One chunk of `data` as the SDKs send it (Content-Range, x-appwrite-id)."""
    start = index * CHUNK
    end = min(start + CHUNK, len(data))
    body, ctype = multipart(fields or [("fileId", file_id)], "big.bin", data[start:end])
    h = {"Content-Type": ctype, "Content-Range": f"bytes {start}-{end - 1}/{len(data)}",
         "x-appwrite-id": file_id}
    h.update(headers or {})
    status, _, out = raw(app, "POST", f"/storage/buckets/{bucket}/files", node, h, body)
    return status, json.loads(out)


def blobs(node):
    return {os.path.basename(p) for p in glob.glob(os.path.join(node.data_dir, "blobs", "??", "*"))}


def test_buckets_are_created_listed_updated_and_deleted(app):
    s = storage(app)
    b = s.create_bucket("photos", "Photos", permissions=[Permission.read(Role.any())],
                        file_security=True, maximum_file_size=10 * MIB,
                        allowed_file_extensions=["jpg", "PNG"], compression="zstd", encryption=True)
    assert b.id == "photos" and b.filesecurity and b.maximumfilesize == 10 * MIB
    assert b.allowedfileextensions == ["jpg", "png"] and b.compression == "zstd"
    assert b.permissions == ['read("any")']
    got = storage(app, node=2).get_bucket("photos")
    assert got.name == "Photos" and got.encryption and got.antivirus and got.transformations
    with pytest.raises(AppwriteException) as e:
        s.create_bucket("photos", "Again")
    assert e.value.code == 409 and e.value.type == "storage_bucket_already_exists"
    s.create_bucket("other", "Other")
    names = [x.name for x in s.list_buckets(queries=[Query.equal("name", ["Photos"])]).buckets]
    assert names == ["Photos"]
    assert s.list_buckets(search="other").total == 1
    # A PUT: what it omits goes back to its default, permissions stay.
    up = s.update_bucket("photos", "Pictures", enabled=False)
    assert up.name == "Pictures" and not up.enabled and not up.filesecurity
    assert up.maximumfilesize > 10 * MIB and up.allowedfileextensions == []
    assert up.permissions == ['read("any")']
    s.delete_bucket("other")
    with pytest.raises(AppwriteException) as e:
        s.get_bucket("other")
    assert e.value.code == 404 and e.value.type == "storage_bucket_not_found"
    with pytest.raises(AppwriteException) as e:
        s.create_bucket("bad", "Bad", compression="lz4")
    assert e.value.code == 400
    # Users have no bucket scopes.
    ann, _ = session_for(app["cluster"].nodes[0], P, app["key"], "ann")
    with pytest.raises(AppwriteException) as e:
        storage(app, key=False, session=ann).list_buckets()
    assert e.value.code == 401


def test_small_and_large_files_download_byte_exact_through_any_node(app):
    s = storage(app)
    s.create_bucket("files", "Files", permissions=[Permission.read(Role.any())], encryption=False)
    small = b"hello, basalt storage\n" * 100
    f = s.create_file("files", "small", InputFile.from_bytes(small, "hello.txt"))
    assert f.sizeoriginal == len(small) and f.chunkstotal == 1 and f.chunksuploaded == 1
    assert f.mimetype == "text/plain" and f.name == "hello.txt" and len(f.signature) == 64
    assert storage(app, node=2).get_file_download("files", "small") == small
    # 52 MiB: eleven chunks, the ten after the first sent eight at a time by the SDK.
    big = payload(52 * MIB + 12345, seed=7)
    progress = []
    f = s.create_file("files", ID.unique(), InputFile.from_bytes(big, "big.bin"),
                      on_progress=progress.append)
    assert f.chunkstotal == 11 and f.chunksuploaded == 11 and f.sizeoriginal == len(big)
    assert progress[-1]["chunksUploaded"] == 11
    for node in (1, 2):
        assert sha(storage(app, node=node).get_file_download("files", f.id)) == sha(big)
    # Headers: download is an attachment, view inline; types outside the list view as text.
    status, h, body = raw(app, "GET", f"/storage/buckets/files/files/small/download", 2)
    assert status == 200 and body == small
    assert h["Content-Disposition"].startswith('attachment; filename="hello.txt"')
    assert h["Content-Type"] == "text/plain" and h["Content-Length"] == str(len(small))
    status, h, _ = raw(app, "GET", f"/storage/buckets/files/files/{f.id}/view", 1)
    assert status == 200 and h["Content-Type"] == "text/plain"
    assert h["Content-Disposition"].startswith("inline") and h["X-Content-Type-Options"] == "nosniff"
    files = s.list_files("files", queries=[Query.greater_than("sizeOriginal", MIB)])
    assert [x.id for x in files.files] == [f.id] and files.total == 1
    assert s.list_files("files", search="hello").files[0].id == "small"


def test_ranges_are_served_across_chunk_boundaries(app):
    s = storage(app)
    s.create_bucket("media", "Media", permissions=[Permission.read(Role.any())],
                    compression="gzip", encryption=True)
    data = payload(12 * MIB + 7, seed=3)
    s.create_file("media", "clip", InputFile.from_bytes(data, "clip.mp4"))
    path = "/storage/buckets/media/files/clip/view"
    for lo, hi in [(0, 99), (CHUNK - 10, CHUNK + 10), (CHUNK * 2 - 1, len(data) - 1), (5, 5)]:
        status, h, body = raw(app, "GET", path, 1, {"Range": f"bytes={lo}-{hi}"})
        assert status == 206 and body == data[lo:hi + 1], (lo, hi)
        assert h["Content-Range"] == f"bytes {lo}-{hi}/{len(data)}"
        assert h["Content-Length"] == str(hi - lo + 1)
    status, _, body = raw(app, "GET", path, 2, {"Range": f"bytes={len(data) - 3}-"})
    assert status == 206 and body == data[-3:]
    for bad in ["bytes=988", "bytes=-988", f"bytes=0-{len(data)}", "bytes=9-3", "lines=0-1"]:
        status, _, body = raw(app, "GET", path, 0, {"Range": bad})
        assert status == 416 and json.loads(body)["type"] == "storage_invalid_range", bad


def test_chunks_out_of_order_and_resumed_uploads_complete_exactly(app):
    s = storage(app)
    s.create_bucket("up", "Uploads", permissions=[Permission.read(Role.any())], encryption=False)
    data = payload(4 * CHUNK + 99, seed=11)
    # Out of order, each through a different node, one sent twice.
    for i, index in enumerate([4, 2, 0, 2]):
        status, f = send_chunk(app, "up", "ooo", data, index, node=i % 3)
        assert status == 201, f
        assert f["chunksTotal"] == 5
    f = s.get_file("up", "ooo")
    # Chunks arrived (0, 2 and 4), but only the first is a prefix to resume after.
    assert f.chunksuploaded == 1 and f.sizeoriginal == len(data)
    with pytest.raises(AppwriteException) as e:
        s.get_file_download("up", "ooo")
    assert e.value.code == 404
    # Parallel chunks for the rest.
    threads = [threading.Thread(target=send_chunk, args=(app, "up", "ooo", data, i, i % 3)) for i in (1, 3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    f = s.get_file("up", "ooo")
    assert f.chunksuploaded == 5 and f.chunkstotal == 5
    assert sha(s.get_file_download("up", "ooo")) == sha(data)
    # A chunk sent again after completion: 200 and the file, nothing changes.
    status, again = send_chunk(app, "up", "ooo", data, 1)
    assert status == 200 and again["chunksUploaded"] == 5
    # A cut-off upload: its first two chunks arrived; the SDK asks how many and sends the rest.
    data = payload(3 * CHUNK + 5, seed=12)
    for index in (0, 1):
        assert send_chunk(app, "up", "resumed", data, index)[0] == 201
    sent = []
    f = s.create_file("up", "resumed", InputFile.from_bytes(data, "big.bin"), on_progress=sent.append)
    assert f.chunksuploaded == 4
    assert [p["chunksUploaded"] for p in sent][0] == 3, "resumed after two chunks"
    assert sha(storage(app, node=2).get_file_download("up", "resumed")) == sha(data)


def test_limits_and_bad_uploads_are_refused_and_change_nothing(app):
    s = storage(app)
    s.create_bucket("strict", "Strict", maximum_file_size=MIB, allowed_file_extensions=["txt"])
    with pytest.raises(AppwriteException) as e:
        s.create_file("strict", "big", InputFile.from_bytes(b"x" * (MIB + 1), "a.txt"))
    assert e.value.code == 400 and e.value.type == "storage_invalid_file_size"
    with pytest.raises(AppwriteException) as e:
        s.create_file("strict", "exe", InputFile.from_bytes(b"MZ", "a.exe"))
    assert e.value.code == 400 and e.value.type == "storage_file_type_unsupported"
    with pytest.raises(AppwriteException) as e:
        s.create_file("strict", "noext", InputFile.from_bytes(b"x", "README"))
    assert e.value.type == "storage_file_type_unsupported"
    with pytest.raises(AppwriteException) as e:
        s.create_file("missing", "x", InputFile.from_bytes(b"x", "a.txt"))
    assert e.value.code == 404 and e.value.type == "storage_bucket_not_found"
    s.create_file("strict", "ok", InputFile.from_bytes(b"fine", "a.TXT"))
    with pytest.raises(AppwriteException) as e:
        s.create_file("strict", "ok", InputFile.from_bytes(b"again", "a.txt"))
    assert e.value.code == 409 and e.value.type == "storage_file_already_exists"
    body, ctype = multipart([("fileId", "r")], "a.txt", b"abc")
    for bad in ["bytes 0-2", "bytes 1-3/10", "bytes 0-9/5", "bytes 0-1/3"]:
        status, _, out = raw(app, "POST", "/storage/buckets/strict/files", 0,
                             {"Content-Type": ctype, "Content-Range": bad, "x-appwrite-id": "r"}, body)
        assert status == 400 and json.loads(out)["type"] == "storage_invalid_content_range", (bad, out)
    status, _, out = raw(app, "POST", "/storage/buckets/strict/files", 0,
                         {"Content-Type": ctype, "Content-Range": "bytes 0-2/3", "x-appwrite-id": "unique()"}, body)
    assert status == 400 and json.loads(out)["type"] == "storage_invalid_appwrite_id"
    body, ctype = multipart([("fileId", "empty")], "a.txt", b"")
    status, _, out = raw(app, "POST", "/storage/buckets/strict/files", 0, {"Content-Type": ctype}, body)
    assert status == 400 and json.loads(out)["type"] == "storage_file_empty"
    assert [f.id for f in s.list_files("strict").files] == ["ok"]


def test_permissions_per_user_and_team(app):
    n1 = app["cluster"].nodes[0]
    ann, _ = session_for(n1, P, app["key"], "ann")
    bob, _ = session_for(n1, P, app["key"], "bob")
    s = storage(app)
    # File security: users create; each file says who reads it.
    s.create_bucket("private", "Private", permissions=[Permission.create(Role.users())],
                    file_security=True)
    as_ann, as_bob = storage(app, key=False, session=ann), storage(app, key=False, session=bob)
    f = as_ann.create_file("private", "mine", InputFile.from_bytes(b"ann's secret", "s.txt"))
    assert sorted(f.permissions) == sorted(['read("user:ann")', 'update("user:ann")', 'delete("user:ann")'])
    assert storage(app, node=1, key=False, session=ann).get_file_download("private", "mine") == b"ann's secret"
    for call in (lambda: as_bob.get_file("private", "mine"),
                 lambda: as_bob.get_file_download("private", "mine"),
                 lambda: as_bob.delete_file("private", "mine")):
        with pytest.raises(AppwriteException) as e:
            call()
        assert e.value.code == 404
    assert as_bob.list_files("private").total == 0 and as_ann.list_files("private").total == 1
    # A user may only grant roles it holds.
    with pytest.raises(AppwriteException) as e:
        as_bob.create_file("private", "x", InputFile.from_bytes(b"x", "x.txt"),
                           permissions=[Permission.read(Role.user("ann"))])
    assert e.value.code == 401
    # Through a team: ann's team reads the file she shares with it.
    st, _, team = http("POST", n1.url() + "/teams", {"teamId": "crew", "name": "Crew"},
                       {"X-Appwrite-Project": P, "X-Appwrite-Key": app["key"]})
    assert st == 201, team
    for u in ("ann", "bob"):
        st, _, out = http("POST", n1.url() + "/teams/crew/memberships", {"userId": u, "roles": []},
                          {"X-Appwrite-Project": P, "X-Appwrite-Key": app["key"]})
        assert st == 201, out
    as_ann.update_file("private", "mine", permissions=[Permission.read(Role.team("crew")),
                                                       Permission.read(Role.user("ann"))])
    assert storage(app, node=2, key=False, session=bob).get_file_download("private", "mine") == b"ann's secret"
    with pytest.raises(AppwriteException) as e:
        as_bob.update_file("private", "mine", name="bob's now")
    assert e.value.code == 401
    # Without file security, the bucket alone decides: no read there, no file.
    s.create_bucket("closed", "Closed", permissions=[Permission.create(Role.users())])
    as_ann.create_file("closed", "c", InputFile.from_bytes(b"c", "c.txt"))
    with pytest.raises(AppwriteException) as e:
        as_ann.get_file_download("closed", "c")
    assert e.value.code == 401
    # A guest has no create permission here.
    guest = Storage(Client().set_endpoint(n1.url()).set_project(P))
    with pytest.raises(AppwriteException) as e:
        guest.create_file("private", "g", InputFile.from_bytes(b"g", "g.txt"))
    assert e.value.code == 401


def test_compressed_and_encrypted_files_leave_no_plaintext_on_disk(app):
    s = storage(app)
    marker = b"BASALT-PLAINTEXT-MARKER-"
    data = (marker * 300000)[: 6 * MIB]
    before = [blobs(n) for n in app["cluster"].nodes]
    for compression in ("none", "gzip", "zstd"):
        b = f"enc-{compression}"
        s.create_bucket(b, b, permissions=[Permission.read(Role.any())], compression=compression, encryption=True)
        f = s.create_file(b, "f", InputFile.from_bytes(data, "f.txt"))
        assert f.encryption and f.compression == compression
        if compression != "none":
            assert f.sizeactual < f.sizeoriginal / 10
        assert storage(app, node=2).get_file_download(b, "f") == data
    s.create_bucket("plain", "plain", permissions=[Permission.read(Role.any())], encryption=False)
    s.create_file("plain", "f", InputFile.from_bytes(data, "f.txt"))
    time.sleep(1)
    for n, old in zip(app["cluster"].nodes, before):
        new = blobs(n) - old
        assert len(new) == 8, (n.node_id, len(new))  # 3 sealed files x 2 chunks, 1 plain (2 chunks)
        plain = [b for b in new if marker in open(glob.glob(os.path.join(n.data_dir, "blobs", "??", b))[0], "rb").read()]
        assert len(plain) == 2, "only the unencrypted bucket's chunks hold plaintext"


def test_resource_tokens_share_one_file(app):
    from appwrite.services.tokens import Tokens
    s = storage(app)
    tokens = Tokens(Client().set_endpoint(app["cluster"].nodes[0].url()).set_project(P).set_key(app["key"]))
    s.create_bucket("vault", "Vault", encryption=True)
    s.create_file("vault", "doc", InputFile.from_bytes(b"shared by a link", "doc.txt"))
    s.create_file("vault", "other", InputFile.from_bytes(b"not shared", "o.txt"))
    t = tokens.create_file_token("vault", "doc")
    assert t.resourceid == "vault:doc" and t.resourcetype == "files" and t.expire == ""
    assert t.secret.count(".") == 2
    guest = Storage(Client().set_endpoint(app["cluster"].nodes[2].url()).set_project(P))
    with pytest.raises(AppwriteException) as e:
        guest.get_file_download("vault", "doc")
    assert e.value.code == 401
    assert guest.get_file_download("vault", "doc", token=t.secret) == b"shared by a link"
    assert guest.get_file_view("vault", "doc", token=t.secret) == b"shared by a link"
    # Another file's token: refused; a made-up one: ignored.
    with pytest.raises(AppwriteException) as e:
        guest.get_file_download("vault", "other", token=t.secret)
    assert e.value.code == 401
    with pytest.raises(AppwriteException):
        guest.get_file_download("vault", "doc", token="a.b.c")
    listed = tokens.list("vault", "doc")
    assert listed.total == 1 and listed.tokens[0].id == t.id
    assert tokens.get(t.id).resourceid == "vault:doc"
    # Expired (changed after the secret was handed out): it no longer opens the file.
    at = time.time() + 4
    soon = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + ".%03d+00:00" % int(at % 1 * 1000)
    assert tokens.update(t.id, expire=soon).expire != ""
    time.sleep(max(0.0, at - time.time()) + 0.5)
    with pytest.raises(AppwriteException):
        guest.get_file_download("vault", "doc", token=t.secret)
    t2 = tokens.create_file_token("vault", "doc")
    assert guest.get_file_download("vault", "doc", token=t2.secret) == b"shared by a link"
    tokens.delete(t2.id)
    with pytest.raises(AppwriteException):
        guest.get_file_download("vault", "doc", token=t2.secret)
    with pytest.raises(AppwriteException) as e:
        tokens.get(t2.id)
    assert e.value.code == 404 and e.value.type == "token_not_found"
    # Tokens go with their file; users may not make them.
    s.delete_file("vault", "doc")
    with pytest.raises(AppwriteException) as e:
        tokens.get(t.id)
    assert e.value.code == 404
    ann, _ = session_for(app["cluster"].nodes[0], P, app["key"], "ann")
    with pytest.raises(AppwriteException) as e:
        Tokens(Client().set_endpoint(app["cluster"].nodes[0].url()).set_project(P).set_session(ann)).create_file_token("vault", "other")
    assert e.value.code == 401


def test_a_node_down_during_uploads_catches_up_and_deleted_bytes_are_reclaimed(app):
    c = app["cluster"]
    c.expect_faults()
    s = storage(app)
    s.create_bucket("ha", "HA", permissions=[Permission.read(Role.any())], encryption=False)
    n3 = c.nodes[2]
    n3.kill()
    before = blobs(c.nodes[0])
    data = payload(11 * MIB, seed=21)
    f = s.create_file("ha", "while-down", InputFile.from_bytes(data, "d.bin"))
    names = blobs(c.nodes[0]) - before
    assert len(names) == 3
    n3.start()
    c.wait_for_voters([1, 2, 3])
    # Node 3 fetches the blobs its state names from its peers by itself.
    deadline = time.time() + 60
    while time.time() < deadline and not names <= blobs(n3):
        time.sleep(0.5)
    assert names <= blobs(n3)
    # Node 1 gone: node 3 serves the file (from its own blobs: node 2 is all it has besides).
    c.nodes[0].kill()
    got = None
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            got = storage(app, node=2).get_file_download("ha", f.id)
            break
        except AppwriteException:
            time.sleep(0.5)
    assert got is not None and sha(got) == sha(data)
    c.nodes[0].start()
    c.wait_for_voters([1, 2, 3])
    # Deleted: every node reclaims the file's blobs (after the grace period).
    s.delete_file("ha", f.id)
    deadline = time.time() + 60
    while time.time() < deadline and any(blobs(n) & names for n in c.nodes):
        time.sleep(1)
    assert not any(blobs(n) & names for n in c.nodes)
    c.assert_consistent()


def png_bytes(w, h):
    """A real PNG of w x h (zlib-compressed RGB rows, a gradient)."""
    import struct
    import zlib
    rows = b"".join(b"\x00" + b"".join(bytes((x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), 128))
                                         for x in range(w)) for y in range(h))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def png_size(data):
    import struct
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_previews_resize_convert_and_refuse_bombs(app):
    s = storage(app)
    s.create_bucket("img", "Images", permissions=[Permission.read(Role.any())], compression="zstd")
    s.create_file("img", "pic", InputFile.from_bytes(png_bytes(320, 200), "pic.png"))
    out = storage(app, node=1).get_file_preview("img", "pic", width=100, height=100)
    assert png_size(out) == (100, 100), "crops to fill, output as the file's own type"
    out = s.get_file_preview("img", "pic", width=160, output="jpg", quality=70)
    assert out[:3] == b"\xff\xd8\xff"
    out = s.get_file_preview("img", "pic", width=64, output="webp", rotation=90, border_width=2,
                             border_color="ff0000", border_radius=10, opacity=0.5, background="00ff00")
    assert out[:4] == b"RIFF" and out[8:12] == b"WEBP"
    out = s.get_file_preview("img", "pic", width=40, output="avif")
    assert out[4:12] in (b"ftypavif", b"ftypavis")
    out = s.get_file_preview("img", "pic", height=50, output="gif")
    assert out[:6] == b"GIF89a"
    status, h, body = raw(app, "GET", "/storage/buckets/img/files/pic/preview?width=100&height=100", 2)
    assert status == 200 and h["Content-Type"] == "image/png" and h["X-Appwrite-Cache"] == "miss"
    status, h, again = raw(app, "GET", "/storage/buckets/img/files/pic/preview?width=100&height=100", 2)
    assert h["X-Appwrite-Cache"] == "hit" and again == body
    for bad in ["width=5000", "gravity=middle", "quality=101", "opacity=2", "output=bmp", "borderColor=zzzzzz"]:
        status, _, out = raw(app, "GET", f"/storage/buckets/img/files/pic/preview?{bad}", 0)
        assert status == 400, (bad, out)
    # A decompression bomb: a PNG header claiming 60000 x 60000 pixels, a few hundred bytes.
    bomb = bytearray(png_bytes(8, 8))
    import struct
    import zlib
    bomb[16:24] = struct.pack(">II", 60000, 60000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])) & 0xFFFFFFFF)
    s.create_file("img", "bomb", InputFile.from_bytes(bytes(bomb), "bomb.png"))
    with pytest.raises(AppwriteException) as e:
        s.get_file_preview("img", "bomb", width=10)
    assert e.value.code == 400 and e.value.type == "storage_image_resolution_exceeded"
    # Not an image: a placeholder of the size asked.
    s.create_file("img", "notes", InputFile.from_bytes(b"just text", "notes.png"))
    assert png_size(s.get_file_preview("img", "notes", width=30, height=20)) == (30, 20)
    # Transformations off: refused to users and guests.
    s.update_bucket("img", "Images", permissions=[Permission.read(Role.any())], transformations=False)
    guest = Storage(Client().set_endpoint(app["cluster"].nodes[0].url()).set_project(P))
    with pytest.raises(AppwriteException) as e:
        guest.get_file_preview("img", "pic", width=10)
    assert e.value.code == 403 and e.value.type == "storage_bucket_transformations_disabled"
    assert guest.get_file_download("img", "pic")[:4] == b"\x89PNG"


def test_file_events_reach_subscribers_on_completion(app):
    c = app["cluster"]
    s = storage(app)
    s.create_bucket("live", "Live", permissions=[Permission.read(Role.any())], encryption=False)
    sub = Realtime(c.nodes[2], P)
    assert sub.subscribe(["files"])["success"]
    sub2 = Realtime(c.nodes[1], P)
    assert sub2.subscribe(["buckets.live.files.big.create"])["success"]
    data = payload(2 * CHUNK + 1, seed=5)
    for index in (0, 1):
        send_chunk(app, "live", "big", data, index)
    sub.nothing(1.0)
    send_chunk(app, "live", "big", data, 2)
    ev = sub.event()
    assert "buckets.live.files.big.create" in ev["events"] and "buckets.*.files.*" in ev["events"]
    assert set(ev["channels"]) >= {"files", "buckets.live.files", "buckets.live.files.big",
                                   "files.create", "buckets.live.files.big.create"}
    assert ev["payload"]["$id"] == "big" and ev["payload"]["chunksUploaded"] == 3
    assert sub2.event()["payload"]["$id"] == "big"
    s.update_file("live", "big", name="renamed.bin")
    ev = sub.event()
    assert "buckets.live.files.big.update" in ev["events"] and ev["payload"]["name"] == "renamed.bin"
    s.delete_file("live", "big")
    assert "buckets.live.files.big.delete" in sub.event()["events"]
    # A file nobody may read is heard by nobody.
    s.create_bucket("hidden", "Hidden", encryption=False)
    s.create_file("hidden", "h", InputFile.from_bytes(b"h", "h.txt"))
    sub.nothing(1.0)
    sub.close()
    sub2.close()


def test_uploads_are_their_uploaders_and_guests_may_send_large_files(app):
    n1 = app["cluster"].nodes[0]
    ann, _ = session_for(n1, P, app["key"], "ann")
    bob, _ = session_for(n1, P, app["key"], "bob")
    s = storage(app)
    s.create_bucket("shared", "Shared", permissions=[Permission.create(Role.users()), Permission.read(Role.users())])
    data = payload(2 * CHUNK + 3, seed=9)
    cookie = lambda sess: {"Cookie": f"a_session_{P}={sess}", "X-Appwrite-Key": None}
    st, f = send_chunk(app, "shared", "annsfile", data, 0, headers=cookie(ann))
    assert st == 201, f
    # Bob may create files here, but not slip a chunk into Ann's upload.
    st, out = send_chunk(app, "shared", "annsfile", payload(2 * CHUNK + 3, seed=10), 1, headers=cookie(bob))
    assert st == 401, out
    for index in (1, 2):
        assert send_chunk(app, "shared", "annsfile", data, index, headers=cookie(ann))[0] == 201
    assert sha(s.get_file_download("shared", "annsfile")) == sha(data)
    # `unique()` as the form's id, the whole file in one request.
    body, ctype = multipart([("fileId", "unique()")], "one.bin", data)
    status, _, out = raw(app, "POST", "/storage/buckets/shared/files", 1, {"Content-Type": ctype}, body)
    assert status == 201, out
    made = json.loads(out)
    assert made["chunksTotal"] == 3 and made["chunksUploaded"] == 3 and len(made["$id"]) == 20
    assert sha(s.get_file_download("shared", made["$id"])) == sha(data)
    # Guests, where the bucket lets anyone create: large bodies too.
    s.create_bucket("drop", "Drop", permissions=[Permission.create(Role.any())], encryption=False)
    guest = Storage(Client().set_endpoint(n1.url()).set_project(P))
    f = guest.create_file("drop", "g", InputFile.from_bytes(data, "g.bin"))
    assert f.sizeoriginal == len(data) and f.chunksuploaded == 3 and f.permissions == []
    assert sha(s.get_file_download("drop", "g")) == sha(data)
    # A bucket being deleted with its files: it and every file go, and their bytes after.
    before = blobs(n1)
    for i in range(3):
        s.create_file("drop", f"d{i}", InputFile.from_bytes(payload(CHUNK + 1 + i, seed=30 + i), "d.bin"))
    added = blobs(n1) - before
    assert len(added) == 6
    s.delete_bucket("drop")
    with pytest.raises(AppwriteException):
        s.get_bucket("drop")
    deadline = time.time() + 60
    while time.time() < deadline and any(blobs(n) & added for n in app["cluster"].nodes):
        time.sleep(1)
    assert not any(blobs(n) & added for n in app["cluster"].nodes)


def test_leader_killed_during_a_large_upload_then_retried_completes_exactly(app):
    c = app["cluster"]
    c.expect_faults()
    s = storage(app)
    s.create_bucket("crash", "Crash", permissions=[Permission.read(Role.any())], compression="zstd")
    leader = c.leader()
    via = next(i for i, n in enumerate(c.nodes) if n is not leader and n.alive())
    data = payload(60 * MIB + 17, seed=99)
    progress = []
    failure = []

    def upload():
        try:
            storage(app, node=via).create_file("crash", "big", InputFile.from_bytes(data, "big.bin"),
                                               on_progress=progress.append)
        except AppwriteException as e:
            failure.append(e)

    t = threading.Thread(target=upload)
    t.start()
    deadline = time.time() + 60
    while len(progress) < 3 and time.time() < deadline:
        time.sleep(0.01)
    leader.kill()
    assert len(progress) < 13, "the leader died while the upload was under way"
    t.join(timeout=120)
    # Retried (the SDK resumes after the chunks the cluster holds) until it completes.
    done = None
    for _ in range(30):
        try:
            done = storage(app, node=via).create_file("crash", "big", InputFile.from_bytes(data, "big.bin"))
            if done.chunksuploaded == done.chunkstotal:
                break
        except AppwriteException:
            time.sleep(1)
    assert done is not None and done.chunksuploaded == done.chunkstotal == 13
    leader.start()
    c.wait_for_voters([1, 2, 3])
    for i in range(3):
        assert sha(storage(app, node=i).get_file_download("crash", "big")) == sha(data)
    c.assert_consistent()
