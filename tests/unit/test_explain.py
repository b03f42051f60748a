"""check's probes and the explanation walk, from data: the live state is the desired state as
the kernel would show it, then broken by hand. No root."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from topoctl.core.desired import Deployment
from topoctl.core.explain import Facts, explain, lookup
from topoctl.core.probes import Probe, design_probes, segments
from topoctl.core.realisation import realise
from topoctl.core.state import RouteEntry
from topoctl.core.verdicts import source_address
from topoctl.spec.loader import load_file, load_text
from topoctl.spec.model import Place

from .test_planner import as_live

ROOT = Path(__file__).resolve().parents[2]


def deployment(name: str) -> Deployment:
    topology = load_file(ROOT / "topologies" / f"{name}.yaml")
    return Deployment(topology, realise(topology, None, True))


def facts_of(d: Deployment) -> Facts:
    live = as_live(d.desired, d.topology.name)
    sysctls = {key: value for key, value in live.sysctls.items()}
    return Facts(live, d.topology.name, {}, sysctls)


def probe(d: Deployment, source: str, target: str, size: int | None = None) -> Probe:
    found = [p for p in design_probes(d.topology, d.realisation)
             if p.source_label == source and str(p.target) == target and p.size == size]
    assert found, f"no probe {source} -> {target}"
    return found[0]


def walk(d: Deployment, facts: Facts, p: Probe) -> list:
    return explain(p, facts, d.realisation.scope_of(p.source), None,
                   source_address(d.topology, segments(d.topology), p))


def broken(hops) -> str:
    """The first hop that breaks (symptoms such as a FAILED neighbour may follow it)."""
    failed = [h for h in hops if not h.ok]
    assert failed, [h.text for h in hops]
    return failed[0].text


def test_a_sound_path_walks_to_the_target_and_back():
    d = deployment("vxlan-2hosts")
    hops = walk(d, facts_of(d), probe(d, "web-1", "10.244.2.2"))
    assert all(h.ok for h in hops)
    texts = [h.text for h in hops]
    assert any("flannel.1 in vxlan2-node1: 10.244.2.0 is" in t for t in texts)
    assert any("decapsulated by flannel.1 in vxlan2-node2" in t for t in texts)
    assert "10.244.2.2 is an address of eth0 in db-1" in texts
    assert texts[-1] == "back: 10.244.1.2 is an address of eth0 in web-1"  # the reply arrived home


def test_host_forwarding_off_is_named_with_the_sysctl():
    d = deployment("vxlan-2hosts")
    facts = facts_of(d)
    facts.sysctls[("vxlan2-node2", "net.ipv4.ip_forward")] = "0"
    hops = walk(d, facts, probe(d, "web-1", "10.244.2.2"))
    assert broken(hops) == "dropped at vxlan2-node2: net.ipv4.ip_forward is 0"
    first = next(h for h in hops if not h.ok)
    assert first.scope == "vxlan2-node2" and "topoctl apply" in first.fix


def test_a_removed_overlay_fdb_entry_is_named():
    d = deployment("vxlan-2hosts")
    facts = facts_of(d)
    facts.state.fdb = {f for f in facts.state.fdb if f.scope != "vxlan2-node1"}
    assert broken(walk(d, facts, probe(d, "web-1", "10.244.2.2"))).startswith(
        "no FDB entry for ") and "on flannel.1 in vxlan2-node1" in broken(walk(d, facts, probe(d, "web-1", "10.244.2.2")))


def test_an_mtu_lowered_on_one_hop_breaks_the_full_size_probe_only():
    d = deployment("vxlan-2hosts")
    facts = facts_of(d)
    key = ("vxlan2-node2", "veth-db1")
    facts.state.links[key] = replace(facts.state.links[key], mtu=1400)
    full = probe(d, "web-1", "10.244.2.2", size=1450 - 28)
    assert broken(walk(d, facts, full)) == ("veth-db1 in vxlan2-node2 has MTU 1400: a 1450-byte packet with DF set "
                                            "is dropped there")
    assert all(h.ok for h in walk(d, facts, probe(d, "web-1", "10.244.2.2")))


def test_the_vxlan_overhead_counts_against_the_underlay_mtu():
    d = deployment("vxlan-2hosts")
    facts = facts_of(d)
    key = ("vxlan2-node1", "eth0")
    facts.state.links[key] = replace(facts.state.links[key], mtu=1480)
    assert "eth0 in vxlan2-node1 has MTU 1480: a 1500-byte packet" in broken(
        walk(d, facts, probe(d, "web-1", "10.244.2.2", size=1450 - 28)))


def test_a_veth_host_end_down_is_named():
    d = deployment("docker0")
    facts = facts_of(d)
    key = ("docker0-local", "veth-nginx2")
    facts.state.links[key] = replace(facts.state.links[key], up=False)
    hops = walk(d, facts, probe(d, "nginx-1", "172.17.0.3"))
    assert broken(hops) == "port of docker0: veth-nginx2 in docker0-local is down"
    assert next(h for h in hops if not h.ok).fix == "topoctl apply sets it up"


def test_a_removed_container_address_is_named():
    d = deployment("docker0")
    facts = facts_of(d)
    facts.state.addresses = {a for a in facts.state.addresses if str(a.interface.ip) != "172.17.0.3"}
    assert broken(walk(d, facts, probe(d, "nginx-1", "172.17.0.3"))) == \
        "no interface behind bridge docker0 in docker0-local has 172.17.0.3"


def test_a_removed_default_route_is_named():
    d = deployment("docker0")
    facts = facts_of(d)
    facts.state.routes = {k: r for k, r in facts.state.routes.items() if r.scope != "nginx-1"}
    assert broken(walk(d, facts, probe(d, "nginx-1", "192.0.2.1"))) == "no route to 192.0.2.1 in nginx-1"


def test_without_masquerade_the_reply_from_the_outside_cannot_come_back():
    d = deployment("docker0")
    facts = facts_of(d)
    p = probe(d, "nginx-1", "192.0.2.1")
    assert broken(walk(d, facts, p)) == "the reply cannot come back: no route to 172.17.0.2 in docker0-underlay"
    facts.masquerading = {"docker0-local": (ipaddress.ip_network("172.17.0.0/16"),)}
    assert all(h.ok for h in walk(d, facts, p))


def test_a_failed_neighbour_is_reported_when_nothing_else_is_wrong():
    d = deployment("docker0")
    facts = facts_of(d)
    facts.neighbour_states[("nginx-1", "eth0", ipaddress.ip_address("172.17.0.3"))] = "FAILED"
    hops = walk(d, facts, probe(d, "nginx-1", "172.17.0.3"))
    assert [h.text for h in hops if not h.ok] == [
        "the neighbour entry of 172.17.0.3 on eth0 in nginx-1 is FAILED: nothing answered its ARP/ND request"]


def test_a_foreign_forward_drop_policy_is_named():
    d = deployment("docker0")
    facts = facts_of(d)
    facts.masquerading = {"docker0-local": (ipaddress.ip_network("172.17.0.0/16"),)}
    facts.state.foreign_drops = {"docker0-local": ("ip filter FORWARD",)}
    assert broken(walk(d, facts, probe(d, "nginx-1", "192.0.2.1"))) == (
        "dropped at docker0-local: chain ip filter FORWARD (not topoctl's) drops forwarded traffic by policy")


def test_strict_rp_filter_drops_what_would_go_back_another_way():
    d = deployment("routed")
    facts = facts_of(d)
    facts.sysctls[("router", "net.ipv4.conf.all.rp_filter")] = "1"
    p = probe(d, "blue-1", "10.2.0.10")
    assert all(h.ok for h in walk(d, facts, p))  # symmetric: strict is fine
    facts.state.add_route(RouteEntry(scope="router", dst=ipaddress.ip_network("10.1.0.10/32"), dev="eth-red"))
    facts = Facts(facts.state, facts.topology, {}, facts.sysctls)  # (facts are indexed once, on their first walk)
    assert broken(walk(d, facts, p)) == ("dropped at router: rp_filter is strict and the way back to 10.1.0.10 "
                                         "is not through eth-blue")


def test_lookup_prefers_the_longest_prefix_then_the_lowest_metric():
    d = deployment("docker0")
    live = as_live(d.desired)
    route = lookup(live, "nginx-1", ipaddress.ip_address("172.17.0.3"))
    assert (route.connected, route.dev) == (True, "eth0")
    route = lookup(live, "nginx-1", ipaddress.ip_address("192.0.2.1"))
    assert (route.connected, str(route.via)) == (False, "172.17.0.1")


DESIGNS = """apiVersion: topoctl/v1
kind: Topology
name: chk
hosts:
  local: {address: 192.0.2.2/24, gateway: 192.0.2.1}
bridges:
  docker0: {addresses: [172.17.0.1/16], masquerade: true, icc: false}
  br1: {addresses: [172.18.0.1/16], isolated: true}
namespaces:
  web:
    routes: [{to: default, via: 172.17.0.1}]
    ports: ["8080:80", "127.0.0.1:5353:53/udp"]
    firewall:
      inbound: {default: drop, allow: [{proto: tcp, port: 80}, {proto: icmp}, {from: 172.17.0.0/16, proto: udp, port: 53}]}
  db:
    routes: [{to: default, via: 172.17.0.1}]
  other:
    routes: [{to: default, via: 172.18.0.1}]
links:
  - type: veth
    endpoints: [{namespace: web, name: eth0, addresses: [172.17.0.2/16]}, {bridge: docker0, name: veth-web}]
  - type: veth
    endpoints: [{namespace: db, name: eth0, addresses: [172.17.0.3/16]}, {bridge: docker0, name: veth-db}]
  - type: veth
    endpoints: [{namespace: other, name: eth0, addresses: [172.18.0.2/16]}, {bridge: br1, name: veth-other}]
"""


def test_the_design_says_what_icc_isolation_and_firewalls_block():
    topology = load_text(DESIGNS, "chk.yaml")
    probes = {p.label(): (p.expect, p.why) for p in design_probes(topology, realise(topology, None, True))}
    assert probes == {
        "web -> gateway 172.17.0.1 (icmp)": (True, ""),
        "db -> gateway 172.17.0.1 (icmp)": (True, ""),
        "other -> gateway 172.18.0.1 (icmp)": (True, ""),
        "web -> db 172.17.0.3 (icmp)": (False, "icc: false on bridge docker0"),
        "web -> other 172.18.0.2 (icmp)": (False, "bridge br1 is isolated"),
        "db -> other 172.18.0.2 (icmp)": (False, "bridge br1 is isolated"),
        "other -> web 172.17.0.2 (icmp)": (False, "bridge br1 is isolated"),
        "host local -> port 8080 of host local 192.0.2.2 (tcp/8080)": (True, ""),
        "host local -> port 5353 of host local 127.0.0.1 (udp/5353)": (True, ""),
        "web -> the outside (gateway) 192.0.2.1 (icmp)": (True, ""),
        "host local -> web 172.17.0.2 (tcp/80)": (True, ""),
        "host local -> web 172.17.0.2 (icmp)": (True, ""),
        "host local -> web 172.17.0.2 (udp/53)": (True, ""),
        "host local -> web 172.17.0.2 (tcp/9)": (False, "the inbound firewall of web"),
    }


@pytest.mark.parametrize("name", ["docker0", "routed", "vxlan-2hosts", "host-gw-3hosts", "point-to-point"])
def test_every_example_has_probes_and_all_pass_on_its_own_design(name):
    d = deployment(name)
    probes = design_probes(d.topology, d.realisation)
    assert probes and all(p.expect for p in probes)
    facts = facts_of(d)
    facts.masquerading = {d.realisation.host_scope(b.host): tuple(a.network for a in b.addresses)
                          for b in d.topology.bridges if b.masquerade}
    for p in probes:
        if p.listen is None:
            assert all(h.ok for h in walk(d, facts, p)), p.label()


def test_probes_at_n_1000_are_linear():
    text = ["apiVersion: topoctl/v1\nkind: Topology\nname: big\nbridges:\n  br0: {addresses: [10.128.0.1/16]}\n"
            "namespaces:\n"]
    text += [f"  c{i}: {{routes: [{{to: default, via: 10.128.0.1}}]}}\n" for i in range(1000)]
    text += ["links:\n"] + [f"  - {{type: veth, endpoints: [{{namespace: c{i}, name: eth0, addresses: "
                            f"[{ipaddress.ip_address('10.128.0.2') + i}/16]}}, {{bridge: br0, name: v{i}}}]}}\n"
                            for i in range(1000)]
    topology = load_text("".join(text), "big.yaml")
    probes = design_probes(topology, realise(topology, None, True))
    assert len([p for p in probes if p.group == "gateway"]) == 1000
    assert len([p for p in probes if p.group == "peer"]) == 1000
    assert {p.source for p in probes} >= {Place("local", "c0")}


def test_the_kernels_own_route_lookup_wins_over_the_main_table():
    d = deployment("docker0")
    facts = facts_of(d)
    p = probe(d, "nginx-1", "192.0.2.1")
    target = ipaddress.ip_address("192.0.2.1")
    facts.kernel_routes[("nginx-1", target)] = ("eth0", ipaddress.ip_address("172.17.0.1"))
    assert all(h.ok for h in walk(d, facts, p) if h.scope == "nginx-1")  # the same answer: nothing to say
    facts = facts_of(d)
    facts.kernel_routes[("nginx-1", target)] = ("eth0", ipaddress.ip_address("172.17.0.9"))
    assert broken(walk(d, facts, p)) == ("the kernel routes 192.0.2.1 in nginx-1 via 172.17.0.9 dev eth0 (ip route "
                                         "get), not by the main table's 0.0.0.0/0 dev eth0: a policy rule or a more "
                                         "specific route elsewhere")
    facts = facts_of(d)
    facts.kernel_routes[("nginx-1", target)] = None
    assert broken(walk(d, facts, p)).startswith("the kernel has no route to 192.0.2.1 in nginx-1 (ip route get)")


def test_an_explicit_mtu_on_a_bridge_gets_a_full_size_probe():
    text = DESIGNS.replace("  br1: {addresses: [172.18.0.1/16], isolated: true}", "  br1: {addresses: [172.18.0.1/16], mtu: 9000}") \
                  .replace("{namespace: other, name: eth0, addresses: [172.18.0.2/16]}",
                           "{namespace: other, name: eth0, mtu: 9000, addresses: [172.18.0.2/16]}") \
                  .replace("{bridge: br1, name: veth-other}", "{bridge: br1, name: veth-other, mtu: 9000}")
    text += "  - type: veth\n    endpoints: [{namespace: db2, name: eth0, mtu: 9000, addresses: [172.18.0.3/16]}, " \
            "{bridge: br1, name: veth-db2, mtu: 9000}]\n"
    text = text.replace("  other:\n", "  db2: {}\n  other:\n")
    topology = load_text(text, "chk.yaml")
    sized = [p for p in design_probes(topology, realise(topology, None, True)) if p.group == "path-mtu"]
    assert [(p.source_label, str(p.target), p.size) for p in sized] == [("other", "172.18.0.3", 9000 - 28)]


def test_a_bridge_port_that_stp_keeps_from_forwarding_is_named():
    d = deployment("docker0")
    facts = facts_of(d)
    key = ("docker0-local", "veth-nginx2")
    facts.state.links[key] = replace(facts.state.links[key], port_state=2)
    assert broken(walk(d, facts, probe(d, "nginx-1", "172.17.0.3"))) == (
        "port veth-nginx2 of bridge docker0 in docker0-local is in STP state learning: it does not forward")
    facts = facts_of(d)
    facts.state.links[key] = replace(facts.state.links[key], port_state=3)
    assert all(h.ok for h in walk(d, facts, probe(d, "nginx-1", "172.17.0.3")) if h.scope != "docker0-underlay")
