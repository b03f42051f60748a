"""One lock per host: a second apply or destroy of the same host waits instead of interleaving.

flock(2) on /run/topoctl/locks/<host>.lock; the kernel releases it when the holder exits, even
by SIGKILL, so a crashed run never leaves a stale lock. The holder writes who it is into the
file, so that a run that gives up can say who it waited for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from typing import Iterator

from topoctl.errors import LockTimeout
from topoctl.paths import lock_dir, lock_path

POLL = 0.05


def _lock_owner(fd: int) -> int | None:
    """The pid the kernel names as holding the flock on this file (/proc/locks), if any."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"; a waiter's line starts "1: ->"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as source:
            return source.read().replace(b"\0", b" ").decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def _holder(fd: int) -> str:
    """Who holds the lock: what the holder wrote into the file, if the kernel agrees that it is
    the holder; the file may be left from an earlier topoctl while something else holds it."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        data = {}
    owner = _lock_owner(fd)
    if owner is not None and owner != data.get("pid"):
        return f"pid {owner} ({_command_of(owner)}), which is not a topoctl run"
    if not data:
        return "another topoctl" if owner is None else f"pid {owner}"
    return (f"pid {data.get('pid')} ({data.get('command', '?')} of topology {data.get('topology', '?')}, "
            f"since {data.get('since', '?')})")


@contextlib.contextmanager
def host_locks(names: list[str], topology: str, command: str, timeout: float) -> Iterator[None]:
    """Hold the locks of these hosts (taken in sorted order, so two runs cannot deadlock)."""
    os.makedirs(lock_dir(), mode=0o755, exist_ok=True)
    held: list[int] = []
    try:
        for name in sorted(set(names)):
            fd = os.open(lock_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = _holder(fd)
                        os.close(fd)
                        raise LockTimeout(f"host {name} is locked by {holder}; gave up after {timeout:g}s",
                                          "wait for it to finish, or raise --lock-timeout") from None
                    time.sleep(POLL)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "topology": topology,
                                      "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      "argv": sys.argv[1:8]}).encode(), 0)
            held.append(fd)
        yield
    finally:
        for fd in reversed(held):
            os.close(fd)  # closing releases the flock
