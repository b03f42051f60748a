"""All or nothing: a step the kernel refuses rolls back every change made before it."""

from __future__ import annotations

import json

import pytest

from .conftest import netns_names

pytestmark = pytest.mark.root


def with_bad_sysctl(data: dict, namespace: str) -> dict:
    data = json.loads(json.dumps(data))
    data["namespaces"][namespace] = {**(data["namespaces"][namespace] or {}),
                                     "sysctls": {"net.ipv4.no_such_knob": "1"}}
    return data


def test_failed_first_apply_leaves_nothing(sandbox_factory):
    box = sandbox_factory("point-to-point.yaml")
    box.write(with_bad_sysctl(box.original, "left"))
    before = netns_names()
    result = box.run("apply", expect=1)
    assert "failed: sysctl net.ipv4.no_such_knob does not exist in" in result.stderr
    assert "rolled back 4 of 4 earlier changes" in result.stderr
    assert netns_names() == before
    assert box.leftovers() == []


def test_failed_change_restores_the_state_before(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    before = box.show()
    data = with_bad_sysctl(box.original, "nginx-2")
    data["bridges"]["docker0"]["mtu"] = 1400          # a change in place, made before the failure
    data["namespaces"]["nginx-9"] = {}                # a creation, made before the failure
    box.write(data)
    result = box.run("apply", expect=1)
    assert "rolled back" in result.stderr
    assert box.show() == before
    assert box.ns("nginx-9") not in netns_names()


def _run_with_fault(box, k: int):
    import os
    import subprocess

    from .conftest import ROOT, TOPOCTL

    env = {**os.environ, "TOPOCTL_FAULT_AT": str(k)}
    return subprocess.run([*TOPOCTL, "apply", "--emulate", str(box.path)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_a_fault_at_every_step_of_a_cold_apply_leaves_nothing(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    steps = len(box.plan()["actions"])
    assert steps == 11
    for k in range(1, steps + 1):
        result = _run_with_fault(box, k)
        assert result.returncode == 1, result.stderr
        assert f"step {k} of {steps} failed" in result.stderr and "injected fault" in result.stderr
        assert "Traceback" not in result.stderr
        assert box.leftovers() == [], f"fault at step {k} left {box.leftovers()}"
    box.apply()  # and without a fault it still builds


def test_a_fault_at_every_step_of_a_change_restores_the_state_before(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    before = box.show()
    data = json.loads(json.dumps(box.original))
    data["bridges"]["docker0"]["mtu"] = 1400                                   # change in place
    data["links"][0]["endpoints"][0]["addresses"] = ["172.17.0.12/16"]         # address swap
    data["namespaces"]["nginx-1"]["routes"] = [{"to": "10.9.0.0/16", "via": "172.17.0.1"}]  # route swap
    data["namespaces"]["nginx-9"] = {}                                         # a new namespace
    box.write(data)
    steps = len(box.plan()["actions"])
    assert steps >= 6
    for k in range(1, steps + 1):
        result = _run_with_fault(box, k)
        assert result.returncode == 1 and f"step {k} of {steps} failed" in result.stderr
        assert box.show() == before, f"fault at step {k}: state differs after rollback"
        assert box.ns("nginx-9") not in netns_names()
