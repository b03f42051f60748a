"""A fuzz of the codec's reply path over mutated captured replies (data/): bit flips,
truncations, length-field edits, splices, datagrams dropped, repeated or swapped, and edits
that keep the framing consistent so that the decoder's inner checks are reached: a message cut
short (its length field and its datagram both shortened), an attribute resized (its value grown
or shrunk, its length and its message's fixed up), an attribute's value or a fixed header's
word overwritten. Whatever the
bytes, the only exception out is a KernelError (and, for a request, the NetlinkError of a
refusal), raised by an explicit check, not by the decoder's last-resort net; what decodes is
well-formed (values of the right size for their family, as observe.py builds objects from them).

TOPOCTL_FUZZ_EXAMPLES sets the number of inputs (a modest default, for CI); run with -s to see
how many were tried and how they ended."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topoctl.kernel import rtnl
from topoctl.errors import KernelError

from .nlfake import FakeSocket, load, messages

EXAMPLES = int(os.environ.get("TOPOCTL_FUZZ_EXAMPLES", "300"))


def _lookup_reply() -> list[bytes]:
    """The captured br0 message, as the answer to a lookup by name (not part of a dump)."""
    gram = load("links.bin")[0]
    offset, length = list(messages(gram))[1]
    one = bytearray(gram[offset:offset + length])
    struct.pack_into("=H", one, 6, 0)
    return [bytes(one)]


READS = {
    "links": (load("links.bin"), lambda h: h.links()),
    "addresses": (load("addresses.bin"), lambda h: h.addresses()),
    "routes": (load("routes.bin"), lambda h: h.routes()),
    "main routes": (load("routes.bin"), lambda h: h.routes(254)),
    "fdb": (load("fdb.bin"), lambda h: h.neighbours(rtnl.AF_BRIDGE)),
    "uncapped refusal": (load("refusal-uncapped.bin"), lambda h: h.call(rtnl.RTM_NEWLINK, 0, b"")),
    "capped refusal": (load("refusal-capped.bin"), lambda h: h.call(rtnl.RTM_NEWLINK, 0, b"")),
    "lookup": (_lookup_reply(), lambda h: h.link_by_name("br0")),
}
REQUESTS = {"uncapped refusal", "capped refusal", "lookup"}
ALL_GRAMS = [g for grams, _ in READS.values() for g in grams]


def _length_fields(gram: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the length fields in a datagram: message headers' and attributes'."""
    fields = []
    for offset, length in messages(gram):
        fields.append((offset, 4))
        body = offset + 16
        for header in (16, 8, 12):  # ifinfomsg, ifaddrmsg, rtmsg/ndmsg: try each, keep plausible chains
            at = body + header
            while at + 4 <= offset + length:
                size = struct.unpack_from("=H", gram, at)[0]
                if size < 4:
                    break
                fields.append((at, 2))
                at += (size + 3) & ~3
    return fields


BODY = {16: 16, 17: 16, 20: 8, 21: 8, 24: 12, 25: 12, 28: 12, 29: 12}  # fixed header before the attributes


def _cut_message(gram: bytearray, which: int, keep: int) -> None:
    """Message `which` cut to `keep` bytes of body: its length field says so, its bytes go."""
    found = list(messages(bytes(gram)))
    if not found:
        return
    offset, length = found[which % len(found)]
    new = 16 + min(keep, length - 16)
    struct.pack_into("=I", gram, offset, new)
    del gram[offset + ((new + 3) & ~3):offset + ((length + 3) & ~3)]


def _resize_attribute(gram: bytearray, which: int, attribute: int, delta: int, fill: int) -> None:
    """A top-level attribute of message `which` grown or shrunk by `delta` bytes, with its
    length and its message's length fixed up (the rest of the datagram moves with it)."""
    found = [(o, n) for o, n in messages(bytes(gram)) if struct.unpack_from("=H", gram, o + 4)[0] in BODY]
    if not found:
        return
    offset, length = found[which % len(found)]
    spans, at = [], offset + 16 + BODY[struct.unpack_from("=H", gram, offset + 4)[0]]
    while at + 4 <= offset + length:
        size = struct.unpack_from("=H", gram, at)[0]
        if size < 4 or at + size > offset + length:
            return
        spans.append((at, size))
        at += (size + 3) & ~3
    if not spans:
        return
    at, size = spans[attribute % len(spans)]
    new = max(4, size + delta)
    old_total, new_total = (size + 3) & ~3, (new + 3) & ~3
    value = bytes(gram[at + 4:at + size])[:new - 4].ljust(new - 4, bytes((fill,)))
    gram[at:at + old_total] = struct.pack("=HH", new, struct.unpack_from("=H", gram, at + 2)[0]) + value + \
        b"\0" * (new_total - new)
    struct.pack_into("=I", gram, offset, length + new_total - old_total)


def _attributes(gram: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the top-level attributes of every message of a datagram."""
    out = []
    for offset, length in messages(gram):
        kind = struct.unpack_from("=H", gram, offset + 4)[0]
        if kind not in BODY:
            continue
        at = offset + 16 + BODY[kind]
        while at + 4 <= offset + length:
            size = struct.unpack_from("=H", gram, at)[0]
            if size < 4 or at + size > offset + length:
                break
            out.append((at, size))
            at += (size + 3) & ~3
    return out


WORDS = [0, 1, 2, 3, 10, 127, 128, 255, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFF001, 0xFFFFEFFF]


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(READS)))
    grams = [bytearray(g) for g in READS[name][0]]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "length", "splice", "drop", "repeat", "swap",
                                     "cut", "resize", "resize", "value", "word"]))
        i = draw(st.integers(0, len(grams) - 1)) if grams else 0
        if not grams:
            break
        gram = grams[i]
        if kind == "flip" and gram:
            bit = draw(st.integers(0, len(gram) * 8 - 1))
            gram[bit // 8] ^= 1 << (bit % 8)
        elif kind == "truncate":
            del gram[draw(st.integers(0, len(gram))):]
        elif kind == "length":
            fields = _length_fields(bytes(gram)) or [(0, 4)]
            offset, size = draw(st.sampled_from(fields))
            if offset + size <= len(gram):
                old = int.from_bytes(gram[offset:offset + size], "little")
                new = draw(st.one_of(st.sampled_from([0, 1, 3, 4, 5, 15, 16, 17, 20]),
                                     st.integers(max(0, old - 12), old + 12), st.integers(0, 256 ** size - 1)))
                gram[offset:offset + size] = (new % 256 ** size).to_bytes(size, "little")
        elif kind == "splice":
            source = draw(st.sampled_from(ALL_GRAMS))
            start = draw(st.integers(0, len(source)))
            piece = source[start:start + draw(st.integers(0, 64))]
            at = draw(st.integers(0, len(gram)))
            gram[at:at + draw(st.integers(0, 16))] = piece
        elif kind == "cut":  # the last message of a datagram most often: nothing follows it to read instead
            _cut_message(gram, draw(st.one_of(st.just(-1), st.integers(0, 40))), draw(st.integers(0, 40)))
        elif kind == "value":
            found = _attributes(bytes(gram))
            if found:
                at, size = draw(st.sampled_from(found))
                value = draw(st.binary(min_size=size - 4, max_size=size - 4))
                gram[at + 4:at + size] = value
        elif kind == "word":  # a fixed header's field: a family, an index, a prefix length, an error code
            found = list(messages(bytes(gram)))
            if found:
                offset, length = draw(st.sampled_from(found))
                if length >= 20:
                    at = offset + 16 + 4 * draw(st.integers(0, min(3, (length - 20) // 4)))
                    struct.pack_into("=I", gram, at, draw(st.one_of(st.sampled_from(WORDS), st.integers(0, 2 ** 32 - 1))))
        elif kind == "resize":
            _resize_attribute(gram, draw(st.integers(0, 40)), draw(st.integers(0, 40)),
                              draw(st.sampled_from([-8, -4, -3, -2, -1, 1, 2, 4, 8, 12])), draw(st.integers(0, 255)))
        elif kind == "drop":
            del grams[i]
        elif kind == "repeat":
            grams.insert(i, bytearray(gram))
        elif kind == "swap":
            j = draw(st.integers(0, len(grams) - 1))
            grams[i], grams[j] = grams[j], grams[i]
    return name, [bytes(g) for g in grams]


_INET = {socket.AF_INET: (4, 32, ipaddress.IPv4Interface), socket.AF_INET6: (16, 128, ipaddress.IPv6Interface)}


def _well_formed(result) -> None:
    for msg in result if isinstance(result, list) else [result] if result is not None else []:
        if isinstance(msg, rtnl.LinkMsg):
            assert isinstance(msg.name, str) and (msg.mtu is None or 0 <= msg.mtu < 2 ** 32)
            if msg.vxlan is not None:
                assert msg.vxlan[2] is None or len(msg.vxlan[2]) in (4, 16)
                if msg.vxlan[2]:
                    ipaddress.ip_address(msg.vxlan[2])
        elif isinstance(msg, rtnl.AddrMsg) and msg.family in _INET and msg.address:
            size, longest, interface = _INET[msg.family]
            assert len(msg.address) == size and msg.prefixlen <= longest
            interface((int.from_bytes(msg.address, "big"), msg.prefixlen))
        elif isinstance(msg, rtnl.RouteMsg) and msg.family in _INET:
            size, longest, _ = _INET[msg.family]
            assert msg.dst_len <= longest and (msg.dst is None or len(msg.dst) == size)
            assert msg.gateway is None or len(msg.gateway) == size
        elif isinstance(msg, rtnl.NeighMsg) and msg.dst is not None:
            ipaddress.ip_address(msg.dst)


def test_mutated_replies_raise_only_kernel_errors(capsys):
    outcomes: Counter = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated())
    def one(case):
        name, grams = case
        handle = rtnl.Rtnl(FakeSocket(grams))
        try:
            result = READS[name][1](handle)
        except KernelError as err:
            assert "could not be decoded" not in err.message, err.message  # every failure has its own check
            outcomes["KernelError"] += 1
        except rtnl.NetlinkError:
            assert name in REQUESTS  # a refusal is an answer to a request, never the result of a dump
            outcomes["refusal"] += 1
        else:
            _well_formed(result)
            outcomes["decoded"] += 1

    one()
    with capsys.disabled():
        print(f"\nfuzz: {sum(outcomes.values())} mutated replies tried: {dict(outcomes)}")
    assert outcomes["KernelError"] and outcomes["decoded"]
