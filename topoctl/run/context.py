"""The run's view of a topology: the desired state (core) against the live one (kernel),
and the plan between them. Where the pure core meets the kernel layer and the journal."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as dataclass_replace

from topoctl.core.actions import Plan
from topoctl.core.planner import plan
from topoctl.core.desired import Deployment
from topoctl.core.realisation import container_names, realise  # noqa: F401 (re-export)
from topoctl.core.state import State
from topoctl.kernel.sockets import Kernel
from topoctl.kernel.observe import observe
from topoctl.store import journal


@dataclass
class Context(Deployment):
    def observe(self, kernel: Kernel) -> State:
        return self._observe(kernel)[0]

    def _observe(self, kernel: Kernel, destroy: bool = False,
                 recovery: journal.Interrupted | None = None) -> tuple[State, bool]:
        """The live state in this run's view, and whether other hosts still use the shared underlay."""
        r = self.realisation
        begun = [obj["netns"] for obj in recovery.unfinished if "netns" in obj] if recovery is not None else []
        hosts = [scope for scope in self.desired.scopes
                 if scope is None or self.desired.namespaces[scope].role == "host"]
        live = observe(kernel, self.topology.name, self.desired.scopes, self.desired.sysctls.keys(),
                       hosts=set(r.hosts) if r.partial else None, skim_containers=destroy, half_made_ours=begun,
                       tables_in={t.scope for t in self.desired.tables.values()} if not destroy else (),
                       host_scopes=hosts, rates_on=self.desired.qdiscs.keys() if not destroy else ())
        shared = self.shared_scope()
        if shared is None:
            return live, False
        others = [k for k, link in live.links.items() if k[0] == shared and link.kind == "veth"
                  and k not in self.desired.links]
        # Other hosts' cables on the shared underlay are theirs to manage, not this run's.
        live.links = {k: v for k, v in live.links.items() if k[0] != shared or k in self.desired.links}
        live.addresses = {a for a in live.addresses if a.scope != shared or (a.scope, a.link) in self.desired.links}
        return live, bool(others)

    def plan(self, kernel: Kernel, destroy: bool = False, recovering: bool = True) -> tuple[Plan, State]:
        """The plan from the live state. `recovering`: consult the journal of an interrupted
        run (not when verifying a run that holds the journal itself)."""
        if not destroy:  # a destroy does not read our containers (it deletes them whole)
            kernel.prefetch(container_names(self.topology, self.realisation))
        recovery = journal.interrupted(self.topology.name) if recovering else None
        live, shared_in_use = self._observe(kernel, destroy, recovery)
        if recovery is not None:
            _count_unfinished_as_ours(live, recovery, self.topology.name)
        wanted = self.empty(keep_shared=shared_in_use) if destroy else self.desired
        the_plan = plan(wanted, live, self.topology.name)
        if recovery is not None:
            the_plan = dataclass_replace(the_plan, notes=the_plan.notes + (recovery.describe(),))
        return the_plan, live


def _count_unfinished_as_ours(live: State, recovery: journal.Interrupted, topology: str) -> None:
    """What an interrupted apply began may lack our mark: plan as if it had it (apply marks it)."""
    for obj in recovery.unfinished:
        if "netns" in obj and obj["netns"] in live.namespaces and live.namespaces[obj["netns"]].owner is None:
            live.namespaces[obj["netns"]] = dataclass_replace(live.namespaces[obj["netns"]], owner=topology,
                                                             role=obj.get("role", "container"))
        elif "link" in obj:
            key = (obj.get("scope"), obj["link"])
            if key in live.links and live.links[key].owner is None:
                live.links[key] = dataclass_replace(live.links[key], owner=topology)
