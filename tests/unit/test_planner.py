"""Planner cases as data: desired (from YAML) + live (built by hand) -> actions. No root."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from topoctl.core.actions import (
    AddAddress,
    AddRoute,
    Change,
    CreateVeth,
    DeleteAddress,
    DeleteLink,
    DeleteNamespace,
    SetSysctl,
)
from topoctl.core.desired import Deployment as Context
from topoctl.core.realisation import realise
from topoctl.errors import OwnershipConflict
from topoctl.spec.loader import load_file, load_text
from topoctl.core.planner import plan
from topoctl.core.state import Address, Link, Netns, RouteEntry, State, link_mac

ROOT = Path(__file__).resolve().parents[2]

DOCKER0 = """
apiVersion: topoctl/v1
kind: Topology
name: demo
bridges:
  docker0: {addresses: [172.17.0.1/16]}
namespaces:
  nginx-1:
    routes: [{to: default, via: 172.17.0.1}]
    sysctls: {net.ipv4.ip_forward: 1}
links:
  - type: veth
    endpoints:
      - {namespace: nginx-1, name: eth0, addresses: [172.17.0.2/16, "fd00::2/64"]}
      - {bridge: docker0, name: veth-nginx1}
"""

HOST = "demo-local"


def context(text: str = DOCKER0, emulate: bool = True) -> Context:
    topology = load_text(text, "test.yaml")
    return Context(topology, realise(topology, None, emulate))


def as_live(desired: State, topology: str = "demo") -> State:
    """What the kernel shows once `desired` is built: the same objects, now with live values."""
    live = State(scopes=set(desired.scopes))
    live.namespaces = dict(desired.namespaces)
    for key, link in desired.links.items():
        live.links[key] = replace(link, mac=link.mac or "02:00:00:00:00:99",
                                  mtu=link.mtu or 65536, stp=link.stp if link.kind == "bridge" else None)
    live.addresses = set(desired.addresses) | {Address(s, n, ipaddress.ip_interface("fe80::1/64"))
                                                for (s, n), link in desired.links.items() if link.kind == "veth"}
    live.routes = dict(desired.routes)
    live.sysctls = dict(desired.sysctls)
    live.neighbours = set(desired.neighbours)
    live.fdb = set(desired.fdb)
    return live


def kinds(the_plan) -> list[str]:
    return [type(a).__name__ for a in the_plan.actions]


def test_from_nothing_creates_everything_in_phase_order():
    ctx = context()
    the_plan = plan(ctx.desired, State(), "demo")
    assert kinds(the_plan) == [
        "CreateNamespace", "CreateNamespace", "SetSysctl", "SetSysctl", "CreateBridge", "CreateVeth",
        "AddAddress", "AddAddress", "AddAddress", "AddRoute",
    ]
    assert [a.netns.name for a in the_plan.actions[:2]] == [HOST, "nginx-1"]
    # the host forwards because the container routes through the bridge (issue 13)
    assert (the_plan.actions[2].scope, the_plan.actions[2].key, the_plan.actions[2].why) == (
        HOST, "net.ipv4.ip_forward", "namespace nginx-1 routes via bridge docker0")
    assert the_plan.summary() == "Plan: 8 to add, 2 to change, 0 to destroy."
    veth = the_plan.actions[5]
    assert {veth.a.scope, veth.b.scope} == {HOST, "nginx-1"}
    host_end = veth.a if veth.a.scope == HOST else veth.b
    assert host_end.master == "docker0" and host_end.peer == ("nginx-1", "eth0")


def test_no_changes_when_live_matches():
    ctx = context()
    assert plan(ctx.desired, as_live(ctx.desired), "demo").empty


def test_kernel_link_local_addresses_are_not_ours_to_delete():
    ctx = context()
    live = as_live(ctx.desired)
    assert any(a.interface.ip.is_link_local for a in live.addresses)
    assert not any(isinstance(a, DeleteAddress) for a in plan(ctx.desired, live, "demo").actions)


@pytest.mark.parametrize("attribute, drifted, expected_old", [
    ("mtu", 1400, 1400),
    ("up", False, False),
    ("master", None, None),
])
def test_link_attribute_drift_is_changed_in_place(attribute, drifted, expected_old):
    ctx = context()
    live = as_live(ctx.desired)
    key = (HOST, "veth-nginx1")
    live.links[key] = replace(live.links[key], **{attribute: drifted})
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["SetLink"]
    (change,) = the_plan.actions[0].changes
    assert (change.attribute, change.old) == (attribute, expected_old)
    assert change.new == getattr(ctx.desired.links[key], attribute)


def test_declared_mac_drift_is_changed_in_place():
    text = DOCKER0.replace("name: eth0, addresses", 'name: eth0, mac: "02:42:AC:11:00:02", addresses')
    ctx = context(text)
    live = as_live(ctx.desired)
    assert ctx.desired.links[("nginx-1", "eth0")].mac == "02:42:ac:11:00:02"  # canonical form
    live.links[("nginx-1", "eth0")] = replace(live.links[("nginx-1", "eth0")], mac="02:42:ac:11:00:99")
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["SetLink"]
    assert the_plan.actions[0].link.name == "eth0"
    assert the_plan.actions[0].changes == (Change("mac", "02:42:ac:11:00:99", "02:42:ac:11:00:02"),)


# -- derived MACs: every link topoctl makes has one, so a re-created veth keeps its MAC ------------

def _all_macs(text: str = DOCKER0) -> dict:
    return {key: link.mac for key, link in context(text).desired.links.items() if link.kind != "loopback"}


def test_every_link_topoctl_makes_has_a_mac_unicast_and_locally_administered():
    for example in sorted((ROOT / "topologies").glob("*.yaml")):
        desired = Context(load_file(example), realise(load_file(example), None, True)).desired
        made = [link for link in desired.links.values() if link.kind != "loopback"]
        assert made and all(link.mac for link in made), example.name
        for link in made:
            assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", link.mac), link  # canonical form
            first = int(link.mac[:2], 16)
            assert first & 0x01 == 0 and first & 0x02 == 0x02, link  # unicast, locally administered
        macs = [link.mac for link in made]
        assert len(set(macs)) == len(macs), example.name  # distinct within a topology


def test_derived_macs_are_the_same_in_other_processes_whatever_their_hash_seed():
    script = ("import json, sys; from tests.unit.test_planner import _all_macs; "
              "json.dump(sorted([list(map(str, k)), m] for k, m in _all_macs().items()), sys.stdout)")
    here = sorted([list(map(str, k)), m] for k, m in _all_macs().items())
    for seed in ("0", "1", "4242", "random"):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                             cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert json.loads(out) == here, seed


def test_derived_macs_differ_for_different_topology_place_or_name():
    inputs = [(t, place, where, name) for t in ("demo", "demo2", "d") for place, where in
              (("netns", "nginx-1"), ("netns", "nginx-2"), ("host", "nginx-1"), ("host", "local"), ("underlay", ""))
              for name in ("eth0", "eth1", "veth-nginx1")]
    # Fields that would run together without their lengths: (ab, c) against (a, bc).
    inputs += [("ab", "netns", "c", "eth0"), ("a", "netns", "bc", "eth0"), ("a", "netns", "b", "ceth0"),
               ("a", "netns", "bceth", "0"), ("demo", "host", "", "local/eth0"), ("demo/local", "host", "", "eth0")]
    macs = [link_mac(*i) for i in inputs]
    assert len(set(macs)) == len(inputs)
    assert link_mac("demo", "netns", "nginx-1", "eth0") == link_mac("demo", "netns", "nginx-1", "eth0")
    # the exact derivation (docs/format.md): blake2b, 6 bytes, person "topoctl.mac.v1", length-prefixed fields
    data = b"".join(len(f).to_bytes(2, "big") + f for f in (b"demo", b"netns", b"nginx-1", b"eth0"))
    digest = bytearray(hashlib.blake2b(data, digest_size=6, person=b"topoctl.mac.v1").digest())
    digest[0] = (digest[0] & 0xFE) | 0x02
    assert link_mac("demo", "netns", "nginx-1", "eth0") == ":".join(f"{b:02x}" for b in digest)


def test_veth_macs_come_from_the_place_and_name_and_a_declared_mac_wins():
    macs = _all_macs()
    assert macs[("nginx-1", "eth0")] == link_mac("demo", "netns", "nginx-1", "eth0")
    assert macs[(HOST, "veth-nginx1")] == link_mac("demo", "host", "local", "veth-nginx1")
    # the same file on a real host: the same MACs (the place is the host, not the namespace's name)
    real = {key: link.mac for key, link in context(emulate=False).desired.links.items()}
    assert real[(None, "veth-nginx1")] == macs[(HOST, "veth-nginx1")] and real[("nginx-1", "eth0")] == macs[("nginx-1", "eth0")]
    declared = _all_macs(DOCKER0.replace("name: veth-nginx1}", 'name: veth-nginx1, mac: "02:AA:00:00:00:01"}'))
    assert declared[(HOST, "veth-nginx1")] == "02:aa:00:00:00:01"
    assert declared[("nginx-1", "eth0")] == macs[("nginx-1", "eth0")]  # the other end keeps its derived MAC


@pytest.mark.parametrize("key", [("nginx-1", "eth0"), (HOST, "veth-nginx1")])
def test_a_live_veth_with_another_mac_is_changed_in_place(key):
    """As after an upgrade from a version that left veth MACs to the kernel, or a MAC set by hand."""
    ctx = context()
    live = as_live(ctx.desired)
    live.links[key] = replace(live.links[key], mac="aa:bb:cc:dd:ee:ff")
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["SetLink"]  # not -/+: the veth and its addresses and routes stay
    (action,) = the_plan.actions
    assert action.link.key == key and action.verb == "change"
    assert action.changes == (Change("mac", "aa:bb:cc:dd:ee:ff", ctx.desired.links[key].mac),)


def test_a_foreign_link_with_another_mac_is_a_conflict_not_a_change():
    ctx = context()
    live = as_live(ctx.desired)
    key = (HOST, "veth-nginx1")
    live.links[key] = replace(live.links[key], mac="aa:bb:cc:dd:ee:ff", owner=None)
    with pytest.raises(OwnershipConflict, match="interface veth-nginx1 in demo-local already exists"):
        plan(ctx.desired, live, "demo")


def test_a_veth_re_created_after_a_deletion_gets_its_old_macs_back():
    ctx = context()
    before = as_live(ctx.desired)
    live = as_live(ctx.desired)
    del live.links[("nginx-1", "eth0")]
    the_plan = plan(ctx.desired, live, "demo")
    (create,) = [a for a in the_plan.actions if isinstance(a, CreateVeth)]
    assert {create.a.key: create.a.mac, create.b.key: create.b.mac} == {
        key: before.links[key].mac for key in (("nginx-1", "eth0"), (HOST, "veth-nginx1"))}


def test_a_bridge_always_has_a_fixed_mac_so_it_cannot_drift_with_its_ports():
    ctx = context()
    bridge = ctx.desired.links[(HOST, "docker0")]
    assert bridge.mac is not None and bridge.mac == context().desired.links[(HOST, "docker0")].mac
    assert int(bridge.mac[:2], 16) & 0x03 == 0x02  # locally administered unicast
    live = as_live(ctx.desired)
    live.links[(HOST, "docker0")] = replace(live.links[(HOST, "docker0")], mac="aa:bb:cc:dd:ee:ff")
    (action,) = plan(ctx.desired, live, "demo").actions
    assert [c.attribute for c in action.changes] == ["mac"]


def test_missing_veth_end_replaces_the_pair():
    ctx = context()
    live = as_live(ctx.desired)
    del live.links[("nginx-1", "eth0")]
    live.addresses = {a for a in live.addresses if a.scope != "nginx-1"}
    del live.routes[next(k for k in live.routes if k[0] == "nginx-1")]
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["DeleteLink", "CreateVeth", "AddAddress", "AddAddress", "AddRoute"]
    assert the_plan.actions[0].reason == "peer eth0 is missing"
    assert the_plan.counts() == {"add": 4, "change": 0, "destroy": 1}


def test_wrong_kind_forces_replacement_and_reattaches_ports():
    ctx = context()
    live = as_live(ctx.desired)
    live.links[(HOST, "docker0")] = replace(live.links[(HOST, "docker0")], kind="macvlan", stp=None)
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["DeleteLink", "CreateBridge", "SetLink", "AddAddress"]
    assert the_plan.actions[0].reason == "kind macvlan -> bridge"
    reattach = the_plan.actions[2]
    assert reattach.link.name == "veth-nginx1"
    assert [(c.attribute, c.old, c.new) for c in reattach.changes] == [("master", None, "docker0")]


def test_foreign_link_with_a_wanted_name_is_a_conflict_not_a_takeover():
    ctx = context()
    live = as_live(ctx.desired)
    live.links[(HOST, "docker0")] = replace(live.links[(HOST, "docker0")], owner=None)
    with pytest.raises(OwnershipConflict, match="interface docker0 in demo-local already exists"):
        plan(ctx.desired, live, "demo")


def test_another_topologys_namespace_is_a_conflict():
    ctx = context()
    live = State(namespaces={"nginx-1": Netns("nginx-1", owner="other")})
    with pytest.raises(OwnershipConflict, match="namespace nginx-1 already exists and belongs to topology 'other'"):
        plan(ctx.desired, live, "demo")


def test_objects_no_longer_in_the_file_are_removed_but_foreign_ones_stay():
    ctx = context()
    live = as_live(ctx.desired)
    live.namespaces["old-box"] = Netns("old-box", owner="demo", host="local")
    live.namespaces["their-box"] = Netns("their-box", owner=None)
    live.links[(HOST, "br-old")] = Link(HOST, "br-old", "bridge", owner="demo", mtu=1500)
    live.links[(HOST, "br-theirs")] = Link(HOST, "br-theirs", "bridge", owner=None, mtu=1500)
    live.addresses.add(Address("nginx-1", "eth0", ipaddress.ip_interface("172.17.0.99/16")))
    gone_route = RouteEntry("nginx-1", ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_address("172.17.0.1"),
                            "eth0", owner="demo")
    foreign_route = RouteEntry(HOST, ipaddress.ip_network("10.8.0.0/16"), None, "br-theirs", owner=None)
    live.add_route(gone_route)
    live.add_route(foreign_route)
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["DeleteRoute", "DeleteAddress", "DeleteLink", "DeleteNamespace"]
    assert the_plan.actions[0].route == gone_route
    assert str(the_plan.actions[1].address.interface) == "172.17.0.99/16"
    assert the_plan.actions[2].link.name == "br-old"
    assert the_plan.actions[3].netns.name == "old-box"


def test_changed_gateway_is_replaced_in_place():
    ctx = context()
    live = as_live(ctx.desired)
    key = next(k for k in live.routes if k[0] == "nginx-1")
    live.routes[key] = replace(live.routes[key], via=ipaddress.ip_address("172.17.0.254"))
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["ReplaceRoute"]
    assert the_plan.as_json()["actions"][0]["changes"] == [
        {"attribute": "via", "old": "172.17.0.254", "new": "172.17.0.1"}]


def test_deleting_the_gateways_subnet_re_adds_its_routes_with_replace():
    ctx = context()
    live = as_live(ctx.desired)
    live.addresses.discard(Address("nginx-1", "eth0", ipaddress.ip_interface("172.17.0.2/16")))
    live.addresses.add(Address("nginx-1", "eth0", ipaddress.ip_interface("172.17.0.9/16")))
    the_plan = plan(ctx.desired, live, "demo")
    assert kinds(the_plan) == ["DeleteAddress", "AddAddress", "AddRoute"]
    assert the_plan.actions[2].replace is True


def test_sysctl_drift_is_set_with_the_old_value_recorded():
    ctx = context()
    live = as_live(ctx.desired)
    live.sysctls[("nginx-1", "net.ipv4.ip_forward")] = "0"
    (action,) = plan(ctx.desired, live, "demo").actions
    assert isinstance(action, SetSysctl) and (action.old, action.new) == ("0", "1")


def test_destroy_deletes_whole_namespaces_and_lets_veths_go_with_them():
    ctx = context(emulate=False)
    live = as_live(ctx.desired)
    the_plan = plan(ctx.empty(), live, "demo")
    # The root-namespace end of the veth goes with its peer's namespace; the bridge is deleted.
    assert kinds(the_plan) == ["DeleteLink", "DeleteNamespace"]
    assert the_plan.actions[0].link.name == "docker0"
    assert the_plan.actions[1].netns.name == "nginx-1"


def test_destroy_keeps_a_namespace_that_holds_foreign_interfaces():
    ctx = context()
    live = as_live(ctx.desired)
    live.links[(HOST, "foreign0")] = Link(HOST, "foreign0", "bridge", owner=None, mtu=1500)
    the_plan = plan(ctx.empty(), live, "demo")
    assert [a.netns.name for a in the_plan.actions if isinstance(a, DeleteNamespace)] == ["nginx-1"]
    assert any(isinstance(a, DeleteLink) and a.link.name == "docker0" for a in the_plan.actions)
    assert "keeping namespace demo-local" in the_plan.notes[0] and "foreign0" in the_plan.notes[0]


def test_everything_inside_a_new_namespace_is_new_even_if_stale_live_data_says_otherwise():
    ctx = context()
    live = as_live(ctx.desired)
    del live.namespaces["nginx-1"]  # the namespace is gone; leftovers in live must not matter
    the_plan = plan(ctx.desired, live, "demo")
    # The host end whose peer namespace is gone is deleted, then the pair is made again.
    assert kinds(the_plan)[:2] == ["DeleteLink", "CreateNamespace"]
    assert the_plan.actions[0].reason == "peer eth0 is missing"
    assert sum(isinstance(a, AddAddress) and a.scope == "nginx-1" for a in the_plan.actions) == 2
    assert any(isinstance(a, AddRoute) and a.scope == "nginx-1" for a in the_plan.actions)
    assert any(isinstance(a, CreateVeth) for a in the_plan.actions)


def test_json_form_is_stable_and_serialisable():
    ctx = context()
    data = plan(ctx.desired, State(), "demo").as_json()
    text = json.dumps(data, sort_keys=True)
    assert json.loads(text) == data
    assert data["format_version"] == 1 and data["summary"] == {"add": 8, "change": 2, "destroy": 0}
    first = data["actions"][0]
    assert first == {"action": "create", "type": "namespace", "netns": HOST, "subject": f"namespace {HOST}",
                     "name": HOST, "role": "host", "host": "local"}
    veth = next(a for a in data["actions"] if a["type"] == "link" and "a" in a)
    assert {veth["a"]["netns"], veth["b"]["netns"]} == {HOST, "nginx-1"}


SMALL = """
apiVersion: topoctl/v1
kind: Topology
name: demo
bridges:
  br1: {addresses: [10.1.0.1/24]}
  br0: {addresses: [10.0.0.1/24]}
namespaces:
  web:
    routes: [{to: default, via: 10.1.0.1}]
  db:
    routes: [{to: default, via: 10.0.0.1}]
    sysctls: {net.ipv4.ip_local_port_range: "32768  60999"}
links:
  - type: veth
    endpoints:
      - {namespace: web, name: eth0, addresses: [10.1.0.2/24]}
      - {bridge: br1, name: veth-web}
  - type: veth
    endpoints:
      - {namespace: db, name: eth0, addresses: [10.0.0.2/24]}
      - {bridge: br0, name: veth-db}
"""


def test_a_plan_is_in_the_documented_order():
    """docs/architecture.md: sorted by (phase, namespace, subject), the root namespace first.
    The file lists web before db and br1 before br0, so file order would fail, and so would a
    reversed sort."""
    the_plan = plan(context(SMALL, emulate=False).desired, State(), "demo")
    assert [(a.verb, a.subject()) for a in the_plan.actions] == [
        ("create", "namespace db"),
        ("create", "namespace web"),
        ("change", "sysctl net.ipv4.ip_forward in (root)"),  # two bridges that reach each other
        ("change", "sysctl net.ipv4.ip_local_port_range in db"),
        ("create", "bridge br0 in (root)"),
        ("create", "bridge br1 in (root)"),
        ("create", "veth veth-db in (root) <-> eth0 in db"),
        ("create", "veth veth-web in (root) <-> eth0 in web"),
        ("create", "address 10.0.0.1/24 on br0 in (root)"),
        ("create", "address 10.1.0.1/24 on br1 in (root)"),
        ("create", "address 10.0.0.2/24 on eth0 in db"),
        ("create", "address 10.1.0.2/24 on eth0 in web"),
        ("create", "route default in db"),
        ("create", "route default in web"),
    ]
    assert the_plan.actions[3].new == "32768 60999"  # the kernel's form, as read back


def _many_containers(count: int = 12) -> str:
    """A file whose sets (addresses, routes, sysctls, links) hold enough members, in both
    families, for their iteration order to differ between hash seeds."""
    lines = ["apiVersion: topoctl/v1", "kind: Topology", "name: demo", "bridges:",
             "  br0: {addresses: [10.0.0.1/16, 'fd00::1/64']}", "namespaces:"]
    for i in range(count):
        lines += [f"  c{i:02d}:", "    routes: [{to: default, via: 10.0.0.1}, {to: default, via: 'fd00::1'}]",
                  f"    sysctls: {{net.ipv4.conf.eth0.rp_filter: {i % 3}, net.ipv4.ip_forward: 1}}"]
    lines.append("links:")
    for i in range(count):
        lines += ["  - type: veth", "    endpoints:",
                  f"      - {{namespace: c{i:02d}, name: eth0, addresses: [10.0.{i}.2/16, 'fd00::{i + 2:x}/64']}}",
                  f"      - {{bridge: br0, name: veth-c{i:02d}}}"]
    return "\n".join(lines) + "\n"


def determinism_case_json() -> str:
    """One plan with creations, changes and deletions, as `plan -o json` prints it (run in
    subprocesses by the test below, each with its own PYTHONHASHSEED)."""
    ctx = context(_many_containers())
    live = as_live(ctx.desired)
    for i in range(0, 12, 3):  # missing: recreated
        del live.links[(f"c{i:02d}", "eth0")]
    for i in range(1, 12, 3):  # drifted and extra: changed, deleted
        live.sysctls[(f"c{i:02d}", "net.ipv4.ip_forward")] = "0"
        live.addresses.add(Address(f"c{i:02d}", "eth0", ipaddress.ip_interface(f"10.0.{i}.99/16")))
        live.add_route(RouteEntry(f"c{i:02d}", ipaddress.ip_network(f"10.{i}.0.0/16"), ipaddress.ip_address("10.0.0.1"),
                                  "eth0", owner="demo"))
        live.namespaces[f"old-{i}"] = Netns(f"old-{i}", owner="demo", host="local")
        live.links[(HOST, f"br-old{i}")] = Link(HOST, f"br-old{i}", "bridge", owner="demo", mtu=1500)
    return json.dumps(plan(ctx.desired, live, "demo").as_json())


def test_plans_are_deterministic_across_processes_and_hash_seeds():
    """The same inputs give the same JSON plan, byte for byte, whatever order Python's string
    hashing gives its sets and dicts (PYTHONHASHSEED), in fresh interpreters."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "from tests.unit.test_planner import determinism_case_json; print(determinism_case_json())"
    outputs = {}
    for seed in ("0", "1", "2", "3", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, cwd=root, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        outputs[seed] = proc.stdout
    assert len(set(outputs.values())) == 1, "the plan depends on PYTHONHASHSEED"
    data = json.loads(outputs["0"])
    kinds = {(a["action"], a["type"]) for a in data["actions"]}
    assert {("create", "link"), ("change", "sysctl"), ("delete", "address"), ("delete", "route"),
            ("delete", "namespace"), ("delete", "link")} <= kinds  # every part of the plan took part


def test_one_host_selected_leaves_the_other_alone():
    text = """
apiVersion: topoctl/v1
kind: Topology
name: two
hosts: {a: {}, b: {}}
bridges:
  br0: {host: a}
  br1: {host: b}
"""
    topology = load_text(text, "two.yaml")
    ctx = Context(topology, realise(topology, "a", emulate=True))
    the_plan = plan(ctx.desired, State(), "two")
    assert {a.scope for a in the_plan.actions} == {"two-a"}


@pytest.mark.parametrize("key, interface", [
    ("net.ipv4.ip_forward", None),
    ("net.ipv6.conf.all.forwarding", None),
    ("net.ipv6.conf.default.disable_ipv6", None),
    ("net.ipv4.neigh.default.gc_thresh1", None),
    ("net.ipv4.conf.eth0.rp_filter", "eth0"),
    ("net.ipv6.neigh.eth0.base_reachable_time_ms", "eth0"),
    ("net.ipv4.conf.eth0/100.forwarding", "eth0/100"),
    ("net.core.somaxconn", None),
])
def test_sysctl_key_names_its_interface_or_the_whole_namespace(key, interface):
    from topoctl.core.actions import sysctl_interface
    assert sysctl_interface(key) == interface


def test_namespace_wide_sysctls_come_before_its_interfaces_and_interface_ones_after():
    text = DOCKER0.replace(
        "sysctls: {net.ipv4.ip_forward: 1}",
        "sysctls: {net.ipv6.conf.default.disable_ipv6: 1, net.ipv4.conf.eth0.rp_filter: 2}")
    ctx = context(text)
    order = [(type(a).__name__, getattr(a, "key", None)) for a in plan(ctx.desired, State(), "demo").actions]
    veth = order.index(("CreateVeth", None))
    assert order.index(("SetSysctl", "net.ipv6.conf.default.disable_ipv6")) < order.index(("CreateBridge", None)) < veth
    assert order.index(("SetSysctl", "net.ipv4.conf.eth0.rp_filter")) > veth
    # the namespace creations stay one run, made together
    assert [k for k, _ in order[:2]] == ["CreateNamespace", "CreateNamespace"]


def test_a_key_of_a_recreated_interface_is_written_again_though_the_old_one_had_it():
    text = DOCKER0.replace("sysctls: {net.ipv4.ip_forward: 1}", "sysctls: {net.ipv4.conf.eth0.rp_filter: 2}")
    ctx = context(text)
    live = as_live(ctx.desired)
    # the live pair has another peer, so the plan replaces it: the new eth0 starts at the default
    host_end = live.links[(HOST, "veth-nginx1")]
    live.links[(HOST, "veth-nginx1")] = replace(host_end, peer=("nginx-1", "eth9"))
    the_plan = plan(ctx.desired, live, "demo")
    assert any(isinstance(a, CreateVeth) for a in the_plan.actions)
    (sysctl,) = [a for a in the_plan.actions if isinstance(a, SetSysctl)]
    assert (sysctl.key, sysctl.old, sysctl.new) == ("net.ipv4.conf.eth0.rp_filter", None, "2")


def test_writing_a_namespace_wide_key_writes_that_namespaces_interface_keys_again():
    text = DOCKER0.replace("sysctls: {net.ipv4.ip_forward: 1}",
                           "sysctls: {net.ipv4.conf.all.forwarding: 1, net.ipv4.conf.eth0.forwarding: 0}")
    ctx = context(text)
    live = as_live(ctx.desired)
    live.sysctls[("nginx-1", "net.ipv4.conf.all.forwarding")] = "0"  # drift of the namespace-wide key only
    keys = [a.key for a in plan(ctx.desired, live, "demo").actions if isinstance(a, SetSysctl)]
    # all.forwarding=1 sets eth0's too, so eth0's own 0 is written after it
    assert keys == ["net.ipv4.conf.all.forwarding", "net.ipv4.conf.eth0.forwarding"]


def test_a_sysctl_written_unlike_the_kernel_prints_it_converges():
    """Issue 11: "32768  60999" in the file, "32768\\t60999" in /proc/sys (read back by
    kernel._read_sysctl as "32768 60999"): the plan after an apply is empty, and the apply and the
    rendered script both write the kernel's form."""
    from topoctl.output.render import render_build

    text = DOCKER0.replace("sysctls: {net.ipv4.ip_forward: 1}",
                           'sysctls: {net.ipv4.ip_local_port_range: "32768  60999", net.ipv4.tcp_rmem: "4096 0x20000  6291456"}')
    ctx = context(text)
    live = as_live(ctx.desired)
    live.sysctls[("nginx-1", "net.ipv4.ip_local_port_range")] = "32768 60999"
    live.sysctls[("nginx-1", "net.ipv4.tcp_rmem")] = "4096 131072 6291456"
    assert plan(ctx.desired, live, "demo").empty
    writes = [(a.key, a.new) for a in plan(ctx.desired, State(), "demo").actions if isinstance(a, SetSysctl) and not a.why]
    assert writes == [("net.ipv4.ip_local_port_range", "32768 60999"), ("net.ipv4.tcp_rmem", "4096 131072 6291456")]
    script = render_build(ctx)
    assert "ip netns exec nginx-1 sysctl -qw 'net.ipv4.ip_local_port_range=32768 60999'" in script
    assert "ip netns exec nginx-1 sysctl -qw 'net.ipv4.tcp_rmem=4096 131072 6291456'" in script


def test_conflicts_are_one_per_line_and_the_hint_names_who_owns_them():
    ctx = context()
    live = State(namespaces={"nginx-1": Netns("nginx-1", owner="other"), HOST: Netns(HOST, owner=None)})
    with pytest.raises(OwnershipConflict) as caught:
        plan(ctx.desired, live, "demo")
    assert caught.value.message.splitlines() == [
        "2 objects of the file already exist and are not this topology's:",
        f"  - namespace {HOST} already exists and belongs to nobody topoctl knows",
        "  - namespace nginx-1 already exists and belongs to topology 'other'"]
    assert caught.value.hint == ("they belong to topology 'other': destroy that topology first (topoctl ls shows its "
                                 "file), or rename them in this file; topoctl never takes over objects it did not "
                                 "create: rename them in the file, or remove the existing ones by hand")
    live = State(namespaces={"nginx-1": Netns("nginx-1", owner="other")})
    with pytest.raises(OwnershipConflict) as caught:
        plan(ctx.desired, live, "demo")
    assert "never takes over" not in caught.value.hint and "topology 'other'" in caught.value.hint
