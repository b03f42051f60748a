"""One lock per host: a second apply waits instead of interleaving, and says whom it waited for."""

from __future__ import annotations

import subprocess
import time

import pytest

from topoctl.store.locking import host_locks

from .conftest import ROOT, TOPOCTL

pytestmark = pytest.mark.root


def test_a_held_lock_makes_apply_wait_then_give_up_naming_the_holder(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    with host_locks([box.host()], box.topology, "apply", timeout=1):
        started = time.monotonic()
        result = box.run("apply", "--lock-timeout", "1.5", expect=1)
        waited = time.monotonic() - started
    assert waited >= 1.5
    assert f"host {box.host()} is locked by pid" in result.stderr and f"topology {box.topology}" in result.stderr
    assert box.leftovers() == []  # it changed nothing while waiting
    box.apply()  # the lock is free again


def test_two_applies_started_together_both_succeed_one_after_the_other(sandbox_factory):
    box = sandbox_factory("routed.yaml")
    runs = [subprocess.Popen([*TOPOCTL, "apply", "--emulate", "-o", "json", str(box.path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    writes = sorted(__import__("json").loads(out)["kernel_writes"] for out, _ in outputs)
    assert writes[0] == 0 and writes[1] > 0  # the second saw the first one's finished work
    assert box.plan_exit() == 0


def test_two_applies_of_different_files_take_turns_in_the_journal(sandbox_factory, tmp_path):
    """Both have work to do (a build and a change, in either order): the journal lines of one
    run all come before the other's, and the file applied last is what the kernel holds."""
    import json
    import os

    box = sandbox_factory("docker0.yaml")
    changed = json.loads(json.dumps(box.original))
    changed["bridges"]["docker0"]["mtu"] = 1400
    changed["namespaces"]["nginx-9"] = {}
    other = tmp_path / "changed.yaml"
    other.write_text(__import__("yaml").safe_dump(box.rename(changed), sort_keys=False))
    tee = tmp_path / "journal.jsonl"
    env = {**os.environ, "TOPOCTL_JOURNAL_TEE": str(tee)}
    runs = [subprocess.Popen([*TOPOCTL, "apply", "--emulate", "-o", "json", str(path)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for path in (box.path, other)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    lines = [json.loads(line) for line in tee.read_text().splitlines()]
    pids = [line["pid"] for line in lines]
    first, second = pids[0], pids[-1]
    assert first != second, "both runs had work to do, so both wrote a journal"
    assert pids == [first] * pids.count(first) + [second] * pids.count(second), "the runs interleaved"
    assert [line["event"] for line in lines if line["event"] in ("begin", "end")] == ["begin", "end"] * 2
    last = box.path if second == runs[0].pid else other
    assert box.run("plan", "-d", expect=None, path=last).returncode == 0


def test_a_lock_held_by_another_program_names_that_program_not_the_last_topoctl(sandbox_factory):
    """The lock file still says which topoctl held it last; the kernel says who holds it now."""
    from topoctl import paths

    box = sandbox_factory("docker0.yaml")
    box.apply()  # leaves the lock file with this topoctl's pid in it
    lock = paths.lock_path(box.host())
    holder = subprocess.Popen(["flock", lock, "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while box.run("apply", "--lock-timeout", "0", expect=None).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until flock has taken it
        result = box.run("apply", "--lock-timeout", "0.2", expect=1)
    finally:
        holder.kill()
        holder.wait()
    assert f"is locked by pid {holder.pid} (flock {lock} sleep 30), which is not a topoctl run" in result.stderr, \
        result.stderr
