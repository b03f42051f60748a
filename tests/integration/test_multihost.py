"""Multi-host topologies under --emulate: every host a namespace, an emulated underlay between
them, and VXLAN or host-gw overlays joining their container subnets."""

from __future__ import annotations

import itertools
import json
import subprocess

import pytest

from .conftest import ROOT, TOPOCTL, ip, netns_names, normalised
from .test_examples import _declared_macs

pytestmark = pytest.mark.root

# example -> (container -> its address), and the hosts' underlay addresses
CONTAINERS = {
    "vxlan-2hosts.yaml": {"web-1": "10.244.1.2", "web-2": "10.244.1.3", "db-1": "10.244.2.2", "db-2": "10.244.2.3"},
    "host-gw-3hosts.yaml": {"app-1": "10.244.1.2", "app-2": "10.244.2.2", "app-3": "10.244.3.2"},
}
HOST_OF = {"web-1": "node1", "web-2": "node1", "db-1": "node2", "db-2": "node2",
           "app-1": "node1", "app-2": "node2", "app-3": "node3"}
UNDERLAY = {"vxlan-2hosts.yaml": {"node1": "10.168.0.2", "node2": "10.168.0.3"},
            "host-gw-3hosts.yaml": {"node1": "10.168.0.11", "node2": "10.168.0.12", "node3": "10.168.0.13"}}


@pytest.mark.parametrize("example", sorted(CONTAINERS))
def test_every_container_reaches_every_other_across_hosts(sandbox_factory, example):
    box = sandbox_factory(example)
    first = box.apply()
    assert first["verified"]
    containers = CONTAINERS[example]
    for source, target in itertools.permutations(containers, 2):
        if HOST_OF[source] != HOST_OF[target]:
            assert box.ping(box.ns(source), containers[target]), f"{source} cannot reach {target}"
    for source in containers:  # a container reaches another host's underlay address
        other = next(h for h in UNDERLAY[example] if h != HOST_OF[source])
        assert box.ping(box.ns(source), UNDERLAY[example][other]), f"{source} cannot reach {other}'s underlay"

    second = box.apply()
    assert second["actions"] == [] and second["kernel_writes"] == 0
    box.run("destroy")
    assert box.leftovers() == []
    assert box.host("underlay") not in netns_names()


def _vxlan_entries(box, host: str) -> tuple[str, str, str]:
    scope = box.host(host)
    return (ip("-n", scope, "neigh", "show", "dev", "flannel.1").stdout,
            subprocess.run(["bridge", "-n", scope, "fdb", "show", "dev", "flannel.1"], capture_output=True,
                           text=True, check=True).stdout,
            ip("-n", scope, "route", "show", "dev", "flannel.1").stdout)


VXLAN_DRIFTS = {
    "delete an FDB entry": lambda b, mac: ["bridge", "-n", b.host("node1"), "fdb", "del", mac, "dev", "flannel.1",
                                           "dst", "10.168.0.3"],
    "delete a neighbour": lambda b, mac: ["ip", "-n", b.host("node1"), "neigh", "del", "10.244.2.0", "dev", "flannel.1"],
    "remove the remote route": lambda b, mac: ["ip", "-n", b.host("node2"), "route", "del", "10.244.1.0/24"],
    "wrong neighbour MAC": lambda b, mac: ["ip", "-n", b.host("node1"), "neigh", "replace", "10.244.2.0", "lladdr",
                                           "02:00:00:00:00:01", "dev", "flannel.1", "nud", "permanent"],
    "learning turned on": lambda b, mac: ["ip", "-n", b.host("node1"), "link", "set", "flannel.1", "type", "vxlan",
                                          "learning"],
    "VXLAN device deleted": lambda b, mac: ["ip", "-n", b.host("node2"), "link", "del", "flannel.1"],
}


@pytest.mark.parametrize("drift", sorted(VXLAN_DRIFTS))
def test_vxlan_drift_is_reported_and_repaired(sandbox_factory, drift):
    box = sandbox_factory("vxlan-2hosts.yaml")
    box.apply()
    before = _vxlan_entries(box, "node1"), _vxlan_entries(box, "node2")
    remote_mac = json.loads(ip("-n", box.host("node2"), "-j", "link", "show", "flannel.1").stdout)[0]["address"]
    subprocess.run(VXLAN_DRIFTS[drift](box, remote_mac), check=True, capture_output=True)
    assert box.plan_exit() == 2
    repaired = box.apply()
    if drift != "VXLAN device deleted":
        assert not any(a["action"] == "delete" and a["type"] == "link" for a in repaired["actions"])
    assert box.plan_exit() == 0
    assert (_vxlan_entries(box, "node1"), _vxlan_entries(box, "node2")) == before
    assert box.ping(box.ns("web-1"), "10.244.2.2")


@pytest.mark.parametrize("key, value, reason", [("vni", 7, "vni 1 -> 7"), ("port", 4789, "port 8472 -> 4789")])
def test_changed_vni_or_port_replaces_the_device_and_says_why(sandbox_factory, key, value, reason):
    box = sandbox_factory("vxlan-2hosts.yaml")
    box.apply()
    data = json.loads(json.dumps(box.original))
    data["overlays"][0][key] = value
    data["overlays"][0]["device"] = "flannel.1"
    box.write(data)
    plan = box.plan()
    replaced = [a for a in plan["actions"] if a["action"] == "delete" and a["type"] == "link"]
    assert len(replaced) == 2 and all(a["replace_reason"] == reason for a in replaced)
    box.apply()
    assert box.plan_exit() == 0
    detail = ip("-n", box.host("node1"), "-d", "link", "show", "flannel.1").stdout
    assert (f"id {value} " if key == "vni" else f"dstport {value} ") in detail
    assert box.ping(box.ns("web-1"), "10.244.2.3")


def test_adding_and_removing_a_host_updates_every_other_host(sandbox_factory):
    box = sandbox_factory("vxlan-2hosts.yaml")
    box.apply()
    data = json.loads(json.dumps(box.original))
    data["hosts"]["node3"] = {"address": "10.168.0.4/24", "sysctls": {"net.ipv4.ip_forward": "1"}}
    data["overlays"][0]["subnets"]["node3"] = "10.244.3.0/24"
    data["bridges"]["cni0-node3"] = {"host": "node3", "name": "cni0", "addresses": ["10.244.3.1/24"], "mtu": 1450}
    data["namespaces"]["cache-1"] = {"host": "node3", "routes": [{"to": "default", "via": "10.244.3.1"}]}
    data["links"].append({"type": "veth", "endpoints": [
        {"namespace": "cache-1", "name": "eth0", "addresses": ["10.244.3.2/24"], "mtu": 1450},
        {"bridge": "cni0-node3", "name": "veth-cache1", "mtu": 1450}]})
    box.write(data)
    plan = box.plan()
    on_old_hosts = {(a["netns"], a["type"]) for a in plan["actions"]
                    if a["netns"] in (box.host("node1"), box.host("node2"))}
    assert {(box.host("node1"), "fdb"), (box.host("node1"), "neighbour"), (box.host("node1"), "route")} <= on_old_hosts
    box.apply()
    assert box.ping(box.ns("web-1"), "10.244.3.2") and box.ping(box.ns("cache-1"), "10.244.2.3")

    box.write(box.original)  # node3 leaves the cluster
    plan = box.plan()
    assert any(a["action"] == "delete" and a["type"] == "fdb" and a["netns"] == box.host("node1")
               for a in plan["actions"])
    box.apply()
    assert box.plan_exit() == 0
    assert "10.244.3.0" not in ip("-n", box.host("node1"), "neigh", "show", "dev", "flannel.1").stdout
    assert box.host("node3") not in netns_names()


def test_one_host_at_a_time_as_a_fleet_does(sandbox_factory):
    box = sandbox_factory("vxlan-2hosts.yaml")
    box.run("apply", "--host", "node1")
    assert box.host("node2") not in netns_names()
    box.run("apply", "--host", "node2")
    assert box.plan_exit() == 0  # the whole cluster, planned at once, is converged
    assert box.ping(box.ns("web-1"), "10.244.2.2")
    box.run("destroy", "--host", "node1")
    assert box.host("node1") not in netns_names() and box.host("underlay") in netns_names()
    assert box.run("plan", "--host", "node2", "-d", expect=None).returncode == 0  # node2 untouched
    box.run("destroy", "--host", "node2")
    assert box.leftovers() == []  # the last host out takes the shared underlay with it


@pytest.mark.parametrize("example", sorted(CONTAINERS))
def test_per_host_scripts_build_the_same_state_as_apply(sandbox_factory, example):
    box = sandbox_factory(example)
    box.apply()
    applied = normalised(box.show(), _declared_macs(box))
    box.run("destroy")
    assert box.leftovers() == []
    for host in sorted(UNDERLAY[example]):
        script = subprocess.run([*TOPOCTL, "render", "--emulate", "--host", host, str(box.path)],
                                capture_output=True, text=True, cwd=ROOT, check=True).stdout
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
        assert ran.returncode == 0, f"{host}: {ran.stderr}"
    assert normalised(box.show(), _declared_macs(box)) == applied
    assert box.plan_exit() == 0
    for host in sorted(UNDERLAY[example]):
        teardown = subprocess.run([*TOPOCTL, "render", "--emulate", "--host", host, "--teardown", str(box.path)],
                                  capture_output=True, text=True, cwd=ROOT, check=True).stdout
        ran = subprocess.run(["sh", "-c", teardown], capture_output=True, text=True)
        assert ran.returncode == 0, f"{host}: {ran.stderr}"
        assert box.host(host) not in netns_names()
