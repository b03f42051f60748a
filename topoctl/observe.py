"""Read the live kernel state of every namespace a topology cares about into a State.

Each namespace's tables are dumped once (links, addresses, routes) and indexed; nothing is
looked up per object. Veth peers across namespaces are matched by ifindex pairs, and by
netnsid where ifindexes collide.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import replace
from typing import Iterable

from . import netns as ns
from .kernel import Kernel
from .rtnl import AF_BRIDGE, LinkMsg
from .state import (
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
_DEFAULT = {socket.AF_INET: ipaddress.IPv4Address(0), socket.AF_INET6: ipaddress.IPv6Address(0)}


def _link_from(msg: LinkMsg, scope: Scope) -> Link:
    kind = msg.kind or ("loopback" if msg.flags & IFF_LOOPBACK else "unknown")
    vxlan = None
    if kind == "vxlan" and msg.vxlan is not None:
        vni, port, local, learning, _ = msg.vxlan
        vxlan = Vxlan(vni=vni, port=port, local=ipaddress.ip_address(local) if local else None, learning=learning)
    return Link(
        scope=scope, name=msg.name, kind=kind, up=bool(msg.flags & IFF_UP), mtu=msg.mtu,
        mac=msg.mac if kind != "loopback" else None,
        stp=bool(msg.stp_state) if kind == "bridge" and msg.stp_state is not None else None,
        vxlan=vxlan, owner=owner_from_alias(msg.alias), index=msg.index,
    )


def observe(kernel: Kernel, topology: str, scopes: Iterable[Scope], sysctls: Iterable[tuple[Scope, str]] = (),
            hosts: set[str] | None = None, skim_containers: bool = False) -> State:
    """The live State of `scopes` (namespaces that do not exist are left out), as seen by `topology`.

    Ownership is filled in here: a namespace is ours when its record names this topology
    (and it is the same namespace the record was made for); a link when its alias says so;
    a route when it lies in a namespace we own, or, in the root namespace, when we recorded it.
    `skim_containers`: our container namespaces are only listed, not read (a destroy deletes
    them whole, whatever is inside).
    """
    state = State()
    existing = set(ns.list_netns())
    records = ns.netns_records()
    recorded = [name for name, r in records.items() if r.topology == topology]
    if hosts is not None:  # acting on some hosts: other hosts' namespaces are not in view
        recorded = [n for n in recorded if records[n].host in hosts or not records[n].host]
    wanted = set(scopes) | set(recorded)
    for name in sorted(n for n in wanted if n is not None and n in existing):
        record = records.get(name)
        mine = record is not None and (record.inode == 0 or record.inode == ns.netns_inode(name))
        state.namespaces[name] = Netns(name=name, owner=record.topology if mine else None,
                                       host=record.host if mine else None, role=record.role if mine else "container")
    live_scopes = [s for s in sorted(wanted, key=lambda s: s or "") if s is None or s in existing]
    if skim_containers:
        live_scopes = [s for s in live_scopes if s is None or not (
            state.namespaces[s].owner == topology and state.namespaces[s].role == "container")]
    kernel.open(live_scopes)
    root_routes = ns.recorded_root_routes(topology) if None in live_scopes else set()

    pending: list[tuple[Link, LinkMsg]] = []
    by_index: dict[tuple[Scope, int], Link] = {}
    vxlan_devs: dict[tuple[Scope, int], str] = {}  # this topology's VXLAN devices
    for scope in live_scopes:
        state.scopes.add(scope)
        owned_scope = scope is not None and state.namespaces[scope].owner == topology
        handle = kernel.rtnl(scope)
        names: dict[int, str] = {}
        ours: set[int] = set()  # ifindexes of links this topology made, in this scope
        for msg in handle.links():
            link = _link_from(msg, scope)
            names[msg.index] = link.name
            by_index[(scope, msg.index)] = link
            pending.append((link, msg))
            if link.owner == topology:
                ours.add(msg.index)
                if link.vxlan is not None:
                    vxlan_devs[(scope, msg.index)] = link.name
        kernel.remember(scope, {name: index for index, name in names.items()})
        for msg in handle.addresses():
            name = names.get(msg.index)
            if name is None or msg.family not in _ADDRESS or not msg.address:
                continue
            ip = _ADDRESS[msg.family](msg.address)
            state.addresses.add(Address(scope, name, ipaddress.ip_interface((ip, msg.prefixlen))))
        for msg in handle.routes(MAIN_TABLE):
            if (msg.table != MAIN_TABLE or msg.protocol == RTPROT_KERNEL or msg.type != RTN_UNICAST
                    or msg.multipath or msg.family not in _ADDRESS):
                continue
            make = _ADDRESS[msg.family]
            dst = ipaddress.ip_network((make(msg.dst) if msg.dst else _DEFAULT[msg.family], msg.dst_len))
            route = RouteEntry(
                scope=scope, dst=dst, via=make(msg.gateway) if msg.gateway else None,
                dev=names.get(msg.oif), metric=msg.priority, table=msg.table, proto=msg.protocol,
                onlink=bool(msg.flags & RTNH_F_ONLINK),
            )
            # In our namespaces, routes are ours unless they leave through someone else's interface.
            owned = (owned_scope and (msg.oif is None or msg.oif in ours)) or (
                scope is None and ns.route_record_name(route_record_key(route)) in root_routes)
            state.add_route(replace(route, owner=topology if owned else None))

    # veths by (own index, peer's index): every container's eth0 may be index 2, so an index
    # alone would make this quadratic.
    veths_by_pair: dict[tuple[int, int], list[Link]] = {}
    for link, msg in pending:
        if msg.kind == "veth" and msg.link:
            veths_by_pair.setdefault((link.index, msg.link), []).append(link)
    for link, msg in pending:
        if msg.master:
            master_link = by_index.get((link.scope, msg.master))
            link = replace(link, master=master_link.name if master_link else f"#{msg.master}")
        if link.vxlan is not None and msg.vxlan[4]:
            under = by_index.get((link.scope, msg.vxlan[4]))
            link = replace(link, vxlan=replace(link.vxlan, underlay=under.name if under else None))
        if msg.kind == "veth" and msg.link:
            link = replace(link, peer=_find_peer(kernel, link, msg.link, msg.link_netnsid, veths_by_pair))
        state.add_link(link)

    for scope in {scope for scope, _ in vxlan_devs}:
        _read_vxlan_tables(kernel, scope, vxlan_devs, state)
    state.sysctls.update(kernel.read_sysctls((s, k) for s, k in sysctls if s in state.scopes))
    return state


def _find_peer(kernel: Kernel, link: Link, peer_index: int, peer_nsid: int | None,
               veths_by_pair: dict[tuple[int, int], list[Link]]) -> tuple[Scope, str] | None:
    """The other end of a veth: the veth at `peer_index` whose own peer index is this link's.

    ifindexes repeat across namespaces, so several veths may point at each other that way;
    only then is the peer's netnsid compared with the id this namespace gives each candidate's
    namespace (one RTM_GETNSID per pair of namespaces, cached).
    """
    candidates = [c for c in veths_by_pair.get((peer_index, link.index), [])
                  if (c.scope == link.scope) == (peer_nsid is None)]
    if len(candidates) > 1:
        candidates = [c for c in candidates if kernel.nsid_of(link.scope, c.scope) == peer_nsid]
    return (candidates[0].scope, candidates[0].name) if len(candidates) == 1 else None


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
