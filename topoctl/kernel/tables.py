"""Read the links, addresses and main-table routes of many namespaces: part of the kernel layer.

Each namespace costs three dumps. Past PARALLEL_FROM namespaces, and with a second CPU, a
helper process forked once (a `Reader`) reads a share of them while this process reads the
rest: the kernel answers both at once and each process parses only its own. The helper opens
its own sockets, entering each namespace by setns in its one thread, so it needs nothing of
this process's sockets, and it can be started early: an apply or plan starts it before it
computes the desired state (Kernel.prefetch), so that the helper's reading overlaps that work.
It sends its messages back through a pipe with marshal and ends with os._exit. A KernelError in
the helper (a refused or malformed read) is sent back instead and raised here; if it fails in any
other way (dies, hangs, sends what cannot be decoded), this process reads its share itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import marshal
import os
import select
import signal
import time
from collections.abc import Iterable
from typing import NamedTuple

from topoctl.kernel import namespaces as ns
from topoctl.errors import KernelError
from topoctl.kernel.namespaces import cpus as _cpus
from topoctl.kernel.rtnl import AddrMsg, LinkMsg, NetlinkError, RouteMsg, Rtnl
from topoctl.core.state import MAIN_TABLE, Scope, scope_label

PARALLEL_FROM = 200  # namespaces; below this the fork costs more than it saves
HELPER_SHARE = 0.5  # of the namespaces, read by the helper
HELPER_TIMEOUT = 30.0  # seconds the helper may take after this process's half (it needs <1 s at 1000)
_STOPS = {signal.SIGINT, signal.SIGTERM}
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # looked up here: the helper then calls it with no dlopen of its own


class Tables(NamedTuple):
    links: list[LinkMsg]
    addresses: list[AddrMsg]
    routes: list[RouteMsg]


def _dump(handle: Rtnl, scope: Scope) -> Tables:
    try:
        return Tables(handle.links(), handle.addresses(), handle.routes(MAIN_TABLE))
    except NetlinkError as err:  # a kernel refusal of a read is an error of topoctl's kind
        raise KernelError(f"reading the interfaces, addresses and routes of {scope_label(scope)}: "
                          f"{err.strerror}") from None
    except KernelError as err:  # a failed or malformed dump: say where
        raise KernelError(f"in {scope_label(scope)}, {err.message}", err.hint) from None


def _read(kernel, scope: Scope) -> Tables:
    """One namespace's tables, read by this process on the kernel's socket there."""
    return _dump(kernel.rtnl(scope), scope)


def _encode(tables: dict[str, Tables]) -> bytes:
    # marshal takes plain tuples only (not NamedTuple subclasses), and is several times faster
    # than pickling the NamedTuples (docs/performance.md)
    return marshal.dumps([(scope, [tuple(m) for m in t.links], [tuple(m) for m in t.addresses],
                           [tuple(m) for m in t.routes]) for scope, t in tables.items()])


def _encode_error(err: KernelError) -> bytes:
    return marshal.dumps(("KernelError", err.message, err.hint))  # a tuple: the tables are a list


def _decode(blob: bytes) -> dict[str, Tables]:
    """The helper's tables; raises the KernelError it sent instead."""
    loaded = marshal.loads(blob)
    if isinstance(loaded, tuple) and len(loaded) == 3 and loaded[0] == "KernelError":
        raise KernelError(str(loaded[1]), str(loaded[2]))
    return {scope: Tables([LinkMsg._make(m) for m in links], [AddrMsg._make(m) for m in addresses],
                          [RouteMsg._make(m) for m in routes]) for scope, links, addresses, routes in loaded}


def _helper(scopes: list[str], write_fd: int, mask: set, parent: int) -> None:
    """The forked process: open a socket in each namespace (one that does not exist is left
    out), read, write, end with os._exit (its caller makes sure of that too). It ignores stop
    signals: a Ctrl-C goes to the whole process group, and the parent, which decides when the
    helper ends (close()), may still read its tables. It dies with the parent (PR_SET_PDEATHSIG,
    checked against a parent gone before it was set). The parent's finalizers must not run
    here, so the collector is off."""
    gc.disable()
    for stop in _STOPS:
        signal.signal(stop, signal.SIG_IGN)
    # the death signal follows the thread that forked (the main thread): were it to end first, the
    # helper dies and its share is read by the parent
    if (_libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0),
                    ctypes.c_ulong(0)) != 0 or os.getppid() != parent):
        os._exit(1)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        handles = ns.open_in_each_here(scopes, Rtnl.open)
        blob = _encode({scope: _dump(handle, scope) for scope, handle in handles.items()})
    except KernelError as err:
        blob = _encode_error(err)
    view = memoryview(blob)
    while view:
        view = view[os.write(write_fd, view):]
    os._exit(0)


class Reader:
    """A helper process reading the tables of `scopes`. collect() takes what it read; close()
    (always called, by read_tables or by the Kernel that holds it) ends and reaps it."""

    def __init__(self, scopes: list[str]) -> None:
        self.scopes = scopes
        self.pid: int | None = None
        self._read_fd = -1
        self._delivered = False
        read_fd, write_fd = os.pipe()
        pid: int | None = None
        parent = os.getpid()
        try:
            # Stop signals are blocked from before the fork until each process has set itself
            # up: a Ctrl-C never runs topoctl's own code in the helper.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
            try:
                pid = os.fork()
            except OSError:
                pid = None  # no helper (out of processes or memory): its share is read here after all
            else:
                if pid == 0:
                    try:
                        os.close(read_fd)
                        _helper(scopes, write_fd, mask, parent)
                    finally:
                        os._exit(1)
            finally:
                if pid != 0:  # this process, whether or not the fork succeeded
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        finally:
            if pid != 0:
                os.close(write_fd)
        self.pid = pid
        self._read_fd = read_fd

    def collect(self, timeout: float) -> dict[str, Tables] | None:
        """The helper's tables by namespace (those that did not exist left out), or None if
        it failed or has not finished within `timeout` seconds. Raises the KernelError of a
        read that failed in the helper."""
        if self.pid is None:
            return None
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._read_fd], [], [], remaining)[0]:
                return None
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        self._delivered = True
        try:
            return _decode(b"".join(chunks))
        except (ValueError, EOFError, TypeError):
            return None

    def close(self) -> None:
        """Close the pipe (a helper still writing gets EPIPE and ends), kill a helper that has
        not delivered (hung, or this process is being stopped), and reap it."""
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        pid, self.pid = self.pid, None
        if pid:
            if not self._delivered:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: reaped by the kernel
                os.waitpid(pid, 0)


def helper_share(scopes: list[str]) -> list[str]:
    """The namespaces a helper should read, of these (none below PARALLEL_FROM or with one CPU)."""
    if len(scopes) < PARALLEL_FROM or _cpus() < 2:
        return []
    return scopes[round(len(scopes) * (1 - HELPER_SHARE)):]


def read_tables(kernel, scopes: Iterable[Scope], reader: Reader | None = None) -> dict[Scope, Tables]:
    """Tables of every scope. A `reader` started earlier (see Kernel.prefetch) delivers those
    of its scopes; otherwise, for many namespaces, one is started here for a share of them.
    This process reads the rest, on sockets it opens for them now."""
    scopes = list(scopes)
    if reader is None:
        share = helper_share([s for s in scopes if s is not None])
        reader = Reader(share) if share else None
    theirs = set(reader.scopes) if reader is not None else set()
    mine = [s for s in scopes if s not in theirs]
    delivered = None
    try:
        kernel.open(mine)
        result = {scope: _read(kernel, scope) for scope in mine}
        if reader is not None:
            delivered = reader.collect(HELPER_TIMEOUT)
    finally:
        if reader is not None:
            reader.close()
    # Wanted of the helper but not delivered: it failed, or the namespace was made after it looked.
    missing = [s for s in scopes if s in theirs and (delivered is None or s not in delivered)]
    kernel.open(missing)
    result.update({scope: _read(kernel, scope) for scope in missing})
    if delivered:
        result.update((scope, delivered[scope]) for scope in scopes if scope in theirs and scope in delivered)
    return {scope: result[scope] for scope in scopes}
