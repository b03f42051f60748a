"""A small synchronous rtnetlink client: exactly the messages topoctl sends and reads.

Part of the kernel layer. It exists for speed: a request here is a struct.pack, one send and
one recv, and a dump is parsed with struct.unpack_from into NamedTuples, where pyroute2 0.9
runs an asyncio event loop per request and decodes every attribute of every message (measured:
~4 ms per dump, and ~0.2 s to import). pyroute2 remains the reference the tests compare with.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from typing import Iterator, NamedTuple

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_GETNSID = 90

F_REQUEST, F_MULTI, F_ACK = 0x1, 0x2, 0x4
F_DUMP, F_REPLACE, F_EXCL, F_CREATE, F_APPEND = 0x300, 0x100, 0x200, 0x400, 0x800
F_CAPPED, F_ACK_TLVS = 0x100, 0x200  # in an NLMSG_ERROR reply: request cut to its header; ext-ack follows
NLA_F_NESTED = 0x8000
NLMSGERR_ATTR_MSG = 1

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD, IFLA_EXT_MASK, IFLA_LINK_NETNSID = 18, 20, 28, 29, 37
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the counters are most of a link message and never read here
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BR_STP_STATE = 5
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 3, 4, 7
IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 15, 17
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
NDA_DST, NDA_LLADDR = 1, 2
NETNSA_NSID, NETNSA_FD = 1, 3
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
_BE16 = struct.Struct("!H")


class NetlinkError(OSError):
    """The kernel refused a request; `message` is its extended-ack text when it gave one."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message or os.strerror(code))
        self.code = code
        self.message = message


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
    return attr(kind, value.encode() + b"\0")


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def ifinfo(index: int = 0, up: bool | None = None, family: int = socket.AF_UNSPEC) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    return _IFINFO.pack(family, 0, index, flags, change)


# -- decoding ------------------------------------------------------------------------------

def attrs(buf: bytes, offset: int, end: int) -> dict[int, memoryview]:
    """The attributes of a message (last one wins), by type, as views into the buffer."""
    # the hot loop of every dump (a link message has ~40 attributes): kept to the bone
    found: dict[int, memoryview] = {}
    view = memoryview(buf)
    unpack = _ATTR.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(buf, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = view[offset + 4: offset + length]
        offset += (length + 3) & ~3
    return found


def wanted_attrs(buf: bytes, offset: int, end: int, slots: dict[int, int], count: int) -> list:
    """Only the attributes named in `slots` (type -> position in the result), as (start, end)
    offsets into buf, None where absent. A link message carries ~40 attributes of which topoctl
    reads 8: skipping the rest without making a view of each halves the parse of a link dump."""
    found: list = [None] * count
    unpack = _ATTR.unpack_from
    slot_of = slots.get
    while offset + 4 <= end:
        length, kind = unpack(buf, offset)
        if length < 4:
            break
        slot = slot_of(kind & 0x3FFF)
        if slot is not None:
            found[slot] = (offset + 4, offset + length)
        offset += (length + 3) & ~3
    return found


def _str(value: memoryview | None) -> str | None:
    return bytes(value).split(b"\0", 1)[0].decode() if value is not None else None


def _u32(value: memoryview | None) -> int | None:
    return _U32.unpack(value)[0] if value is not None and len(value) >= 4 else None


def _mac(value: memoryview | None) -> str | None:
    return ":".join(f"{b:02x}" for b in value) if value is not None and len(value) == 6 else None


class LinkMsg(NamedTuple):
    index: int
    flags: int
    name: str
    mtu: int | None
    mac: str | None
    master: int
    link: int  # the peer's ifindex, for a veth
    link_netnsid: int | None
    alias: str | None
    kind: str | None
    stp_state: int | None = None
    vxlan: tuple | None = None  # (vni, port, local bytes, learning, underlay ifindex)


class AddrMsg(NamedTuple):
    index: int
    family: int
    prefixlen: int
    address: bytes


class RouteMsg(NamedTuple):
    family: int
    dst_len: int
    table: int
    protocol: int
    type: int
    flags: int
    dst: bytes | None
    gateway: bytes | None
    oif: int | None
    priority: int
    multipath: bool


class NeighMsg(NamedTuple):
    family: int
    ifindex: int
    state: int
    dst: bytes | None
    lladdr: str | None


# attribute type -> slot, for wanted_attrs()
_LINK_SLOTS = {IFLA_IFNAME: 0, IFLA_MTU: 1, IFLA_ADDRESS: 2, IFLA_MASTER: 3, IFLA_LINK: 4, IFLA_LINK_NETNSID: 5,
               IFLA_IFALIAS: 6, IFLA_LINKINFO: 7}
_ADDR_SLOTS = {IFA_LOCAL: 0, IFA_ADDRESS: 1}
_ROUTE_SLOTS = {RTA_TABLE: 0, RTA_DST: 1, RTA_GATEWAY: 2, RTA_OIF: 3, RTA_PRIORITY: 4, RTA_MULTIPATH: 5}
_u32_at = _U32.unpack_from


def _has_u32(span: tuple[int, int] | None) -> bool:
    """An attribute present and long enough for a 32-bit value (as _u32 required)."""
    return span is not None and span[1] - span[0] >= 4


def _link(buf: bytes, offset: int, end: int) -> LinkMsg:
    _, _, index, flags, _ = _IFINFO.unpack_from(buf, offset)
    name, mtu, mac, master, link, nsid, alias, info = wanted_attrs(buf, offset + _IFINFO.size, end, _LINK_SLOTS, 8)
    kind = stp = vxlan = None
    if info is not None:
        info_bytes = buf[info[0]:info[1]]
        inner = attrs(info_bytes, 0, len(info_bytes))
        kind = _str(inner.get(IFLA_INFO_KIND))
        data = inner.get(IFLA_INFO_DATA)
        if data is not None:
            data_bytes = bytes(data)
            d = attrs(data_bytes, 0, len(data_bytes))
            if kind == "bridge":
                stp = _u32(d.get(IFLA_BR_STP_STATE))
            elif kind == "vxlan":
                port = d.get(IFLA_VXLAN_PORT)
                local = d.get(IFLA_VXLAN_LOCAL) or d.get(IFLA_VXLAN_LOCAL6)
                learning = d.get(IFLA_VXLAN_LEARNING)
                vxlan = (_u32(d.get(IFLA_VXLAN_ID)), _BE16.unpack(port)[0] if port is not None else None,
                         bytes(local) if local is not None else None, bool(learning[0]) if learning else False,
                         _u32(d.get(IFLA_VXLAN_LINK)) or 0)
    return LinkMsg(index, flags,
                   buf[name[0]:name[1]].split(b"\0", 1)[0].decode() if name is not None else "",
                   _u32_at(buf, mtu[0])[0] if _has_u32(mtu) else None,
                   buf[mac[0]:mac[1]].hex(":") if mac is not None and mac[1] - mac[0] == 6 else None,
                   _u32_at(buf, master[0])[0] if _has_u32(master) else 0,
                   _u32_at(buf, link[0])[0] if _has_u32(link) else 0,
                   _S32.unpack_from(buf, nsid[0])[0] if _has_u32(nsid) else None,
                   buf[alias[0]:alias[1]].split(b"\0", 1)[0].decode() if alias is not None else None,
                   kind, stp, vxlan)


def _addr(buf: bytes, offset: int, end: int) -> AddrMsg:
    family, prefixlen, _, _, index = _IFADDR.unpack_from(buf, offset)
    local, address = wanted_attrs(buf, offset + _IFADDR.size, end, _ADDR_SLOTS, 2)
    value = local if local is not None and local[1] > local[0] else address
    return AddrMsg(index, family, prefixlen, buf[value[0]:value[1]] if value is not None else b"")


def _route(buf: bytes, offset: int, end: int) -> RouteMsg:
    family, dst_len, _, _, table, protocol, _, rtype, flags = _RTMSG.unpack_from(buf, offset)
    table32, dst, gateway, oif, priority, multipath = wanted_attrs(buf, offset + _RTMSG.size, end, _ROUTE_SLOTS, 6)
    return RouteMsg(family, dst_len, (_u32_at(buf, table32[0])[0] if _has_u32(table32) else 0) or table,
                    protocol, rtype, flags,
                    buf[dst[0]:dst[1]] if dst is not None else None,
                    buf[gateway[0]:gateway[1]] if gateway is not None else None,
                    _u32_at(buf, oif[0])[0] if _has_u32(oif) else None,
                    _u32_at(buf, priority[0])[0] if _has_u32(priority) else 0, multipath is not None)


def _neigh(buf: bytes, offset: int, end: int) -> NeighMsg:
    family, ifindex, state, _, _ = _NDMSG.unpack_from(buf, offset)
    a = attrs(buf, offset + _NDMSG.size, end)
    dst = a.get(NDA_DST)
    return NeighMsg(family, ifindex, state, bytes(dst) if dst is not None else None, _mac(a.get(NDA_LLADDR)))


# -- the socket ----------------------------------------------------------------------------

class _Receiver:
    """One reusable 1 MiB receive buffer for every socket, each datagram copied out of it.

    `sock.recv(1 << 20)` allocates (and the allocator maps and unmaps) a fresh megabyte for
    every datagram: measured at 1001 namespaces, their link and address dumps took 0.166 s that
    way and 0.060 s with this buffer. The buffer stays that large because a netlink datagram that does not fit
    is cut short without an error."""

    def __init__(self) -> None:
        self._buffer = bytearray(1 << 20)
        self._view = memoryview(self._buffer)
        self._lock = threading.Lock()  # new namespaces' sockets are used by two threads at once (lo up)

    def __call__(self, sock: socket.socket) -> bytes:
        with self._lock:
            got = sock.recv_into(self._buffer)
            return self._view[:got].tobytes()


_receive = _Receiver()


class Rtnl:
    """One NETLINK_ROUTE socket (in whatever namespace it was opened), used synchronously."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self.strict = False
        self.unfinished = False  # a dump was sent and not read to its end (see settle())
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass  # only the error texts are lost
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))

    @classmethod
    def open(cls) -> "Rtnl":
        return cls(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))

    def close(self) -> None:
        self.sock.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags | F_REQUEST, self.seq, 0) + body)
        return self.seq

    def _replies(self, seq: int) -> Iterator[tuple[int, int, bytes, int, int]]:
        """(type, flags, buffer, payload offset, payload end) of each reply to `seq`."""
        while True:
            buf = _receive(self.sock)
            offset = 0
            while offset + _HEADER.size <= len(buf):
                length, kind, flags, msg_seq, _ = _HEADER.unpack_from(buf, offset)
                if length < _HEADER.size:
                    return
                if msg_seq == seq:
                    yield kind, flags, buf, offset + _HEADER.size, offset + length
                offset += _pad(length)

    @staticmethod
    def _error(buf: bytes, start: int, end: int, flags: int) -> NetlinkError | None:
        code = -_S32.unpack_from(buf, start)[0]
        if code == 0:
            return None
        message = ""
        if flags & F_ACK_TLVS:
            # after the error code comes the request: its header only when the ack is capped
            request_length = _HEADER.unpack_from(buf, start + 4)[0]
            inner = start + 4 + (_HEADER.size if flags & F_CAPPED else _pad(request_length))
            message = _str(attrs(buf, inner, end).get(NLMSGERR_ATTR_MSG)) or ""
        return NetlinkError(code, message)

    def call(self, kind: int, flags: int, body: bytes) -> None:
        """A request answered by an acknowledgement; raises NetlinkError on refusal."""
        seq = self._send(kind, flags | F_ACK, body)
        for reply, reply_flags, buf, start, end in self._replies(seq):
            if reply == NLMSG_ERROR:
                error = self._error(buf, start, end, reply_flags)
                if error is not None:
                    raise error
                return

    def dump(self, kind: int, body: bytes, parse) -> list:
        self.settle()
        seq = self._send(kind, F_DUMP, body)
        self.unfinished = True
        out = []
        for reply, reply_flags, buf, start, end in self._replies(seq):
            if reply == NLMSG_DONE:
                self.unfinished = False
                return out
            if reply == NLMSG_ERROR:
                self.unfinished = False
                error = self._error(buf, start, end, reply_flags)
                if error is not None:
                    raise error
                return out
            out.append(parse(buf, start, end))
        return out

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
        self.unfinished = False

    def get(self, kind: int, body: bytes, parse):
        """A single object by key (RTM_GETLINK by name, RTM_GETNSID by fd)."""
        seq = self._send(kind, 0, body)
        for reply, reply_flags, buf, start, end in self._replies(seq):
            if reply == NLMSG_ERROR:
                error = self._error(buf, start, end, reply_flags)
                raise error if error is not None else NetlinkError(errno.ENOENT)
            return parse(buf, start, end)

    # -- reads ---------------------------------------------------------------------------

    def links(self) -> list[LinkMsg]:
        return self.dump(RTM_GETLINK, ifinfo() + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS), _link)

    def addresses(self) -> list[AddrMsg]:
        return self.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0), _addr)

    def routes(self, table: int | None = None) -> list[RouteMsg]:
        """Routes; with `table`, the kernel filters (strict checking) so the local tables' many
        IPv6 entries are never sent."""
        if table is None:
            return self.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0), _route)
        self._strict()
        body = _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
        return self.dump(RTM_GETROUTE, body + attr_u32(RTA_TABLE, table), _route)

    def _strict(self) -> None:
        if not self.strict:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            self.strict = True

    def neighbours(self, family: int = socket.AF_UNSPEC) -> list[NeighMsg]:
        return self.dump(RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0), _neigh)

    def link_by_name(self, name: str) -> LinkMsg | None:
        try:
            return self.get(RTM_GETLINK, ifinfo() + attr_str(IFLA_IFNAME, name), _link)
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return None
            raise

    def link_index(self, name: str) -> int | None:
        link = self.link_by_name(name)
        return link.index if link is not None else None

    def nsid_of(self, fd: int) -> int | None:
        def parse(buf: bytes, start: int, end: int) -> int | None:
            value = attrs(buf, start + 4, end).get(NETNSA_NSID)
            return _S32.unpack(value)[0] if value is not None else None

        nsid = self.get(RTM_GETNSID, b"\0\0\0\0" + attr_u32(NETNSA_FD, fd), parse)
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
                           1 if verb != "del" else 0, flags)
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
