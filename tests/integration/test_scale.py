"""Scale properties: no process per namespace, bounded file descriptors, and the benchmark's
smoke run (N=10, correctness checks only; timings are asserted nowhere in CI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from topoctl.applier import Context, realise
from topoctl.kernel import Kernel
from topoctl.loader import load_file

from .conftest import ROOT

pytestmark = pytest.mark.root


def containers(n: int) -> dict:
    return {
        "apiVersion": "topoctl/v1", "kind": "Topology", "name": "scale",
        "bridges": {"br0": {"addresses": ["10.128.0.1/16"]}},
        "namespaces": {f"c{i}": {"routes": [{"to": "default", "via": "10.128.0.1"}]} for i in range(n)},
        "links": [{"type": "veth", "endpoints": [
            {"namespace": f"c{i}", "name": "eth0", "addresses": [f"10.128.{(i + 2) // 256}.{(i + 2) % 256}/16"]},
            {"bridge": "br0", "name": f"v{i}"}]} for i in range(n)],
    }


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_plan_of_50_namespaces_forks_no_process(sandbox_factory, monkeypatch):
    box = sandbox_factory(containers(50))
    box.apply()
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))

    spawned: list[str] = []
    real_fork, real_spawn = os.fork, os.posix_spawn
    monkeypatch.setattr(os, "fork", lambda: spawned.append("fork") or real_fork())
    monkeypatch.setattr(os, "posix_spawn", lambda *a, **k: spawned.append("spawn") or real_spawn(*a, **k))
    real_popen_init = subprocess.Popen.__init__

    def counting_popen(self, *args, **kwargs):
        spawned.append("popen")
        real_popen_init(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", counting_popen)

    before = open_fds()
    with Kernel() as kernel:
        the_plan, live = context.plan(kernel)
        during = open_fds()
    after = open_fds()
    assert the_plan.empty
    assert len([n for n in live.namespaces if box.uid in n]) == 51
    assert spawned == []  # not one process, for 51 namespaces
    assert during - before <= 51 + 5  # one socket per namespace, a few more at most
    assert after == before  # and all of them closed


def test_benchmark_smoke_run_builds_checks_and_cleans_up():
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "correctness checks passed" in result.stdout
    assert "| topoctl apply (cold) |" in result.stdout and "| script build |" in result.stdout
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(("bench10-", "b"))] if os.path.isdir("/run/netns") else []
    assert not [n for n in leftovers if "-10-c" in n or n.startswith("bench10-")]


def _plan_counting_forks(box, monkeypatch) -> tuple[object, object, list[str], int, int]:
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    forks: list[str] = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append("fork") or real_fork())
    before = open_fds()
    with Kernel() as kernel:
        the_plan, live = context.plan(kernel)
    return the_plan, live, forks, before, open_fds()


def test_a_large_read_forks_one_helper_and_reads_the_same_state(sandbox_factory, monkeypatch):
    """From tables.PARALLEL_FROM namespaces on, one helper process reads half of them: one fork
    per read, whatever the count, and the state read is the same as one process reads."""
    from topoctl import tables

    box = sandbox_factory(containers(30))
    box.apply()
    monkeypatch.setattr(tables, "PARALLEL_FROM", 10_000)
    plan_one, live_one, forks, _, _ = _plan_counting_forks(box, monkeypatch)
    assert forks == []
    monkeypatch.setattr(tables, "PARALLEL_FROM", 10)
    monkeypatch.setattr(tables, "_cpus", lambda: 2)  # also on a one-CPU machine
    plan_two, live_two, forks, before, after = _plan_counting_forks(box, monkeypatch)
    assert forks == ["fork"]
    assert plan_one.empty and plan_two.empty
    assert live_two == live_one
    assert after == before  # the pipe and every socket closed
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # and the helper reaped


def test_a_failing_helper_is_replaced_by_reading_its_half_again(sandbox_factory, monkeypatch):
    from topoctl import tables

    box = sandbox_factory(containers(12))
    box.apply()
    monkeypatch.setattr(tables, "PARALLEL_FROM", 10_000)
    _, live_one, _, _, _ = _plan_counting_forks(box, monkeypatch)
    monkeypatch.setattr(tables, "PARALLEL_FROM", 4)
    monkeypatch.setattr(tables, "_cpus", lambda: 2)

    def broken(_):
        raise RuntimeError("helper cannot encode")  # runs in the helper only

    monkeypatch.setattr(tables, "_encode", broken)
    the_plan, live_two, forks, before, after = _plan_counting_forks(box, monkeypatch)
    assert forks == ["fork"] and the_plan.empty
    assert live_two == live_one
    assert after == before


def test_an_error_in_this_half_does_not_wait_forever_for_the_helper(sandbox_factory, monkeypatch):
    """The helper blocks writing into a full pipe that nobody reads: closing it ends the helper."""
    from topoctl import tables
    from topoctl.errors import KernelError

    box = sandbox_factory(containers(40))
    box.apply()
    monkeypatch.setattr(tables, "PARALLEL_FROM", 4)
    monkeypatch.setattr(tables, "_cpus", lambda: 2)
    real_read = tables._read
    parent = os.getpid()

    def failing_here(kernel, scope):
        if os.getpid() == parent:
            raise KernelError("injected: this process's half fails")
        return real_read(kernel, scope)

    monkeypatch.setattr(tables, "_read", failing_here)
    monkeypatch.setattr(tables, "_encode", lambda _: b"\0" * (4 << 20))  # far more than a pipe holds
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))

    def hung(*_):
        raise AssertionError("still waiting for the helper after 30 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with Kernel() as kernel, pytest.raises(KernelError, match="injected"):
            context.plan(kernel)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
