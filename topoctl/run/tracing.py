"""`topoctl trace FILE FROM TO`: one probe with nftables tracing on in every namespace on its
path (found by the same walk as check's explanations), under the hosts' lock."""

from __future__ import annotations

import ipaddress
import signal
from dataclasses import dataclass

from topoctl.core.explain import explain
from topoctl.core.probes import ICMP, Probe, segments
from topoctl.core.realisation import emulates_underlay
from topoctl.core.traces import Traced
from topoctl.core.verdicts import source_address
from topoctl.errors import Terminated, UsageError
from topoctl.kernel import tracing
from topoctl.kernel.namespaces import list_netns
from topoctl.kernel.sockets import Kernel
from topoctl.run.checking import gather_facts
from topoctl.run.context import Context
from topoctl.spec.model import Place
from topoctl.store.locking import host_locks


@dataclass(frozen=True)
class TraceReport:
    probe: Probe
    scopes: tuple
    traced: Traced


def _place(context: Context, name: str) -> Place:
    topology = context.topology
    ns = topology.namespace(name)
    if ns is not None:
        return Place(ns.host, ns.name)
    if name in topology.host_names():
        return Place(name, None)
    raise UsageError(f"{name!r} is not a namespace or host of the topology {topology.name!r}",
                     f"choose one of: {', '.join([n.name for n in topology.namespaces] + list(topology.host_names()))}")


def _target(context: Context, text: str, version: int | None):
    """TO: an address, or a namespace (its first address, IPv4 first)."""
    try:
        return ipaddress.ip_address(text), None
    except ValueError:
        pass
    place = _place(context, text)
    if place.namespace is None:
        raise UsageError(f"trace goes to a namespace or an address, not to host {text!r}",
                         "give the host's address instead")
    addresses = [a for s in segments(context.topology) for m in s.members if m.place == place for a in m.addresses]
    addresses.sort(key=lambda a: (a.version != (version or 4), a.version))
    if not addresses:
        raise UsageError(f"namespace {text!r} has no address to trace to", "give an address instead")
    return addresses[0].ip, place


def run_trace(kernel: Kernel, context: Context, source: str, target: str, proto: str = ICMP,
              port: int | None = None, lock_timeout: float = 30.0) -> TraceReport:
    if proto != ICMP and port is None:
        raise UsageError(f"--proto {proto} needs --port", "topoctl trace FILE FROM TO --proto tcp --port 80")
    realisation = context.realisation
    place = _place(context, source)
    address, target_place = _target(context, target, None)
    label = source if place.namespace else f"host {source}"
    listen = (target_place, port) if target_place is not None and port is not None else None
    probe = Probe("asked", proto, place, label, address, target, port=port if proto != ICMP else None,
                  listen=listen if proto != ICMP else None)
    facts = gather_facts(kernel, context, [probe])
    source_scope = realisation.scope_of(place)
    hops = explain(probe, facts, source_scope, None, source_address(context.topology, segments(context.topology), probe))
    scopes: list = []
    for scope in [source_scope] + [h.scope for h in hops] + ([realisation.scope_of(target_place)] if target_place else []):
        if scope not in scopes:
            scopes.append(scope)
    existing = set(list_netns())
    scopes = [s for s in scopes if s is None or s in existing]
    bridges = {link.scope for link in facts.state.links.values() if link.kind == "bridge"}
    if emulates_underlay(context.topology, realisation) and realisation.underlay_scope in existing \
            and realisation.underlay_scope not in scopes and any(h.scope == realisation.underlay_scope for h in hops):
        scopes.append(realisation.underlay_scope)

    def stopped(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stopped)  # the finally below removes the trace tables
    try:
        with host_locks(context.lock_names(), context.topology.name, "trace", lock_timeout):
            traced = tracing.trace(probe, source_scope, scopes, bridges,
                                   realisation.scope_of(target_place) if listen else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return TraceReport(probe, tuple(scopes), traced)
