"""Load -> observe -> plan -> execute -> verify, with rollback on failure.

This is where the pure core meets the kernel layer: it asks observe.py for live state, the
planner for a plan, kernel.py to carry out each action, and then plans again to prove the
result. It raises typed errors; the CLI reports them.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from typing import Callable

from topoctl.store import journal
from topoctl.kernel import namespaces as ns
from topoctl.store import records
from topoctl.core.actions import Action, CreateNamespace, CreateVeth, DeleteNamespace, Plan, SetSysctl
from topoctl.context import Context
from topoctl.errors import (ApplyFailed, Interrupted, KernelError, Missing, StalePlan, Terminated, TopoctlError, VerificationFailed)
from topoctl.interrupts import Interrupts, signal_reason
from topoctl.kernel.executors import BATCHED, execute, execute_run
from topoctl.kernel.recovery import mark_unfinished
from topoctl.kernel.sockets import Kernel
from topoctl.kernel.namespaces import Partial
from topoctl.core.planner import plan
from topoctl.core.restore import restore_target
from topoctl.store.saved import SavedPlan, fingerprint
from topoctl.core.state import State

SETTLE_TIMEOUT = 10.0
FAULT_ENV = "TOPOCTL_FAULT_AT"
PAUSE_ENV = "TOPOCTL_PAUSE_AT"
PAUSE_LIMIT = 10.0

Progress = Callable[[int, int, Action], None]


@dataclass(frozen=True)
class ApplyReport:
    plan: Plan
    seconds: float
    writes: int  # kernel changes made


class _Stop(Exception):
    """A signal received before a step: the apply stops there."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _signum_of(err: BaseException) -> int | None:
    if isinstance(err, _Stop):
        return err.signum
    if isinstance(err, KeyboardInterrupt):  # raised by a handler that is not ours
        return signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT
    return None


def _differs(check: Plan, command: str) -> str:
    lines = "; ".join(f"{a.verb} {a.subject()}" for a in check.actions[:5])
    return f"the kernel state still differs after {command}: {lines}"


def _rolled_back(kernel: Kernel, context: Context, before: State, failed: str, done: int,
                 verification: bool = False, signum: int | None = None) -> TopoctlError:
    """Restore `before` and describe the failure and the rollback in one error (Interrupted
    when a signal stopped the run)."""
    steps, errors = _restore(kernel, context, before)
    if errors:
        hint = f"rolled back with {steps} steps, but not all of it; not undone: " + "; ".join(errors)
    elif steps:
        hint = f"rolled back: {steps} steps restored the state before the apply ({done} changes had been made)"
    else:
        hint = "rolled back: nothing had been changed"
    if signum is not None:
        return Interrupted(failed, hint, signum, rolled_back=steps, rollback_errors=errors)
    if verification:
        return VerificationFailed(failed, hint + "; something else changed these objects meanwhile")
    return ApplyFailed(failed, hint, rolled_back=steps, rollback_errors=errors)


def _restore(kernel: Kernel, context: Context, before: State) -> tuple[int, tuple[str, ...]]:
    """Roll back by planning from what the failed run left to what was there before it (see
    restore.py), and running that plan, its steps whole as in execute_plan. Each step that
    fails is noted and the rest still run; then the state is read again, and whatever still
    differs, or was not topoctl's and went with a deleted namespace, is reported as not undone.
    Signals do not stop it (they are deferred for the whole run): a rollback left half way
    would be neither outcome. Returns (steps run, what was not undone)."""
    topology = context.topology.name
    target = restore_target(before, topology)
    errors: list[str] = []
    steps = 0
    try:
        now = context.observe(kernel)
        back = plan(target, now, topology)
    except TopoctlError as err:
        return 0, (f"no way back was found: {err.message}",)
    for action in back.actions:
        try:
            execute(kernel, action, topology)
            steps += 1
        except TopoctlError as err:
            errors.append(f"{action.verb} {action.subject()} ({err.message})")
    try:
        deleted = [a.netns.name for a in back.actions if isinstance(a, DeleteNamespace)]
        if deleted:
            _settle(kernel, context, deleted, now)
        after = context.observe(kernel)
        left = plan(target, after, topology)
    except TopoctlError as err:
        return steps, tuple(errors) + (f"the state after the rollback could not be read: {err.message}",)
    if not left.empty:
        errors.extend(f"{a.verb} {a.subject()}" for a in left.actions[:5])
        if len(left.actions) > 5:
            errors.append(f"and {len(left.actions) - 5} more")
    # Interfaces topoctl did not make, inside a namespace of its own that the failed run
    # deleted, went with it; topoctl cannot make them again.
    errors.extend(f"{link.kind} {link.name} in {link.scope} (not topoctl's; it went with its namespace)"
                  for link in before.links.values()
                  if link.owner != topology and link.kind != "loopback" and link.scope in target.namespaces
                  and link.key not in after.links)
    return steps, tuple(errors)


def _settle(kernel: Kernel, context: Context, deleted: list[str], live: State) -> None:
    """Wait until the kernel has finished deleting namespaces (it does so asynchronously):
    veth ends whose peers were inside them vanish only then, and a plan made before that
    would see them."""
    waiting = [link for link in live.links.values()
               if link.kind == "veth" and link.peer is not None and link.peer[0] in deleted
               and link.scope not in deleted]
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while waiting and time.monotonic() < deadline:
        remaining = []
        for link in waiting:
            try:
                if kernel.rtnl(link.scope).link_index(link.name) is not None:
                    remaining.append(link)
            except Missing:
                pass  # its own namespace is gone too
        waiting = remaining
        if waiting:
            time.sleep(0.01)


def _injected_fault() -> int:
    """Test hook: TOPOCTL_FAULT_AT=k makes the k-th step of an apply fail as a kernel refusal
    would, so that tests can prove the rollback for every k; TOPOCTL_FAULT_AT=verify makes the
    verification after the last step fail."""
    value = os.environ.get(FAULT_ENV, "")
    return int(value) if value.isdigit() else 0


def _pause(signals: Interrupts, log: journal.Journal | None, step: int) -> None:
    """Test hook (TOPOCTL_PAUSE_AT=k): before step k, note it in the journal and wait for a
    signal (at most PAUSE_LIMIT seconds), so that a test's signal lands between two steps;
    TOPOCTL_PAUSE_AT=verify: the same before the verification (noted as step total + 1)."""
    if log is not None:
        log.paused(step)
    deadline = time.monotonic() + PAUSE_LIMIT
    while not signals.received and time.monotonic() < deadline:
        time.sleep(0.005)


def _open_sockets(kernel: Kernel, actions: tuple[Action, ...]) -> None:
    """Sockets in every existing namespace the steps act in, opened by one thread: a read
    that went through the helper process (tables.py) opened only its own share, and a socket
    opened on first use costs a thread of its own (~0.2 ms each)."""
    scopes = {action.scope for action in actions if not isinstance(action, SetSysctl)}  # sysctls: no socket
    scopes.update(action.b.scope for action in actions if isinstance(action, CreateVeth))
    existing = set(ns.list_netns())  # the others are made by the plan, their sockets with them
    kernel.open(sorted(s for s in scopes if s in existing))


def execute_plan(kernel: Kernel, context: Context, the_plan: Plan, live: State,
                 progress: Progress | None = None, log: journal.Journal | None = None,
                 destroy: bool = False, signals: Interrupts | None = None) -> None:
    """Run the plan's steps in order. If one fails, or a signal has arrived before the next
    one begins, an apply is rolled back to `live`, the state it started from. A destroy goes
    on through signals (a destroy that has begun is finished, never left half done); a step
    that fails stops it where it is (what it removed stays removed, and running it again
    finishes it)."""
    signals = signals if signals is not None else Interrupts()
    done: list[Action] = []
    actions = the_plan.actions
    total = len(actions)
    _open_sockets(kernel, actions)
    fault_at = _injected_fault()
    pause = os.environ.get(PAUSE_ENV, "")
    pause_at = int(pause) if pause.isdigit() else 0
    number = 0  # steps done so far
    try:
        while number < total:
            if pause_at and number + 1 >= pause_at:
                pause_at = 0
                _pause(signals, log, number + 1)
            if signals.received and not destroy:
                raise _Stop(signals.first)
            action = actions[number]
            if progress is not None:
                progress(number + 1, total, action)
            if number + 1 == fault_at:
                raise KernelError(f"{action.verb} {action.subject()}: injected fault ({FAULT_ENV}={fault_at})")
            if isinstance(action, BATCHED):
                # New namespaces, and sysctls, come in runs (one phase each): done together
                # by one thread that enters each namespace in turn.
                kind = type(action)
                signals.phase = "namespaces" if kind is CreateNamespace else "steps"
                run = list(itertools.takewhile(lambda a: type(a) is kind, actions[number:]))
                if number < fault_at <= number + len(run):
                    run = run[:fault_at - number - 1]
                if log is not None:
                    log.intend(number + 1, *run)
                try:
                    execute_run(kernel, run, context.topology.name)
                except Partial as partial:
                    done.extend(run[:len(partial.done)])
                    number += len(partial.done)
                    raise partial.error from None
                if log is not None:
                    log.done(number + 1, len(run))
                done.extend(run)
                number += len(run)
                continue
            signals.phase = "steps"
            if log is not None:
                log.intend(number + 1, action)
            execute(kernel, action, context.topology.name)
            if log is not None:
                log.done(number + 1)
            done.append(action)
            number += 1
        # A signal during the last step comes too late to stop it: every step is done, and
        # the run goes on to verify, as if the signal had come just after.
        deleted = [a.netns.name for a in the_plan.actions if isinstance(a, DeleteNamespace)]
        if deleted:
            _settle(kernel, context, deleted, live)
    except (TopoctlError, _Stop, KeyboardInterrupt) as err:
        signum = _signum_of(err)
        failed = (f"stopped after step {number} of {total}: {signal_reason(signum)}" if signum is not None
                  else f"step {number + 1} of {total} failed: {err.message}")
        if destroy:
            raise ApplyFailed(failed, f"{len(done)} earlier steps were done and stay done; "
                              "run destroy again to finish") from None
        signals.phase = "rollback"
        raise _rolled_back(kernel, context, live, failed, len(done), signum=signum) from None


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
    if not the_plan.empty:
        log = journal.Journal(topology, verb, len(the_plan.actions))
        try:
            execute_plan(kernel, context, the_plan, live, progress, log, destroy=destroy, signals=signals)
            signals.phase = "verification"
            if os.environ.get(PAUSE_ENV) == "verify":
                _pause(signals, log, len(the_plan.actions) + 1)
            try:
                check, _ = context.plan(kernel, destroy=destroy, recovering=False)
            except TopoctlError as err:
                if destroy:
                    raise
                signals.phase = "rollback"
                raise _rolled_back(kernel, context, live, f"verification: {err.message}",
                                   len(the_plan.actions)) from None
            injected = os.environ.get(FAULT_ENV) == "verify"
            if (not check.empty or injected) and not destroy:
                # Something changed under the apply: it did not reach the file's state, so it
                # goes back to the state it started from, as a failed step would.
                failed = (f"verification: injected fault ({FAULT_ENV}=verify)" if check.empty
                          else _differs(check, "apply"))
                signals.phase = "rollback"
                raise _rolled_back(kernel, context, live, failed, len(the_plan.actions), verification=True)
        finally:
            log.close()  # finished or rolled back: nothing for a later run to take over
    else:
        check = the_plan
    if destroy:
        for name in records.recorded_netns(context.topology.name):
            if name not in ns.list_netns():
                records.forget_netns(name)  # a record of a namespace already gone by other means
    if not check.empty:
        raise VerificationFailed(_differs(check, "destroy"),
                                 "something else changed these objects meanwhile; run plan to see the state")
    signals.phase = "done"
    return ApplyReport(plan=the_plan, seconds=time.monotonic() - started, writes=kernel.writes - writes_before)
