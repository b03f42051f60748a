"""Warnings: a valid design that is probably not what was meant (exit 0, a FILE:LINE:COL
warning line). Run once the file has no error."""

from __future__ import annotations

from typing import Callable

from topoctl.spec.model import Topology, place_of

Warn = Callable[..., None]


def warn_design(topology: Topology, warn: Warn) -> None:
    _outside_bridge_subnets(topology, warn)
    _overlapping_bridges(topology, warn)
    _veth_mtus(topology, warn)


def _outside_bridge_subnets(topology: Topology, warn: Warn) -> None:
    """A container address outside every subnet its bridge has (of that family): the bridge's
    address is not its gateway, and the host reaches it only by accident."""
    for link in topology.links:
        for end, peer in ((link.a, link.b), (link.b, link.a)):
            bridge = topology.bridge(peer.bridge) if end.namespace is not None and peer.bridge else None
            if bridge is None:
                continue
            for k, address in enumerate(end.addresses):
                subnets = [a.network for a in bridge.addresses if a.version == address.version]
                if subnets and not any(address.ip in net for net in subnets):
                    warn(end.origin + ("addresses", k),
                         f"{address} on {end.name} in namespace {end.namespace!r} is outside every subnet of bridge "
                         f"{bridge.name} ({', '.join(str(n) for n in subnets)})",
                         "give it an address of the bridge's subnet, or the bridge an address of its subnet")


def _overlapping_bridges(topology: Topology, warn: Warn) -> None:
    """Two bridges of one host whose subnets overlap: the host has two routes to the same
    addresses, and one bridge's containers are unreachable from the host."""
    seen: list[tuple[str, str, object]] = []  # (host, bridge, network)
    for bridge in topology.bridges:
        for k, address in enumerate(bridge.addresses):
            clash = next(((b, n) for h, b, n in seen if h == bridge.host and n.version == address.version
                          and n.overlaps(address.network)), None)
            if clash is not None:
                warn(bridge.origin + ("addresses", k),
                     f"subnet {address.network} of bridge {bridge.name} overlaps {clash[1]} of bridge {clash[0]} "
                     f"on host {bridge.host!r}", "give each bridge of a host its own subnet")
            seen.append((bridge.host, bridge.name, address.network))


def _veth_mtus(topology: Topology, warn: Warn) -> None:
    """The two ends of a veth with different MTUs: the larger end sends what the other drops.
    (On an overlaid host the overlay's MTU warning already names the larger end.)"""
    overlaid = {host for overlay in topology.overlays for host, _ in overlay.subnets}
    for link in topology.links:
        places = {place_of(topology, end) for end in (link.a, link.b)}
        if any(place is not None and place.host in overlaid for place in places):
            continue
        if link.a.mtu != link.b.mtu:
            warn(link.b.origin + ("mtu",),
                 f"the ends of veth {link.a.name}-{link.b.name} have different MTUs ({link.a.mtu} and {link.b.mtu}): "
                 "the larger end sends frames the other drops", "give both ends the same mtu")
