"""Kernel state in one vocabulary, for both sides of a plan: desired (compiled from a Topology)
and live (observed over netlink). The planner compares the two with plain equality, so every
value here is canonical: MACs lower-case, addresses and prefixes `ipaddress` objects, route
keys fixed (table, destination, metric).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

from topoctl.spec.model import IPAddress, IPInterface, IPNetwork, route_family_default_metric  # noqa: F401 (re-export)

# A network namespace by name; None is the machine's own (root) namespace.
Scope = Optional[str]

# rtm_protocol topoctl writes on the routes it creates ("t", 116); iproute2 shows it as "proto 116".
ROUTE_PROTO = 116
MAIN_TABLE = 254

OWNER_PREFIX = "topoctl:"


def owner_alias(topology: str) -> str:
    """The interface alias that marks a link as made by `topology`."""
    return OWNER_PREFIX + topology


def owner_from_alias(alias: str | None) -> str | None:
    if alias and alias.startswith(OWNER_PREFIX):
        return alias[len(OWNER_PREFIX):] or None
    return None


# blake2b's personalisation keeps these digests apart from every other use of the hash. Changing
# it, or the input below, changes every derived MAC: an outage of its own (see promises.md).
_LINK_MAC_PERSON = b"topoctl.mac.v1"
LINK_MAC_PLACES = ("netns", "host", "underlay")


def link_mac(topology: str, place: str, where: str, name: str) -> str:
    """The MAC of an interface topoctl makes without a `mac` in the file, from names only: a
    re-created interface gets its old MAC back, so its neighbours' caches stay right. `place` is
    `netns` (container namespace `where`), `host` (host `where`'s own namespace, emulated or not)
    or `underlay` (`where` empty). Each field goes in with its length: no two inputs run together."""
    assert place in LINK_MAC_PLACES
    data = bytearray()
    for part in (topology, place, where, name):
        raw = part.encode()
        data += len(raw).to_bytes(2, "big") + raw
    mac = bytearray(hashlib.blake2b(data, digest_size=6, person=_LINK_MAC_PERSON).digest())
    mac[0] = (mac[0] & 0xFE) | 0x02  # unicast (bit 0 clear), locally administered (bit 1 set)
    return mac.hex(":")


def scope_label(scope: Scope) -> str:
    return scope if scope is not None else "(root)"


def network_order(network: IPNetwork) -> tuple[int, int, int]:
    """Sorts networks as ipaddress does (family, then address, then mask), comparing ints:
    ipaddress's own __lt__ costs microseconds, and plans sort thousands of them."""
    return (network.version, int(network.network_address), int(network.netmask))


def interface_order(interface: IPInterface) -> tuple[int, int, int, int]:
    """Sorts interfaces as ipaddress does: by network, then address."""
    return (*network_order(interface.network), int(interface.ip))


def scope_sort(scope: Scope) -> str:
    return "" if scope is None else scope


@dataclass(frozen=True)
class Netns:
    """A network namespace in /run/netns. `owner` is the topology that recorded it as its own."""

    name: str
    owner: str | None = None
    host: str | None = None
    role: str = "container"  # or "host" for an emulated host


@dataclass(frozen=True)
class Vxlan:
    """What makes a VXLAN device. `vni` and `port` cannot change on a live device."""

    vni: int
    port: int
    local: IPAddress | None = None
    learning: bool = False
    underlay: str | None = None  # the device VXLAN packets leave through

    FIXED = ("vni", "port")  # the kernel refuses to change these in place


@dataclass(frozen=True)
class Link:
    """A network interface. `None` for mtu or mac means: not managed, any value will do."""

    scope: Scope
    name: str
    kind: str  # bridge | veth | loopback | the kernel's kind string for anything else
    up: bool = True
    mtu: int | None = None
    mac: str | None = None
    master: str | None = None
    peer: tuple[Scope, str] | None = None  # the other end of a veth
    stp: bool | None = None  # bridges only
    vxlan: Vxlan | None = None  # VXLAN devices only
    owner: str | None = None
    index: int = field(default=0, compare=False)  # live ifindex; not part of the state
    port_state: int | None = field(default=None, compare=False)  # live only: a bridge port's STP state

    @property
    def key(self) -> tuple[Scope, str]:
        return (self.scope, self.name)


@dataclass(frozen=True)
class Address:
    scope: Scope
    link: str
    interface: IPInterface

    @property
    def kernel_made(self) -> bool:
        """An IPv6 link-local address: the kernel gives every interface one; topoctl never manages it."""
        # fe80::/10 by its top ten bits: ipaddress's is_link_local builds an IPv6Network from
        # text on every call (25 us; a plan at N=1000 asks 4000 times)
        return self.interface.version == 6 and int(self.interface.ip) >> 118 == 0xFE80 >> 6


@dataclass(frozen=True)
class RouteEntry:
    scope: Scope
    dst: IPNetwork
    via: IPAddress | None = None
    dev: str | None = None
    metric: int = 0
    table: int = MAIN_TABLE
    proto: int = ROUTE_PROTO
    onlink: bool = False  # the gateway is on the device even though no address says so (VXLAN peers)
    owner: str | None = None

    @property
    def key(self) -> tuple:
        return (self.scope, self.table, self.dst, self.metric)

    def satisfied_by(self, live: "RouteEntry") -> bool:
        """Whether a live route already is this desired one. A desired route without a device
        (its gateway is reached through an interface the topology does not manage) accepts
        whichever device the kernel chose."""
        return ((self.via, self.proto, self.onlink) == (live.via, live.proto, live.onlink)
                and self.dev in (None, live.dev))


def route_record_key(route: RouteEntry) -> str:
    """How a root-namespace route is named in topoctl's records (table, destination, metric)."""
    return f"{route.table} {route.dst} {route.metric}"


@dataclass(frozen=True)
class Neighbour:
    """A permanent neighbour entry: `ip` is reached at `mac` on `dev` (a remote VTEP)."""

    scope: Scope
    dev: str
    ip: IPAddress
    mac: str


@dataclass(frozen=True)
class Fdb:
    """A forwarding entry of a VXLAN device: frames for `mac` go to the underlay address `dst`."""

    scope: Scope
    dev: str
    mac: str
    dst: IPAddress


@dataclass(frozen=True)
class NftChain:
    """A chain as `nft list table` prints it: its header line (empty for a regular chain) and its
    rules, each in nft's own canonical text, so that what is read back compares equal."""

    name: str
    header: str  # "type nat hook prerouting priority dstnat; policy accept;"
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class NftTable:
    """A whole nftables table. topoctl owns the tables named after its topology, never others."""

    scope: Scope
    family: str  # inet | ip | ip6 | bridge | ...
    name: str
    chains: tuple[NftChain, ...] = ()

    @property
    def key(self) -> tuple[Scope, str, str]:
        return (self.scope, self.family, self.name)


@dataclass(frozen=True)
class Tbf:
    """A tbf root qdisc (a veth end's `rate`) as the kernel reports it: rate in bits per second
    (a multiple of 8), the bucket in bytes, the queue in bytes. `requested_burst` is the burst
    written, which the kernel keeps as a time and reports a little rounded."""

    rate: int
    burst: int
    limit: int
    requested_burst: int = field(default=0, compare=False)


OTHER_QDISC = "other"  # live only: a root qdisc topoctl did not make (another kind, or other settings)


def nft_table_name(topology: str) -> str:
    return "topoctl-" + topology


@dataclass
class State:
    """A whole kernel state. Built once (by the compiler or the observer), then only read."""

    namespaces: dict[str, Netns] = field(default_factory=dict)
    links: dict[tuple[Scope, str], Link] = field(default_factory=dict)
    addresses: set[Address] = field(default_factory=set)
    routes: dict[tuple, RouteEntry] = field(default_factory=dict)
    sysctls: dict[tuple[Scope, str], str] = field(default_factory=dict)
    neighbours: set[Neighbour] = field(default_factory=set)
    fdb: set[Fdb] = field(default_factory=set)
    tables: dict[tuple[Scope, str, str], NftTable] = field(default_factory=dict)
    qdiscs: dict[tuple[Scope, str], "Tbf | str"] = field(default_factory=dict)  # root qdiscs of links with a rate
    # Base chains of other tables whose policy drops forwarded traffic ("ip filter FORWARD").
    foreign_drops: dict[Scope, tuple[str, ...]] = field(default_factory=dict)
    foreign_tables: dict[Scope, tuple[str, ...]] = field(default_factory=dict)  # "family name" of others' tables
    # Why a sysctl is wanted when the file does not say it (forwarding derived from the design).
    sysctl_reasons: dict[tuple[Scope, str], str] = field(default_factory=dict)
    # The scopes this state speaks for: the planner only deletes what it saw in them.
    scopes: set[Scope] = field(default_factory=set)

    def add_link(self, link: Link) -> None:
        self.links[link.key] = link

    def add_route(self, route: RouteEntry) -> None:
        self.routes[route.key] = route

    def links_in(self, scope: Scope) -> list[Link]:
        return [link for (s, _), link in self.links.items() if s == scope]

