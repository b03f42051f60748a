"""A saved plan's fingerprint: what the planner compares changes it, what the kernel moves on its own does not."""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import replace

from topoctl.core.state import Address, NftTable, Tbf
from topoctl.store.saved import fingerprint

from .test_planner import HOST, as_live, context


def live():
    return as_live(context().desired)


def test_what_the_kernel_changes_by_itself_after_a_link_change_leaves_the_fingerprint():
    before = live()
    after = copy.deepcopy(before)
    key = next(k for k, link in after.links.items() if link.kind == "veth")
    after.links[key] = replace(after.links[key], index=99, port_state=1)  # disabled, after the link went down
    after.addresses.add(Address(HOST, key[1], ipaddress.ip_interface("fe80::1/64")))  # link-local, by the kernel
    assert fingerprint(after) == fingerprint(before)


def test_every_part_the_planner_compares_changes_the_fingerprint():
    base = live()
    key = next(k for k, link in base.links.items() if link.kind == "bridge")
    changes = {
        "mtu": lambda s: s.links.__setitem__(key, replace(s.links[key], mtu=1400)),
        "address": lambda s: s.addresses.add(Address(HOST, key[1], ipaddress.ip_interface("10.9.9.9/24"))),
        "table": lambda s: s.tables.__setitem__((HOST, "inet", "x"), NftTable(HOST, "inet", "x")),
        "qdisc": lambda s: s.qdiscs.__setitem__((HOST, key[1]), Tbf(8000, 1500, 3000)),
        "foreign drop": lambda s: s.foreign_drops.__setitem__(HOST, ("ip filter FORWARD",)),
        "foreign table": lambda s: s.foreign_tables.__setitem__(HOST, ("ip filter",)),
        "sysctl": lambda s: s.sysctls.__setitem__((HOST, "net.ipv4.ip_forward"), "0"),
    }
    for what, change in changes.items():
        changed = copy.deepcopy(base)
        change(changed)
        assert fingerprint(changed) != fingerprint(base), what
