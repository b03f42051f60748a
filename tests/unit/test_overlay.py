"""Overlays from data: remote entries for N hosts, adding and removing a host, validation. No root."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from topoctl.core.actions import AddFdb, AddNeighbour, AddRoute, CreateVxlan, DeleteFdb, DeleteNeighbour, DeleteRoute
from topoctl.core.desired import Deployment as Context
from topoctl.core.realisation import realise
from topoctl.errors import InvalidTopology, UsageError
from topoctl.spec.loader import load_text
from topoctl.core.overlay import vtep_mac
from topoctl.core.planner import plan
from topoctl.core.state import State, link_mac

from .test_planner import as_live


def cluster(n: int, kind: str = "vxlan", extra: str = "") -> str:
    hosts = "\n".join(f"  node{i}: {{address: 10.168.0.{i + 1}/24}}" for i in range(1, n + 1))
    subnets = ", ".join(f"node{i}: 10.244.{i}.0/24" for i in range(1, n + 1))
    return (f"apiVersion: topoctl/v1\nkind: Topology\nname: c\nhosts:\n{hosts}\n"
            f"overlays:\n  - {{name: flannel, type: {kind}, subnets: {{{subnets}}}}}\n{extra}")


def context(text: str, host: str | None = None, emulate: bool = True) -> Context:
    topology = load_text(text, "c.yaml")
    return Context(topology, realise(topology, host, emulate))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_every_host_gets_one_neighbour_fdb_entry_and_onlink_route_per_remote_host(n):
    desired = context(cluster(n)).desired
    for i in range(1, n + 1):
        scope = f"c-node{i}"
        assert len([x for x in desired.neighbours if x.scope == scope]) == n - 1
        assert len([x for x in desired.fdb if x.scope == scope]) == n - 1
        routes = [r for r in desired.routes.values() if r.scope == scope]
        assert len(routes) == n - 1 and all(r.onlink and r.dev == "flannel.1" for r in routes)
    vx = desired.links[("c-node1", "flannel.1")]
    assert (vx.kind, vx.mtu, vx.vxlan.vni, vx.vxlan.port, vx.vxlan.learning) == ("vxlan", 1450, 1, 8472, False)
    assert vx.vxlan.local == ipaddress.ip_address("10.168.0.2") and vx.vxlan.underlay == "eth0"
    # node1's entry for node2 points node2's VTEP MAC at node2's underlay address
    fdb = {(f.mac, str(f.dst)) for f in desired.fdb if f.scope == "c-node1"}
    assert (vtep_mac("c", "flannel", "node2"), "10.168.0.3") in fdb
    neighbour = next(x for x in desired.neighbours if x.scope == "c-node1" and str(x.ip) == "10.244.2.0")
    assert neighbour.mac == desired.links[("c-node2", "flannel.1")].mac


def test_vtep_macs_are_deterministic_unicast_and_locally_administered():
    mac = vtep_mac("c", "flannel", "node1")
    assert mac == vtep_mac("c", "flannel", "node1") != vtep_mac("c", "flannel", "node2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x01 == 0 and first & 0x02 == 2


def test_emulated_underlay_cables_have_derived_macs_and_vteps_keep_theirs():
    desired = context(cluster(3)).desired
    for i in (1, 2, 3):
        host_end = desired.links[(f"c-node{i}", "eth0")]
        port = desired.links[("c-underlay", f"u-node{i}")]
        assert host_end.mac == link_mac("c", "host", f"node{i}", "eth0")
        assert port.mac == link_mac("c", "underlay", "", f"u-node{i}")
        # VTEP MACs stay derived from (topology, overlay, host): every host computes its peers'
        assert desired.links[(f"c-node{i}", "flannel.1")].mac == vtep_mac("c", "flannel", f"node{i}")
    macs = [link.mac for link in desired.links.values() if link.kind != "loopback"]
    assert all(macs) and len(set(macs)) == len(macs)
    # a re-created cable gets its MACs back, so the other hosts' neighbour entries stay right
    live = as_live(desired)
    del live.links[("c-node2", "eth0")]
    (create,) = [a for a in plan(desired, live, "c").actions if type(a).__name__ == "CreateVeth"]
    assert {create.a.mac, create.b.mac} == {desired.links[("c-node2", "eth0")].mac,
                                            desired.links[("c-underlay", "u-node2")].mac}


def test_host_gw_routes_via_each_remote_underlay_address():
    desired = context(cluster(3, "host-gw")).desired
    routes = sorted((str(r.dst), str(r.via), r.dev) for r in desired.routes.values() if r.scope == "c-node1")
    assert routes == [("10.244.2.0/24", "10.168.0.3", "eth0"), ("10.244.3.0/24", "10.168.0.4", "eth0")]
    assert not any(link.kind == "vxlan" for link in desired.links.values())


def test_on_a_real_host_the_underlay_device_is_left_to_the_kernel():
    ctx = context(cluster(2, "host-gw"), host="node1", emulate=False)
    (route,) = ctx.desired.routes.values()
    assert route.scope is None and route.dev is None and str(route.via) == "10.168.0.3"


def test_adding_a_host_adds_entries_on_the_others_and_removing_it_deletes_them():
    two, three = context(cluster(2)), context(cluster(3))
    grow = plan(three.desired, as_live(two.desired, "c"), "c")
    on_node1 = {type(a) for a in grow.actions if a.scope == "c-node1"}
    assert {AddFdb, AddNeighbour, AddRoute} <= on_node1
    assert any(isinstance(a, CreateVxlan) and a.scope == "c-node3" for a in grow.actions)

    shrink = plan(two.desired, as_live(three.desired, "c"), "c")
    removed = {type(a) for a in shrink.actions if a.scope == "c-node1"}
    assert removed == {DeleteFdb, DeleteNeighbour, DeleteRoute}
    assert any(a.noun == "namespace" and a.scope == "c-node3" for a in shrink.actions)


def test_a_changed_vni_forces_replacement_and_local_changes_in_place():
    ctx = context(cluster(2))
    live = as_live(ctx.desired, "c")
    key = ("c-node1", "flannel.1")
    live.links[key] = replace(live.links[key], vxlan=replace(live.links[key].vxlan, vni=9))
    the_plan = plan(ctx.desired, live, "c")
    assert the_plan.actions[0].reason == "vni 9 -> 1"
    live = as_live(ctx.desired, "c")
    live.links[key] = replace(live.links[key], vxlan=replace(live.links[key].vxlan, local=ipaddress.ip_address("10.168.0.9")))
    (action,) = plan(ctx.desired, live, "c").actions
    assert [(c.attribute, str(c.old), str(c.new)) for c in action.changes] == [("local", "10.168.0.9", "10.168.0.2")]


def test_a_wrong_neighbour_mac_is_corrected_in_place():
    ctx = context(cluster(2))
    live = as_live(ctx.desired, "c")
    wrong = next(x for x in live.neighbours if x.scope == "c-node1")
    live.neighbours = (live.neighbours - {wrong}) | {replace(wrong, mac="02:00:00:00:00:01")}
    (action,) = plan(ctx.desired, live, "c").actions
    assert isinstance(action, AddNeighbour) and action.verb == "change" and action.old_mac == "02:00:00:00:00:01"


def test_one_host_selected_plans_only_its_part_and_the_shared_underlay():
    ctx = context(cluster(3), host="node2")
    the_plan = plan(ctx.desired, State(), "c")
    assert {a.scope for a in the_plan.actions} == {"c-node2", "c-underlay"}
    assert ctx.empty(keep_shared=True).namespaces.keys() == {"c-underlay"}
    assert ctx.empty(keep_shared=False).namespaces == {}


def test_a_real_machine_is_matched_to_its_host_by_underlay_address():
    topology = load_text(cluster(3), "c.yaml")
    chosen = realise(topology, None, False, lambda: {ipaddress.ip_address("10.168.0.4")})
    assert chosen.hosts == ("node3",)
    with pytest.raises(UsageError, match="none has an underlay address of this machine"):
        realise(topology, None, False, lambda: {ipaddress.ip_address("192.0.2.1")})


BAD = {
    "overlapping subnets": (cluster(2).replace("node2: 10.244.2.0/24", "node2: 10.244.1.128/25"),
                            "overlaps 10.244.1.0/24"),
    "subnet overlaps the underlay": (cluster(2).replace("10.244.2.0/24", "10.168.0.0/25"), "overlaps 10.168.0.0/24"),
    "host without an address": (cluster(2).replace("  node2: {address: 10.168.0.3/24}", "  node2: {}"),
                                "host 'node2' has no underlay address"),
    "unknown host": (cluster(2).replace("node2: 10.244.2.0/24", "node9: 10.244.2.0/24"), "unknown host 'node9'"),
    "host-gw across underlay subnets": (cluster(2, "host-gw").replace("10.168.0.3/24", "10.168.1.3/24"),
                                        "is not on the underlay subnet"),
    "vni out of range": (cluster(2).replace("type: vxlan", "type: vxlan, vni: 16777216"), "out of range"),
    "port out of range": (cluster(2).replace("type: vxlan", "type: vxlan, port: 0"), "out of range"),
    "vni on host-gw": (cluster(2, "host-gw").replace("type: host-gw", "type: host-gw, vni: 4"),
                       "'vni' belongs to a vxlan overlay"),
    "device name too long": (cluster(2).replace("type: vxlan", "type: vxlan, device: flannel.overlay.1"),
                             "1 to 15 bytes"),
    "container outside its host's subnet": (cluster(2, extra=(
        "namespaces: {a: {host: node1}}\nlinks:\n  - type: veth\n    endpoints:\n"
        "      - {namespace: a, name: eth0, addresses: [10.244.2.9/24]}\n      - {host: node1, name: va}\n")),
        "outside 10.244.1.0/24"),
    "underlay MTU too small for VXLAN": (cluster(2).replace("{address: 10.168.0.2/24}", "{address: 10.168.0.2/24, mtu: 100}"),
                                         "leaves 50 for VXLAN"),
    "one host only": (cluster(1), "an overlay needs at least two"),
    "gateway off the underlay subnet": (cluster(2).replace("{address: 10.168.0.2/24}", "{address: 10.168.0.2/24, gateway: 10.168.1.1}"),
                                        "gateway 10.168.1.1 of host 'node1' is not on its underlay subnet 10.168.0.0/24"),
    "gateway of the other family": (cluster(2).replace("{address: 10.168.0.2/24}", "{address: 10.168.0.2/24, gateway: 'fd00::1'}"),
                                    "is not on its underlay subnet"),
    "gateway is another host": (cluster(2).replace("{address: 10.168.0.2/24}", "{address: 10.168.0.2/24, gateway: 10.168.0.3}"),
                                "is an address of this topology (the underlay interface in host 'node2')"),
    "gateway is the broadcast address": (cluster(2).replace("{address: 10.168.0.2/24}", "{address: 10.168.0.2/24, gateway: 10.168.0.255}"),
                                         "the broadcast address of 10.168.0.0/24"),
    "gateway without an address": (cluster(2).replace("  node1: {address: 10.168.0.2/24}", "  node1: {address: 10.168.0.2/24}\n  node9: {gateway: 10.168.0.1}"),
                                   "host 'node9' has a gateway but no underlay address"),
    "gateway not an address": (cluster(2).replace("{address: 10.168.0.2/24}", "{address: 10.168.0.2/24, gateway: 10.168.0.1/24}"),
                               "is not a valid IP address"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_overlay_validation(case):
    text, words = BAD[case]
    with pytest.raises(InvalidTopology) as caught:
        load_text(text, "c.yaml")
    messages = [d.message for d in caught.value.diagnostics]
    assert any(words in m for m in messages), messages
    assert all(d.line > 0 for d in caught.value.diagnostics)


def test_underlay_names_are_reserved():
    text = cluster(2).replace("  node2:", "  underlay:").replace("node2: 10.244.2.0/24", "underlay: 10.244.2.0/24")
    with pytest.raises(InvalidTopology, match="1 problem"):
        load_text(text, "c.yaml")
    with pytest.raises(InvalidTopology) as caught:
        load_text(cluster(2, extra="namespaces: {c-underlay: {host: node1}}\n"), "c.yaml")
    assert "reserved" in caught.value.diagnostics[0].message


def test_mixed_families_are_rejected():
    text = cluster(2).replace("node2: 10.244.2.0/24", "node2: 'fd00:2::/64'")
    with pytest.raises(InvalidTopology) as caught:
        load_text(text, "c.yaml")
    assert any("mixes IPv4 and IPv6" in d.message for d in caught.value.diagnostics)


def test_a_real_host_route_may_name_any_underlay_device_when_the_file_names_none():
    text = cluster(2, "host-gw", extra="routes:\n  - {host: node1, to: 10.99.0.0/16, via: 10.168.0.9, dev: ens3}\n")
    topology = load_text(text, "c.yaml")
    assert topology.routes[0].route.dev == "ens3"


def test_an_ipv6_underlay_leaves_70_bytes_for_vxlan():
    text = cluster(2).replace("10.168.0.2/24", "'fd10::2/64'").replace("10.168.0.3/24", "'fd10::3/64'")
    desired = context(text).desired
    assert desired.links[("c-node1", "flannel.1")].mtu == 1430


def test_an_interface_named_like_the_emulated_underlay_needs_the_real_one_named():
    text = cluster(2, extra="bridges:\n  eth0: {host: node1}\n")
    with pytest.raises(InvalidTopology) as caught:
        load_text(text, "c.yaml")
    assert "is the underlay interface --emulate creates" in caught.value.diagnostics[0].message
    load_text(text.replace("  node1: {address: 10.168.0.2/24}", "  node1: {address: 10.168.0.2/24, interface: ens3}"),
              "c.yaml")


def test_the_emulated_underlay_answers_at_every_hosts_gateway_also_when_one_host_is_selected():
    text = cluster(3).replace("{address: 10.168.0.2/24}", "{address: 10.168.0.2/24, gateway: 10.168.0.1}") \
                     .replace("{address: 10.168.0.3/24}", "{address: 10.168.0.3/24, gateway: 10.168.0.1}") \
                     .replace("{address: 10.168.0.4/24}", "{address: 10.168.0.4/24, gateway: 10.168.0.254}")
    expected = {("c-underlay", "br-underlay", ipaddress.ip_interface(a)) for a in ("10.168.0.1/24", "10.168.0.254/24")}
    for host in (None, "node3"):
        desired = context(text, host=host).desired
        assert {(a.scope, a.link, a.interface) for a in desired.addresses if a.scope == "c-underlay"} == expected
    real = context(text, host="node1", emulate=False).desired
    assert not any(a.interface.ip in {ipaddress.ip_address("10.168.0.1")} for a in real.addresses)


def test_exec_enters_a_host_by_its_name_or_its_namespace_name_and_the_emulated_underlay():
    from topoctl.core.realisation import exec_scope

    topology = load_text(cluster(2, extra="namespaces: {a: {host: node1}}\n"), "c.yaml")
    emulated = realise(topology, None, True)
    assert [exec_scope(topology, emulated, t) for t in ("a", "node1", "c-node1", "underlay", "c-underlay")] == \
        ["a", "c-node1", "c-node1", "c-underlay", "c-underlay"]
    with pytest.raises(UsageError) as caught:
        exec_scope(topology, emulated, "c-node9")
    assert caught.value.hint == "choose one of: a, node1, node2, underlay"
    real = realise(topology, "node1", False)
    assert exec_scope(topology, real, "node1") is None  # this machine's own namespace
    for target in ("underlay", "c-node1"):
        with pytest.raises(UsageError, match="is not a namespace or host"):
            exec_scope(topology, real, target)
