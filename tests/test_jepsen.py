"""The jepsen/ harness's short mode: three real nodes, each in a network namespace of its own,
every workload's clients (register, bank, set, counter, list-append) through the HTTP API for
30 s while the nemesis kills, pauses, partitions, drops or delays packets, skews clocks,
fails fsyncs, changes the membership or cuts the power (losing un-fsynced writes) on a seeded
schedule; then every history is checked, every replica compared, and
nothing acknowledged may be missing or applied twice. The long mode (100 schedules and more)
is a separate command (see the README); this one keeps the harness itself working in every CI
run."""
import json
import os
import subprocess

import pytest

from harness import basalt_bin, fault_bin, temp_dir


def jepsen_bin():
    path = os.environ.get("BASALT_JEPSEN")
    if not path or not os.path.exists(path):
        pytest.skip("set BASALT_JEPSEN to the built jepsen binary (scripts/test does)")
    return path


def run(*args, binary=None, timeout=600):
    results = temp_dir("basalt-jepsen-")
    r = subprocess.run([jepsen_bin(), "--binary", binary or basalt_bin(), "--results", results, *args],
                       capture_output=True, text=True, timeout=timeout)
    [run_dir] = os.listdir(results)
    with open(os.path.join(results, run_dir, "summary.json")) as f:
        summary = json.load(f)
    verdicts = []
    for seed_dir in sorted(os.listdir(os.path.join(results, run_dir))):
        path = os.path.join(results, run_dir, seed_dir, "verdict.json")
        if os.path.exists(path):
            with open(path) as f:
                verdicts.append(json.load(f))
    return r, summary, verdicts, os.path.join(results, run_dir)


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("network faults need root (network namespaces, nftables)")


def test_short_schedule_every_fault_every_workload():
    needs_root()
    r, summary, [v], where = run("--time", "30", "--nemesis", "all", "--workload", "all", "--seed", "7")
    detail = f"{r.stdout}\n{r.stderr}\n(results in {where})"
    assert r.returncode == 0 and summary["valid"], detail
    assert v["anomalies"] == 0 and v["acknowledged-lost"] == 0, detail
    assert v["cluster-check"]["consistent"] and v["cluster-check"]["mismatches"] == 0, detail
    assert len(v["faults"]) >= 3, f"the nemesis did too little: {v['faults']}\n{detail}"
    for name in ("register", "bank", "set", "counter", "list-append"):
        assert v["workloads"][name]["valid"], detail
    # The workloads did real work, faults and all.
    assert v["workloads"]["set"]["acknowledged"] > 100, detail
    assert v["workloads"]["register"]["keys"] >= 3, detail
    assert v["availability"]["none"]["ok"] > 0, detail
    seed_dir = os.path.join(where, "seed-7")
    for f in ("register.jsonl", "bank.jsonl", "set.jsonl", "counter.jsonl", "timeline.html", "verdict.json"):
        assert os.path.getsize(os.path.join(seed_dir, f)) > 0, f
    with open(os.path.join(seed_dir, "register.jsonl")) as f:
        first = json.loads(f.readline())
    assert set(first) >= {"index", "type", "process", "f", "value", "time"}, first


def test_power_cuts_lose_unsynced_writes_and_nothing_acknowledged():
    """Every node's data dir on the harness's lazy file system (FUSE, writes held until
    fsync): the nemesis kills nodes, sometimes all of them, and drops what they had not
    fsynced. What was acknowledged was fsynced first, so it all survives."""
    needs_root()
    if not os.path.exists("/dev/fuse"):
        pytest.skip("the lazy file system needs /dev/fuse")
    r, summary, [v], where = run("--time", "20", "--nemesis", "lose-unsynced", "--workload", "set,counter,bank",
                                 "--seed", "5")
    detail = f"{r.stdout}\n{r.stderr}\n(results in {where})"
    assert r.returncode == 0 and summary["valid"], detail
    assert "lose-unsynced" in v["faults"], detail
    # The cuts really dropped writes (the state store's unsynced log, at least).
    assert v["unsynced-bytes-lost"] > 0, detail
    assert v["acknowledged-lost"] == 0 and v["workloads"]["set"]["acknowledged"] > 20, detail


def test_a_diverging_replica_fails_the_verdict():
    """The harness can fail: a node built with fault points that writes a stray key with every
    entry it applies is caught by the replica comparison, and the run exits non-zero."""
    fb = fault_bin()
    if not fb:
        pytest.skip("set BASALT_FAULT_BIN to the fault-point build (scripts/test does)")
    r, summary, [v], where = run("--time", "5", "--nemesis", "none", "--workload", "counter", "--seed", "3",
                                 "--node-env", "2:BASALT_FAULT=diverge", binary=fb)
    assert r.returncode == 1 and not summary["valid"], f"{r.stdout}\n{r.stderr}"
    assert not v["cluster-check"]["consistent"] and v["cluster-check"]["mismatches"] == 1, v["cluster-check"]
    assert summary["cluster-check-mismatches"] == 1
