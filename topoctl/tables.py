"""Read the links, addresses and main-table routes of many namespaces: part of the kernel layer.

Each namespace costs three dumps. Past PARALLEL_FROM namespaces, and with a second CPU, a
helper process forked once reads the second half while this process reads the first: the
kernel answers both halves at once and each process parses only its own. The helper uses
the sockets already opened in those namespaces (so it forks once per read, not per
namespace), sends its messages back through a pipe with marshal, and ends with os._exit. If
it fails in any way, this process closes those sockets (a dump may be half read on them),
opens them again and reads that half itself.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import select
import signal
import time
from typing import Iterable, NamedTuple

from .errors import KernelError
from .netns import cpus as _cpus
from .rtnl import AddrMsg, LinkMsg, NetlinkError, RouteMsg
from .state import MAIN_TABLE, Scope, scope_label

PARALLEL_FROM = 200  # namespaces; below this a fork (~5 ms) costs more than it saves
HELPER_SHARE = 0.5  # of the namespaces, read by the helper
HELPER_TIMEOUT = 30.0  # seconds the helper may take after this process's half (it needs <1 s at 1000)
_STOPS = {signal.SIGINT, signal.SIGTERM}


class Tables(NamedTuple):
    links: list[LinkMsg]
    addresses: list[AddrMsg]
    routes: list[RouteMsg]


def _read(kernel, scope: Scope) -> Tables:
    handle = kernel.rtnl(scope)
    try:
        return Tables(handle.links(), handle.addresses(), handle.routes(MAIN_TABLE))
    except NetlinkError as err:  # a kernel refusal of a read is an error of topoctl's kind
        raise KernelError(f"reading the interfaces, addresses and routes of {scope_label(scope)}: "
                          f"{err.strerror}") from None


def _encode(tables: list[Tables]) -> bytes:
    # marshal takes plain tuples only (not NamedTuple subclasses). Measured on the messages of 500
    # namespaces: marshal 1.1 ms + 1.4 ms to load, pickling the NamedTuples 5.7 ms + 3.1 ms
    return marshal.dumps([([tuple(m) for m in t.links], [tuple(m) for m in t.addresses],
                           [tuple(m) for m in t.routes]) for t in tables])


def _decode(blob: bytes) -> list[Tables]:
    return [Tables([LinkMsg._make(m) for m in links], [AddrMsg._make(m) for m in addresses],
                   [RouteMsg._make(m) for m in routes]) for links, addresses, routes in marshal.loads(blob)]


def _helper(kernel, scopes: list[Scope], read_fd: int, write_fd: int, mask: set) -> None:
    """The forked process: read, write, end with os._exit (its caller makes sure of that too).
    A stop signal ends it at once, with no handler of the parent's: the parent reads its half
    again. The parent's finalizers must not run here, so the collector is off."""
    gc.disable()
    for stop in _STOPS:
        if signal.getsignal(stop) is not signal.SIG_IGN:
            signal.signal(stop, signal.SIG_DFL)
    os.close(read_fd)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    blob = _encode([_read(kernel, scope) for scope in scopes])
    view = memoryview(blob)
    while view:
        view = view[os.write(write_fd, view):]
    os._exit(0)


def _receive(read_fd: int, timeout: float) -> bytes | None:
    """Everything the helper writes, or None if it has not finished within `timeout` seconds."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
            return None
        chunk = os.read(read_fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _read_with_helper(kernel, mine: list[Scope], theirs: list[Scope]) -> tuple[dict[Scope, Tables], list[Tables] | None]:
    """Read `mine` here while a forked helper reads `theirs`: (mine's tables, theirs' or None
    if the helper did not deliver them whole).

    Stop signals are blocked from before the fork until each process has set itself up, and
    the parent's cleanup (close the pipe, kill a helper that has not finished, reap it) is in
    one `finally` that also covers the fork: a Ctrl-C at any point leaves no process and no
    descriptor behind, and never runs topoctl's own code in the helper."""
    read_fd, write_fd = os.pipe()
    pid = None
    blob = None
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            pid = os.fork()
        except OSError:
            pid = None  # no helper (out of processes or memory): its half is read here after all
        else:
            if pid == 0:
                try:
                    _helper(kernel, theirs, read_fd, write_fd, mask)
                finally:
                    os._exit(1)
        finally:
            if pid != 0:  # this process, whether or not the fork succeeded
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_fd)
        write_fd = -1
        result = {scope: _read(kernel, scope) for scope in mine}
        if pid is not None:
            blob = _receive(read_fd, HELPER_TIMEOUT)
    finally:
        os.close(read_fd)  # a helper still writing gets EPIPE and ends
        if write_fd >= 0:
            os.close(write_fd)
        if pid:
            if blob is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # hung, or this process is being stopped
            with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: reaped by the kernel
                os.waitpid(pid, 0)
    try:
        decoded = _decode(blob) if blob is not None else None
    except (ValueError, EOFError, TypeError):
        decoded = None
    return result, decoded if decoded is not None and len(decoded) == len(theirs) else None


def read_tables(kernel, scopes: Iterable[Scope], parallel_from: int | None = None) -> dict[Scope, Tables]:
    """Tables of every scope (their sockets opened beforehand with kernel.open)."""
    scopes = list(scopes)
    if len(scopes) < (PARALLEL_FROM if parallel_from is None else parallel_from) or _cpus() < 2:
        return {scope: _read(kernel, scope) for scope in scopes}
    cut = round(len(scopes) * (1 - HELPER_SHARE))
    mine, theirs = scopes[:cut], scopes[cut:]
    for scope in theirs:
        # opened here, before the fork, if kernel.open missed any; and no dump left half read
        # on it, which both processes would then try to finish
        kernel.rtnl(scope).settle()
    result, decoded = _read_with_helper(kernel, mine, theirs)
    if decoded is None:
        for scope in theirs:
            kernel.close_scope(scope)  # a dump may be half read on it: start clean
        kernel.open(theirs)
        decoded = [_read(kernel, scope) for scope in theirs]
    result.update(zip(theirs, decoded))
    return result
