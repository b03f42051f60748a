"""tables.py's helper process fails closed: a KernelError in it reaches this process as a
KernelError, data that cannot be decoded means reading its share here, and it ignores stop
signals and dies with its parent. The helper is really forked; its sockets are fakes fed the
captured dumps in data/ (no root)."""

from __future__ import annotations

import marshal
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from topoctl.kernel import rtnl
from topoctl.kernel import tables
from topoctl.errors import KernelError

from .nlfake import FakeSocket, load, retag

ROOT = Path(__file__).resolve().parents[2]


def _good_socket() -> FakeSocket:
    # links, addresses, main-table routes: the three dumps of tables._dump, as requests 1 to 3
    return FakeSocket(load("links.bin"), retag(load("addresses.bin"), 2), retag(load("routes.bin"), 3))


def _bad_socket() -> FakeSocket:
    links = load("links.bin")
    return FakeSocket([links[0][:-8]])  # the first datagram cut short


def _fake_opening(monkeypatch, make=_good_socket, pause: float = 0.0, bad: set = frozenset()):
    """ns.open_in_each_here as the helper calls it: a fake socket per namespace (in the helper)."""
    def open_in_each_here(names, open_socket):
        time.sleep(pause)
        return {name: rtnl.Rtnl(_bad_socket() if name in bad else make()) for name in names}

    monkeypatch.setattr(tables.ns, "open_in_each_here", open_in_each_here)


def _expected() -> tables.Tables:
    return tables._dump(rtnl.Rtnl(_good_socket()), "x")


class FakeKernel:
    """What read_tables needs of a Kernel, reading here from fake sockets."""

    def __init__(self) -> None:
        self.read: list = []

    def open(self, scopes) -> None:
        pass

    def rtnl(self, scope):
        self.read.append(scope)
        return rtnl.Rtnl(_good_socket())


def test_the_helper_delivers_what_it_read(monkeypatch):
    _fake_opening(monkeypatch)
    reader = tables.Reader(["a", "b"])
    try:
        assert reader.collect(10) == {"a": _expected(), "b": _expected()}
    finally:
        reader.close()


def test_a_malformed_reply_in_the_helper_is_a_kernel_error_here(monkeypatch):
    _fake_opening(monkeypatch, bad={"b"})
    reader = tables.Reader(["a", "b"])
    try:
        with pytest.raises(KernelError, match="in b, reading the interfaces: the kernel's reply is malformed") as raised:
            reader.collect(10)
        assert "report it" in raised.value.hint
    finally:
        reader.close()
    assert reader.pid is None


def test_read_tables_raises_the_helpers_kernel_error_and_never_returns_a_partial_table(monkeypatch):
    _fake_opening(monkeypatch, bad={"c"})
    kernel = FakeKernel()
    with pytest.raises(KernelError, match="in c, reading the interfaces"):
        tables.read_tables(kernel, ["a", "b", "c"], tables.Reader(["b", "c"]))
    assert kernel.read == ["a"]  # its own share; the helper's was not read again


@pytest.mark.parametrize("blob", [b"", b"not marshal", marshal.dumps([("b", [(1, 2)], [], [])]),
                                  marshal.dumps({"b": 1}), marshal.dumps(("KernelError", "x"))],
                         ids=["empty", "garbage", "short-tuple", "dict", "bad-error"])
def test_data_from_the_helper_that_cannot_be_decoded_is_read_here_instead(monkeypatch, blob):
    _fake_opening(monkeypatch)
    monkeypatch.setattr(tables, "_encode", lambda _: blob)
    kernel = FakeKernel()
    result = tables.read_tables(kernel, ["a", "b"], tables.Reader(["b"]))
    assert result == {"a": _expected(), "b": _expected()}
    assert kernel.read == ["a", "b"]


def test_a_helper_that_finds_its_parent_gone_ends_at_once(monkeypatch):
    _fake_opening(monkeypatch)
    monkeypatch.setattr(os, "getppid", lambda: 1)  # as if reparented before PR_SET_PDEATHSIG was set
    reader = tables.Reader(["a"])
    try:
        assert reader.collect(10) is None
    finally:
        reader.close()


def _signal_mask(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(field)


def test_the_helper_ignores_stop_signals_and_delivers(monkeypatch):
    _fake_opening(monkeypatch, pause=0.6)
    reader = tables.Reader(["a"])
    try:
        time.sleep(0.3)  # it is inside its (slow) read now
        ignored = _signal_mask(reader.pid, "SigIgn")
        assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGTERM - 1))
        assert not _signal_mask(reader.pid, "SigBlk") & (1 << (signal.SIGTERM - 1))  # unblocked, and ignored
        os.kill(reader.pid, signal.SIGINT)
        os.kill(reader.pid, signal.SIGTERM)
        assert reader.collect(10) == {"a": _expected()}
    finally:
        reader.close()
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # this process's own are untouched


def test_the_helper_dies_with_its_parent(tmp_path):
    """A parent that ends without closing its reader (killed): the helper must not outlive it."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from topoctl.kernel import tables
        def open_in_each_here(names, open_socket):
            time.sleep(60)
        tables.ns.open_in_each_here = open_in_each_here
        reader = tables.Reader(["a"])
        open("pid", "w").write(str(reader.pid))
        time.sleep(0.3)
        os._exit(0)
    """)
    # no pipes: the helper inherits the descriptors, and would hold them open for as long as it lives
    subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=30, cwd=tmp_path, check=True)
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                         if line.startswith("State:"))
        except (FileNotFoundError, ProcessLookupError):
            return  # gone (and reaped)
        if "Z" in state.split()[1]:
            return  # dead, waiting to be reaped by whoever adopted it
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the helper outlived its parent by 10 s")
