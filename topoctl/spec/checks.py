"""Semantic checks on a built Topology: what JSON Schema cannot say.

Each check reports through `report(path, message, hint="", key=False)`, so the loader can
place it at a line of the file. No check stops the others, but none reports what only follows
from a value already found invalid (`flawed`: its paths, from the builder and from the endpoint
check): a route is not "off every connected subnet" because an address of its namespace did
not parse.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from topoctl.spec.model import (
    DEFAULT_UNDERLAY_INTERFACE,
    Endpoint,
    IPInterface,
    Place,
    Route,
    Topology,
    flawed_under,
    place_of,
    vtep_address,
)
from topoctl.spec.netfilter_checks import check_netfilter
from topoctl.spec.overlay_checks import check_overlays
from topoctl.spec.model import route_family_default_metric

Report = Callable[..., None]


def check_topology(topology: Topology, report: Report, flawed: set[tuple] | None = None) -> None:
    flawed = set(flawed or ())  # the endpoint check adds the endpoints it finds misplaced
    interfaces = _interfaces_by_place(topology)
    _check_reserved_names(topology, report)
    check_overlays(topology, interfaces, report, flawed)
    _check_endpoints(topology, report, flawed)
    unsure = _unsure_places(topology, flawed)
    _check_interface_names(topology, interfaces, report, unsure)
    _check_addresses(topology, interfaces, report)
    _check_routes(topology, interfaces, report, flawed, _incomplete_places(topology, flawed))
    check_netfilter(topology, report)


def _check_reserved_names(topology: Topology, report: Report) -> None:
    emulated = {f"{topology.name}-{h.name}" for h in topology.hosts} | {f"{topology.name}-underlay"}
    for ns in topology.namespaces:
        if ns.name in emulated:
            report(ns.origin, f"namespace name {ns.name!r} is reserved: --emulate uses it for a host or the underlay",
                   "rename the namespace", key=True)
    for host in topology.hosts:
        if host.name == "underlay":
            report(host.origin, "the host name 'underlay' is reserved: --emulate names the underlay namespace so",
                   "rename the host", key=True)


_PLACEMENTS = ("namespace", "bridge", "host")


def _check_endpoints(topology: Topology, report: Report, flawed: set[tuple]) -> None:
    for link in topology.links:
        for end in (link.a, link.b):
            placements = [k for k in _PLACEMENTS if getattr(end, k) is not None]
            if len(placements) > 1:
                report(end.origin, f"endpoint {end.name!r} names {' and '.join(placements)}; give exactly one",
                       "namespace: inside a container; bridge: a port of that bridge; host: the host's own namespace")
                flawed.update(end.origin + (k,) for k in placements)
                continue
            if not placements and len(topology.hosts) > 1:
                report(end.origin, f"endpoint {end.name!r} needs 'namespace', 'bridge' or 'host'")
                flawed.add(end.origin + ("host",))
                continue
            if end.namespace is not None and topology.namespace(end.namespace) is None:
                known = ", ".join(n.name for n in topology.namespaces) or "none"
                report(end.origin + ("namespace",), f"unknown namespace {end.namespace!r}", f"namespaces are: {known}")
                flawed.add(end.origin + ("namespace",))
            if end.bridge is not None:
                if topology.bridge(end.bridge) is None:
                    known = ", ".join(b.key or b.name for b in topology.bridges) or "none"
                    report(end.origin + ("bridge",), f"unknown bridge {end.bridge!r}", f"bridges are: {known}")
                    flawed.add(end.origin + ("bridge",))
                if end.addresses:
                    report(end.origin + ("addresses",), f"{end.name!r} is a port of bridge {end.bridge!r} and cannot carry an address",
                           f"put the address on the bridge {end.bridge!r} instead")
            if end.host is not None and end.host not in topology.host_names():
                report(end.origin + ("host",), f"unknown host {end.host!r}", f"hosts are: {', '.join(topology.host_names())}")
                flawed.add(end.origin + ("host",))
        places = [place_of(topology, end) for end in (link.a, link.b)]
        if flawed and any(_host_unsure(topology, end, flawed) for end in (link.a, link.b)):
            continue  # which host an end is on is not known: "joins two hosts" would be a guess
        if all(places) and places[0].host != places[1].host:
            report(link.origin, f"veth {link.a.name!r} - {link.b.name!r} joins hosts {places[0].host!r} and "
                   f"{places[1].host!r}; a veth cannot leave its machine",
                   "join hosts with an overlay or underlay routes; a veth stays on one host")


def _misplaced(topology: Topology, end: Endpoint, flawed: set[tuple]) -> bool:
    """Whether the end may not be where place_of() puts it: its placement keys were found
    invalid, or it is a port of a bridge whose host: is wrong or was left out."""
    if any(flawed_under(flawed, end.origin + (k,)) for k in _PLACEMENTS):
        return True
    bridge = topology.bridge(end.bridge) if end.bridge is not None else None
    return bridge is not None and flawed_under(flawed, bridge.origin + ("host",))


def _host_unsure(topology: Topology, end: Endpoint, flawed: set[tuple]) -> bool:
    """Whether the host the end is on is not known for sure."""
    ns = topology.namespace(end.namespace) if end.namespace is not None else None
    return _misplaced(topology, end, flawed) or (ns is not None and flawed_under(flawed, ns.origin + ("host",)))


def _unsure_places(topology: Topology, flawed: set[tuple]) -> dict[Place, set[tuple]]:
    """By place, the origins of interfaces counted there that may belong elsewhere: misplaced
    endpoints, and bridges whose host: is wrong or was left out."""
    found: dict[Place, set[tuple]] = defaultdict(set)
    if not flawed:
        return found
    for bridge in topology.bridges:
        if flawed_under(flawed, bridge.origin + ("host",)):
            found[Place(bridge.host, None)].add(bridge.origin)
    for link in topology.links:
        for end in (link.a, link.b):
            if _misplaced(topology, end, flawed) and (place := place_of(topology, end)) is not None:
                found[place].add(end.origin + ("name",))
    return found


def _places_named(topology: Topology, end: Endpoint) -> set[Place]:
    """Every existing place an endpoint may be in: the one place_of() picks, and any other its
    keys name (when it names several)."""
    ns = topology.namespace(end.namespace) if end.namespace is not None else None
    bridge = topology.bridge(end.bridge) if end.bridge is not None else None
    found = {place_of(topology, end), Place(ns.host, ns.name) if ns else None, Place(bridge.host, None) if bridge else None,
             Place(end.host, None) if end.host in topology.host_names() else None}
    return {p for p in found if p is not None}


def _incomplete_places(topology: Topology, flawed: set[tuple]) -> set[Place]:
    """Places whose connected subnets are not all known: an address there did not parse, or an
    interface with addresses may belong to it (a misplaced endpoint, a bridge whose host: is wrong)."""
    if not flawed:
        return set()
    places: set[Place] = set()
    for host in topology.hosts:
        if flawed_under(flawed, host.origin + ("address",)):
            places.add(Place(host.name, None))
    for overlay in topology.overlays:
        if overlay.type == "vxlan":
            places.update(Place(path[-1], None) for path in flawed
                          if path[:-1] == overlay.origin + ("subnets",))  # its VTEP address is missing
    for bridge in topology.bridges:
        if flawed_under(flawed, bridge.origin + ("addresses",)):
            places.add(Place(bridge.host, None))
        if bridge.addresses and flawed_under(flawed, bridge.origin + ("host",)):
            places.update(Place(h.name, None) for h in topology.hosts)  # it is on one of them
    for link in topology.links:
        for end in (link.a, link.b):
            if flawed_under(flawed, end.origin + ("addresses",)) or (end.addresses and _misplaced(topology, end, flawed)):
                places.update(_places_named(topology, end))
    return places


def _interfaces_by_place(topology: Topology) -> dict[Place, list[tuple[str, tuple, tuple[IPInterface, ...]]]]:
    """Every interface of the topology, by place: (name, origin, addresses). The underlay
    interface of a host with an address counts: it is there (or emulated) with that address."""
    found: dict[Place, list] = defaultdict(list)
    for host in topology.hosts:
        if host.address is not None:
            # Unnamed, the real underlay interface is unknown: None matches any `dev` of a route.
            found[Place(host.name, None)].append((host.interface, host.origin + ("address",), (host.address,)))
    for overlay in topology.overlays:
        if overlay.type == "vxlan":
            for host, subnet in overlay.subnets:
                vtep = vtep_address(subnet)
                found[Place(host, None)].append((overlay.device, overlay.origin + ("subnets", host), (vtep,)))
    for bridge in topology.bridges:
        found[Place(bridge.host, None)].append((bridge.name, bridge.origin, bridge.addresses))
    for link in topology.links:
        for end in (link.a, link.b):
            place = place_of(topology, end)
            if place is not None:
                found[place].append((end.name, end.origin + ("name",), end.addresses))
    return found


def _where(place: Place) -> str:
    return f"namespace {place.namespace!r}" if place.namespace else f"host {place.host!r}"


def _check_interface_names(topology: Topology, by_place: dict, report: Report, unsure: dict) -> None:
    for place, interfaces in by_place.items():
        host = topology.host(place.host) if place.namespace is None else None
        underlay_unnamed = host is not None and host.address is not None and host.interface is None
        seen: dict[str, tuple] = {}
        for name, origin, _ in interfaces:
            if name is None:
                continue
            if origin in unsure.get(place, ()):
                if name == "lo":
                    report(origin, f"'lo' is the loopback device of {_where(place)}; a link cannot be named so")
                continue  # it may not be in this place: a clash here would be a guess
            if underlay_unnamed and name == DEFAULT_UNDERLAY_INTERFACE:
                report(origin, f"{name!r} in host {place.host!r} is the underlay interface --emulate creates",
                       f"name the real underlay interface: hosts: {{{place.host}: {{interface: ...}}}}, or rename this one")
            if name == "lo":
                report(origin, f"'lo' is the loopback device of {_where(place)}; a link cannot be named so")
            if name in seen:
                report(origin, f"interface {name!r} is claimed twice in {_where(place)}",
                       "every interface of a namespace or host needs its own name")
            else:
                seen[name] = origin


def _check_addresses(topology: Topology, by_place: dict, report: Report) -> None:
    seen: dict = {}
    for place, interfaces in by_place.items():
        for name, origin, addresses in interfaces:
            base = origin[:-1] if origin and origin[-1] == "name" else origin
            for i, address in enumerate(addresses):
                if address.ip in seen:
                    report(base + ("addresses", i), f"address {address.ip} is used twice (also on {seen[address.ip]})")
                else:
                    seen[address.ip] = f"{name or 'the underlay interface'} in {_where(place)}"


def _connected(by_place: dict, place: Place) -> list[tuple[str, IPInterface]]:
    return [(name, a) for name, _, addresses in by_place.get(place, []) for a in addresses]


def _check_route(topology: Topology, by_place: dict, place: Place, route: Route, report: Report,
                 incomplete: set[Place]) -> None:
    names = {name for name, _, _ in by_place.get(place, [])}
    # In a host's own namespace a route may leave through an interface the topology does not
    # create (the underlay eth0); inside a container every interface is the topology's.
    if route.dev is not None and route.dev not in names and place.namespace is not None:
        report(route.origin + ("dev",), f"route to {route.to}: no interface {route.dev!r} in {_where(place)}")
        return
    if route.via is None:
        return
    if route.via.version == 6 and route.via.is_link_local:
        return  # a link-local gateway is on every link; 'dev' says which (checked above)
    connected = _connected(by_place, place)
    on_link = [(name, a) for name, a in connected
               if route.via in a.network and (route.dev is None or name is None or route.dev == name)]
    if not on_link:
        if place in incomplete:
            return  # the subnet may be one whose address did not parse: that error is the cause
        subnets = ", ".join(sorted({str(a.network) for _, a in connected})) or "none"
        report(route.origin + ("via",), f"gateway {route.via} is not on any connected subnet of {_where(place)}",
               f"connected subnets: {subnets}")
    elif any(a.ip == route.via for _, a in on_link):
        report(route.origin + ("via",), f"gateway {route.via} is an address of {_where(place)} itself")


def _check_routes(topology: Topology, by_place: dict, report: Report, flawed: set[tuple], incomplete: set[Place]) -> None:
    routes_by_place: dict[Place, list[Route]] = defaultdict(list)
    for ns in topology.namespaces:
        routes_by_place[Place(ns.host, ns.name)].extend(ns.routes)
    for host_route in topology.routes:
        if not flawed_under(flawed, host_route.origin + ("host",)):  # else its host is not known
            routes_by_place[Place(host_route.host, None)].append(host_route.route)
    for place, routes in routes_by_place.items():
        seen: set[tuple] = set()
        for route in routes:
            key = (route.to, route.metric if route.metric is not None else route_family_default_metric(route.to))
            if key in seen:
                report(route.origin + ("to",), f"route to {route.to} (metric {key[1]}) is given twice in {_where(place)}")
            seen.add(key)
            if route.dev is None and route.via is not None and route.via.version == 6 and route.via.is_link_local:
                report(route.origin + ("via",), f"a link-local gateway ({route.via}) needs 'dev'")
            _check_route(topology, by_place, place, route, report, incomplete)
