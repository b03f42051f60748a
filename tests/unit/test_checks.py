"""Semantic checks beyond the schema: each rule, with the place it reports. No root."""

from __future__ import annotations

import pytest

from topoctl.applier import Context, realise
from topoctl.errors import InvalidTopology
from topoctl.loader import load_text
from topoctl.render import render_build, render_teardown

HEAD = "apiVersion: topoctl/v1\nkind: Topology\nname: t\n"


def problems(body: str) -> list[tuple[int, int, str]]:
    with pytest.raises(InvalidTopology) as caught:
        load_text(HEAD + body, "t.yaml")
    return [(d.line, d.column, d.message) for d in caught.value.diagnostics]


def test_a_veth_cannot_join_two_hosts():
    body = ("hosts: {a: {}, b: {}}\nnamespaces:\n  x: {host: a}\n  y: {host: b}\nlinks:\n  - type: veth\n"
            "    endpoints:\n      - {namespace: x, name: e0}\n      - {namespace: y, name: e0}\n")
    ((line, col, message),) = problems(body)
    assert (line, col) == (9, 5)
    assert "joins hosts 'a' and 'b'" in message


def test_the_same_route_with_and_without_its_default_metric_is_a_duplicate():
    body = ("namespaces:\n  x:\n    routes:\n      - {to: 10.9.0.0/16, dev: e0}\n"
            "      - {to: 10.9.0.0/16, dev: e0, metric: 0}\n"
            "links:\n  - type: veth\n    endpoints:\n      - {namespace: x, name: e0}\n      - {name: h0}\n")
    ((line, col, message),) = problems(body)
    assert (line, col) == (8, 14)
    assert "given twice" in message and "metric 0" in message


def test_two_hosts_with_one_underlay_address():
    body = "hosts:\n  a: {address: 10.168.0.2/24}\n  b: {address: 10.168.0.2/24}\n"
    ((line, col, message),) = problems(body)
    assert (line, col) == (6, 16)
    assert "10.168.0.2 is used twice" in message


def test_a_link_local_gateway_needs_dev_and_is_accepted_with_it():
    body = "routes:\n  - {to: default6, via: 'fe80::1'}\n"
    ((line, col, message),) = problems(body)
    assert (line, col) == (5, 25) and "needs 'dev'" in message
    load_text(HEAD + "routes:\n  - {to: default6, via: 'fe80::1', dev: eth0}\n", "t.yaml")


def test_a_host_route_through_the_underlay_interface_is_accepted():
    text = HEAD + ("hosts:\n  a: {address: 10.168.0.2/24}\n"
                   "routes:\n  - {to: 10.244.2.0/24, via: 10.168.0.3, dev: eth0}\n"
                   "  - {to: 10.244.3.0/24, via: 10.168.0.4}\n")
    topology = load_text(text, "t.yaml")
    assert [str(r.route.to) for r in topology.routes] == ["10.244.2.0/24", "10.244.3.0/24"]


def test_host_routes_render_with_their_ownership_records():
    text = HEAD + "hosts: {a: {address: 10.168.0.2/24}}\nroutes:\n  - {to: 10.244.2.0/24, via: 10.168.0.3, dev: eth0}\n"
    topology = load_text(text, "t.yaml")
    context = Context(topology, realise(topology, None, False))
    build = render_build(context)
    assert "ip -4 route add 10.244.2.0/24 via 10.168.0.3 dev eth0 metric 0 proto 116 table 254" in build
    assert "mkdir -p /run/topoctl/routes/t && : > /run/topoctl/routes/t/254_10.244.2.0_24_0" in build
    teardown = render_teardown(context)
    assert "ip -4 route del 10.244.2.0/24 via 10.168.0.3 dev eth0" in teardown
    assert "rm -f /run/topoctl/routes/t/254_10.244.2.0_24_0" in teardown
