"""Renderer golden files, and properties of every rendered script. No root.

Regenerate the golden files after an intended change with: UPDATE_GOLDEN=1 make unit
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import pytest

from topoctl.core.desired import Deployment as Context
from topoctl.core.realisation import realise
from topoctl.spec.loader import load_file, load_text
from topoctl.output.render import build_plan, render_build, render_teardown

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = ["docker0", "point-to-point", "routed"]
VARIANTS = {
    "": dict(teardown=False, flavor="ip", emulate=False),
    "-teardown": dict(teardown=True, flavor="ip", emulate=False),
    "-brctl": dict(teardown=False, flavor="brctl", emulate=False),
    "-emulate": dict(teardown=False, flavor="ip", emulate=True),
}


MULTI_HOST = ["vxlan-2hosts", "host-gw-3hosts"]
MULTI_VARIANTS = {
    "-node1": dict(teardown=False, flavor="ip", emulate=False, host="node1"),
    "-node1-teardown": dict(teardown=True, flavor="ip", emulate=False, host="node1"),
    "-emulate": dict(teardown=False, flavor="ip", emulate=True, host=None),
    "-emulate-node2": dict(teardown=False, flavor="ip", emulate=True, host="node2"),
}


def render(name: str, teardown: bool, flavor: str, emulate: bool, host: str | None = None) -> str:
    relative = f"topologies/{name}.yaml"
    topology = load_file(ROOT / relative)
    topology = dataclasses.replace(topology, source=relative)
    context = Context(topology, realise(topology, host, emulate))
    return (render_teardown if teardown else render_build)(context, flavor)


@pytest.mark.parametrize("variant", list(MULTI_VARIANTS))
@pytest.mark.parametrize("name", MULTI_HOST)
def test_multi_host_script_matches_golden_file_and_is_valid_sh(name, variant):
    script = render(name, **MULTI_VARIANTS[variant])
    golden = GOLDEN / f"{name}{variant}.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(script)
    assert script == golden.read_text()
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_vxlan_script_has_the_flannel_steps():
    script = render("vxlan-2hosts", teardown=False, flavor="ip", emulate=False, host="node1")
    assert "type vxlan id 1 dstport 8472 local 10.168.0.2 nolearning" in script
    assert "bridge fdb append" in script and "dst 10.168.0.3 self permanent" in script
    assert "ip neigh replace 10.244.2.0 lladdr" in script and "nud permanent" in script
    assert "ip -4 route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 metric 0 proto 116 table 254 onlink" in script
    assert "sysctl -qw net.ipv4.ip_forward=1" in script


def test_per_host_emulated_script_guards_the_shared_underlay():
    script = render("vxlan-2hosts", teardown=False, flavor="ip", emulate=True, host="node2")
    assert "if ! test -e /run/netns/vxlan2-underlay; then" in script
    assert "if ! ip -n vxlan2-underlay link show dev br-underlay >/dev/null 2>&1; then" in script
    assert "vxlan2-node1" not in script


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
    commands, in_table = [], False
    for line in script.splitlines():  # a table's text goes to nft on its standard input
        if in_table:
            in_table = line != "TOPOCTL_NFT"
        elif line and not line.startswith("#") and line != "set -eu":
            commands.append(line)
            in_table = line.endswith("<<'TOPOCTL_NFT'")
    assert all(line.split()[0] in ("ip", "bridge", "sysctl", "brctl", "mkdir", "printf", "rm", "nft", "tc") for line in commands)
    assert any(line.startswith("nft -f - <<") for line in commands)


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



@pytest.mark.parametrize("flavor", ["ip", "brctl"])
@pytest.mark.parametrize("name", EXAMPLES + MULTI_HOST)
def test_every_link_the_script_makes_gets_the_mac_apply_sets(name, flavor):
    """Script equivalence holds for MACs too: each link is made with the desired state's MAC
    (given or derived), never left to the kernel's random choice."""
    topology = load_file(ROOT / f"topologies/{name}.yaml")
    context = Context(topology, realise(topology, None, True))
    script = render_build(context, flavor)
    named = re.findall(r"(?:link add name|link set dev|peer name|brctl addbr) (\S+)[^\n]*? address (\S+)", script)
    named += re.findall(r" type veth peer name (\S+)[^\n]*? address (\S+)", script)
    made = {(link.name, link.mac) for link in context.desired.links.values() if link.kind != "loopback"}
    assert made and made <= set(named)
    assert len(re.findall(r" address [0-9a-f]{2}:", script)) == len(made)  # one each, nothing else
