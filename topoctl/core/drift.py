"""Which kernel notifications are drift of a topology, for `topoctl watch`: a pure filter.

The kernel layer turns each rtnetlink notification into one of the change values below; a
DriftFilter, made from the desired state, says which of them touch something the planner
compares (and so may need a repair) and which are noise: the kernel's own settling after a
link comes up (operstate, carrier, STP port state), IPv6 link-local addresses, kernel routes,
learnt neighbours, and everything about interfaces of other software in a shared namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from topoctl.core.state import Scope, State, scope_label


_PLANNED = ("up", "mtu", "mac", "master", "kind", "vxlan")


@dataclass(frozen=True)
class LinkChange:
    scope: Scope
    index: int
    name: str
    deleted: bool
    # what of the interface the planner compares: (up, mtu, mac, master index, kind, vxlan)
    planned: tuple = ()
    initial: bool = False  # from the dump made when the namespace was subscribed: no change


@dataclass(frozen=True)
class AddressChange:
    scope: Scope
    index: int
    deleted: bool
    text: str  # "10.0.0.1/24"
    link_local: bool  # IPv6 fe80::/10: made and removed by the kernel, never planned
    initial: bool = False


@dataclass(frozen=True)
class RouteChange:
    scope: Scope
    oif: int | None
    deleted: bool
    text: str  # "10.0.0.0/24"
    planned: bool  # main table, unicast, not the kernel's own (proto kernel): what assemble reads
    detail: tuple = ()  # (gateway, metric): with text and oif, what tells one route from another
    initial: bool = False


@dataclass(frozen=True)
class NeighbourChange:
    scope: Scope
    index: int
    deleted: bool
    permanent: bool  # NUD_PERMANENT: what topoctl writes on overlays
    text: str  # the IP (a neighbour) or the remote VTEP (a forwarding entry)
    lladdr: str | None = None
    fdb: bool = False  # a forwarding entry (AF_BRIDGE), keyed by MAC and remote
    initial: bool = False


@dataclass(frozen=True)
class Overflow:
    """The socket's queue overflowed (ENOBUFS): notifications were lost, so anything may have changed."""

    scope: Scope


@dataclass(frozen=True)
class NamespaceGone:
    name: str


Change = Union[LinkChange, AddressChange, RouteChange, NeighbourChange, Overflow, NamespaceGone]


@dataclass
class DriftFilter:
    """Decides, change by change, whether a notification is drift of the desired state.

    `whole` are the namespaces the topology owns entirely (containers, emulated hosts): any
    planned change in them counts. In the others (the machine's own namespace, a shared
    underlay) only the desired interfaces by name, and addresses and routes on them, count.
    Links are remembered by (scope, ifindex) with what the planner compares, so a notification
    that repeats it (a carrier or port state change) is not drift."""

    desired: State
    whole: frozenset[str] = frozenset()
    _links: dict[tuple[Scope, int], tuple[str, tuple]] = field(default_factory=dict)
    # what is there now, so that a notification repeating it (IPv6 DAD ending, a route
    # replaced by itself) is not drift
    _addresses: set[tuple[Scope, int, str]] = field(default_factory=set)
    _routes: set[tuple] = field(default_factory=set)
    _neighbours: dict[tuple, str | None] = field(default_factory=dict)  # permanent ones -> their MAC

    @classmethod
    def of(cls, desired: State, whole: set[str]) -> "DriftFilter":
        return cls(desired, frozenset(whole))

    def retarget(self, desired: State, whole: set[str]) -> None:
        """A new desired state (the file changed): what the links are stays known."""
        self.desired, self.whole = desired, frozenset(whole)

    def _managed(self, scope: Scope, name: str) -> bool:
        return scope in self.whole or (scope, name) in self.desired.links

    def _on_managed(self, scope: Scope, index: int | None) -> bool:
        if scope in self.whole:
            return True
        known = self._links.get((scope, index)) if index is not None else None
        return known is not None and (scope, known[0]) in self.desired.links

    def forget(self, scope: Scope) -> None:
        """A namespace's subscription ended: its ifindexes mean nothing any more."""
        self._links = {k: v for k, v in self._links.items() if k[0] != scope}
        self._addresses = {a for a in self._addresses if a[0] != scope}
        self._routes = {r for r in self._routes if r[0] != scope}
        self._neighbours = {k: v for k, v in self._neighbours.items() if k[0] != scope}

    def _seen(self, known: set, key: tuple, deleted: bool) -> bool:
        """Record an address or route; whether the notification changes nothing."""
        if deleted:
            if key not in known:
                return True
            known.discard(key)
            return False
        if key in known:
            return True
        known.add(key)
        return False

    def drift(self, change: Change) -> str | None:
        """Why this change is drift (a few words for the log), or None when it is not."""
        if isinstance(change, LinkChange):
            return self._link(change)
        if isinstance(change, AddressChange):
            if change.link_local or change.scope not in self.desired.scopes:
                return None
            if self._seen(self._addresses, (change.scope, change.index, change.text), change.deleted) or change.initial:
                return None
            if not self._on_managed(change.scope, change.index):
                return None
            return f"address {change.text} {'removed' if change.deleted else 'added'}{self._where(change.scope, change.index)}"
        if isinstance(change, RouteChange):
            if not change.planned or change.scope not in self.desired.scopes:
                return None
            key = (change.scope, change.text, change.oif, change.detail)
            if self._seen(self._routes, key, change.deleted) or change.initial:
                return None
            if not self._on_managed(change.scope, change.oif) and not self._desired_route(change):
                return None
            return f"route {change.text} {'deleted' if change.deleted else 'changed'}{self._where(change.scope, None)}"
        if isinstance(change, NeighbourChange):
            return self._neighbour(change)
        if isinstance(change, Overflow):
            return f"notifications lost{self._where(change.scope, None)} (queue overflow)"
        if isinstance(change, NamespaceGone):
            if change.name in self.desired.namespaces:
                return f"namespace {change.name} deleted"
            return None
        return None

    def _link(self, change: LinkChange) -> str | None:
        key = (change.scope, change.index)
        before = self._links.get(key)
        if change.deleted:
            self._links.pop(key, None)
            # IPv4 flushes the routes through a deleted interface without a notification each
            self._routes = {r for r in self._routes if r[0] != change.scope or r[2] != change.index}
            self._addresses = {a for a in self._addresses if a[0] != change.scope or a[1] != change.index}
        else:
            self._links[key] = (change.name, change.planned)
        if change.initial or change.scope not in self.desired.scopes:
            return None
        managed = self._managed(change.scope, change.name) or (
            before is not None and self._managed(change.scope, before[0]))
        if not managed:
            return None
        where = f" in {scope_label(change.scope)}"
        if change.deleted:
            return f"{change.name} deleted{where}"
        if before is None:
            return f"{change.name} appeared{where}"
        if before[0] != change.name:
            return f"{before[0]} renamed {change.name}{where}"
        if before[1] != change.planned:
            what = ", ".join(f"{label} {old} -> {new}" for label, old, new in zip(_PLANNED, before[1], change.planned)
                             if old != new)
            return f"{change.name} changed{where}: {what}"
        return None  # the same as before: the kernel's own state (carrier, operstate, STP)

    def _neighbour(self, change: NeighbourChange) -> str | None:
        """Permanent entries on an overlay's device: one deleted (the kernel's notice of it no
        longer says permanent), changed, or added."""
        if change.scope not in self.desired.scopes:
            return None
        key = (change.scope, change.index, change.fdb, change.text, change.lladdr if change.fdb else None)
        had = key in self._neighbours
        before = self._neighbours.get(key)
        if change.permanent and not change.deleted:
            self._neighbours[key] = change.lladdr
        else:
            self._neighbours.pop(key, None)
        known = self._links.get((change.scope, change.index))
        if change.initial or known is None or known[1][4] != "vxlan" or (change.scope, known[0]) not in self.desired.links:
            return None
        what = f"overlay {'forwarding entry' if change.fdb else 'entry'} {change.text}"
        if had and (change.deleted or not change.permanent):
            return f"{what} deleted on {known[0]} in {scope_label(change.scope)}"
        if change.permanent and not change.deleted and (not had or before != change.lladdr):
            return f"{what} {'changed' if had else 'added'} on {known[0]} in {scope_label(change.scope)}"
        return None

    def _where(self, scope: Scope, index: int | None) -> str:
        known = self._links.get((scope, index)) if index is not None else None
        on = f" on {known[0]}" if known is not None else ""
        return f"{on} in {scope_label(scope)}"

    def _desired_route(self, change: RouteChange) -> bool:
        return any(r.scope == change.scope and str(r.dst) == change.text for r in self.desired.routes.values())
