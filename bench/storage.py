"""Storage benchmark (not a test). On one machine, in the same run:

1. the disk's own sequential write (synced) and read (page cache dropped, or O_DIRECT where
   dropping is not allowed) of a file of the same size, in the cluster's directory;
2. a three-node cluster: the upload of one file (default 256 MiB) with the Python SDK (its
   5 MiB chunks, eight in flight) through a follower, then its download through another node
   (page cache dropped first when allowed), as MB/s and as a share of the disk's speed; each
   node's peak resident memory (VmHWM) during it; for `plain` (no compression, no encryption)
   and `sealed` (zstd + AES-256-GCM) buckets;
3. previews per second of a 12-megapixel JPEG (4000 x 3000) scaled to 400 px wide, each with
   other parameters so that none is a cache hit, two requests at a time.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/storage.py [MiB]

Every node writes each chunk once (the three nodes share this machine's one disk here, so the
cluster writes three copies of the file to it): the disk figure is for one copy.
"""
import hashlib
import mmap
import os
import random
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from appwrite.client import Client  # noqa: E402
from appwrite.input_file import InputFile  # noqa: E402
from appwrite.permission import Permission  # noqa: E402
from appwrite.role import Role  # noqa: E402
from appwrite.services.storage import Storage  # noqa: E402

from harness import TestCluster, create_project  # noqa: E402

MIB = 1024 * 1024


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def disk_speed(directory, size):
    path = os.path.join(directory, "disk-probe.bin")
    block = os.urandom(8 * MIB)
    t = time.time()
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    write = size / (time.time() - t) / MIB
    dropped = drop_caches()
    buf = mmap.mmap(-1, 8 * MIB)
    flags = os.O_RDONLY | (0 if dropped else getattr(os, "O_DIRECT", 0))
    fd = os.open(path, flags)
    t = time.time()
    n = 0
    while True:
        got = os.readv(fd, [buf])
        if got <= 0:
            break
        n += got
    read = n / (time.time() - t) / MIB
    os.close(fd)
    os.remove(path)
    return write, read, dropped


def peak_kib(node):
    with open(f"/proc/{node.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def download(node, project, key, bucket, file_id):
    req = urllib.request.Request(f"{node.url()}/storage/buckets/{bucket}/files/{file_id}/download",
                                 headers={"X-Appwrite-Project": project, "X-Appwrite-Key": key})
    h = hashlib.sha256()
    n = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        while True:
            block = r.read(MIB)
            if not block:
                break
            h.update(block)
            n += len(block)
    return n, h.hexdigest()


def png(w, h):
    import struct
    import zlib
    row = lambda y: b"\x00" + bytes((x * 7 + y * 3) & 0xFF for x in range(w * 3))
    raw = b"".join(row(y) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    size = mib * MIB
    cluster = TestCluster(3).start()
    try:
        # This VM's disk varies run to run: measured three times, the median taken.
        probes = sorted(disk_speed(cluster.base_dir, size) for _ in range(3))
        write = sorted(p[0] for p in probes)[1]
        read = sorted(p[1] for p in probes)[1]
        dropped = probes[0][2]
        print(f"disk: sequential write {write:.0f} MB/s (synced), read {read:.0f} MB/s "
              f"({'page cache dropped' if dropped else 'O_DIRECT'}); medians of "
              f"{', '.join(f'{p[0]:.0f}/{p[1]:.0f}' for p in probes)}")
        leader = cluster.leader()
        key = create_project(leader, "bench")
        via = next(n for n in cluster.nodes if n is not leader)
        other = next(n for n in cluster.nodes if n is not leader and n is not via)
        st = Storage(Client().set_endpoint(via.url()).set_project("bench").set_key(key))
        data = b"".join(random.Random(i).randbytes(MIB) for i in range(mib))
        digest = hashlib.sha256(data).hexdigest()
        for name, compression, encryption in [("plain", "none", False), ("sealed", "zstd", True)]:
            st.create_bucket(name, name, permissions=[Permission.read(Role.any())],
                             compression=compression, encryption=encryption)
            before = [peak_kib(n) for n in cluster.nodes]
            t = time.time()
            f = st.create_file(name, "big", InputFile.from_bytes(data, "big.bin"))
            up = size / (time.time() - t) / MIB
            assert f.chunksuploaded == f.chunkstotal
            drop_caches()
            t = time.time()
            n, got = download(other, "bench", key, name, "big")
            down = n / (time.time() - t) / MIB
            assert n == size and got == digest, "download differs"
            peaks = [peak_kib(n) for n in cluster.nodes]
            print(f"{name:6} upload {up:6.0f} MB/s ({up / write * 100:3.0f}% of the disk's write)   "
                  f"download {down:6.0f} MB/s ({down / read * 100:3.0f}% of its read)   "
                  f"peak RSS per node {', '.join(f'{p // 1024} MiB' for p in peaks)} "
                  f"(before: {', '.join(f'{p // 1024}' for p in before)})")
        # Previews of a 12-megapixel JPEG: made by the server itself from a PNG.
        st.create_bucket("img", "img", permissions=[Permission.read(Role.any())], encryption=False)
        st.create_file("img", "src", InputFile.from_bytes(png(4000, 3000), "src.png"))
        jpeg = st.get_file_preview("img", "src", output="jpg", quality=90)
        assert jpeg[:3] == b"\xff\xd8\xff"
        st.create_file("img", "photo", InputFile.from_bytes(jpeg, "photo.jpg"))
        done = []
        lock = threading.Lock()
        widths = iter(range(400, 100000))

        def worker(deadline):
            while time.time() < deadline:
                with lock:
                    w = next(widths)
                out = st.get_file_preview("img", "photo", width=w, output="jpg")
                assert out[:3] == b"\xff\xd8\xff"
                with lock:
                    done.append(w)

        st.get_file_preview("img", "photo", width=399, output="jpg")  # warm
        t = time.time()
        threads = [threading.Thread(target=worker, args=(t + 20,)) for _ in range(2)]
        [x.start() for x in threads]
        [x.join() for x in threads]
        elapsed = time.time() - t
        print(f"previews: {len(done) / elapsed:.1f}/s of a 12-megapixel JPEG ({len(jpeg) // 1024} KiB) "
              f"to ~400 px jpg, 2 at a time, none cached; peak RSS of the node "
              f"{peak_kib(via) // 1024} MiB")
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
