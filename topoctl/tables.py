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

import marshal
import os
from typing import Iterable, NamedTuple

from .rtnl import AddrMsg, LinkMsg, RouteMsg
from .state import MAIN_TABLE, Scope

PARALLEL_FROM = 200  # namespaces; below this a fork (~5 ms) costs more than it saves


class Tables(NamedTuple):
    links: list[LinkMsg]
    addresses: list[AddrMsg]
    routes: list[RouteMsg]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(kernel, scope: Scope) -> Tables:
    handle = kernel.rtnl(scope)
    return Tables(handle.links(), handle.addresses(), handle.routes(MAIN_TABLE))


def _encode(tables: list[Tables]) -> bytes:
    # marshal takes plain tuples only (not NamedTuple subclasses); it is ~10x faster than pickle here
    return marshal.dumps([([tuple(m) for m in t.links], [tuple(m) for m in t.addresses],
                           [tuple(m) for m in t.routes]) for t in tables])


def _decode(blob: bytes) -> list[Tables]:
    return [Tables([LinkMsg._make(m) for m in links], [AddrMsg._make(m) for m in addresses],
                   [RouteMsg._make(m) for m in routes]) for links, addresses, routes in marshal.loads(blob)]


def _helper(kernel, scopes: list[Scope], write_fd: int) -> None:
    """The forked process: read, write, end. Never returns, never runs the parent's cleanup."""
    code = 1
    try:
        blob = _encode([_read(kernel, scope) for scope in scopes])
        with os.fdopen(write_fd, "wb") as out:
            out.write(blob)
        code = 0
    except BaseException:  # noqa: BLE001 - the parent reads this half again itself
        pass
    finally:
        os._exit(code)


def read_tables(kernel, scopes: Iterable[Scope], parallel_from: int | None = None) -> dict[Scope, Tables]:
    """Tables of every scope (their sockets opened beforehand with kernel.open)."""
    scopes = list(scopes)
    if len(scopes) < (PARALLEL_FROM if parallel_from is None else parallel_from) or _cpus() < 2:
        return {scope: _read(kernel, scope) for scope in scopes}
    half = len(scopes) // 2
    mine, theirs = scopes[:half], scopes[half:]
    for scope in theirs:
        kernel.rtnl(scope)  # opened here, before the fork, if kernel.open missed any
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _helper(kernel, theirs, write_fd)
    os.close(write_fd)
    src = os.fdopen(read_fd, "rb")
    try:
        result = {scope: _read(kernel, scope) for scope in mine}
        blob = src.read()
    finally:
        src.close()  # on an error here, a helper still writing gets EPIPE and ends
        _, status = os.waitpid(pid, 0)
    decoded = None
    if os.waitstatus_to_exitcode(status) == 0:
        try:
            decoded = _decode(blob)
        except (ValueError, EOFError, TypeError):
            decoded = None
    if decoded is None or len(decoded) != len(theirs):
        for scope in theirs:
            kernel.close_scope(scope)  # a dump may be half read on it: start clean
        kernel.open(theirs)
        decoded = [_read(kernel, scope) for scope in theirs]
    result.update(zip(theirs, decoded))
    return result
