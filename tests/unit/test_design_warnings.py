"""Warnings of a valid design that is probably wrong: each at its FILE:LINE:COL, exit 0. No root."""

from __future__ import annotations

from topoctl.spec.loader import load_text

HEAD = "apiVersion: topoctl/v1\nkind: Topology\nname: w\n"
FILE = HEAD + """bridges:
  br0: {addresses: [172.17.0.1/16]}
  br1: {addresses: [172.17.128.1/17]}
namespaces:
  a: {}
  b: {}
links:
  - type: veth
    endpoints:
      - {namespace: a, name: eth0, addresses: [172.17.0.2/16, 10.9.0.2/24]}
      - {bridge: br0, name: veth-a}
  - type: veth
    endpoints:
      - {namespace: b, name: eth0, mtu: 9000, addresses: [172.17.128.2/17]}
      - {bridge: br1, name: veth-b}
"""


def warnings(text: str) -> list[tuple[int, int, str]]:
    return [(w.line, w.column, w.message) for w in load_text(text, "w.yaml").warnings]


def test_each_probable_mistake_is_a_warning_at_its_line():
    assert warnings(FILE) == [
        (13, 63, "10.9.0.2/24 on eth0 in namespace 'a' is outside every subnet of bridge br0 (172.17.0.0/16)"),
        (6, 21, "subnet 172.17.128.0/17 of bridge br1 overlaps 172.17.0.0/16 of bridge br0 on host 'local'"),
        (18, 9, "the ends of veth eth0-veth-b have different MTUs (9000 and 1500): the larger end sends frames "
                "the other drops"),
    ]


def test_a_clean_design_has_none_and_other_hosts_may_reuse_a_subnet():
    clean = FILE.replace("172.17.128.1/17", "172.18.0.1/16").replace("172.17.128.2/17", "172.18.0.2/16") \
                .replace(", 10.9.0.2/24", "").replace(" mtu: 9000,", "")
    assert warnings(clean) == []
    two_hosts = HEAD + """hosts: {h1: {}, h2: {}}
bridges:
  docker0-h1: {host: h1, name: docker0, addresses: [172.17.0.1/16]}
  docker0-h2: {host: h2, name: docker0, addresses: [172.17.0.254/16]}
"""
    assert warnings(two_hosts) == []
