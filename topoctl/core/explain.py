"""Why a probe did not get through: the path it takes, namespace by namespace, read from a
recorded live state, up to the first hop that breaks, with the fix. Pure: unit-tested from
fixtures; the kernel layer (run/checking.py) gathers the facts.

The walk follows what the kernel would do: a route lookup (connected subnets of interfaces
that are up, then the routes read), the interface and its veth peer (up, MTU), the bridge and
the port whose peer holds the next hop, VXLAN's neighbour and FDB entries and the underlay,
forwarding and rp_filter where the packet crosses a namespace; then the reply's way back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from topoctl.core.probes import IPV4_HEADERS, IPV6_HEADERS, Outcome, Probe
from topoctl.core.state import Link, RouteEntry, Scope, State, scope_label
from topoctl.spec.model import IPAddress, IPNetwork

MAX_HOPS = 16
BR_STATE_FORWARDING = 3
BR_STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}


@dataclass(frozen=True)
class Hop:
    scope: Scope
    what: str  # route | link | peer | bridge | port | address | neighbour | vxlan | forwarding | rp_filter | mtu | firewall
    ok: bool
    text: str
    fix: str = ""

    def as_json(self) -> dict:
        return {"namespace": self.scope, "what": self.what, "ok": self.ok, "text": self.text, "fix": self.fix}


@dataclass(frozen=True)
class Checked:
    """A probe's outcome, and the walk that explains it when it is not as designed."""

    outcome: Outcome
    hops: tuple[Hop, ...] = ()

    @property
    def as_designed(self) -> bool:
        return self.outcome.reached == self.outcome.probe.expect


@dataclass(frozen=True)
class CheckReport:
    results: tuple[Checked, ...]
    seconds: float

    @property
    def as_designed(self) -> bool:
        return all(r.as_designed for r in self.results)


@dataclass
class Facts:
    """What the walk reads: the live state (links, addresses, routes, VXLAN entries, tables),
    the neighbour cache's entry states, and the sysctls that decide forwarding."""

    state: State
    topology: str
    neighbour_states: dict[tuple[Scope, str, IPAddress], str] = field(default_factory=dict)  # "FAILED", ...
    sysctls: dict[tuple[Scope, str], str] = field(default_factory=dict)
    masquerading: dict[Scope, tuple[IPNetwork, ...]] = field(default_factory=dict)  # host -> masqueraded subnets
    # what other tables than topoctl's may drop, by scope: (table, chain, hook, "policy drop" or the rule)
    foreign_rules: dict[Scope, list[tuple[str, str, str, str]]] = field(default_factory=dict)
    # the kernel's neighbour table (ARP, ND) is one for all namespaces: its entries (counted in the
    # namespaces read) and its hard limit gc_thresh3, by IP version
    neighbour_entries: dict[int, int] = field(default_factory=dict)
    neighbour_limit: dict[int, int] = field(default_factory=dict)
    # what the kernel answers for (namespace, address), as `ip route get` (policy rules and every
    # table included): (dev, gateway), or None when it has no route
    kernel_routes: dict[tuple[Scope, IPAddress], "tuple[str | None, IPAddress | None] | None"] = field(
        default_factory=dict)
    _index: "StateIndex | None" = field(default=None, repr=False)

    def index(self) -> "StateIndex":
        """The state indexed, on first use: the facts are not changed once a walk has begun."""
        if self._index is None:
            self._index = StateIndex(self.state)
        return self._index


@dataclass(frozen=True)
class _Route:
    dst: IPNetwork
    dev: str
    via: IPAddress | None
    connected: bool


class _Broken(Exception):
    def __init__(self, hop: Hop) -> None:
        self.hop = hop


def _fix(link: Link | None, facts: Facts, what: str) -> str:
    if link is not None and link.owner == facts.topology:
        return f"topoctl apply {what}"
    return ""


class StateIndex:
    """The live state by namespace, built once per check: a walk asks the same few questions
    of thousands of objects (2,000 probes at N=1000 would otherwise scan them all each time)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.addresses: dict[Scope, list] = {}
        self.on_link: dict[tuple[Scope, str], list] = {}
        for address in state.addresses:
            self.addresses.setdefault(address.scope, []).append(address)
            self.on_link.setdefault((address.scope, address.link), []).append(address)
        self.routes: dict[Scope, list[RouteEntry]] = {}
        for route in state.routes.values():
            self.routes.setdefault(route.scope, []).append(route)
        self.links: dict[Scope, list[Link]] = {}
        for link in state.links.values():
            self.links.setdefault(link.scope, []).append(link)
        self.behind: dict[tuple[Scope, str, IPAddress], tuple[Link, Link]] = {}  # (scope, bridge, ip) -> (port, peer)
        for port in state.links.values():
            if port.master is None or port.peer is None:
                continue
            peer = state.links.get(port.peer)
            if peer is not None:
                for address in self.on_link.get((peer.scope, peer.name), ()):
                    self.behind.setdefault((port.scope, port.master, address.interface.ip), (port, peer))

    def holds(self, link: Link, address: IPAddress) -> bool:
        return any(a.interface.ip == address for a in self.on_link.get((link.scope, link.name), ()))


def _indexed(state: "State | StateIndex") -> StateIndex:
    return state if isinstance(state, StateIndex) else StateIndex(state)


def lookup(state: "State | StateIndex", scope: Scope, target: IPAddress) -> _Route | None:
    """The route the kernel would take: longest prefix first, then the lowest metric; connected
    subnets only of interfaces that are up."""
    index = _indexed(state)
    links = index.state.links
    best: tuple | None = None
    for address in index.addresses.get(scope, ()):
        if address.interface.version != target.version:
            continue
        link = links.get((scope, address.link))
        if link is None or not link.up or target not in address.interface.network:
            continue
        key = (address.interface.network.prefixlen, 0 if target.version == 4 else -256)
        if best is None or key > best[0]:
            best = (key, _Route(address.interface.network, address.link, None, True))
    for route in index.routes.get(scope, ()):
        if route.dst.version != target.version or target not in route.dst:
            continue
        link = links.get((scope, route.dev)) if route.dev else None
        if route.dev is not None and (link is None or not link.up):
            continue
        key = (route.dst.prefixlen, -route.metric)
        if best is None or key > best[0]:
            best = (key, _Route(route.dst, route.dev or "", route.via, False))
    return best[1] if best else None


def _local(index: StateIndex, scope: Scope, target: IPAddress) -> str | None:
    """The interface (up) that has target as its address, in scope."""
    for address in index.addresses.get(scope, ()):
        if address.interface.ip == target:
            link = index.state.links.get((scope, address.link))
            if link is not None and (link.up or link.kind == "loopback"):
                return address.link
    return None


def _down(link: Link, facts: Facts, role: str) -> Hop:
    return Hop(link.scope, "link", False, f"{role}{link.name} in {scope_label(link.scope)} is down",
               _fix(link, facts, "sets it up") or f"ip -n {link.scope} link set dev {link.name} up")


class _Walk:
    def __init__(self, facts: Facts, size: int | None) -> None:
        self.facts = facts
        self.state = facts.state
        self.index = facts.index()
        self.size = size
        self.hops: list[Hop] = []
        self.symptoms: list[Hop] = []
        self.left_by: list[tuple[Scope, str]] = []  # (scope, device) of every route taken

    def ok(self, scope: Scope, what: str, text: str) -> None:
        self.hops.append(Hop(scope, what, True, text))

    def mtu(self, link: Link) -> None:
        if self.size is not None and link.mtu is not None and link.mtu < self.size:
            raise _Broken(Hop(link.scope, "mtu", False, f"{link.name} in {scope_label(link.scope)} has MTU {link.mtu}: "
                              f"a {self.size}-byte packet with DF set is dropped there",
                              _fix(link, self.facts, "sets the MTU of the file") or
                              "give every interface on the path the same MTU"))

    def forwards(self, scope: Scope, version: int, came_in: str) -> None:
        key = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
        value = self.facts.sysctls.get((scope, key))
        if value is not None and value.strip() == "0":
            raise _Broken(Hop(scope, "forwarding", False, f"dropped at {scope_label(scope)}: {key} is 0",
                              "topoctl apply sets it, where the design makes traffic cross the host"))
        self.ok(scope, "forwarding", f"{scope_label(scope)} forwards ({key} = {value or '?'})")
        for chain in self.state.foreign_drops.get(scope, ()):
            raise _Broken(Hop(scope, "firewall", False, f"dropped at {scope_label(scope)}: chain {chain} (not "
                              "topoctl's) drops forwarded traffic by policy",
                              "allow the topology's subnets in that chain, or change its policy"))

    def rp_filter(self, scope: Scope, came_in: str, source: IPAddress | None) -> None:
        if source is None or source.version != 4:
            return
        values = [self.facts.sysctls.get((scope, f"net.ipv4.conf.{name}.rp_filter")) for name in ("all", came_in)]
        strict = max(int(v) for v in values if v is not None and v.strip().isdigit()) if any(values) else 0
        if strict != 1:
            return
        back = lookup(self.index, scope, source)
        if back is None or back.dev != came_in:
            raise _Broken(Hop(scope, "rp_filter", False, f"dropped at {scope_label(scope)}: rp_filter is strict and "
                              f"the way back to {source} is not through {came_in}",
                              f"set net.ipv4.conf.{came_in}.rp_filter to 2 (loose), or route {source} back through {came_in}"))

    def kernel_agrees(self, scope: Scope, target: IPAddress, route: _Route) -> None:
        """Where the kernel was asked (RTM_GETROUTE), its answer wins over the main table read:
        a policy rule or another table sends the packet elsewhere."""
        key = (scope, target)
        if key not in self.facts.kernel_routes:
            return
        answer = self.facts.kernel_routes[key]
        if answer is None:
            raise _Broken(Hop(scope, "route", False, f"the kernel has no route to {target} in {scope_label(scope)} "
                              f"(ip route get), though the main table has {route.dst} dev {route.dev}: a policy "
                              "rule sends it to another table", f"ip -n {scope} rule show"))
        dev, via = answer
        if dev is not None and (dev != route.dev or (via or None) != (route.via or None)):
            gateway = f" via {via}" if via else ""
            raise _Broken(Hop(scope, "route", False, f"the kernel routes {target} in {scope_label(scope)}{gateway} dev "
                              f"{dev} (ip route get), not by the main table's {route.dst} dev {route.dev}: a policy "
                              "rule or a more specific route elsewhere", f"ip -n {scope} rule show; "
                              f"ip -n {scope} route get {target}"))

    def neighbour(self, scope: Scope, dev: str, nexthop: IPAddress) -> None:
        state = self.facts.neighbour_states.get((scope, dev, nexthop))
        entries = self.facts.neighbour_entries.get(nexthop.version, 0)
        limit = self.facts.neighbour_limit.get(nexthop.version)
        if state in (None, "FAILED", "INCOMPLETE") and limit and entries >= 0.9 * limit:
            key = "net.ipv4.neigh.default" if nexthop.version == 4 else "net.ipv6.neigh.default"
            self.symptoms.append(Hop(scope, "neighbour", False, f"the kernel's neighbour table is full: {entries} "
                                     f"entries in these namespaces alone, and {key}.gc_thresh3 = {limit} for the "
                                     f"whole machine, so {nexthop} on {dev} in {scope_label(scope)} cannot be resolved "
                                     "(dmesg: \"neighbor table overflow\")",
                                     f"raise {key}.gc_thresh3 (and gc_thresh2) in the machine's own namespace: "
                                     "a host setting, which topoctl does not change"))
            return
        if state in ("FAILED", "INCOMPLETE"):
            self.symptoms.append(Hop(scope, "neighbour", False, f"the neighbour entry of {nexthop} on {dev} in "
                                     f"{scope_label(scope)} is {state}: nothing answered its ARP/ND request"))

    def run(self, source_scope: Scope, target: IPAddress, source: IPAddress | None) -> bool:
        """True when the walk reaches target; raises _Broken at the first hop that breaks."""
        scope, came_in = source_scope, None
        for _ in range(MAX_HOPS):
            local = _local(self.index, scope, target)
            if local is not None:
                self.ok(scope, "address", f"{target} is an address of {local} in {scope_label(scope)}")
                return True
            if came_in is not None:
                self.forwards(scope, target.version, came_in)
                self.rp_filter(scope, came_in, source)
            route = lookup(self.index, scope, target)
            if route is None:
                down = [link.name for link in self.index.links.get(scope, ()) if not link.up and link.kind != "loopback"]
                extra = f"; {', '.join(down)} there is down, and the kernel drops a down interface's routes" if down else ""
                raise _Broken(Hop(scope, "route", False, f"no route to {target} in {scope_label(scope)}{extra}",
                                  "topoctl apply puts back the file's routes and sets its interfaces up"
                                  if scope is not None else ""))
            self.kernel_agrees(scope, target, route)
            via = f" via {route.via}" if route.via else ""
            self.ok(scope, "route", f"{scope_label(scope)}: {target} via route {route.dst}{via} dev {route.dev}")
            self.left_by.append((scope, route.dev))
            link = self.state.links.get((scope, route.dev))
            if link is None:
                raise _Broken(Hop(scope, "link", False, f"{route.dev} in {scope_label(scope)} does not exist"))
            if not link.up:
                raise _Broken(_down(link, self.facts, ""))
            self.mtu(link)
            nexthop = route.via or target
            self.neighbour(scope, link.name, nexthop)
            scope, came_in = self.cross(link, nexthop, target)
        raise _Broken(Hop(scope, "route", False, f"more than {MAX_HOPS} hops: a routing loop?"))

    def cross(self, link: Link, nexthop: IPAddress, target: IPAddress) -> tuple[Scope, str]:
        """From `link` to the interface that has nexthop: (its scope, its name)."""
        if link.kind == "vxlan":
            return self.tunnel(link, nexthop)
        if link.kind == "bridge":
            return self.through_bridge(link, nexthop)
        if link.peer is None:
            raise _Broken(Hop(link.scope, "peer", False, f"{link.name} in {scope_label(link.scope)} has no peer "
                              "topoctl can follow", _fix(link, self.facts, "makes the veth again")))
        peer = self.state.links.get(link.peer)
        if peer is None:
            raise _Broken(Hop(link.peer[0], "peer", False, f"the peer of {link.name} in {scope_label(link.scope)} "
                              f"({link.peer[1]} in {scope_label(link.peer[0])}) is missing",
                              _fix(link, self.facts, "makes the veth again")))
        if not peer.up:
            raise _Broken(_down(peer, self.facts, f"the other end of {link.name}: "))
        self.mtu(peer)
        self.ok(peer.scope, "peer", f"{link.name} in {scope_label(link.scope)} -> {peer.name} in {scope_label(peer.scope)}")
        if peer.master is None:
            if not self.index.holds(peer, nexthop):
                raise _Broken(Hop(peer.scope, "address", False, f"{nexthop} is not on {peer.name} in "
                                  f"{scope_label(peer.scope)}", _fix(peer, self.facts, "puts the address back")))
            return peer.scope, peer.name
        bridge = self.state.links.get((peer.scope, peer.master))
        if bridge is None:
            raise _Broken(Hop(peer.scope, "bridge", False, f"{peer.name}'s master {peer.master} is missing"))
        if not bridge.up:
            raise _Broken(_down(bridge, self.facts, "bridge "))
        self.forwarding_port(bridge, peer)
        self.ok(peer.scope, "bridge", f"{peer.name} is a port of {bridge.name} in {scope_label(peer.scope)}")
        if self.index.holds(bridge, nexthop):
            return bridge.scope, bridge.name
        return self.to_port(bridge, nexthop, exclude=peer.name)

    def forwarding_port(self, bridge: Link, port: Link) -> None:
        """A bridge port forwards only in STP's forwarding state (3); with STP on, a new port
        listens and learns first (forward_delay, 15 s each by default)."""
        if port.port_state is not None and port.port_state != BR_STATE_FORWARDING:
            state = BR_STATES.get(port.port_state, str(port.port_state))
            raise _Broken(Hop(port.scope, "port", False, f"port {port.name} of bridge {bridge.name} in "
                              f"{scope_label(port.scope)} is in STP state {state}: it does not forward",
                              "wait for STP (forward_delay), or turn it off: stp: false on the bridge"))

    def through_bridge(self, bridge: Link, nexthop: IPAddress) -> tuple[Scope, str]:
        return self.to_port(bridge, nexthop, exclude=None)

    def to_port(self, bridge: Link, nexthop: IPAddress, exclude: str | None) -> tuple[Scope, str]:
        held = self.index.behind.get((bridge.scope, bridge.name, nexthop))
        if held is None:
            raise _Broken(Hop(bridge.scope, "address", False, f"no interface behind bridge {bridge.name} in "
                              f"{scope_label(bridge.scope)} has {nexthop}",
                              "topoctl apply puts back the file's addresses and cables"))
        port, peer = held
        if not port.up:
            raise _Broken(_down(port, self.facts, f"port of {bridge.name}: "))
        self.forwarding_port(bridge, port)
        self.mtu(port)
        if not peer.up:
            raise _Broken(_down(peer, self.facts, f"the other end of {port.name}: "))
        self.mtu(peer)
        self.ok(peer.scope, "port", f"{bridge.name} in {scope_label(bridge.scope)} -> {port.name} -> "
                f"{peer.name} in {scope_label(peer.scope)}")
        return peer.scope, peer.name

    def tunnel(self, device: Link, nexthop: IPAddress) -> tuple[Scope, str]:
        scope = device.scope
        neighbour = next((n for n in self.state.neighbours if n.scope == scope and n.dev == device.name
                          and n.ip == nexthop), None)
        if neighbour is None:
            raise _Broken(Hop(scope, "vxlan", False, f"no neighbour entry for {nexthop} on {device.name} in "
                              f"{scope_label(scope)}: the remote VTEP's MAC is unknown",
                              "topoctl apply writes the overlay's entries"))
        fdb = next((f for f in self.state.fdb if f.scope == scope and f.dev == device.name and f.mac == neighbour.mac), None)
        if fdb is None:
            raise _Broken(Hop(scope, "vxlan", False, f"no FDB entry for {neighbour.mac} ({nexthop}) on {device.name} "
                              f"in {scope_label(scope)}: VXLAN does not know which host to send it to",
                              "topoctl apply writes the overlay's entries"))
        self.ok(scope, "vxlan", f"{device.name} in {scope_label(scope)}: {nexthop} is {neighbour.mac} at {fdb.dst}")
        if self.size is not None:
            overhead = 50 if fdb.dst.version == 4 else 70
            self.size += overhead
        underlay = _Walk(self.facts, self.size)
        try:
            underlay.run(scope, fdb.dst, None)
        finally:
            self.hops += underlay.hops
            self.symptoms += underlay.symptoms
        remote = underlay.hops[-1].scope
        if self.size is not None:
            self.size -= 50 if fdb.dst.version == 4 else 70
        peer = next((link for link in self.index.links.get(remote, ()) if link.kind == "vxlan"
                     and device.vxlan is not None and link.vxlan is not None and link.vxlan.vni == device.vxlan.vni), None)
        if peer is None:
            raise _Broken(Hop(remote, "vxlan", False, f"{scope_label(remote)} has no VXLAN device with VNI "
                              f"{device.vxlan.vni if device.vxlan else '?'}: the packet is not decapsulated",
                              "topoctl apply makes it"))
        if not peer.up:
            raise _Broken(_down(peer, self.facts, "VXLAN device "))
        self.ok(remote, "vxlan", f"decapsulated by {peer.name} in {scope_label(remote)}")
        return remote, peer.name


def explain(probe: Probe, facts: Facts, source_scope: Scope, target_scope: Scope | None,
            source: IPAddress | None) -> list[Hop]:
    """The hops of the probe's way there and, when that is whole, of the reply's way back; the
    last hop is the break (ok False), or all are ok when the path looks sound (then the cause is
    likely a firewall rule: `topoctl trace` shows it)."""
    size = None
    if probe.size is not None:
        size = probe.size + (IPV4_HEADERS if probe.target.version == 4 else IPV6_HEADERS)
    there = _Walk(facts, size)
    try:
        there.run(source_scope, probe.target, source)
    except _Broken as broken:
        return there.hops + [broken.hop] + there.symptoms
    arrived = there.hops[-1].scope if there.hops else target_scope
    back_to = _seen_source(facts, there.left_by, source)
    if back_to is None:
        return there.hops + there.symptoms
    back = _Walk(facts, None)
    try:
        back.run(arrived, back_to, probe.target)
    except _Broken as broken:
        hop = broken.hop
        return there.hops + [Hop(hop.scope, hop.what, False, f"the reply cannot come back: {hop.text}", hop.fix)]
    symptoms = list(dict.fromkeys(there.symptoms + back.symptoms))  # the same full table, both ways: once
    return there.hops + [replace(h, text=f"back: {h.text}") for h in back.hops] + symptoms


def _seen_source(facts: Facts, left_by: list[tuple[Scope, str]], source: IPAddress | None) -> IPAddress | None:
    """The address the reply goes to: the source, or the host's own where a masquerading host
    sent it out of another interface (conntrack hands the reply back on its way)."""
    if source is None:
        return None
    for scope, dev in left_by:
        subnets = facts.masquerading.get(scope, ())
        if not any(source in net for net in subnets if net.version == source.version):
            continue
        on_dev = [a.interface for a in facts.index().on_link.get((scope, dev), ())
                  if a.interface.version == source.version]
        if on_dev and not any(source in a.network for a in on_dev):
            return on_dev[0].ip
    return source


def firewall_suspects(facts: Facts, hops: list[Hop]) -> list[Hop]:
    """When the walk finds the path sound: the drops of other tables in the namespaces it
    passes, as the likely causes (a rule's match is not evaluated here: `topoctl trace` does)."""
    seen: list[Scope] = []
    for hop in hops:
        if hop.scope not in seen:
            seen.append(hop.scope)
    suspects = []
    for scope in seen:
        for table, chain, hook, what in facts.foreign_rules.get(scope, ()):
            suspects.append(Hop(scope, "firewall", False,
                                f"table {table} in {scope_label(scope)} (not topoctl's), chain {chain} (hook {hook}): "
                                f"{what}", "topoctl trace shows whether it is the rule that drops the probe"))
    return suspects
