"""What the kernel layer read (dumped messages, records, sysctl values) -> the live State, as a
topology sees it. Pure: unit-tested from recorded dumps.

Ownership is decided here: a namespace is ours when its record names this topology; a link
when its alias says so; a route when it lies in a namespace we own and leaves through one of
our links (or none), or, in the root namespace, when we recorded it. Veth peers across
namespaces are matched by ifindex pairs, and by netnsid where ifindexes collide.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from topoctl.core.kabi import ADDRESS_FAMILIES, IFF_LOOPBACK, IFF_UP, NUD_PERMANENT, RTN_UNICAST, \
    RTNH_F_ONLINK, RTPROT_KERNEL
from topoctl.core.state import (MAIN_TABLE, Address, Fdb, Link, Neighbour, Netns, NftTable, RouteEntry, Scope, State, Vxlan,
                                owner_from_alias, route_record_key)
from topoctl.paths import route_record_name
from topoctl.spec.model import IPAddress, IPInterface, IPNetwork

_ADDRESS = {socket.AF_INET: ipaddress.IPv4Address, socket.AF_INET6: ipaddress.IPv6Address}
_INTERFACE = {socket.AF_INET: ipaddress.IPv4Interface, socket.AF_INET6: ipaddress.IPv6Interface}
_NETWORK = {socket.AF_INET: ipaddress.IPv4Network, socket.AF_INET6: ipaddress.IPv6Network}


@dataclass(frozen=True)
class Owner:
    """What a namespace's record says (for the namespace it was made for)."""

    topology: str
    host: str | None
    role: str
    sysctls: tuple[str, ...] = ()


@dataclass
class Readings:
    """One read of the live state, as the kernel layer hands it over: the messages are the
    codec's (rtnl_decode's LinkMsg, AddrMsg, RouteMsg, NeighMsg), read by attribute only."""

    namespaces: dict[str, Owner | None]  # the existing namespaces in view, with their valid record
    tables: dict[Scope, tuple[Sequence[Any], Sequence[Any], Sequence[Any]]]  # read: links, addresses, routes
    root_routes: set[str] = field(default_factory=set)  # record names of this topology's root routes
    neighbours: dict[Scope, tuple[Sequence[Any], Sequence[Any]]] = field(default_factory=dict)  # (ip, bridge fdb)
    sysctls: dict[tuple[Scope, str], str] = field(default_factory=dict)
    nsid_of: Callable[[Scope, Scope], int | None] = lambda seen_from, target: None  # asked only on collisions
    nft_tables: dict[tuple[Scope, str, str], NftTable] = field(default_factory=dict)  # topoctl's own, by key
    foreign_drops: dict[Scope, tuple[str, ...]] = field(default_factory=dict)
    foreign_tables: dict[Scope, tuple[str, ...]] = field(default_factory=dict)  # other tables, in hosts
    qdiscs: dict[tuple[Scope, str], Any] = field(default_factory=dict)  # Tbf or OTHER_QDISC, by (scope, dev)


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


def vxlan_devices(tables: dict[Scope, tuple], topology: str) -> dict[tuple[Scope, int], str]:
    """This topology's VXLAN devices in the tables read, by (scope, ifindex): whose neighbour
    and FDB tables the kernel layer reads next."""
    return {(scope, msg.index): msg.name for scope, (links, _, _) in tables.items() for msg in links
            if msg.kind == "vxlan" and msg.vxlan is not None and owner_from_alias(msg.alias) == topology}


def sysctls_to_read(namespaces: dict[str, Owner | None], scopes: Sequence[Scope], wanted: Sequence[tuple[Scope, str]],
                    topology: str) -> list[tuple[Scope, str]]:
    """The sysctls to read: those the topology wants where they exist, and every key topoctl
    wrote before in a namespace of this topology (its record lists them)."""
    present = set(scopes)
    keys = {(s, k) for s, k in wanted if s in present}
    for name, owner in namespaces.items():
        if owner is not None and owner.topology == topology and name in present:
            keys.update((name, key) for key in owner.sysctls)
    return sorted(keys, key=lambda sk: (sk[0] or "", sk[1]))


def _link_from(msg: Any, scope: Scope, master: str | None, peer: tuple[Scope, str] | None,
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
        port_state=getattr(msg, "port_state", None),
    )


def assemble(readings: Readings, topology: str) -> State:
    """The live State of what was read, as seen by `topology`."""
    state = State()
    state.tables = dict(readings.nft_tables)
    state.foreign_drops = dict(readings.foreign_drops)
    state.foreign_tables = dict(readings.foreign_tables)
    state.qdiscs = dict(readings.qdiscs)
    for name in sorted(readings.namespaces):
        owner = readings.namespaces[name]
        state.namespaces[name] = Netns(name=name, owner=owner.topology if owner else None,
                                       host=owner.host if owner else None, role=owner.role if owner else "container")
    made = _Addresses()
    pending: list[tuple[Scope, Any]] = []  # made into Links once every namespace's names are known
    names_by_scope: dict[Scope, dict[int, str]] = {}
    for scope, (links, addresses, routes) in readings.tables.items():
        state.scopes.add(scope)
        owned_scope = scope is not None and state.namespaces[scope].owner == topology
        names: dict[int, str] = {}
        ours: set[int] = set()  # ifindexes of links this topology made, in this scope
        for msg in links:
            names[msg.index] = msg.name
            pending.append((scope, msg))
            if owner_from_alias(msg.alias) == topology:
                ours.add(msg.index)
        names_by_scope[scope] = names
        for msg in addresses:
            name = names.get(msg.index)
            if name is None or msg.family not in ADDRESS_FAMILIES or not msg.address:
                continue
            state.addresses.add(Address(scope, name, made.interface(msg.family, msg.address, msg.prefixlen)))
        for msg in routes:
            if (msg.table != MAIN_TABLE or msg.protocol == RTPROT_KERNEL or msg.type != RTN_UNICAST
                    or msg.multipath or msg.family not in ADDRESS_FAMILIES):
                continue
            fields = dict(
                scope=scope, dst=made.network(msg.family, msg.dst, msg.dst_len),
                via=made.address(msg.family, msg.gateway) if msg.gateway else None,
                dev=names.get(msg.oif), metric=msg.priority, table=msg.table, proto=msg.protocol,
                onlink=bool(msg.flags & RTNH_F_ONLINK),
            )
            # In our namespaces, routes are ours unless they leave through someone else's interface.
            owned = (owned_scope and (msg.oif is None or msg.oif in ours)) or (
                scope is None and route_record_name(route_record_key(RouteEntry(**fields))) in readings.root_routes)
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
        peer = _find_peer(readings.nsid_of, scope, msg, veths_by_pair) if msg.kind == "veth" and msg.link else None
        state.add_link(_link_from(msg, scope, master, peer, underlay))

    devices = vxlan_devices(readings.tables, topology)
    for scope, (neighbours, fdb) in readings.neighbours.items():
        for msg in neighbours:
            dev = devices.get((scope, msg.ifindex))
            if dev is not None and msg.dst and msg.lladdr and msg.family in _ADDRESS and msg.state & NUD_PERMANENT:
                state.neighbours.add(Neighbour(scope, dev, _ADDRESS[msg.family](msg.dst), msg.lladdr))
        for msg in fdb:  # the devices' forwarding entries
            dev = devices.get((scope, msg.ifindex))
            if dev is not None and msg.dst and msg.lladdr:
                state.fdb.add(Fdb(scope, dev, msg.lladdr, ipaddress.ip_address(msg.dst)))
    state.sysctls.update(readings.sysctls)
    return state


def _find_peer(nsid_of: Callable[[Scope, Scope], int | None], scope: Scope, msg: Any,
               veths_by_pair: dict[tuple[int, int], list[tuple[Scope, str]]]) -> tuple[Scope, str] | None:
    """The other end of a veth: the veth at `peer_index` whose own peer index is this link's.

    ifindexes repeat across namespaces, so several veths may point at each other that way;
    only then is the peer's netnsid compared with the id this namespace gives each candidate's
    namespace (nsid_of, one RTM_GETNSID per pair of namespaces, cached by the reader).
    """
    peer_nsid = msg.link_netnsid
    candidates = [c for c in veths_by_pair.get((msg.link, msg.index), [])
                  if (c[0] == scope) == (peer_nsid is None)]
    if len(candidates) > 1:
        candidates = [c for c in candidates if nsid_of(scope, c[0]) == peer_nsid]
    return candidates[0] if len(candidates) == 1 else None
