"""Rollback targets as data: the state before a failed run -> what the rollback plan rebuilds. No root."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

from topoctl.core.actions import (
    AddAddress,
    AddRoute,
    CreateNamespace,
    CreateVeth,
    DeleteLink,
    DeleteNamespace,
    SetLink,
    SetSysctl,
)
from topoctl.core.planner import plan
from topoctl.core.restore import restore_target
from topoctl.core.state import Address, Link, Netns, RouteEntry

from .test_planner import DOCKER0, HOST, as_live, context


def before_state():
    """docker0 as built, plus foreign objects next to it, as the observer would report them."""
    live = as_live(context().desired)
    live.namespaces["someone-else"] = Netns("someone-else", owner=None)
    live.links[(HOST, "foreign0")] = Link(HOST, "foreign0", "bridge", owner=None, mtu=1500, mac="02:00:00:00:00:01")
    live.addresses.add(Address(HOST, "foreign0", ipaddress.ip_interface("10.99.0.1/24")))
    return live


def test_restoring_the_state_itself_is_an_empty_plan():
    before = before_state()
    assert plan(restore_target(before, "demo"), before, "demo").empty


def test_only_the_topologys_own_objects_are_in_the_target():
    target = restore_target(before_state(), "demo")
    assert "someone-else" not in target.namespaces
    assert (HOST, "foreign0") not in target.links
    assert all(a.link != "foreign0" for a in target.addresses)
    assert not any(a.interface.version == 6 and a.interface.ip.is_link_local for a in target.addresses)


def test_a_deleted_veth_comes_back_with_its_mac_mtu_master_addresses_and_route():
    before = before_state()
    after = as_live(context().desired)
    after.namespaces["someone-else"] = before.namespaces["someone-else"]
    # what a failed run that deleted the cable left: both ends gone, and with them what was on them
    for key in [(HOST, "veth-nginx1"), ("nginx-1", "eth0")]:
        del after.links[key]
    after.addresses = {a for a in after.addresses if (a.scope, a.link) != ("nginx-1", "eth0")}
    after.routes = {k: r for k, r in after.routes.items() if r.scope != "nginx-1"}
    back = plan(restore_target(before, "demo"), after, "demo")
    kinds = [type(a).__name__ for a in back.actions]
    assert kinds == ["CreateVeth", "AddAddress", "AddAddress", "AddRoute"]
    veth = back.actions[0]
    ends = {veth.a.key: veth.a, veth.b.key: veth.b}
    assert ends[(HOST, "veth-nginx1")] == before.links[(HOST, "veth-nginx1")]  # mac, mtu, master, state
    assert ends[("nginx-1", "eth0")].mac == before.links[("nginx-1", "eth0")].mac
    assert {a.address for a in back.actions if isinstance(a, AddAddress)} == {
        a for a in before.addresses if (a.scope, a.link) == ("nginx-1", "eth0") and not a.interface.ip.is_link_local}


def test_a_deleted_namespace_comes_back_with_its_contents_and_sysctls():
    before = before_state()
    after = as_live(context().desired)
    del after.namespaces["nginx-1"]
    after.links = {k: v for k, v in after.links.items() if k[0] != "nginx-1" and k != (HOST, "veth-nginx1")}
    after.addresses = {a for a in after.addresses if a.scope != "nginx-1"}
    after.routes = {k: r for k, r in after.routes.items() if r.scope != "nginx-1"}
    del after.sysctls[("nginx-1", "net.ipv4.ip_forward")]
    back = plan(restore_target(before, "demo"), after, "demo")
    assert isinstance(back.actions[0], CreateNamespace) and back.actions[0].netns.name == "nginx-1"
    assert any(isinstance(a, CreateVeth) for a in back.actions)
    assert any(isinstance(a, SetSysctl) and a.key == "net.ipv4.ip_forward" and a.new == "1" for a in back.actions)
    assert any(isinstance(a, AddRoute) and a.scope == "nginx-1" for a in back.actions)


def test_what_the_failed_run_created_or_changed_is_undone():
    before = before_state()
    grown = context(DOCKER0.replace("namespaces:\n", "namespaces:\n  nginx-9: {}\n"))
    after = as_live(grown.desired)
    after.namespaces["someone-else"] = before.namespaces["someone-else"]
    bridge = (HOST, "docker0")
    after.links[bridge] = replace(after.links[bridge], mtu=1400)
    back = plan(restore_target(before, "demo"), after, "demo")
    assert any(isinstance(a, DeleteNamespace) and a.netns.name == "nginx-9" for a in back.actions)
    (change,) = [a for a in back.actions if isinstance(a, SetLink)]
    assert change.link.key == bridge and [(c.old, c.new) for c in change.changes] == [(1400, 1500)]
    assert not any(isinstance(a, DeleteLink) and a.link.owner is None for a in back.actions)


def test_a_route_of_another_topology_is_never_restored_or_deleted():
    before = before_state()
    theirs = RouteEntry(scope=None, dst=ipaddress.ip_network("10.77.0.0/16"), dev="eth0", owner="other")
    before.routes[theirs.key] = theirs
    target = restore_target(before, "demo")
    assert theirs.key not in target.routes
    assert json.dumps(plan(target, before, "demo").as_json())  # and nothing to do about it
    assert plan(target, before, "demo").empty
