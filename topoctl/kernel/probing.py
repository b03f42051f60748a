"""Sends the probes of `check`: raw ICMP echoes and TCP/UDP exchanges from sockets opened inside
each namespace (a socket stays in the namespace it was made in), all at once, polled by one
thread against one deadline. No process per probe, and nothing leaves the namespaces the
probes name.

A TCP or UDP probe is answered by a listener check opens on the container port; when the port
is taken (an application listens there), a TCP connection that opens counts, and a UDP probe
needs the application's answer.
"""

from __future__ import annotations

import errno
import os
import secrets
import selectors
import socket
import struct
import time
from typing import Callable

from topoctl.core.kabi import IFF_LOWER_UP, IFF_RUNNING
from topoctl.core.probes import ICMP, TCP, Outcome, Probe
from topoctl.core.state import Scope
from topoctl.kernel import namespaces as ns
from topoctl.errors import TopoctlError
from topoctl.kernel.sockets import Kernel, _allow_descriptors

IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3  # DF set, the cached path MTU ignored
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE, IPV6_DONTFRAG = 23, 3, 62
RESEND = 0.25  # an unanswered echo goes again: a first packet may wait for ARP and be dropped


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_packet(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    kind = 8 if version == 4 else 128
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if version == 6:
        return header + payload  # the kernel fills in an ICMPv6 checksum
    return struct.pack("!BBHHH", kind, 0, _checksum(header + payload), ident, seq) + payload


_UNREACHABLE4 = {0: "net unreachable", 1: "host unreachable", 3: "port unreachable", 4: "fragmentation needed",
                 9: "net prohibited", 10: "host prohibited", 13: "administratively prohibited"}
_UNREACHABLE6 = {0: "no route", 1: "administratively prohibited", 3: "address unreachable", 4: "port unreachable"}


def parse_icmp(version: int, data: bytes, source: str) -> tuple[str, int, int] | None:
    """(what, ident, seq) of an echo reply or of an error about one of our echoes, else None."""
    if version == 4:
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 8:
        return None
    kind, code = data[0], data[1]
    if (version == 4 and kind == 0) or (version == 6 and kind == 129):
        ident, seq = struct.unpack("!HH", data[4:8])
        return "reply", ident, seq
    inner = data[8:]
    if version == 4 and kind in (3, 11) and len(inner) >= 28:
        inner = inner[(inner[0] & 0x0F) * 4:]
        if inner[0] == 8:
            ident, seq = struct.unpack("!HH", inner[4:8])
            what = _UNREACHABLE4.get(code, f"unreachable code {code}") if kind == 3 else "time exceeded"
            return f"ICMP {what} from {source}", ident, seq
    if version == 6 and kind in (1, 2, 3) and len(inner) >= 48 and inner[40] == 128:
        ident, seq = struct.unpack("!HH", inner[44:48])
        what = {1: _UNREACHABLE6.get(code, f"unreachable code {code}"), 2: "packet too big", 3: "time exceeded"}[kind]
        if kind == 2:
            what += f" (MTU {struct.unpack('!I', data[4:8])[0]})"
        return f"ICMPv6 {what} from {source}", ident, seq
    return None


class _Sockets:
    """Every socket of one check, by namespace, opened by one thread entering each in turn."""

    def __init__(self) -> None:
        self.icmp: dict[tuple[Scope, int], socket.socket] = {}
        self.listeners: dict[tuple[Scope, str, int], socket.socket | None] = {}  # None: the port is taken
        self.clients: dict[int, socket.socket] = {}
        self.failed: dict[int, str] = {}

    def close(self) -> None:
        for sock in [*self.icmp.values(), *self.listeners.values(), *self.clients.values()]:
            if sock is not None:
                sock.close()


def _listener(proto: str, port: int) -> socket.socket | None:
    kind = socket.SOCK_STREAM if proto == TCP else socket.SOCK_DGRAM
    try:
        sock = socket.socket(socket.AF_INET6, kind)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    except OSError:  # IPv6 off in the namespace
        sock, address = socket.socket(socket.AF_INET, kind), ("0.0.0.0", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            return None
        raise
    if proto == TCP:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def _client(probe: Probe) -> socket.socket:
    family = socket.AF_INET if probe.target.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM if probe.kind == TCP else socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _icmp_socket(version: int) -> socket.socket:
    if version == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
    sock.setblocking(False)
    return sock


def _open(probes: list[Probe], scope_of: Callable, sockets: _Sockets) -> None:
    needs: dict[Scope, list[Callable[[], None]]] = {}

    def need(scope: Scope, fn: Callable[[], None]) -> None:
        needs.setdefault(scope, []).append(fn)

    for i, probe in enumerate(probes):
        source = scope_of(probe.source)
        if probe.kind == ICMP:
            key = (source, probe.target.version)
            if key not in sockets.icmp:
                sockets.icmp[key] = None  # type: ignore[assignment]
                need(source, lambda key=key: sockets.icmp.__setitem__(key, _icmp_socket(key[1])))
            continue
        if probe.listen is not None:
            where = scope_of(probe.listen[0])
            key = (where, probe.kind, probe.listen[1])
            if key not in sockets.listeners:
                sockets.listeners[key] = None
                need(where, lambda key=key: sockets.listeners.__setitem__(key, _listener(key[1], key[2])))
        need(source, lambda i=i, probe=probe: sockets.clients.__setitem__(i, _client(probe)))
    _allow_descriptors(len(probes) * 2 + len(needs) + 64)
    in_root = needs.pop(None, [])
    for fn in in_root:
        fn()
    names = sorted(needs)

    def open_here(name: str) -> None:
        for fn in needs[name]:
            fn()

    missing = set(names) - set(ns.run_in_each(names, open_here))
    for i, probe in enumerate(probes):
        if scope_of(probe.source) in missing:
            sockets.failed[i] = f"namespace {scope_of(probe.source)} does not exist"


def wait_for_links(kernel: Kernel, scopes: list[Scope], limit: float = 2.0) -> float:
    """Wait until every interface that has a carrier in these namespaces is running. The kernel
    marks it so in its linkwatch work, up to a second after the carrier came: until then it
    drops what is sent through it, and a check right after an apply would report that.
    Returns the seconds waited (at most `limit`; interfaces without a carrier are not waited for)."""
    started = time.monotonic()
    while True:
        pending = [scope for scope in scopes
                   if any(msg.flags & IFF_LOWER_UP and not msg.flags & IFF_RUNNING for msg in _links(kernel, scope))]
        waited = time.monotonic() - started
        if not pending or waited >= limit:
            return waited
        scopes = pending
        time.sleep(0.02)


def _links(kernel: Kernel, scope: Scope) -> list:
    try:
        return kernel.rtnl(scope).links()
    except (TopoctlError, OSError):
        return []  # gone: the probes say so


def run_probes(probes: list[Probe], scope_of: Callable, deadline: float = 2.0) -> list[Outcome]:
    """Every probe at once; each has `deadline` seconds from the start to be answered."""
    sockets = _Sockets()
    try:
        _open(probes, scope_of, sockets)
        return _exchange(probes, scope_of, sockets, deadline)
    finally:
        sockets.close()


def _exchange(probes: list[Probe], scope_of: Callable, sockets: _Sockets, deadline: float) -> list[Outcome]:
    started = time.monotonic()
    results: dict[int, Outcome] = {i: Outcome(probes[i], False, why) for i, why in sockets.failed.items()}
    base = secrets.randbelow(0x8000)
    token = {i: b"topoctl-check-%d-%d" % (os.getpid(), i) for i in range(len(probes))}
    by_token = {t: i for i, t in token.items()}
    pending_echo: dict[int, float] = {}  # probe -> when its echo was last sent
    errors: dict[int, str] = {}  # the last error of a probe that is tried again until the deadline
    retry_connect: dict[int, float] = {}  # TCP probes to connect again (unreachable so far), and when
    roles: dict[socket.socket, tuple[str, int]] = {}  # what a ready socket is: its role, its probe
    with selectors.DefaultSelector() as selector:  # epoll: more than FD_SETSIZE sockets at N=1000

        def watch(sock: socket.socket, events: int, role: str, i: int = -1) -> None:
            roles[sock] = (role, i)
            selector.register(sock, events)

        def forget(sock: socket.socket) -> None:
            selector.unregister(sock)
            del roles[sock]

        for sock in sockets.icmp.values():
            if sock is not None:
                watch(sock, selectors.EVENT_READ, "icmp")
        for sock in sockets.listeners.values():
            if sock is not None:
                watch(sock, selectors.EVENT_READ, "listener")
        for i, probe in enumerate(probes):
            if i in results:
                continue
            if probe.kind == ICMP:
                if _send_echo(sockets, scope_of, probe, base + i, results, i, started):
                    pending_echo[i] = time.monotonic()
                continue
            sock, address = sockets.clients[i], (str(probe.target), probe.port)
            if probe.kind == TCP:
                err = sock.connect_ex(address)
                if err in (0, errno.EINPROGRESS):
                    watch(sock, selectors.EVENT_WRITE, "connecting", i)
                else:
                    results[i] = Outcome(probe, False, os.strerror(err))
                continue
            try:
                sock.sendto(token[i], address)
                watch(sock, selectors.EVENT_READ, "awaiting", i)
            except OSError as exc:
                results[i] = Outcome(probe, False, exc.strerror or str(exc))
        while len(results) < len(probes):
            left = deadline - (time.monotonic() - started)
            if left <= 0:
                break
            for key, _ in selector.select(min(0.05, left)):
                sock = key.fileobj
                role, i = roles[sock]
                elapsed = time.monotonic() - started
                if role == "icmp":
                    _read_echoes(sock, probes, base, results, started, errors)
                elif role == "listener":
                    conn = _serve(sock)
                    if conn is not None:
                        watch(conn, selectors.EVENT_READ, "accepted")
                elif role == "accepted":
                    data = _recv(sock)
                    forget(sock)
                    sock.close()
                    if data in by_token and by_token[data] not in results:
                        i = by_token[data]
                        results[i] = Outcome(probes[i], True, f"answered after {elapsed * 1000:.1f} ms", elapsed)
                elif role == "connecting":
                    forget(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    probe = probes[i]
                    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                        errors[i] = os.strerror(err)  # no neighbour yet: tried again, as ICMP is
                        retry_connect[i] = time.monotonic()
                    elif err:
                        results[i] = Outcome(probe, False, "refused: a reset came back, nothing listens where it "
                                             "arrived" if err == errno.ECONNREFUSED else os.strerror(err), elapsed)
                    elif sockets.listeners.get((scope_of(probe.listen[0]), TCP, probe.listen[1]), 1) is None:
                        results[i] = Outcome(probe, True, f"connected after {elapsed * 1000:.1f} ms "
                                             "(an application listens there)", elapsed)
                    else:
                        with _quiet():
                            sock.send(token[i])
                        watch(sock, selectors.EVENT_READ, "sent", i)
                elif role == "awaiting":
                    if _recv(sock) is not None:
                        forget(sock)
                        results[i] = Outcome(probes[i], True, f"answered after {elapsed * 1000:.1f} ms", elapsed)
                elif role == "sent":
                    forget(sock)  # the server closed: the outcome is the token's, at the listener
            now = time.monotonic()
            for i, failed in list(retry_connect.items()):
                if now - failed >= RESEND:
                    del retry_connect[i]
                    sock = sockets.clients[i]
                    err = sock.connect_ex((str(probes[i].target), probes[i].port))
                    if err in (0, errno.EINPROGRESS):
                        watch(sock, selectors.EVENT_WRITE, "connecting", i)
                    else:
                        errors[i], retry_connect[i] = os.strerror(err), now
            for i, sent in list(pending_echo.items()):
                if i in results:
                    del pending_echo[i]
                elif now - sent >= RESEND:
                    _send_echo(sockets, scope_of, probes[i], base + i, results, i, started)
                    pending_echo[i] = now
        for sock, (role, _) in roles.items():
            if role == "accepted":
                sock.close()
        waiting = {i: role for role, i in roles.values()}
    for i, probe in enumerate(probes):
        if i not in results:
            role = waiting.get(i)
            if role == "connecting":
                what = "no connection"
            elif role == "sent":
                what = f"connected, but not to port {probe.listen[1]} of {probe.listen[0].namespace}: nothing arrived there"
            else:
                what = "no reply" if probe.kind == ICMP else "no answer"
            what = errors[i] if i in errors and role != "sent" else f"{what} within {deadline:.1f} s"
            results[i] = Outcome(probe, False, what)
    return [results[i] for i in range(len(probes))]


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:
        return kind is not None and issubclass(kind, OSError)


def _recv(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(128)
    except OSError:
        return None


def _serve(listener: socket.socket) -> socket.socket | None:
    """A listener is readable: the connection it takes (TCP), or None once the datagram is
    echoed back (UDP)."""
    with _quiet():
        if listener.type == socket.SOCK_STREAM:
            conn, _ = listener.accept()
            conn.setblocking(False)
            return conn
        data, peer = listener.recvfrom(128)
        listener.sendto(data, peer)
    return None


def _send_echo(sockets: _Sockets, scope_of: Callable, probe: Probe, ident: int, results: dict, i: int,
               started: float) -> bool:
    sock = sockets.icmp[(scope_of(probe.source), probe.target.version)]
    payload = b"topoctl".ljust(probe.size if probe.size is not None else 56, b"\0")
    try:
        sock.sendto(echo_packet(probe.target.version, ident & 0xFFFF, 1, payload), (str(probe.target), 0))
        return True
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            why = "too big for the first hop (EMSGSIZE): an interface on the way out has a smaller MTU"
        else:
            why = exc.strerror or str(exc)
        results[i] = Outcome(probe, False, why, time.monotonic() - started)
        return False


def _read_echoes(sock: socket.socket, probes: list[Probe], base: int, results: dict, started: float,
                 errors: dict[int, str]) -> None:
    version = 4 if sock.family == socket.AF_INET else 6
    while True:
        try:
            data, peer = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        parsed = parse_icmp(version, data, peer[0])
        if parsed is None:
            continue
        what, ident, _ = parsed
        i = (ident - base) & 0xFFFF
        if i >= len(probes) or i in results or probes[i].kind != ICMP or probes[i].target.version != version:
            continue
        if what == "reply" and str(probes[i].target) != peer[0]:
            continue  # another probe's target answered an id that happens to match
        elapsed = time.monotonic() - started
        if what == "reply":
            results[i] = Outcome(probes[i], True, f"reply after {elapsed * 1000:.1f} ms", elapsed)
        else:
            # not final: a neighbour entry left FAILED by an earlier break answers the first
            # packets with "host unreachable" while it resolves again
            errors[i] = what
