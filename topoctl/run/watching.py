"""`topoctl watch`: keep one host converged on a file, until SIGTERM or SIGINT.

It applies once, then again when the file's content changes (inotify on its directory and on
the directory its symlinks lead to, so a `git pull` or a ConfigMap's symlink swap counts) and
when the topology's objects drift (rtnetlink notifications in each of its namespaces, filtered
by core.drift; /run/netns for namespaces deleted by name), and every `interval` seconds as a
safety net. Each reconciliation is a whole apply under the hosts' lock, as `topoctl apply` does
it; what the agent's own changes notify is read and dropped before it waits again, and a plan
right after a change confirms nothing moved meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from topoctl.core.drift import DriftFilter, NamespaceGone, Overflow
from topoctl.errors import LockTimeout, Terminated, TopoctlError
from topoctl.kernel import notify
from topoctl.kernel.sockets import Kernel
from topoctl.output.watching import APPLIED, BUSY, FAILED, IN_SYNC, INVALID, Reconciliation
from topoctl.run.context import Context
from topoctl.run.interrupts import Interrupts
from topoctl.run.reconcile import reconcile
from topoctl.store.locking import host_locks

DEBOUNCE = 0.05  # seconds to gather the rest of a burst (a deleted veth notifies ~10 messages)
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # seconds before each retry of a failing apply
FILE_EVENTS = (notify.IN_CLOSE_WRITE | notify.IN_MOVED_TO | notify.IN_CREATE | notify.IN_DELETE
               | notify.IN_MOVED_FROM | notify.IN_ATTRIB | notify.IN_MODIFY)


class _Signals:
    """SIGTERM and SIGINT for the agent: while it waits (for events or a lock) they end it at
    once; during a reconciliation they are recorded and it ends after it (the reconciliation
    moves towards the file, which is what the host should be left in)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.reconciling = False
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._before: dict[int, object] = {}

    def install(self) -> "_Signals":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._before[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)
        self._read.close()
        self._write.close()

    def fileno(self) -> int:
        return self._read.fileno()

    def _handle(self, signum: int, frame) -> None:
        first = not self.received
        self.received.append(signum)
        try:
            self._write.send(b"x")
        except OSError:
            pass  # the pipe is full: it is awake already
        if self.reconciling and first:
            os.write(2, f"topoctl watch: {signal.Signals(signum).name} received; finishing this "
                        "reconciliation, then stopping\n".encode())

    @property
    def stop(self) -> bool:
        return bool(self.received)


@dataclass
class _File:
    """The topology file, by content."""

    path: str
    inotify: notify.Inotify

    def watch(self) -> None:
        """Watch the file's directory and the directory of what it resolves to (again, each
        time: a symlink swap changes the second)."""
        self.inotify.watch("file", os.path.dirname(os.path.abspath(self.path)) or ".", FILE_EVENTS)
        self.inotify.watch("target", os.path.dirname(os.path.realpath(self.path)), FILE_EVENTS)

    def read(self) -> tuple[str | None, str]:
        """(text, digest); text None when the file cannot be read now."""
        try:
            with open(self.path, encoding="utf-8") as src:
                text = src.read()
        except (OSError, UnicodeDecodeError) as err:
            return None, f"unreadable: {err}"
        return text, hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Watch:
    path: str
    context: Context  # from the file as it was at the start (the CLI loads it: bad input is exit 2)
    text_digest: str
    make_context: Callable[[str], Context]  # a file's text -> its context; raises TopoctlError
    log: Callable[[Reconciliation], None]
    interval: float = 300.0
    lock_timeout: float = 30.0
    drifts: int = 0  # drift notifications acted on, for the figures
    missed: str | None = None  # drift another process made during the last reconciliation
    _subs: dict = field(default_factory=dict)

    def run(self) -> int:
        """Until a signal: 0 (the topology is left as it is)."""
        notify.allow_many_descriptors()
        signals = _Signals().install()
        self._signals = signals
        inotify = notify.Inotify()
        self._file = _File(self.path, inotify)
        self._file.watch()
        notify.namespace_watch(inotify)
        self._filter = DriftFilter.of(self.context.desired, _whole(self.context))
        self._selector = selectors.DefaultSelector()
        self._selector.register(signals, selectors.EVENT_READ, "signal")
        self._selector.register(inotify, selectors.EVENT_READ, "inotify")
        self._bad_digest: str | None = None
        self._failures = 0
        try:
            self._loop(inotify)
        except (KeyboardInterrupt, Terminated):
            pass  # a signal while waiting for a lock: nothing was being changed
        finally:
            for sub in self._subs.values():
                sub.close()
            self._subs = {}
            self._selector.close()
            inotify.close()
            signals.restore()
        return 0

    # -- the loop ------------------------------------------------------------------------

    def _loop(self, inotify: notify.Inotify) -> None:
        pending: tuple[str, str] | None = ("start", "")
        quiet = False  # a confirming plan after a change: logged only if it finds something to do
        retry_at: float | None = None
        next_full = time.monotonic() + self.interval
        while not self._signals.stop:
            if pending is not None and (retry_at is None or time.monotonic() >= retry_at):
                entry = self._reconcile(*pending)
                pending, retry_at = None, None
                if entry.result in (FAILED, BUSY):
                    delay = BACKOFF[min(self._failures, len(BACKOFF) - 1)]
                    self._failures += 1
                    entry = replace(entry, retry_in=delay)
                    pending, retry_at = ("retry", entry.reason), time.monotonic() + delay
                else:
                    self._failures = 0
                if not (quiet and entry.result == IN_SYNC):
                    self.log(entry)
                quiet = False
                if self.missed is not None and pending is None:
                    pending, self.missed = ("drift", self.missed), None
                elif entry.result == APPLIED and pending is None:
                    pending, quiet = ("drift", "changed during the last reconciliation"), True
                next_full = time.monotonic() + self.interval
                continue
            deadline = min(next_full, retry_at) if retry_at is not None else next_full
            found = self._wait(max(0.0, deadline - time.monotonic()), inotify)
            if self._signals.stop:
                return
            if found is not None and found[0] == "file":
                pending, retry_at, quiet = found, None, False  # a new file is tried at once
            elif found is not None and pending is None:
                pending, quiet = found, False
            elif pending is None and time.monotonic() >= next_full:
                pending, quiet = ("interval", ""), False

    def _wait(self, timeout: float, inotify: notify.Inotify) -> tuple[str, str] | None:
        """Wait for events until `timeout`; the first that needs a reconciliation, with the rest
        of its burst gathered (DEBOUNCE), or None."""
        found: tuple[str, str] | None = None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if found is not None:
                left = min(left, DEBOUNCE)
            if left <= 0 and found is None:
                return None
            ready = self._selector.select(max(0.0, left))
            if not ready:
                return found if found is not None else None
            for key, _ in ready:
                if key.data == "signal":
                    return found
                if key.data == "inotify":
                    events = inotify.read()
                    if any(label in ("file", "target") for label, _, _ in events):
                        self._file.watch()
                        _, digest = self._file.read()
                        if digest not in (self.text_digest, self._bad_digest):
                            found = ("file", "its content changed")
                    for gone in notify.namespace_events(events):
                        self._close(gone.name)
                        why = self._filter.drift(gone)
                        if why and (found is None or _weightier(why, found)):
                            found = ("drift", why)
                else:
                    for change in key.data.read():
                        why = self._filter.drift(change)
                        if why:
                            self.drifts += 1
                            if found is None or _weightier(why, found):
                                found = ("drift", why)

    # -- one reconciliation --------------------------------------------------------------

    def _reconcile(self, trigger: str, reason: str) -> Reconciliation:
        started = time.monotonic()
        ours: dict = {}
        invalid = self._reload() if trigger != "drift" else None
        if invalid is not None and trigger == "file":
            return invalid  # the last good file stays applied, as it was
        try:
            context = self.context
            self._signals.reconciling = False
            with host_locks(context.lock_names(), context.topology.name, "watch", self.lock_timeout):
                self._signals.reconciling = True
                if self._signals.stop:
                    raise Terminated()
                with Kernel() as kernel:
                    try:
                        # an Interrupts never installed: the agent's signals do not roll back its run
                        report = reconcile(kernel, context, signals=Interrupts())
                    finally:
                        ours = kernel.ports()
            result = APPLIED if not report.plan.empty else IN_SYNC
            entry = Reconciliation(trigger, reason, result, len(report.plan.actions),
                                   time.monotonic() - started, at=time.time())
        except LockTimeout as err:
            entry = Reconciliation(trigger, reason, BUSY, seconds=time.monotonic() - started, message=err.message,
                                   hint=err.hint, at=time.time())
        except TopoctlError as err:
            entry = Reconciliation(trigger, reason, FAILED, seconds=time.monotonic() - started, message=err.message,
                                   hint=err.hint, at=time.time())
        finally:
            self._signals.reconciling = False
            self._drain(ours)
            self._sync()
        if invalid is not None:
            self.log(invalid)
        return entry

    def _reload(self) -> Reconciliation | None:
        """Take the file's new content if it is valid; else say so once and keep the last good."""
        text, digest = self._file.read()
        if digest == self.text_digest or digest == self._bad_digest:
            return None
        started = time.monotonic()
        try:
            if text is None:
                raise TopoctlError(f"{self.path}: {digest}", "the last good file stays applied")
            context = self.make_context(text)
        except TopoctlError as err:
            self._bad_digest = digest
            problems = getattr(err, "diagnostics", [])
            message = "; ".join(f"{d.location()}: {d.message}" for d in problems[:5]) or err.message
            if len(problems) > 5:
                message += f"; and {len(problems) - 5} more (topoctl validate shows them all)"
            return Reconciliation("file", "its content changed", INVALID, seconds=time.monotonic() - started,
                                  message=message, hint=err.hint or "fix the file: the last good one stays applied",
                                  at=time.time())
        self.context, self.text_digest, self._bad_digest = context, digest, None
        self._filter.retarget(context.desired, _whole(context))
        return None

    # -- subscriptions -------------------------------------------------------------------

    def _drain(self, ours: dict) -> None:
        """Read what came during the run. What its own sockets changed (their port), and what
        the kernel did (port 0), only updates what links are; a change another process made
        meanwhile is drift still to repair (`missed`)."""
        for sub in list(self._subs.values()):
            own = ours.get(sub.scope)
            for change, port in sub.read_with_ports():
                if isinstance(change, Overflow):
                    continue
                why = self._filter.drift(change)
                if why and port not in (0, own) and self.missed is None:
                    self.missed = why

    def _close(self, scope) -> None:
        sub = self._subs.pop(scope, None)
        if sub is not None:
            self._selector.unregister(sub)
            sub.close()
            self._filter.forget(scope)

    def _sync(self) -> None:
        """One socket in each of the topology's namespaces that exists: new ones subscribed,
        gone or re-made ones closed (a socket keeps a deleted namespace alive)."""
        wanted = {s for s in self.context.desired.scopes if s is None or notify.identity(s) is not None}
        overlaid = frozenset(link.scope for link in self.context.desired.links.values() if link.kind == "vxlan")
        for scope, sub in list(self._subs.items()):
            if scope not in wanted or notify.identity(scope) != sub.identity or sub.neighbours != (scope in overlaid):
                self._close(scope)
        missing = sorted((s for s in wanted if s not in self._subs), key=lambda s: s or "")
        if not missing:
            return
        subs, found = notify.subscribe(missing, overlaid)
        for sub in subs:
            self._subs[sub.scope] = sub
            self._selector.register(sub, selectors.EVENT_READ, sub)
        for change in found:
            self._filter.drift(change)


def _weightier(why: str, found: tuple[str, str]) -> bool:
    """A deletion says more about a burst than the changes that came before it."""
    return found[0] == "drift" and "deleted" in why and "deleted" not in found[1]


def _whole(context: Context) -> set[str]:
    """The namespaces the topology owns entirely (a shared underlay is not one of them)."""
    shared = context.shared_scope()
    return {name for name in context.desired.namespaces if name != shared}
