"""Every example applies, connects, is idempotent, renders to an equivalent script, and
destroys to nothing. Real namespaces under --emulate, unique names, always cleaned up."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from topoctl.kernel import namespaces as ns
from topoctl.run.context import Context, realise
from topoctl.spec.loader import load_file

from .conftest import ROOT, TOPOCTL, normalised

pytestmark = pytest.mark.root

# (example, [(from, to-address)]): who must reach whom once applied. "HOST" is the emulated host.
REACH = {
    "docker0.yaml": [("nginx-1", "172.17.0.3"), ("nginx-2", "172.17.0.2"), ("HOST", "172.17.0.2"),
                     ("nginx-2", "172.17.0.1"), ("nginx-1", "192.0.2.1")],  # the last: the outside, masqueraded
    "point-to-point.yaml": [("left", "10.0.0.2"), ("right", "10.0.0.1"), ("left", "fd00:0:0:1::2")],
    "routed.yaml": [("blue-1", "10.2.0.10"), ("red-1", "10.1.0.10"), ("blue-1", "fd00:2::10"),
                    ("red-1", "fd00:1::10")],
}


def where(box, name: str) -> str:
    return box.host() if name == "HOST" else box.ns(name)


@pytest.mark.parametrize("example", sorted(REACH))
def test_example_applies_connects_is_idempotent_and_destroys(sandbox_factory, example):
    box = sandbox_factory(example)
    assert box.plan_exit() == 2  # nothing exists yet

    first = box.apply()
    assert first["verified"] is True and first["summary"]["add"] > 0 and first["kernel_writes"] > 0
    assert box.plan_exit() == 0

    for source, address in REACH[example]:
        assert box.ping(where(box, source), address), f"{source} cannot reach {address}"

    second = box.apply()
    assert second["actions"] == [] and second["kernel_writes"] == 0  # no netlink write at all

    destroyed = box.run("destroy", "-o", "json")
    assert '"verified": true' in destroyed.stdout
    assert box.leftovers() == []
    plan_after = box.plan()
    assert plan_after["summary"]["add"] == first["summary"]["add"]  # everything to add again
    assert plan_after["summary"]["destroy"] == 0


def test_routed_traffic_really_goes_through_the_router(sandbox_factory):
    box = sandbox_factory("routed.yaml")
    box.apply()
    assert box.ping(box.ns("blue-1"), "10.2.0.10")
    assert box.run("exec", expect=2).returncode == 2  # exec without a target is a usage error, not a crash
    subprocess.run(["ip", "netns", "exec", box.ns("router"), "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    assert not box.ping(box.ns("blue-1"), "10.2.0.10")
    assert box.plan_exit() == 2  # the sysctl drift is seen
    box.apply()
    assert box.ping(box.ns("blue-1"), "10.2.0.10")


def _desired_macs(box) -> dict[tuple, str]:
    """Each link's MAC as the file gives it or derives it (every link topoctl makes has one)."""
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    return {key: link.mac for key, link in context.desired.links.items() if link.mac is not None}


def _declared_macs(box) -> set[tuple]:
    return set(_desired_macs(box))


@pytest.mark.parametrize("flavor", ["ip", "brctl"])
@pytest.mark.parametrize("example", sorted(REACH))
def test_rendered_script_builds_the_same_state_as_apply(sandbox_factory, example, flavor):
    box = sandbox_factory(example)
    box.apply()
    applied = normalised(box.show(), _declared_macs(box))
    # the MACs apply set are the file's or the derived ones, so the script's can equal them
    assert {(l["netns"], l["name"]): l["mac"] for l in applied["links"] if l["kind"] != "loopback"} == _desired_macs(box)
    box.run("destroy")
    assert box.leftovers() == []

    script = subprocess.run([*TOPOCTL, "render", "--emulate", "--flavor", flavor, str(box.path)],
                            capture_output=True, text=True, cwd=ROOT, check=True).stdout
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    scripted = normalised(box.show(), _declared_macs(box))
    assert scripted == applied
    assert box.plan_exit() == 0  # topoctl sees the script's work as its own, unchanged

    teardown = subprocess.run([*TOPOCTL, "render", "--emulate", "--teardown", "--flavor", flavor, str(box.path)],
                              capture_output=True, text=True, cwd=ROOT, check=True).stdout
    ran = subprocess.run(["sh", "-c", teardown], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert box.leftovers() == []


def test_a_namespace_default_sysctl_applies_to_the_interfaces_topoctl_creates(sandbox_factory):
    """net.ipv6.conf.default.* is read by the kernel when an interface is made: topoctl writes
    namespace-wide keys before it creates the namespace's interfaces, so eth0 inherits it."""
    data = yaml.safe_load((ROOT / "topologies" / "docker0.yaml").read_text())
    first = next(iter(data["namespaces"]))
    data["namespaces"][first]["sysctls"] = {"net.ipv6.conf.default.disable_ipv6": 1,
                                            "net.ipv4.conf.eth0.rp_filter": 2}
    box = sandbox_factory(data)
    box.apply()
    where = box.ns(first)
    shown = subprocess.run(["ip", "-n", where, "-j", "addr", "show", "dev", "eth0"],
                           capture_output=True, text=True, check=True)
    families = {a["family"] for entry in json.loads(shown.stdout) for a in entry.get("addr_info", [])}
    assert families == {"inet"}, families  # no IPv6 link-local address on eth0
    assert ns.run_in_netns(where, lambda: open("/proc/sys/net/ipv4/conf/eth0/rp_filter").read().strip()) == "2"
    assert box.plan_exit() == 0


@pytest.mark.parametrize("mtu", [1400, 9000])
def test_a_bridge_keeps_its_mtu_when_ports_of_another_mtu_join(sandbox_factory, mtu):
    """A bridge follows its smallest port's MTU unless its own was changed once: a cold build
    of a bridge at 1400 (or 9000) with 1500 ports must leave it at 1400 (9000), through a
    drift repair that re-creates a port too; and the script must do the same."""
    data = yaml.safe_load((ROOT / "topologies" / "docker0.yaml").read_text())
    data["bridges"]["docker0"]["mtu"] = mtu
    box = sandbox_factory(data)
    box.apply()
    assert box.plan_exit() == 0

    def bridge_mtu() -> int:
        shown = subprocess.run(["ip", "-n", box.host(), "-j", "link", "show", "dev", "docker0"],
                               capture_output=True, text=True, check=True)
        return json.loads(shown.stdout)[0]["mtu"]

    assert bridge_mtu() == mtu
    port = data["links"][0]["endpoints"][1]["name"]
    subprocess.run(["ip", "-n", box.host(), "link", "del", port], check=True)
    box.apply()
    assert bridge_mtu() == mtu and box.plan_exit() == 0
    box.run("destroy")
    script = box.run("render").stdout
    subprocess.run(["sh", "-s"], input=script, text=True, check=True, capture_output=True)
    assert bridge_mtu() == mtu and box.plan_exit() == 0
