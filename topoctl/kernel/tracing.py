"""`topoctl trace`: one probe sent with nftables tracing on along its path, and the kernel's
trace events read back (the modern form of `iptables -t raw -j TRACE`).

In each namespace on the path a temporary table `topoctltrace_<pid>` (inet, and bridge where
there is a bridge) sets `meta nftrace set 1` at the earliest priority of prerouting and output
for the probe's packets only (its ICMP id, or its TCP/UDP source port either way). Every
table's rules then report what they did to the packet as NFT_MSG_TRACE messages on the
namespace's NFNLGRP_NFTRACE netlink group, which a socket opened in that namespace reads. The
tables are always removed: in a `finally`, and tables of a trace whose process is gone are
removed by the next trace.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import struct
import time
from dataclasses import replace

from topoctl.core.probes import ICMP, TCP, Probe
from topoctl.core.traces import TRACE_PREFIX, TraceEvent, Traced
from topoctl.core.state import Scope
from topoctl.kernel import namespaces as ns
from topoctl.kernel import nft
from topoctl.kernel.probing import RESEND, echo_packet, parse_icmp

NETLINK_NETFILTER = 12
NFNLGRP_NFTRACE = 9
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_TRACE = 17
_FAMILY = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
_TYPE = {0: "packet", 1: "policy", 2: "return", 3: "rule"}  # enum nft_trace_types
_VERDICT = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}


def _attributes(data: bytes) -> dict[int, bytes]:
    found, offset = {}, 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def decode_trace(scope: Scope, message: bytes) -> TraceEvent | None:
    """One netlink message (header included) -> a trace event, or None if it is not one."""
    if len(message) < 20:
        return None
    _, kind = struct.unpack_from("=IH", message, 0)
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE:
        return None
    family = message[16]
    attrs = _attributes(message[20:])

    def text(key: int) -> str:
        return attrs.get(key, b"").split(b"\0", 1)[0].decode(errors="replace")

    def u32(key: int) -> int | None:
        return struct.unpack("!I", attrs[key][:4])[0] if len(attrs.get(key, b"")) >= 4 else None

    verdict = target = None
    if 5 in attrs:
        nested = _attributes(attrs[5])
        if len(nested.get(1, b"")) >= 4:
            code = struct.unpack("!i", nested[1][:4])[0]
            verdict = _VERDICT.get(code, str(code))
        if 2 in nested:
            target = nested[2].split(b"\0", 1)[0].decode(errors="replace")
    if verdict is None and u32(16) is not None:  # NFTA_TRACE_POLICY: a chain's policy verdict
        verdict = _VERDICT.get(u32(16), str(u32(16)))
    handle = struct.unpack("!Q", attrs[3][:8])[0] if len(attrs.get(3, b"")) >= 8 else None
    return TraceEvent(scope, u32(6) or 0, _FAMILY.get(family, str(family)), text(1), text(2),
                      _TYPE.get(u32(4) or 0, str(u32(4))), handle, verdict, target, u32(10), u32(12),
                      transport=attrs.get(9, b"")[:8])


def in_path_order(events: list[TraceEvent], scopes: list[Scope], probe: Probe, sport: int) -> list[TraceEvent]:
    """The events of each namespace in the order the packets met them: the probe's way there
    through the scopes in path order, then the reply's way back in the reverse order. (The
    kernel gives events no time; within one namespace they come in order. A traversal's first
    event carries its transport header: an echo request, or our source port, goes there.)
    Rule events without a rule (the end of a chain that falls through to its policy) are left out."""
    direction: dict[tuple, bool] = {}
    for event in events:
        key = (event.scope, event.trace_id)
        if key not in direction and event.transport:
            if probe.kind == ICMP:
                direction[key] = event.transport[0] not in (8, 128)
            else:
                direction[key] = len(event.transport) >= 2 and struct.unpack("!H", event.transport[:2])[0] != sport
    kept = [replace(e, reply=direction.get((e.scope, e.trace_id), False)) for e in events
            if not (e.kind == "rule" and e.handle is None)]
    order = {scope: i for i, scope in enumerate(scopes)}
    there = [e for e in kept if not e.reply]
    back = [e for e in kept if e.reply]
    there.sort(key=lambda e: order.get(e.scope, len(order)))  # stable: a namespace's own order is kept
    back.sort(key=lambda e: -order.get(e.scope, -1))
    return there + back


def _matches(probe: Probe, ident: int, sport: int) -> list[str]:
    """What marks the probe's packets, both ways: its ICMP id, or its source port."""
    if probe.kind == ICMP:
        return [f"icmp id {ident}" if probe.target.version == 4 else f"icmpv6 id {ident}"]
    return [f"meta l4proto {probe.kind} th sport {sport}", f"meta l4proto {probe.kind} th dport {sport}"]


def trace_tables(probe: Probe, ident: int, sport: int, bridges: bool) -> str:
    """The nft text of the temporary tables of one namespace."""
    name = f"{TRACE_PREFIX}{os.getpid()}"
    rules = "".join(f"    {m} meta nftrace set 1\n" for m in _matches(probe, ident, sport))
    text = (f"table inet {name} {{\n"
            f"  chain pre {{\n    type filter hook prerouting priority -400; policy accept;\n{rules}  }}\n"
            f"  chain out {{\n    type filter hook output priority -400; policy accept;\n{rules}  }}\n}}\n")
    if bridges:
        # and ARP, on bridges: a next hop that is never resolved (icc, a port down) stops the probe there
        arp = "    ether type arp meta nftrace set 1\n" if probe.target.version == 4 else ""
        text += (f"table bridge {name} {{\n"
                 f"  chain pre {{\n    type filter hook prerouting priority -400; policy accept;\n{rules}{arp}  }}\n}}\n")
    return text


_HANDLE = re.compile(r"^(?P<rule>.*?)\s+# handle (?P<handle>\d+)$")


def _rules_by_handle(listing: str) -> dict[tuple[str, str, int], str]:
    """`nft -a list ruleset` -> {(family, table, handle): rule text}."""
    found, family, table = {}, None, None
    for raw in listing.splitlines():
        line = raw.strip()
        words = line.split()
        if len(words) >= 3 and words[0] == "table":
            family, table = words[1], words[2]
            continue
        match = _HANDLE.match(line)
        if match and family and not line.startswith(("chain ", "table ", "set ", "map ")):
            found[(family, table, int(match["handle"]))] = match["rule"]
    return found


def stale_tables(scopes: list[Scope]) -> None:
    """Remove the trace tables of traces whose process is gone (killed with SIGKILL)."""
    steps = [(scope, "list tables") for scope in scopes]
    listings, _ = nft.run_in_each(steps)
    removals = []
    for (scope, _), listing in zip(steps, listings):
        for line in listing.splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "table" and words[2].startswith(TRACE_PREFIX):
                pid = words[2][len(TRACE_PREFIX):]
                if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                    removals.append((scope, f"delete table {words[1]} {words[2]}"))
    nft.run_in_each(removals)


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))  # a port id first: an unbound netlink socket gets no multicast
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setblocking(False)
    return sock


def trace(probe: Probe, source: Scope, scopes: list[Scope], bridge_scopes: set[Scope], listen: Scope | None,
          deadline: float = 2.0) -> Traced:
    """Send the probe from `source` with tracing on in `scopes`; what came back, and the events."""
    ident = secrets.randbelow(0xFFFF) + 1
    sport = 40000 + secrets.randbelow(20000)
    stale_tables(scopes)
    name = f"{TRACE_PREFIX}{os.getpid()}"
    written: list[Scope] = []
    sockets: dict[Scope, socket.socket] = {}
    try:
        steps = [(scope, trace_tables(probe, ident, sport, scope in bridge_scopes)) for scope in scopes]
        done, failed = nft.run_in_each(steps)
        written = scopes[:len(done)]
        if failed is not None:
            from topoctl.errors import KernelError
            raise KernelError(f"cannot write the trace table in {failed[0] or 'the root namespace'}: {failed[1]}",
                              "the kernel needs nf_tables with tracing (nft_meta)")
        for scope in scopes:
            sockets[scope] = ns.run_in_netns(scope, _listen)
        reached, detail = _send(probe, source, listen, ident, sport, deadline)
        time.sleep(0.05)  # the last events of the reply
        events = []
        for scope, sock in sockets.items():
            events += _drain(scope, sock)
        events = in_path_order(events, scopes, probe, sport)
        listings, _ = nft.run_in_each([(scope, "list ruleset") for scope in scopes], flags=nft.OUTPUT_HANDLE)
        rules = {}
        for scope, listing in zip(scopes, listings):
            rules.update({(scope, *key): text for key, text in _rules_by_handle(listing).items()})
        return Traced(reached, detail, tuple(events), rules)
    finally:
        for sock in sockets.values():
            sock.close()
        nft.run_in_each([(scope, f"delete table inet {name}") for scope in written])
        nft.run_in_each([(scope, f"delete table bridge {name}") for scope in written if scope in bridge_scopes])


def _drain(scope: Scope, sock: socket.socket) -> list[TraceEvent]:
    events = []
    while True:
        try:
            data = sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return events
        except OSError as err:
            if err.errno == errno.ENOBUFS:
                continue  # events lost to a full buffer: the rest still come
            return events
        offset = 0
        while offset + 16 <= len(data):
            length = struct.unpack_from("=I", data, offset)[0]
            if length < 16:
                break
            event = decode_trace(scope, data[offset:offset + length])
            if event is not None:
                events.append(event)
            offset += (length + 3) & ~3


def _send(probe: Probe, source: Scope, listen: Scope | None, ident: int, sport: int, deadline: float) -> tuple[bool, str]:
    """One exchange: an echo with our id, or a connection/datagram from our source port."""
    family = socket.AF_INET if probe.target.version == 4 else socket.AF_INET6
    started = time.monotonic()
    if probe.kind == ICMP:
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        sock = ns.run_in_netns(source, lambda: socket.socket(family, socket.SOCK_RAW, proto))
        try:
            sock.settimeout(0.05)
            echo = echo_packet(probe.target.version, ident, 1, b"topoctl-trace".ljust(56, b"\0"))
            error, resend = None, True
            while time.monotonic() - started < deadline:
                if resend:  # once, and again after an error only: a neighbour left FAILED answers so at first
                    with contextlib.suppress(OSError):
                        sock.sendto(echo, (str(probe.target), 0))
                    resend = False
                try:
                    data, peer = sock.recvfrom(65535)
                except socket.timeout:
                    continue
                parsed = parse_icmp(probe.target.version, data, peer[0])
                if parsed is not None and parsed[1] == ident:
                    if parsed[0] == "reply":
                        return True, "reply"
                    error, resend = parsed[0], True
                    time.sleep(RESEND)
            return False, error or f"no reply within {deadline:.1f} s"
        finally:
            sock.close()
    kind = socket.SOCK_STREAM if probe.kind == TCP else socket.SOCK_DGRAM
    server = None
    if listen is not None:
        server = ns.run_in_netns(listen, lambda: _server(kind, probe.listen[1]))
    sock = ns.run_in_netns(source, lambda: socket.socket(family, kind))
    try:
        sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", sport))
        sock.settimeout(deadline)
        try:
            if probe.kind == TCP:
                sock.connect((str(probe.target), probe.port))
                return True, "connected"
            sock.sendto(b"topoctl-trace", (str(probe.target), probe.port))
            if server is not None:
                server.settimeout(deadline)
                data, peer = server.recvfrom(64)
                server.sendto(data, peer)
            sock.recv(64)
            return True, "answered"
        except socket.timeout:
            return False, f"no answer within {deadline:.1f} s"
        except OSError as err:
            return False, err.strerror or str(err)
    finally:
        sock.close()
        if server is not None:
            server.close()


def _server(kind: int, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("::", port))
    except OSError:
        sock.close()
        return None  # taken: the application answers
    if kind == socket.SOCK_STREAM:
        sock.listen(8)
    return sock

