"""Issue 14: `topoctl check` passes on every example once applied, and for each break made by
hand it exits 2 with an explanation that names the namespace, the interface or table and the
cause; after `apply`, it exits 0 again. Real namespaces under --emulate, traffic only between
the topology's own namespaces."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from .conftest import ROOT

pytestmark = pytest.mark.root

ROW_KEYS = {"group", "kind", "from", "to", "target", "port", "size", "expected", "why", "reached", "as_designed",
            "detail", "seconds", "explanation"}


def check(box, expect: int) -> list[dict]:
    rows = json.loads(box.run("check", "-o", "json", expect=expect).stdout)
    assert rows and all(set(row) == ROW_KEYS for row in rows)
    return rows


def wrong(rows: list[dict]) -> list[dict]:
    return [row for row in rows if not row["as_designed"]]


def explanations(rows: list[dict]) -> str:
    return "\n".join(hop["text"] for row in wrong(rows) for hop in row["explanation"] if not hop["ok"])


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


@pytest.mark.parametrize("example", ["docker0.yaml", "routed.yaml", "vxlan-2hosts.yaml", "host-gw-3hosts.yaml",
                                     "point-to-point.yaml"])
def test_check_passes_on_every_example_once_applied(sandbox_factory, example):
    box = sandbox_factory(example)
    box.apply()
    rows = check(box, 0)
    assert wrong(rows) == []
    assert all(row["reached"] and row["explanation"] == [] for row in rows)


def test_check_before_apply_says_the_namespaces_are_missing(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    rows = check(box, 2)
    assert all(not row["reached"] for row in rows)
    assert "does not exist" in rows[0]["detail"]


DOCKER0_BREAKS = {
    # name: (commands, from, target, words in the explanation)
    "veth host end down": (lambda b: [["ip", "-n", b.host(), "link", "set", "veth-nginx2", "down"]],
                           "nginx-1", "172.17.0.3", lambda b: f"veth-nginx2 in {b.host()} is down"),
    "container address removed": (lambda b: [["ip", "-n", b.ns("nginx-2"), "addr", "del", "172.17.0.3/16", "dev", "eth0"]],
                                  "nginx-1", "172.17.0.3",
                                  lambda b: f"no interface behind bridge docker0 in {b.host()} has 172.17.0.3"),
    "default route removed": (lambda b: [["ip", "-n", b.ns("nginx-1"), "route", "del", "default"]],
                              "nginx-1", "192.0.2.1", lambda b: f"no route to 192.0.2.1 in {b.ns('nginx-1')}"),
    "host forwarding off": (lambda b: [["ip", "netns", "exec", b.host(), "sysctl", "-qw", "net.ipv4.ip_forward=0"]],
                            "nginx-1", "192.0.2.1", lambda b: f"dropped at {b.host()}: net.ipv4.ip_forward is 0"),
    "policy rule to a blackhole": (
        lambda b: [["ip", "-n", b.ns("nginx-1"), "rule", "add", "to", "192.0.2.1", "table", "100", "prio", "100"],
                   ["ip", "-n", b.ns("nginx-1"), "route", "add", "blackhole", "192.0.2.1", "table", "100"]],
        "nginx-1", "192.0.2.1",
        lambda b: f"the kernel has no route to 192.0.2.1 in {b.ns('nginx-1')} (ip route get), though the main "
                  "table has 0.0.0.0/0 dev eth0: a policy rule sends it to another table"),
    "foreign table dropping ICMP": (
        lambda b: [["ip", "netns", "exec", b.ns("nginx-2"), "nft", "add table inet evil; add chain inet evil input "
                    "{ type filter hook input priority 0; policy accept; }; add rule inet evil input icmp type "
                    "echo-request drop"]],
        "nginx-1", "172.17.0.3",
        lambda b: f"table inet evil in {b.ns('nginx-2')} (not topoctl's), chain input (hook input): "
                  "icmp type echo-request drop"),
}


@pytest.mark.parametrize("name", sorted(DOCKER0_BREAKS))
def test_a_break_in_docker0_is_found_and_explained_then_repaired(sandbox_factory, name):
    commands, source, target, words = DOCKER0_BREAKS[name]
    box = sandbox_factory("docker0.yaml")
    box.apply()
    assert wrong(check(box, 0)) == []
    for command in commands(box):
        sh(*command)
    rows = check(box, 2)
    failing = [(row["from"], row["target"]) for row in wrong(rows)]
    assert (box.ns(source), target) in failing, failing
    assert words(box) in explanations(rows), explanations(rows)
    if name == "foreign table dropping ICMP":
        sh("ip", "netns", "exec", box.ns("nginx-2"), "nft", "delete table inet evil")  # not topoctl's to remove
    elif name == "policy rule to a blackhole":
        sh("ip", "-n", box.ns("nginx-1"), "rule", "del", "prio", "100")  # rules are not topoctl's either
    else:
        box.apply()
    assert wrong(check(box, 0)) == []


def _fdb_entry(scope: str, dst: str) -> str:
    shown = subprocess.run(["bridge", "-n", scope, "fdb", "show", "dev", "flannel.1"], capture_output=True,
                           text=True, check=True).stdout
    return next(line.split()[0] for line in shown.splitlines() if f"dst {dst}" in line)


def test_overlay_breaks_are_found_and_explained(sandbox_factory):
    box = sandbox_factory("vxlan-2hosts.yaml")
    box.apply()
    assert wrong(check(box, 0)) == []
    node1, node2 = box.host("node1"), box.host("node2")

    mac = _fdb_entry(node1, "10.168.0.3")
    sh("bridge", "-n", node1, "fdb", "del", mac, "dev", "flannel.1", "dst", "10.168.0.3")
    rows = check(box, 2)
    assert {row["from"] for row in wrong(rows)} >= {box.ns("web-1")}
    assert f"no FDB entry for {mac} (10.244.2.0) on flannel.1 in {node1}" in explanations(rows)
    box.apply()

    sh("ip", "-n", node2, "link", "set", "veth-db1", "mtu", "1400")
    rows = check(box, 2)
    full = [row for row in wrong(rows) if row["group"] == "path-mtu"]
    assert full and all(row["size"] == 1422 for row in full), wrong(rows)
    assert f"veth-db1 in {node2} has MTU 1400: a 1450-byte packet with DF set is dropped there" in explanations(rows)
    assert not [row for row in wrong(rows) if row["size"] is None]  # the small probes still pass
    box.apply()
    assert wrong(check(box, 0)) == []


def test_what_the_design_forbids_must_not_pass(sandbox_factory):
    data = yaml.safe_load((ROOT / "topologies" / "docker0.yaml").read_text())
    data["bridges"]["docker0"]["icc"] = False
    box = sandbox_factory(data)
    box.apply()
    rows = check(box, 0)
    blocked = [row for row in rows if row["expected"] == "blocked"]
    assert [(row["from"], row["target"], row["why"], row["reached"]) for row in blocked] == [
        (box.ns("nginx-1"), "172.17.0.3", "icc: false on bridge docker0", False)]
    sh("ip", "netns", "exec", box.host(), "nft", f"delete table bridge topoctl-{box.topology}")
    rows = check(box, 2)
    assert [row["target"] for row in wrong(rows)] == ["172.17.0.3"]
    assert "passed, but the design forbids it (icc: false on bridge docker0)" in explanations(rows)
    box.apply()
    assert wrong(check(box, 0)) == []


def test_from_and_to_narrow_the_probes_and_an_address_gets_its_own(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    rows = json.loads(box.run("check", "-o", "json", "--from", box.ns("nginx-2"), expect=0).stdout)
    assert rows and {row["from"] for row in rows} == {box.ns("nginx-2")}
    rows = json.loads(box.run("check", "-o", "json", "--from", box.ns("nginx-2"), "--to", "172.17.0.2",
                              expect=0).stdout)
    assert [(row["group"], row["target"]) for row in rows] == [("asked", "172.17.0.2")]
    result = box.run("check", "--to", "nowhere", expect=2)
    assert "--to 'nowhere' is not a namespace or host" in result.stderr
