"""The run's view of a topology: the desired state (core) against the live one (kernel),
and the plan between them. Where the pure core meets the kernel layer and the journal."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as dataclass_replace

from topoctl.core.actions import DeleteNamespace, Plan
from topoctl.core.planner import plan
from topoctl.core.desired import Deployment
from topoctl.core.realisation import container_names, realise  # noqa: F401 (re-export)
from topoctl.core.state import State
from topoctl.kernel.sockets import Kernel
from topoctl.kernel.observe import observe
from topoctl.store import journal, records


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

    def _put_back(self, wanted: State, live: State, the_plan: Plan) -> bool:
        """A destroy puts back the forwarding keys this topology turned on where no other
        topology of topoctl's still needs them, in the namespaces the destroy leaves."""
        deleted = {a.netns.name for a in the_plan.actions if isinstance(a, DeleteNamespace)}
        added = False
        for scope in outliving_scopes(self):
            if scope in deleted or (scope is not None and scope not in live.namespaces):
                continue
            for key, (before, by) in records.derived_sysctls(scope).items():
                if set(by) == {self.topology.name} and live.sysctls.get((scope, key), before) != before:
                    wanted.sysctls[(scope, key)] = before
                    wanted.sysctl_reasons[(scope, key)] = RESTORED
                    added = True
        return added

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
        if destroy and self._put_back(wanted, live, the_plan):
            the_plan = plan(wanted, live, self.topology.name)
        if recovery is not None:
            the_plan = dataclass_replace(the_plan, notes=the_plan.notes + (recovery.describe(),))
        return the_plan, live


RESTORED = "restored: no topology of topoctl's needs it any more"


def outliving_scopes(deployment: Deployment) -> list:
    """The scopes of this run that may outlive the topology: the machine's root namespace, and
    emulated hosts (kept when they hold what is not topoctl's)."""
    desired = deployment.desired
    return [s for s in desired.scopes if s is None or (s in desired.namespaces and desired.namespaces[s].role == "host")]


def register_needs(deployment: Deployment, live: State) -> None:
    """Before an apply's steps: the forwarding keys it derives are needed by this topology, and
    the first need remembers the value before (store.records), for the destroy to put back."""
    wanted: dict = {}
    outliving = set(outliving_scopes(deployment))
    for scope, key in deployment.desired.sysctl_reasons:
        value = live.sysctls.get((scope, key))
        if scope in outliving and value is not None:
            wanted.setdefault(scope, {})[key] = value
    for scope, before in wanted.items():
        records.need_sysctls(scope, before, deployment.topology.name)


def release_needs(deployment: Deployment) -> None:
    """After a destroy: this topology needs nothing it derived any more."""
    for scope in outliving_scopes(deployment):
        records.release_sysctls(scope, deployment.topology.name)


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
