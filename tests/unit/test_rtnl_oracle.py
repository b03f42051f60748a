"""Every request topoctl builds, decoded by pyroute2's own message classes (the test oracle) and
compared with what was meant. The requests are made by kernel.execute() on a Kernel whose
sockets are fakes that acknowledge everything and answer lookups by name; no root."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from topoctl.kernel import executors as kernel_module
from topoctl.kernel import namespaces as netns
from topoctl.kernel import rtnl
from topoctl.core.actions import (
    AddAddress,
    AddFdb,
    AddNeighbour,
    AddRoute,
    Change,
    CreateBridge,
    CreateVeth,
    CreateVxlan,
    DeleteAddress,
    DeleteFdb,
    DeleteLink,
    DeleteNeighbour,
    DeleteRoute,
    ReplaceRoute,
    SetLink,
)
from topoctl.kernel.executors import execute
from topoctl.kernel.sockets import Kernel
from topoctl.core.state import Address, Fdb, Link, Neighbour, RouteEntry, Vxlan, owner_alias

from .nlfake import HEADER, FakeSocket, ack, link

CLASSES = {16: ifinfmsg, 17: ifinfmsg, 18: ifinfmsg, 20: ifaddrmsg, 21: ifaddrmsg, 24: rtmsg, 25: rtmsg,
           28: ndmsg, 29: ndmsg}
INDEXES = {"ns1": {"br0": 7, "br9": 21, "veth-a": 11, "vx0": 12, "underlay0": 9, "eth0": 2},
           "ns2": {"eth0": 3}}
CREATE_EXCL = rtnl.F_REQUEST | rtnl.F_ACK | rtnl.F_CREATE | rtnl.F_EXCL
F_SET = rtnl.F_REQUEST | rtnl.F_ACK
MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


class KernelSocket(FakeSocket):
    """Acknowledges every request; answers a lookup by name with that link's index."""

    def __init__(self, indexes: dict[str, int]) -> None:
        super().__init__()
        self.indexes = indexes

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        _, kind, _, seq, _ = HEADER.unpack_from(data)
        if kind == rtnl.RTM_GETLINK:
            name = rtnl.attrs(data, 32, len(data))[rtnl.IFLA_IFNAME].tobytes().rstrip(b"\0").decode()
            self.queue.append(link(self.indexes[name], name, seq=seq, flags=0))
        else:
            self.queue.append(ack(seq=seq))
        return len(data)


@pytest.fixture
def kernel(monkeypatch):
    opened = []

    def open_netns(name):  # a descriptor to send as IFLA_NET_NS_FD: any will do here
        opened.append(os.open("/dev/null", os.O_RDONLY))
        return opened[-1]

    monkeypatch.setattr(netns, "open_netns", open_netns)
    # A MAC change is sent from inside its namespace with announcements on (sysctls there):
    # here only the request is wanted, made on the fake socket.
    monkeypatch.setattr(netns, "run_in_netns", lambda scope, fn: fn())
    monkeypatch.setattr(kernel_module, "_announcing", lambda name, request: request())
    with Kernel() as k:
        for scope, indexes in INDEXES.items():
            k.take_socket(scope, rtnl.Rtnl(KernelSocket(indexes)))
        k.remember("ns1", {n: i for n, i in INDEXES["ns1"].items() if n in ("br0", "underlay0", "eth0")})
        k.opened = opened
        yield k


def decoded(sent: list[bytes]) -> list:
    """The changes among these requests (lookups left out), decoded by pyroute2."""
    out = []
    for data in sent:
        msg = CLASSES[HEADER.unpack_from(data)[1]](data)
        msg.decode()
        if msg["header"]["type"] != rtnl.RTM_GETLINK:
            out.append(msg)
    return out


def requests(kernel: Kernel, action, scope: str = "ns1") -> list:
    """The changes sent in `scope` to carry out `action`, decoded by pyroute2."""
    sock = kernel.rtnl(scope).sock
    before = len(sock.sent)
    execute(kernel, action, "t")
    return decoded(sock.sent[before:])


def nested(msg, *names):
    for name in names:
        msg = msg.get_attr(name)
    return msg


def test_a_bridge_is_created_with_a_provisional_mtu_then_finished(kernel):
    bridge = Link("ns1", "br9", "bridge", up=True, mtu=1400, mac=MAC1, stp=True)
    create, finish = requests(kernel, CreateBridge(bridge))
    assert create["header"]["type"] == rtnl.RTM_NEWLINK and create["header"]["flags"] == CREATE_EXCL
    assert create.get_attr("IFLA_IFNAME") == "br9" and create.get_attr("IFLA_MTU") == 1399
    assert create.get_attr("IFLA_ADDRESS") == MAC1
    assert nested(create, "IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge"
    assert nested(create, "IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_STP_STATE") == 1
    assert finish["header"]["flags"] == F_SET and finish["index"] == 21
    assert finish["flags"] & 1 and finish["change"] & 1  # IFF_UP, and only it changes
    assert finish.get_attr("IFLA_IFALIAS") == owner_alias("t") and finish.get_attr("IFLA_MTU") == 1400


def test_a_veth_pair_across_namespaces(kernel):
    a = Link("ns1", "veth-a", "veth", up=True, mtu=1500, mac=MAC1, master="br0", peer=("ns2", "eth0"))
    b = Link("ns2", "eth0", "veth", up=False, mac=MAC2, peer=("ns1", "veth-a"))
    create, finish_a = requests(kernel, CreateVeth(a, b))
    assert create.get_attr("IFLA_IFNAME") == "veth-a" and create.get_attr("IFLA_ADDRESS") == MAC1
    assert create.get_attr("IFLA_MTU") == 1500 and nested(create, "IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
    peer = nested(create, "IFLA_LINKINFO", "IFLA_INFO_DATA", "VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0" and peer.get_attr("IFLA_ADDRESS") == MAC2
    assert peer.get_attr("IFLA_NET_NS_FD") == kernel.opened[0]
    assert finish_a["index"] == 11 and finish_a.get_attr("IFLA_MASTER") == 7
    (finish_b,) = decoded(kernel.rtnl("ns2").sock.sent)
    assert finish_b["index"] == 3 and not finish_b["flags"] & 1 and finish_b["change"] & 1  # set down
    assert finish_b.get_attr("IFLA_IFALIAS") == owner_alias("t")


@pytest.mark.parametrize("local", ["10.0.0.1", "fd00::1"])
def test_a_vxlan_device(kernel, local):
    vx = Link("ns1", "vx0", "vxlan", mtu=1450, mac=MAC1,
              vxlan=Vxlan(vni=42, port=8472, local=ipaddress.ip_address(local), learning=False, underlay="underlay0"))
    create, finish = requests(kernel, CreateVxlan(vx))
    data = nested(create, "IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert nested(create, "IFLA_LINKINFO", "IFLA_INFO_KIND") == "vxlan"
    assert data.get_attr("IFLA_VXLAN_ID") == 42 and data.get_attr("IFLA_VXLAN_PORT") == 8472
    assert data.get_attr("IFLA_VXLAN_LEARNING") == 0 and data.get_attr("IFLA_VXLAN_LINK") == 9
    assert data.get_attr("IFLA_VXLAN_LOCAL" if ":" not in local else "IFLA_VXLAN_LOCAL6") == local
    assert create.get_attr("IFLA_MTU") == 1450 and finish["index"] == 12


def test_link_changes(kernel):
    bridge = Link("ns1", "br0", "bridge", mtu=1400, mac=MAC2, stp=True)
    stp, rest = requests(kernel, SetLink(bridge, (Change("mtu", 1500, 1400), Change("mac", MAC1, MAC2),
                                                  Change("up", False, True), Change("stp", False, True))))
    assert stp["index"] == 7 and nested(stp, "IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge"
    assert nested(stp, "IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_STP_STATE") == 1
    assert rest["index"] == 7 and rest.get_attr("IFLA_MTU") == 1400 and rest.get_attr("IFLA_ADDRESS") == MAC2
    assert rest["flags"] & 1 and rest["change"] & 1 and rest["header"]["flags"] == F_SET

    port = Link("ns1", "eth0", "veth")
    (detach,) = requests(kernel, SetLink(port, (Change("master", "br0", None), Change("up", True, False))))
    assert detach.get_attr("IFLA_MASTER") == 0 and not detach["flags"] & 1 and detach["change"] & 1

    vx = Link("ns1", "underlay0", "vxlan", vxlan=Vxlan(vni=1, port=4789))
    (change,) = requests(kernel, SetLink(vx, (Change("local", None, ipaddress.ip_address("10.0.0.9")),
                                              Change("learning", True, False), Change("underlay", None, "eth0"))))
    data = nested(change, "IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert data.get_attr("IFLA_VXLAN_LOCAL") == "10.0.0.9" and data.get_attr("IFLA_VXLAN_LEARNING") == 0
    assert data.get_attr("IFLA_VXLAN_LINK") == 2 and change["change"] == 0  # up is not touched


def test_a_link_deletion(kernel):
    (delete,) = requests(kernel, DeleteLink(Link("ns1", "br0", "bridge")))
    assert delete["header"]["type"] == rtnl.RTM_DELLINK and delete["index"] == 7
    assert delete["header"]["flags"] == F_SET


@pytest.mark.parametrize("text, family, nodad", [("10.1.0.2/24", socket.AF_INET, 0),
                                                 ("fd00:1::2/64", socket.AF_INET6, 0x02)])
def test_addresses(kernel, text, family, nodad):
    address = Address("ns1", "br0", ipaddress.ip_interface(text))
    (add,) = requests(kernel, AddAddress(address))
    (delete,) = requests(kernel, DeleteAddress(address))
    for msg, kind, flags in ((add, rtnl.RTM_NEWADDR, CREATE_EXCL), (delete, rtnl.RTM_DELADDR, F_SET)):
        assert msg["header"]["type"] == kind and msg["header"]["flags"] == flags
        assert (msg["family"], msg["prefixlen"], msg["index"]) == (family, address.interface.network.prefixlen, 7)
        assert msg.get_attr("IFA_LOCAL") == msg.get_attr("IFA_ADDRESS") == str(address.interface.ip)
    assert add["flags"] == nodad and delete["flags"] == 0


ROUTES = [
    RouteEntry("ns1", ipaddress.ip_network("10.2.0.0/16"), via=ipaddress.ip_address("10.1.0.1"), dev="br0", metric=100),
    RouteEntry("ns1", ipaddress.ip_network("0.0.0.0/0"), via=ipaddress.ip_address("10.1.0.1")),
    RouteEntry("ns1", ipaddress.ip_network("10.3.0.0/16"), dev="br0", table=1000),
    RouteEntry("ns1", ipaddress.ip_network("fd00:9::/48"), via=ipaddress.ip_address("fd00::1"), dev="br0",
               metric=1024, onlink=True),
]


@pytest.mark.parametrize("route", ROUTES, ids=["via-dev", "default", "table-1000", "ipv6-onlink"])
@pytest.mark.parametrize("verb", ["add", "replace", "change", "del"])
def test_routes(kernel, route, verb):
    action = {"add": AddRoute(route), "replace": AddRoute(route, replace=True),
              "change": ReplaceRoute(route, route), "del": DeleteRoute(route)}[verb]
    (msg,) = requests(kernel, action)
    kind, flags = {"add": (rtnl.RTM_NEWROUTE, CREATE_EXCL), "del": (rtnl.RTM_DELROUTE, F_SET)}.get(
        verb, (rtnl.RTM_NEWROUTE, F_SET | rtnl.F_CREATE | rtnl.F_REPLACE))
    assert msg["header"]["type"] == kind and msg["header"]["flags"] == flags
    family = socket.AF_INET6 if route.dst.version == 6 else socket.AF_INET
    assert (msg["family"], msg["dst_len"], msg["proto"]) == (family, route.dst.prefixlen, route.proto)
    assert msg.get_attr("RTA_TABLE") == route.table and msg["table"] == (route.table if route.table < 256 else 252)
    assert msg.get_attr("RTA_PRIORITY") == route.metric
    assert msg.get_attr("RTA_DST") == (str(route.dst.network_address) if route.dst.prefixlen else None)
    if verb == "del":  # matched by its key alone, in any scope
        assert msg["scope"] == 255 and msg["type"] == 0 and msg.get_attr("RTA_GATEWAY") is None
        assert msg.get_attr("RTA_OIF") is None and msg["flags"] == 0
    else:
        assert msg["type"] == 1 and msg["scope"] == (0 if route.via is not None else 253)
        assert msg.get_attr("RTA_GATEWAY") == (str(route.via) if route.via is not None else None)
        assert msg.get_attr("RTA_OIF") == (7 if route.dev == "br0" else None)
        assert msg["flags"] == (0x04 if route.onlink else 0)


@pytest.mark.parametrize("ip", ["10.0.0.2", "fd00::2"])
def test_neighbours(kernel, ip):
    neighbour = Neighbour("ns1", "underlay0", ipaddress.ip_address(ip), MAC1)
    (add,) = requests(kernel, AddNeighbour(neighbour))
    (delete,) = requests(kernel, DeleteNeighbour(neighbour))
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    assert add["header"]["flags"] == F_SET | rtnl.F_CREATE | rtnl.F_REPLACE and add.get_attr("NDA_LLADDR") == MAC1
    assert delete["header"]["type"] == rtnl.RTM_DELNEIGH and delete.get_attr("NDA_LLADDR") is None
    for msg in (add, delete):
        assert (msg["family"], msg["ifindex"], msg["state"]) == (family, 9, rtnl.NUD_PERMANENT)
        assert msg.get_attr("NDA_DST") == ip


def test_fdb_entries(kernel):
    entry = Fdb("ns1", "underlay0", MAC2, ipaddress.ip_address("192.168.7.2"))
    (add,) = requests(kernel, AddFdb(entry))
    (delete,) = requests(kernel, DeleteFdb(entry))
    assert add["header"]["type"] == rtnl.RTM_NEWNEIGH and delete["header"]["type"] == rtnl.RTM_DELNEIGH
    assert add["header"]["flags"] == F_SET | rtnl.F_CREATE | rtnl.F_APPEND and delete["header"]["flags"] == F_SET
    for msg in (add, delete):
        assert (msg["family"], msg["ifindex"], msg["flags"]) == (rtnl.AF_BRIDGE, 9, rtnl.NTF_SELF)
        assert msg["state"] == rtnl.NUD_PERMANENT | rtnl.NUD_NOARP
        assert msg.get_attr("NDA_LLADDR") == MAC2 and msg.get_attr("NDA_DST") == "192.168.7.2"


def test_every_request_is_well_framed_for_the_kernel(kernel):
    """Lengths add up and attributes are padded: what pyroute2 decodes is the whole request."""
    requests(kernel, CreateVxlan(Link("ns1", "vx0", "vxlan", vxlan=Vxlan(vni=7, port=4789))))
    for data in kernel.rtnl("ns1").sock.sent:
        length, kind = struct.unpack_from("=IH", data)
        assert length == len(data) and length % 4 == 0
        msg = CLASSES[kind](data)
        msg.decode()
        assert msg["header"]["length"] == length
