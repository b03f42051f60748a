"""SIGINT and SIGTERM during an apply or destroy: recorded, never raised, acted on by the run.

A handler that raises can land anywhere: between creating a namespace file and mounting it,
in a thread's join while the threads go on, half way through a netlink dump. So once a run
may change the kernel, a signal only sets a flag; the applier looks at it between steps (an
apply then rolls back, a destroy finishes) and the run ends in one of its two outcomes. Only
SIGKILL stops a run at once; the next apply or destroy takes over from the journal.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from topoctl.errors import Terminated

HANDLED = (signal.SIGINT, signal.SIGTERM)
# Test hook: each phase the run enters and each signal received are appended here, as
# "phase <name> <monotonic seconds>" and "signal <number> <phase>", so that tests can aim their
# signals and tell where they landed.
LOG_ENV = "TOPOCTL_SIGNAL_LOG"

_FIRST = ("topoctl: {name} received: the step in progress is finished first; the run then ends "
          "whole, in the state before it or the state the file asks for\n")
_AGAIN = ("topoctl: still finishing; more signals change nothing (SIGKILL stops at once, and the "
          "next apply or destroy takes over what it leaves)\n")


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def signal_reason(signum: int) -> str:
    """How a run stopped by this signal says so."""
    return "terminated (SIGTERM)" if signum == signal.SIGTERM else f"interrupted ({signal_name(signum)})"


class Interrupts:
    """The signals received by a run, and the phase of the run each arrived in.

    Immediate (the default), a signal raises KeyboardInterrupt or Terminated where the process
    is, once: right while nothing has been changed, e.g. waiting for a lock; later ones are only
    recorded, so that the way out is not cut short. After defer(), every signal is only
    recorded. A signal the process ignores stays ignored. Only the main thread can
    handle signals; elsewhere install() does nothing and the run is never interrupted."""

    def __init__(self) -> None:
        self.received: list[tuple[int, str]] = []
        self._phase = "start"
        self.deferred = False
        self._raised = False
        self.installed: dict[int, object] = {}
        self._log: int | None = None

    def install(self) -> "Interrupts":
        if threading.current_thread() is not threading.main_thread():
            return self
        log = os.environ.get(LOG_ENV)
        if log:
            self._log = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self.phase = "start"
        for signum in HANDLED:
            if signal.getsignal(signum) in (signal.SIG_IGN, None):  # ignored, or set outside Python
                continue
            self.installed[signum] = signal.signal(signum, self._handle)
        return self

    def defer(self) -> None:
        """From now on a signal is only recorded: the run may be changing the kernel."""
        self.deferred = True

    def restore(self) -> None:
        for signum, handler in self.installed.items():
            signal.signal(signum, handler)
        self.installed = {}
        if self._log is not None:
            os.close(self._log)
            self._log = None

    @property
    def phase(self) -> str:
        """Where the run is (start, planning, namespaces, steps, verification, rollback, done)."""
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase = name
        if self._log is not None:
            os.write(self._log, f"phase {name} {time.monotonic():.6f}\n".encode())

    @property
    def first(self) -> int | None:
        """The first signal received, if any."""
        return self.received[0][0] if self.received else None

    def _handle(self, signum: int, frame) -> None:
        self.received.append((signum, self.phase))
        if self._log is not None:
            os.write(self._log, f"signal {signum} {self._phase}\n".encode())
        if not self.deferred:
            if self._raised:
                return  # raised once already: later signals must not cut short the way out
            self._raised = True
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if len(self.received) <= 2:
            # os.write: a handler may run while print() is in the middle of a line
            text = _FIRST.format(name=signal_name(signum)) if len(self.received) == 1 else _AGAIN
            try:
                os.write(2, text.encode())
            except OSError:
                pass  # stderr closed or gone: the outcome is still reported by the exit code
