"""topoctl.kernel.tc without the kernel: its requests, decoded by pyroute2's stock classes (the
oracle); a captured qdisc dump (data/qdiscs.bin) read through Rtnl on a fake socket; replies that
break the format fail closed; pyroute2 is imported only when tc is used. No root.

data/qdiscs.bin is `RTM_GETQDISC` dumped in a namespace with, by interface index: 1 lo
(noqueue), 2 veth0 (tbf 100gbit burst 32kb latency 50ms, made by tc 6.1, and an ingress
qdisc), 3 cap2 (tbf 10mbit burst 1514 latency 50ms peakrate 20mbit mtu 1514), 4 cap1 (tbf 1:
1mbit burst 10kb latency 50ms, with a pfifo 10: as its child)."""

from __future__ import annotations

import errno
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topoctl.errors import KernelError
from topoctl.kernel import rtnl, tc
from topoctl.kernel.rtnl import Malformed, NetlinkError
from topoctl.spec import rates

from .nlfake import ack, done, handle, load, message, retag

ROOT = Path(__file__).resolve().parents[2]
TCMSG = struct.Struct("=BBHiIII")


def _request_body(sock) -> bytes:
    return sock.sent[-1][16:]


def _oracle(body: bytes):
    """The request as pyroute2's own tcmsg class decodes it."""
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    msg = tcmsg(struct.pack("=IHHII", 16 + len(body), tc.RTM_NEWQDISC, 0, 1, 0) + body)
    msg.decode()
    return msg


@pytest.mark.parametrize("rate, burst, latency", [
    (10_000_000, 32768, 50),
    (10_000_000, 1514, 50),
    (8 * (2**32 - 1), 1 << 20, 50),  # the last rate without TCA_TBF_RATE64
    (10**11, 32768, 50),  # 12.5 GB/s: TCA_TBF_RATE64
    (1_000_000, 3028, 0),
])
def test_replace_request_as_pyroute2_reads_it(rate, burst, latency):
    handle_, sock = handle(lambda seq, req: [ack(seq)])
    limit = rates.tbf_limit(rate, burst, latency)
    tc.replace_tbf(handle_, 7, rate, burst, limit)
    kind, flags = struct.unpack_from("=HH", sock.sent[-1], 4)
    assert kind == tc.RTM_NEWQDISC and flags & rtnl.F_CREATE and flags & rtnl.F_REPLACE and flags & rtnl.F_ACK
    msg = _oracle(_request_body(sock))
    assert (msg["index"], msg["handle"], msg["parent"]) == (7, 0, tc.TC_H_ROOT)
    assert msg.get_attr("TCA_KIND") == "tbf"
    options = msg.get_attr("TCA_OPTIONS")
    parms = options.get_attr("TCA_TBF_PARMS")
    assert parms["rate"] == min(rate // 8, rates.U32)
    assert parms["limit"] == limit
    assert parms["buffer"] == rates.tc_ticks(rate, burst)
    assert parms["rate___reserved"] == tc.TC_LINKLAYER_ETHERNET  # the link layer: no rate table needed
    assert parms["peak"] == 0 and parms["mtu"] == 0
    # what pyroute2's own map lacks, read here with the whole map
    ours = tc._options_class()(bytes(options.data[options.offset:options.offset + options.length]))
    ours.decode()
    assert ours.get_attr("TCA_TBF_BURST") == burst
    assert ours.get_attr("TCA_TBF_RATE64") == (rate // 8 if rate // 8 > rates.U32 else None)
    assert ours.get_attr("TCA_TBF_RTAB") is None


def test_delete_request_and_nothing_there():
    handle_, sock = handle(lambda seq, req: [ack(seq)],
                           lambda seq, req: [ack(seq, -errno.ENOENT, req, "Cannot delete qdisc with handle of zero")],
                           lambda seq, req: [ack(seq, -errno.EINVAL, req)])
    assert tc.delete_root_qdisc(handle_, 3) is True
    kind = struct.unpack_from("=H", sock.sent[-1], 4)[0]
    assert kind == tc.RTM_DELQDISC
    assert TCMSG.unpack_from(sock.sent[-1], 16) == (0, 0, 0, 3, 0, tc.TC_H_ROOT, 0)
    assert tc.delete_root_qdisc(handle_, 3) is False
    with pytest.raises(NetlinkError):
        tc.delete_root_qdisc(handle_, 3)  # EINVAL is no "nothing there"


def test_captured_dump():
    grams = load("qdiscs.bin")
    handle_, sock = handle(lambda seq, req: retag(grams, seq))
    found = tc.root_qdiscs(handle_)
    assert found == {
        2: tc.tbf_for(10**11, 32768, 50),  # 100gbit: TCA_TBF_RATE64, a bucket of 40 ticks (32000 bytes)
        3: tc.OtherQdisc("tbf", 0x82710000, "with a peak rate (or its mtu)"),
        4: tc.tbf_for(10**6, 10240, 50),
    }
    assert found[2] == tc.Tbf(10**11, 32000, 625_032_768)
    kind, flags = struct.unpack_from("=HH", sock.sent[-1], 4)
    assert kind == tc.RTM_GETQDISC and flags & rtnl.F_DUMP == rtnl.F_DUMP


def _qdisc_message(seq: int, *attributes: bytes, index: int = 2, handle_: int = 0x80010000,
                   parent: int = tc.TC_H_ROOT) -> bytes:
    return message(tc.RTM_NEWQDISC, TCMSG.pack(0, 0, 0, index, handle_, parent, 0) + b"".join(attributes), seq)


def _tbf_options(parms_size: int = 36) -> bytes:
    good = tc.tbf_options(10_000_000, 32768, 95268)
    if parms_size == 36:
        return good
    payload = good[4:]
    plen = struct.unpack_from("=H", payload, 0)[0]  # TCA_TBF_PARMS comes first
    parms = struct.pack("=HH", 4 + parms_size, 1) + payload[4:plen][:parms_size].ljust(parms_size, b"\0")
    return struct.pack("=HH", 4 + len(parms), tc.TCA_OPTIONS) + parms


@pytest.mark.parametrize("attributes, why", [
    ((), "without its kind"),
    ((rtnl.attr_str(tc.TCA_KIND, "tbf"),), "without its options"),
    ((rtnl.attr_str(tc.TCA_KIND, "tbf"), _tbf_options(20)), "TCA_TBF_PARMS of 36 bytes"),
    ((rtnl.attr_str(tc.TCA_KIND, "tbf"), _tbf_options(40)), "TCA_TBF_PARMS of 36 bytes"),
    ((rtnl.attr_str(tc.TCA_KIND, "tbf"), rtnl.attr(tc.TCA_OPTIONS, b"\x03\x00\x01\x00")), "could not be decoded|36 bytes"),
])
def test_malformed_replies_fail_closed(attributes, why):
    handle_, _ = handle(lambda seq, req: [_qdisc_message(seq, *attributes), done(seq)])
    with pytest.raises(KernelError, match=why):
        tc.root_qdiscs(handle_)


def test_what_is_not_a_root_of_its_own_is_skipped_unread():
    # a child, ingress and the kernel's default (handle 0) are not parsed at all: no kind needed
    handle_, _ = handle(lambda seq, req: [_qdisc_message(seq, parent=0x10001) + _qdisc_message(seq, parent=0xFFFFFFF1)
                                          + _qdisc_message(seq, handle_=0), done(seq)])
    assert tc.root_qdiscs(handle_) == {}
    with pytest.raises(Malformed):
        tc._root_qdisc(b"\0" * 12, 0, 12)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_dump_raises_only_kernel_errors(data):
    gram = bytearray(load("qdiscs.bin")[0])
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(16, len(gram) - 1))
        gram[at] = data.draw(st.integers(0, 255))
    handle_, _ = handle(lambda seq, req: retag([bytes(gram), done(seq)], seq))
    try:
        found = tc.root_qdiscs(handle_)
    except KernelError:
        return
    for value in found.values():
        assert isinstance(value, (tc.Tbf, tc.OtherQdisc))


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fuzzed_options_decode_to_numbers_or_fail_closed(data):
    # pyroute2's decoder never raises: what is not the kernel's layout must be caught here
    payload = bytearray(tc.tbf_options(10**11, 32768, 95268)[4:])
    for _ in range(data.draw(st.integers(1, 8))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        payload = payload[:data.draw(st.integers(0, len(payload)))]
    try:
        value = tc._decode_tbf(bytes(payload), 1)
    except Malformed:
        return
    if isinstance(value, tc.Tbf):
        assert all(type(field) is int for field in (value.rate, value.burst, value.limit)), value
    else:
        assert isinstance(value, tc.OtherQdisc)


def test_pyroute2_is_imported_only_when_used():
    code = ("import sys; import topoctl.kernel.tc as tc; a = 'pyroute2' in sys.modules; "
            "tc.tbf_options(10**7, 32768, 95268); print(a, 'pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["False", "True"]


def test_tbf_for_is_the_canonical_form():
    assert tc.tbf_for(10_000_001, 32768) == tc.Tbf(10_000_000, 32768, 62_500 + 32768)
    assert tc.tbf_for(10**11, 32768) == tc.Tbf(10**11, 32000, 625_000_000 + 32768)
