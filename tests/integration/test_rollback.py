"""All or nothing: a step the kernel refuses rolls back every change made before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from topoctl.kernel import namespaces as ns

from .conftest import netns_names

pytestmark = pytest.mark.root


def with_bad_sysctl(data: dict, namespace: str) -> dict:
    data = json.loads(json.dumps(data))
    data["namespaces"][namespace] = {**(data["namespaces"][namespace] or {}),
                                     "sysctls": {"net.ipv4.no_such_knob": "1"}}
    return data


def test_failed_first_apply_leaves_nothing(sandbox_factory):
    box = sandbox_factory("point-to-point.yaml")
    box.write(with_bad_sysctl(box.original, "left"))
    before = netns_names()
    result = box.run("apply", expect=1)
    assert "failed: sysctl net.ipv4.no_such_knob does not exist in" in result.stderr
    assert "rolled back: 3 steps restored the state before the apply (3 changes had been made)" in result.stderr
    assert netns_names() == before
    assert box.leftovers() == []


def test_failed_apply_in_json_says_what_failed_and_what_was_rolled_back(sandbox_factory):
    """-o json: the failure is a document on stdout, so a program (the Ansible module) reads
    the rollback from fields; stderr still has the message for people."""
    box = sandbox_factory("point-to-point.yaml")
    box.write(with_bad_sysctl(box.original, "left"))
    result = box.run("apply", "-o", "json", expect=1)
    document = json.loads(result.stdout)
    error = document["error"]
    assert document["format_version"] == 1
    assert error["type"] == "apply_failed" and error["exit_code"] == 1
    assert "failed: sysctl net.ipv4.no_such_knob does not exist in" in error["message"]
    assert error["hint"] == "rolled back: 3 steps restored the state before the apply (3 changes had been made)"
    assert error["rollback"] == {"steps": 3, "complete": True, "not_undone": []}
    assert "error: " in result.stderr
    assert box.leftovers() == []


def test_failed_change_restores_the_state_before(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    before = box.show()
    data = with_bad_sysctl(box.original, "nginx-2")
    data["bridges"]["docker0"]["mtu"] = 1400          # a change in place, made before the failure
    data["namespaces"]["nginx-9"] = {}                # a creation, made before the failure
    box.write(data)
    result = box.run("apply", expect=1)
    assert "rolled back" in result.stderr
    assert box.show() == before
    assert box.ns("nginx-9") not in netns_names()


def test_a_run_of_sysctls_failing_part_way_rolls_back_the_ones_written(sandbox_factory):
    """Sysctl steps of one phase are written together, by one thread moving between
    namespaces: when one fails, those written before it are counted as done, reported, and
    rolled back."""
    box = sandbox_factory("docker0.yaml")
    box.apply()
    data = json.loads(json.dumps(box.original))
    data["namespaces"]["nginx-1"] = {**(data["namespaces"]["nginx-1"] or {}), "sysctls": {"net.ipv4.ip_forward": "1"}}
    box.write(with_bad_sysctl(data, "nginx-2"))
    steps = [a["subject"] for a in json.loads(box.run("plan", "-o", "json").stdout)["actions"]]
    assert steps == [f"sysctl net.ipv4.ip_forward in {box.ns('nginx-1')}",
                     f"sysctl net.ipv4.no_such_knob in {box.ns('nginx-2')}"]
    assert _sysctl(box.ns("nginx-1"), "net.ipv4.ip_forward") == "0"
    result = box.run("apply", expect=1)
    assert f"step 2 of 2 failed: sysctl net.ipv4.no_such_knob does not exist in {box.ns('nginx-2')}" in result.stderr
    assert "rolled back: 1 steps restored the state before the apply (1 changes had been made)" in result.stderr
    assert _sysctl(box.ns("nginx-1"), "net.ipv4.ip_forward") == "0"


def _run_with_fault(box, k: int):
    import os
    import subprocess

    from .conftest import ROOT, TOPOCTL

    env = {**os.environ, "TOPOCTL_FAULT_AT": str(k)}
    return subprocess.run([*TOPOCTL, "apply", "--emulate", str(box.path)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_a_fault_at_every_step_of_a_cold_apply_leaves_nothing(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    steps = len(box.plan()["actions"])
    assert steps == 19  # the docker0 example: forwarding, route_localnet, table (issue 13), the underlay and its gateway
    for k in range(1, steps + 1):
        result = _run_with_fault(box, k)
        assert result.returncode == 1, result.stderr
        assert f"step {k} of {steps} failed" in result.stderr and "injected fault" in result.stderr
        assert "Traceback" not in result.stderr
        assert box.leftovers() == [], f"fault at step {k} left {box.leftovers()}"
    box.apply()  # and without a fault it still builds


def test_a_fault_at_every_step_of_a_change_restores_the_state_before(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    before = box.show()
    data = json.loads(json.dumps(box.original))
    data["bridges"]["docker0"]["mtu"] = 1400                                   # change in place
    data["links"][0]["endpoints"][0]["addresses"] = ["172.17.0.12/16"]         # address swap
    data["namespaces"]["nginx-1"]["routes"] = [{"to": "10.9.0.0/16", "via": "172.17.0.1"}]  # route swap
    data["namespaces"]["nginx-9"] = {}                                         # a new namespace
    box.write(data)
    steps = len(box.plan()["actions"])
    assert steps >= 6
    for k in range(1, steps + 1):
        result = _run_with_fault(box, k)
        assert result.returncode == 1 and f"step {k} of {steps} failed" in result.stderr
        assert box.show() == before, f"fault at step {k}: state differs after rollback"
        assert box.ns("nginx-9") not in netns_names()


def _sysctl(namespace: str, key: str) -> str:
    return ns.run_in_netns(namespace, lambda: open("/proc/sys/" + key.replace(".", "/")).read().strip())


def test_a_fault_at_every_step_of_a_change_with_deletions_restores_the_state_before(sandbox_factory):
    """The deleted objects come back whole: a namespace with its cable, address, route and
    sysctl; a veth pair replaced (-/+) with its MACs; a bridge port detached."""
    box = sandbox_factory("docker0.yaml")
    data = json.loads(json.dumps(box.original))
    data["namespaces"]["nginx-3"] = {"routes": [{"to": "10.30.0.0/16", "via": "172.17.0.1"}],
                                     "sysctls": {"net.ipv4.ip_forward": "1"}}
    data["links"].append({"type": "veth", "endpoints": [
        {"namespace": "nginx-3", "name": "eth0", "addresses": ["172.17.0.4/16"]},
        {"bridge": "docker0", "name": "veth-nginx3"}]})
    box.write(data)
    box.apply()
    before = box.show()
    macs = {ns_name: subprocess.run(["ip", "-n", box.ns(ns_name), "-j", "link", "show", "dev", "eth0"],
                                    capture_output=True, text=True, check=True).stdout for ns_name in ("nginx-1", "nginx-3")}

    changed = json.loads(json.dumps(box.original))                     # nginx-3 and its cable removed
    changed["links"][0]["endpoints"][0]["name"] = "eth1"                # nginx-1's pair replaced (-/+)
    changed["bridges"]["docker0"]["mtu"] = 1400                          # a change in place
    changed["namespaces"]["nginx-9"] = {}                                # a creation
    box.write(changed)
    kinds = [(a["action"], a["type"]) for a in box.plan()["actions"]]
    assert ("delete", "namespace") in kinds and ("delete", "link") in kinds and ("create", "link") in kinds
    steps = len(kinds)
    for k in range(1, steps + 1):
        result = _run_with_fault(box, k)
        assert result.returncode == 1 and f"step {k} of {steps} failed" in result.stderr, result.stderr
        assert "rolled back" in result.stderr and "not undone" not in result.stderr, result.stderr
        assert box.show() == before, f"fault at step {k}: state differs after rollback"
        assert box.ns("nginx-9") not in netns_names()
        assert _sysctl(box.ns("nginx-3"), "net.ipv4.ip_forward") == "1", f"fault at step {k}: sysctl lost"
        for ns_name, shown in macs.items():
            now = subprocess.run(["ip", "-n", box.ns(ns_name), "-j", "link", "show", "dev", "eth0"],
                                 capture_output=True, text=True, check=True).stdout
            assert json.loads(now)[0]["address"] == json.loads(shown)[0]["address"], f"fault at step {k}: MAC"
    box.apply()  # and without a fault the change goes through
    assert box.ns("nginx-3") not in netns_names()


def test_a_replaced_bridge_is_restored_with_its_ports(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    before = box.show()
    changed = json.loads(json.dumps(box.original))
    changed["bridges"]["docker0"]["stp"] = True if not changed["bridges"]["docker0"].get("stp") else False
    changed["bridges"]["docker0"]["name"] = "docker1"                  # the bridge is replaced
    box.write(changed)
    steps = len(box.plan()["actions"])
    for k in range(1, steps + 1):
        result = _run_with_fault(box, k)
        assert result.returncode == 1 and f"step {k} of {steps} failed" in result.stderr, result.stderr
        assert box.show() == before, f"fault at step {k}: state differs after rollback"
    assert box.ping(box.ns("nginx-1"), "172.17.0.3")  # and the restored bridge carries traffic


def test_a_failed_verification_rolls_back_the_whole_apply(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    before = box.show()
    changed = json.loads(json.dumps(box.original))
    changed["bridges"]["docker0"]["mtu"] = 1400
    changed["namespaces"]["nginx-9"] = {}
    box.write(changed)
    result = _run_with_fault(box, "verify")
    assert result.returncode == 1, result.stderr
    assert "verification: injected fault" in result.stderr and "rolled back" in result.stderr, result.stderr
    assert box.show() == before
    assert box.ns("nginx-9") not in netns_names()


def test_sigterm_during_an_apply_rolls_it_back(sandbox_factory):
    """SIGTERM (kill, systemd, a CI runner giving up) between two steps: the apply undoes what
    it did, says so, and exits 143; no journal is left for a later run to take over. The run
    waits before step 5 (a test hook) until the signal has arrived, so it always lands there."""
    from .test_scale import containers

    box = sandbox_factory(containers(40))
    box.apply()
    subprocess.run(["ip", "-n", box.host(), "-batch", "-"], check=True, text=True,
                   input="".join(f"link del v{i}\n" for i in range(0, 40, 2)))  # 20 veths to repair
    drifted = box.show()
    run = start_paused(box, "apply", "5")
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert run.returncode == 143, err
    assert "stopped after step 4 of" in err and "terminated (SIGTERM)" in err, err
    assert "rolled back: 4 steps restored the state before the apply (4 changes had been made)" in err, err
    assert box.show() == drifted, "the state differs after the rollback"
    assert not os.path.exists(journal_path(box))
    box.apply()  # the repair itself still works
    assert box.plan_exit() == 0


def journal_path(box) -> str:
    return f"/run/topoctl/journal/{box.topology}.jsonl"


def start_paused(box, command: str, step: str) -> subprocess.Popen:
    """topoctl COMMAND started with TOPOCTL_PAUSE_AT=step, returned once it waits there."""
    from .conftest import ROOT, TOPOCTL

    run = subprocess.Popen([*TOPOCTL, command, "--emulate", str(box.path)], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, "TOPOCTL_PAUSE_AT": step})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and run.poll() is None:
        try:
            with open(journal_path(box), encoding="utf-8") as journal:
                if any(json.loads(line).get("event") == "paused" for line in journal if line.strip()):
                    return run
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.005)
    run.kill()
    raise AssertionError(f"{command} never paused: {run.communicate()}")


def test_two_signals_microseconds_apart_between_steps_roll_back_whole(sandbox_factory):
    """A second Ctrl-C does not cut the rollback short: both are noted, the rollback runs to
    its end, and the exit code is Ctrl-C's."""
    from .test_scale import containers

    box = sandbox_factory(containers(12))
    run = start_paused(box, "apply", "20")  # past the 13 new namespaces, among the cables
    run.send_signal(signal.SIGINT)
    run.send_signal(signal.SIGINT)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "stopped after step 19 of" in err and "interrupted (Ctrl-C)" in err \
        and "rolled back: 13 steps restored the state before the apply (19 changes had been made)" in err, err
    assert "not undone" not in err and "Traceback" not in err, err
    assert box.leftovers() == []  # none of its namespaces, records or routes


def test_a_signal_during_the_verification_lets_the_apply_complete(sandbox_factory):
    """Every step is done by then: the apply verifies, exits 0 and says the signal came too late."""
    box = sandbox_factory("docker0.yaml")
    run = start_paused(box, "apply", "verify")
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "Apply complete!" in out and "Ctrl-C received; it came after the last step had begun" in out, out
    assert box.plan_exit() == 0


def test_a_signal_during_a_destroy_lets_it_finish(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    box.apply()
    run = start_paused(box, "destroy", "2")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "Destroy complete!" in out and "a destroy that has begun is finished" in out, out
    assert box.leftovers() == []


def test_a_signal_before_the_first_step_changes_nothing(sandbox_factory):
    box = sandbox_factory("docker0.yaml")
    run = start_paused(box, "apply", "1")
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143, err
    assert "stopped after step 0 of 19: terminated (SIGTERM)" in err and "rolled back: nothing had been changed" in err, err
    assert box.leftovers() == []


def test_a_failure_inside_a_run_of_new_namespaces_is_rolled_back(sandbox_factory, monkeypatch):
    """Namespaces are made by two threads at once; one failing part way (here its record
    cannot be written) fails that step, and the rollback leaves nothing of the run."""
    from topoctl.kernel import namespaces as ns
    from topoctl.store import records
    from topoctl.run.reconcile import reconcile
    from topoctl.run.context import Context, realise
    from topoctl.errors import ApplyFailed, Rollback
    from topoctl.kernel.sockets import Kernel
    from topoctl.spec.loader import load_file

    from .test_scale import containers

    monkeypatch.setattr(ns, "cpus", lambda: 2)
    box = sandbox_factory(containers(12))
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    names = [a["name"] for a in box.plan()["actions"] if a["type"] == "namespace"]
    victim = names[8]
    real_record = records.record_netns

    def record(name, netns_record):
        if name == victim:
            raise OSError(28, "No space left on device")
        real_record(name, netns_record)

    monkeypatch.setattr(records, "record_netns", record)
    with Kernel() as kernel, pytest.raises(ApplyFailed) as caught:
        reconcile(kernel, context)
    message = str(caught.value)
    assert f"step 9 of {len(box.plan()['actions'])} failed: create namespace {victim}: No space left on device" in message
    assert caught.value.rollback == Rollback(8, ())  # the 8 made before it
    assert box.leftovers() == []
