"""topoctl's own rtnetlink codec reads what pyroute2 reads: pyroute2 is the reference."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from pyroute2 import IPRoute

from topoctl.kernel import namespaces as ns
from topoctl.kernel.rtnl import AF_BRIDGE, NetlinkError, Rtnl

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
        from topoctl.kernel.rtnl import IFLA_VXLAN_ID, attr_u32

        with pytest.raises(NetlinkError) as refused:
            ours.link_set(index, kind="vxlan", data=attr_u32(IFLA_VXLAN_ID, 9))
        assert "Cannot change VNI" in refused.value.message  # the uncapped layout: the whole request quoted
        ours.sock.setsockopt(270, 10, 1)  # NETLINK_CAP_ACK: the capped layout, the request's header only
        with pytest.raises(NetlinkError) as refused:
            ours.link_set(index, kind="vxlan", data=attr_u32(IFLA_VXLAN_ID, 9))
        assert "Cannot change VNI" in refused.value.message
        assert ours.link_index("no-such-link") is None
    finally:
        ours.close()


@pytest.mark.parametrize("lost", [False, True], ids=["between reads", "with a datagram lost"])
def test_a_dump_interrupted_part_way_leaves_the_socket_usable(sandbox_factory, monkeypatch, lost):
    """Ctrl-C or SIGTERM between a dump's request and its end (a verification plan
    interrupted, then the rollback reads on the same sockets): the next dump must not be
    refused with EBUSY, even if the interruption lost the datagram that held the dump's end."""
    from topoctl.kernel import rtnl

    box = sandbox_factory(many_ports(60))  # a links dump of several datagrams
    box.apply()
    host = box.host("local")
    ours, _ = both(host)
    expected = ours.links()
    real = rtnl._receive

    def interrupted(sock):
        if lost:
            real(sock)  # the datagram is read, then lost with the interruption
        raise KeyboardInterrupt

    monkeypatch.setattr(rtnl, "_receive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ours.links()
    monkeypatch.setattr(rtnl, "_receive", real)
    assert ours.unfinished
    assert ours.links() == expected
    assert ours.addresses() and not ours.unfinished
    ours.close()


def many_ports(n: int) -> dict:
    return {
        "apiVersion": "topoctl/v1", "kind": "Topology", "name": "ports",
        "bridges": {"br0": {}},
        "namespaces": {f"c{i}": {} for i in range(n)},
        "links": [{"type": "veth", "endpoints": [{"namespace": f"c{i}", "name": "eth0"},
                                                  {"bridge": "br0", "name": f"v{i}"}]} for i in range(n)],
    }


def test_a_refused_read_is_a_topoctl_error_not_a_traceback(sandbox_factory, monkeypatch):
    import errno

    box = sandbox_factory("docker0.yaml")
    box.apply()

    def refused(self):
        raise NetlinkError(errno.EBUSY)

    monkeypatch.setattr(Rtnl, "addresses", refused)
    from topoctl.run.context import Context, realise
    from topoctl.errors import KernelError
    from topoctl.kernel.sockets import Kernel
    from topoctl.spec.loader import load_file

    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    with Kernel() as kernel, pytest.raises(KernelError, match="reading the interfaces, addresses and routes of .*busy"):
        context.plan(kernel)


def test_a_dump_the_kernel_ends_with_an_error_is_a_kernel_error(sandbox_factory):
    """With strict checking, a dump filter the kernel does not support ends the dump with an
    error in its NLMSG_DONE (and the reason in its extended ack): once read as an empty table."""
    from topoctl.kernel import rtnl
    from topoctl.errors import KernelError

    box = sandbox_factory(many_ports(2))
    box.apply()
    ours, ref = both(box.ns("c0"))
    ref.close()
    try:
        ours._strict()
        with pytest.raises(KernelError, match=r"reading the interfaces: the kernel ended the dump with an error: "
                                              r"Invalid argument \(.*link dump"):
            ours.dump(rtnl.RTM_GETLINK, rtnl.ifinfo(index=1), rtnl._link)
        assert not ours.unfinished
        assert {link.name for link in ours.links()} == {"lo", "eth0"}  # the socket is still usable
    finally:
        ours.close()


class _NoStrictChecking:
    """A real socket whose owner's kernel refuses NETLINK_GET_STRICT_CHK (as before Linux 4.20)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def setsockopt(self, level, option, value):
        if (level, option) == (270, 12):
            raise OSError(92, "Protocol not available")
        return self._sock.setsockopt(level, option, value)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_without_strict_checking_the_main_table_is_filtered_here(sandbox_factory):
    box = sandbox_factory(many_ports(2))
    box.apply()
    host = box.host("local")
    ours, ref = both(host)
    plain = Rtnl(_NoStrictChecking(ns.run_in_netns(host, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))))
    try:
        main = plain.routes(254)
        assert plain.strict is False and {r.table for r in main} == {254}
        assert main == ours.routes(254)  # what a strict kernel filters, read on a strict socket
        assert {(r.family, r.dst_len, r.oif) for r in main} == {
            (m["family"], m["dst_len"], m.get("oif")) for m in ref.route("dump") if m.get("table") == 254}
    finally:
        ours.close()
        ref.close()
        plain.close()
