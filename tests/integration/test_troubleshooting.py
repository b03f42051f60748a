"""Issue 14: trace shows the rule and verdict that met a probe and leaves no trace table, also
when stopped; graph --live draws what broke; ls lists what is deployed; show has the bridge
view; conflicts name their owner. Real namespaces under --emulate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from .conftest import ROOT, TOPOCTL

pytestmark = pytest.mark.root


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


def trace_tables_left(box) -> list[str]:
    scopes = [box.host(), box.host("underlay"), box.ns("nginx-1"), box.ns("nginx-2")]
    return [f"{scope}: {line}" for scope in scopes
            for line in sh("ip", "netns", "exec", scope, "nft", "list", "tables").splitlines() if "topoctltrace_" in line]


def trace(box, *args: str, expect: int = 0) -> dict:
    done = subprocess.run([*TOPOCTL, "trace", "--emulate", "-o", "json", str(box.path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == expect and "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_trace_of_an_allowed_probe_shows_its_hops_and_of_a_dropped_one_the_rule(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    report = trace(box, box.ns("nginx-1"), box.ns("nginx-2"))
    assert report["reached"] is True and report["detail"] == "reply"
    marks = {(e["netns"], e["family"], e["chain"]) for e in report["events"] if e["topoctl_trace_table"]}
    assert {(box.ns("nginx-1"), "inet", "out"), (box.host(), "bridge", "pre"), (box.ns("nginx-2"), "inet", "pre")} <= marks
    assert trace_tables_left(box) == []

    sh("ip", "netns", "exec", box.ns("nginx-2"), "nft", "add table inet evil; add chain inet evil input { type filter "
       "hook input priority 0; policy accept; }; add rule inet evil input icmp type echo-request drop")
    report = trace(box, box.ns("nginx-1"), box.ns("nginx-2"))
    assert report["reached"] is False
    drops = {(e["netns"], e["table"], e["chain"], e["rule"]) for e in report["events"] if e["verdict"] == "drop"}
    assert drops == {(box.ns("nginx-2"), "evil", "input", "icmp type echo-request drop")}  # each echo sent
    assert trace_tables_left(box) == []
    sh("ip", "netns", "exec", box.ns("nginx-2"), "nft", "delete table inet evil")


def test_trace_names_topoctls_own_rule_when_the_design_blocks(sandbox_factory):
    data = yaml.safe_load((ROOT / "topologies" / "docker0.yaml").read_text())
    data["bridges"]["docker0"]["icc"] = False
    box = sandbox_factory(data)
    box.apply()
    report = trace(box, box.ns("nginx-1"), box.ns("nginx-2"))
    drops = {(e["netns"], e["family"], e["table"], e["rule"]) for e in report["events"] if e["verdict"] == "drop"}
    assert report["reached"] is False and len(drops) == 1  # (the same drop of each ARP retry)
    ((netns, family, table, rule),) = drops
    assert (netns, family, table) == (box.host(), "bridge", f"topoctl-{box.topology}") and "drop" in rule
    # text output: the rule and its verdict on one line
    done = subprocess.run([*TOPOCTL, "trace", "--emulate", str(box.path), box.ns("nginx-1"), box.ns("nginx-2")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert f"bridge topoctl-{box.topology} forward: {rule} -> drop" in done.stdout, done.stdout  # (printed once)


def test_trace_removes_its_tables_when_terminated_and_after_a_sigkill_the_next_trace_does(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    sh("ip", "netns", "exec", box.ns("nginx-2"), "nft", "add table inet evil; add chain inet evil input { type filter "
       "hook input priority 0; policy drop; }")
    try:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            run = subprocess.Popen([*TOPOCTL, "trace", "--emulate", str(box.path), box.ns("nginx-1"), box.ns("nginx-2")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            deadline = time.monotonic() + 20
            while not trace_tables_left(box) and time.monotonic() < deadline:
                time.sleep(0.02)  # the probe is dropped: the trace waits for its reply, tables in place
            assert trace_tables_left(box), "the trace never wrote its tables"
            run.send_signal(signum)
            _, err = run.communicate(timeout=30)
            if signum == signal.SIGTERM:
                assert run.returncode == 143 and "Traceback" not in err, err
                assert trace_tables_left(box) == []
            else:
                assert trace_tables_left(box) != []  # nothing can clean up after a SIGKILL...
        sh("ip", "netns", "exec", box.ns("nginx-2"), "nft", "delete table inet evil")
        assert trace(box, box.ns("nginx-1"), box.ns("nginx-2"))["reached"] is True
        assert trace_tables_left(box) == []  # ...but the next trace removes what a dead one left
    finally:
        subprocess.run(["ip", "netns", "exec", box.ns("nginx-2"), "nft", "delete table inet evil"], capture_output=True)


def test_graph_live_draws_a_down_cable_and_a_missing_namespace(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()

    def graph() -> dict:
        return json.loads(box.run("graph", "--live", "-f", "json").stdout)

    assert {n["status"] for n in graph()["nodes"]} == {"ok"} and {e["status"] for e in graph()["edges"]} == {"ok"}
    sh("ip", "-n", box.host(), "link", "set", "veth-nginx2", "down")
    sh("ip", "netns", "del", box.ns("nginx-1"))
    picture = graph()
    nodes = {n["id"]: n["status"] for n in picture["nodes"]}
    edges = {e["label"].split(" — ")[1]: e["status"] for e in picture["edges"] if e["kind"] == "veth"}
    assert nodes[f"ns/{box.ns('nginx-1')}"] == "missing" and edges == {"veth-nginx1": "missing", "veth-nginx2": "down"}
    box.apply()
    assert {e["status"] for e in graph()["edges"]} == {"ok"}


def test_ls_lists_what_is_deployed_with_its_file_and_plan(sandbox_factory):
    box = sandbox_factory("docker0.yaml")

    def listed() -> dict | None:
        rows = json.loads(subprocess.run([*TOPOCTL, "ls", "-o", "json"], capture_output=True, text=True,
                                         check=True, cwd=ROOT).stdout)
        return next((r for r in rows if r["topology"] == box.topology), None)

    assert listed() is None
    box.apply()
    row = listed()
    assert row == {"topology": box.topology, "hosts": ["local"], "emulate": True, "namespaces": 4, "links": 8,
                   "plan": "empty", "file": str(box.path)}
    sh("ip", "-n", box.host(), "link", "set", "veth-nginx2", "down")
    assert listed()["plan"] == "1 action pending"
    box.run("destroy")
    assert listed() is None


def test_show_has_the_bridge_view_with_each_ports_peer(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    (bridge, underlay) = box.show()["bridges"]
    assert (bridge["netns"], bridge["bridge"]) == (box.host(), "docker0")
    assert [(p["port"], p["peer"]["netns"], p["peer"]["name"]) for p in bridge["ports"]] == [
        ("veth-nginx1", box.ns("nginx-1"), "eth0"), ("veth-nginx2", box.ns("nginx-2"), "eth0")]
    assert underlay["bridge"] == "br-underlay"
    text = subprocess.run([*TOPOCTL, "show", "--emulate", str(box.path)], capture_output=True, text=True, check=True,
                          cwd=ROOT, env={**os.environ, "COLUMNS": "300"}).stdout  # no cell cut short
    index = sh("ip", "-n", box.ns("nginx-1"), "-o", "link", "show", "eth0").split(":")[0]
    view = text[text.index("Bridges (brctl show)"):]
    row = next((line for line in view.splitlines() if "veth-nginx1" in line), None)
    assert row is not None, text
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[1:4] == ["docker0", "no", "veth-nginx1"] and cells[5] == "up", cells
    assert cells[6] == f"eth0@{box.ns('nginx-1')}" and cells[7] == index  # the peer's ifindex, as ip link's @ifN


def test_a_conflict_with_another_topology_names_it(sandbox_factory):
    first = sandbox_factory("docker0.yaml")
    first.apply()
    data = json.loads(json.dumps(first.original))
    data["name"] = "other"
    second = sandbox_factory(data)
    second.write({**data, "namespaces": {"nginx-9": {}}, "links": [], "bridges": {}})
    second.data["namespaces"] = {first.ns("nginx-1"): {}}
    second.path.write_text(yaml.safe_dump(second.data, sort_keys=False))
    result = second.run("plan", expect=1)
    assert f"namespace {first.ns('nginx-1')} already exists and belongs to topology '{first.topology}'" in result.stderr
    assert f"it belongs to topology '{first.topology}': destroy that topology first" in result.stderr
    assert "never takes over" not in result.stderr
