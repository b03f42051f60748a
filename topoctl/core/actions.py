"""Plan actions: small frozen values with a phase. The applier and the renderer consume them.

Phases run in ascending order: deletions first, from the leaves (routes) to the roots
(namespaces), then creations from the roots back to the leaves. Within a phase the order is
the sort key, so a plan is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from topoctl.core.state import Address, Fdb, Link, Neighbour, Netns, RouteEntry, Scope, scope_label, scope_sort

CREATE, CHANGE, DELETE = "create", "change", "delete"


def route_label(route: RouteEntry) -> str:
    return "default" if route.dst.prefixlen == 0 else str(route.dst)


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class Change:
    attribute: str  # mtu | mac | master | up | stp
    old: object
    new: object


def sysctl_interface(key: str) -> str | None:
    """The interface a sysctl key belongs to (net.ipv4.conf.eth0.rp_filter -> eth0), or None for
    a key of the whole namespace (including the conf.all / conf.default ones)."""
    parts = key.split(".")
    if len(parts) >= 5 and parts[1] in ("ipv4", "ipv6", "mpls") and parts[2] in ("conf", "neigh"):
        return None if parts[3] in ("all", "default") else parts[3]
    return None


@dataclass(frozen=True)
class Action:
    phase: ClassVar[int]
    verb: ClassVar[str]
    noun: ClassVar[str]

    @property
    def scope(self) -> Scope:
        raise NotImplementedError

    def subject(self) -> str:
        """What the action is about, for people: 'link eth0 in nginx-1'."""
        raise NotImplementedError

    def details(self) -> dict:
        return {}

    def sort_key(self) -> tuple:
        return (self.phase, scope_sort(self.scope), self.subject())

    def as_json(self) -> dict:
        return {"action": self.verb, "type": self.noun, "netns": self.scope,
                "subject": self.subject(), **{k: _jsonable(v) for k, v in self.details().items()}}


class _OnRoute:
    route: RouteEntry

    @property
    def scope(self) -> Scope:
        return self.route.scope

    def subject(self) -> str:
        return f"route {route_label(self.route)} in {scope_label(self.scope)}"

    def details(self) -> dict:
        out = {"to": self.route.dst, "via": self.route.via, "dev": self.route.dev, "metric": self.route.metric}
        if self.route.onlink:
            out["onlink"] = True
        return out


class _OnAddress:
    address: Address

    @property
    def scope(self) -> Scope:
        return self.address.scope

    def subject(self) -> str:
        return f"address {self.address.interface} on {self.address.link} in {scope_label(self.scope)}"

    def details(self) -> dict:
        return {"link": self.address.link, "address": self.address.interface}


class _OnLink:
    link: Link

    @property
    def scope(self) -> Scope:
        return self.link.scope

    def subject(self) -> str:
        return f"{self.link.kind} {self.link.name} in {scope_label(self.scope)}"


class _OnNetns:
    netns: Netns

    @property
    def scope(self) -> Scope:
        return self.netns.name

    def subject(self) -> str:
        return f"namespace {self.netns.name}"


# -- deletions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeleteRoute(_OnRoute, Action):
    route: RouteEntry
    phase = 1
    verb = DELETE
    noun = "route"


@dataclass(frozen=True)
class DeleteAddress(_OnAddress, Action):
    address: Address
    phase = 2
    verb = DELETE
    noun = "address"


@dataclass(frozen=True)
class DeleteLink(_OnLink, Action):
    link: Link
    reason: str = ""  # set when the link is deleted to be created again (-/+)
    phase = 3
    verb = DELETE
    noun = "link"

    def details(self) -> dict:
        out = {"name": self.link.name, "kind": self.link.kind}
        if self.reason:
            out["replace_reason"] = self.reason
        return out


@dataclass(frozen=True)
class DeleteNamespace(_OnNetns, Action):
    netns: Netns
    phase = 4
    verb = DELETE
    noun = "namespace"

    def details(self) -> dict:
        return {"name": self.netns.name, "role": self.netns.role}


# -- creations and changes -------------------------------------------------------------------

@dataclass(frozen=True)
class CreateNamespace(_OnNetns, Action):
    """A new namespace, its ownership record, and its loopback up."""

    netns: Netns
    phase = 10
    verb = CREATE
    noun = "namespace"

    def details(self) -> dict:
        return {"name": self.netns.name, "role": self.netns.role, "host": self.netns.host or None}  # "": the underlay


def _link_details(link: Link) -> dict:
    out = {"name": link.name, "kind": link.kind, "mtu": link.mtu, "state": "up" if link.up else "down"}
    if link.mac:
        out["mac"] = link.mac
    if link.master:
        out["master"] = link.master
    if link.stp is not None:
        out["stp"] = link.stp
    return out


@dataclass(frozen=True)
class CreateBridge(_OnLink, Action):
    link: Link
    reason: str = ""
    phase = 12
    verb = CREATE
    noun = "link"

    def subject(self) -> str:
        return f"bridge {self.link.name} in {scope_label(self.scope)}"

    def details(self) -> dict:
        out = _link_details(self.link)
        if self.reason:
            out["replace_reason"] = self.reason
        return out

    def provisional_mtu(self) -> int | None:
        """The MTU to create the bridge with, one off the wanted one, which is then set right away.

        A bridge follows its smallest port's MTU as ports come and go, unless its MTU was once
        changed (the kernel's "MTU set by user" flag, set only by a change, not at creation):
        created at 1400 with 1500 ports, it would be 1500 once they join. The change from the
        provisional value to the wanted one sets the flag."""
        mtu = self.link.mtu
        if mtu is None:
            return None
        return mtu - 1 if mtu > 68 else mtu + 1


@dataclass(frozen=True)
class CreateVeth(Action):
    """Both ends of a veth pair in one step; `a` is created first and `b` is its peer."""

    a: Link
    b: Link
    reason: str = ""
    phase = 13
    verb = CREATE
    noun = "link"

    @property
    def scope(self) -> Scope:
        return self.a.scope

    def subject(self) -> str:
        return f"veth {self.a.name} in {scope_label(self.a.scope)} <-> {self.b.name} in {scope_label(self.b.scope)}"

    def details(self) -> dict:
        return {"a": {"netns": self.a.scope, **_link_details(self.a)},
                "b": {"netns": self.b.scope, **_link_details(self.b)}}

    def as_json(self) -> dict:
        out = super().as_json()
        out["a"], out["b"] = self.details()["a"], self.details()["b"]
        if self.reason:
            out["replace_reason"] = self.reason
        return out

    def ordered(self) -> tuple[Link, Link]:
        """(first, peer): the end created first, so its peer is moved by namespace name.
        The root namespace has no name, so an end in it is always created first."""
        if self.b.scope is None and self.a.scope is not None:
            return self.b, self.a
        return self.a, self.b


@dataclass(frozen=True)
class SetLink(_OnLink, Action):
    """Change attributes of an existing link in place."""

    link: Link  # the desired link
    changes: tuple[Change, ...]
    phase = 15
    verb = CHANGE
    noun = "link"

    def details(self) -> dict:
        return {"name": self.link.name,
                "changes": [{"attribute": c.attribute, "old": _jsonable(c.old), "new": _jsonable(c.new)} for c in self.changes]}

    def as_json(self) -> dict:
        out = super().as_json()
        out["changes"] = self.details()["changes"]
        return out


@dataclass(frozen=True)
class SetSysctl(Action):
    where: Scope
    key: str
    old: str | None
    new: str
    why: str = ""  # when the design needs it rather than the file saying it
    verb = CHANGE
    noun = "sysctl"

    @property
    def phase(self) -> int:  # type: ignore[override]
        # A namespace-wide key (net.ipv6.conf.default.*, ip_forward) is written before the
        # namespace's interfaces exist, so that defaults apply to them; a key of one interface
        # once that interface exists.
        return 16 if sysctl_interface(self.key) is not None else 11

    @property
    def scope(self) -> Scope:
        return self.where

    def subject(self) -> str:
        return f"sysctl {self.key} in {scope_label(self.scope)}"

    def details(self) -> dict:
        out = {"key": self.key, "old": self.old, "new": self.new}
        if self.why:
            out["why"] = self.why
        return out


@dataclass(frozen=True)
class AddAddress(_OnAddress, Action):
    address: Address
    phase = 17
    verb = CREATE
    noun = "address"


@dataclass(frozen=True)
class AddRoute(_OnRoute, Action):
    """A route to add. `replace`: it may or may not survive this plan's address deletions (the
    kernel drops routes whose gateway loses its subnet), so it is written with replace."""

    route: RouteEntry
    replace: bool = False
    phase = 19
    verb = CREATE
    noun = "route"


@dataclass(frozen=True)
class ReplaceRoute(Action):
    """`ip route replace`: the same destination, another gateway or device, changed in place."""

    old: RouteEntry
    new: RouteEntry
    phase = 19
    verb = CHANGE
    noun = "route"

    @property
    def scope(self) -> Scope:
        return self.new.scope

    def subject(self) -> str:
        return f"route {route_label(self.new)} in {scope_label(self.scope)}"

    def details(self) -> dict:
        changes = []
        for attribute in ("via", "dev", "proto", "onlink"):
            old, new = getattr(self.old, attribute), getattr(self.new, attribute)
            if old != new:
                changes.append({"attribute": attribute, "old": _jsonable(old), "new": _jsonable(new)})
        return {"to": self.new.dst, "via": self.new.via, "dev": self.new.dev, "metric": self.new.metric, "changes": changes}

    def as_json(self) -> dict:
        out = super().as_json()
        out["changes"] = self.details()["changes"]
        return out


# -- VXLAN: the device, and per remote host a neighbour and an FDB entry --------------------

@dataclass(frozen=True)
class CreateVxlan(_OnLink, Action):
    """A VXLAN device (after the veths: its underlay interface may be one of them)."""

    link: Link
    reason: str = ""
    phase = 14
    verb = CREATE
    noun = "link"

    def details(self) -> dict:
        out = _link_details(self.link)
        vx = self.link.vxlan
        out.update({"vni": vx.vni, "port": vx.port, "local": vx.local, "learning": vx.learning,
                    "underlay": vx.underlay})
        if self.reason:
            out["replace_reason"] = self.reason
        return out


class _OnNeighbour:
    neighbour: Neighbour

    @property
    def scope(self) -> Scope:
        return self.neighbour.scope

    def subject(self) -> str:
        n = self.neighbour
        return f"neighbour {n.ip} on {n.dev} in {scope_label(self.scope)}"

    def details(self) -> dict:
        return {"dev": self.neighbour.dev, "ip": self.neighbour.ip, "mac": self.neighbour.mac}


class _OnFdb:
    fdb: Fdb

    @property
    def scope(self) -> Scope:
        return self.fdb.scope

    def subject(self) -> str:
        return f"fdb {self.fdb.mac} dst {self.fdb.dst} on {self.fdb.dev} in {scope_label(self.scope)}"

    def details(self) -> dict:
        return {"dev": self.fdb.dev, "mac": self.fdb.mac, "dst": self.fdb.dst}


@dataclass(frozen=True)
class DeleteNeighbour(_OnNeighbour, Action):
    neighbour: Neighbour
    phase = 1
    verb = DELETE
    noun = "neighbour"


@dataclass(frozen=True)
class DeleteFdb(_OnFdb, Action):
    fdb: Fdb
    phase = 1
    verb = DELETE
    noun = "fdb"


@dataclass(frozen=True)
class AddNeighbour(_OnNeighbour, Action):
    """`ip neigh replace ... nud permanent`: creates the entry, or corrects its MAC in place."""

    neighbour: Neighbour
    old_mac: str | None = None  # set when an entry for this address exists with another MAC
    phase = 18
    noun = "neighbour"

    @property
    def verb(self) -> str:  # type: ignore[override]
        return CHANGE if self.old_mac else CREATE

    def details(self) -> dict:
        out = super().details()
        if self.old_mac:
            out["changes"] = [{"attribute": "mac", "old": self.old_mac, "new": self.neighbour.mac}]
        return out


@dataclass(frozen=True)
class AddFdb(_OnFdb, Action):
    """`bridge fdb append MAC dev VXLAN dst UNDERLAY`: frames for a remote VTEP go to its host."""

    fdb: Fdb
    phase = 18
    verb = CREATE
    noun = "fdb"


@dataclass(frozen=True)
class Plan:
    topology: str
    actions: tuple[Action, ...]
    notes: tuple[str, ...] = ()  # what the plan deliberately leaves alone, and why
    warnings: tuple[str, ...] = ()  # what may defeat the design that the plan cannot change

    @property
    def empty(self) -> bool:
        return not self.actions

    def counts(self) -> dict[str, int]:
        add = sum(1 for a in self.actions if a.verb == CREATE)
        change = sum(1 for a in self.actions if a.verb == CHANGE)
        destroy = sum(1 for a in self.actions if a.verb == DELETE)
        return {"add": add, "change": change, "destroy": destroy}

    def summary(self) -> str:
        c = self.counts()
        return f"Plan: {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy."

    def as_json(self) -> dict:
        return {"format_version": 1, "topology": self.topology, "summary": self.counts(),
                "actions": [a.as_json() for a in self.actions], "notes": list(self.notes),
                "warnings": list(self.warnings)}
