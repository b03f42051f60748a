"""Traffic probes for the netfilter tests, without a process per probe: a socket opened by a
thread that has entered a namespace stays in that namespace (topoctl.kernel.namespaces), so
servers and clients in the topology's namespaces are plain sockets of the test process.
Every server has a bounded life and every probe a deadline; traffic stays between the
topology's own namespaces."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

from topoctl.kernel import namespaces as ns

DEADLINE = 2.0


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _socket_in(scope: str, family: int, kind: int) -> socket.socket:
    return ns.run_in_netns(scope, lambda: socket.socket(family, kind))


@contextlib.contextmanager
def server(scope: str, port: int, proto: str = "tcp", family: int = socket.AF_INET6,
           lifetime: float = 60.0) -> Iterator[list[str]]:
    """Answers every TCP connection or UDP datagram on `port` (all addresses, IPv4 and IPv6)
    with b"hello from " + the namespace; yields the list of peer addresses it saw."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = _socket_in(scope, family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    if proto == "tcp":
        sock.listen(16)
    sock.settimeout(0.2)
    peers: list[str] = []
    stop = threading.Event()
    answer = b"hello from " + scope.encode()
    ends = time.monotonic() + lifetime

    def serve() -> None:
        while not stop.is_set() and time.monotonic() < ends:
            try:
                if proto == "tcp":
                    conn, peer = sock.accept()
                    with conn:
                        peers.append(peer[0].removeprefix("::ffff:"))
                        conn.settimeout(DEADLINE)
                        with contextlib.suppress(OSError):
                            conn.recv(64)
                            conn.sendall(answer)
                else:
                    _, peer = sock.recvfrom(64)
                    peers.append(peer[0].removeprefix("::ffff:"))
                    sock.sendto(answer, peer)
            except (socket.timeout, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield peers
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def request(scope: str, address: str, port: int, proto: str = "tcp", deadline: float = DEADLINE) -> bytes | None:
    """The server's answer to one connection (or datagram) from `scope`, or None by the deadline."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = _socket_in(scope, _family(address), kind)
    sock.settimeout(deadline)
    try:
        if proto == "tcp":
            sock.connect((address, port))
            sock.sendall(b"hi")
            return sock.recv(64) or None
        sock.sendto(b"hi", (address, port))
        return sock.recvfrom(64)[0]
    except OSError:  # timeouts, refusals, unreachable
        return None
    finally:
        sock.close()


def transfer_seconds(scope: str, address: str, port: int, size: int, deadline: float = 60.0) -> float:
    """Seconds to send `size` bytes over TCP to a sink() and have them all acknowledged by it."""
    sock = _socket_in(scope, _family(address), socket.SOCK_STREAM)
    sock.settimeout(deadline)
    try:
        started = time.monotonic()
        sock.connect((address, port))
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            sent += sock.send(chunk[: size - sent])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(16) == b"done"
        return time.monotonic() - started
    finally:
        sock.close()


@contextlib.contextmanager
def sink(scope: str, port: int, lifetime: float = 60.0) -> Iterator[None]:
    """Reads one TCP stream to its end, then answers b"done"."""
    sock = _socket_in(scope, socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(1)
    sock.settimeout(lifetime)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = sock.accept()
            with conn:
                conn.settimeout(lifetime)
                while conn.recv(1 << 16):
                    pass
                conn.sendall(b"done")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sock.close()
        thread.join(5)
