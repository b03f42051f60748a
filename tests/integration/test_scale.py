"""Scale properties: no process per namespace, bounded file descriptors, and the benchmark's
smoke run (N=10, correctness checks only; timings are asserted nowhere in CI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from topoctl.run.context import Context, realise
from topoctl.kernel.sockets import Kernel
from topoctl.spec.loader import load_file

from .conftest import ROOT

pytestmark = pytest.mark.root


def containers(n: int) -> dict:
    return {
        "apiVersion": "topoctl/v1", "kind": "Topology", "name": "scale",
        "bridges": {"br0": {"addresses": ["10.128.0.1/16"]}},
        "namespaces": {f"c{i}": {"routes": [{"to": "default", "via": "10.128.0.1"}]} for i in range(n)},
        "links": [{"type": "veth", "endpoints": [
            {"namespace": f"c{i}", "name": "eth0", "addresses": [f"10.128.{(i + 2) // 256}.{(i + 2) % 256}/16"]},
            {"bridge": "br0", "name": f"v{i}"}]} for i in range(n)],
    }


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_plan_of_50_namespaces_forks_no_process(sandbox_factory, monkeypatch):
    box = sandbox_factory(containers(50))
    box.apply()
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))

    spawned: list[str] = []
    real_fork, real_spawn = os.fork, os.posix_spawn
    monkeypatch.setattr(os, "fork", lambda: spawned.append("fork") or real_fork())
    monkeypatch.setattr(os, "posix_spawn", lambda *a, **k: spawned.append("spawn") or real_spawn(*a, **k))
    real_popen_init = subprocess.Popen.__init__

    def counting_popen(self, *args, **kwargs):
        spawned.append("popen")
        real_popen_init(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", counting_popen)

    before = open_fds()
    with Kernel() as kernel:
        the_plan, live = context.plan(kernel)
        during = open_fds()
    after = open_fds()
    assert the_plan.empty
    assert len([n for n in live.namespaces if box.uid in n]) == 51
    assert spawned == []  # not one process, for 51 namespaces
    assert during - before <= 51 + 5  # one socket per namespace, a few more at most
    assert after == before  # and all of them closed


def test_benchmark_smoke_run_builds_checks_and_cleans_up():
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "correctness checks passed" in result.stdout
    assert "| topoctl apply (cold) |" in result.stdout and "| script build |" in result.stdout
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(("bench10-", "b"))] if os.path.isdir("/run/netns") else []
    assert not [n for n in leftovers if "-10-c" in n or n.startswith("bench10-")]


@pytest.mark.parametrize("what", ["apply", "plan"])
def test_the_profile_tool_times_every_step_and_cleans_up(what):
    """`python -m bench.profile` (docs/performance.md): every step it times still exists (a
    renamed function would end its child process), and it leaves nothing behind."""
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    result = subprocess.run([sys.executable, "-m", "bench.profile", "--what", what, "--n", "10", "--repeat", "1",
                             "--settle", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the command, after its imports" in result.stdout and "By cumulative time" in result.stdout
    assert "observe (read + build the live state)" in result.stdout
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    # the CNI peer's namespaces (bcni*) are never the profile tool's: a bench running beside it makes them
    assert {n for n in after if not n.startswith("bcni")} <= before


class HelperWatch:
    """Counts forks (keeping the helpers' pids) and the namespaces read by this process."""

    def __init__(self, monkeypatch, tables) -> None:
        self.pids: list[int] = []
        self.read_here = 0
        parent = os.getpid()
        real_fork, real_read = os.fork, tables._read

        def fork() -> int:
            pid = real_fork()
            if pid:
                self.pids.append(pid)
            return pid

        def read(kernel, scope):
            if os.getpid() == parent:
                self.read_here += 1
            return real_read(kernel, scope)

        monkeypatch.setattr(os, "fork", fork)
        monkeypatch.setattr(tables, "_read", read)

    def reaped(self) -> bool:
        for pid in self.pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            return False  # still ours to wait for: not reaped
        return True


class Hung(Exception):
    pass


def _plan(box, expect_error: type[BaseException] | None = None):
    """A plan of the box, failing (not hanging) if it takes over 30 s."""
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    before = open_fds()

    def hung(*_):
        raise Hung("the plan still runs after 30 s: waiting for the helper?")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with Kernel() as kernel:
            if expect_error is not None:
                with pytest.raises(expect_error):
                    context.plan(kernel)
                the_plan = live = None
            else:
                the_plan, live = context.plan(kernel)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return the_plan, live, before, open_fds()


@pytest.fixture
def parallel(monkeypatch):
    """tables.py set to use its helper from 4 namespaces on, on any machine; (module, watch)."""
    from topoctl.kernel import tables

    monkeypatch.setattr(tables, "PARALLEL_FROM", 4)
    monkeypatch.setattr(tables, "_cpus", lambda: 2)  # also on a one-CPU machine
    return tables, HelperWatch(monkeypatch, tables)


def _sequential_state(box, monkeypatch):
    from topoctl.kernel import tables

    with monkeypatch.context() as m:
        m.setattr(tables, "PARALLEL_FROM", 10_000)
        the_plan, live, _, _ = _plan(box)
    assert the_plan.empty
    return live


def test_a_large_read_forks_one_helper_and_reads_the_same_state(sandbox_factory, monkeypatch, parallel):
    """From tables.PARALLEL_FROM namespaces on, one helper process reads half of them: one fork
    per read, whatever the count, and the state read is the same as one process reads. A plan
    starts it before computing the desired state (Kernel.prefetch), a plain read (as `show`
    does) when it reads."""
    from topoctl.core import desired

    tables, watch = parallel
    box = sandbox_factory(containers(30))
    box.apply()
    expected = _sequential_state(box, monkeypatch)
    watch.read_here = 0
    helpers_when_desired: list[int] = []
    real_desired = desired.desired_state
    monkeypatch.setattr(desired, "desired_state",
                        lambda *a: helpers_when_desired.append(len(watch.pids)) or real_desired(*a))
    the_plan, live, before, after = _plan(box)
    assert helpers_when_desired == [1]  # already reading while the desired state was computed
    assert len(watch.pids) == 1
    assert the_plan.empty and live == expected
    # the helper delivered its share of the 30 containers: not read again here
    assert watch.read_here == 31 - round(30 * tables.HELPER_SHARE)
    assert after == before  # the pipe and every socket closed
    assert watch.reaped()

    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    watch.read_here = 0
    with Kernel() as kernel:
        assert context.observe(kernel) == expected
    assert len(watch.pids) == 2
    assert watch.read_here == round(31 * (1 - tables.HELPER_SHARE))
    assert open_fds() == before and watch.reaped()


def test_a_reader_never_used_is_ended_with_the_kernel_object(sandbox_factory, monkeypatch, parallel):
    """A plan that fails after starting its reader (here, computing the desired state) leaves
    no process and no descriptor behind."""
    from topoctl.core import desired

    _, watch = parallel
    box = sandbox_factory(containers(12))
    box.apply()

    def fails(*_):
        raise RuntimeError("injected: the desired state cannot be computed")

    monkeypatch.setattr(desired, "desired_state", fails)
    _, _, before, after = _plan(box, expect_error=RuntimeError)
    assert len(watch.pids) == 1 and watch.reaped()
    assert after == before


@pytest.mark.parametrize("failure", ["raises", "hangs", "is stopped"])
def test_a_failing_helper_is_replaced_by_reading_its_half_again(sandbox_factory, monkeypatch, parallel, failure):
    """Whatever happens to the helper, the plan reads the same state and nothing is left over;
    a stop signal is ignored in the helper (none of topoctl's handlers runs in it), and a
    helper killed outright is replaced like one that failed."""
    tables, watch = parallel
    box = sandbox_factory(containers(12))
    box.apply()
    expected = _sequential_state(box, monkeypatch)
    watch.read_here = 0

    def helper_fails(_):  # runs in the helper only
        if failure == "raises":
            raise RuntimeError("helper cannot encode")
        if failure == "hangs":
            time.sleep(60)  # bounded: a regression must fail this test, not hang the run
        os.kill(os.getpid(), signal.SIGTERM)  # ignored
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)

    monkeypatch.setattr(tables, "_encode", helper_fails)
    monkeypatch.setattr(tables, "HELPER_TIMEOUT", 2.0)
    parent, ran_elsewhere = os.getpid(), []

    def handler(*_):  # as topoctl's own handlers do, during an apply
        if os.getpid() != parent:
            ran_elsewhere.append(os.getpid())  # lost with the helper's memory: so also a file
            (box.path.parent / "handler-ran-in-helper").touch()

    previous = signal.signal(signal.SIGTERM, handler)
    started = time.monotonic()
    try:
        the_plan, live, before, after = _plan(box)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not (box.path.parent / "handler-ran-in-helper").exists()
    assert len(watch.pids) == 1 and the_plan.empty
    assert live == expected
    assert watch.read_here == 13  # both halves read here
    assert after == before
    assert watch.reaped()
    assert time.monotonic() - started < 20


def test_an_error_in_this_half_does_not_wait_forever_for_the_helper(sandbox_factory, monkeypatch, parallel):
    """The helper blocks writing into a full pipe that nobody reads: closing it ends the helper."""
    from topoctl.errors import KernelError

    tables, watch = parallel
    box = sandbox_factory(containers(40))
    box.apply()
    real_read = tables._read  # the watch's counting reader
    parent = os.getpid()

    def failing_here(kernel, scope):
        if os.getpid() == parent:
            raise KernelError("injected: this process's half fails")
        return real_read(kernel, scope)

    monkeypatch.setattr(tables, "_read", failing_here)
    monkeypatch.setattr(tables, "_encode", lambda _: b"\0" * (4 << 20))  # far more than a pipe holds
    _, _, before, after = _plan(box, expect_error=KernelError)
    assert len(watch.pids) == 1 and watch.reaped()
    assert after == before


@pytest.fixture
def two_creators(monkeypatch):
    """netns.create_netns_many set to use two threads, also on a one-CPU machine; the netns module."""
    from topoctl.kernel import namespaces as ns

    monkeypatch.setattr(ns, "cpus", lambda: 2)
    return ns


def test_new_namespaces_made_by_two_threads_are_all_there_and_recorded(sandbox_factory, two_creators):
    from topoctl.store import records

    box = sandbox_factory(containers(20))
    assert box.apply()["summary"]["add"] > 20
    assert box.plan_exit() == 0
    for i in range(20):
        record = records.read_netns_record(box.ns(f"c{i}"))
        assert record is not None and record.topology == box.topology
        assert record.inode == two_creators.netns_inode(box.ns(f"c{i}"))


@pytest.mark.parametrize("failing", [0, 7, 19])
def test_a_failure_while_two_threads_make_namespaces_leaves_the_first_ones_only(two_creators, failing):
    """Whichever thread fails, what stays made is the names before the failed one, in order;
    any made after it (by the other thread) is deleted again, its result undone."""
    import secrets

    ns = two_creators
    names = [f"pc{i}-{secrets.token_hex(3)}" for i in range(20)]
    undone: list[str] = []

    def inside(name: str) -> str:
        if name == names[failing]:
            time.sleep(0.05)  # the other thread goes on meanwhile
            raise RuntimeError("injected failure inside the new namespace")
        return name.upper()

    try:
        with pytest.raises(ns.Partial) as caught:
            ns.create_netns_many(names, inside, undo=lambda name, result: undone.append(result))
        assert list(caught.value.done) == names[:failing]
        assert list(caught.value.done.values()) == [n.upper() for n in names[:failing]]
        assert "injected failure" in str(caught.value.error)
        present = set(ns.list_netns())
        assert [n for n in names if n in present] == names[:failing]
        assert set(undone) <= {n.upper() for n in names[failing + 1:]}
        assert not os.path.exists(ns.netns_path(names[failing]))
    finally:
        for name in names:
            if name in ns.list_netns():
                ns.delete_netns(name)


def test_a_cold_apply_of_more_namespaces_than_the_descriptor_limit_works(sandbox_factory):
    """One socket per namespace: an apply started with a soft RLIMIT_NOFILE of 64 (a desktop's
    is 1024) raises it (up to the hard limit) before making 300 namespaces."""
    import resource

    from .conftest import TOPOCTL

    box = sandbox_factory(containers(300))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    result = subprocess.run([*TOPOCTL, "apply", "--emulate", "-o", "json", str(box.path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert box.plan_exit() == 0


def test_json_output_and_a_no_op_plan_never_import_rich(sandbox_factory):
    """Start-up is a third of a small apply: rich (28 ms) is imported only for output that
    needs it (-X importtime lists every module a run imports)."""
    from .conftest import TOPOCTL

    box = sandbox_factory(containers(3))

    def imports_rich(*args: str) -> bool:
        import re

        result = subprocess.run([sys.executable, "-X", "importtime", *TOPOCTL[1:], *args, "--emulate", str(box.path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return re.search(r"^import time:.*\|\s*rich(\.|$)", result.stderr, re.MULTILINE) is not None

    assert not imports_rich("apply", "-o", "json")  # a cold apply, for a machine
    assert not imports_rich("plan")                   # "No changes.": one plain line
    assert not imports_rich("apply")
    assert imports_rich("destroy")  # its summary has colour: rich is used


def test_an_apply_after_a_read_through_the_helper_opens_its_sockets_in_one_pass(sandbox_factory, monkeypatch, parallel):
    """The helper read half the containers on sockets of its own; the steps that then act in
    those namespaces do not open a socket each (a thread per namespace), but all in one pass."""
    from topoctl.kernel import namespaces as ns
    from topoctl.run.reconcile import reconcile

    from .conftest import ip

    _, watch = parallel
    box = sandbox_factory(containers(12))
    box.apply()
    for i in range(0, 12, 2):
        ip("-n", box.host(), "link", "del", f"v{i}")  # six veths gone: re-made, both ends finished
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    one_by_one: list[str] = []
    real_run_in_netns = ns.run_in_netns
    monkeypatch.setattr(ns, "run_in_netns", lambda name, fn: one_by_one.append(name) or real_run_in_netns(name, fn))
    with Kernel() as kernel:
        report = reconcile(kernel, context)
    assert len(report.plan.actions) >= 6 and watch.pids  # the read went through the helper
    assert one_by_one == []
    assert box.plan_exit() == 0
