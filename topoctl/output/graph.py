"""`topoctl graph`: the design as a picture. Hosts are clusters, bridges and namespaces nodes,
veth cables edges labelled with both interface names and addresses, overlays edges between
hosts; with --live, what the kernel shows is drawn over it (missing, down, drift). Pure: the
model is built from the topology (and live statuses), then written as dot, mermaid or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from topoctl.spec.model import Endpoint, Topology, place_of

OK, MISSING, DOWN, DRIFT = "ok", "missing", "down", "drift"


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # host | bridge | namespace | underlay
    label: str
    cluster: str | None  # the host it is drawn in; None outside every host
    status: str = OK


@dataclass(frozen=True)
class Edge:
    a: str
    b: str
    kind: str  # veth | overlay | underlay
    label: str
    status: str = OK


@dataclass
class Graph:
    name: str
    clusters: list[tuple[str, str]] = field(default_factory=list)  # (host, label)
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"topology": self.name,
                "hosts": [{"name": h, "label": label} for h, label in self.clusters],
                "nodes": [{"id": n.id, "kind": n.kind, "label": n.label, "host": n.cluster, "status": n.status}
                          for n in self.nodes],
                "edges": [{"from": e.a, "to": e.b, "kind": e.kind, "label": e.label, "status": e.status}
                          for e in self.edges]}


def _end_label(end: Endpoint) -> str:
    return " ".join([end.name] + [str(a) for a in end.addresses])


def build_graph(topology: Topology, statuses: dict[tuple, str] | None = None) -> Graph:
    """statuses: ("namespace", name) / ("bridge", host, name) / ("veth", index) -> a status,
    from the live state (--live); missing keys are ok."""
    statuses = statuses or {}
    graph = Graph(topology.name)
    for host in topology.hosts:
        extra = f"\\n{host.address}" if host.address is not None else ""
        graph.clusters.append((host.name, f"host {host.name}{extra}"))
    for bridge in topology.bridges:
        label = " ".join([bridge.name] + [str(a) for a in bridge.addresses])
        graph.nodes.append(Node(f"bridge/{bridge.host}/{bridge.name}", "bridge", label, bridge.host,
                                statuses.get(("bridge", bridge.host, bridge.name), OK)))
    for ns in topology.namespaces:
        graph.nodes.append(Node(f"ns/{ns.name}", "namespace", ns.name, ns.host, statuses.get(("namespace", ns.name), OK)))
    hosts_with_ends = set()
    for i, link in enumerate(topology.links):
        ids = []
        for end in (link.a, link.b):
            if end.namespace is not None:
                ids.append(f"ns/{end.namespace}")
            elif end.bridge is not None:
                bridge = topology.bridge(end.bridge)
                ids.append(f"bridge/{bridge.host}/{bridge.name}" if bridge else f"bridge/?/{end.bridge}")
            else:
                place = place_of(topology, end)
                host = place.host if place else (end.host or "?")
                hosts_with_ends.add(host)
                ids.append(f"host/{host}")
        graph.edges.append(Edge(ids[0], ids[1], "veth", f"{_end_label(link.a)} — {_end_label(link.b)}",
                                statuses.get(("veth", i), OK)))
    for host in sorted(hosts_with_ends):
        graph.nodes.append(Node(f"host/{host}", "host", f"{host} (own namespace)", host))
    addressed = [h for h in topology.hosts if h.address is not None]
    if addressed:
        graph.nodes.append(Node("underlay", "underlay", "underlay", None))
        for host in addressed:
            anchor = f"host/{host.name}"
            if anchor not in {n.id for n in graph.nodes}:
                graph.nodes.append(Node(anchor, "host", f"{host.name} (own namespace)", host.name))
            label = f"{host.interface or 'eth0'} {host.address}" + (f" gw {host.gateway}" if host.gateway else "")
            graph.edges.append(Edge(anchor, "underlay", "underlay", label))
    hosts_drawn = {n.id for n in graph.nodes if n.kind == "host"}
    for node in list(graph.nodes):
        if node.kind == "bridge" and f"host/{node.cluster}" in hosts_drawn:
            graph.edges.append(Edge(node.id, f"host/{node.cluster}", "local", ""))  # the bridge is in that namespace
    for overlay in topology.overlays:
        members = [name for name, _ in overlay.subnets]
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                what = f"vxlan {overlay.device} vni {overlay.vni}" if overlay.type == "vxlan" else "host-gw"
                graph.edges.append(Edge(f"host/{a}", f"host/{b}", "overlay",
                                        f"{overlay.name}: {what} ({overlay.subnet_of(a)} / {overlay.subnet_of(b)})"))
                for host in (a, b):
                    if f"host/{host}" not in {n.id for n in graph.nodes}:
                        graph.nodes.append(Node(f"host/{host}", "host", f"{host} (own namespace)", host))
    return graph


def only_host(graph: Graph, host: str) -> Graph:
    """The part of the picture on one host, with the underlay and the overlays that reach it."""
    nodes = [n for n in graph.nodes if n.cluster in (host, None)]
    kept = {n.id for n in nodes}
    edges = [e for e in graph.edges if e.a in kept or e.b in kept]
    for edge in edges:  # the other end of an overlay: drawn, outside the host
        for end in (edge.a, edge.b):
            if end not in kept:
                kept.add(end)
                nodes.append(Node(end, "host", end.split("/", 1)[-1] + " (another host)", None))
    return Graph(graph.name, [c for c in graph.clusters if c[0] == host], nodes, edges)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\\\\n", "\\n") + '"'


_DOT_NODE = {"bridge": 'shape=box, style="rounded,filled", fillcolor="#dbe9f6"',
             "namespace": 'shape=box, style=filled, fillcolor="#f3f3f3"',
             "host": 'shape=box, style=dashed', "underlay": 'shape=ellipse, style=filled, fillcolor="#eeeeee"'}
_DOT_STATUS = {MISSING: 'color=red, fontcolor=red, style=dashed', DOWN: 'color=red, fontcolor=red',
               DRIFT: 'color=orange, fontcolor=darkorange'}


def to_dot(graph: Graph) -> str:
    lines = [f"graph {_q(graph.name)} {{", '  graph [rankdir=LR, fontname="Helvetica", fontsize=11];',
             '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=9];']
    for host, label in graph.clusters:
        lines.append(f"  subgraph {_q('cluster_' + host)} {{")
        lines.append(f"    label={_q(label)}; style=rounded; color=gray;")
        for node in graph.nodes:
            if node.cluster == host:
                lines.append(f"    {_node_dot(node)}")
        lines.append("  }")
    lines += [f"  {_node_dot(node)}" for node in graph.nodes if node.cluster is None]
    for edge in graph.edges:
        style = {"overlay": ", style=dashed, color=blue", "underlay": ", color=gray",
                 "local": ", style=dotted, color=gray"}.get(edge.kind, "")
        status = f", {_DOT_STATUS[edge.status]}" if edge.status in _DOT_STATUS else ""
        label = edge.label + ("" if edge.status == OK else f" [{edge.status}]")
        lines.append(f"  {_q(edge.a)} -- {_q(edge.b)} [label={_q(label)}{style}{status}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_dot(node: Node) -> str:
    label = node.label + ("" if node.status == OK else f"\\n[{node.status}]")
    status = f", {_DOT_STATUS[node.status]}" if node.status in _DOT_STATUS else ""
    return f"{_q(node.id)} [label={_q(label)}, {_DOT_NODE[node.kind]}{status}];"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\\n", "<br/>")


def to_mermaid(graph: Graph) -> str:
    ids = {node.id: f"n{i}" for i, node in enumerate(graph.nodes)}
    shape = {"bridge": ('(["', '"])'), "namespace": ('["', '"]'), "host": ('[/"', '"/]'), "underlay": ('(("', '"))')}
    lines = ["flowchart LR"]

    def node_line(node: Node, indent: str) -> str:
        left, right = shape[node.kind]
        label = node.label + ("" if node.status == OK else f" [{node.status}]")
        return f"{indent}{ids[node.id]}{left}{_mermaid_text(label)}{right}"

    for i, (host, label) in enumerate(graph.clusters):
        lines.append(f'  subgraph h{i}["{_mermaid_text(label)}"]')
        lines += [node_line(n, "    ") for n in graph.nodes if n.cluster == host]
        lines.append("  end")
    lines += [node_line(n, "  ") for n in graph.nodes if n.cluster is None]
    styles = []
    for k, edge in enumerate(graph.edges):
        arrow = "-.-" if edge.kind in ("overlay", "local") else "---"
        label = edge.label + ("" if edge.status == OK else f" [{edge.status}]")
        text = f'|"{_mermaid_text(label)}"|' if label else ""
        lines.append(f'  {ids.get(edge.a, "missing")} {arrow}{text} {ids.get(edge.b, "missing")}')
        if edge.status != OK:
            styles.append(f"  linkStyle {k} stroke:{'orange' if edge.status == DRIFT else 'red'}")
    for node in graph.nodes:
        if node.status != OK:
            styles.append(f"  style {ids[node.id]} stroke:{'orange' if node.status == DRIFT else 'red'}")
    return "\n".join(lines + styles) + "\n"


def to_json(graph: Graph) -> str:
    return json.dumps(graph.as_json(), indent=2, ensure_ascii=False) + "\n"


def live_statuses(topology: Topology, realisation, live, plan) -> dict[tuple, str]:
    """What --live draws: each namespace, bridge and veth of the file as the kernel shows it
    (missing, down), or with the plan's pending changes touching it (drift)."""
    touched: set[tuple] = set()
    for action in plan.actions:
        touched.add((action.scope, None))
        for attribute in ("link", "a", "b", "address", "route", "new", "old"):
            value = getattr(action, attribute, None)
            scope, name = getattr(value, "scope", None), getattr(value, "name", None) or getattr(value, "link", None) \
                or getattr(value, "dev", None)
            if isinstance(name, str):
                touched.add((scope, name))
    statuses: dict[tuple, str] = {}
    for ns in topology.namespaces:
        if ns.host not in realisation.hosts:
            continue
        if ns.name not in live.namespaces:
            statuses[("namespace", ns.name)] = MISSING
        elif (ns.name, None) in touched:
            statuses[("namespace", ns.name)] = DRIFT

    def link_status(keys: list[tuple]) -> str:
        links = [live.links.get(key) for key in keys]
        if any(link is None for link in links):
            return MISSING
        if not all(link.up for link in links):
            return DOWN
        return DRIFT if any(key in touched for key in keys) else OK

    for bridge in topology.bridges:
        if bridge.host in realisation.hosts:
            status = link_status([(realisation.host_scope(bridge.host), bridge.name)])
            if status != OK:
                statuses[("bridge", bridge.host, bridge.name)] = status
    for i, link in enumerate(topology.links):
        places = [place_of(topology, end) for end in (link.a, link.b)]
        if any(p is None or p.host not in realisation.hosts for p in places):
            continue
        status = link_status([(realisation.scope_of(p), end.name) for p, end in zip(places, (link.a, link.b))])
        if status != OK:
            statuses[("veth", i)] = status
    return statuses
