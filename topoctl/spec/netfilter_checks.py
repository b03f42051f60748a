"""Semantic checks of what becomes netfilter state: published ports, masquerade, and forwarding
keys a file turns off where the design needs them. Called by checks.check_topology."""

from __future__ import annotations

from typing import Callable

from topoctl.spec.forwarding import SAME_SWITCH, container_addresses, forwarding_needs
from topoctl.spec.model import PublishedPort, Topology

Report = Callable[..., None]


def _overlap(a: PublishedPort, b: PublishedPort) -> bool:
    """Whether two published ports claim the same packets: one protocol and host port, and host
    addresses that meet (no address means every address of the host, of both families)."""
    if (a.proto, a.host_port) != (b.proto, b.host_port):
        return False
    return a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip


def check_netfilter(topology: Topology, report: Report) -> None:
    _check_ports(topology, report)
    _check_masquerade(topology, report)
    _check_forwarding_keys(topology, report)


def _check_ports(topology: Topology, report: Report) -> None:
    seen: dict[str, list[tuple[str, PublishedPort]]] = {}
    for ns in topology.namespaces:
        if not ns.ports:
            continue
        families = {address.version for address, _ in container_addresses(topology, ns.name)}
        for port in ns.ports:
            if not families:
                report(port.origin, f"namespace {ns.name} publishes {port.label()} but has no address on a bridge "
                       f"of host {ns.host}", "a published port is forwarded to the namespace's address on a bridge: "
                       "give it a veth to a bridge, with an address")
            elif port.host_ip is not None and port.host_ip.version not in families:
                report(port.origin, f"{port.label()}: namespace {ns.name} has no IPv{port.host_ip.version} address "
                       "on a bridge to forward it to", f"give its veth an IPv{port.host_ip.version} address, "
                       "or publish on an address of the other family")
            for other_ns, other in seen.get(ns.host, []):
                if _overlap(port, other):
                    report(port.origin, f"host port {port.host_port}/{port.proto} of host {ns.host} is published "
                           f"twice: {port.label()} (namespace {ns.name}) and {other.label()} (namespace {other_ns})",
                           "give each a different host port or host address")
                    break
            seen.setdefault(ns.host, []).append((ns.name, port))


def _check_masquerade(topology: Topology, report: Report) -> None:
    for bridge in topology.bridges:
        if bridge.masquerade and not bridge.addresses:
            report(bridge.origin + ("masquerade",), f"bridge {bridge.name} masquerades but has no address",
                   "masquerade rewrites traffic from the bridge's subnets: give the bridge its gateway address",
                   key=True)


def _check_forwarding_keys(topology: Topology, report: Report) -> None:
    hosts = {h.name: h for h in topology.hosts}
    for need in forwarding_needs(topology):
        host = hosts.get(need.host)
        if host is None:
            continue
        for key, value in host.sysctls:
            if key in SAME_SWITCH[need.key] and value == "0":
                report(host.origin + ("sysctls", key), f"sysctl {key} is 0, but host {host.name} must forward: "
                       f"{need.reason} needs it", f"remove the key (topoctl turns forwarding on where the design "
                       "needs it) or change the design")
