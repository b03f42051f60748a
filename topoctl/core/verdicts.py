"""What the design says becomes of a probe: it passes, or icc, isolation or a firewall of the
file blocks it (and which). Pure; used by core/probes.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from topoctl.spec.model import FirewallDirection, IPAddress, Namespace, Place, Topology

if TYPE_CHECKING:
    from topoctl.core.probes import Member, Probe, Segment


def allows(direction: FirewallDirection, proto: str, source: IPAddress | None, dest: IPAddress | None,
           port: int | None) -> bool:
    """Whether a firewall direction lets a new connection through (replies always pass)."""
    if direction.default == "accept":
        return True
    family = dest.version if dest is not None else (source.version if source is not None else 4)
    name = proto if proto != "icmp" else ("icmp" if family == 4 else "icmpv6")
    for rule in direction.allow:
        if rule.source is not None and (source is None or source.version != rule.source.version
                                        or source not in rule.source):
            continue
        if rule.dest is not None and (dest is None or dest.version != rule.dest.version or dest not in rule.dest):
            continue
        if rule.proto is not None and rule.proto != name:
            continue
        if rule.ports is not None and (port is None or not rule.ports[0] <= port <= rule.ports[1]):
            continue
        return True
    return False


def _indexes(segs: list["Segment"]) -> tuple[dict, dict]:
    """(namespace -> its (segment, member)s, address -> its first (segment, member)), built once
    per list of segments: design_probes asks them for every probe."""
    cached = getattr(segs, "_by", None)
    if cached is None:
        by_namespace: dict = {}
        by_address: dict = {}
        for seg in segs:
            for m in seg.members:
                if m.place.namespace is not None:
                    by_namespace.setdefault(m.place.namespace, []).append((seg, m))
                for a in m.addresses:
                    by_address.setdefault(a.ip, (seg, m))
        cached = (by_namespace, by_address)
        try:
            segs._by = cached  # a Segments list keeps them; a plain list is indexed again each time
        except AttributeError:
            pass
    return cached


def _members_of(segs: list["Segment"], namespace: str) -> list[tuple["Segment", "Member"]]:
    return _indexes(segs)[0].get(namespace, [])


def _owner(segs: list["Segment"], address: IPAddress) -> tuple["Segment", "Member"] | None:
    return _indexes(segs)[1].get(address)


def _address_on(member: "Member", version: int, near: IPAddress | None = None) -> IPAddress | None:
    """The member's address of that family, the one whose subnet holds `near` first."""
    fitting = [a for a in member.addresses if a.version == version]
    chosen = [a for a in fitting if near is not None and near in a.network] or fitting
    return chosen[0].ip if chosen else None


def _bridge_address(segs: list["Segment"], namespace: str, version: int) -> IPAddress | None:
    for seg, _ in _members_of(segs, namespace):
        if seg.bridge is not None:
            host = next((m for m in seg.members if m.place.namespace is None), None)
            if host is not None and (address := _address_on(host, version)) is not None:
                return address
    return None


def source_address(topology: Topology, segs: list["Segment"], probe: "Probe") -> IPAddress | None:
    version = probe.target.version
    if probe.source.namespace is not None:
        # the kernel takes the address of the interface the route leaves by: approximated by
        # the one on the target's subnet, else the first of the family
        mine = [a for _, m in _members_of(segs, probe.source.namespace) for a in m.addresses if a.version == version]
        chosen = [a for a in mine if probe.target in a.network] or mine
        return chosen[0].ip if chosen else None
    host = topology.host(probe.source.host)
    if host is not None and host.address is not None and host.address.version == version \
            and probe.target in host.address.network and probe.target != host.address.ip:
        return host.address.ip
    inside = probe.listen[0].namespace if probe.listen else None
    owner = _owner(segs, probe.target)
    inside = inside or (owner[1].place.namespace if owner else None)
    return _bridge_address(segs, inside, version) if inside else None


def _namespace(topology: Topology, place: Place | None) -> Namespace | None:
    return topology.namespace(place.namespace) if place is not None and place.namespace else None


def expectation(topology: Topology, segs: list["Segment"], probe: "Probe") -> tuple[bool, str]:
    """(passes, why not): the design's verdict on one probe."""
    source_ns = _namespace(topology, probe.source)
    sender = source_address(topology, segs, probe)
    owner = _owner(segs, probe.target)
    if probe.listen is not None and (owner is None or owner[1].place != probe.listen[0]):
        # a published port: the host DNATs to the container, masquerading what comes from itself or its bridge
        target_ns = _namespace(topology, probe.listen[0])
        dest = _address_on(next(m for _, m in _members_of(segs, target_ns.name)), probe.target.version) \
            if target_ns and _members_of(segs, target_ns.name) else None
        seen_from = sender
        if probe.source.namespace is not None or probe.source.host == probe.listen[0].host:
            seen_from = _bridge_address(segs, target_ns.name, probe.target.version) if target_ns else None
        port = probe.listen[1]
    else:
        target_ns = _namespace(topology, owner[1].place) if owner else None
        dest, seen_from, port = probe.target, sender, probe.port
    if owner is not None and probe.source.namespace is not None and probe.listen is None:
        seg, member = owner
        bridge = topology.bridge(seg.bridge) if seg.bridge else None
        same = any(m.place.namespace == probe.source.namespace for m in seg.members)
        if bridge is not None and same and not bridge.icc and member.place.namespace is not None:
            return False, f"icc: false on bridge {bridge.name}"
        if bridge is not None and not same:
            mine = [topology.bridge(s.bridge) for s, _ in _members_of(segs, probe.source.namespace) if s.bridge]
            for other in mine:
                if other is not None and other.host == bridge.host and (other.isolated or bridge.isolated):
                    isolated = other if other.isolated else bridge
                    return False, f"bridge {isolated.name} is isolated"
    if source_ns is not None and source_ns.firewall is not None and probe.source.namespace != (target_ns.name if target_ns else None):
        if not allows(source_ns.firewall.outbound, probe.kind, sender, probe.target, probe.port):
            return False, f"the outbound firewall of {source_ns.name}"
    if target_ns is not None and target_ns.firewall is not None and target_ns.name != probe.source.namespace:
        if not allows(target_ns.firewall.inbound, probe.kind, seen_from, dest, port):
            return False, f"the inbound firewall of {target_ns.name}"
    return True, ""
