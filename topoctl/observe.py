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
    Fdb,
    Neighbour,
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


def _vxlan_from(msg) -> Vxlan:
    local = msg.get(("linkinfo", "data", "vxlan_local")) or msg.get(("linkinfo", "data", "vxlan_local6"))
    return Vxlan(
        vni=msg.get(("linkinfo", "data", "vxlan_id")), port=msg.get(("linkinfo", "data", "vxlan_port")),
        local=ipaddress.ip_address(local) if local else None,
        learning=bool(msg.get(("linkinfo", "data", "vxlan_learning"))),
    )


def _link_from(msg, scope: Scope) -> tuple[Link, int, int | None, int | None]:
    """A Link, plus (master index, peer index, peer netnsid) to resolve once all are read.
    A VXLAN device's underlay index is resolved the same way, from `vxlan_link`."""
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
        vxlan=_vxlan_from(msg) if kind == "vxlan" else None,
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


def observe(kernel: Kernel, topology: str, scopes: Iterable[Scope], sysctls: Iterable[tuple[Scope, str]] = (),
            hosts: set[str] | None = None) -> State:
    """The live State of `scopes` (namespaces that do not exist are left out), as seen by `topology`.

    Ownership is filled in here: a namespace is ours when its record names this topology
    (and it is the same namespace the record was made for); a link when its alias says so;
    a route when it lies in a namespace we own, or, in the root namespace, when we recorded it.
    """
    state = State()
    existing = set(ns.list_netns())
    recorded = ns.recorded_netns(topology)
    if hosts is not None:  # acting on some hosts: other hosts' namespaces are not in view
        recorded = [n for n in recorded if (r := ns.read_netns_record(n)) is not None and (r.host in hosts or not r.host)]
    wanted = set(scopes) | set(recorded)
    for name in sorted(n for n in wanted if n is not None and n in existing):
        record = ns.read_netns_record(name)
        mine = record is not None and (record.inode == 0 or record.inode == ns.netns_inode(name))
        state.namespaces[name] = Netns(name=name, owner=record.topology if mine else None,
                                       host=record.host if mine else None, role=record.role if mine else "container")
    live_scopes = [s for s in sorted(wanted, key=lambda s: s or "") if s is None or s in existing]
    root_routes = ns.recorded_root_routes(topology) if None in live_scopes else set()

    by_index: dict[tuple[Scope, int], Link] = {}
    pending: list[tuple[Link, int, int | None, int | None]] = []
    underlay_of: dict[tuple[Scope, str], int | None] = {}
    vxlan_devs: dict[tuple[Scope, int], str] = {}  # this topology's VXLAN devices
    for scope in live_scopes:
        state.scopes.add(scope)
        owned_scope = scope is not None and state.namespaces[scope].owner == topology
        links, addresses, routes = _dump(kernel, scope)
        names: dict[int, str] = {}
        ours: set[int] = set()  # ifindexes of links this topology made, in this scope
        for msg in links:
            link, master, peer_index, peer_nsid = _link_from(msg, scope)
            names[link.index] = link.name
            if link.vxlan is not None:
                underlay_of[link.key] = msg.get(("linkinfo", "data", "vxlan_link"))
                if link.owner == topology:
                    vxlan_devs[(scope, link.index)] = link.name
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
                table=msg.get("table") or MAIN_TABLE, proto=msg["proto"], onlink=bool(msg["flags"] & RTNH_F_ONLINK),
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
        if link.vxlan is not None and underlay_of.get(link.key):
            under = by_index.get((link.scope, underlay_of[link.key]))
            link = replace(link, vxlan=replace(link.vxlan, underlay=under.name if under else None))
        if peer_index:
            link = replace(link, peer=_find_peer(kernel, link, peer_index, peer_nsid, veths_by_index, peer_of))
        state.add_link(link)

    for scope in {scope for scope, _ in vxlan_devs}:
        _read_vxlan_tables(kernel, scope, vxlan_devs, state)

    for scope, key in sysctls:
        if scope in state.scopes:
            value = kernel.read_sysctl(scope, key)
            if value is not None:
                state.sysctls[(scope, key)] = value
    return state


def _find_peer(kernel: Kernel, link: Link, peer_index: int, peer_nsid: int | None,
               veths_by_index: dict[int, list[Link]], peer_of: dict) -> tuple[Scope, str] | None:
    """The other end of a veth: the veth at `peer_index` whose own peer index is this link's.

    ifindexes repeat across namespaces, so several veths may point at each other that way;
    only then is the peer's netnsid compared with the id this namespace gives each candidate's
    namespace (one RTM_GETNSID per pair of namespaces, cached).
    """
    candidates = [c for c in veths_by_index.get(peer_index, [])
                  if (c.scope == link.scope) == (peer_nsid is None)
                  and peer_of.get((c.scope, c.index)) == link.index]
    if len(candidates) > 1:
        candidates = [c for c in candidates if kernel.nsid_of(link.scope, c.scope) == peer_nsid]
    return (candidates[0].scope, candidates[0].name) if len(candidates) == 1 else None


def _read_vxlan_tables(kernel: Kernel, scope: Scope, vxlan_devs: dict[tuple[Scope, int], str], state: State) -> None:
    """Permanent neighbours and FDB entries of this topology's VXLAN devices in one namespace."""
    ipr = kernel.rtnl(scope)
    for msg in ipr.neigh("dump"):
        dev = vxlan_devs.get((scope, msg["ifindex"]))
        if (msg["family"] not in (socket.AF_INET, socket.AF_INET6) or dev is None or not msg["state"] & NUD_PERMANENT
                or msg.get("lladdr") is None or msg.get("dst") is None):
            continue
        state.neighbours.add(Neighbour(scope, dev, ipaddress.ip_address(msg.get("dst")), msg.get("lladdr").lower()))
    for msg in ipr.fdb("dump"):
        dev = vxlan_devs.get((scope, msg["ifindex"]))
        if dev is None or msg.get("dst") is None or msg.get("lladdr") is None:
            continue
        state.fdb.add(Fdb(scope, dev, msg.get("lladdr").lower(), ipaddress.ip_address(msg.get("dst"))))
