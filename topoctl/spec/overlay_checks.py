"""Semantic checks of hosts and overlays: subnets, underlay addresses, VXLAN parameters."""

from __future__ import annotations

from typing import Callable

from topoctl.spec.model import Place, Topology, flawed_under, vxlan_overhead

Report = Callable[..., None]


def check_overlays(topology: Topology, by_place: dict, report: Report, flawed: set[tuple] = frozenset()) -> None:
    """`flawed`: paths of values found invalid; what only follows from them is not reported."""
    hosts = {h.name: h for h in topology.hosts}
    names: set[str] = set()
    claimed: list[tuple] = []  # (network, what, path) of every subnet and underlay seen so far
    for host in topology.hosts:
        if host.address is not None:
            claimed.append((host.address.network, f"the underlay of host {host.name!r}", host.origin + ("address",)))
    vxlan_ports: dict[tuple[int, int], str] = {}
    mtu_reported: set[str] = set()
    _check_gateways(topology, by_place, report, flawed)

    for overlay in topology.overlays:
        if overlay.name in names:
            report(overlay.origin + ("name",), f"overlay name {overlay.name!r} is used twice")
        names.add(overlay.name)
        if overlay.type == "vxlan":
            key = (overlay.vni, overlay.port)
            if key in vxlan_ports:
                report(overlay.origin + ("vni",), f"overlays {vxlan_ports[key]!r} and {overlay.name!r} both use "
                       f"VNI {overlay.vni} on port {overlay.port}", "give each VXLAN overlay its own VNI")
            vxlan_ports[key] = overlay.name
        # A subnet that did not parse still names a host the overlay joins.
        given = len(overlay.subnets) + sum(1 for p in flawed if p[:-1] == overlay.origin + ("subnets",))
        if given < 2:
            report(overlay.origin + ("subnets",), f"overlay {overlay.name!r} joins {given} host(s); "
                   "an overlay needs at least two")
        for host_name, subnet in overlay.subnets:
            path = overlay.origin + ("subnets", host_name)
            host = hosts.get(host_name)
            if host is None:
                report(path, f"overlay {overlay.name!r}: unknown host {host_name!r}",
                       f"hosts are: {', '.join(hosts)}", key=True)
                continue
            if host.address is None and flawed_under(flawed, host.origin + ("address",)):
                pass  # its address did not parse: that is the error
            elif host.address is None:
                report(path, f"overlay {overlay.name!r}: host {host_name!r} has no underlay address",
                       f"give it one: hosts: {{{host_name}: {{address: <its underlay address>/<prefix>}}}}", key=True)
            elif overlay.type == "vxlan" and host.mtu - vxlan_overhead(host) < 68 and host.name not in mtu_reported:
                mtu_reported.add(host.name)
                report(host.origin + ("mtu",), f"underlay MTU {host.mtu} leaves {host.mtu - vxlan_overhead(host)} for "
                       "VXLAN; the kernel needs at least 68")
            for network, what, _ in claimed:
                if subnet.version == network.version and subnet.overlaps(network):
                    report(path, f"subnet {subnet} of host {host_name!r} overlaps {network} ({what})")
            claimed.append((subnet, f"host {host_name!r} in overlay {overlay.name!r}", path))
            _check_container_addresses(topology, by_place, overlay.name, host_name, subnet, report, flawed)
        _check_families(topology, overlay, report)
        if overlay.type == "host-gw":
            _check_shared_underlay(topology, overlay, report)


def _check_container_addresses(topology: Topology, by_place: dict, overlay: str, host: str, subnet, report: Report,
                               flawed: set[tuple]) -> None:
    """Containers of a host live in its subnet: that is what the other hosts route to it."""
    for ns in topology.namespaces:
        if ns.host != host or flawed_under(flawed, ns.origin + ("host",)):
            continue  # (a namespace whose host: is wrong may be meant for another host)
        for name, origin, addresses in by_place.get(Place(host, ns.name), []):
            base = origin[:-1] if origin and origin[-1] == "name" else origin
            for i, address in enumerate(addresses):
                if address.version == subnet.version and address.ip not in subnet:
                    report(base + ("addresses", i), f"{address.ip} on {name} in namespace {ns.name!r} is outside "
                           f"{subnet}, the subnet overlay {overlay!r} gives host {host!r}",
                           "the other hosts route only that subnet to this host")


def _check_families(topology: Topology, overlay, report: Report) -> None:
    """One overlay speaks one address family for its subnets, and one for its underlay."""
    subnet_families = {subnet.version for _, subnet in overlay.subnets}
    if len(subnet_families) > 1:
        report(overlay.origin + ("subnets",), f"overlay {overlay.name!r} mixes IPv4 and IPv6 subnets",
               "use one overlay per address family")
    hosts = [topology.host(name) for name, _ in overlay.subnets]
    underlay_families = {h.address.version for h in hosts if h is not None and h.address is not None}
    if len(underlay_families) > 1:
        report(overlay.origin + ("subnets",), f"overlay {overlay.name!r} joins hosts with IPv4 and IPv6 underlay "
               "addresses; every host must reach the others over one family")


def _check_shared_underlay(topology: Topology, overlay, report: Report) -> None:
    """host-gw routes point at each remote host's underlay address: it must be on-link."""
    members = [topology.host(name) for name, _ in overlay.subnets]
    members = [h for h in members if h is not None and h.address is not None]
    for host in members:
        for other in members:
            if other is not host and other.address.ip not in host.address.network:
                report(overlay.origin + ("type",),
                       f"host-gw overlay {overlay.name!r}: host {other.name!r} ({other.address.ip}) is not on the "
                       f"underlay subnet of host {host.name!r} ({host.address.network})",
                       "host-gw needs every host on one L2 underlay subnet; use type: vxlan across subnets")
                return


def _check_gateways(topology: Topology, by_place: dict, report: Report, flawed: set[tuple]) -> None:
    """A host's gateway is a neighbour on its underlay subnet, and no interface of the file has it."""
    used = {a.ip: (name, place) for place, interfaces in by_place.items()
            for name, _, addresses in interfaces for a in addresses}
    for host in topology.hosts:
        gateway, path = host.gateway, host.origin + ("gateway",)
        if gateway is None:
            continue
        if host.address is None:
            if not flawed_under(flawed, host.origin + ("address",)):
                report(path, f"host {host.name!r} has a gateway but no underlay address",
                       f"give it the address on the gateway's subnet: hosts: {{{host.name}: {{address: ...}}}}")
            continue
        network = host.address.network
        if gateway.version != network.version or gateway not in network:
            report(path, f"gateway {gateway} of host {host.name!r} is not on its underlay subnet {network}",
                   "a host reaches its gateway directly: use an address of that subnet")
        elif network.version == 4 and network.prefixlen <= 30 and gateway in (network.network_address,
                                                                              network.broadcast_address):
            report(path, f"gateway {gateway} is the {'network' if gateway == network.network_address else 'broadcast'} "
                   f"address of {network}", "use an address of a machine on that subnet")
        elif gateway in used:
            name, place = used[gateway]
            where = f"namespace {place.namespace!r}" if place.namespace else f"host {place.host!r}"
            report(path, f"gateway {gateway} of host {host.name!r} is an address of this topology "
                   f"({name or 'the underlay interface'} in {where})",
                   "the gateway is another machine on the underlay, not one of the file's interfaces")
