"""Where the design makes traffic cross a host, and so needs the host to forward, with why.

Docker and flannel turn on net.ipv4.ip_forward for the same reasons; a file that leaves it out
would otherwise be a silent black hole. Pure: used by the checks (a file that sets such a key
to "0") and by the desired state (which writes it, saying why).
"""

from __future__ import annotations

from dataclasses import dataclass

from topoctl.spec.model import Bridge, IPInterface, Topology

IPV4_FORWARD = "net.ipv4.ip_forward"
IPV6_FORWARD = "net.ipv6.conf.all.forwarding"
FORWARD_KEYS = {4: IPV4_FORWARD, 6: IPV6_FORWARD}
# Keys that turn the same switch: a file setting any of them to 0 contradicts the design.
SAME_SWITCH = {IPV4_FORWARD: (IPV4_FORWARD, "net.ipv4.conf.all.forwarding"), IPV6_FORWARD: (IPV6_FORWARD,)}


@dataclass(frozen=True)
class Need:
    host: str
    key: str
    reason: str  # "bridge docker0 masquerade"


def container_addresses(topology: Topology, namespace: str) -> list[tuple[IPInterface, Bridge]]:
    """A namespace's addresses on its veths whose other end is a port of a bridge (of its host),
    in file order, with that bridge."""
    return container_address_index(topology).get(namespace, [])


def container_address_index(topology: Topology) -> dict[str, list[tuple[IPInterface, Bridge]]]:
    """container_addresses() of every namespace, from one pass over the links (cached on the
    topology: a plan at N=1000 would otherwise walk the links once per namespace)."""
    cached = topology.__dict__.get("_container_addresses")
    if cached is not None:
        return cached
    found: dict[str, list[tuple[IPInterface, Bridge]]] = {}
    for link in topology.links:
        for end, peer in ((link.a, link.b), (link.b, link.a)):
            if end.namespace is not None and peer.bridge is not None:
                bridge = topology.bridge(peer.bridge)
                if bridge is not None:
                    found.setdefault(end.namespace, []).extend((address, bridge) for address in end.addresses)
    object.__setattr__(topology, "_container_addresses", found)
    return found


def _families(addresses) -> set[int]:
    return {a.version for a in addresses}


def forwarding_needs(topology: Topology) -> list[Need]:
    """Every reason a host must forward, one per (host, key), the first reason found kept."""
    needs: dict[tuple[str, str], str] = {}

    def need(host: str, families, reason: str) -> None:
        for family in sorted(families):
            needs.setdefault((host, FORWARD_KEYS[family]), reason)

    for bridge in topology.bridges:
        if bridge.masquerade:
            need(bridge.host, _families(bridge.addresses) or {4}, f"bridge {bridge.name} masquerade")
    for ns in topology.namespaces:
        if ns.ports:
            families = {p.host_ip.version for p in ns.ports if p.host_ip is not None}
            if any(p.host_ip is None for p in ns.ports):
                families |= _families(a for a, _ in container_addresses(topology, ns.name))
            need(ns.host, families or {4}, f"published ports of namespace {ns.name}")
    for overlay in topology.overlays:
        for host, subnet in overlay.subnets:
            need(host, {subnet.version}, f"overlay {overlay.name}")
    by_host: dict[str, list[Bridge]] = {}
    for bridge in topology.bridges:
        by_host.setdefault(bridge.host, []).append(bridge)
    for host, bridges in by_host.items():
        routed = [b for b in bridges if b.addresses]
        for i, first in enumerate(routed):
            for second in routed[i + 1:]:
                if not (first.isolated or second.isolated):
                    shared = _families(first.addresses) & _families(second.addresses)
                    need(host, shared, f"bridges {first.name} and {second.name}")
    for ns in topology.namespaces:
        for route in ns.routes:
            if route.via is None:
                continue
            for address, bridge in container_addresses(topology, ns.name):
                gateway_on_bridge = any(route.via == b.ip for b in bridge.addresses)
                beyond = not any(route.to.subnet_of(b.network) for b in bridge.addresses
                                 if b.version == route.to.version)
                if gateway_on_bridge and beyond and route.to.version == address.version:
                    need(bridge.host, {route.to.version}, f"namespace {ns.name} routes via bridge {bridge.name}")
                    break
    return [Need(host, key, reason) for (host, key), reason in sorted(needs.items())]

