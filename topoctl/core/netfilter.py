"""The desired netfilter state: topoctl's nftables tables in each host and container, and the
sysctls the design needs (forwarding, route_localnet), with why. Pure; called by desired.py.

Each rule is written in the text `nft list table` prints back for it, so the live table read
back compares equal (tests/integration/test_netfilter.py proves it for every kind of rule).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from topoctl.core.nft_text import canonical_rule
from topoctl.core.state import NftChain, NftTable, Scope, State, nft_table_name
from topoctl.spec.forwarding import container_addresses, forwarding_needs
from topoctl.spec.model import Bridge, FirewallDirection, FirewallRule, IPNetwork, Namespace, PublishedPort, Topology

if TYPE_CHECKING:
    from topoctl.core.realisation import Realisation

NAT_PREROUTING = "type nat hook prerouting priority dstnat; policy accept;"
NAT_OUTPUT = "type nat hook output priority -100; policy accept;"
NAT_POSTROUTING = "type nat hook postrouting priority srcnat; policy accept;"
FILTER_FORWARD = "type filter hook forward priority filter; policy accept;"
LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
ND_TYPES = "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept"
L4_NAMES = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp"}


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ip(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _prefix_text(network: IPNetwork) -> str:
    # nft prints a host prefix as the bare address
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)


def _set_text(names: list[str]) -> str:
    quoted = [_quoted(n) for n in names]
    return quoted[0] if len(quoted) == 1 else "{ " + ", ".join(quoted) + " }"


def _dnat_target(address, port: int) -> str:
    return f"ip to {address}:{port}" if address.version == 4 else f"ip6 to [{address}]:{port}"


def _port_rules(port: PublishedPort, target) -> tuple[list[str], list[str]]:
    """(prerouting rules, output rules) of one published port to one container address."""
    dnat = f"{port.proto} dport {port.host_port} dnat {_dnat_target(target, port.container_port)}"
    if port.host_ip is None:
        rule = f"fib daddr type local {dnat}"
        return [rule], [rule]
    rule = f"{_ip(port.host_ip.version)} daddr {port.host_ip} {dnat}"
    if port.host_ip.is_loopback:
        return [], [rule]  # only the host itself reaches its loopback
    return [rule], [rule]


class _HostTables:
    """What one host's tables hold, gathered while walking the topology."""

    def __init__(self) -> None:
        self.prerouting: list[str] = []
        self.output: list[str] = []
        self.postrouting: list[str] = []
        self.forward: list[str] = []
        self.bridge_forward: list[str] = []

    def inet(self, scope: Scope, name: str) -> NftTable | None:
        chains = [NftChain(chain, header, _rules(rules)) for chain, header, rules in (
            ("prerouting", NAT_PREROUTING, self.prerouting), ("output", NAT_OUTPUT, self.output),
            ("postrouting", NAT_POSTROUTING, self.postrouting), ("forward", FILTER_FORWARD, self.forward)) if rules]
        return NftTable(scope, "inet", name, tuple(chains)) if chains else None

    def bridge(self, scope: Scope, name: str) -> NftTable | None:
        if not self.bridge_forward:
            return None
        return NftTable(scope, "bridge", name, (NftChain("forward", FILTER_FORWARD, _rules(self.bridge_forward)),))


def _rules(rules: list[str]) -> tuple[str, ...]:
    """In order, once each, in the form compared with what is read back."""
    return tuple(dict.fromkeys(canonical_rule(r) for r in rules))


def _subnets(bridge: Bridge, version: int) -> list[IPNetwork]:
    return sorted({a.network for a in bridge.addresses if a.version == version})


def _bridge_ports(topology: Topology, bridge: Bridge) -> list[str]:
    ports = [end.name for link in topology.links for end in (link.a, link.b) if end.bridge == (bridge.key or bridge.name)]
    return sorted(set(ports))


def _publish(topology: Topology, ns: Namespace, tables: _HostTables, localnet: dict[str, str]) -> None:
    addresses = container_addresses(topology, ns.name)
    for port in ns.ports:
        for version in (4, 6):
            if port.host_ip is not None and port.host_ip.version != version:
                continue
            target = next(((a, b) for a, b in addresses if a.version == version), None)
            if target is None:
                continue
            address, bridge = target
            pre, out = _port_rules(port, address.ip)
            tables.prerouting += pre
            tables.output += out
            # A container reaching a port of its own bridge through the host: the reply must
            # come back through the host, not straight across the bridge. (Postrouting knows no
            # input interface: the bridge's subnets stand for it.)
            for network in _subnets(bridge, version):
                tables.postrouting.append(f"{_ip(version)} saddr {_prefix_text(network)} oifname "
                                          f"{_quoted(bridge.name)} ct status dnat masquerade")
            if version == 4 and (port.host_ip is None or port.host_ip.is_loopback):
                # 127.0.0.1 DNATed out of the bridge: the kernel drops such packets unless
                # route_localnet allows it, and the container could not answer 127.0.0.1.
                localnet.setdefault(bridge.name, f"published port {port.label()} of namespace {ns.name}")
                tables.postrouting.append(f"ip saddr {LOOPBACK_V4} oifname {_quoted(bridge.name)} masquerade")


def _host_tables(topology: Topology, host: str) -> tuple[_HostTables, dict[str, str]]:
    tables = _HostTables()
    localnet: dict[str, str] = {}
    bridges = [b for b in topology.bridges if b.host == host]
    for bridge in bridges:
        if bridge.masquerade:
            for network in _subnets(bridge, 4) + _subnets(bridge, 6):
                tables.postrouting.append(
                    f"{_ip(network.version)} saddr {_prefix_text(network)} oifname != {_quoted(bridge.name)} masquerade")
    for ns in topology.namespaces:
        if ns.host == host and ns.ports:
            _publish(topology, ns, tables, localnet)
    for bridge in bridges:
        if bridge.isolated:
            for other in bridges:
                if other is not bridge:
                    for a, b in ((bridge, other), (other, bridge)):
                        tables.forward.append(f"iifname {_quoted(a.name)} oifname {_quoted(b.name)} drop")
        if not bridge.icc:
            ports = _bridge_ports(topology, bridge)
            if len(ports) > 1:
                tables.bridge_forward.append(f"iifname {_set_text(ports)} oifname {_set_text(ports)} drop")
    # postrouting: the order rules were found in is kept, duplicates dropped (dict.fromkeys)
    tables.forward = sorted(set(tables.forward))
    return tables, localnet


def _rule_text(rule: FirewallRule, inbound: bool) -> str:
    parts = []
    if rule.source is not None:
        parts.append(f"{_ip(rule.source.version)} saddr {_prefix_text(rule.source)}")
    if rule.dest is not None:
        parts.append(f"{_ip(rule.dest.version)} daddr {_prefix_text(rule.dest)}")
    if rule.ports is not None:
        first, last = rule.ports
        parts.append(f"{rule.proto} dport {first}" + (f"-{last}" if last != first else ""))
    elif rule.proto is not None:
        parts.append(f"meta l4proto {L4_NAMES[rule.proto]}")
    return " ".join(parts + ["accept"])


def _direction_chain(name: str, hook: str, direction: FirewallDirection, ipv6: bool) -> NftChain:
    rules = ["ct state established,related accept", f'{"iif" if hook == "input" else "oif"} "lo" accept']
    if ipv6 and direction.default == "drop":
        rules.append(ND_TYPES)  # without neighbour discovery no IPv6 address is reachable at all
    rules += [_rule_text(r, hook == "input") for r in direction.allow]
    header = f"type filter hook {hook} priority filter; policy {direction.default};"
    return NftChain(name, header, _rules(rules))


def _container_table(topology: Topology, ns: Namespace) -> NftTable | None:
    fw = ns.firewall
    if fw is None:
        return None
    ipv6 = any(a.version == 6 for link in topology.links for end in (link.a, link.b)
               if end.namespace == ns.name for a in end.addresses)
    chains = [_direction_chain("input", "input", fw.inbound, ipv6), _direction_chain("output", "output", fw.outbound, ipv6)]
    return NftTable(ns.name, "inet", nft_table_name(topology.name), tuple(chains))


def add_netfilter(state: State, topology: Topology, realisation: "Realisation") -> None:
    """Tables, and the sysctls the design needs (unless the file sets them), into `state`."""
    selected = set(realisation.hosts)
    name = nft_table_name(topology.name)
    explicit_host = {(h.name, key) for h in topology.hosts for key, _ in h.sysctls}
    for host in topology.hosts:
        if host.name not in selected:
            continue
        scope = realisation.host_scope(host.name)
        tables, localnet = _host_tables(topology, host.name)
        for table in (tables.inet(scope, name), tables.bridge(scope, name)):
            if table is not None:
                state.tables[table.key] = table
        for bridge, reason in sorted(localnet.items()):
            key = f"net.ipv4.conf.{bridge}.route_localnet"
            if (host.name, key) not in explicit_host:
                state.sysctls[(scope, key)] = "1"
                state.sysctl_reasons[(scope, key)] = reason
    for need in forwarding_needs(topology):
        if need.host in selected and (need.host, need.key) not in explicit_host:
            scope = realisation.host_scope(need.host)
            state.sysctls[(scope, need.key)] = "1"
            state.sysctl_reasons[(scope, need.key)] = need.reason
    for ns in topology.namespaces:
        if ns.host in selected:
            table = _container_table(topology, ns)
            if table is not None:
                state.tables[table.key] = table
