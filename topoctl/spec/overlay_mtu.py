"""The MTU of what carries overlay traffic, as flannel hands its MTU to the CNI plugin: on a
host of a VXLAN overlay, bridges and veth ends that leave `mtu` out get the overlay's (the
underlay's less the encapsulation), and an explicit larger one is a warning naming both."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from topoctl.spec.model import Host, Overlay, Topology, VethLink, place_of, vxlan_overhead

Warn = Callable[..., None]


def overlay_mtus(hosts: list[Host], overlays: list[Overlay]) -> dict[str, tuple[int, str]]:
    """host -> (the MTU its VXLAN overlay carries, the overlay's name); the smallest if several."""
    found: dict[str, tuple[int, str]] = {}
    by_name = {h.name: h for h in hosts}
    for overlay in overlays:
        if overlay.type != "vxlan":
            continue
        for name, _ in overlay.subnets:
            host = by_name.get(name)
            if host is None or host.address is None:
                continue
            mtu = host.mtu - vxlan_overhead(host)
            if name not in found or mtu < found[name][0]:
                found[name] = (mtu, overlay.name)
    return found


def apply_overlay_mtu(topology: Topology, explicit: set[tuple], warn: Warn) -> Topology:
    """`explicit`: the origins of the bridges and endpoints whose `mtu` the file gives."""
    mtus = overlay_mtus(list(topology.hosts), list(topology.overlays))
    if not mtus:
        return topology

    def fitted(item, host: str | None, what: str):
        if host not in mtus:
            return item
        mtu, overlay = mtus[host]
        if item.origin not in explicit:
            return replace(item, mtu=mtu)
        if item.mtu > mtu:
            warn(item.origin + ("mtu",), f"{what}: mtu {item.mtu} is larger than the {mtu} overlay {overlay} carries "
                 f"on host {host}", f"packets over {mtu} bytes to other hosts are dropped; leave mtu out to get {mtu}")
        return item

    bridges = tuple(fitted(b, b.host, f"bridge {b.name}") for b in topology.bridges)
    links = []
    for link in topology.links:
        ends = []
        for end in (link.a, link.b):
            place = place_of(topology, end)
            ends.append(fitted(end, place.host if place else None, f"veth end {end.name}"))
        links.append(VethLink(a=ends[0], b=ends[1], origin=link.origin))
    return replace(topology, bridges=bridges, links=tuple(links))


