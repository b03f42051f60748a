"""Owns only what it made: foreign objects survive; name clashes are errors, not takeovers;
two topologies on one machine leave each other alone; bad input changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, ip, netns_names

pytestmark = pytest.mark.root


def link_json(netns: str, name: str) -> dict:
    return json.loads(ip("-n", netns, "-j", "-d", "link", "show", name).stdout)[0]


def test_foreign_namespace_and_bridge_survive_apply_and_destroy(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    foreign_ns = f"foreign-{box.uid}"
    ip("netns", "add", foreign_ns)
    try:
        ip("-n", foreign_ns, "link", "add", "fbr0", "type", "bridge")
        box.apply()
        # A bridge someone else made inside the (emulated) host, next to ours.
        ip("-n", box.host(), "link", "add", "foreign0", "type", "bridge")
        ip("-n", box.host(), "addr", "add", "192.0.2.1/24", "dev", "foreign0")
        ip("-n", box.host(), "link", "set", "foreign0", "up")
        before = link_json(box.host(), "foreign0")

        assert box.plan_exit() == 0  # foreign objects are not drift
        destroyed = box.run("destroy")
        assert "keeping namespace" in destroyed.stdout and "foreign0" in destroyed.stdout
        after = link_json(box.host(), "foreign0")
        assert (after["ifindex"], after["mtu"], after["operstate"]) == (before["ifindex"], before["mtu"], before["operstate"])
        assert "192.0.2.1" in ip("-n", box.host(), "addr", "show", "foreign0").stdout
        # Ours is gone from the kept host namespace; the foreign namespace is untouched.
        assert "docker0" not in ip("-n", box.host(), "-br", "link").stdout
        assert box.ns("nginx-1") not in netns_names()
        assert "fbr0" in ip("-n", foreign_ns, "-br", "link").stdout
    finally:
        ip("netns", "del", foreign_ns, check=False)
        ip("-n", box.host(), "link", "del", "foreign0", check=False)
    box.run("destroy")  # with the foreign bridge gone, the host namespace goes too
    assert box.host() not in netns_names()


def test_existing_foreign_namespace_with_a_wanted_name_is_refused(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    ip("netns", "add", box.ns("nginx-2"))
    try:
        before = netns_names()
        result = box.run("apply", expect=1)
        assert f"namespace {box.ns('nginx-2')} already exists" in result.stderr
        assert "never takes over" in result.stderr
        # nothing was created (names of this box only: other runs on the machine may make theirs)
        assert {n for n in netns_names() if box.uid in n} == {n for n in before if box.uid in n}
    finally:
        ip("netns", "del", box.ns("nginx-2"), check=False)


def test_foreign_bridge_with_a_wanted_name_is_refused_and_untouched(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    ip("-n", box.host(), "link", "del", "docker0")
    ip("-n", box.host(), "link", "add", "docker0", "mtu", "1400", "type", "bridge")
    result = box.run("apply", expect=1)
    assert "interface docker0 in" in result.stderr and "already exists" in result.stderr
    assert link_json(box.host(), "docker0")["mtu"] == 1400
    assert "ifalias" not in link_json(box.host(), "docker0")
    ip("-n", box.host(), "link", "del", "docker0")


def test_two_topologies_on_one_machine_leave_each_other_alone(sandbox_factory):
    first = sandbox_factory("docker0.yaml")
    second = sandbox_factory("docker0.yaml")
    first.apply()
    second.apply()
    assert first.plan_exit() == 0 and second.plan_exit() == 0
    assert first.ping(first.ns("nginx-1"), "172.17.0.3")
    first.run("destroy")
    assert first.leftovers() == []
    assert second.plan_exit() == 0
    assert second.ping(second.ns("nginx-1"), "172.17.0.3")


def test_a_namespace_re_made_by_someone_else_is_not_ours(sandbox_factory):
    box = sandbox_factory("point-to-point.yaml")
    box.apply()
    name = box.ns("left")
    ip("netns", "del", name)
    ip("netns", "add", name)  # same name, another namespace: our record no longer applies
    try:
        result = box.run("apply", expect=1)
        assert f"namespace {name} already exists" in result.stderr
    finally:
        ip("netns", "del", name, check=False)


HEAD = "apiVersion: topoctl/v1\nkind: Topology\nname: bad-input\n"
# (body after the 3-line head, the place of the one problem, words of its message)
BAD_INPUTS = {
    "unknown namespace": ("namespaces:\n  a: {}\nlinks:\n  - type: veth\n    endpoints:\n"
                          "      - {namespace: a, name: eth0}\n      - {namespace: nowhere, name: eth0}\n",
                          "10:21", "unknown namespace 'nowhere'"),
    "malformed yaml": ("namespaces:\n  a: {\n", "5:6", "malformed YAML"),
    "unknown key": ("namespaces:\n  a: {rootes: []}\n", "5:7", "unknown key 'rootes'"),
    "bad cidr": ("bridges:\n  br0: {addresses: [10.0.0.300/24]}\n", "5:21", "not a valid address"),
    "gateway off-link": ("namespaces:\n  a: {routes: [{to: default, via: 10.9.9.9}]}\n", "5:35",
                         "gateway 10.9.9.9 is not on any connected subnet"),
    "name too long": ("bridges:\n  a-very-long-bridge: {}\n", "5:3", "an interface name is 1 to 15 bytes"),
    "python tag": ("namespaces: !!python/object:os.system {}\n", "4:13", "unsupported YAML tag"),
}


@pytest.mark.parametrize("command", ["plan", "apply", "destroy", "show"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_invalid_input_exits_2_with_a_location_and_changes_nothing(tmp_path, command, case):
    body, place, words = BAD_INPUTS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD + body)
    before = netns_names()
    result = subprocess.run([sys.executable, "-m", "topoctl", command, "--emulate", str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert f"{path}:{place}: error:" in result.stderr and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # nothing of the file was made: its topology's or its namespaces' names (other runs on the
    # machine may make namespaces of their own meanwhile)
    created = netns_names() - before
    assert not [n for n in created if n.startswith("bad") or n in body], created


def test_without_privileges_plan_says_what_is_missing_and_render_still_works():
    drop = ["setpriv", "--bounding-set", "-net_admin,-sys_admin", "--inh-caps", "-net_admin,-sys_admin"]
    example = str(ROOT / "topologies" / "docker0.yaml")
    planned = subprocess.run([*drop, sys.executable, "-m", "topoctl", "plan", "--emulate", example],
                             capture_output=True, text=True)
    assert planned.returncode == 1
    assert "plan needs CAP_NET_ADMIN and CAP_SYS_ADMIN" in planned.stderr
    rendered = subprocess.run([*drop, sys.executable, "-m", "topoctl", "render", example], capture_output=True, text=True)
    assert rendered.returncode == 0 and rendered.stdout.startswith("#!/bin/sh")
    valid = subprocess.run([*drop, sys.executable, "-m", "topoctl", "validate", example], capture_output=True, text=True)
    assert valid.returncode == 0
