"""`topoctl watch`: applies, repairs drift from notifications, follows the file by content,
keeps the last good file, retries a failing apply, and stops on SIGTERM leaving the topology."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from .conftest import ROOT, TOPOCTL, ip, netns_names

pytestmark = pytest.mark.root


class Agent:
    """A `topoctl watch -o json` process and its log, a line at a time."""

    def __init__(self, path, *extra: str) -> None:
        self.proc = subprocess.Popen([*TOPOCTL, "watch", "--emulate", "-o", "json", *extra, str(path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for text in self.proc.stdout:
            self.lines.put(json.loads(text))

    def next(self, within: float = 10.0) -> dict:
        try:
            return self.lines.get(timeout=within)
        except queue.Empty:
            raise AssertionError(f"no log line within {within}s; stderr: {''.join(self.stderr)}") from None

    def quiet_for(self, seconds: float) -> None:
        try:
            entry = self.lines.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected reconciliation: {entry}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def agents():
    started: list[Agent] = []

    def start(path, *extra: str) -> Agent:
        agent = Agent(path, *extra)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
        assert "Traceback" not in "".join(agent.stderr), "".join(agent.stderr)


def test_the_agent_applies_then_repairs_each_kind_of_drift_and_not_its_own_changes(sandbox_factory, agents):
    box = sandbox_factory("docker0.yaml")
    agent = agents(box.path)
    first = agent.next()
    assert (first["trigger"], first["result"]) == ("start", "applied") and first["actions"] > 10
    assert box.plan_exit() == 0
    agent.quiet_for(2.5)  # its own changes, and the kernel settling after them, are not drift

    nginx1 = box.ns("nginx-1")
    drifts = [
        # either end of the cable may be heard of first
        (lambda: ip("-n", box.host(), "link", "del", "veth-nginx1"), ("veth-nginx1 deleted", "eth0 deleted")),
        (lambda: ip("-n", nginx1, "link", "set", "eth0", "mtu", "1400"), "eth0 changed"),
        (lambda: ip("-n", nginx1, "addr", "add", "10.9.9.9/24", "dev", "eth0"), "address 10.9.9.9/24 added"),
        (lambda: ip("-n", nginx1, "route", "del", "default"), "route 0.0.0.0/0 deleted"),
        (lambda: ip("-n", box.host(), "link", "set", "docker0", "down"), "docker0 changed"),
        (lambda: ip("netns", "del", nginx1), f"namespace {nginx1} deleted"),
    ]
    for make, reason in drifts:
        made = time.monotonic()
        make()
        entry = agent.next(within=5)
        reasons = reason if isinstance(reason, tuple) else (reason,)
        assert entry["trigger"] == "drift" and any(r in entry["reason"] for r in reasons), entry
        assert entry["result"] == "applied", entry
        assert time.monotonic() - made < 2.0, entry
        assert box.plan_exit() == 0, reason
        agent.quiet_for(0.5)
    assert box.ping(nginx1, "172.17.0.1")


def test_the_file_is_followed_by_content_through_a_symlink_swap_and_a_bad_one_is_not_applied(sandbox_factory, agents,
                                                                                            tmp_path):
    box = sandbox_factory("docker0.yaml")
    # a ConfigMap's layout: the file is a symlink through ..data, itself a symlink swapped by rename
    mount = tmp_path / "mount"
    (mount / "v1").mkdir(parents=True)
    (mount / "v1" / "topology.yaml").write_text(box.path.read_text())
    os.symlink("v1", mount / "..data")
    os.symlink("..data/topology.yaml", mount / "topology.yaml")
    agent = agents(mount / "topology.yaml")
    assert agent.next()["result"] == "applied"

    os.utime(mount / "v1" / "topology.yaml")  # a new mtime, the same content
    agent.quiet_for(1.0)

    changed = box.path.read_text().replace("mtu: 1500", "mtu: 1400")
    assert changed != box.path.read_text()
    (mount / "v2").mkdir()
    (mount / "v2" / "topology.yaml").write_text(changed)
    os.symlink("v2", mount / "..data_tmp")
    os.rename(mount / "..data_tmp", mount / "..data")
    entry = agent.next()
    assert (entry["trigger"], entry["result"]) == ("file", "applied"), entry
    assert json.loads(ip("-n", box.host(), "-j", "link", "show", "docker0").stdout)[0]["mtu"] == 1400

    (mount / "v2" / "topology.yaml").write_text(changed + "bridges: [\n")  # broken YAML
    entry = agent.next()
    assert (entry["trigger"], entry["result"]) == ("file", "invalid"), entry
    assert "topology.yaml:" in entry["message"] and entry["hint"]
    assert json.loads(ip("-n", box.host(), "-j", "link", "show", "docker0").stdout)[0]["mtu"] == 1400  # kept
    ip("-n", box.host(), "link", "del", "veth-nginx1")  # drift is still repaired, to the last good file
    entry = agent.next()
    assert (entry["trigger"], entry["result"]) == ("drift", "applied"), entry

    (mount / "v2" / "topology.yaml").write_text(box.path.read_text())  # fixed: back to mtu 1500
    entry = agent.next()
    assert (entry["trigger"], entry["result"]) == ("file", "applied"), entry
    assert json.loads(ip("-n", box.host(), "-j", "link", "show", "docker0").stdout)[0]["mtu"] == 1500


def test_a_failing_apply_is_retried_with_backoff_and_a_hand_apply_works_beside_the_agent(sandbox_factory, agents):
    box = sandbox_factory("point-to-point.yaml")
    left = box.ns("left")
    ip("netns", "add", left)  # someone else's namespace under the topology's name: a conflict
    try:
        agent = agents(box.path)
        first = agent.next()
        assert first["result"] == "failed" and first["message"] and first["retry_in"] == 1.0, first
        again = agent.next(within=5)
        assert (again["trigger"], again["result"], again["retry_in"]) == ("retry", "failed", 2.0), again
    finally:
        ip("netns", "del", left)
    entry = agent.next(within=5)
    assert (entry["trigger"], entry["result"]) == ("retry", "applied"), entry
    assert box.plan_exit() == 0
    box.run("apply")  # by hand, beside the agent: the lock is taken per reconciliation
    agent.quiet_for(1.0)


def test_sigterm_ends_the_agent_at_once_and_leaves_the_topology(sandbox_factory, agents):
    box = sandbox_factory("point-to-point.yaml")
    agent = agents(box.path, "--interval", "1")
    assert agent.next()["result"] == "applied"
    entry = agent.next(within=3)  # the safety net: a full plan every --interval
    assert (entry["trigger"], entry["result"]) == ("interval", "in-sync"), entry
    sent = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - sent < 2.0
    assert box.ns("left") in netns_names() and box.plan_exit() == 0


def test_an_overlay_entry_deleted_by_hand_is_put_back_on_one_host_of_several(sandbox_factory, agents):
    box = sandbox_factory("vxlan-2hosts.yaml")
    agent = agents(box.path, "--host", "node1")
    assert agent.next()["result"] == "applied"
    agent.quiet_for(1.0)  # its confirming plan after the start is over: the deletion is drift, not a race with it
    node1 = box.host("node1")
    neighbours = json.loads(ip("-n", node1, "-j", "neigh", "show", "nud", "permanent").stdout)
    device = next(n for n in neighbours if n["dst"].startswith("10.244."))
    ip("-n", node1, "neigh", "del", device["dst"], "dev", device["dev"])
    entry = agent.next(within=5)
    assert entry["trigger"] == "drift" and "overlay entry" in entry["reason"], entry
    assert entry["result"] == "applied"
    assert box.run("plan", "--host", "node1", "-d", expect=None).returncode == 0
