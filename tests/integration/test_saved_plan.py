"""Saved plans: `plan --out` then `apply PLAN` applies exactly what was reviewed, or refuses."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from .conftest import ROOT, TOPOCTL, ip, netns_names

pytestmark = pytest.mark.root


def saved_plan(box, tmp_path, *extra: str) -> str:
    path = tmp_path / f"plan-{len(list(tmp_path.iterdir()))}.json"
    box.run("plan", "--out", str(path), *extra)
    return str(path)


def apply_plan(path: str, expect: int) -> subprocess.CompletedProcess:
    result = subprocess.run([*TOPOCTL, "apply", "-o", "json", path], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == expect, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_a_fresh_saved_plan_applies_and_a_stale_one_is_refused(sandbox_factory, tmp_path):
    box = sandbox_factory("docker0.yaml")
    fresh = saved_plan(box, tmp_path)
    reviewed = json.loads(open(fresh).read())["plan"]
    applied = json.loads(apply_plan(fresh, 0).stdout)
    assert applied["actions"] == reviewed["actions"]  # exactly what was reviewed
    assert box.plan_exit() == 0

    ip("-n", box.host(), "link", "set", "docker0", "mtu", "1400")
    stale = saved_plan(box, tmp_path)  # a plan to repair the MTU...
    ip("-n", box.host(), "link", "set", "veth-nginx1", "down")  # ...and then the world moves on
    refused = apply_plan(stale, 1)
    assert "stale plan" in refused.stderr
    assert json.loads(ip("-n", box.host(), "-j", "link", "show", "docker0").stdout)[0]["mtu"] == 1400  # untouched
    apply_plan(saved_plan(box, tmp_path), 0)  # a new plan of the new state applies
    assert box.plan_exit() == 0


def test_a_plan_saved_while_the_kernel_settles_after_an_apply_still_applies(sandbox_factory, tmp_path):
    """For a second after links come up, the kernel sets bridge ports forwarding and adds IPv6
    link-local addresses; neither is planned, so neither makes a saved plan stale."""
    box = sandbox_factory("docker0.yaml")
    box.apply()
    ip("-n", box.host(), "link", "set", "docker0", "mtu", "1400")
    plan = saved_plan(box, tmp_path)  # at once, before linkwatch has run
    time.sleep(1.5)
    apply_plan(plan, 0)
    assert box.plan_exit() == 0


def test_a_saved_destroy_plan_destroys(sandbox_factory, tmp_path):
    box = sandbox_factory("point-to-point.yaml")
    box.apply()
    apply_plan(saved_plan(box, tmp_path, "--destroy"), 0)
    assert box.ns("left") not in netns_names() and box.leftovers() == []
