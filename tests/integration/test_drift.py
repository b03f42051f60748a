"""Drift made by hand is reported by plan -d and repaired by one apply, in place where the
kernel allows; edits of the file converge the same way."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from .conftest import ROOT, ip

pytestmark = pytest.mark.root


def ifindex(netns: str, name: str) -> int:
    return json.loads(ip("-n", netns, "-j", "link", "show", name).stdout)[0]["ifindex"]


# name -> (command builder, link that must keep its ifindex, i.e. be repaired in place, or None)
DRIFTS = {
    "delete a veth": (lambda b: ["-n", b.host(), "link", "del", "veth-nginx1"], None),
    "change an address": (lambda b: ["-n", b.ns("nginx-1"), "addr", "replace", "172.17.0.42/16", "dev", "eth0"],
                          ("nginx-1", "eth0")),
    "swap an address": (lambda b: ["-n", b.ns("nginx-1"), "addr", "flush", "dev", "eth0"], ("nginx-1", "eth0")),
    "remove a route": (lambda b: ["-n", b.ns("nginx-2"), "route", "del", "default"], ("nginx-2", "eth0")),
    "set a link down": (lambda b: ["-n", b.ns("nginx-1"), "link", "set", "eth0", "down"], ("nginx-1", "eth0")),
    "detach a port": (lambda b: ["-n", b.host(), "link", "set", "veth-nginx2", "nomaster"], ("HOST", "veth-nginx2")),
    "change an MTU": (lambda b: ["-n", b.host(), "link", "set", "docker0", "mtu", "1400"], ("HOST", "docker0")),
    "set the bridge down": (lambda b: ["-n", b.host(), "link", "set", "docker0", "down"], ("HOST", "docker0")),
    "change a MAC": (lambda b: ["-n", b.ns("nginx-2"), "link", "set", "eth0", "address", "02:00:00:00:00:42"],
                     ("nginx-2", "eth0")),
    "delete a namespace": (lambda b: ["netns", "del", b.ns("nginx-2")], None),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_drift_is_reported_and_repaired(sandbox_factory, drift):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    command, kept = DRIFTS[drift]
    before = None
    if kept:
        scope = box.host() if kept[0] == "HOST" else box.ns(kept[0])
        before = ifindex(scope, kept[1])
    ip(*command(box))

    assert box.plan_exit() == 2, f"plan did not notice: {drift}"
    repaired = box.apply()
    assert repaired["verified"] and repaired["actions"]
    if kept:
        assert ifindex(scope, kept[1]) == before, "repaired by re-creating, not in place"
        assert not any(a["action"] == "delete" and a["type"] == "link" for a in repaired["actions"])
    assert box.plan_exit() == 0
    assert box.ping(box.ns("nginx-1"), "172.17.0.3")
    assert box.ping(box.host(), "172.17.0.2")


def test_changed_gateway_is_replaced_in_place(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    ip("-n", box.ns("nginx-1"), "route", "replace", "default", "via", "172.17.0.3", "proto", "116")
    plan = box.plan()
    assert [(a["action"], a["type"]) for a in plan["actions"]] == [("change", "route")]
    assert plan["actions"][0]["changes"] == [{"attribute": "via", "old": "172.17.0.3", "new": "172.17.0.1"}]
    box.apply()
    assert box.plan_exit() == 0


def test_editing_the_file_converges(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    data = json.loads(json.dumps(box.original))
    data["bridges"]["docker0"]["mtu"] = 1450
    data["links"][0]["endpoints"][0]["addresses"] = ["172.17.0.12/16"]
    data["links"][0]["endpoints"][0]["mtu"] = 1450
    data["links"][0]["endpoints"][1]["mtu"] = 1450
    del data["namespaces"]["nginx-2"]
    data["links"] = data["links"][:1]
    data["namespaces"]["nginx-3"] = {"routes": [{"to": "default", "via": "172.17.0.1"}]}
    data["links"].append({"type": "veth", "endpoints": [
        {"namespace": "nginx-3", "name": "eth0", "addresses": ["172.17.0.13/16"]},
        {"bridge": "docker0", "name": "veth-nginx3"}]})
    box.write(data)
    eth0 = ifindex(box.ns("nginx-1"), "eth0")

    plan = box.plan()
    verbs = {(a["action"], a["type"]) for a in plan["actions"]}
    assert ("delete", "namespace") in verbs and ("create", "namespace") in verbs and ("change", "link") in verbs
    box.apply()
    assert box.plan_exit() == 0
    assert ifindex(box.ns("nginx-1"), "eth0") == eth0  # address and MTU changed in place
    assert box.ns("nginx-2") not in ip("netns", "list").stdout
    assert box.ping(box.ns("nginx-1"), "172.17.0.13")
    assert box.ping(box.ns("nginx-3"), "172.17.0.1")


# -- MACs: a re-created or corrected link keeps its neighbours' caches right -----------------------

def _docker0_without_macs() -> dict:
    """docker0.yaml with no `mac` on its veth ends, IPv6 added: every MAC is topoctl's to choose."""
    data = yaml.safe_load((ROOT / "topologies" / "docker0.yaml").read_text())
    data["bridges"]["docker0"]["addresses"].append("fd00:17::1/64")
    for n, link in enumerate(data["links"], start=2):
        for end in link["endpoints"]:
            end.pop("mac", None)
            if "namespace" in end:
                end["addresses"].append(f"fd00:17::{n}/64")
    return data


def _mac(netns: str, name: str) -> str:
    return json.loads(ip("-n", netns, "-j", "link", "show", name).stdout)[0]["address"]


def _cached(netns: str, address: str) -> str | None:
    """The MAC the neighbour cache of `netns` holds for `address`, if any."""
    entries = json.loads(ip("-n", netns, "-j", "neigh", "show", address).stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def _ping_once(box, where: str, address: str) -> bool:
    # One echo, one second: a stale neighbour entry loses it (the kernel keeps one for 15-45 s).
    return box.exec(where, "ping", "-c", "1", "-w", "1", "-q", address) == 0


def test_a_veth_re_created_by_a_repair_keeps_its_mac_so_its_neighbours_reach_it_at_once(sandbox_factory):
    box = sandbox_factory(_docker0_without_macs())
    box.apply()
    web1, web2 = box.ns("nginx-1"), box.ns("nginx-2")
    for address in ("172.17.0.2", "fd00:17::2"):
        assert box.ping(web2, address)  # fills nginx-2's caches with nginx-1's eth0
    old = _mac(web1, "eth0")
    assert _cached(web2, "172.17.0.2") == old and _cached(web2, "fd00:17::2") == old

    ip("-n", web1, "link", "del", "eth0")  # takes veth-nginx1 with it
    repaired = box.apply()
    assert ("create", "link") in {(a["action"], a["type"]) for a in repaired["actions"]}
    lost = [a for a in ("172.17.0.2", "fd00:17::2") if not _ping_once(box, web2, a)]
    assert not lost, f"the first ping after the repair was lost: {lost}"
    assert _mac(web1, "eth0") == old
    assert box.plan_exit() == 0


def test_a_veth_with_another_mac_converges_in_place_and_its_neighbours_learn_it(sandbox_factory):
    """What an upgrade from a version that left veth MACs to the kernel does once: the MAC is
    changed on the live, up interface (no -/+), and the kernel announces it to the neighbours."""
    box = sandbox_factory(_docker0_without_macs())
    box.apply()
    web1, web2 = box.ns("nginx-1"), box.ns("nginx-2")
    derived = _mac(web1, "eth0")
    ip("-n", web1, "link", "set", "eth0", "address", "02:00:00:00:17:02")  # as the kernel's random one was
    for address in ("172.17.0.2", "fd00:17::2"):
        assert box.ping(web2, address)
    assert _cached(web2, "172.17.0.2") == "02:00:00:00:17:02"
    index = ifindex(web1, "eth0")

    plan = box.plan()
    assert [(a["action"], a["type"]) for a in plan["actions"]] == [("change", "link")]
    assert plan["actions"][0]["changes"] == [{"attribute": "mac", "old": "02:00:00:00:17:02", "new": derived}]
    box.apply()
    assert ifindex(web1, "eth0") == index and _mac(web1, "eth0") == derived
    assert _cached(web2, "172.17.0.2") == derived and _cached(web2, "fd00:17::2") == derived  # announced
    assert _ping_once(box, web2, "172.17.0.2") and _ping_once(box, web2, "fd00:17::2")
    # the announcement switches were on for the change only
    for key in ("net.ipv4.conf.eth0.arp_notify", "net.ipv6.conf.eth0.ndisc_notify"):
        value = subprocess.run(["ip", "netns", "exec", web1, "sysctl", "-n", key], capture_output=True, text=True)
        assert value.stdout.strip() == "0", key
    assert box.plan_exit() == 0
