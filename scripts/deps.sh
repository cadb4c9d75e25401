#!/usr/bin/env bash
# Installs what building and testing Basalt needs on a Debian machine, when it is missing:
# libclang (bindgen for RocksDB's bindings). Safe to run repeatedly.
set -euo pipefail

have_libclang() {
    compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null
}

if ! have_libclang; then
    echo "scripts/deps.sh: installing libclang-dev (needed to build RocksDB's bindings)" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
