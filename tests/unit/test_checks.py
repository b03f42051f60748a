"""Semantic checks beyond the schema: each rule, with the place it reports. No root."""

from __future__ import annotations

import pytest

from topoctl.core.desired import Deployment as Context
from topoctl.core.realisation import realise
from topoctl.errors import InvalidTopology
from topoctl.spec.loader import load_text
from topoctl.output.render import render_build, render_teardown

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


# --- follow-ons: a check that depends on a value already found invalid is not reported, and
# problems of single values come before problems between objects.

def validate_output(body: str, tmp_path) -> tuple[int, list[str]]:
    from typer.testing import CliRunner

    from topoctl.cli import app

    path = tmp_path / "t.yaml"
    path.write_text(HEAD + body)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert not isinstance(result.exception, Exception), result.exception
    return result.exit_code, [line.replace(str(path), "t.yaml") for line in result.stderr.splitlines()]


ADDRESS_HINT = "  hint: write it as 172.17.0.2/16 or fd00::2/64"
VETH = "links:\n  - type: veth\n    endpoints:\n      - {a}\n      - {b}\n"

FOLLOW_ONS = [
    ("invalid-address-hides-unreachable-gateway",
     "namespaces:\n  a:\n    routes:\n      - {to: default, via: 10.0.0.1}\n"
     + VETH.format(a="{namespace: a, name: eth0, addresses: [10.0.0.300/24]}", b="{name: v0, addresses: [10.0.0.1/24]}"),
     ["t.yaml:11:48: error: '10.0.0.300/24' is not a valid address with prefix length", ADDRESS_HINT,
      "1 problem found"]),
    ("invalid-underlay-address-is-not-a-missing-one",
     "hosts:\n  n1: {address: 10.168.0.300/24}\n  n2: {address: 10.168.0.3/24}\n"
     "overlays:\n  - {name: f, type: vxlan, subnets: {n1: 10.244.1.0/24, n2: 10.244.2.0/24}}\n",
     ["t.yaml:5:17: error: '10.168.0.300/24' is not a valid address with prefix length", ADDRESS_HINT,
      "1 problem found"]),
    ("invalid-subnet-still-counts-as-a-member",
     "hosts:\n  n1: {address: 10.168.0.2/24}\n  n2: {address: 10.168.0.3/24}\n"
     "overlays:\n  - {name: f, type: vxlan, subnets: {n1: 10.244.1.5/24, n2: 10.244.2.0/24}}\n",
     ["t.yaml:8:42: error: '10.244.1.5/24' has host bits set", "  hint: did you mean 10.244.1.0/24?",
      "1 problem found"]),
    ("missing-host-does-not-make-a-veth-join-hosts",
     "hosts: {n1: {}, n2: {}}\nbridges:\n  br0: {host: n2}\nnamespaces:\n  a: {}\n"
     + VETH.format(a="{namespace: a, name: eth0}", b="{bridge: br0, name: v0}"),
     ["t.yaml:8:6: error: namespace a: 'host' is required when the file has more than one host",
      "  hint: add host: one of n1, n2", "1 problem found"]),
    ("unknown-host-of-a-bridge-does-not-make-a-veth-join-hosts",
     "hosts: {n1: {}, n2: {}}\nbridges:\n  br0: {host: n3}\nnamespaces:\n  a: {host: n1}\n"
     + VETH.format(a="{namespace: a, name: eth0}", b="{bridge: br0, name: v0}"),
     ["t.yaml:6:15: error: bridge br0: unknown host 'n3'", "  hint: hosts are: n1, n2", "1 problem found"]),
    ("bridge-without-host-is-not-a-name-clash-on-the-first-host",
     "hosts: {n1: {}, n2: {}}\nbridges:\n  br0: {host: n1}\n  br1: {name: br0}\n",
     ["t.yaml:7:8: error: bridge br1: 'host' is required when the file has more than one host",
      "  hint: add host: one of n1, n2", "1 problem found"]),
    ("misplaced-endpoint-is-not-a-name-clash",
     "namespaces:\n  a: {}\nbridges:\n  br0: {}\n"
     + VETH.format(a="{namespace: a, name: eth0}", b="{namespace: a, bridge: br0, name: eth0}"),
     ["t.yaml:12:9: error: endpoint 'eth0' names namespace and bridge; give exactly one",
      "  hint: namespace: inside a container; bridge: a port of that bridge; host: the host's own namespace",
      "1 problem found"]),
    ("host-route-on-an-unknown-host-is-not-checked-against-another",
     "hosts: {n1: {address: 10.168.0.2/24}}\nroutes:\n  - {host: n9, to: 10.244.2.0/24, via: 10.9.0.3}\n",
     ["t.yaml:6:12: error: route: unknown host 'n9'", "  hint: hosts are: n1", "1 problem found"]),
    # what does not follow from the bad value is still reported, after it
    ("independent-problems-stay-and-come-after-the-bad-value",
     "namespaces:\n  a:\n    routes:\n      - {to: default, via: 10.9.0.1}\n"
     + VETH.format(a="{namespace: zz, name: eth0}", b="{namespace: a, name: eth0, addresses: [10.0.0.2/24, 10.0.0.1/33]}"),
     ["t.yaml:12:61: error: '10.0.0.1/33' is not a valid address with prefix length", ADDRESS_HINT,
      "t.yaml:11:21: error: unknown namespace 'zz'", "  hint: namespaces are: a",
      "2 problems found"]),
]


@pytest.mark.parametrize("body, expected", [f[1:] for f in FOLLOW_ONS], ids=[f[0] for f in FOLLOW_ONS])
def test_a_follow_on_of_an_invalid_value_is_not_reported(body, expected, tmp_path):
    assert validate_output(body, tmp_path) == (2, expected)


def test_the_gateway_check_still_runs_where_the_addresses_are_all_valid(tmp_path):
    """An invalid address elsewhere (on the host end) leaves namespace a's subnets known."""
    body = ("namespaces:\n  a:\n    routes:\n      - {to: default, via: 10.9.0.1}\n"
            + VETH.format(a="{namespace: a, name: eth0, addresses: [10.0.0.2/24]}",
                          b="{name: v0, addresses: [10.0.0.1/24, 10.0.0.300/24]}"))
    assert validate_output(body, tmp_path) == (2, [
        "t.yaml:12:45: error: '10.0.0.300/24' is not a valid address with prefix length", ADDRESS_HINT,
        "t.yaml:7:28: error: gateway 10.9.0.1 is not on any connected subnet of namespace 'a'",
        "  hint: connected subnets: 10.0.0.0/24",
        "2 problems found"])
