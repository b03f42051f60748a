"""The Ansible collection topoctl.net (ansible/collections/ansible_collections/topoctl/net): its
module topoctl.net.topology plans, then applies exactly that saved plan, and says `changed` from
apply's JSON; its role topoctl.net.rollout rolls a file out host by host, probing with
`topoctl check` before and after, and puts back a host whose probes regress, stopping the play.

The fleet is topologies/host-gw-3hosts.yaml renamed (topology `ans-<uid>`), three inventory
hosts node1..node3 that are all this machine (ansible_connection: local), each built by topoctl
as the namespace <topology>-<host> (--emulate). The playbooks run are the shipped examples,
ansible/examples/rollout.yml and destroy.yml, as subprocesses; the assertions read the run's
JSON, written by a small stdout callback (ansible-core has no JSON callback of its own: the
`json` one is ansible.posix's). The last two tests check the pure parts without the kernel: the
diff and text made from plan JSON, the reading of topoctl's JSON errors, the probe comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, ip, netns_names

pytestmark = pytest.mark.root
if os.environ.get("TOPOCTL_REQUIRE_ROOT_TESTS") == "1":
    import ansible  # noqa: F401  (CI: ansible-core is a test dependency, its absence a failure)
else:
    pytest.importorskip("ansible")

BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / "ansible" / "collections"
EXAMPLES = ROOT / "ansible" / "examples"
HOSTS = ("node1", "node2", "node3")

# A host route on node2 that validates (its gateway is on the underlay subnet) but sends node2's
# traffic for half of node1's subnet, app-1 included, to an underlay address nobody has.
BROKEN_ROUTE = {"host": "node2", "to": "10.244.1.0/25", "via": "10.168.0.99"}
# A host route on node2 that validates but fails at apply time, after a first step that works.
FAILING_ROUTES = [{"host": "node2", "to": "10.97.0.0/24", "via": "10.244.2.2"},
                  {"host": "node2", "to": "10.98.0.0/24", "dev": "nosuch0"}]

CALLBACK = '''
import json
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "record"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": play.get_name(), "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.plays[-1]["tasks"].append({"task": task.get_name(), "hosts": {}})

    def record(self, result, **status):
        data = dict(getattr(result, "result", None) or result._result)
        data.update(status)
        self.plays[-1]["tasks"][-1]["hosts"][result._host.get_name()] = data

    def v2_runner_on_ok(self, result):
        self.record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self.record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self.record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self.record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}, default=str))
'''


class Fleet:
    """Three inventory hosts on this machine, each with its own copy of the file."""

    def __init__(self, box, tmp_path: Path) -> None:
        self.box = box
        self.root = tmp_path / "ansible"
        self.files = tmp_path / "hosts"
        (self.root / "callbacks").mkdir(parents=True)
        (self.root / "callbacks" / "record.py").write_text(CALLBACK)
        (self.root / "ansible.cfg").write_text("")  # no ansible.cfg of the machine or the user
        self.inventory = self.root / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump({"all": {"children": {"fleet": {
            "hosts": {host: {} for host in HOSTS},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "rollout_emulate": True, "rollout_executable": str(BIN / "topoctl"),
                     "rollout_dest": str(self.files) + "/{{ inventory_hostname }}/cluster.yaml"}}}}}))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        self.env.update(
            ANSIBLE_CONFIG=str(self.root / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
            ANSIBLE_HOME=str(self.root / "home"), ANSIBLE_LOCAL_TEMP=str(self.root / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(self.root / "remote-tmp"), ANSIBLE_NOCOLOR="1",
            ANSIBLE_CALLBACK_PLUGINS=str(self.root / "callbacks"), ANSIBLE_STDOUT_CALLBACK="record",
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_RETRY_FILES_ENABLED="0",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def dest(self, host: str) -> Path:
        return self.files / host / "cluster.yaml"

    def previous(self, host: str) -> Path:
        return self.files / host / "cluster.yaml.previous"

    def pending(self, host: str) -> Path:
        return self.files / host / "cluster.yaml.pending"

    def variant(self, name: str, **top_level) -> Path:
        """The sandbox's file with top-level keys added (its names already made unique)."""
        path = self.box.path.with_name(f"{name}.yaml")
        path.write_text(yaml.safe_dump({**self.box.data, **top_level}, sort_keys=False))
        return path

    def deployed(self) -> None:
        """The state a finished rollout of the sandbox's file leaves, made without Ansible."""
        self.box.apply()
        for host in HOSTS:
            self.dest(host).parent.mkdir(parents=True, exist_ok=True)
            self.dest(host).write_text(self.box.path.read_text())

    def run(self, argv: list[str], expect: int) -> dict:
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=self.root, timeout=180)
        assert result.returncode == expect, \
            f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, result.stderr
        return json.loads(result.stdout[result.stdout.index('{"plays"'):])

    def playbook(self, name: str, *args: str, src: Path | None = None, expect: int = 0) -> dict:
        return self.run([str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(EXAMPLES / name),
                         "-e", f"topology_file={src or self.box.path}", *args], expect)

    def module(self, hosts: str, args: dict, *extra: str, expect: int = 0) -> dict:
        return self.run([str(BIN / "ansible"), hosts, "-i", str(self.inventory), "-m", "topoctl.net.topology",
                         "-a", json.dumps(args), *extra], expect)


def results(doc: dict, task: str) -> dict[str, dict]:
    """Per host, the result of the task whose name ends with `task` (over every serial batch)."""
    found: dict[str, dict] = {}
    for play in doc["plays"]:
        for entry in play["tasks"]:
            if entry["task"].endswith(task):
                found.update(entry["hosts"])
    return found


APPLY = "Apply it (topoctl plan --out, then topoctl apply of that saved plan)"


def ours(box) -> set[str]:
    return {name for name in netns_names() if box.uid in name}


@pytest.fixture
def fleet(sandbox_factory, tmp_path):
    source = yaml.safe_load((ROOT / "topologies" / "host-gw-3hosts.yaml").read_text())
    # topology ans-<uid>, namespaces app-N-<uid>; sandbox_factory destroys it with
    # `topoctl destroy --emulate FILE` at the end, pass or fail, and fails on any leftover
    return Fleet(sandbox_factory({**source, "name": "ans"}), tmp_path)


def test_check_mode_shows_every_hosts_plan_and_changes_nothing(fleet):
    doc = fleet.playbook("rollout.yml", "--check", "--diff")
    applied = results(doc, APPLY)
    assert sorted(applied) == list(HOSTS)
    for host, result in applied.items():
        assert result["changed"] is True and result["host"] == host
        assert result["actions"] == len(result["plan"]["actions"]) > 0
        assert [argv[1] for argv in result["cmd"]] == ["plan"] and "--out" not in result["cmd"][0]
        *objects, prepared = result["diff"]
        assert len(objects) == result["actions"]
        (own,) = [d for d in objects if d["after_header"] == f"namespace {fleet.box.host(host)}"]
        assert own["before_header"] == f"namespace {fleet.box.host(host)} (absent)" and own["before"] == ""
        assert json.loads(own["after"]) == {"type": "namespace", "netns": fleet.box.host(host), "role": "host",
                                            "name": fleet.box.host(host), "host": host}
        assert f"for host {host}:" in prepared["prepared"] and "Plan: " in prepared["prepared"]
    assert all(stats["failures"] == 0 for stats in doc["stats"].values())
    assert ours(fleet.box) == set()  # no namespace made
    assert not fleet.files.exists()  # no file put in place


def test_a_rollout_converges_every_host_and_a_second_run_changes_nothing(fleet):
    fleet.previous("node2").parent.mkdir(parents=True)
    fleet.previous("node2").write_text("left by something else\n")  # not node2's previous file
    doc = fleet.playbook("rollout.yml")
    applied = results(doc, APPLY)
    for host in HOSTS:
        result = applied[host]
        assert result["changed"] is True and result["kernel_writes"] == result["actions"] > 0
        assert result["applied"]["actions"] == result["plan"]["actions"]  # exactly the plan shown
        assert result["applied"]["verified"] is True
        assert [argv[1] for argv in result["cmd"]] == ["plan", "apply"]
        assert fleet.dest(host).read_text() == fleet.box.path.read_text()
        assert not fleet.previous(host).exists()  # there was none (node2's stray one is gone)
    assert fleet.box.plan_exit() == 0  # the whole cluster matches the file
    assert fleet.box.ping(fleet.box.ns("app-1"), "10.244.3.2")

    again = fleet.playbook("rollout.yml")
    assert {host: stats["changed"] for host, stats in again["stats"].items()} == {host: 0 for host in HOSTS}
    assert all(stats["failures"] == 0 for stats in again["stats"].values())
    for result in results(again, APPLY).values():
        assert result["changed"] is False and result["kernel_writes"] == 0 and result["actions"] == 0
    assert all(not fleet.previous(host).exists() for host in HOSTS)  # same file: nothing to keep


def test_a_change_that_breaks_a_probe_on_node2_puts_node2_back_and_stops_the_rollout(fleet):
    fleet.deployed()
    good = fleet.box.path.read_text()
    broken = fleet.variant("broken", routes=[BROKEN_ROUTE])
    doc = fleet.playbook("rollout.yml", src=broken, expect=2)

    # node1 took the new file (nothing in its own part changes) and kept the previous one
    assert results(doc, APPLY)["node1"]["changed"] is False
    assert fleet.dest("node1").read_text() == broken.read_text() and fleet.previous("node1").read_text() == good
    # node2 applied it, its probes to app-1 broke, and it was put back
    assert results(doc, APPLY)["node2"]["summary"] == {"add": 1, "change": 0, "destroy": 0}
    regression = results(doc, "Fail when a probe that passed before the change fails after it")["node2"]
    assert regression["failed"] is True
    app1, app2 = fleet.box.ns("app-1"), fleet.box.ns("app-2")
    assert f"{app2} -> {app1} 10.244.1.2 (icmp): no reply" in regression["msg"] and "10.168.0.99" in regression["msg"]
    stop = results(doc, "Stop the rollout")["node2"]
    assert stop["failed"] is True and stop["msg"].startswith("topoctl rollout stopped on node2: 2 probe(s) that passed")
    assert f"Rolled back: {fleet.dest('node2')} is the previous file again" in stop["msg"]
    assert "after the rollback, 5 of 5 probes as designed" in stop["msg"]
    outcome = results(doc, "Record the rollout's outcome on this host")["node2"]["ansible_facts"]["topoctl_rollout"]
    assert outcome["rolled_back"] is True and outcome["rollback_changes"] == 1 and len(outcome["regressions"]) == 2
    assert fleet.dest("node2").read_text() == good
    assert ip("-n", fleet.box.host("node2"), "route", "show", "10.244.1.0/25").stdout.strip() == ""
    assert fleet.box.plan_exit() == 0  # every host is as the previous file says
    # the play stopped: node3 was never reached
    assert doc["stats"]["node2"]["failures"] == 1 and doc["stats"]["node2"]["rescued"] == 1
    assert "node3" not in doc["stats"] and all("node3" not in t["hosts"] for p in doc["plays"] for t in p["tasks"])
    assert fleet.dest("node3").read_text() == good and not fleet.previous("node3").exists()


def test_a_failed_apply_reports_topoctls_message_and_its_rollback(fleet):
    fleet.deployed()
    failing = fleet.variant("failing", routes=FAILING_ROUTES)
    # ad hoc, without `host`: the action plugin makes it the inventory hostname
    doc = fleet.module("node2", {"src": str(failing), "emulate": True}, expect=2)
    result = results(doc, "topoctl.net.topology")["node2"]
    assert result["failed"] is True and result["host"] == "node2"
    assert result["error"].startswith("step 2 of 2 failed: create route 10.98.0.0/24")
    assert result["hint"] == "rolled back: 1 steps restored the state before the apply (1 changes had been made)"
    assert result["rolled_back"] is True and result["error_type"] == "apply_failed"
    assert result["rollback"] == {"steps": 1, "complete": True, "not_undone": []}
    assert result["msg"].startswith("topoctl apply failed on host node2 (exit 1): step 2 of 2 failed")
    assert "topoctl rolled the host back" in result["msg"]
    assert fleet.box.plan_exit() == 0  # as before the apply


def test_a_rollout_cut_off_before_its_probes_is_put_back_first_by_the_next_run(fleet):
    """As a run killed between the install and the probes after leaves node2: the broken file
    in place and applied, the good one as .previous, and the .pending mark."""
    fleet.deployed()
    good = fleet.box.path.read_text()
    broken = fleet.variant("broken", routes=[BROKEN_ROUTE])
    fleet.previous("node2").write_text(good)
    fleet.dest("node2").write_text(broken.read_text())
    fleet.pending("node2").write_text("cut off\n")
    fleet.box.run("apply", "--host", "node2", path=fleet.dest("node2"))
    assert fleet.box.plan_exit() == 2  # node2 has the broken route
    doc = fleet.playbook("rollout.yml")  # the good file again: "unchanged" on node2
    resumed = {host: r for host, r in results(doc, "Apply the previous file of the cut-off rollout").items()
               if not r.get("skipped")}
    assert sorted(resumed) == ["node2"] and resumed["node2"]["summary"] == {"add": 0, "change": 0, "destroy": 1}
    assert all(stats["failures"] == 0 for stats in doc["stats"].values())
    assert fleet.box.plan_exit() == 0 and not fleet.pending("node2").exists()
    outcome = results(doc, "Record the rollout's outcome on this host")["node2"]["ansible_facts"]["topoctl_rollout"]
    assert outcome["resumed"] is True and outcome["file_changed"] is False


def test_a_first_rollout_cut_off_before_its_probes_is_undone_and_made_again(fleet):
    """No previous file: the next run destroys what the cut-off run built, then rolls out as a
    first rollout, probes after included (a built host would have given it nothing to check)."""
    fleet.dest("node1").parent.mkdir(parents=True)
    fleet.dest("node1").write_text(fleet.box.path.read_text())
    fleet.pending("node1").write_text("cut off\n")
    fleet.box.run("apply", "--host", "node1")
    doc = fleet.playbook("rollout.yml", "--limit", "node1")
    undone = results(doc, "Destroy what the cut-off first rollout built")["node1"]
    assert undone["changed"] is True and undone["state"] == "absent"
    applied = results(doc, APPLY)["node1"]
    assert applied["changed"] is True and applied["summary"]["add"] > 0  # built again, from nothing
    assert not results(doc, "Probe after the change")["node1"].get("skipped")
    outcome = results(doc, "Record the rollout's outcome on this host")["node1"]["ansible_facts"]["topoctl_rollout"]
    assert outcome["resumed"] is True and outcome["failed"] is False
    assert not fleet.pending("node1").exists() and not fleet.previous("node1").exists()
    assert fleet.box.ping(fleet.box.ns("app-1"), "10.244.1.1")


def test_a_first_rollout_that_fails_after_its_apply_destroys_what_it_built(fleet, tmp_path):
    """No previous file to put back: what the new file built goes. The fault: a topoctl whose
    second `check` (the probe after the apply) fails."""
    wrapper = tmp_path / "topoctl-faulty"
    marker = tmp_path / "checked-once"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" = check ]; then
  if [ -e {marker} ]; then echo "error: injected fault" >&2; exit 1; fi
  touch {marker}
fi
exec {BIN / "topoctl"} "$@"
""")
    wrapper.chmod(0o755)
    doc = fleet.playbook("rollout.yml", "--limit", "node1", "-e", f"rollout_executable={wrapper}", expect=2)
    assert results(doc, APPLY)["node1"]["changed"] is True
    undone = results(doc, "Destroy what the new file built (there was no file before it)")["node1"]
    assert undone["changed"] is True and undone["state"] == "absent"
    stop = results(doc, "Stop the rollout")["node1"]["msg"]
    assert "topoctl check on node1 failed after the change (exit 1): error: injected fault" in stop
    assert "There was no previous file: what the new one built is destroyed" in stop
    assert ours(fleet.box) == set() and not fleet.dest("node1").exists() and not fleet.pending("node1").exists()


def test_state_absent_destroys_every_host(fleet):
    fleet.deployed()
    doc = fleet.playbook("destroy.yml")
    for result in results(doc, "Destroy this host's part").values():
        assert result["changed"] is True and result["state"] == "absent" and result["summary"]["destroy"] > 0
        assert result["applied"]["actions"] == result["plan"]["actions"]
    assert ours(fleet.box) == set() and fleet.box.leftovers() == []
    again = fleet.playbook("destroy.yml")
    assert {host: stats["changed"] for host, stats in again["stats"].items()} == {host: 0 for host in HOSTS}


def load(relative: str):
    """A plugin of the collection as a Python module (for the parts that need no kernel)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(relative).stem, COLLECTIONS / "ansible_collections" / relative)
    module = importlib.util.module_from_spec(spec)
    was, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the collection
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = was
    return module


def test_the_diff_and_the_text_of_changes_in_place_come_from_the_json_plan():
    topology = load("topoctl/net/plugins/modules/topology.py")
    # changes in place, in the form plan -o json prints them (docs/commands.md#json-output)
    route = {"action": "change", "type": "route", "netns": "nginx-1", "subject": "route default in nginx-1",
             "to": "0.0.0.0/0", "via": "172.17.0.1", "dev": "eth0", "metric": 0,
             "changes": [{"attribute": "via", "old": "172.17.0.3", "new": "172.17.0.1"}]}
    table = {"action": "change", "type": "table", "netns": "docker0-local",
             "subject": "nftables table inet topoctl-docker0 in docker0-local", "family": "inet",
             "name": "topoctl-docker0",
             "rules": [{"change": "-", "chain": "prerouting", "rule": "tcp dport 8080 dnat ip to 172.17.0.2:80"},
                       {"change": "+", "chain": "prerouting", "rule": "tcp dport 8081 dnat ip to 172.17.0.2:80"},
                       {"change": "~", "chain": "output", "rule": "policy accept -> policy drop"}]}
    sysctl = {"action": "change", "type": "sysctl", "netns": "router",
              "subject": "sysctl net.ipv4.ip_forward in router", "key": "net.ipv4.ip_forward", "old": "0", "new": "1"}
    diff = topology.object_diff(route)
    before, after = json.loads(diff["before"]), json.loads(diff["after"])
    assert (before["via"], after["via"]) == ("172.17.0.3", "172.17.0.1") and before["to"] == after["to"] == "0.0.0.0/0"
    assert diff["before_header"] == diff["after_header"] == "route default in nginx-1"
    diff = topology.object_diff(table)
    assert json.loads(diff["before"])["rules"] == ["prerouting: tcp dport 8080 dnat ip to 172.17.0.2:80",
                                                   "output: policy accept"]
    assert json.loads(diff["after"])["rules"] == ["prerouting: tcp dport 8081 dnat ip to 172.17.0.2:80",
                                                  "output: policy drop"]
    diff = topology.object_diff(sysctl)
    assert (json.loads(diff["before"])["value"], json.loads(diff["after"])["value"]) == ("0", "1")
    text = topology.prepared_text({"topology": "docker0", "summary": {"add": 0, "change": 3, "destroy": 0},
                                   "actions": [route, table, sysctl], "notes": [], "warnings": []}, "local")
    assert text.splitlines() == [
        "topoctl plan of topology docker0 for host local:",
        "  ~ route default in nginx-1  via: 172.17.0.3 -> 172.17.0.1",
        "  ~ nftables table inet topoctl-docker0 in docker0-local",
        "      - prerouting: tcp dport 8080 dnat ip to 172.17.0.2:80",
        "      + prerouting: tcp dport 8081 dnat ip to 172.17.0.2:80",
        "      ~ output: policy accept -> policy drop",
        "  ~ sysctl net.ipv4.ip_forward in router  0 -> 1",
        "",
        "Plan: 0 to add, 3 to change, 0 to destroy."]
    # a failure is read from topoctl's JSON error document, never from its text
    class Failed(Exception):
        pass

    class Module:
        def fail_json(self, **result):
            raise Failed(result)

    def failure(out: dict | str, rc: int = 1) -> dict:
        with pytest.raises(Failed) as failed:
            topology.Runner(Module()).document("apply", rc, out if isinstance(out, str) else json.dumps(out),
                                                "error: text that is not read\n", host="n1")
        return failed.value.args[0]

    partial = failure({"format_version": 1, "error": {
        "type": "apply_failed", "message": "step 3 of 8 failed: sysctl net.ipv4.ip_forwrd does not exist in n1",
        "hint": "rolled back with 2 steps, but not all of it; not undone: + address 10.0.0.1/24 (File exists)",
        "exit_code": 1, "rollback": {"steps": 2, "complete": False, "not_undone": ["+ address 10.0.0.1/24"]}}})
    assert partial["rolled_back"] is False and partial["error_type"] == "apply_failed"
    assert partial["msg"].startswith("topoctl apply failed on host n1 (exit 1): step 3 of 8 failed: ")
    assert "could NOT roll everything back" in partial["msg"]
    stale = failure({"format_version": 1, "error": {
        "type": "stale_plan", "message": "stale plan: ...", "hint": "make a new one", "exit_code": 1,
        "rollback": None}})
    assert stale["rolled_back"] is None and stale["msg"].endswith("stale plan: ... (make a new one)")
    crash = failure("Traceback (most recent call last):", rc=1)
    assert "without its JSON error document" in crash["msg"] and "rolled_back" not in crash


def test_only_probes_that_passed_before_are_required_after():
    probes = load("topoctl/net/plugins/filter/probes.py")

    def row(to, ok, **extra):
        return {"group": "across", "kind": "icmp", "from": "a", "to": to, "target": f"10.0.0.{len(to)}",
                "port": None, "size": None, "as_designed": ok, "detail": "reply" if ok else "no reply",
                "explanation": extra.get("explanation", [])}

    before = [row("b", True), row("cc", False), row("ddd", True)]
    hop = {"namespace": "n", "what": "route", "ok": False, "text": "no route", "fix": "apply"}
    after = [row("b", False, explanation=[hop]), row("cc", False)]
    found = probes.probe_regressions(after, before)
    assert [f["text"] for f in found] == ["a -> b 10.0.0.1 (icmp): no reply: no route (fix: apply)",
                                          "across icmp a -> ddd 10.0.0.3 port=None size=None: passed before, "
                                          "not probed after"]
    assert probes.probe_summary(after) == "0 of 2 probes as designed"
    assert probes.check_error({"rc": 2, "stdout": json.dumps(after)}) == ""  # a probe not as designed
    assert probes.check_error({"rc": 1, "stdout": json.dumps({"format_version": 1, "error": {
        "type": "lock_timeout", "message": "node1 is locked", "hint": "wait", "exit_code": 1, "rollback": None}})}) \
        == "node1 is locked (wait)"
    assert probes.check_error({"rc": 2, "stdout": "", "msg": "[Errno 2] No such file or directory"}) \
        == "[Errno 2] No such file or directory"
    with pytest.raises(ValueError):
        probes.probes_passing({"valid": False, "problems": []})
