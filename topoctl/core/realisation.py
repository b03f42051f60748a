"""How a topology's hosts are realised on this machine, and which of them a run acts on. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from topoctl.errors import UsageError
from topoctl.spec.model import Place, Topology

if TYPE_CHECKING:
    from topoctl.core.state import Scope


@dataclass(frozen=True)
class Realisation:
    """How the topology's hosts map onto this machine, and which of them we act on."""

    topology: str
    hosts: tuple[str, ...]
    emulate: bool
    all_hosts: tuple[str, ...] = ()  # every host of the file; more than `hosts` when --host narrows

    @property
    def partial(self) -> bool:
        return bool(self.all_hosts) and set(self.hosts) != set(self.all_hosts)

    def host_scope(self, host: str) -> Scope:
        # Emulated, a host is a namespace of its own; for real, it is this machine's root namespace.
        return f"{self.topology}-{host}" if self.emulate else None

    @property
    def underlay_scope(self) -> str:
        """Emulated only: the namespace that stands for the network between the hosts."""
        return f"{self.topology}-underlay"

    def scope_of(self, place: Place) -> Scope:
        return place.namespace if place.namespace is not None else self.host_scope(place.host)


def emulates_underlay(topology: Topology, realisation: Realisation) -> bool:
    """Whether this run has a namespace standing for the network between the hosts."""
    return realisation.emulate and any(h.address is not None for h in topology.hosts)


def container_names(topology: Topology, realisation: Realisation) -> list[str]:
    """The container namespaces this run acts on, sorted: known without the desired state."""
    selected = set(realisation.hosts)
    return sorted(ns.name for ns in topology.namespaces if ns.host in selected)


def realise(topology: Topology, host: str | None, emulate: bool,
            local_addresses: Callable[[], set] | None = None) -> Realisation:
    """Which hosts of the file this run acts on, and how they map onto the machine.

    Emulated, all hosts (or the one --host names). For real, the one --host names, the only
    one, or the one whose underlay address this machine has (`local_addresses` reads them).
    """
    names = topology.host_names()
    if host is not None:
        if host not in names:
            raise UsageError(f"unknown host {host!r}", f"the file's hosts are: {', '.join(names)}")
        return Realisation(topology.name, (host,), emulate, names)
    if emulate or len(names) == 1:
        return Realisation(topology.name, names, emulate, names)
    if local_addresses is not None:
        mine = local_addresses()
        matches = [h.name for h in topology.hosts if h.address is not None and h.address.ip in mine]
        if len(matches) == 1:
            return Realisation(topology.name, (matches[0],), emulate, names)
        if len(matches) > 1:
            raise UsageError(f"this machine has the underlay addresses of hosts {', '.join(matches)}",
                             "say which it is with --host")
    raise UsageError(f"the file has {len(names)} hosts and none has an underlay address of this machine",
                     f"use --host with one of: {', '.join(names)} (or --emulate to build them all here)")


def exec_scope(topology: Topology, realisation: Realisation, target: str) -> Scope:
    """The namespace `exec` enters for TARGET: a container namespace, a host by its name or by
    the namespace name plan and show print for it (`docker0-local`), or, emulated, the underlay
    (`underlay` or `<topology>-underlay`)."""
    if topology.namespace(target) is not None:
        return target
    for host in topology.host_names():
        if target == host or (realisation.emulate and target == realisation.host_scope(host)):
            return realisation.host_scope(host)
    if emulates_underlay(topology, realisation) and target in ("underlay", realisation.underlay_scope):
        return realisation.underlay_scope
    names = [n.name for n in topology.namespaces] + list(topology.host_names())
    if emulates_underlay(topology, realisation):
        names.append("underlay")
    raise UsageError(f"{target!r} is not a namespace or host of the topology {topology.name!r}",
                     f"choose one of: {', '.join(names)}")
