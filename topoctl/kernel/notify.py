"""Kernel notifications for `topoctl watch`: rtnetlink multicast sockets held in each of a
topology's namespaces, and inotify (for /run/netns and the topology file's directories).

Each namespace gets one socket subscribed to the link, address, route and neighbour groups,
opened inside it by a thread that enters it (as kernel/sockets.py does); its links are dumped
once, on the same socket, so that a later notification that repeats what a link already was
(carrier, operstate, STP) can be told from a change. Messages are turned into core.drift's
change values; what is drift is decided there.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct

from topoctl.core.drift import (AddressChange, Change, LinkChange, NamespaceGone, NeighbourChange, Overflow,
                                RouteChange)
from topoctl.core.kabi import AF_BRIDGE, IFF_UP, NUD_PERMANENT, RTN_UNICAST, RTPROT_KERNEL
from topoctl.core.state import Scope
from topoctl.errors import KernelError
from topoctl.kernel import namespaces as ns
from topoctl.kernel.rtnl_decode import (RTM_DELADDR, RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWADDR,
                                        RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE, Malformed, notifications)
from topoctl.paths import NETNS_RUN_DIR

# RTMGRP_* bits: LINK, IPV4_IFADDR, IPV4_ROUTE, IPV6_IFADDR, IPV6_ROUTE; and NEIGH, only where an
# overlay's device is: elsewhere it is ARP and neighbour discovery churning, never planned
GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
RTMGRP_NEIGH = 0x4
SO_RCVBUFFORCE = 33
QUEUE_BYTES = 4 << 20  # an apply at N=1000 notifies a host namespace of ~10 MB; lost ones are an Overflow
MAIN_TABLE = 254
_HEADER = struct.Struct("=IHHII")
_DUMP = 0x1 | 0x300  # NLM_F_REQUEST | NLM_F_DUMP
# links, addresses, routes, as sequences 1, 2, 3
_DUMPS = (_HEADER.pack(32, 18, _DUMP, 1, 0) + struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0),
          _HEADER.pack(24, 22, _DUMP, 2, 0) + struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0),
          _HEADER.pack(28, 26, _DUMP, 3, 0) + struct.pack("=BBBBBBBBI", socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0))
# and neighbour entries (4), where an overlay is: what is permanent there now
_NEIGHBOURS = _HEADER.pack(28, 30, _DUMP, 4, 0) + struct.pack("=BxxxiHBB", socket.AF_UNSPEC, 0, 0, 0, 0)
NLMSG_DONE = 3


def _changes(scope: Scope, kind: int, msg, initial: bool = False) -> Change | None:
    deleted = kind in (RTM_DELLINK, RTM_DELADDR, RTM_DELROUTE, RTM_DELNEIGH)
    if kind in (RTM_NEWLINK, RTM_DELLINK):
        return LinkChange(scope, msg.index, msg.name, deleted,
                          (bool(msg.flags & IFF_UP), msg.mtu, msg.mac, msg.master, msg.kind, msg.vxlan), initial)
    if kind in (RTM_NEWADDR, RTM_DELADDR):
        if not msg.address:
            return None
        address = ipaddress.ip_address(msg.address)
        return AddressChange(scope, msg.index, deleted, f"{address}/{msg.prefixlen}",
                             address.version == 6 and address.is_link_local, initial)
    if kind in (RTM_NEWROUTE, RTM_DELROUTE):
        if msg.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        if msg.dst:
            text = str(ipaddress.ip_network((ipaddress.ip_address(msg.dst), msg.dst_len), strict=False))
        else:
            text = "0.0.0.0/0" if msg.family == socket.AF_INET else "::/0"
        planned = msg.table == MAIN_TABLE and msg.protocol != RTPROT_KERNEL and msg.type == RTN_UNICAST
        gateway = str(ipaddress.ip_address(msg.gateway)) if msg.gateway else None
        return RouteChange(scope, msg.oif, deleted, text, planned, (gateway, msg.priority), initial)
    if kind in (RTM_NEWNEIGH, RTM_DELNEIGH):
        what = ipaddress.ip_address(msg.dst).compressed if msg.dst else "-"
        return NeighbourChange(scope, msg.ifindex, deleted, bool(msg.state & NUD_PERMANENT), what, msg.lladdr,
                               msg.family == AF_BRIDGE, initial)
    return None


def _subscribed_socket(groups: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, QUEUE_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, QUEUE_BYTES)
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


class Subscription:
    """One namespace's notification socket, and the identity of the namespace it lives in."""

    def __init__(self, scope: Scope, sock: socket.socket, identity: tuple[int, int] | None) -> None:
        self.scope, self.sock, self.identity = scope, sock, identity
        self.port = sock.getsockname()[0]  # the kernel's replies to our own dumps carry it
        self.neighbours = False  # subscribed to neighbour entries too

    def fileno(self) -> int:
        return self.sock.fileno()

    def prime(self) -> list[Change]:
        """Dump the links, addresses and routes once, on this socket: what is there now."""
        self.sock.settimeout(5.0)
        out: list[Change] = []
        try:
            for seq, request in enumerate(_DUMPS + ((_NEIGHBOURS,) if self.neighbours else ()), start=1):
                self.sock.send(request)
                while True:
                    buf = self.sock.recv(1 << 20)
                    out.extend(change for change, _ in self._decode(buf, seq))
                    if _has_done(buf, seq, self.port):
                        break
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise KernelError(f"reading the interfaces of {self.scope or 'the host'}: {err.strerror or err}") from None
            out.append(Overflow(self.scope))
        except (socket.timeout, Malformed) as err:
            raise KernelError(f"reading the interfaces of {self.scope or 'the host'}: {err}") from None
        finally:
            self.sock.setblocking(False)
        return out

    def read(self) -> list[Change]:
        """What has arrived, without waiting."""
        return [change for change, _ in self.read_with_ports()]

    def read_with_ports(self) -> list[tuple[Change, int]]:
        """What has arrived, each with the netlink port of the request that caused it (0: the
        kernel's own, or lost notifications)."""
        out: list[tuple[Change, int]] = []
        while True:
            try:
                buf = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    out.append((Overflow(self.scope), 0))
                    continue
                raise KernelError(f"reading notifications in {self.scope or 'the host'}: {err.strerror or err}") from None
            try:
                out.extend(self._decode(buf, None))
            except Malformed:
                out.append((Overflow(self.scope), 0))  # cannot trust it: treat it as lost

    def _decode(self, buf: bytes, dump: int | None) -> list[tuple[Change, int]]:
        """Changes in a datagram, with their ports; those answering our dump `dump` are marked initial."""
        out = []
        for kind, seq, port, msg in notifications(buf):
            change = _changes(self.scope, kind, msg, initial=dump is not None and seq == dump and port == self.port)
            if change is not None:
                out.append((change, port))
        return out

    def close(self) -> None:
        self.sock.close()


def _has_done(buf: bytes, seq: int, port: int) -> bool:
    offset = 0
    while offset + 16 <= len(buf):
        length, kind, _, msg_seq, msg_port = _HEADER.unpack_from(buf, offset)
        if kind == NLMSG_DONE and msg_seq == seq and msg_port == port:
            return True
        if length < 16:
            return False
        offset = (offset + length + 3) & ~3
    return False


def allow_many_descriptors() -> None:
    """An agent holds a socket in every namespace and opens as many again for each
    reconciliation: take the whole hard limit of open files."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def identity(scope: Scope) -> tuple[int, int] | None:
    """What tells a namespace from another made later under the same name (its nsfs inode)."""
    try:
        st = os.stat(ns.netns_path(scope) if scope is not None else "/proc/self/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def subscribe(scopes: list[Scope], overlaid: frozenset = frozenset()) -> tuple[list[Subscription], list[Change]]:
    """Sockets in these namespaces (those that exist now), primed; and what priming found.
    In the `overlaid` ones (with a VXLAN device) they hear neighbour entries too."""
    def groups(scope: Scope) -> int:
        return GROUPS | (RTMGRP_NEIGH if scope in overlaid else 0)

    named = [s for s in scopes if s is not None]
    opened: dict[Scope, socket.socket] = dict(ns.run_in_each(named, lambda s: _subscribed_socket(groups(s)))) \
        if named else {}
    if None in scopes:
        opened[None] = _subscribed_socket(groups(None))
    subs, found = [], []
    for scope, sock in opened.items():
        sub = Subscription(scope, sock, identity(scope))
        sub.neighbours = scope in overlaid  # before prime(): it dumps them too
        subs.append(sub)
        found.extend(sub.prime())
    return subs, found


# -- inotify -------------------------------------------------------------------------------

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x4, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW = 0x100, 0x200, 0x400, 0x800, 0x4000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
_EVENT = struct.Struct("=iIII")
_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """An inotify descriptor with named watches; read() gives (watch name, mask, file name)."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise KernelError(f"inotify: {os.strerror(ctypes.get_errno())}",
                              "raise fs.inotify.max_user_instances") from None
        self.fd = fd
        self._names: dict[int, str] = {}
        self._paths: dict[str, tuple[str, int]] = {}

    def fileno(self) -> int:
        return self.fd

    def watch(self, label: str, path: str, mask: int) -> bool:
        """Watch a directory under a label (again after it was replaced); False if it is not there."""
        old = self._paths.get(label)
        if old is not None and old[0] == path:
            return True
        if old is not None:
            _libc.inotify_rm_watch(self.fd, old[1])
            self._names.pop(old[1], None)
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            self._paths.pop(label, None)
            return False
        self._names[wd] = label
        self._paths[label] = (path, wd)
        return True

    def read(self) -> list[tuple[str, int, str]]:
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size:offset + _EVENT.size + length].split(b"\0", 1)[0]
                out.append((self._names.get(wd, ""), mask, os.fsdecode(name)))
                offset += _EVENT.size + length

    def close(self) -> None:
        os.close(self.fd)


def namespace_watch(inotify: Inotify) -> None:
    """Namespaces deleted by name (`ip netns del`): our socket keeps a deleted namespace alive
    with all its interfaces, so its own notifications never say so; /run/netns does."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    inotify.watch("netns", NETNS_RUN_DIR, IN_DELETE | IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO)


def namespace_events(events: list[tuple[str, int, str]]) -> list[Change]:
    return [NamespaceGone(name) for label, mask, name in events
            if label == "netns" and mask & (IN_DELETE | IN_MOVED_FROM)]
