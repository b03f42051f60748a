"""A small synchronous rtnetlink client: exactly the messages topoctl sends and reads.

Part of the kernel layer. It exists for speed: a request here is a struct.pack, one send and
one recv, and a dump is parsed with struct.unpack_from into NamedTuples, where pyroute2 0.9
runs an asyncio event loop per request and decodes every attribute of every message (the
figures are in docs/architecture.md). pyroute2 remains the reference the tests compare with.
Replies are read and checked by rtnl_decode.py: what cannot be trusted is a KernelError.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time

from topoctl.core.kabi import IFF_UP, NUD_PERMANENT, RTN_UNICAST
from topoctl.errors import KernelError

# Replies are read and checked in rtnl_decode.py; its names are also taken from here (executors.py,
# tables.py, the tests).
from topoctl.kernel.rtnl_decode import (  # noqa: F401
    _ADDR_SLOTS,
    _ATTR,
    _HEADER,
    _IFADDR,
    _IFINFO,
    _LINK_SLOTS,
    _NDMSG,
    _ROUTE_SLOTS,
    _RTMSG,
    _U32,
    AF_BRIDGE,
    F_ACK_TLVS,
    F_CAPPED,
    F_DUMP_INTR,
    IFA_ADDRESS,
    IFA_LOCAL,
    IFLA_ADDRESS,
    IFLA_BR_STP_STATE,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINK,
    IFLA_LINK_NETNSID,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_VXLAN_ID,
    IFLA_VXLAN_LEARNING,
    IFLA_VXLAN_LINK,
    IFLA_VXLAN_LOCAL,
    IFLA_VXLAN_LOCAL6,
    IFLA_VXLAN_PORT,
    NDA_DST,
    NDA_LLADDR,
    NETNSA_NSID,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGERR_ATTR_MSG,
    PENDING,
    RTA_DST,
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTA_OIF,
    RTA_PRIORITY,
    RTA_TABLE,
    AddrMsg,
    DumpFailed,
    LinkMsg,
    Malformed,
    NeighMsg,
    NetlinkError,
    RouteMsg,
    _addr,
    _link,
    _neigh,
    _nsid,
    _route,
    answer,
    attrs,
    dump_datagram,
    refusal,
    wanted_attrs,
)

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_GETNSID = 90

F_REQUEST, F_MULTI, F_ACK = 0x1, 0x2, 0x4
F_DUMP, F_REPLACE, F_EXCL, F_CREATE, F_APPEND = 0x300, 0x100, 0x200, 0x400, 0x800
NLA_F_NESTED = 0x8000

IFLA_NET_NS_FD, IFLA_EXT_MASK = 28, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the counters are most of a link message and never read here
VETH_INFO_PEER = 1
IFA_F_NODAD = 0x02
NETNSA_FD = 3
NUD_NOARP = 0x40
NTF_SELF = 0x02

DUMP_ATTEMPTS = 5  # reads of a table that changed while it was dumped, before giving up
# seconds without a datagram while one is due: the kernel queues each part of a reply before the
# send() or recv() that asks for it returns, so only a lost one is waited for
REPLY_TIMEOUT = 30
_MALFORMED_HINT = ("nothing was done with it; this is a bug of topoctl's netlink codec or of the kernel: "
                   "please report it, with the output of `uname -r`")
_WHAT = {RTM_GETLINK: "reading the interfaces", RTM_GETADDR: "reading the addresses", RTM_GETROUTE: "reading the routes",
         RTM_GETNEIGH: "reading the neighbour and forwarding entries", RTM_NEWLINK: "adding or changing an interface",
         RTM_DELLINK: "deleting an interface", RTM_NEWADDR: "adding an address", RTM_DELADDR: "deleting an address",
         RTM_NEWROUTE: "adding or replacing a route", RTM_DELROUTE: "deleting a route",
         RTM_NEWNEIGH: "adding a neighbour or forwarding entry", RTM_DELNEIGH: "deleting a neighbour or forwarding entry",
         RTM_GETNSID: "reading a namespace id"}


# -- encoding ------------------------------------------------------------------------------

def _pad(length: int) -> int:
    return (length + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (_pad(length) - length)


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def attr_u8(kind: int, value: int) -> bytes:
    return attr(kind, bytes((value,)))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode("utf-8", "surrogateescape") + b"\0")


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def ifinfo(index: int = 0, up: bool | None = None, family: int = socket.AF_UNSPEC) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    return _IFINFO.pack(family, 0, index, flags, change)


# -- the socket ----------------------------------------------------------------------------

class _Receiver:
    """One reusable 1 MiB receive buffer for every socket, each datagram copied out of it.

    `sock.recv(1 << 20)` allocates (and the allocator maps and unmaps) a fresh megabyte for
    every datagram, several times slower on a thousand namespaces' dumps. MSG_TRUNC makes recv
    return a datagram's whole length, so one that did not fit is an error, not a short read."""

    def __init__(self) -> None:
        self._buffer = bytearray(1 << 20)
        self._view = memoryview(self._buffer)
        self._lock = threading.Lock()  # new namespaces' sockets are used by two threads at once (lo up)

    def __call__(self, sock: socket.socket) -> bytes:
        with self._lock:
            got = sock.recv_into(self._buffer, 0, socket.MSG_TRUNC)
            if got > len(self._buffer):
                raise Malformed(f"a datagram of {got} bytes, more than the {len(self._buffer)}-byte buffer")
            return self._view[:got].tobytes()


_receive = _Receiver()


class Rtnl:
    """One NETLINK_ROUTE socket (in whatever namespace it was opened), used synchronously.

    It fails closed: a reply it cannot trust (malformed, cut short, missing, a dump that ended
    in an error or kept changing) is a KernelError, never a short table or a success; a refusal
    of a request is a NetlinkError (an OSError) with the kernel's errno and text."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self.strict: bool | None = None  # kernel-side filtering of dumps: None until first needed
        self.unfinished = False  # a dump was sent and not read to its end (see settle())
        try:
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            except OSError:
                pass  # only the error texts are lost
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", REPLY_TIMEOUT, 0))
            sock.bind((0, 0))
        except OSError as err:
            sock.close()
            raise KernelError(f"setting up a netlink socket: {err.strerror or err}") from None

    @classmethod
    def open(cls) -> Rtnl:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        except OSError as err:
            raise KernelError(f"opening a netlink socket: {err.strerror or err}",
                              "if too many files are open, raise the limit (ulimit -n)") from None
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def _send(self, kind: int, flags: int, body: bytes, what: str) -> int:
        self.seq += 1
        try:
            self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags | F_REQUEST, self.seq, 0) + body)
        except OSError as err:
            raise KernelError(f"{what}: sending the request failed: {err.strerror or err}") from None
        return self.seq

    @staticmethod
    def _socket_error(what: str, err: OSError) -> KernelError:
        if isinstance(err, BlockingIOError):  # SO_RCVTIMEO
            return KernelError(f"{what}: no reply from the kernel within {REPLY_TIMEOUT} s")
        return KernelError(f"{what}: reading the kernel's reply failed: {err.strerror or err}")  # ENOBUFS: one was lost

    @staticmethod
    def _malformed(what: str, err: Exception) -> KernelError:
        if not isinstance(err, Malformed):  # a check missing in rtnl_decode: still no partial result
            err = f"it could not be decoded ({type(err).__name__}: {err})"
        return KernelError(f"{what}: the kernel's reply is malformed: {err}", _MALFORMED_HINT)

    def _answer(self, seq: int, reply_type: int | None, parse, what: str):
        try:
            while True:
                try:
                    buf = _receive(self.sock)
                except OSError as err:
                    raise self._socket_error(what, err) from None
                found = answer(buf, seq, reply_type, parse)  # a refusal's NetlinkError goes to the caller
                if found is not PENDING:
                    return found
        except (Malformed, struct.error, IndexError, ValueError, TypeError) as err:
            raise self._malformed(what, err) from None

    def call(self, kind: int, flags: int, body: bytes) -> None:
        """A request answered by an acknowledgement; raises NetlinkError on refusal, KernelError
        when no trustworthy acknowledgement comes."""
        what = _WHAT.get(kind) or f"request {kind}"
        self._answer(self._send(kind, flags | F_ACK, body, what), None, None, what)

    def get(self, kind: int, body: bytes, parse, what: str):
        """A single object by key (RTM_GETLINK by name, RTM_GETNSID by fd)."""
        return self._answer(self._send(kind, 0, body, what), kind - 2, parse, what)  # RTM_GETx answers RTM_NEWx

    def dump(self, kind: int, body: bytes, parse) -> list:
        """Every object of a table. A dump the kernel marks as interrupted (the table changed
        while it was read) is read to its end, dropped, and done again, DUMP_ATTEMPTS times."""
        what = _WHAT.get(kind) or f"dump {kind}"
        for attempt in range(DUMP_ATTEMPTS):
            if attempt:
                time.sleep(0.005 * attempt)  # whatever is changing the table may be done in a moment
            out = self._dump_once(kind, body, parse, what)
            if out is not None:
                return out
        raise KernelError(f"{what}: the table kept changing while it was read ({DUMP_ATTEMPTS} attempts)",
                          "another program is changing this namespace's network configuration; "
                          "run again once it has finished")

    def _dump_once(self, kind: int, body: bytes, parse, what: str) -> list | None:
        """The dump's objects, or None if it was interrupted (and has been read to its end)."""
        self.settle()
        seq = self._send(kind, F_DUMP, body, what)
        self.unfinished = True
        out: list = []
        interrupted = ended = False
        sock, reply_type = self.sock, kind - 2  # RTM_GETx is answered by RTM_NEWx
        try:
            while not ended:
                ended, interrupted = dump_datagram(_receive(sock), seq, reply_type, parse, out, interrupted)
        except NetlinkError as err:  # refused, or ended in an error: either way no longer running
            self.unfinished = False
            reason = os.strerror(err.code) + (f" ({err.message})" if err.message else "")
            how = "ended the dump with an error" if isinstance(err, DumpFailed) else "refused the dump"
            raise KernelError(f"{what}: the kernel {how}: {reason}") from None
        except OSError as err:
            raise self._socket_error(what, err) from None
        except (Malformed, struct.error, IndexError, ValueError, TypeError) as err:
            raise self._malformed(what, err) from None  # still unfinished: the next dump settles it
        self.unfinished = False
        return None if interrupted else out

    def settle(self) -> None:
        """End a dump left half read, as when Ctrl-C or SIGTERM interrupts a read: the kernel
        refuses a new dump on a socket whose dump still runs (EBUSY). What is queued is read
        and dropped without waiting; each read lets the kernel queue the dump's next part, so
        the queue is empty only once the dump has ended (even if the part holding its end
        was lost with the interruption)."""
        if not self.unfinished:
            return
        while True:
            try:
                self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                continue  # an error queued on the socket (ENOBUFS) is reported once: read on
        self.unfinished = False

    # -- reads ---------------------------------------------------------------------------

    def links(self) -> list[LinkMsg]:
        return self.dump(RTM_GETLINK, ifinfo() + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS), _link)

    def addresses(self) -> list[AddrMsg]:
        return self.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0), _addr)

    def routes(self, table: int | None = None) -> list[RouteMsg]:
        """Routes; with `table`, the kernel filters (strict checking) so the local tables' many
        IPv6 entries are never sent. A kernel without strict checking sends them all, and
        they are filtered here."""
        if table is None:
            return self.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0), _route)
        strict = self._strict()
        body = _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
        found = self.dump(RTM_GETROUTE, body + attr_u32(RTA_TABLE, table), _route)
        return found if strict else [r for r in found if r.table == table]

    def route_to(self, address: bytes) -> RouteMsg | None:
        """The route the kernel takes to one address (RTM_GETROUTE, as `ip route get`), policy
        rules and every table included; None when it has none (unreachable)."""
        family = socket.AF_INET if len(address) == 4 else socket.AF_INET6
        body = _RTMSG.pack(family, len(address) * 8, 0, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, address)
        try:
            return self.get(RTM_GETROUTE, body, _route, "looking up a route")
        except NetlinkError:
            return None

    def _strict(self) -> bool:
        """Turn on strict checking (which makes the kernel filter dumps) once; whether it is on.
        It stays on for the socket's later dumps, whose requests pass its checks (zeroed headers)."""
        if self.strict is None:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                self.strict = True
            except OSError:  # ENOPROTOOPT before Linux 4.20: the request's filters are ignored
                self.strict = False
        return self.strict

    def neighbours(self, family: int = socket.AF_UNSPEC) -> list[NeighMsg]:
        return self.dump(RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0), _neigh)

    def link_by_name(self, name: str) -> LinkMsg | None:
        try:
            return self.get(RTM_GETLINK, ifinfo() + attr_str(IFLA_IFNAME, name), _link, "looking up an interface")
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return None
            raise

    def link_index(self, name: str) -> int | None:
        link = self.link_by_name(name)
        return link.index if link is not None else None

    def nsid_of(self, fd: int) -> int | None:
        nsid = self.get(RTM_GETNSID, b"\0\0\0\0" + attr_u32(NETNSA_FD, fd), _nsid, "reading a namespace id")
        return nsid if nsid is not None and nsid >= 0 else None

    # -- writes --------------------------------------------------------------------------

    def link_add(self, name: str, kind: str, attributes: bytes = b"", data: bytes = b"") -> None:
        info = attr_str(IFLA_INFO_KIND, kind) + (nest(IFLA_INFO_DATA, data) if data else b"")
        body = ifinfo() + attr_str(IFLA_IFNAME, name) + attributes + nest(IFLA_LINKINFO, info)
        self.call(RTM_NEWLINK, F_CREATE | F_EXCL, body)

    def link_set(self, index: int, up: bool | None = None, attributes: bytes = b"", kind: str | None = None,
                 data: bytes = b"") -> None:
        body = ifinfo(index, up) + attributes
        if kind is not None:
            body += nest(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, kind) + nest(IFLA_INFO_DATA, data))
        self.call(RTM_NEWLINK, 0, body)

    def link_del(self, index: int) -> None:
        self.call(RTM_DELLINK, 0, ifinfo(index))

    def address(self, add: bool, index: int, family: int, prefixlen: int, address: bytes, flags: int = 0) -> None:
        body = _IFADDR.pack(family, prefixlen, flags, 0, index) + attr(IFA_LOCAL, address) + attr(IFA_ADDRESS, address)
        self.call(RTM_NEWADDR if add else RTM_DELADDR, (F_CREATE | F_EXCL) if add else 0, body)

    def route(self, verb: str, family: int, dst: bytes | None, dst_len: int, table: int, protocol: int,
              metric: int, gateway: bytes | None = None, oif: int | None = None, flags: int = 0) -> None:
        # universe through a gateway, link without one; a delete matches any scope (nowhere)
        scope = 255 if verb == "del" else (0 if gateway is not None else 253)
        body = _RTMSG.pack(family, dst_len, 0, 0, table if table < 256 else 252, protocol, scope,
                           RTN_UNICAST if verb != "del" else 0, flags)
        body += attr_u32(RTA_TABLE, table) + attr_u32(RTA_PRIORITY, metric)
        if dst is not None and dst_len:
            body += attr(RTA_DST, dst)
        if gateway is not None:
            body += attr(RTA_GATEWAY, gateway)
        if oif is not None:
            body += attr_u32(RTA_OIF, oif)
        kind, nl_flags = {"add": (RTM_NEWROUTE, F_CREATE | F_EXCL), "replace": (RTM_NEWROUTE, F_CREATE | F_REPLACE),
                          "del": (RTM_DELROUTE, 0)}[verb]
        self.call(kind, nl_flags, body)

    def neighbour(self, verb: str, family: int, ifindex: int, dst: bytes, lladdr: str | None = None,
                  state: int = NUD_PERMANENT, flags: int = 0) -> None:
        body = _NDMSG.pack(family, ifindex, state, flags, 0) + attr(NDA_DST, dst)
        if lladdr is not None:
            body += attr(NDA_LLADDR, mac_bytes(lladdr))
        kind, nl_flags = {"replace": (RTM_NEWNEIGH, F_CREATE | F_REPLACE), "append": (RTM_NEWNEIGH, F_CREATE | F_APPEND),
                          "del": (RTM_DELNEIGH, 0)}[verb]
        self.call(kind, nl_flags, body)
