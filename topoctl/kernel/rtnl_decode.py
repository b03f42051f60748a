"""Decoding rtnetlink replies, for rtnl.py: the messages topoctl reads, and the checks that make
a reply that cannot be trusted an error instead of a short or wrong table.

Every length is checked against what holds it: a message header against its datagram, an
attribute against its message (or its nest), a fixed-size body against its struct, a
fixed-size attribute value against its size. A failed check raises Malformed, which rtnl.py
reports as a KernelError saying what was being read. The checks are integer comparisons per
message and per attribute; nothing is copied for them.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

# What a dump's numbers mean (flags, families, states) is declared in core.kabi, once.
from topoctl.core.kabi import AF_BRIDGE

NLMSG_ERROR, NLMSG_DONE = 2, 3
F_DUMP_INTR = 0x10  # on a dump's message: the table changed while it was read
F_CAPPED, F_ACK_TLVS = 0x100, 0x200  # in an NLMSG_ERROR reply: request cut to its header; ext-ack follows
NLMSGERR_ATTR_MSG = 1

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_LINK_NETNSID = 18, 20, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA, IFLA_BRPORT_STATE = 4, 5, 1
IFLA_BR_STP_STATE = 5
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 3, 4, 7
IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 15, 17
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
NDA_DST, NDA_LLADDR = 1, 2
NETNSA_NSID = 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
_BE16 = struct.Struct("!H")
_ERRMSG_SIZE = 4 + _HEADER.size  # nlmsgerr: the error code, then (at least) the request's header
MAX_ERRNO = 4095  # the kernel's errors are -1 to -4095
_INET = {socket.AF_INET: (4, 32), socket.AF_INET6: (16, 128)}  # address bytes, longest prefix


class Malformed(Exception):
    """A reply that breaks the format. rtnl.py turns it into a KernelError."""


class NetlinkError(OSError):
    """The kernel refused a request; `message` is its extended-ack text when it gave one."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message or os.strerror(code))
        self.code = code
        self.message = message


class DumpFailed(NetlinkError):
    """A dump that ended with an error (in its NLMSG_DONE) instead of its end."""


def _pad(length: int) -> int:
    return (length + 3) & ~3


# -- attributes ----------------------------------------------------------------------------

def _check_end(offset: int, end: int, length: int) -> None:
    """After an attribute loop that did not end exactly at `end`: beyond it, the last attribute
    ran past what holds it (if it is only its padding that is missing, it still fits)."""
    if offset < end:
        raise Malformed(f"{end - offset} stray bytes after the last attribute (ending at byte {end})")
    last = offset - ((length + 3) & ~3)
    if last + length > end:
        raise Malformed(f"an attribute at byte {last} claims {length} bytes, past the end of what holds it (byte {end})")


def _too_short(offset: int, length: int) -> Malformed:
    return Malformed(f"an attribute at byte {offset} gives a length of {length}, shorter than its header")


# The loops below check one thing per attribute, a length that moves on; that none runs past
# `end` is checked once after them, as one that does is always the last one read.

def attrs(buf: bytes, offset: int, end: int) -> dict[int, memoryview]:
    """The attributes between offset and end (last one wins), by type, as views into buf."""
    found: dict[int, memoryview] = {}
    view = memoryview(buf)
    unpack = _ATTR.unpack_from
    length = 0
    while offset + 4 <= end:
        length, kind = unpack(buf, offset)
        if length < 4:
            raise _too_short(offset, length)
        found[kind & 0x3FFF] = view[offset + 4: offset + length]
        offset += (length + 3) & ~3
    if offset != end:
        _check_end(offset, end, length)
    return found


def wanted_attrs(buf: bytes, offset: int, end: int, slots: dict[int, int], count: int) -> list:
    """Only the attributes named in `slots` (type -> position in the result), as (start, end)
    offsets into buf, None where absent. A link message carries ~40 attributes of which topoctl
    reads 8: skipping the rest without making a view of each halves the parse of a link dump."""
    found: list = [None] * count
    unpack = _ATTR.unpack_from
    slot_of = slots.get
    length = 0
    while offset + 4 <= end:
        length, kind = unpack(buf, offset)
        if length < 4:
            raise _too_short(offset, length)
        slot = slot_of(kind & 0x3FFF)
        if slot is not None:
            found[slot] = (offset + 4, offset + length)
        offset += (length + 3) & ~3
    if offset != end:
        _check_end(offset, end, length)
    return found


def _wrong_size(what: str, got: int, size: int | str) -> Malformed:
    return Malformed(f"{what} is {got} bytes long, not {size}")


def _text(raw: bytes) -> str:
    # interface names are bytes to the kernel: one that is not UTF-8 keeps its bytes (as os.fsdecode does)
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _str(value: memoryview | None) -> str | None:
    return _text(bytes(value)) if value is not None else None


def _u32(value: memoryview | None, what: str) -> int | None:
    if value is None:
        return None
    if len(value) != 4:
        raise _wrong_size(what, len(value), 4)
    return _U32.unpack(value)[0]


def _is_u32(buf_span: tuple[int, int] | None, what: str) -> bool:
    """An attribute present (its value a 32-bit one, or the message is malformed)."""
    if buf_span is None:
        return False
    if buf_span[1] - buf_span[0] != 4:
        raise _wrong_size(what, buf_span[1] - buf_span[0], 4)
    return True


def _mac(value: memoryview | None) -> str | None:
    return ":".join(f"{b:02x}" for b in value) if value is not None and len(value) == 6 else None


def _short(what: str, start: int, end: int, size: int) -> Malformed:
    return Malformed(f"{what} message's body is {end - start} bytes, shorter than its {size}-byte header")


def _bad_inet(family: int, raw: bytes | None, prefixlen: int, what: str) -> Malformed:
    size, longest = _INET[family]
    if raw is not None and len(raw) != size:
        return _wrong_size(what, len(raw), size)
    return Malformed(f"{what} has a prefix length of {prefixlen}, over {longest}")


# -- messages ------------------------------------------------------------------------------

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
    port_state: int | None = None  # a bridge port's STP state (BR_STATE_*: 3 forwarding)


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


def _vxlan(d: dict[int, memoryview]) -> tuple:
    port = d.get(IFLA_VXLAN_PORT)
    if port is not None and len(port) != 2:
        raise _wrong_size("a VXLAN port", len(port), 2)
    local = d.get(IFLA_VXLAN_LOCAL)
    if local is not None and len(local) != 4:
        raise _wrong_size("a VXLAN local address", len(local), 4)
    if local is None:
        local = d.get(IFLA_VXLAN_LOCAL6)
        if local is not None and len(local) != 16:
            raise _wrong_size("a VXLAN local IPv6 address", len(local), 16)
    learning = d.get(IFLA_VXLAN_LEARNING)
    if learning is not None and len(learning) != 1:
        raise _wrong_size("a VXLAN learning flag", len(learning), 1)
    return (_u32(d.get(IFLA_VXLAN_ID), "a VNI"), _BE16.unpack(port)[0] if port is not None else None,
            bytes(local) if local is not None else None, bool(learning[0]) if learning is not None else False,
            _u32(d.get(IFLA_VXLAN_LINK), "a VXLAN underlay index") or 0)


def _link(buf: bytes, offset: int, end: int) -> LinkMsg:
    if end - offset < _IFINFO.size:
        raise _short("an interface", offset, end, _IFINFO.size)
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
                stp = _u32(d.get(IFLA_BR_STP_STATE), "a bridge's STP state")
            elif kind == "vxlan":
                vxlan = _vxlan(d)
        port_state = None
        if _str(inner.get(IFLA_INFO_SLAVE_KIND)) == "bridge" and inner.get(IFLA_INFO_SLAVE_DATA) is not None:
            slave = bytes(inner[IFLA_INFO_SLAVE_DATA])
            state = attrs(slave, 0, len(slave)).get(IFLA_BRPORT_STATE)
            port_state = state[0] if state is not None and len(state) >= 1 else None
    else:
        port_state = None
    return LinkMsg(index, flags,
                   buf[name[0]:name[1]].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if name is not None else "",
                   _u32_at(buf, mtu[0])[0] if _is_u32(mtu, "an MTU") else None,
                   buf[mac[0]:mac[1]].hex(":") if mac is not None and mac[1] - mac[0] == 6 else None,
                   _u32_at(buf, master[0])[0] if _is_u32(master, "a master index") else 0,
                   _u32_at(buf, link[0])[0] if _is_u32(link, "a link index") else 0,
                   _S32.unpack_from(buf, nsid[0])[0] if _is_u32(nsid, "a link netnsid") else None,
                   _text(buf[alias[0]:alias[1]]) if alias is not None else None,
                   kind, stp, vxlan, port_state)


def _addr(buf: bytes, offset: int, end: int) -> AddrMsg:
    if end - offset < _IFADDR.size:
        raise _short("an address", offset, end, _IFADDR.size)
    family, prefixlen, _, _, index = _IFADDR.unpack_from(buf, offset)
    local, address = wanted_attrs(buf, offset + _IFADDR.size, end, _ADDR_SLOTS, 2)
    value = local if local is not None and local[1] > local[0] else address
    raw = buf[value[0]:value[1]] if value is not None else b""
    sizes = _INET.get(family)  # an IPv4 or IPv6 value and its prefix length fit their family
    if sizes is not None and (prefixlen > sizes[1] or raw and len(raw) != sizes[0]):
        raise _bad_inet(family, raw or None, prefixlen, "an address")
    return AddrMsg(index, family, prefixlen, raw)


def _route(buf: bytes, offset: int, end: int) -> RouteMsg:
    if end - offset < _RTMSG.size:
        raise _short("a route", offset, end, _RTMSG.size)
    family, dst_len, _, _, table, protocol, _, rtype, flags = _RTMSG.unpack_from(buf, offset)
    table32, dst, gateway, oif, priority, multipath = wanted_attrs(buf, offset + _RTMSG.size, end, _ROUTE_SLOTS, 6)
    dst = buf[dst[0]:dst[1]] if dst is not None else None
    gateway = buf[gateway[0]:gateway[1]] if gateway is not None else None
    sizes = _INET.get(family)
    if sizes is not None:
        if dst_len > sizes[1] or dst is not None and len(dst) != sizes[0]:
            raise _bad_inet(family, dst, dst_len, "a route's destination")
        if gateway is not None and len(gateway) != sizes[0]:
            raise _bad_inet(family, gateway, 0, "a route's gateway")
    return RouteMsg(family, dst_len, (_u32_at(buf, table32[0])[0] if _is_u32(table32, "a route table") else 0) or table,
                    protocol, rtype, flags, dst, gateway,
                    _u32_at(buf, oif[0])[0] if _is_u32(oif, "a route's interface") else None,
                    _u32_at(buf, priority[0])[0] if _is_u32(priority, "a route's metric") else 0,
                    multipath is not None)


def _neigh(buf: bytes, offset: int, end: int) -> NeighMsg:
    if end - offset < _NDMSG.size:
        raise _short("a neighbour", offset, end, _NDMSG.size)
    family, ifindex, state, _, _ = _NDMSG.unpack_from(buf, offset)
    a = attrs(buf, offset + _NDMSG.size, end)
    dst = a.get(NDA_DST)
    dst = bytes(dst) if dst is not None else None
    if dst is not None and family == AF_BRIDGE and len(dst) not in (4, 16):  # a VXLAN FDB entry's remote
        raise _wrong_size("a forwarding entry's destination", len(dst), "4 or 16")
    sizes = _INET.get(family)
    if sizes is not None and dst is not None and len(dst) != sizes[0]:
        raise _bad_inet(family, dst, 0, "a neighbour's address")
    return NeighMsg(family, ifindex, state, dst, _mac(a.get(NDA_LLADDR)))


def _nsid(buf: bytes, start: int, end: int) -> int | None:
    if end - start < 4:
        raise _short("a namespace id", start, end, 4)
    value = attrs(buf, start + 4, end).get(NETNSA_NSID)
    if value is not None and len(value) != 4:
        raise _wrong_size("a namespace id", len(value), 4)
    return _S32.unpack(value)[0] if value is not None else None


# -- replies -------------------------------------------------------------------------------

def _bad_header(buf: bytes, offset: int, length: int) -> Malformed:
    size = len(buf)
    if size - offset < _HEADER.size:
        return Malformed(f"{size - offset} stray bytes at the end of a {size}-byte datagram")
    if length < _HEADER.size:
        return Malformed(f"a message header at byte {offset} of a {size}-byte datagram gives a length of {length}")
    return Malformed(f"a message at byte {offset} claims {length} bytes, past the end of its {size}-byte datagram")


def _messages(buf: bytes):
    """(offset, end, type, flags, sequence, port) of each message of a datagram, in order;
    Malformed for a header that is cut short or claims bytes past the datagram's end."""
    size, offset, unpack = len(buf), 0, _HEADER.unpack_from
    while offset < size:
        if size - offset < 16:
            raise _bad_header(buf, offset, 0)
        length, kind, flags, seq, port = unpack(buf, offset)
        end = offset + length
        if length < 16 or end > size:
            raise _bad_header(buf, offset, length)
        yield offset, end, kind, flags, seq, port
        offset = (end + 3) & ~3


def refusal(buf: bytes, start: int, end: int, flags: int) -> NetlinkError | None:
    """An NLMSG_ERROR body: None for an acknowledgement, else the refusal with the kernel's text.

    After the error code comes the request: its header only when the reply is capped
    (NLM_F_CAPPED), else the whole request, padded; then the extended-ack attributes."""
    if end - start < _ERRMSG_SIZE:
        raise _short("an error", start, end, _ERRMSG_SIZE)
    error = _S32.unpack_from(buf, start)[0]
    if not -MAX_ERRNO <= error <= 0:
        raise Malformed(f"an error message carries the code {error}")
    message = ""
    if flags & F_ACK_TLVS:
        if flags & F_CAPPED:
            inner = start + _ERRMSG_SIZE
        else:
            request_length = _U32.unpack_from(buf, start + 4)[0]
            inner = start + 4 + _pad(request_length)
            if request_length < _HEADER.size or inner > end:
                raise Malformed(f"an error message quotes a request of {request_length} bytes in {end - start - 4}")
        message = _str(attrs(buf, inner, end).get(NLMSGERR_ATTR_MSG)) or ""
    return NetlinkError(-error, message) if error else None


def _done(buf: bytes, start: int, end: int, flags: int) -> None:
    """An NLMSG_DONE body: the dump's own error code, then (NLM_F_ACK_TLVS) the extended ack."""
    if end - start < 4:
        raise _short("a dump's end", start, end, 4)
    error = _S32.unpack_from(buf, start)[0]
    if not -MAX_ERRNO <= error <= 0:
        raise Malformed(f"a dump's end carries the code {error}")
    if error:
        message = ""
        if flags & F_ACK_TLVS:
            message = _str(attrs(buf, start + 4, end).get(NLMSGERR_ATTR_MSG)) or ""
        raise DumpFailed(-error, message)


def dump_datagram(buf: bytes, seq: int, reply_type: int, parse: Callable, out: list, interrupted: bool) -> tuple[bool, bool]:
    """Parse one datagram of the dump `seq` into `out`: (whether it held the dump's end, whether
    the dump was interrupted, now or before). Once interrupted, messages are checked, not parsed:
    the dump is read to its end only to be done again. Raises NetlinkError when the dump failed
    (a refusal, or an error at its end), Malformed for a reply that breaks the format."""
    if not buf:
        raise Malformed("an empty datagram")
    size = len(buf)
    for offset, end, kind, flags, msg_seq, _ in _messages(buf):
        if msg_seq == seq:
            if flags & F_DUMP_INTR:
                interrupted = True
            if kind == reply_type:
                if not interrupted:
                    out.append(parse(buf, offset + 16, end))
            elif kind == NLMSG_DONE:
                _done(buf, offset + 16, end, flags)
                if _pad(end) < size:  # the kernel puts the end last in its datagram
                    raise Malformed(f"{size - _pad(end)} bytes after the end of the dump")
                return True, interrupted
            elif kind == NLMSG_ERROR:
                error = refusal(buf, offset + 16, end, flags)
                raise error if error is not None else Malformed("an acknowledgement where a dump was expected")
            else:
                raise Malformed(f"a message of type {kind} in a dump of type {reply_type}")
    return False, interrupted


PENDING = object()  # answer(): nothing for this request in the datagram


def answer(buf: bytes, seq: int, reply_type: int | None, parse: Callable | None):
    """The answer to request `seq` in this datagram, or PENDING. With reply_type None (an
    acknowledged request) the answer is None: acknowledged; else the parsed object of that type.
    Raises NetlinkError for a refusal, Malformed for a reply that breaks the format."""
    if not buf:
        raise Malformed("an empty datagram")
    for offset, end, kind, flags, msg_seq, _ in _messages(buf):
        if msg_seq == seq:
            if kind == NLMSG_ERROR:
                error = refusal(buf, offset + 16, end, flags)
                if error is not None:
                    raise error
                if reply_type is not None:
                    raise Malformed("an acknowledgement where an object was expected")
                return None
            if kind != reply_type or parse is None:
                raise Malformed(f"a message of type {kind} in answer to a request"
                                + (f" for type {reply_type}" if reply_type is not None else " to be acknowledged"))
            return parse(buf, offset + 16, end)
    return PENDING


# -- notifications -------------------------------------------------------------------------

RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 24, 25, 28, 29
_NOTIFIED = {RTM_NEWLINK: _link, RTM_DELLINK: _link, RTM_NEWADDR: _addr, RTM_DELADDR: _addr,
             RTM_NEWROUTE: _route, RTM_DELROUTE: _route, RTM_NEWNEIGH: _neigh, RTM_DELNEIGH: _neigh}


def notifications(buf: bytes) -> list[tuple[int, int, int, object]]:
    """The (message type, sequence, port, parsed message) of each message of one datagram read
    from a multicast socket. A notification carries the sequence and port of the request that
    caused it (the kernel's own have 0), so only the reader can tell its own dump's replies.
    Other types (a dump's end) are skipped."""
    out = []
    for offset, end, kind, _, msg_seq, port in _messages(buf):
        parse = _NOTIFIED.get(kind)
        # a bridge's news of its port (AF_BRIDGE: STP state, flags) is not news of the interface
        bridge_port = parse is _link and end - offset > 16 and buf[offset + 16] == AF_BRIDGE
        if parse is not None and not bridge_port:
            out.append((kind, msg_seq, port, parse(buf, offset + 16, end)))
    return out
