"""Raw rtnetlink bytes for the codec's tests: message builders, the captured dumps in data/, and a
fake socket that answers each request with the datagrams a test gives it. No root, no socket."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from topoctl.kernel import rtnl

DATA = Path(__file__).parent / "data"
HEADER = struct.Struct("=IHHII")


def load(name: str) -> list[bytes]:
    """A captured reply: datagrams as the kernel sent them, each after its u32 length (seq 1)."""
    data, grams, offset = (DATA / name).read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        grams.append(data[offset + 4: offset + 4 + length])
        offset += 4 + length
    return grams


def message(kind: int, body: bytes = b"", seq: int = 1, flags: int = rtnl.F_MULTI, length: int | None = None) -> bytes:
    """One message, padded; `length` overrides the header's length field (to lie)."""
    size = 16 + len(body)
    return HEADER.pack(size if length is None else length, kind, flags, seq, 4242) + body + b"\0" * (-size % 4)


def done(seq: int = 1, error: int = 0, text: str | None = None, flags: int = rtnl.F_MULTI) -> bytes:
    body = struct.pack("=i", error)
    if text is not None:
        flags |= rtnl.F_ACK_TLVS
        body += rtnl.attr_str(rtnl.NLMSGERR_ATTR_MSG, text)
    return message(rtnl.NLMSG_DONE, body, seq, flags)


def ack(seq: int = 1, error: int = 0, request: bytes | None = None, text: str | None = None,
        capped: bool = False) -> bytes:
    """An NLMSG_ERROR: the code, then the request (whole, or only its header when capped)."""
    request = request if request is not None else HEADER.pack(36, rtnl.RTM_NEWLINK, 5, seq, 0) + b"\0" * 20
    flags = rtnl.F_CAPPED if capped else 0
    body = struct.pack("=i", error) + (request[:16] if capped else request + b"\0" * (-len(request) % 4))
    if text is not None:
        flags |= rtnl.F_ACK_TLVS
        body += rtnl.attr_str(rtnl.NLMSGERR_ATTR_MSG, text)
    return message(rtnl.NLMSG_ERROR, body, seq, flags)


def link_body(index: int, name: str, *extra: bytes, mtu: int = 1500) -> bytes:
    return (struct.pack("=BxHiII", 0, 1, index, 1, 0) + rtnl.attr_str(rtnl.IFLA_IFNAME, name)
            + rtnl.attr_u32(rtnl.IFLA_MTU, mtu) + b"".join(extra))


def link(index: int, name: str, *extra: bytes, seq: int = 1, flags: int = rtnl.F_MULTI) -> bytes:
    return message(rtnl.RTM_NEWLINK, link_body(index, name, *extra), seq, flags)


def messages(gram: bytes) -> Iterable[tuple[int, int]]:
    """(offset, length) of each well-formed message of a datagram."""
    offset = 0
    while offset + 16 <= len(gram):
        length = HEADER.unpack_from(gram, offset)[0]
        if length < 16 or offset + length > len(gram):
            return
        yield offset, length
        offset += (length + 3) & ~3


def retag(grams: list[bytes], seq: int, set_flags: int = 0, at: int | None = None) -> list[bytes]:
    """The datagrams with every message's seq set to `seq`; `set_flags` or'ed into the flags of
    message number `at` counting across datagrams (every message when `at` is None)."""
    out, count = [], 0
    for gram in grams:
        gram = bytearray(gram)
        for offset, _ in messages(gram):
            struct.pack_into("=I", gram, offset + 8, seq)
            if set_flags and (at is None or at == count):
                flags = struct.unpack_from("=H", gram, offset + 6)[0]
                struct.pack_into("=H", gram, offset + 6, flags | set_flags)
            count += 1
        out.append(bytes(gram))
    return out


Reply = Callable[[int, bytes], list[bytes]]  # (the request's seq, the request) -> datagrams


class FakeSocket:
    """Answers the n-th request sent with replies[n] (datagrams, or a function of the request).
    An empty queue reads as SO_RCVTIMEO expiring; each send notes what was still queued."""

    def __init__(self, *replies: list[bytes] | Reply, refuse_strict: bool = False) -> None:
        self.replies = list(replies)
        self.queue: list[bytes] = []
        self.sent: list[bytes] = []
        self.queued_at_send: list[int] = []
        self.options: dict[tuple[int, int], object] = {}
        self.refuse_strict = refuse_strict
        self.recv_error: OSError | None = None
        self.closed = False

    def setsockopt(self, level: int, option: int, value) -> None:
        if self.refuse_strict and (level, option) == (rtnl.SOL_NETLINK, rtnl.NETLINK_GET_STRICT_CHK):
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        self.options[(level, option)] = value

    def bind(self, address) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        self.queued_at_send.append(len(self.queue))
        reply = self.replies.pop(0) if self.replies else []
        seq = HEADER.unpack_from(data)[3]
        self.queue.extend(reply(seq, bytes(data)) if callable(reply) else reply)
        return len(data)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        if self.recv_error is not None:
            raise self.recv_error
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        gram = self.queue.pop(0)
        buffer[:len(gram)] = gram
        return len(gram)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return self.queue.pop(0)[:size]


def handle(*replies: list[bytes] | Reply, **options) -> tuple[rtnl.Rtnl, FakeSocket]:
    sock = FakeSocket(*replies, **options)
    return rtnl.Rtnl(sock), sock
