"""reconcile(): plan, run the steps, verify with a fresh plan, roll back what did not hold;
with the locks' holder's signals deferred for the whole run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace

from topoctl.core.actions import Plan
from topoctl.errors import Interrupted, StalePlan, TopoctlError, VerificationFailed
from topoctl.kernel import namespaces as ns
from topoctl.kernel.recovery import mark_unfinished
from topoctl.kernel.sockets import Kernel
from topoctl.run.context import Context, register_needs, release_needs
from topoctl.run.interrupts import Interrupts, signal_reason
from topoctl.run.rollback import differs, rolled_back
from topoctl.run.steps import FAULT_ENV, PAUSE_ENV, Progress, execute_plan, pause
from topoctl.store import journal, records
from topoctl.store.saved import SavedPlan, fingerprint


@dataclass(frozen=True)
class ApplyReport:
    plan: Plan
    seconds: float
    writes: int  # kernel changes made


def reconcile(kernel: Kernel, context: Context, destroy: bool = False,
              progress: Progress | None = None, expected: SavedPlan | None = None,
              signals: Interrupts | None = None) -> ApplyReport:
    """Plan, execute, then plan again: the second plan must be empty. With `expected` (a saved
    plan), the live state must still be the one that plan was made from.

    SIGINT and SIGTERM are deferred for the whole run (see interrupts.py): the CLI passes the
    Interrupts it installed (and keeps them until the process ends, so that the report is
    printed too); without one, reconcile installs its own for its duration."""
    own = signals is None
    signals = Interrupts().install() if own else signals
    signals.defer()
    try:
        return _reconcile(kernel, context, destroy, progress, expected, signals)
    finally:
        if own:
            signals.restore()


def _reconcile(kernel: Kernel, context: Context, destroy: bool, progress: Progress | None,
               expected: SavedPlan | None, signals: Interrupts) -> ApplyReport:
    started = time.monotonic()
    writes_before = kernel.writes
    topology = context.topology.name
    signals.phase = "planning"
    recovery = journal.interrupted(topology)
    notes: tuple[str, ...] = ()
    adopted: list[str] = []
    for name in ns.half_made(records.recorded_netns(topology)):
        ns.remove_placeholder(name)  # a run killed while deleting it: unmounted, not yet unlinked
        records.forget_netns(name)
    if recovery is not None:
        adopted = mark_unfinished(kernel, topology, recovery.unfinished)
        notes = (recovery.describe() + (f"; marked as its own: {', '.join(adopted)}" if adopted else ""),)
        journal.forget(topology)  # what it began now carries our marks: nothing left to take over
    the_plan, live = context.plan(kernel, destroy=destroy)
    if notes:
        the_plan = dataclass_replace(the_plan, notes=the_plan.notes + notes)
    if expected is not None and (fingerprint(live) != expected.fingerprint or the_plan.as_json() != expected.plan):
        raise StalePlan("stale plan: the live state changed since the plan was saved, so it would not do "
                        "what was reviewed", "make a new one with topoctl plan --out, review it, apply it")
    verb = "destroy" if destroy else "apply"
    if signals.received and not the_plan.empty:
        took_over = f"; it only marked as its own what an interrupted run had begun: {', '.join(adopted)}" \
            if adopted else ""
        raise Interrupted(f"{verb} stopped before its first step: {signal_reason(signals.first)}",
                          f"nothing was changed{took_over}", signals.first)
    if not destroy:
        register_needs(context, live)  # before any write: the value before is known only now
    if not the_plan.empty:
        log = journal.Journal(topology, verb, len(the_plan.actions))
        try:
            execute_plan(kernel, context, the_plan, live, progress, log, destroy=destroy, signals=signals)
            signals.phase = "verification"
            if os.environ.get(PAUSE_ENV) == "verify":
                pause(signals, log, len(the_plan.actions) + 1)
            try:
                check, _ = context.plan(kernel, destroy=destroy, recovering=False)
            except TopoctlError as err:
                if destroy:
                    raise
                signals.phase = "rollback"
                raise rolled_back(kernel, context, live, f"verification: {err.message}",
                                   len(the_plan.actions)) from None
            injected = os.environ.get(FAULT_ENV) == "verify"
            if (not check.empty or injected) and not destroy:
                # Something changed under the apply: it did not reach the file's state, so it
                # goes back to the state it started from, as a failed step would.
                failed = (f"verification: injected fault ({FAULT_ENV}=verify)" if check.empty
                          else differs(check, "apply"))
                signals.phase = "rollback"
                raise rolled_back(kernel, context, live, failed, len(the_plan.actions), verification=True)
        finally:
            log.close()  # finished or rolled back: nothing for a later run to take over
    else:
        check = the_plan
    if destroy:
        for name in records.recorded_netns(context.topology.name):
            if name not in ns.list_netns():
                records.forget_netns(name)  # a record of a namespace already gone by other means
    records.prune_table_scopes(context.topology.name, set(ns.list_netns()), keep_root=not destroy)
    if destroy and check.empty:
        release_needs(context)
    if check.empty:
        records.record_deployment(topology, _source(context), context.realisation.emulate,
                                  tuple(context.realisation.hosts), present=not destroy,
                                  whole=not context.realisation.partial)
    if not check.empty:
        raise VerificationFailed(differs(check, "destroy"),
                                 "something else changed these objects meanwhile; run plan to see the state")
    signals.phase = "done"
    return ApplyReport(plan=the_plan, seconds=time.monotonic() - started, writes=kernel.writes - writes_before)


def _source(context: Context) -> str:
    """The file the topology came from, as a path that still names it from elsewhere."""
    source = context.topology.source
    return os.path.abspath(source) if source not in ("-", "<stdin>", "<memory>", "<string>") else source
