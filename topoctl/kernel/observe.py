"""Read the live kernel state of every namespace a topology cares about into a State.

Each namespace's tables are dumped once (links, addresses, routes) and indexed; nothing is
looked up per object. Veth peers across namespaces are matched by ifindex pairs, and by
netnsid where ifindexes collide.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

from topoctl.kernel import namespaces as ns
from topoctl.store import records
from topoctl.kernel.sockets import Kernel
from topoctl.spec.model import IPAddress, IPInterface, IPNetwork
from topoctl.kernel.rtnl import AF_BRIDGE, LinkMsg
from topoctl.kernel.tables import read_tables
from topoctl.core.state import (
    MAIN_TABLE,
    Address,
    Fdb,
    Link,
    Neighbour,
    Netns,
    RouteEntry,
    Scope,
    State,
    Vxlan,
    owner_from_alias,
    route_record_key,
)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTPROT_KERNEL = 2
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x04
NUD_PERMANENT = 0x80
_ADDRESS = {socket.AF_INET: ipaddress.IPv4Address, socket.AF_INET6: ipaddress.IPv6Address}
_INTERFACE = {socket.AF_INET: ipaddress.IPv4Interface, socket.AF_INET6: ipaddress.IPv6Interface}
_NETWORK = {socket.AF_INET: ipaddress.IPv4Network, socket.AF_INET6: ipaddress.IPv6Network}


class _Addresses:
    """ipaddress objects made from the kernel's bytes, each value made once per run: a thousand
    containers carry the same 127.0.0.1/8, ::1/128, default route and gateway, and building an
    ipaddress object costs tens of microseconds."""

    def __init__(self) -> None:
        self._made: dict[tuple, object] = {}

    def address(self, family: int, raw: bytes) -> IPAddress:
        key = (family, raw)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = _ADDRESS[family](raw)
        return made

    def interface(self, family: int, raw: bytes, prefixlen: int) -> IPInterface:
        key = (family, raw, prefixlen, "i")
        made = self._made.get(key)
        if made is None:
            # from an int: given an address object, ipaddress would re-parse its text
            made = self._made[key] = _INTERFACE[family]((int.from_bytes(raw, "big"), prefixlen))
        return made

    def network(self, family: int, raw: bytes | None, prefixlen: int) -> IPNetwork:
        key = (family, raw, prefixlen, "n")
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = _NETWORK[family]((int.from_bytes(raw, "big") if raw else 0, prefixlen))
        return made


def _link_from(msg: LinkMsg, scope: Scope, master: str | None, peer: tuple[Scope, str] | None,
               underlay: str | None) -> Link:
    kind = msg.kind or ("loopback" if msg.flags & IFF_LOOPBACK else "unknown")
    vxlan = None
    if kind == "vxlan" and msg.vxlan is not None:
        vni, port, local, learning, _ = msg.vxlan
        vxlan = Vxlan(vni=vni, port=port, local=ipaddress.ip_address(local) if local else None, learning=learning,
                      underlay=underlay)
    return Link(
        scope=scope, name=msg.name, kind=kind, up=bool(msg.flags & IFF_UP), mtu=msg.mtu,
        mac=msg.mac if kind != "loopback" else None, master=master, peer=peer,
        stp=bool(msg.stp_state) if kind == "bridge" and msg.stp_state is not None else None,
        vxlan=vxlan, owner=owner_from_alias(msg.alias), index=msg.index,
    )


def observe(kernel: Kernel, topology: str, scopes: Iterable[Scope], sysctls: Iterable[tuple[Scope, str]] = (),
            hosts: set[str] | None = None, skim_containers: bool = False,
            half_made_ours: Iterable[str] = ()) -> State:
    """The live State of `scopes` (namespaces that do not exist are left out), as seen by `topology`.

    Ownership is filled in here: a namespace is ours when its record names this topology
    (and it is the same namespace the record was made for); a link when its alias says so;
    a route when it lies in a namespace we own, or, in the root namespace, when we recorded it.
    `skim_containers`: our container namespaces are only listed, not read (a destroy deletes
    them whole, whatever is inside). A /run/netns file that pins no namespace (a run killed
    while making it) counts as absent when this topology's record or `half_made_ours` (what an
    interrupted run of it began) names it, since its next apply or destroy removes it; any
    other is a KernelError.
    """
    state = State()
    existing = set(ns.list_netns())
    by_name = records.netns_records()
    recorded = [name for name, r in by_name.items() if r.topology == topology]
    if hosts is not None:  # acting on some hosts: other hosts' namespaces are not in view
        recorded = [n for n in recorded if by_name[n].host in hosts or not by_name[n].host]
    wanted = set(scopes) | set(recorded)
    half_made = ns.half_made(sorted(n for n in wanted if n is not None and n in existing))
    if half_made:
        ours = set(recorded) | set(half_made_ours)
        foreign = [name for name in half_made if name not in ours]
        if foreign:
            raise ns.not_a_namespace(foreign[0])
        existing.difference_update(half_made)
    for name in sorted(n for n in wanted if n is not None and n in existing):
        record = by_name.get(name)
        mine = record is not None and (record.inode == 0 or record.inode == ns.netns_inode(name))
        state.namespaces[name] = Netns(name=name, owner=record.topology if mine else None,
                                       host=record.host if mine else None, role=record.role if mine else "container")
    live_scopes = [s for s in sorted(wanted, key=lambda s: s or "") if s is None or s in existing]
    if skim_containers:
        live_scopes = [s for s in live_scopes if s is None or not (
            state.namespaces[s].owner == topology and state.namespaces[s].role == "container")]
    tables = read_tables(kernel, live_scopes, kernel.take_prefetch())
    root_routes = records.recorded_root_routes(topology) if None in live_scopes else set()

    made = _Addresses()
    pending: list[tuple[Scope, LinkMsg]] = []  # made into Links once every namespace's names are known
    names_by_scope: dict[Scope, dict[int, str]] = {}
    vxlan_devs: dict[tuple[Scope, int], str] = {}  # this topology's VXLAN devices
    for scope in live_scopes:
        state.scopes.add(scope)
        owned_scope = scope is not None and state.namespaces[scope].owner == topology
        links, addresses, routes = tables[scope]
        names: dict[int, str] = {}
        ours: set[int] = set()  # ifindexes of links this topology made, in this scope
        for msg in links:
            names[msg.index] = msg.name
            pending.append((scope, msg))
            if owner_from_alias(msg.alias) == topology:
                ours.add(msg.index)
                if msg.kind == "vxlan" and msg.vxlan is not None:
                    vxlan_devs[(scope, msg.index)] = msg.name
        names_by_scope[scope] = names
        kernel.remember(scope, {name: index for index, name in names.items()})
        for msg in addresses:
            name = names.get(msg.index)
            if name is None or msg.family not in _ADDRESS or not msg.address:
                continue
            state.addresses.add(Address(scope, name, made.interface(msg.family, msg.address, msg.prefixlen)))
        for msg in routes:
            if (msg.table != MAIN_TABLE or msg.protocol == RTPROT_KERNEL or msg.type != RTN_UNICAST
                    or msg.multipath or msg.family not in _ADDRESS):
                continue
            fields = dict(
                scope=scope, dst=made.network(msg.family, msg.dst, msg.dst_len),
                via=made.address(msg.family, msg.gateway) if msg.gateway else None,
                dev=names.get(msg.oif), metric=msg.priority, table=msg.table, proto=msg.protocol,
                onlink=bool(msg.flags & RTNH_F_ONLINK),
            )
            # In our namespaces, routes are ours unless they leave through someone else's interface.
            owned = (owned_scope and (msg.oif is None or msg.oif in ours)) or (
                scope is None and records.route_record_name(route_record_key(RouteEntry(**fields))) in root_routes)
            state.add_route(RouteEntry(**fields, owner=topology if owned else None))

    # veths by (own index, peer's index): every container's eth0 may be index 2, so an index
    # alone would make this quadratic.
    veths_by_pair: dict[tuple[int, int], list[tuple[Scope, str]]] = {}
    for scope, msg in pending:
        if msg.kind == "veth" and msg.link:
            veths_by_pair.setdefault((msg.index, msg.link), []).append((scope, msg.name))
    for scope, msg in pending:
        names = names_by_scope[scope]
        master = (names.get(msg.master) or f"#{msg.master}") if msg.master else None
        underlay = names.get(msg.vxlan[4]) if msg.vxlan is not None and msg.vxlan[4] else None
        peer = _find_peer(kernel, scope, msg, veths_by_pair) if msg.kind == "veth" and msg.link else None
        state.add_link(_link_from(msg, scope, master, peer, underlay))

    for scope in {scope for scope, _ in vxlan_devs}:
        _read_vxlan_tables(kernel, scope, vxlan_devs, state)
    wanted_sysctls = {(s, k) for s, k in sysctls if s in state.scopes}
    for name, netns in state.namespaces.items():  # and what topoctl wrote in its namespaces before
        if netns.owner == topology and name in state.scopes:
            wanted_sysctls.update((name, key) for key in by_name[name].sysctls)
    state.sysctls.update(kernel.read_sysctls(sorted(wanted_sysctls, key=lambda sk: (sk[0] or "", sk[1]))))
    return state


def _find_peer(kernel: Kernel, scope: Scope, msg: LinkMsg,
               veths_by_pair: dict[tuple[int, int], list[tuple[Scope, str]]]) -> tuple[Scope, str] | None:
    """The other end of a veth: the veth at `peer_index` whose own peer index is this link's.

    ifindexes repeat across namespaces, so several veths may point at each other that way;
    only then is the peer's netnsid compared with the id this namespace gives each candidate's
    namespace (one RTM_GETNSID per pair of namespaces, cached).
    """
    peer_nsid = msg.link_netnsid
    candidates = [c for c in veths_by_pair.get((msg.link, msg.index), [])
                  if (c[0] == scope) == (peer_nsid is None)]
    if len(candidates) > 1:
        candidates = [c for c in candidates if kernel.nsid_of(scope, c[0]) == peer_nsid]
    return candidates[0] if len(candidates) == 1 else None


def _read_vxlan_tables(kernel: Kernel, scope: Scope, vxlan_devs: dict[tuple[Scope, int], str], state: State) -> None:
    """Permanent neighbours and FDB entries of this topology's VXLAN devices in one namespace."""
    handle = kernel.rtnl(scope)
    for msg in handle.neighbours():
        dev = vxlan_devs.get((scope, msg.ifindex))
        if dev is not None and msg.dst and msg.lladdr and msg.family in _ADDRESS and msg.state & NUD_PERMANENT:
            state.neighbours.add(Neighbour(scope, dev, _ADDRESS[msg.family](msg.dst), msg.lladdr))
    for msg in handle.neighbours(AF_BRIDGE):  # the devices' forwarding entries
        dev = vxlan_devs.get((scope, msg.ifindex))
        if dev is not None and msg.dst and msg.lladdr:
            state.fdb.add(Fdb(scope, dev, msg.lladdr, ipaddress.ip_address(msg.dst)))
