"""Scale properties: no process per namespace, bounded file descriptors, and the benchmark's
smoke run (N=10, correctness checks only; timings are asserted nowhere in CI)."""

from __future__ import annotations

import os
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
