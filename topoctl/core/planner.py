"""plan(desired, live) -> Plan. A pure function: no kernel, no files, unit-tested from data.

Rules (the promises of docs/promises.md):
- only objects owned by this topology are changed or deleted; a wanted name taken by a foreign
  object is an OwnershipConflict, never a takeover;
- attributes the kernel can change in place (mtu, mac, master, state, route gateway) are
  changed in place; what it cannot (a link's kind, a veth's peer) is replaced (-/+);
- everything inside a namespace or link that is (re)created is created with it.
"""

from __future__ import annotations

from dataclasses import replace

from topoctl.core.actions import (
    Action,
    AddAddress,
    AddRoute,
    Change,
    AddFdb,
    AddNeighbour,
    CreateBridge,
    CreateNamespace,
    CreateVeth,
    CreateVxlan,
    DeleteAddress,
    DeleteFdb,
    DeleteNeighbour,
    DeleteLink,
    DeleteNamespace,
    DeleteRoute,
    Plan,
    ReplaceRoute,
    SetLink,
    SetSysctl,
)
from topoctl.core.actions import sysctl_interface
from topoctl.core.table_actions import ClearRate, DeleteTable, SetRate, WriteTable
from topoctl.errors import OwnershipConflict
from topoctl.core.state import Address, Link, RouteEntry, Scope, State, interface_order, network_order, scope_label



def _link_changes(want: Link, have: Link) -> tuple[Change, ...]:
    changes = []
    if want.mtu is not None and want.mtu != have.mtu:
        changes.append(Change("mtu", have.mtu, want.mtu))
    if want.mac is not None and want.mac != have.mac:
        changes.append(Change("mac", have.mac, want.mac))
    if want.kind != "loopback" and want.master != have.master:
        changes.append(Change("master", have.master, want.master))
    if want.stp is not None and want.stp != have.stp:
        changes.append(Change("stp", have.stp, want.stp))
    if want.vxlan is not None and have.vxlan is not None:
        for attribute in ("local", "learning", "underlay"):
            new, old = getattr(want.vxlan, attribute), getattr(have.vxlan, attribute)
            if new is not None and new != old:
                changes.append(Change(attribute, old, new))
    if want.up != have.up:
        changes.append(Change("up", have.up, want.up))
    return tuple(changes)


def _replace_reason(want: Link, have: Link) -> str:
    if want.kind != have.kind:
        return f"kind {have.kind} -> {want.kind}"
    if want.vxlan is not None and have.vxlan is not None:
        for attribute in want.vxlan.FIXED:
            new, old = getattr(want.vxlan, attribute), getattr(have.vxlan, attribute)
            if new != old:
                return f"{attribute} {old} -> {new}"
    if want.kind == "veth" and want.peer != have.peer:
        old = f"{have.peer[1]} in {scope_label(have.peer[0])}" if have.peer else "none"
        new = f"{want.peer[1]} in {scope_label(want.peer[0])}"
        return f"peer {old} -> {new}"
    return ""


class _Planner:
    def __init__(self, desired: State, live: State, topology: str) -> None:
        self.desired = desired
        self.live = live
        self.topology = topology
        self.actions: list[Action] = []
        self.conflicts: list[tuple[str, str | None, Scope]] = []  # (what, the topology owning it, where)
        self.notes: list[str] = []
        self.warnings: list[str] = []  # what may defeat the design, though the plan can do nothing about it
        self.fresh_scopes: set[Scope] = set()  # created by this plan: everything inside is new
        self.gone_scopes: set[Scope] = set()  # deleted by this plan: everything inside goes
        self.fresh_links: set[tuple[Scope, str]] = set()  # created or re-created by this plan
        self.gone_links: set[tuple[Scope, str]] = set()  # deleted by this plan

    def owns_link(self, link: Link) -> bool:
        return link.owner == self.topology

    # -- namespaces ----------------------------------------------------------------------

    def namespaces(self) -> None:
        for name, want in self.desired.namespaces.items():
            have = self.live.namespaces.get(name)
            if have is None:
                self.actions.append(CreateNamespace(want))
                self.fresh_scopes.add(name)
            elif have.owner != self.topology:
                owner = f"topology {have.owner!r}" if have.owner else "nobody topoctl knows"
                self.conflicts.append((f"namespace {name} already exists and belongs to {owner}", have.owner, name))
        for name, have in self.live.namespaces.items():
            if have.owner == self.topology and name not in self.desired.namespaces:
                # A container namespace is wholly ours; an (emulated) host or the underlay stands
                # for a machine or a network that others may have put things into.
                foreign = sorted(link.name for link in self.live.links_in(name)
                                 if link.kind != "loopback" and not self.owns_link(link)) if have.role != "container" else []
                tables = list(self.live.foreign_tables.get(name, ())) if have.role != "container" else []
                if foreign or tables:
                    # Deleting the namespace would take interfaces or tables we did not make with it.
                    held = ([f"interfaces topoctl did not create ({', '.join(foreign)})"] if foreign else []) + \
                        ([f"nftables tables that are not topoctl's ({', '.join(tables)})"] if tables else [])
                    self.notes.append(f"keeping namespace {name}: it holds {' and '.join(held)}; only topoctl's "
                                      "own objects in it are removed")
                    continue
                self.actions.append(DeleteNamespace(have))
                self.gone_scopes.add(name)

    # -- links ---------------------------------------------------------------------------

    def _live_link(self, key: tuple[Scope, str]) -> Link | None:
        return None if key[0] in self.fresh_scopes else self.live.links.get(key)

    def _claim(self, want: Link) -> tuple[Link | None, bool]:
        """The live link in the way of `want`, and whether it may be touched."""
        have = self._live_link(want.key)
        if have is None:
            return None, True
        if want.kind == "loopback" and have.kind == "loopback":
            return have, True
        if not self.owns_link(have):
            owner = f"topology {have.owner!r}" if have.owner else "nobody topoctl knows"
            self.conflicts.append((f"interface {want.name} in {scope_label(want.scope)} already exists "
                                   f"({have.kind}) and belongs to {owner}", have.owner, want.scope))
            return have, False
        return have, True

    def _delete_link(self, have: Link, reason: str = "") -> None:
        if have.key in self.gone_links:
            return
        self.actions.append(DeleteLink(have, reason))
        self.gone_links.add(have.key)
        if have.kind == "veth" and have.peer is not None:
            self.gone_links.add(have.peer)  # the kernel deletes both ends of a pair

    def links(self) -> None:
        ordered = sorted(self.desired.links.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
        # Bridges before veths: a veth whose bridge is re-created must be attached again.
        for key, want in ordered:
            if want.kind == "loopback":
                have = self._live_link(key)
                if have is not None and have.up != want.up:
                    self.actions.append(SetLink(want, (Change("up", have.up, want.up),)))
            elif want.kind != "veth":
                self._device(want)
        done: set[tuple[Scope, str]] = set()
        for key, want in ordered:
            if want.kind != "veth" or key in done:
                continue
            peer_want = self.desired.links.get(want.peer)
            done.update({key, want.peer})
            self._veth(want, peer_want)
        unwanted = [(key, have) for key, have in self.live.links.items()
                    if key not in self.desired.links and have.scope not in self.gone_scopes and self.owns_link(have)]
        for key, have in sorted(unwanted, key=lambda kv: (kv[0][0] or "", kv[0][1])):
            if key not in self.gone_links:  # grows in this loop: a deleted veth's peer goes with it
                if have.kind == "veth" and have.peer is not None and have.peer[0] in self.gone_scopes:
                    self.gone_links.add(key)  # goes with its peer's namespace
                    continue
                self._delete_link(have)

    def _as_seen_now(self, have: Link) -> Link:
        """The live link as it will be once this plan's deletions ran (a re-created master detaches it)."""
        if have.master is not None and (have.scope, have.master) in self.gone_links:
            return replace(have, master=None)
        return have

    def _device(self, want: Link) -> None:
        """A bridge or a VXLAN device: made in one step, changed in place where the kernel allows."""
        have, free = self._claim(want)
        if not free:
            return
        if have is not None:
            reason = _replace_reason(want, have)
            if not reason:
                changes = _link_changes(want, have)
                if changes:
                    self.actions.append(SetLink(want, changes))
                return
            self._delete_link(have, reason)
        create = CreateVxlan if want.kind == "vxlan" else CreateBridge
        self.actions.append(create(want, reason=_replace_reason(want, have) if have else ""))
        self.fresh_links.add(want.key)

    def _veth(self, want: Link, peer_want: Link | None) -> None:
        if peer_want is None:
            # Only one end is ours to act on (the other host is not selected): manage this end in place.
            have, free = self._claim(want)
            if free and have is not None:
                changes = _link_changes(want, self._as_seen_now(have))
                if changes:
                    self.actions.append(SetLink(want, changes))
            return
        have_a, free_a = self._claim(want)
        have_b, free_b = self._claim(peer_want)
        if not (free_a and free_b):
            return
        reason = ""
        if have_a is None and have_b is None:
            pass
        elif have_a is None or have_b is None:
            reason = f"peer {(want if have_a is None else peer_want).name} is missing"
        else:
            reason = _replace_reason(want, have_a) or _replace_reason(peer_want, have_b)
        if have_a is not None and have_b is not None and not reason:
            for end, have in ((want, have_a), (peer_want, have_b)):
                changes = _link_changes(end, self._as_seen_now(have))
                if changes:
                    self.actions.append(SetLink(end, changes))
            return
        for have in (have_a, have_b):
            if have is not None:
                self._delete_link(have, reason)
        # Create from the end whose namespace is created first, so the peer lands in an existing one.
        self.actions.append(CreateVeth(want, peer_want, reason=reason))
        self.fresh_links.update({want.key, peer_want.key})

    # -- addresses, routes, sysctls ------------------------------------------------------

    def _is_new(self, scope: Scope, link: str | None) -> bool:
        return scope in self.fresh_scopes or (scope, link) in self.fresh_links

    def _managed_live_address(self, address: Address) -> bool:
        if address.kernel_made:
            return False
        link = self.live.links.get((address.scope, address.link))
        return link is not None and self.owns_link(link)

    def addresses(self) -> None:
        # Only what changes is sorted (into the order of its actions): at N=1000 a no-op plan
        # sorted 3000 addresses, most of them wanted, the kernel's own, or on lo, for nothing.
        missing = [a for a in self.desired.addresses if self._is_new(a.scope, a.link) or a not in self.live.addresses]
        for address in sorted(missing, key=_address_key):
            self.actions.append(AddAddress(address))
        unwanted = [a for a in self.live.addresses
                    if not a.kernel_made and a not in self.desired.addresses and self._managed_live_address(a)
                    and a.scope not in self.gone_scopes and (a.scope, a.link) not in self.gone_links]
        for address in sorted(unwanted, key=_address_key):
            self.actions.append(DeleteAddress(address))

    def _shaken(self, route: RouteEntry, deleted: dict) -> bool:
        """Whether this plan deletes the last address whose subnet holds the route's gateway:
        the kernel then drops the route, so it must be written again."""
        gone = deleted.get((route.scope, route.dev), ())
        if route.via is None or not any(route.via in interface.network for interface in gone):
            return False
        staying = (a for a in self.live.addresses if a.scope == route.scope and a.link == route.dev
                   and a.interface not in gone)
        return not any(route.via in a.interface.network for a in staying)

    def routes(self) -> None:
        deleted: dict[tuple[Scope, str], list] = {}
        for action in self.actions:
            if isinstance(action, DeleteAddress):
                deleted.setdefault((action.address.scope, action.address.link), []).append(action.address.interface)
        for key, want in sorted(self.desired.routes.items(), key=lambda kv: _route_key(kv[1])):
            have = None if self._is_new(want.scope, want.dev) else self.live.routes.get(key)
            if have is not None and (have.scope, have.dev) in self.gone_links:
                have = None  # its device goes away with a deleted link
            if have is not None and have.owner == self.topology and self._shaken(have, deleted):
                self.actions.append(AddRoute(want, replace=True))
            elif have is None:
                self.actions.append(AddRoute(want))
            elif have.owner != self.topology:
                self.conflicts.append((f"route {want.dst} in {scope_label(want.scope)} already exists and is not owned "
                                       f"by topology {self.topology!r}", have.owner, want.scope))
            elif not want.satisfied_by(have):
                self.actions.append(ReplaceRoute(have, want))
        unwanted = [have for key, have in self.live.routes.items()
                    if have.owner == self.topology and key not in self.desired.routes
                    and have.scope not in self.gone_scopes and (have.scope, have.dev) not in self.gone_links]
        for have in sorted(unwanted, key=_route_key):
            self.actions.append(DeleteRoute(have))

    def _owns_dev(self, scope: Scope, dev: str) -> bool:
        link = self.live.links.get((scope, dev))
        return link is not None and self.owns_link(link)

    def _dev_goes(self, scope: Scope, dev: str) -> bool:
        return scope in self.gone_scopes or (scope, dev) in self.gone_links

    def neighbours(self) -> None:
        live_by_ip = {(n.scope, n.dev, n.ip): n for n in self.live.neighbours}
        for want in sorted(self.desired.neighbours, key=_neighbour_key):
            have = None if self._is_new(want.scope, want.dev) else live_by_ip.get((want.scope, want.dev, want.ip))
            if have is None:
                self.actions.append(AddNeighbour(want))
            elif have.mac != want.mac:
                self.actions.append(AddNeighbour(want, old_mac=have.mac))
        wanted = {(n.scope, n.dev, n.ip) for n in self.desired.neighbours}
        for have in sorted(self.live.neighbours, key=_neighbour_key):
            if ((have.scope, have.dev, have.ip) not in wanted and self._owns_dev(have.scope, have.dev)
                    and not self._dev_goes(have.scope, have.dev)):
                self.actions.append(DeleteNeighbour(have))

    def fdb(self) -> None:
        for want in sorted(self.desired.fdb, key=_fdb_key):
            if self._is_new(want.scope, want.dev) or want not in self.live.fdb:
                self.actions.append(AddFdb(want))
        for have in sorted(self.live.fdb, key=_fdb_key):
            if (have not in self.desired.fdb and self._owns_dev(have.scope, have.dev)
                    and not self._dev_goes(have.scope, have.dev)):
                self.actions.append(DeleteFdb(have))

    def sysctls(self) -> None:
        ordered = sorted(self.desired.sysctls.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
        rewritten: set[Scope] = set()  # scopes where a namespace-wide key is written
        for (scope, key), value in ordered:
            interface = sysctl_interface(key)
            # A key of an interface this plan (re-)creates has the kernel's default, not the
            # live value read from the old interface.
            fresh = scope in self.fresh_scopes or (interface is not None and (scope, interface) in self.fresh_links)
            old = None if fresh else self.live.sysctls.get((scope, key))
            if old != value:
                self.actions.append(SetSysctl(scope, key, old, value, self.desired.sysctl_reasons.get((scope, key), "")))
                if interface is None:
                    rewritten.add(scope)
        # Writing net.ipv4.conf.all.forwarding (and a few others) sets every interface's own
        # key too: the interface keys of that namespace are written again, after it.
        planned = {(a.where, a.key) for a in self.actions if isinstance(a, SetSysctl)}
        for (scope, key), value in ordered:
            if scope in rewritten and sysctl_interface(key) is not None and (scope, key) not in planned:
                self.actions.append(SetSysctl(scope, key, self.live.sysctls.get((scope, key)), value,
                                              self.desired.sysctl_reasons.get((scope, key), "")))

    def tables(self) -> None:
        for key, want in sorted(self.desired.tables.items(), key=lambda kv: (kv[0][0] or "", *kv[0][1:])):
            have = None if want.scope in self.fresh_scopes else self.live.tables.get(key)
            if have != want:
                self.actions.append(WriteTable(want, have))
        for key, have in sorted(self.live.tables.items(), key=lambda kv: (kv[0][0] or "", *kv[0][1:])):
            if key not in self.desired.tables and have.scope not in self.gone_scopes:
                self.actions.append(DeleteTable(have))
        forwards = {scope for (scope, _) in self.desired.sysctl_reasons}
        for scope, chains in sorted(self.live.foreign_drops.items(), key=lambda kv: kv[0] or ""):
            if scope in forwards and scope not in self.gone_scopes:
                why = next(r for (s, _), r in sorted(self.desired.sysctl_reasons.items(), key=lambda kv: kv[0][1])
                           if s == scope)
                self.warnings.append(
                    f"in {scope_label(scope)}, {', '.join(chains)} (not topoctl's) drops forwarded traffic by policy: "
                    f"it may block what the design forwards ({why}); topoctl leaves other tables alone")


    def rates(self) -> None:
        for (scope, dev), want in sorted(self.desired.qdiscs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
            have = None if self._is_new(scope, dev) else self.live.qdiscs.get((scope, dev))
            if have != want:
                self.actions.append(SetRate(scope, dev, want, have))
        for (scope, dev), have in sorted(self.live.qdiscs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
            # only a tbf on our own link is ours to remove; another qdisc is someone else's
            if ((scope, dev) not in self.desired.qdiscs and not isinstance(have, str) and self._owns_dev(scope, dev)
                    and not self._dev_goes(scope, dev)):
                self.actions.append(ClearRate(scope, dev, have))


def _address_key(address: Address) -> tuple:
    return (address.scope or "", address.link, *interface_order(address.interface))


def _neighbour_key(n) -> tuple:
    return (n.scope or "", n.dev, n.ip.version, int(n.ip))


def _fdb_key(f) -> tuple:
    return (f.scope or "", f.dev, f.mac, f.dst.version, int(f.dst))


def _route_key(route) -> tuple:
    return (route.scope or "", *network_order(route.dst), route.metric)


def plan(desired: State, live: State, topology: str) -> Plan:
    """The ordered actions that turn `live` into `desired`, touching only what `topology` owns."""
    planner = _Planner(desired, live, topology)
    planner.namespaces()
    planner.links()
    planner.addresses()
    planner.routes()
    planner.neighbours()
    planner.fdb()
    planner.sysctls()
    planner.tables()
    planner.rates()
    if planner.conflicts:
        raise _conflict(planner.conflicts)
    actions = sorted(planner.actions, key=lambda a: a.sort_key())
    return Plan(topology=topology, actions=tuple(actions), notes=tuple(planner.notes),
                warnings=tuple(planner.warnings))


def _conflict(found: list[tuple[str, str | None, Scope]]) -> OwnershipConflict:
    """One object per line (not those inside a namespace that is itself in the way); the hint
    says who owns them: another topology (destroy it, or rename), or nobody topoctl knows
    (topoctl never takes those over)."""
    namespaces = {scope for text, _, scope in found if text.startswith("namespace ")}
    conflicts = [(text, owner) for text, owner, scope in found
                 if text.startswith("namespace ") or scope not in namespaces]
    if len(conflicts) == 1:
        message = conflicts[0][0]
    else:
        message = f"{len(conflicts)} objects of the file already exist and are not this topology's:" + "".join(
            f"\n  - {text}" for text, _ in conflicts)
    owners = sorted({owner for _, owner in conflicts if owner})
    hints = []
    if owners:
        names = ", ".join(repr(o) for o in owners)
        hints.append(f"{'they belong' if len(conflicts) > 1 else 'it belongs'} to topology {names}: destroy that "
                     "topology first (topoctl ls shows its file), or rename them in this file")
    if any(owner is None for _, owner in conflicts):
        hints.append("topoctl never takes over objects it did not create: rename them in the file, "
                     "or remove the existing ones by hand")
    return OwnershipConflict(message, "; ".join(hints))
