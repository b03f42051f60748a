"""Netlink sockets by namespace: the Kernel object every read and step goes through.

One rtnetlink socket per namespace, opened inside it by a thread that setns()s there (no fork),
kept for the whole run; sockets for many namespaces are opened by one thread entering each in
turn; interface indexes learnt from dumps are remembered, so steps need no lookup of their own.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Iterable

from topoctl.core.state import Scope, scope_label
from topoctl.errors import KernelError, Missing
from topoctl.kernel import namespaces as ns
from topoctl.kernel import sysctls, tables
from topoctl.kernel.rtnl import Rtnl


def _allow_descriptors(needed: int) -> None:
    """One socket per namespace: a thousand namespaces pass the usual soft limit of 1024 open
    files, so raise it (up to the hard limit) before opening them."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _netlink_socket() -> socket.socket:
    """A netlink socket in the calling thread's namespace; failing, a KernelError."""
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    except OSError as err:
        hint = "raise the open-file limit (ulimit -n)" if err.errno in (errno.EMFILE, errno.ENFILE) else ""
        raise KernelError(f"cannot open a netlink socket: {err.strerror or err}", hint) from None


class Kernel:
    """Netlink sockets by namespace, opened on demand (or many at once) and closed together."""

    def __init__(self) -> None:
        self._rtnl: dict[Scope, Rtnl] = {}
        self._nsids: dict[tuple[Scope, Scope], int | None] = {}
        self._index: dict[Scope, dict[str, int]] = {}  # by scope, so a scope is forgotten at once
        self.writes = 0  # kernel changes made through this object: a second apply must make none
        self._prefetch: tables.Reader | None = None

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self, scopes: Iterable[Scope]) -> None:
        """Sockets for all these namespaces (those that exist), made by one thread."""
        missing = [s for s in scopes if s is not None and s not in self._rtnl]
        self.make_room(len(missing))
        opened = ns.run_in_each(missing, lambda _: _netlink_socket())
        for scope, sock in opened.items():
            self._rtnl[scope] = Rtnl(sock)

    def take_socket(self, scope: Scope, handle: Rtnl) -> None:
        """Use a socket already opened inside `scope` (by whoever made the namespace)."""
        self.close_scope(scope)
        self._rtnl[scope] = handle

    def make_room(self, sockets: int) -> None:
        """Raise the descriptor limit, if needed, for this many more sockets."""
        _allow_descriptors(len(self._rtnl) + sockets + 256)

    def rtnl(self, scope: Scope) -> Rtnl:
        handle = self._rtnl.get(scope)
        if handle is None:
            if scope is None:
                handle = Rtnl.open()
            else:
                handle = Rtnl(ns.run_in_netns(scope, _netlink_socket))
            self._rtnl[scope] = handle
        return handle

    def close_scope(self, scope: Scope) -> None:
        """Close our socket in a namespace; an open socket would keep a deleted namespace alive."""
        if self._nsids:
            self._nsids = {k: v for k, v in self._nsids.items() if scope not in k}
        self._index.pop(scope, None)
        handle = self._rtnl.pop(scope, None)
        if handle is not None:
            handle.close()

    def prefetch(self, scopes: list[str]) -> None:
        """Start reading a share of these namespaces now, in a helper process (for many only:
        tables.helper_share), for the next read of the live state: its work overlaps whatever
        this process does meanwhile, such as computing the desired state."""
        self.drop_prefetch()
        existing = set(ns.list_netns())
        share = tables.helper_share([s for s in scopes if s in existing])
        if share:
            self._prefetch = tables.Reader(share)

    def take_prefetch(self) -> tables.Reader | None:
        """The reader prefetch() started, now the caller's to close."""
        reader, self._prefetch = self._prefetch, None
        return reader

    def drop_prefetch(self) -> None:
        reader = self.take_prefetch()
        if reader is not None:
            reader.close()

    def ports(self) -> dict[Scope, int]:
        """The netlink port of each namespace's socket: what the kernel's notifications of this
        object's changes carry, so a listener can tell them from others'."""
        found = {}
        for scope, handle in self._rtnl.items():
            try:
                found[scope] = handle.sock.getsockname()[0]
            except OSError:
                pass
        return found

    def close(self) -> None:
        self.drop_prefetch()
        handles, self._rtnl = list(self._rtnl.values()), {}
        self._nsids, self._index = {}, {}
        for handle in handles:
            handle.close()

    # -- lookups -------------------------------------------------------------------------

    def remember(self, scope: Scope, names: dict[str, int]) -> None:
        """Interface indexes read by a dump of the whole scope, so that actions need no lookup
        of their own. The dump replaces what was known: a name not in it is gone."""
        self._index[scope] = dict(names)

    def forget(self, scope: Scope, name: str) -> None:
        self._index.get(scope, {}).pop(name, None)

    def nsid_of(self, seen_from: Scope, target: Scope) -> int | None:
        """The id namespace `seen_from` gives `target` (what veths report as link_netnsid)."""
        key = (seen_from, target)
        if key not in self._nsids:
            fd = ns.open_netns(target)
            try:
                self._nsids[key] = self.rtnl(seen_from).nsid_of(fd)
            finally:
                os.close(fd)
        return self._nsids[key]

    def index_of(self, scope: Scope, name: str) -> int:
        index = self._index.get(scope, {}).get(name)
        if index is None:
            index = self.rtnl(scope).link_index(name)
            if index is None:
                raise Missing(f"interface {name} not found in {scope_label(scope)}")
            self._index.setdefault(scope, {})[name] = index
        return index

    def read_sysctls(self, wanted: Iterable[tuple[Scope, str]]) -> dict[tuple[Scope, str], str]:
        """The values of many sysctls, read by one thread entering each namespace once."""
        return sysctls.read_sysctls(wanted)
