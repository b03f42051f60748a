"""Read the live kernel state of every namespace a topology cares about into a State.

Each namespace's tables are dumped once (links, addresses, main-table routes) and indexed;
nothing is looked up per object. Veth peers across namespaces are matched by ifindex pairs.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import replace
from typing import Iterable

from . import netns as ns
from .kernel import Kernel
from .state import (
    MAIN_TABLE,
    Address,
    Link,
    Netns,
    RouteEntry,
    Scope,
    State,
    owner_from_alias,
    route_record_key,
)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTPROT_KERNEL = 2
RTN_UNICAST = 1


def _link_from(msg, scope: Scope) -> tuple[Link, int, int | None, int | None]:
    """A Link, plus (master index, peer index, peer netnsid) to resolve once all are read."""
    flags = msg["flags"]
    kind = msg.get(("linkinfo", "kind"))
    if kind is None:
        kind = "loopback" if flags & IFF_LOOPBACK else "unknown"
    stp = None
    if kind == "bridge":
        stp_state = msg.get(("linkinfo", "data", "br_stp_state"))
        stp = bool(stp_state) if stp_state is not None else None
    mac = msg.get("address")
    link = Link(
        scope=scope, name=msg.get("ifname"), kind=kind, up=bool(flags & IFF_UP), mtu=msg.get("mtu"),
        mac=mac.lower() if mac and kind != "loopback" else None, stp=stp,
        owner=owner_from_alias(msg.get("ifalias")), index=msg["index"],
    )
    peer_index = msg.get("link") if kind == "veth" else None
    return link, msg.get("master") or 0, peer_index, msg.get("link_netnsid")


def _dump(kernel: Kernel, scope: Scope):
    ipr = kernel.rtnl(scope)
    links = list(ipr.link("dump"))
    addresses = list(ipr.addr("dump"))
    routes = list(ipr.route("dump", table=MAIN_TABLE))
    return links, addresses, routes


def observe(kernel: Kernel, topology: str, scopes: Iterable[Scope], sysctls: Iterable[tuple[Scope, str]] = ()) -> State:
    """The live State of `scopes` (namespaces that do not exist are left out), as seen by `topology`.

    Ownership is filled in here: a namespace is ours when its record names this topology
    (and it is the same namespace the record was made for); a link when its alias says so;
    a route when it lies in a namespace we own, or, in the root namespace, when we recorded it.
    """
    state = State()
    existing = set(ns.list_netns())
    wanted = set(scopes) | set(ns.recorded_netns(topology))
    for name in sorted(n for n in wanted if n is not None and n in existing):
        record = ns.read_netns_record(name)
        mine = record is not None and (record.inode == 0 or record.inode == ns.netns_inode(name))
        state.namespaces[name] = Netns(name=name, owner=record.topology if mine else None,
                                       host=record.host if mine else None, role=record.role if mine else "container")
    live_scopes = [s for s in sorted(wanted, key=lambda s: s or "") if s is None or s in existing]
    root_routes = ns.recorded_root_routes(topology) if None in live_scopes else set()

    by_index: dict[tuple[Scope, int], Link] = {}
    pending: list[tuple[Link, int, int | None, int | None]] = []
    for scope in live_scopes:
        state.scopes.add(scope)
        owned_scope = scope is not None and state.namespaces[scope].owner == topology
        links, addresses, routes = _dump(kernel, scope)
        names: dict[int, str] = {}
        ours: set[int] = set()  # ifindexes of links this topology made, in this scope
        for msg in links:
            link, master, peer_index, peer_nsid = _link_from(msg, scope)
            names[link.index] = link.name
            if link.owner == topology:
                ours.add(link.index)
            by_index[(scope, link.index)] = link
            pending.append((link, master, peer_index, peer_nsid))
        for msg in addresses:
            name = names.get(msg["index"])
            text = msg.get("local") or msg.get("address")
            if name is None or text is None:
                continue
            state.addresses.add(Address(scope, name, ipaddress.ip_interface(f"{text}/{msg['prefixlen']}")))
        for msg in routes:
            if msg["proto"] == RTPROT_KERNEL or msg["type"] != RTN_UNICAST or msg.get("multipath") is not None:
                continue
            family_default = "::" if msg["family"] == socket.AF_INET6 else "0.0.0.0"
            dst = ipaddress.ip_network(f"{msg.get('dst') or family_default}/{msg['dst_len']}")
            gateway = msg.get("gateway")
            route = RouteEntry(
                scope=scope, dst=dst, via=ipaddress.ip_address(gateway) if gateway else None,
                dev=names.get(msg.get("oif")), metric=msg.get("priority") or 0,
                table=msg.get("table") or MAIN_TABLE, proto=msg["proto"],
            )
            # In our namespaces, routes are ours unless they leave through someone else's interface.
            oif = msg.get("oif")
            owned = (owned_scope and (oif is None or oif in ours)) or (
                scope is None and ns.route_record_name(route_record_key(route)) in root_routes)
            state.add_route(replace(route, owner=topology if owned else None))

    peer_of = {(link.scope, link.index): peer_index for link, _, peer_index, _ in pending if peer_index}
    veths_by_index: dict[int, list[Link]] = {}
    for link, _, peer_index, _ in pending:
        if peer_index:
            veths_by_index.setdefault(link.index, []).append(link)
    for link, master, peer_index, peer_nsid in pending:
        if master:
            master_link = by_index.get((link.scope, master))
            link = replace(link, master=master_link.name if master_link else f"#{master}")
        if peer_index:
            link = replace(link, peer=_find_peer(link, peer_index, peer_nsid, veths_by_index, peer_of))
        state.add_link(link)

    for scope, key in sysctls:
        if scope in state.scopes:
            value = kernel.read_sysctl(scope, key)
            if value is not None:
                state.sysctls[(scope, key)] = value
    return state


def _find_peer(link: Link, peer_index: int, peer_nsid: int | None,
               veths_by_index: dict[int, list[Link]], peer_of: dict) -> tuple[Scope, str] | None:
    """The other end of a veth: the veth at `peer_index` whose own peer index is this link's.

    ifindexes repeat across namespaces, so both directions must agree; the peer's netnsid
    only says whether it is in another namespace.
    """
    for candidate in veths_by_index.get(peer_index, []):
        same_scope = candidate.scope == link.scope
        if same_scope == (peer_nsid is None) and peer_of.get((candidate.scope, candidate.index)) == link.index:
            return (candidate.scope, candidate.name)
    return None
