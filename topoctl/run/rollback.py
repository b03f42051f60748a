"""Rollback: from what a failed run left, back to the state before it, by planning back (see
core/restore.py) and running that plan, whatever signals come."""

from __future__ import annotations

from topoctl.core.actions import DeleteNamespace, Plan
from topoctl.core.planner import plan
from topoctl.core.restore import restore_target
from topoctl.core.state import State
from topoctl.errors import ApplyFailed, Interrupted, Rollback, TopoctlError, VerificationFailed
from topoctl.kernel.executors import execute, settle
from topoctl.kernel.sockets import Kernel
from topoctl.run.context import Context


def differs(check: Plan, command: str) -> str:
    lines = "; ".join(f"{a.verb} {a.subject()}" for a in check.actions[:5])
    return f"the kernel state still differs after {command}: {lines}"


def rolled_back(kernel: Kernel, context: Context, before: State, failed: str, done: int,
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
    rollback = Rollback(steps, errors)
    if signum is not None:
        return Interrupted(failed, hint, signum, rollback)
    if verification:
        return VerificationFailed(failed, hint + "; something else changed these objects meanwhile", rollback)
    return ApplyFailed(failed, hint, rollback)


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
            settle(kernel, deleted, now)
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
