"""Sysctls: read them in many namespaces, and write a run of them (what a SetSysctl step does)."""

from __future__ import annotations

import errno
from dataclasses import replace as dataclass_replace
from typing import TYPE_CHECKING, Iterable

from topoctl.core.actions import SetSysctl
from topoctl.core.state import Scope, scope_label
from topoctl.errors import KernelError, PermissionDenied, TopoctlError
from topoctl.kernel import namespaces as ns
from topoctl.store import records

if TYPE_CHECKING:
    from topoctl.kernel.sockets import Kernel


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _read_sysctl(key: str) -> str | None:
    try:
        with open(sysctl_path(key), encoding="ascii") as src:
            return " ".join(src.read().split())
    except FileNotFoundError:
        return None


def read_sysctls(wanted: Iterable[tuple[Scope, str]]) -> dict[tuple[Scope, str], str]:
    """The values of many sysctls, read by one thread entering each namespace once."""
    by_scope: dict[Scope, list[str]] = {}
    for scope, key in wanted:
        by_scope.setdefault(scope, []).append(key)
    found: dict[tuple[Scope, str], str] = {}
    for key in by_scope.pop(None, []):
        value = _read_sysctl(key)
        if value is not None:
            found[(None, key)] = value
    values = ns.run_in_each([s for s in by_scope if s is not None],
                            lambda scope: {key: _read_sysctl(key) for key in by_scope[scope]})
    for scope, keys in values.items():
        found.update({(scope, key): value for key, value in keys.items() if value is not None})
    return found


def _write_sysctl_here(key: str, value: str) -> None:
    with open(sysctl_path(key), "w", encoding="ascii") as out:
        out.write(value)


def _sysctl_refused(action: SetSysctl, err: OSError) -> TopoctlError:
    """What a failed sysctl write means."""
    if isinstance(err, FileNotFoundError):
        return KernelError(f"sysctl {action.key} does not exist in {scope_label(action.scope)}",
                           "check its spelling; per-interface keys need the interface to exist")
    if err.errno in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{action.verb} {action.subject()}: {err.strerror}", "run as root")
    return KernelError(f"sysctl {action.key} = {action.new!r} refused in {scope_label(action.scope)}: {err.strerror}")


def set_sysctls(kernel: Kernel, actions: list[SetSysctl], topology: str) -> int:
    """A run of SetSysctl actions, written by one thread that moves from namespace to
    namespace (not a thread per write), their keys recorded once per
    namespace. Returns how many were done; raises ns.Partial (`done`: the actions done; `error`: a
    TopoctlError naming the one that failed) when one fails."""
    steps = [(a.scope, (lambda a=a: _write_sysctl_here(a.key, a.new) if a.new is not None else None))
             for a in actions]
    results, error = ns.run_each_in_order(steps)
    done = actions[:len(results)]
    try:
        _record_sysctl_keys(done)
    except OSError as err:  # the writes stay done: the rollback resets them from the state before
        raise ns.Partial(done, KernelError(f"recording the sysctl keys written: {err.strerror or err}")) from None
    if error is None:
        return len(done)
    failed = actions[len(done)]
    if isinstance(error, OSError):
        error = _sysctl_refused(failed, error)
    elif not isinstance(error, TopoctlError):
        error = KernelError(f"{failed.verb} {failed.subject()}: {error}")
    raise ns.Partial(done, error)


def set_sysctl(kernel: Kernel, action: SetSysctl, topology: str) -> None:
    """One sysctl step (a rollback's): a run of one."""
    try:
        set_sysctls(kernel, [action], topology)
    except ns.Partial as partial:
        raise partial.error from None


def _record_sysctl_keys(written: list[SetSysctl]) -> None:
    """Remember written keys in their namespaces' records (one update per namespace), so
    that their values are read back, and restored by a rollback, even once no file names them."""
    keys_by_scope: dict[str, list[str]] = {}
    for action in written:
        if action.scope is not None and action.new is not None:
            keys_by_scope.setdefault(action.scope, []).append(action.key)
    for scope, keys in keys_by_scope.items():
        record = records.read_netns_record(scope)
        if record is None:
            continue
        missing = tuple(dict.fromkeys(k for k in keys if k not in record.sysctls))
        if missing:
            records.record_netns(scope, dataclass_replace(record, sysctls=record.sysctls + missing))
