"""core.assemble from recorded dumps (tests/unit/data: one namespace with lo, a bridge br0 marked
topoctl:fuzz, a veth pair v1 (a port of br0) / v0, a VXLAN device vx0 over v0), facts in,
State out, as pyinfra tests its facts: no root, no socket."""

from __future__ import annotations

import ipaddress

import pytest

from topoctl.core.assemble import Owner, Readings, assemble, sysctls_to_read, vxlan_devices
from topoctl.core.state import ROUTE_PROTO, route_record_key
from topoctl.kernel import rtnl
from topoctl.paths import route_record_name

from .nlfake import FakeSocket, load


def dumped(name: str, method: str, *args):
    grams = load(name)
    return getattr(rtnl.Rtnl(FakeSocket(lambda seq, request: grams)), method)(*args)


@pytest.fixture(scope="module")
def tables():
    return dumped("links.bin", "links"), dumped("addresses.bin", "addresses"), dumped("routes.bin", "routes")


def readings(tables, scope="ns1", owner=Owner("fuzz", "local", "container"), **more) -> Readings:
    namespaces = {scope: owner} if scope is not None else {}
    return Readings(namespaces=namespaces, tables={scope: tables}, **more)


def test_links_are_assembled_with_kinds_masters_peers_and_marks(tables):
    state = assemble(readings(tables), "fuzz")
    links = {name: link for (scope, name), link in state.links.items()}
    assert sorted(links) == ["br0", "lo", "v0", "v1", "vx0"] and state.scopes == {"ns1"}
    assert links["lo"].kind == "loopback" and links["lo"].mac is None
    assert links["br0"].kind == "bridge" and links["br0"].owner == "fuzz" and links["br0"].stp is True
    assert links["v1"].master == "br0" and links["v1"].peer == ("ns1", "v0") and links["v0"].peer == ("ns1", "v1")
    assert links["v1"].owner is None and links["v0"].mac == "ca:5f:f1:5c:09:99"
    vx = links["vx0"].vxlan
    assert (vx.vni, vx.port, str(vx.local), vx.learning, vx.underlay) == (42, 4789, "10.99.0.1", False, "v0")
    assert state.namespaces["ns1"].owner == "fuzz" and state.namespaces["ns1"].host == "local"


def test_addresses_of_both_families_are_kept_and_named_by_their_link(tables):
    state = assemble(readings(tables), "fuzz")
    on = {(a.link, str(a.interface)) for a in state.addresses}
    assert {("br0", "10.98.0.1/24"), ("v0", "10.99.0.1/24"), ("v0", "fd00:99::1/64"), ("lo", "127.0.0.1/8")} <= on
    assert all(a.scope == "ns1" for a in state.addresses)


def test_only_main_table_unicast_routes_not_made_by_the_kernel_are_read(tables):
    state = assemble(readings(tables), "fuzz")
    routes = {(str(r.dst), str(r.via), r.dev, r.metric, r.proto) for r in state.routes.values()}
    assert routes == {("10.97.0.0/16", "10.99.0.2", "v0", 10, ROUTE_PROTO),
                      ("fd00:97::/48", "fd00:99::2", "v0", 1024, ROUTE_PROTO)}  # table 100 and kernel routes left out


def test_a_route_in_our_namespace_is_ours_only_through_our_links(tables):
    links, addresses, routes = tables
    state = assemble(readings(tables), "fuzz")
    assert {r.owner for r in state.routes.values()} == {None}  # they leave through v0, which is not marked
    marked = [m._replace(alias="topoctl:fuzz") if m.name == "v0" else m for m in links]
    state = assemble(readings((marked, addresses, routes)), "fuzz")
    assert {r.owner for r in state.routes.values()} == {"fuzz"}
    state = assemble(readings((marked, addresses, routes), owner=None), "fuzz")  # the namespace is not ours
    assert {r.owner for r in state.routes.values()} == {None} and state.namespaces["ns1"].owner is None


def test_a_root_route_is_ours_when_it_is_recorded(tables):
    state = assemble(readings(tables, scope=None), "fuzz")
    route = next(r for r in state.routes.values() if r.dst == ipaddress.ip_network("10.97.0.0/16"))
    assert route.owner is None and route.scope is None
    recorded = {route_record_name(route_record_key(route))}
    state = assemble(readings(tables, scope=None, root_routes=recorded), "fuzz")
    assert {str(r.dst): r.owner for r in state.routes.values()} == {"10.97.0.0/16": "fuzz", "fd00:97::/48": None}


def test_the_vxlan_tables_of_our_devices_only_are_assembled(tables):
    links, addresses, routes = tables
    fdb = dumped("fdb.bin", "neighbours", rtnl.AF_BRIDGE)
    assert vxlan_devices({"ns1": tables}, "fuzz") == {}  # vx0 carries no mark
    marked = [m._replace(alias="topoctl:fuzz") if m.name == "vx0" else m for m in links]
    assert vxlan_devices({"ns1": (marked, addresses, routes)}, "fuzz") == {("ns1", 5): "vx0"}
    state = assemble(readings((marked, addresses, routes), neighbours={"ns1": ((), fdb)}), "fuzz")
    assert {(f.dev, f.mac, str(f.dst)) for f in state.fdb} == {("vx0", "02:00:00:00:00:07", "10.99.0.7")}
    state = assemble(readings(tables, neighbours={"ns1": ((), fdb)}), "fuzz")
    assert state.fdb == set()


def test_veth_peers_whose_indexes_collide_are_told_apart_by_netnsid(tables):
    links, addresses, routes = tables
    # the same pair of indexes in three namespaces, each veth end's peer said to be elsewhere (nsid 7)
    same = [m._replace(link_netnsid=7) if m.kind == "veth" else m for m in links]
    asked: list[tuple] = []

    def nsid_of(seen_from, target):  # x and y call each other 7; z is 8 to both
        asked.append((seen_from, target))
        return 7 if {seen_from, target} == {"x", "y"} else 8

    state = assemble(Readings(namespaces={"x": None, "y": None, "z": None},
                              tables={s: (same, (), ()) for s in "xyz"}, nsid_of=nsid_of), "fuzz")
    assert state.links[("x", "v1")].peer == ("y", "v0") and state.links[("y", "v0")].peer == ("x", "v1")
    assert state.links[("z", "v1")].peer is None  # no namespace it calls 7
    assert ("x", "y") in asked and ("x", "z") in asked
    asked.clear()
    assemble(readings(tables, nsid_of=nsid_of), "fuzz")
    assert asked == []  # no collision in one namespace: nothing asked


def test_the_sysctls_read_are_the_wanted_ones_and_those_written_before():
    namespaces = {"ns1": Owner("fuzz", "local", "container", ("net.ipv4.ip_forward",)),
                  "other": Owner("else", "local", "container", ("net.ipv6.conf.all.forwarding",))}
    wanted = [("ns1", "net.ipv4.conf.all.rp_filter"), ("gone", "net.ipv4.ip_forward")]
    assert sysctls_to_read(namespaces, ["ns1", "other"], wanted, "fuzz") == [
        ("ns1", "net.ipv4.conf.all.rp_filter"), ("ns1", "net.ipv4.ip_forward")]
    state = assemble(Readings(namespaces=namespaces, tables={}, sysctls={("ns1", "net.ipv4.ip_forward"): "1"}), "fuzz")
    assert state.sysctls == {("ns1", "net.ipv4.ip_forward"): "1"}
