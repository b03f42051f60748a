"""The desired state of what joins hosts: the emulated underlay, VXLAN (as flannel's vxlan
backend does it) and host-gw overlays. Pure; called by desired.py."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import TYPE_CHECKING

from topoctl.spec.model import Host, Overlay, Topology, derived_mac, underlay_interface, vtep_address, vxlan_overhead
from topoctl.core.state import Address, Fdb, Link, Neighbour, RouteEntry, State, Vxlan, link_mac, route_family_default_metric

if TYPE_CHECKING:
    from topoctl.core.realisation import Realisation

UNDERLAY_BRIDGE = "br-underlay"


def vtep_mac(topology: str, overlay: str, host: str) -> str:
    """A host's VTEP MAC, derived from names only, so every host computes its peers' entries
    without asking them."""
    return derived_mac(topology, overlay, host)


def underlay_port(host: str) -> str:
    """The name of a host's cable end on the emulated underlay bridge: 'u-' and the host's name,
    or a hash of it when that would pass 15 bytes (so it never meets 'lo' or the bridge)."""
    if len(host.encode()) <= 13:
        return "u-" + host
    return "u-" + hashlib.sha256(host.encode()).hexdigest()[:13]


def add_underlay(state: State, topology: Topology, realisation: "Realisation") -> None:
    """Emulated hosts meet on a bridge in `<topology>-underlay`; each host's underlay interface
    (eth0 unless the file says otherwise) is one end of a veth plugged into it."""
    owner = topology.name
    scope = realisation.underlay_scope
    with_address = [h for h in topology.hosts if h.address is not None]
    state.add_link(Link(scope=scope, name=UNDERLAY_BRIDGE, kind="bridge", up=True,
                        mtu=max(h.mtu for h in with_address), mac=derived_mac(owner, "underlay"), stp=False,
                        owner=owner))
    # Every host's gateway, also under --host: the bridge is shared, and a partial run must not
    # take away what the other hosts' runs put there.
    for host in with_address:
        if host.gateway is not None:
            state.addresses.add(Address(scope, UNDERLAY_BRIDGE,
                                        ipaddress.ip_interface(f"{host.gateway}/{host.address.network.prefixlen}")))
    for host in with_address:
        if host.name not in realisation.hosts:
            continue
        host_scope = realisation.host_scope(host.name)
        port = underlay_port(host.name)
        interface = underlay_interface(host, emulate=True)
        # Derived MACs, as for every veth: the other hosts cache this end's, and a re-made cable keeps it.
        state.add_link(Link(scope=host_scope, name=interface, kind="veth", up=True, mtu=host.mtu,
                            mac=link_mac(owner, "host", host.name, interface), peer=(scope, port), owner=owner))
        state.add_link(Link(scope=scope, name=port, kind="veth", up=True, mtu=host.mtu, master=UNDERLAY_BRIDGE,
                            mac=link_mac(owner, "underlay", "", port), peer=(host_scope, interface), owner=owner))
        state.addresses.add(Address(host_scope, interface, host.address))


def _vxlan(state: State, topology: Topology, realisation: "Realisation", overlay: Overlay, host: Host,
           members: list[tuple[Host, object]]) -> None:
    scope = realisation.host_scope(host.name)
    owner = topology.name
    device = overlay.device
    subnet = overlay.subnet_of(host.name)
    state.add_link(Link(
        scope=scope, name=device, kind="vxlan", up=True, mtu=host.mtu - vxlan_overhead(host),
        mac=vtep_mac(owner, overlay.name, host.name), owner=owner,
        vxlan=Vxlan(vni=overlay.vni, port=overlay.port, local=host.address.ip, learning=False,
                    underlay=underlay_interface(host, realisation.emulate)),
    ))
    state.addresses.add(Address(scope, device, vtep_address(subnet)))
    for remote, remote_subnet in members:
        if remote is host:
            continue
        remote_vtep = vtep_address(remote_subnet).ip
        remote_mac = vtep_mac(owner, overlay.name, remote.name)
        state.neighbours.add(Neighbour(scope, device, remote_vtep, remote_mac))
        state.fdb.add(Fdb(scope, device, remote_mac, remote.address.ip))
        state.add_route(RouteEntry(scope=scope, dst=remote_subnet, via=remote_vtep, dev=device, onlink=True,
                                   metric=route_family_default_metric(remote_subnet), owner=owner))


def _host_gw(state: State, topology: Topology, realisation: "Realisation", host: Host,
             members: list[tuple[Host, object]]) -> None:
    scope = realisation.host_scope(host.name)
    for remote, remote_subnet in members:
        if remote is not host:
            state.add_route(RouteEntry(scope=scope, dst=remote_subnet, via=remote.address.ip,
                                       dev=underlay_interface(host, realisation.emulate),
                                       metric=route_family_default_metric(remote_subnet), owner=topology.name))


def add_overlays(state: State, topology: Topology, realisation: "Realisation") -> None:
    for overlay in topology.overlays:
        members = [(topology.host(name), subnet) for name, subnet in overlay.subnets]
        for host, _ in members:
            if host.name not in realisation.hosts:
                continue
            if overlay.type == "vxlan":
                _vxlan(state, topology, realisation, overlay, host, members)
            else:
                _host_gw(state, topology, realisation, host, members)
