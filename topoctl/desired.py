"""Topology (+ how it is realised) -> the desired kernel State. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Endpoint, Place, Route, Topology, derived_mac, place_of
from .overlay import add_overlays, add_underlay
from .state import (Address, Link, Netns, RouteEntry, Scope, State, interface_order, link_mac,
                    route_family_default_metric)

LOOPBACK = "lo"


@dataclass(frozen=True)
class Realisation:
    """How the topology's hosts map onto this machine, and which of them we act on."""

    topology: str
    hosts: tuple[str, ...]
    emulate: bool
    all_hosts: tuple[str, ...] = ()  # every host of the file; more than `hosts` when --host narrows

    @property
    def partial(self) -> bool:
        return bool(self.all_hosts) and set(self.hosts) != set(self.all_hosts)

    def host_scope(self, host: str) -> Scope:
        # Emulated, a host is a namespace of its own; for real, it is this machine's root namespace.
        return f"{self.topology}-{host}" if self.emulate else None

    @property
    def underlay_scope(self) -> str:
        """Emulated only: the namespace that stands for the network between the hosts."""
        return f"{self.topology}-underlay"

    def scope_of(self, place: Place) -> Scope:
        return place.namespace if place.namespace is not None else self.host_scope(place.host)


def emulates_underlay(topology: Topology, realisation: Realisation) -> bool:
    """Whether this run has a namespace standing for the network between the hosts."""
    return realisation.emulate and any(h.address is not None for h in topology.hosts)


def container_names(topology: Topology, realisation: Realisation) -> list[str]:
    """The container namespaces this run acts on, sorted: known without the desired state."""
    selected = set(realisation.hosts)
    return sorted(ns.name for ns in topology.namespaces if ns.host in selected)


def endpoint_mac(topology: Topology, end: Endpoint, place: Place) -> str:
    """A veth end's MAC: the file's, or one derived from where it lives (the host, or the
    container namespace) and its name, the same whether the host is emulated or not."""
    if end.mac is not None:
        return end.mac
    if place.namespace is not None:
        return link_mac(topology.name, "netns", place.namespace, end.name)
    return link_mac(topology.name, "host", place.host, end.name)


def _endpoint_link(topology: Topology, realisation: Realisation, end: Endpoint, peer: Endpoint) -> Link:
    place = place_of(topology, end)
    scope = realisation.scope_of(place)
    peer_scope = realisation.scope_of(place_of(topology, peer))
    return Link(
        scope=scope, name=end.name, kind="veth", up=end.up, mtu=end.mtu, mac=endpoint_mac(topology, end, place),
        master=topology.bridge(end.bridge).name if end.bridge else None, peer=(peer_scope, peer.name),
        owner=topology.name,
    )


def _resolve_dev(route: Route, scope: Scope, addresses_by_scope: dict[Scope, list[Address]]) -> str | None:
    """The interface a gateway is reached through, from the scope's own addresses."""
    if route.dev is not None or route.via is None:
        return route.dev
    for address in addresses_by_scope.get(scope, ()):
        if route.via in address.interface.network:
            return address.link
    return None  # reached through an interface the topology does not manage (the underlay)


def desired_state(topology: Topology, realisation: Realisation) -> State:
    state = State()
    owner = topology.name
    selected = set(realisation.hosts)

    def add_scope(scope: Scope, host: str, role: str) -> None:
        state.scopes.add(scope)
        if scope is not None:
            state.namespaces[scope] = Netns(name=scope, owner=owner, host=host, role=role)
            state.add_link(Link(scope=scope, name=LOOPBACK, kind="loopback", up=True, owner=None))

    for host in topology.hosts:
        if host.name in selected:
            add_scope(realisation.host_scope(host.name), host.name, "host")
            for key, value in host.sysctls:
                state.sysctls[(realisation.host_scope(host.name), key)] = value
    if emulates_underlay(topology, realisation):
        add_scope(realisation.underlay_scope, "", "underlay")
        add_underlay(state, topology, realisation)
    for ns in topology.namespaces:
        if ns.host in selected:
            add_scope(ns.name, ns.host, "container")
            for key, value in ns.sysctls:
                state.sysctls[(ns.name, key)] = value

    for bridge in topology.bridges:
        if bridge.host not in selected:
            continue
        scope = realisation.host_scope(bridge.host)
        # A bridge without a MAC of its own takes its lowest port's, and changes it as ports come
        # and go, leaving neighbours with stale ARP entries: give every bridge a fixed one.
        mac = bridge.mac or derived_mac(topology.name, bridge.host, bridge.name)
        state.add_link(Link(scope=scope, name=bridge.name, kind="bridge", up=bridge.up, mtu=bridge.mtu,
                            mac=mac, stp=bridge.stp, owner=owner))
        state.addresses.update(Address(scope, bridge.name, a) for a in bridge.addresses)

    for veth in topology.links:
        for end, peer in ((veth.a, veth.b), (veth.b, veth.a)):
            if place_of(topology, end).host not in selected:
                continue
            link = _endpoint_link(topology, realisation, end, peer)
            state.add_link(link)
            state.addresses.update(Address(link.scope, link.name, a) for a in end.addresses)

    addresses_by_scope: dict[Scope, list[Address]] = {}
    for address in sorted(state.addresses, key=lambda a: (a.link, *interface_order(a.interface))):
        addresses_by_scope.setdefault(address.scope, []).append(address)

    def add_route(scope: Scope, route: Route) -> None:
        metric = route.metric if route.metric is not None else route_family_default_metric(route.to)
        dev = _resolve_dev(route, scope, addresses_by_scope)
        state.add_route(RouteEntry(scope=scope, dst=route.to, via=route.via, dev=dev, metric=metric, owner=owner))

    for ns in topology.namespaces:
        if ns.host in selected:
            for route in ns.routes:
                add_route(ns.name, route)
    for host_route in topology.routes:
        if host_route.host in selected:
            add_route(realisation.host_scope(host_route.host), host_route.route)
    add_overlays(state, topology, realisation)
    return state
