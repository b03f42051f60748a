"""`topoctl ls`: the topologies deployed on this machine, from topoctl's records, each with
a fresh plan against the file it was applied from."""

from __future__ import annotations

import os
from dataclasses import dataclass

from topoctl.core.realisation import realise
from topoctl.errors import TopoctlError
from topoctl.kernel.sockets import Kernel
from topoctl.run.context import Context
from topoctl.store import records


@dataclass(frozen=True)
class Listed:
    topology: str
    hosts: tuple[str, ...]
    emulate: bool | None  # None: no record of the apply (namespaces only)
    namespaces: int
    links: int | None  # owned links the kernel shows; None when not read
    plan: str  # "empty", "N actions", "file missing", "file invalid", "unknown", "error: ..."
    file: str | None

    def as_json(self) -> dict:
        return {"topology": self.topology, "hosts": list(self.hosts), "emulate": self.emulate,
                "namespaces": self.namespaces, "links": self.links, "plan": self.plan, "file": self.file}


def deployed(kernel: Kernel) -> list[Listed]:
    by_topology: dict[str, list] = {}
    for name, record in records.netns_records().items():
        by_topology.setdefault(record.topology, []).append(record)
    applied = records.deployments()
    listed = []
    for name in sorted(set(by_topology) | set(applied)):
        found = by_topology.get(name, [])
        record = applied.get(name)
        hosts = record.hosts if record else tuple(sorted({r.host for r in found if r.host}))
        listed.append(_one(kernel, name, record, hosts, len(found)))
    return listed


def _one(kernel: Kernel, name: str, record, hosts: tuple[str, ...], namespaces: int) -> Listed:
    if record is None:
        return Listed(name, hosts, None, namespaces, None, "unknown (no record of the file)", None)
    if not os.path.exists(record.file):
        return Listed(name, hosts, record.emulate, namespaces, None, "file missing", record.file)
    from topoctl.spec.loader import load_file

    try:
        topology = load_file(record.file)
    except TopoctlError:
        return Listed(name, hosts, record.emulate, namespaces, None, "file invalid", record.file)
    if topology.name != name:
        return Listed(name, hosts, record.emulate, namespaces, None, f"the file is now topology {topology.name!r}",
                      record.file)
    try:
        host = hosts[0] if len(hosts) == 1 and len(topology.hosts) > 1 else None
        context = Context(topology, realise(topology, host, record.emulate))
        the_plan, live = context.plan(kernel)
    except TopoctlError as err:
        return Listed(name, hosts, record.emulate, namespaces, None, f"error: {err.message}", record.file)
    links = sum(1 for link in live.links.values() if link.owner == name)
    count = len(the_plan.actions)
    state = "empty" if the_plan.empty else f"{count} action{'' if count == 1 else 's'} pending"
    return Listed(name, hosts, record.emulate, namespaces, links, state, record.file)
