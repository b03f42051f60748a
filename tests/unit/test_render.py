"""Renderer golden files, and properties of every rendered script. No root.

Regenerate the golden files after an intended change with: UPDATE_GOLDEN=1 make unit
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from topoctl.applier import Context, realise
from topoctl.loader import load_file, load_text
from topoctl.render import build_plan, render_build, render_teardown

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = ["docker0", "point-to-point", "routed"]
VARIANTS = {
    "": dict(teardown=False, flavor="ip", emulate=False),
    "-teardown": dict(teardown=True, flavor="ip", emulate=False),
    "-brctl": dict(teardown=False, flavor="brctl", emulate=False),
    "-emulate": dict(teardown=False, flavor="ip", emulate=True),
}


def render(name: str, teardown: bool, flavor: str, emulate: bool) -> str:
    relative = f"topologies/{name}.yaml"
    topology = load_file(ROOT / relative)
    topology = dataclasses.replace(topology, source=relative)
    context = Context(topology, realise(topology, None, emulate))
    return (render_teardown if teardown else render_build)(context, flavor)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_script_matches_golden_file(name, variant):
    script = render(name, **VARIANTS[variant])
    golden = GOLDEN / f"{name}{variant}.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(script)
    assert golden.exists(), f"missing {golden}; run UPDATE_GOLDEN=1 make unit"
    assert script == golden.read_text()


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_script_is_valid_posix_sh(name, variant):
    script = render(name, **VARIANTS[variant])
    assert script.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in script
    check = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_one_command_per_step_and_every_step_numbered():
    script = render("docker0", teardown=False, flavor="ip", emulate=False)
    steps = [line for line in script.splitlines() if line.startswith("# ") and ". " in line[:6]]
    topology = load_file(ROOT / "topologies/docker0.yaml")
    plan = build_plan(Context(topology, realise(topology, None, False)))
    assert len(steps) == len(plan.actions)
    commands = [line for line in script.splitlines() if line and not line.startswith("#") and line != "set -eu"]
    assert all(line.split()[0] in ("ip", "bridge", "sysctl", "brctl", "mkdir", "printf", "rm") for line in commands)


def test_brctl_flavor_uses_brctl_for_bridge_steps():
    script = render("docker0", teardown=False, flavor="brctl", emulate=False)
    assert "brctl addbr docker0" in script
    assert "brctl stp docker0 off" in script
    assert "brctl addif docker0 veth-nginx1" in script
    assert "type bridge" not in script


def test_emulated_script_addresses_the_host_namespace():
    script = render("docker0", teardown=False, flavor="ip", emulate=True)
    assert "ip netns add docker0-local" in script
    assert "ip -n docker0-local link add name docker0" in script
    assert "\nip link" not in script  # nothing touches the machine's own namespace


def test_names_are_quoted_for_the_shell():
    text = """
apiVersion: topoctl/v1
kind: Topology
name: quoting
namespaces:
  "a.b_c-1": {sysctls: {net.ipv4.ip_forward: "1"}}
links:
  - type: veth
    endpoints:
      - {namespace: "a.b_c-1", name: "e$x;y'z", addresses: [10.0.0.1/24]}
      - {name: "h(1)", addresses: [10.0.0.2/24]}
"""
    topology = load_text(text, "q.yaml")
    script = render_build(Context(topology, realise(topology, None, False)))
    assert "'e$x;y'\"'\"'z'" in script
    assert "'h(1)'" in script
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_sysctl_steps_run_inside_the_namespace():
    script = render("routed", teardown=False, flavor="ip", emulate=False)
    assert "ip netns exec router sysctl -qw net.ipv4.ip_forward=1" in script
    assert "ip -n blue-1 -6 route add default via fd00:1::1 dev eth0 metric 1024 proto 116 table 254" in script
    assert "ip -n router addr add fd00:1::1/64 dev eth-blue nodad" in script
