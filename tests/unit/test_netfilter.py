"""Issue 13 without root: the keys' validation (FILE:LINE:COL), forwarding derived with its
reason, the tables the design asks for, and the planner's table diffs, from data."""

from __future__ import annotations

from dataclasses import replace

import pytest

from topoctl.core.desired import Deployment
from topoctl.core.nft_text import canonical_rule, parse_tables, table_body
from topoctl.core.planner import plan
from topoctl.core.realisation import realise
from topoctl.core.state import NftChain, NftTable, State
from topoctl.core.table_actions import DeleteTable, WriteTable
from topoctl.errors import InvalidTopology
from topoctl.spec.loader import load_text

HEAD = "apiVersion: topoctl/v1\nkind: Topology\nname: t\n"
BASE = (HEAD + "bridges:\n  docker0: {addresses: [172.17.0.1/16]%s}\n"
        "namespaces:\n  web:\n    routes: [{to: default, via: 172.17.0.1}]\n%s"
        "links:\n  - type: veth\n    endpoints:\n      - {namespace: web, name: eth0, addresses: [172.17.0.2/16]}\n"
        "      - {bridge: docker0, name: veth-web}\n")


def problems(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(InvalidTopology) as caught:
        load_text(text, "t.yaml")
    return [(d.line, d.column, d.message, d.hint) for d in caught.value.diagnostics]


def deployment(text: str, emulate: bool = True) -> Deployment:
    topology = load_text(text, "t.yaml")
    return Deployment(topology, realise(topology, None, emulate))


def test_a_host_port_published_twice_is_refused_where_the_second_is():
    text = BASE % ("", '    ports: ["8080:80", "127.0.0.1:8080:81"]\n')
    ((line, col, message, hint),) = problems(text)
    assert (line, col) == (9, 24)
    assert "published twice" in message and "8080" in message and hint


def test_a_port_needs_an_address_on_a_bridge():
    text = HEAD + 'namespaces:\n  web:\n    ports: ["8080:80"]\n'
    ((line, col, message, _),) = problems(text)
    assert (line, col) == (6, 13) and "no address on a bridge" in message


@pytest.mark.parametrize("port, words", [
    ('"[::1]:8080:80"', "cannot be published on ::1"),
    ('"[fd00::1]:8080:80"', "no IPv6 address"),
    ('"fd00::1:8080:80"', "a published port is [HOST_IP:]HOST_PORT"),
    ('"70000:80"', "not a port number"),
])
def test_a_port_that_cannot_work_is_refused(port, words):
    text = BASE % ("", f"    ports: [{port}]\n")
    found = problems(text)
    assert any(words in message for _, _, message, _ in found), found


@pytest.mark.parametrize("rule, words", [
    ("{port: 80}", "a port needs proto tcp or udp"),
    ("{proto: icmp, from: fd00::/64}", "never matches IPv6"),
    ("{from: 10.0.0.1/8}", "host bits set"),
    ("{proto: gre}", "expected one of 'tcp', 'udp', 'icmp', 'icmpv6'"),
    ("{proto: tcp, port: 90-80}", "ascending range"),
])
def test_a_firewall_rule_that_cannot_work_is_refused(rule, words):
    text = BASE % ("", f"    firewall: {{inbound: {{default: drop, allow: [{rule}]}}}}\n")
    found = problems(text)
    assert any(words in message for _, _, message, _ in found), found


def test_turning_off_forwarding_that_the_design_needs_is_an_error_with_the_reason():
    text = HEAD + "hosts:\n  local: {sysctls: {net.ipv4.ip_forward: '0'}}\n" + (BASE % (", masquerade: true", "")).removeprefix(HEAD)
    ((line, col, message, hint),) = problems(text)
    assert (line, col) == (5, 42)
    assert "bridge docker0 masquerade needs it" in message and "remove the key" in hint


def test_masquerade_needs_an_address():
    text = HEAD + "bridges:\n  br0: {masquerade: true}\n"
    ((_, _, message, _),) = problems(text)
    assert "masquerades but has no address" in message


def test_forwarding_is_derived_with_its_reason_and_a_file_value_wins():
    desired = deployment(BASE % (", masquerade: true", "")).desired
    assert desired.sysctl_reasons[("t-local", "net.ipv4.ip_forward")] == "bridge docker0 masquerade"
    explicit = HEAD + "hosts:\n  local: {sysctls: {net.ipv4.ip_forward: '1'}}\n" + (BASE % ("", "")).removeprefix(HEAD)
    assert ("t-local", "net.ipv4.ip_forward") not in deployment(explicit).desired.sysctl_reasons
    plain = HEAD + "bridges:\n  br0: {addresses: [10.0.0.1/24]}\n"
    assert not deployment(plain).desired.sysctls  # one bridge, nothing routed through it: no forwarding


def test_a_namespace_without_firewall_ports_or_masquerade_gets_no_table():
    desired = deployment(BASE % ("", "")).desired
    assert desired.tables == {}


def test_the_tables_of_the_docker_keys():
    text = BASE % (", masquerade: true, icc: false", '    ports: ["8080:80"]\n    firewall: {inbound: {default: drop}}\n')
    desired = deployment(text, emulate=False).desired
    # icc: false on a bridge of one port has nothing to keep apart: no bridge table
    assert sorted(desired.tables, key=lambda k: (k[0] or "", *k[1:])) == [(None, "inet", "topoctl-t"),
                                                                         ("web", "inet", "topoctl-t")]
    host = desired.tables[(None, "inet", "topoctl-t")]
    rules = {chain.name: chain.rules for chain in host.chains}
    assert rules["prerouting"] == ("fib daddr type local tcp dport 8080 dnat ip to 172.17.0.2:80",)
    assert 'ip saddr 172.17.0.0/16 oifname != "docker0" masquerade' in rules["postrouting"]
    web = desired.tables[("web", "inet", "topoctl-t")]
    assert web.chains[0].header == "type filter hook input priority filter; policy drop;"


def test_table_text_reads_back_as_the_same_table():
    table = NftTable("web", "inet", "topoctl-t", (
        NftChain("input", "type filter hook input priority filter; policy drop;",
                 (canonical_rule('iifname { "b", "a" } accept'), "tcp dport 80 accept")),
        NftChain("output", "type filter hook output priority filter; policy accept;", ())))
    assert parse_tables(table_body(table), "web") == [table]
    # a set the kernel lists in its own order compares equal
    listed = table_body(table).replace('{ "a", "b" }', '{ "b", "a" }')
    assert parse_tables(listed, "web") == [table]


def _with_tables(state: State, *tables: NftTable) -> State:
    state.tables = {t.key: t for t in tables}
    return state


def test_the_planner_rewrites_a_drifted_table_and_deletes_an_unwanted_one():
    ctx = deployment(BASE % ("", "    firewall: {inbound: {default: drop, allow: [{proto: tcp, port: 80}]}}\n"))
    want = ctx.desired.tables[("web", "inet", "topoctl-t")]
    drifted = replace(want, chains=(replace(want.chains[0], rules=want.chains[0].rules[:-1] + ("tcp dport 22 accept",)),
                                    *want.chains[1:]))
    stale = NftTable("t-local", "bridge", "topoctl-t", ())
    from tests.unit.test_planner import as_live

    live = _with_tables(as_live(ctx.desired, "t"), drifted, stale)
    actions = plan(ctx.desired, live, "t").actions
    (write,) = [a for a in actions if isinstance(a, WriteTable)]
    assert write.old == drifted and write.new == want
    assert ("-", "input", "tcp dport 22 accept") in write.changes() and ("+", "input", "tcp dport 80 accept") in write.changes()
    (delete,) = [a for a in actions if isinstance(a, DeleteTable)]
    assert delete.old == stale and delete.phase < write.phase
    assert plan(ctx.desired, _with_tables(as_live(ctx.desired, "t"), want), "t").empty


def test_a_foreign_forward_drop_policy_is_a_warning_where_the_host_forwards():
    ctx = deployment(BASE % (", masquerade: true", ""))
    from tests.unit.test_planner import as_live

    live = as_live(ctx.desired, "t")
    live.tables = dict(ctx.desired.tables)
    live.foreign_drops = {"t-local": ("ip filter FORWARD",)}
    (warning,) = plan(ctx.desired, live, "t").warnings
    assert "ip filter FORWARD" in warning and "bridge docker0 masquerade" in warning
    live.foreign_drops = {"elsewhere": ("ip filter FORWARD",)}
    assert not plan(ctx.desired, live, "t").warnings


@pytest.mark.parametrize("keys, words", [
    ("rate: 10mbps2", "a rate is a number and a unit"),
    ("rate: 1kbit, burst: 64kb", "lasts"),
    ("rate: 10mbit, burst: 1000", "less than one full frame"),
    ("burst: 32kb", "a burst without a rate"),
])
def test_a_rate_the_kernel_cannot_keep_is_refused_at_the_key(keys, words):
    text = BASE.replace("{bridge: docker0, name: veth-web}", "{bridge: docker0, name: veth-web, %s}" % keys) % ("", "")
    ((line, _, message, hint),) = problems(text)
    assert line == 13 and words in message, message


def test_a_rate_becomes_the_tbf_the_kernel_will_report():
    text = BASE.replace("{bridge: docker0, name: veth-web}", "{bridge: docker0, name: veth-web, rate: 10mbit}") % ("", "")
    (tbf,) = deployment(text).desired.qdiscs.values()
    assert (tbf.rate, tbf.burst, tbf.limit, tbf.requested_burst) == (10_000_000, 12_500, 75_000, 12_500)


VXLAN = (HEAD + "hosts:\n  n1: {address: 10.168.0.2/24}\n  n2: {address: 10.168.0.3/24, mtu: 9000}\n"
         "overlays:\n  - {name: fl, type: vxlan, subnets: {n1: 10.244.1.0/24, n2: 10.244.2.0/24}}\n"
         "bridges:\n  c1: {host: n1, name: cni0, addresses: [10.244.1.1/24]}\n"
         "  c2: {host: n2, name: cni0, addresses: [10.244.2.1/24], mtu: 9000}\n"
         "namespaces:\n  a: {host: n1}\n  b: {host: n2}\n"
         "links:\n  - type: veth\n    endpoints:\n      - {namespace: a, name: eth0, addresses: [10.244.1.2/24], mtu: 1500}\n"
         "      - {bridge: c1, name: veth-a}\n  - type: veth\n    endpoints:\n"
         "      - {namespace: b, name: eth0, addresses: [10.244.2.2/24]}\n      - {bridge: c2, name: veth-b}\n")


def test_what_carries_overlay_traffic_gets_the_overlays_mtu_and_a_larger_one_is_a_warning():
    topology = load_text(VXLAN, "t.yaml")
    mtus = {(end.name, end.namespace or end.bridge): end.mtu for link in topology.links for end in (link.a, link.b)}
    assert mtus == {("eth0", "a"): 1500, ("veth-a", "c1"): 1450, ("eth0", "b"): 8950, ("veth-b", "c2"): 8950}
    assert [b.mtu for b in topology.bridges] == [1450, 9000]
    warnings = [(w.line, w.message) for w in topology.warnings]
    assert warnings == [
        (11, "bridge cni0: mtu 9000 is larger than the 8950 overlay fl carries on host n2"),
        (18, "veth end eth0: mtu 1500 is larger than the 1450 overlay fl carries on host n1"),
    ]


def test_without_libnftables_the_error_names_the_package(monkeypatch):
    from topoctl.errors import KernelError
    from topoctl.kernel import nft

    monkeypatch.setattr(nft, "LIBRARY", "libnftables-missing.so.9")
    monkeypatch.setattr(nft, "_lib", None)
    monkeypatch.setattr(nft, "_missing", None)
    with pytest.raises(KernelError) as caught:
        nft._library()
    assert "nftables is not available" in caught.value.message and "apt-get install nftables" in caught.value.hint
    assert not nft.available()
