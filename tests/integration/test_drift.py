"""Drift made by hand is reported by plan -d and repaired by one apply, in place where the
kernel allows; edits of the file converge the same way."""

from __future__ import annotations

import json

import pytest

from .conftest import ip

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
