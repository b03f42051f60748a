"""`topoctl check`: send the probes the design implies, and explain each one that does not end
as designed, from the live state read afterwards."""

from __future__ import annotations

import ipaddress
import time

from topoctl.core.explain import Checked, CheckReport, Facts, Hop, explain, firewall_suspects
from topoctl.core.kabi import NUD_NAMES
from topoctl.core.probes import Probe, asked, design_probes, segments
from topoctl.core.state import State, nft_table_name
from topoctl.core.verdicts import source_address
from topoctl.errors import TopoctlError, UsageError
from topoctl.kernel import nft
from topoctl.core.realisation import emulates_underlay
from topoctl.kernel.namespaces import list_netns
from topoctl.kernel.probing import run_probes, wait_for_links
from topoctl.kernel.sockets import Kernel
from topoctl.run.context import Context

FORWARDING = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter")


GROUPS = ("gateway", "peer", "across", "path-mtu", "port", "outside", "firewall")


def check(kernel: Kernel, context: Context, source: str | None = None, target: str | None = None,
          deadline: float = 2.0, only: str | None = None) -> CheckReport:
    started = time.monotonic()
    topology, realisation = context.topology, context.realisation
    probes = design_probes(topology, realisation)
    if only is not None:
        if only not in GROUPS:
            raise UsageError(f"--only {only!r} is not a group of probes", f"choose one of: {', '.join(GROUPS)}")
        probes = [p for p in probes if p.group == only]
    if source is not None or target is not None:
        _known(context, source, target)
        probes = asked(probes, topology, realisation, source, target)
        if not probes:
            raise UsageError(f"the design implies no probe {_between(source, target)}",
                             "give --to an address to probe it from --from")
    scopes = {realisation.scope_of(p.source) for p in probes} | {realisation.scope_of(p.listen[0]) for p in probes if p.listen}
    scopes |= {realisation.host_scope(h) for h in realisation.hosts}
    if emulates_underlay(topology, realisation):
        scopes.add(realisation.underlay_scope)
    existing = set(list_netns())
    wait_for_links(kernel, sorted((s for s in scopes if s is None or s in existing), key=lambda s: s or ""))
    outcomes = run_probes(probes, realisation.scope_of, deadline)
    wrong = [o for o in outcomes if o.reached != o.probe.expect]
    facts = gather_facts(kernel, context, [o.probe for o in wrong]) if wrong else None
    results = []
    segs = segments(topology) if wrong else None  # once: each explanation asks it for the source address
    for outcome in outcomes:
        if outcome.reached == outcome.probe.expect:
            results.append(Checked(outcome))
        elif not outcome.probe.expect:
            results.append(Checked(outcome, (_let_through(outcome.probe, context),)))
        else:
            results.append(Checked(outcome, tuple(_explain(outcome.probe, facts, context, segs))))
    return CheckReport(tuple(results), time.monotonic() - started)


def _between(source: str | None, target: str | None) -> str:
    return " ".join(part for part in (f"from {source}" if source else "", f"to {target}" if target else "") if part)


def _known(context: Context, source: str | None, target: str | None) -> None:
    topology = context.topology
    names = [n.name for n in topology.namespaces] + list(topology.host_names())
    for given, option in ((source, "--from"), (target, "--to")):
        if given is None or given in names:
            continue
        if option == "--to" and _is_address(given):
            continue
        raise UsageError(f"{option} {given!r} is not a namespace or host of the topology {topology.name!r}"
                         + (" nor an address" if option == "--to" else ""), f"choose one of: {', '.join(names)}")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _let_through(probe: Probe, context: Context) -> Hop:
    return Hop(context.realisation.scope_of(probe.source), "firewall", False,
               f"passed, but the design forbids it ({probe.why}): the rule that drops it is not in effect",
               "topoctl plan shows what differs from the file; topoctl apply puts it back")


def _explain(probe: Probe, facts: Facts, context: Context, segs: list) -> list[Hop]:
    realisation = context.realisation
    hops = explain(probe, facts, realisation.scope_of(probe.source), None,
                   source_address(context.topology, segs, probe))
    if hops and all(h.ok for h in hops) and (suspects := firewall_suspects(facts, hops)):
        hops += suspects
    elif hops and all(h.ok for h in hops):
        hops.append(Hop(hops[-1].scope, "firewall", False,
                        "links, routes, neighbours and forwarding let it through both ways: a firewall rule or "
                        "a listener is the likely cause",
                        f"topoctl trace {context.topology.source} {probe.source_label.removeprefix('host ')} "
                        f"{probe.target}" + (f" --proto {probe.kind} --port {probe.port}" if probe.port else "")))
    return hops


def gather_facts(kernel: Kernel, context: Context, probes: list[Probe] = ()) -> Facts:
    live: State = context.observe(kernel)
    names = {(link.scope, link.index): link.name for link in live.links.values()}
    neighbour_states = {}
    for scope in sorted(live.scopes, key=lambda s: s or ""):
        try:
            messages = kernel.rtnl(scope).neighbours()
        except (TopoctlError, OSError):  # a namespace gone since: the walk says so itself
            continue
        for msg in messages:
            dev = names.get((scope, msg.ifindex))
            if dev is not None and msg.dst:
                neighbour_states[(scope, dev, ipaddress.ip_address(msg.dst))] = NUD_NAMES.get(msg.state, str(msg.state))
    wanted = [(scope, key) for scope in live.scopes for key in FORWARDING]
    wanted += [(link.scope, f"net.ipv4.conf.{link.name}.rp_filter") for link in live.links.values()
               if link.kind != "loopback"]
    sysctls = kernel.read_sysctls(wanted)
    masquerading = {}
    table = nft_table_name(context.topology.name)
    for bridge in context.topology.bridges:
        scope = context.realisation.host_scope(bridge.host)
        if bridge.masquerade and (scope, "inet", table) in live.tables:
            masquerading.setdefault(scope, ())
            masquerading[scope] += tuple(a.network for a in bridge.addresses)
    rules = nft.foreign_drops(sorted(live.scopes, key=lambda s: s or ""), table) if nft.available() else {}
    entries = {4: sum(1 for (_, _, ip) in neighbour_states if ip.version == 4),
               6: sum(1 for (_, _, ip) in neighbour_states if ip.version == 6)}
    limits = kernel.read_sysctls([(None, "net.ipv4.neigh.default.gc_thresh3"), (None, "net.ipv6.neigh.default.gc_thresh3")])
    limit = {v: int(limits[(None, f"net.ipv{v}.neigh.default.gc_thresh3")]) for v in (4, 6)
             if limits.get((None, f"net.ipv{v}.neigh.default.gc_thresh3"), "").strip().isdigit()}
    return Facts(live, context.topology.name, neighbour_states, sysctls, masquerading, rules,
                 neighbour_entries=entries, neighbour_limit=limit,
                 kernel_routes=_kernel_routes(kernel, context, probes, names))


def _kernel_routes(kernel: Kernel, context: Context, probes: list[Probe], names: dict) -> dict:
    """`ip route get` of each probe's target in its source namespace: the walk trusts the
    kernel's answer over the main table it read."""
    found = {}
    for probe in probes:
        scope = context.realisation.scope_of(probe.source)
        if (scope, probe.target) in found:
            continue
        try:
            msg = kernel.rtnl(scope).route_to(probe.target.packed)
        except (TopoctlError, OSError):
            continue
        if msg is None or msg.type in (6, 7, 8):  # none, or RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT
            found[(scope, probe.target)] = None
        elif msg.type == 1:  # RTN_UNICAST (a local address answers RTN_LOCAL: nothing to compare)
            gateway = ipaddress.ip_address(msg.gateway) if msg.gateway else None
            found[(scope, probe.target)] = (names.get((scope, msg.oif)), gateway)
    return found
