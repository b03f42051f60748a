"""topoctl's own rtnetlink codec reads what pyroute2 reads: pyroute2 is the reference."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from pyroute2 import IPRoute

from topoctl import netns as ns
from topoctl.rtnl import AF_BRIDGE, NetlinkError, Rtnl

pytestmark = pytest.mark.root


def both(scope: str) -> tuple[Rtnl, IPRoute]:
    ours = Rtnl(ns.run_in_netns(scope, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)))
    theirs = ns.run_in_netns(scope, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))
    return ours, IPRoute(fileno=theirs.detach())


def test_dumps_match_pyroute2(sandbox_factory):
    box = sandbox_factory("vxlan-2hosts.yaml")
    box.apply()
    for scope in (box.host("node1"), box.ns("web-1"), box.host("underlay")):
        ours, ref = both(scope)
        try:
            links = {m.index: m for m in ours.links()}
            for msg in ref.link("dump"):
                mine = links[msg["index"]]
                assert mine.name == msg.get("ifname")
                assert mine.mtu == msg.get("mtu")
                assert (mine.mac or "00:00:00:00:00:00") == msg.get("address")
                assert mine.master == (msg.get("master") or 0)
                assert mine.alias == msg.get("ifalias")
                assert mine.kind == msg.get(("linkinfo", "kind"))
                assert mine.link_netnsid == msg.get("link_netnsid")
                if mine.kind == "veth":
                    assert mine.link == msg.get("link")
                if mine.kind == "vxlan":
                    vni, port, local, learning, underlay = mine.vxlan
                    data = ("linkinfo", "data")
                    assert vni == msg.get(data + ("vxlan_id",)) and port == msg.get(data + ("vxlan_port",))
                    assert str(ipaddress.ip_address(local)) == msg.get(data + ("vxlan_local",))
                    assert learning == bool(msg.get(data + ("vxlan_learning",)))
                    assert underlay == msg.get(data + ("vxlan_link",))
            assert len(links) == len(ref.link("dump"))

            addresses = {(a.index, str(ipaddress.ip_address(a.address)), a.prefixlen) for a in ours.addresses()}
            assert addresses == {(m["index"], m.get("local") or m.get("address"), m["prefixlen"]) for m in ref.addr("dump")}

            routes = {(r.family, r.dst_len, r.table, r.protocol, r.oif, r.priority,
                       str(ipaddress.ip_address(r.gateway)) if r.gateway else None) for r in ours.routes()}
            assert routes == {(m["family"], m["dst_len"], m.get("table"), m["proto"], m.get("oif"),
                               m.get("priority") or 0, m.get("gateway")) for m in ref.route("dump")}

            main = {(r.family, r.dst_len, r.oif) for r in ours.routes(254)}
            assert main == {(m["family"], m["dst_len"], m.get("oif")) for m in ref.route("dump") if m.get("table") == 254}
            assert {r.table for r in ours.routes(254)} == {254}

            fdb = {(f.ifindex, f.lladdr, str(ipaddress.ip_address(f.dst))) for f in ours.neighbours(AF_BRIDGE) if f.dst}
            assert fdb == {(m["ifindex"], m.get("lladdr"), m.get("dst")) for m in ref.fdb("dump") if m.get("dst")}
        finally:
            ours.close()
            ref.close()


def test_refusals_carry_the_kernels_words(sandbox_factory):
    box = sandbox_factory("vxlan-2hosts.yaml")
    box.apply()
    ours, ref = both(box.host("node1"))
    ref.close()
    try:
        index = ours.link_index("flannel.1")
        from topoctl.rtnl import IFLA_VXLAN_ID, attr_u32

        with pytest.raises(NetlinkError) as refused:
            ours.link_set(index, kind="vxlan", data=attr_u32(IFLA_VXLAN_ID, 9))
        assert "Cannot change VNI" in refused.value.message
        assert ours.link_index("no-such-link") is None
    finally:
        ours.close()
