"""Topology (+ how it is realised) -> the desired kernel State; a Deployment, the two together. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from topoctl.spec.model import Endpoint, Place, Route, Topology, derived_mac, place_of
from topoctl.core.netfilter import add_netfilter
from topoctl.core.overlay import add_overlays, add_underlay
from topoctl.core.realisation import Realisation, emulates_underlay
from topoctl.spec import rates
from topoctl.core.state import (Address, Link, Netns, RouteEntry, Scope, State, Tbf, interface_order, link_mac,
                    route_family_default_metric)

LOOPBACK = "lo"


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


def desired_tbf(rate: int, burst: int | None, mtu: int) -> Tbf:
    """The tbf a `rate` (and `burst`) makes, as the kernel will report it (spec.rates)."""
    wanted = burst if burst is not None else rates.default_burst(rate, mtu)
    return Tbf(rates.canonical_rate(rate), rates.canonical_burst(rate, wanted), rates.tbf_limit(rate, wanted),
               requested_burst=wanted)


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
            if end.rate is not None:
                state.qdiscs[link.key] = desired_tbf(end.rate, end.burst, end.mtu)
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
    add_netfilter(state, topology, realisation)
    return state


@dataclass
class Deployment:
    """A topology and how this run realises it: what it wants, what a destroy leaves, what
    it locks. Pure: rendering needs nothing more."""

    topology: Topology
    realisation: Realisation

    @cached_property
    def desired(self) -> State:
        """Computed on first use: a plan starts reading the live state before (see Context.plan())."""
        return desired_state(self.topology, self.realisation)

    def empty(self, keep_shared: bool = True) -> State:
        """What the topology wants when it is destroyed: nothing, in the same places; but a
        destroy of some hosts keeps what the others still use (the emulated underlay)."""
        state = State(scopes=set(self.desired.scopes))
        shared = self.shared_scope()
        if keep_shared and shared is not None and shared in self.desired.namespaces:
            state.namespaces[shared] = self.desired.namespaces[shared]
            for key, link in self.desired.links.items():
                if key[0] == shared and link.kind in ("bridge", "loopback"):
                    state.links[key] = link
        return state

    def lock_names(self) -> list[str]:
        """What an apply or destroy locks: each host it acts on (emulated: its namespace, and
        the underlay the hosts share; for real: this machine)."""
        r = self.realisation
        if not r.emulate:
            return ["root"]
        names = [r.host_scope(h) for h in r.hosts]
        if emulates_underlay(self.topology, r):
            names.append(r.underlay_scope)
        return names

    def shared_scope(self) -> str | None:
        """The namespace several hosts share, when this run acts on only some of them."""
        r = self.realisation
        return r.underlay_scope if r.emulate and r.partial else None
