"""The reachability a design implies, as probes `check` sends, each with the verdict the design
expects (pass, or blocked and by what). Pure: a function of the file and of how its hosts are
realised; core/verdicts.py says what each probe should meet on its way."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable

from topoctl.core.verdicts import expectation
from topoctl.spec.model import DEFAULT_MTU, IPAddress, IPInterface, Place, Topology, place_of

if TYPE_CHECKING:
    from topoctl.core.realisation import Realisation
    from topoctl.core.state import Scope

ICMP, TCP, UDP = "icmp", "tcp", "udp"
IPV4_HEADERS, IPV6_HEADERS = 28, 48  # IP + ICMP echo headers: payload = MTU - these


@dataclass(frozen=True)
class Member:
    """An interface on a segment (a bridge, a point-to-point veth, the underlay)."""

    place: Place
    name: str  # the interface
    addresses: tuple[IPInterface, ...]
    mtu: int

    @property
    def label(self) -> str:
        return self.place.namespace or f"host {self.place.host}"


@dataclass(frozen=True)
class Segment:
    """One layer-2 network of the design: its id ("bridge docker0", "link eth0@a-b", "underlay")."""

    id: str
    bridge: str | None  # the bridge's key, for bridges
    host: str | None  # the host a bridge or a host-local veth is on; None for the underlay
    members: tuple[Member, ...]

    def containers(self) -> list[Member]:
        return [m for m in self.members if m.place.namespace is not None]


@dataclass(frozen=True)
class Probe:
    """One packet (or connection) `check` sends, and what the design says becomes of it."""

    group: str  # gateway | peer | across | overlay-mtu | port | outside | firewall | asked
    kind: str  # icmp | tcp | udp
    source: Place
    source_label: str  # the namespace, or "host H"
    target: IPAddress
    target_label: str  # "gateway", a namespace, "port 8080 of host local", ...
    port: int | None = None
    size: int | None = None  # an ICMP payload sent with DF set: the path must carry it whole
    listen: tuple[Place, int] | None = None  # where check listens for a TCP/UDP probe
    expect: bool = True  # False: the design forbids it, and passing is the failure
    why: str = ""  # the design's reason when it is expected to be blocked

    def label(self) -> str:
        what = self.kind if self.port is None else f"{self.kind}/{self.port}"
        size = f", {self.size + (IPV4_HEADERS if self.target.version == 4 else IPV6_HEADERS)} bytes DF" \
            if self.size is not None else ""
        return f"{self.source_label} -> {self.target_label} {self.target} ({what}{size})"


@dataclass(frozen=True)
class Outcome:
    """What became of a probe that was sent."""

    probe: Probe
    reached: bool
    detail: str  # "reply after 0.4 ms", "no reply within 1.0 s", "refused: ...", "ICMP host unreachable from X"
    seconds: float | None = None


class Segments(list):
    """The segments of a file; core/verdicts.py keeps its indexes of them on the list."""


def segments(topology: Topology) -> list[Segment]:
    """Every layer-2 segment of the file, in file order: bridges, then veths not on a bridge."""
    by_bridge: dict[str, list[Member]] = {b.key or b.name: [] for b in topology.bridges}
    found = []
    for bridge in topology.bridges:
        by_bridge[bridge.key or bridge.name].append(
            Member(Place(bridge.host, None), bridge.name, bridge.addresses, bridge.mtu))
    for link in topology.links:
        ends = [(e, p) for e, p in ((link.a, link.b), (link.b, link.a))]
        on_bridge = [(e, p) for e, p in ends if p.bridge is not None]
        for end, peer in on_bridge:
            place = place_of(topology, end)
            if place is not None and peer.bridge in by_bridge:
                by_bridge[peer.bridge].append(Member(place, end.name, end.addresses, end.mtu))
        if not on_bridge:
            a, b = place_of(topology, link.a), place_of(topology, link.b)
            if a is not None and b is not None:
                found.append(Segment(f"link {link.a.name}-{link.b.name}", None, a.host,
                                     (Member(a, link.a.name, link.a.addresses, link.a.mtu),
                                      Member(b, link.b.name, link.b.addresses, link.b.mtu))))
    bridges = [Segment(f"bridge {b.name}", b.key or b.name, b.host, tuple(by_bridge[b.key or b.name]))
               for b in topology.bridges]
    return Segments(bridges + found)


def _first(addresses: Iterable[IPInterface], version: int) -> IPInterface | None:
    return next((a for a in addresses if a.version == version), None)


def _routed(topology: Topology, namespace: str, target: IPAddress) -> bool:
    """Whether the file gives the namespace a route (its own, not a connected subnet) to target."""
    ns = topology.namespace(namespace)
    return ns is not None and any(r.to.version == target.version and target in r.to for r in ns.routes)


def _connected(member: Member, target: IPAddress) -> bool:
    return any(a.version == target.version and target in a.network for a in member.addresses)


def design_probes(topology: Topology, realisation: "Realisation") -> list[Probe]:
    """What check sends: sources on the hosts this run acts on, targets anywhere in the file."""
    here = set(realisation.hosts)
    segs = segments(topology)
    probes: list[Probe] = []
    probes += _gateways(topology, here)
    for seg in segs:
        probes += _peers(topology, seg, here)
    probes += _across(topology, segs, here)
    probes += _ports(topology, segs, here)
    probes += _outside(topology, segs, here)
    probes += _firewalls(topology, segs, here)
    unique: dict[tuple, Probe] = {}
    for probe in probes:
        key = (probe.source, probe.target, probe.kind, probe.port, probe.size)
        unique.setdefault(key, probe)
    return [_judged(topology, segs, p) for p in unique.values()]


def _judged(topology: Topology, segs: list[Segment], probe: Probe) -> Probe:
    expect, why = expectation(topology, segs, probe)
    return replace(probe, expect=expect, why=why)


def _gateways(topology: Topology, here: set[str]) -> list[Probe]:
    out = []
    for ns in topology.namespaces:
        if ns.host not in here:
            continue
        for route in ns.routes:
            if route.via is not None:
                out.append(Probe("gateway", ICMP, Place(ns.host, ns.name), ns.name, route.via, "gateway"))
    return out


def _peers(topology: Topology, seg: Segment, here: set[str]) -> list[Probe]:
    """Containers of one segment reach each other: each the next, in a ring (N probes, not N²)."""
    members = seg.containers()
    if len(members) < 2:
        return []
    out = []
    pairs = list(zip(members, members[1:])) + ([(members[-1], members[0])] if len(members) > 2 else [])
    # an explicit MTU on the segment: one full-size probe, DF set, from the first container
    sized = any(m.mtu != DEFAULT_MTU for m in seg.members)
    for k, (a, b) in enumerate(pairs):
        if a.place.host not in here:
            continue
        for version in (4, 6):
            target = _first(b.addresses, version)
            if target is not None and _first(a.addresses, version) is not None:
                out.append(Probe("peer", ICMP, a.place, a.label, target.ip, b.label))
                if sized and k == 0:
                    headers = IPV4_HEADERS if version == 4 else IPV6_HEADERS
                    out.append(Probe("path-mtu", ICMP, a.place, a.label, target.ip, b.label, size=a.mtu - headers))
    return out


def _across(topology: Topology, segs: list[Segment], here: set[str]) -> list[Probe]:
    """A container reaches one container of every other segment its routes lead to; across
    hosts, also with a full-size packet (the path MTU, overlays' overhead included)."""
    out = []
    segments_of: dict[str, int] = {}
    for seg in segs:
        for m in seg.containers():
            segments_of[m.place.namespace] = segments_of.get(m.place.namespace, 0) + 1
    for seg in segs:
        for i, a in enumerate(seg.containers()):
            if a.place.host not in here:
                continue
            for other in segs:
                if other is seg:
                    continue
                for version in (4, 6):
                    # the target: a container that is only on that segment (not a router), if any
                    candidates = [m for m in other.containers() if _first(m.addresses, version) is not None
                                  and m.place.namespace != a.place.namespace]
                    b = next((m for m in candidates if segments_of[m.place.namespace] == 1), None) or \
                        next(iter(candidates), None)
                    if b is None or _first(a.addresses, version) is None:
                        continue
                    target = _first(b.addresses, version).ip
                    if _connected(a, target) or not _routed(topology, a.place.namespace, target):
                        continue
                    out.append(Probe("across", ICMP, a.place, a.label, target, b.label))
                    if b.place.host != a.place.host and i == 0:  # one full-size probe per pair of segments
                        headers = IPV4_HEADERS if version == 4 else IPV6_HEADERS
                        out.append(Probe("path-mtu", ICMP, a.place, a.label, target, b.label, size=a.mtu - headers))
    return out


def _host_address(topology: Topology, host: str, version: int) -> IPAddress | None:
    h = topology.host(host)
    return h.address.ip if h is not None and h.address is not None and h.address.version == version else None


def _ports(topology: Topology, segs: list[Segment], here: set[str]) -> list[Probe]:
    """A published port answers from its host, from the other hosts and, through the host's
    address, from another container on the bridge (hairpin)."""
    out = []
    for ns in topology.namespaces:
        if not ns.ports:
            continue
        seg = next((s for s in segs if s.bridge is not None and any(m.place.namespace == ns.name for m in s.members)), None)
        if seg is None:
            continue
        bridge_member = next(m for m in seg.members if m.place.namespace is None)
        host_place = Place(ns.host, None)
        for port in ns.ports:
            version = port.host_ip.version if port.host_ip is not None else 4
            proto = port.proto
            listen = (Place(ns.host, ns.name), port.container_port)
            name = f"port {port.host_port} of host {ns.host}"

            def probe(source: Place, label: str, target: IPAddress) -> Probe:
                return Probe("port", proto, source, label, target, name, port=port.host_port, listen=listen)

            bridge_ip = _first(bridge_member.addresses, version)
            underlay = _host_address(topology, ns.host, version)
            if port.host_ip is not None:
                targets = [port.host_ip]
            else:
                targets = [t for t in (underlay, bridge_ip.ip if bridge_ip else None) if t is not None][:1]
            if ns.host in here:
                out += [probe(host_place, f"host {ns.host}", t) for t in targets]
            if port.host_ip is None or not port.host_ip.is_loopback:
                target = port.host_ip or underlay
                for other in topology.hosts:
                    if other.name != ns.host and other.name in here and target is not None \
                            and other.address is not None and target in other.address.network:
                        out.append(probe(Place(other.name, None), f"host {other.name}", target))
                peer = next((m for m in seg.containers() if m.place.namespace != ns.name
                             and _first(m.addresses, version) is not None), None)
                hairpin = port.host_ip or (bridge_ip.ip if bridge_ip else None)
                # (with icc off the bridge drops the hairpin too, where br_netfilter is loaded: docs/netfilter.md)
                icc = topology.bridge(seg.bridge).icc
                if peer is not None and peer.place.host in here and hairpin is not None and icc:
                    out.append(probe(peer.place, peer.label, hairpin))
    return out


def _outside(topology: Topology, segs: list[Segment], here: set[str]) -> list[Probe]:
    """A container on a masquerading bridge reaches its host's gateway, or else another host."""
    out = []
    for seg in segs:
        bridge = topology.bridge(seg.bridge) if seg.bridge else None
        if bridge is None or not bridge.masquerade or bridge.host not in here:
            continue
        host = topology.host(bridge.host)
        target = host.gateway if host is not None else None
        if target is None and host is not None and host.address is not None:
            target = next((o.address.ip for o in topology.hosts if o is not host and o.address is not None
                           and o.address.ip in host.address.network), None)
        if target is None:
            continue
        label = "the outside (gateway)" if host.gateway == target else "the outside (another host)"
        source = next((m for m in seg.containers() if _first(m.addresses, target.version) is not None
                       and _routed(topology, m.place.namespace, target)), None)
        if source is not None:
            out.append(Probe("outside", ICMP, source.place, source.label, target, label))
    return out


def _firewalls(topology: Topology, segs: list[Segment], here: set[str]) -> list[Probe]:
    """Each allow rule of an inbound firewall with a default drop passes, and a port it does
    not list does not: probed from the namespace's bridge (its host)."""
    out = []
    for ns in topology.namespaces:
        fw = ns.firewall
        if fw is None or fw.inbound.default != "drop" or ns.host not in here:
            continue
        seg = next((s for s in segs if s.bridge is not None and any(m.place.namespace == ns.name for m in s.members)), None)
        if seg is None:
            continue
        me = next(m for m in seg.members if m.place.namespace == ns.name)
        host = next(m for m in seg.members if m.place.namespace is None)
        sources = [host] + [m for m in seg.containers() if m is not me]
        for rule in fw.inbound.allow:
            version = rule.source.version if rule.source else (rule.dest.version if rule.dest else 4)
            target = _first(me.addresses, version)
            source = next((m for m in sources if (a := _first(m.addresses, version)) is not None
                           and (rule.source is None or a.ip in rule.source)), None)
            if target is None or source is None or (rule.dest is not None and target.ip not in rule.dest):
                continue
            kind = rule.proto if rule.proto in (TCP, UDP) else ICMP
            if rule.proto in ("icmp", "icmpv6") and (rule.proto == "icmpv6") != (version == 6):
                continue
            port = (rule.ports[0] if rule.ports else 80) if kind != ICMP else None
            out.append(Probe("firewall", kind, source.place, source.label, target.ip, ns.name, port=port,
                             listen=(me.place, port) if port is not None else None))
        target = _first(me.addresses, 4)
        if target is not None:
            port = _unlisted_port(fw.inbound.allow)
            if port is not None:
                out.append(Probe("firewall", TCP, host.place, host.label, target.ip, ns.name, port=port,
                                 listen=(me.place, port)))
    return out


def _unlisted_port(rules) -> int | None:
    """A TCP port no allow rule names (None when one lets every TCP port in)."""
    if any(r.proto in (None, TCP) and r.ports is None for r in rules):
        return None
    taken = [r.ports for r in rules if r.proto in (None, TCP) and r.ports is not None]
    for port in (9, 7, 13, 37, 1000, 4000, 40000):
        if not any(lo <= port <= hi for lo, hi in taken):
            return port
    return None


def asked(probes: list[Probe], topology: Topology, realisation: "Realisation",
          source: str | None, target: str | None) -> list[Probe]:
    """The probes of `--from NS` and `--to NS|ADDRESS`; an address the design does not probe
    from NS gets a probe of its own (expected to pass: it was asked for)."""
    chosen = [p for p in probes if (source is None or p.source_label in (source, f"host {source}"))
              and (target is None or p.target_label == target or str(p.target) == target)]
    if chosen or target is None or source is None:
        return chosen
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        return []
    ns = topology.namespace(source)
    place = Place(ns.host, ns.name) if ns is not None else Place(source, None)
    label = ns.name if ns is not None else f"host {source}"
    return [Probe("asked", ICMP, place, label, address, "address")]
