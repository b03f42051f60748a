"""The desired topology as written in a file: frozen dataclasses with ipaddress types.

Everything past the loader works on these. Each object keeps `origin`, the path of keys
that led to it in the file, so semantic checks can point at a line; it takes no part in
comparisons.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

Path = tuple  # keys and indices from the document root, e.g. ("links", 0, "endpoints", 1)

IMPLICIT_HOST = "local"
DEFAULT_MTU = 1500


def flawed_under(flawed: set[Path] | frozenset[Path], prefix: Path) -> bool:
    """Whether a value at or under `prefix` was found invalid (see values.Problems.flawed)."""
    return any(path[: len(prefix)] == prefix for path in flawed)


def _origin() -> Path:
    return field(default=(), compare=False, repr=False)


DEFAULT_UNDERLAY_INTERFACE = "eth0"
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8, as flannel subtracts
VXLAN6_OVERHEAD = 70  # the same over an IPv6 underlay (40-byte header)


@dataclass(frozen=True)
class Host:
    name: str
    address: IPInterface | None = None  # on the underlay
    interface: str | None = None  # the underlay interface, when the file names it
    mtu: int = DEFAULT_MTU  # of the underlay
    gateway: IPAddress | None = None  # the host's way out; the emulated underlay answers there
    sysctls: tuple[tuple[str, str], ...] = ()
    origin: Path = _origin()


def underlay_interface(host: "Host", emulate: bool) -> str | None:
    """The underlay interface: as named, else eth0 when emulated (topoctl makes it), else
    unknown (the kernel picks it by route)."""
    return host.interface or (DEFAULT_UNDERLAY_INTERFACE if emulate else None)


def vxlan_overhead(host: "Host") -> int:
    return VXLAN6_OVERHEAD if host.address is not None and host.address.version == 6 else VXLAN_OVERHEAD


@dataclass(frozen=True)
class Route:
    """A route as the file states it. `dev` is filled in by the compiler when left out."""

    to: IPNetwork
    via: IPAddress | None = None
    dev: str | None = None
    metric: int | None = None
    origin: Path = _origin()


@dataclass(frozen=True)
class Bridge:
    name: str  # the interface name
    host: str
    addresses: tuple[IPInterface, ...] = ()
    mtu: int = DEFAULT_MTU
    mac: str | None = None
    stp: bool = False
    up: bool = True
    masquerade: bool = False  # SNAT what leaves its subnets through another interface
    isolated: bool = False  # no forwarding between it and the host's other bridges
    icc: bool = True  # containers on it may reach each other
    key: str = ""  # how the file names it (bridges: KEY); endpoints refer to it by this
    origin: Path = _origin()


@dataclass(frozen=True)
class PublishedPort:
    """Docker's -p: HOST_PORT on the namespace's host (on `host_ip`, or on every local address
    when None) is forwarded to CONTAINER_PORT of the namespace."""

    host_port: int
    container_port: int
    proto: str = "tcp"  # tcp | udp
    host_ip: IPAddress | None = None
    origin: Path = _origin()

    def label(self) -> str:
        ip = "" if self.host_ip is None else (f"[{self.host_ip}]:" if self.host_ip.version == 6 else f"{self.host_ip}:")
        return f"{ip}{self.host_port}:{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class FirewallRule:
    """One allow rule: every field given must match. `ports` is an inclusive range."""

    source: IPNetwork | None = None
    dest: IPNetwork | None = None
    proto: str | None = None  # tcp | udp | icmp | icmpv6
    ports: tuple[int, int] | None = None
    origin: Path = _origin()


@dataclass(frozen=True)
class FirewallDirection:
    default: str = "accept"  # accept | drop
    allow: tuple[FirewallRule, ...] = ()


@dataclass(frozen=True)
class Firewall:
    """Rules in a container's own namespace; replies of allowed traffic always pass."""

    inbound: FirewallDirection = FirewallDirection()
    outbound: FirewallDirection = FirewallDirection()


@dataclass(frozen=True)
class Namespace:
    name: str
    host: str
    routes: tuple[Route, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    ports: tuple[PublishedPort, ...] = ()
    firewall: Firewall | None = None
    origin: Path = _origin()


@dataclass(frozen=True)
class Endpoint:
    """One end of a veth. Exactly one of namespace / bridge / host places it.

    `namespace`: inside that container namespace. `bridge`: in the bridge's host, as a port
    of the bridge. `host`: in the host's own namespace, not attached to anything.
    """

    name: str
    namespace: str | None = None
    bridge: str | None = None
    host: str | None = None
    addresses: tuple[IPInterface, ...] = ()
    mtu: int = DEFAULT_MTU
    mac: str | None = None
    up: bool = True
    rate: int | None = None  # egress limit, bits per second (a tbf root qdisc)
    burst: int | None = None  # bytes; None: derived from the rate and the MTU
    origin: Path = _origin()


@dataclass(frozen=True)
class VethLink:
    a: Endpoint
    b: Endpoint
    origin: Path = _origin()


@dataclass(frozen=True)
class HostRoute:
    host: str
    route: Route
    origin: Path = _origin()


@dataclass(frozen=True)
class Overlay:
    """Joins each host's container subnet across hosts: VXLAN (as flannel) or host-gw routes."""

    name: str
    type: str  # vxlan | host-gw
    subnets: tuple[tuple[str, IPNetwork], ...]  # (host, its container subnet)
    vni: int = 1
    port: int = 8472
    device: str = ""  # the VXLAN device; "" for host-gw
    origin: Path = _origin()

    def subnet_of(self, host: str) -> IPNetwork | None:
        return next((net for name, net in self.subnets if name == host), None)


@dataclass(frozen=True)
class Topology:
    name: str
    hosts: tuple[Host, ...]
    bridges: tuple[Bridge, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    links: tuple[VethLink, ...] = ()
    routes: tuple[HostRoute, ...] = ()
    overlays: tuple[Overlay, ...] = ()
    source: str = field(default="<memory>", compare=False)
    warnings: tuple = field(default=(), compare=False)  # Diagnostics of what is probably wrong but valid

    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def host(self, name: str) -> Host | None:
        return self._hosts_by_name.get(name)

    def bridge(self, name: str) -> Bridge | None:
        return self._bridges_by_name.get(name)

    def namespace(self, name: str) -> Namespace | None:
        return self._namespaces_by_name.get(name)

    # Indexes, built on first use: lookups by name happen per link and per route.
    @cached_property
    def _hosts_by_name(self) -> dict[str, Host]:
        return {h.name: h for h in self.hosts}

    @cached_property
    def _bridges_by_name(self) -> dict[str, Bridge]:
        return {b.key or b.name: b for b in reversed(self.bridges)}

    @cached_property
    def _namespaces_by_name(self) -> dict[str, Namespace]:
        return {n.name: n for n in reversed(self.namespaces)}


def canonical_mac(text: str) -> str:
    """Lower-case, colon-separated: the one form every comparison uses."""
    return text.replace("-", ":").lower()


_KERNEL_NUMBER = re.compile(r"(-?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))")


def kernel_integer(token: str) -> int | None:
    """How the kernel's proc_dointvec family reads one number (proc_get_long: an optional '-',
    then base 0: 0x hex, a leading 0 octal, else decimal), or None for a token it does not take
    as a number or refuses (as '08')."""
    match = _KERNEL_NUMBER.fullmatch(token)
    if match is None:
        return None
    sign, hexa, octal, decimal = match.groups()
    value = int(hexa, 16) if hexa else int(octal, 8) if octal else int(decimal)
    return -value if sign else value


def canonical_sysctl(value: str) -> str:
    """A sysctl value in the one form every comparison uses: what the kernel prints, with its
    separators (tabs between an integer vector's items) read as one space, the way
    kernel.read_sysctls reads /proc/sys. "32768  60999" and "0x8000\t60999" are "32768 60999".
    A value that is not all numbers (a string sysctl) only has its whitespace runs made one space."""
    tokens = value.split()
    numbers = [kernel_integer(t) for t in tokens]
    if tokens and None not in numbers:
        return " ".join(str(n) for n in numbers)
    return " ".join(tokens)


def default_route_for(via: IPAddress | None) -> IPNetwork:
    if via is not None and via.version == 6:
        return ipaddress.IPv6Network("::/0")
    return ipaddress.IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class Place:
    """Where an interface lives: a host, and a container namespace on it or (None) the host's own."""

    host: str
    namespace: str | None


def place_of(topology: Topology, end: Endpoint) -> Place | None:
    """The place of a veth end, or None when it names something that does not exist."""
    if end.namespace is not None:
        ns = topology.namespace(end.namespace)
        return Place(ns.host, ns.name) if ns else None
    if end.bridge is not None:
        bridge = topology.bridge(end.bridge)
        return Place(bridge.host, None) if bridge else None
    if end.host is not None:
        return Place(end.host, None) if end.host in topology.host_names() else None
    if len(topology.hosts) == 1:
        return Place(topology.hosts[0].name, None)
    return None


def derived_mac(*parts: str) -> str:
    """A MAC computed from names only: the same on every run and every host, locally
    administered and unicast."""
    import hashlib

    digest = bytearray(hashlib.sha256("/".join(("topoctl",) + parts).encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def vtep_address(subnet: IPNetwork) -> IPInterface:
    """The address a VXLAN device carries for its host's subnet: the subnet's first address as a
    host route (/32 or /128), as flannel gives flannel.1 10.244.1.0/32."""
    return ipaddress.ip_interface(f"{subnet.network_address}/{subnet.max_prefixlen}")


def route_family_default_metric(dst: IPNetwork) -> int:
    """The metric the kernel gives a route added without one."""
    return 1024 if dst.version == 6 else 0
