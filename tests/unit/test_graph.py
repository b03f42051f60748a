"""topoctl graph from data: every example's dot goes through Graphviz, mermaid starts with
its header, both name every namespace and bridge; the JSON has its documented shape. No root."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from topoctl.output.graph import DOWN, MISSING, build_graph, only_host, to_dot, to_json, to_mermaid
from topoctl.spec.loader import load_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "topologies").glob("*.yaml"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_draws_in_every_format(name):
    topology = load_file(ROOT / "topologies" / name)
    picture = build_graph(topology)
    dot = to_dot(picture)
    assert shutil.which("dot"), "Graphviz's dot is missing: make sysdeps installs graphviz"
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
    assert svg.returncode == 0, svg.stderr
    assert svg.stdout.lstrip().startswith("<?xml") and "<svg" in svg.stdout
    mermaid = to_mermaid(picture)
    assert mermaid.startswith("flowchart LR\n")
    for ns in topology.namespaces:
        assert f'"ns/{ns.name}"' in dot and f'["{ns.name}"]' in mermaid
        assert f">{ns.name}</text>".replace("-", "&#45;") in svg.stdout  # Graphviz writes - as &#45;
    for bridge in topology.bridges:
        assert f'"bridge/{bridge.host}/{bridge.name}"' in dot and bridge.name in mermaid
    for link in topology.links:  # a cable is labelled with both interface names and the addresses
        assert all(end.name in dot and all(str(a) in dot for a in end.addresses) for end in (link.a, link.b))
    shape = json.loads(to_json(picture))
    assert set(shape) == {"topology", "hosts", "nodes", "edges"}
    assert all(set(n) == {"id", "kind", "label", "host", "status"} for n in shape["nodes"])
    assert all(set(e) == {"from", "to", "kind", "label", "status"} for e in shape["edges"])
    ids = {n["id"] for n in shape["nodes"]}
    assert all(e["from"] in ids and e["to"] in ids for e in shape["edges"])


def test_live_statuses_are_drawn_and_one_host_can_be_drawn_alone():
    topology = load_file(ROOT / "topologies" / "vxlan-2hosts.yaml")
    picture = build_graph(topology, {("veth", 0): DOWN, ("namespace", "db-1"): MISSING})
    dot = to_dot(picture)
    assert "veth-web1 [down]" in dot and "color=red" in dot and "db-1\\n[missing]" in dot
    assert "linkStyle 0 stroke:red" in to_mermaid(picture)
    alone = only_host(picture, "node1")
    assert [c[0] for c in alone.clusters] == ["node1"]
    assert not any(n.id.startswith("ns/db") for n in alone.nodes)
    assert any(e.kind == "overlay" for e in alone.edges)  # the tunnel to node2 stays, node2 drawn outside


def test_the_cli_writes_svg(tmp_path):
    done = subprocess.run([sys.executable, "-m", "topoctl", "graph", "-f", "svg", str(ROOT / "topologies" / "docker0.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "<svg" in done.stdout, done.stderr
