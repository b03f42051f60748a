"""trace's pieces from data: the kernel's NFT_MSG_TRACE messages decoded, rule handles read from
a listing, the temporary tables' text. No root."""

from __future__ import annotations

import ipaddress
import struct

from topoctl.core.probes import Probe
from topoctl.kernel.tracing import _rules_by_handle, decode_trace, trace_tables
from topoctl.spec.model import Place


def attr(kind: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + b"\0" * ((4 - len(data) % 4) % 4)


def trace_message(family: int, table: str, chain: str, kind: int, handle: int | None, verdict: int | None) -> bytes:
    body = attr(1, table.encode() + b"\0") + attr(2, chain.encode() + b"\0") + attr(4, struct.pack("!I", kind))
    body += attr(6, struct.pack("!I", 0xABCD))
    if handle is not None:
        body += attr(3, struct.pack("!Q", handle))
    if verdict is not None:
        body += attr(5 | 0x8000, attr(1, struct.pack("!i", verdict)))
    body += attr(10, struct.pack("!I", 7))
    nfgen = struct.pack("!BBH", family, 0, 0)
    header = struct.pack("=IHHII", 16 + len(nfgen) + len(body), (10 << 8) | 17, 0, 0, 0)
    return header + nfgen + body


def test_a_rule_that_drops_and_a_chain_policy_are_decoded():
    event = decode_trace("ns1", trace_message(1, "evil", "input", 3, 4, 0))
    assert (event.scope, event.family, event.table, event.chain, event.kind, event.handle, event.verdict,
            event.iif, event.trace_id) == ("ns1", "inet", "evil", "input", "rule", 4, "drop", 7, 0xABCD)
    policy = decode_trace(None, trace_message(7, "topoctl-x", "forward", 1, None, 1))
    assert (policy.family, policy.kind, policy.verdict, policy.handle) == ("bridge", "policy", "accept", None)
    assert decode_trace(None, trace_message(2, "t", "c", 3, 1, -1)).verdict == "continue"
    assert decode_trace(None, b"\0" * 12) is None
    other = bytearray(trace_message(1, "t", "c", 1, 1, 1))
    other[4:6] = struct.pack("=H", (10 << 8) | 6)  # NFT_MSG_NEWRULE: not a trace
    assert decode_trace(None, bytes(other)) is None


def test_rule_texts_are_found_by_their_handle():
    listing = """table inet evil { # handle 12
\tchain input { # handle 1
\t\ttype filter hook input priority filter; policy accept;
\t\ticmp type echo-request drop # handle 4
\t}
}
table bridge topoctl-d { # handle 13
\tchain forward { # handle 1
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname "veth-a" oifname "veth-b" drop # handle 2
\t}
}
"""
    assert _rules_by_handle(listing) == {("inet", "evil", 4): "icmp type echo-request drop",
                                         ("bridge", "topoctl-d", 2): 'iifname "veth-a" oifname "veth-b" drop'}


def test_the_trace_tables_mark_only_the_probe_both_ways():
    icmp = Probe("asked", "icmp", Place("h", "a"), "a", ipaddress.ip_address("10.0.0.2"), "b")
    text = trace_tables(icmp, 4242, 45000, bridges=True)
    assert text.count("icmp id 4242 meta nftrace set 1") == 3  # inet pre, inet out, bridge pre
    assert text.count("ether type arp meta nftrace set 1") == 1  # and ARP on bridges
    assert "type filter hook prerouting priority -400" in text and "table bridge topoctltrace_" in text
    tcp = Probe("asked", "tcp", Place("h", "a"), "a", ipaddress.ip_address("fd00::2"), "b", port=80)
    text = trace_tables(tcp, 1, 45000, bridges=False)
    assert "th sport 45000 meta nftrace set 1" in text and "th dport 45000 meta nftrace set 1" in text
    assert "table bridge" not in text
