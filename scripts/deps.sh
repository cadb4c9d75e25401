#!/usr/bin/env bash
# Installs what building and testing Basalt needs on a Debian machine, when it is missing:
# libclang (bindgen for RocksDB's bindings), Python's venv module, iproute2 (the partition
# tests put nodes in network namespaces), nftables, libfaketime and libfiu (the jepsen/
# harness drops packets inside those namespaces, skews nodes' clocks and fails their fsyncs), and Node.js with npm (the Node
# SDK's tests). Safe to run repeatedly.
set -euo pipefail

# bindgen (through clang-sys, loading at run time) opens libclang itself: `libclang.so`,
# `libclang.so.N` or `libclang-N.so[.M]`. libclang-cpp (the C++ interface, often installed on
# its own) is a different library that bindgen cannot use, so it does not count.
have_libclang() {
    local f
    for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang.so* \
             /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* /usr/lib/aarch64-linux-gnu/libclang.so* \
             /usr/lib/aarch64-linux-gnu/libclang-[0-9]*.so* "${LIBCLANG_PATH:-/nonexistent}"/libclang*.so*; do
        case "$(basename "$f")" in
            libclang-cpp*) continue ;;
        esac
        [ -e "$f" ] && return 0
    done
    return 1
}

missing=()
have_libclang || missing+=(libclang-dev)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# jepsen/: partitions and packet loss are nftables rules; clock skew preloads libfaketime,
# the library itself (faults/src/node.rs looks for it at these paths).
{ [ -x /usr/sbin/nft ] || command -v nft >/dev/null 2>&1; } || missing+=(nftables)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] ||
    [ -e /usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(faketime)
# jepsen/: disk faults run nodes under fiu-run, which preloads libfiu's POSIX wrappers, and
# steer them with fiu-ctrl.
[ -e /usr/lib/fiu/fiu_posix_preload.so ] || missing+=(libfiu0)
command -v fiu-run >/dev/null 2>&1 && command -v fiu-ctrl >/dev/null 2>&1 || missing+=(fiu-utils)
# jepsen/: power cuts put the data dirs on a FUSE file system; as root it mounts through
# /dev/fuse directly, else through fusermount3.
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
# The Node SDK's tests (tests/test_node_sdk.py) run node-appwrite under Node.js.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The Web SDK's tests (tests/test_browser.py) drive the browser at this path (playwright-core
# cannot download its own here).
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/deps.sh: installing ${missing[*]} (libclang builds RocksDB's bindings; venv hosts the test SDK; ip makes test networks, nft, faketime, fiu and fuse3 fault them; node, npm and chromium run the JS SDKs)" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
