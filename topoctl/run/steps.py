"""Running a plan's steps in order, whole (a batch of namespaces, a run of sysctls, each
other step), with the journal and the signals of the run; on a failure or a stop, the rollback.
Test hooks: TOPOCTL_FAULT_AT=k|verify makes a step (or the verification) fail, and
TOPOCTL_PAUSE_AT=k|verify waits there for a signal."""

from __future__ import annotations

import itertools
import os
import signal
import time
from typing import Callable

from topoctl.core.actions import Action, CreateNamespace, CreateVeth, DeleteNamespace, Plan, SetSysctl
from topoctl.core.state import State
from topoctl.errors import ApplyFailed, KernelError, Terminated, TopoctlError
from topoctl.kernel import namespaces as ns
from topoctl.kernel.executors import BATCHED, execute, execute_run, settle
from topoctl.kernel.namespaces import Partial
from topoctl.kernel.sockets import Kernel
from topoctl.run.context import Context
from topoctl.run.interrupts import Interrupts, signal_reason
from topoctl.run.rollback import rolled_back
from topoctl.store import journal

FAULT_ENV = "TOPOCTL_FAULT_AT"
PAUSE_ENV = "TOPOCTL_PAUSE_AT"
PAUSE_LIMIT = 10.0

Progress = Callable[[int, int, Action], None]


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


def _injected_fault() -> int:
    """Test hook: TOPOCTL_FAULT_AT=k makes the k-th step of an apply fail as a kernel refusal
    would, so that tests can prove the rollback for every k; TOPOCTL_FAULT_AT=verify makes the
    verification after the last step fail."""
    value = os.environ.get(FAULT_ENV, "")
    return int(value) if value.isdigit() else 0


def pause(signals: Interrupts, log: journal.Journal | None, step: int) -> None:
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
    opened on first use costs a thread of its own."""
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
    pause_setting = os.environ.get(PAUSE_ENV, "")
    pause_at = int(pause_setting) if pause_setting.isdigit() else 0
    number = 0  # steps done so far
    try:
        while number < total:
            if pause_at and number + 1 >= pause_at:
                pause_at = 0
                pause(signals, log, number + 1)
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
            settle(kernel, deleted, live)
    except (TopoctlError, _Stop, KeyboardInterrupt) as err:
        signum = _signum_of(err)
        failed = (f"stopped after step {number} of {total}: {signal_reason(signum)}" if signum is not None
                  else f"step {number + 1} of {total} failed: {err.message}")
        if destroy:
            raise ApplyFailed(failed, f"{len(done)} earlier steps were done and stay done; "
                              "run destroy again to finish") from None
        signals.phase = "rollback"
        raise rolled_back(kernel, context, live, failed, len(done), signum=signum) from None
