"""Property: any valid topology, applied, drifted by hand, re-applied, edited, re-applied and
destroyed, converges each time and leaves nothing. Hypothesis searches for a counter-example.

CI runs TOPOCTL_PROPERTY_EXAMPLES (default 30) random topologies; raise it for a longer hunt.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import ROOT, TOPOCTL, Sandbox

pytestmark = pytest.mark.root

EXAMPLES = int(os.environ.get("TOPOCTL_PROPERTY_EXAMPLES", "30"))


@st.composite
def topologies(draw) -> dict:
    bridges = draw(st.integers(1, 2))
    containers = draw(st.integers(1, 4))
    document: dict = {"apiVersion": "topoctl/v1", "kind": "Topology", "name": "prop",
                      "bridges": {}, "namespaces": {}, "links": []}
    for b in range(bridges):
        document["bridges"][f"br{b}"] = {"addresses": [f"10.{50 + b}.0.1/24"],
                                         "mtu": draw(st.sampled_from([1500, 1450, 9000]))}
    for c in range(containers):
        b = draw(st.integers(0, bridges - 1))
        name = f"p{c}"
        routed = draw(st.booleans())
        document["namespaces"][name] = {"routes": [{"to": "default", "via": f"10.{50 + b}.0.1"}]} if routed else {}
        document["links"].append({"type": "veth", "endpoints": [
            {"namespace": name, "name": "eth0", "addresses": [f"10.{50 + b}.0.{10 + c}/24"],
             "mtu": document["bridges"][f"br{b}"]["mtu"]},
            {"bridge": f"br{b}", "name": f"vp{c}", "mtu": document["bridges"][f"br{b}"]["mtu"]}]})
    if containers >= 2 and draw(st.booleans()):  # a cable between two containers, maybe down
        document["links"].append({"type": "veth", "endpoints": [
            {"namespace": "p0", "name": "x1", "addresses": ["10.99.0.1/30", "fd99::1/64"],
             "state": draw(st.sampled_from(["up", "down"]))},
            {"namespace": "p1", "name": "x1", "addresses": ["10.99.0.2/30", "fd99::2/64"]}]})
    return document


def drifts(box: Sandbox, document: dict) -> list[list[str]]:
    """Hand-made changes to the applied topology, as ip commands."""
    host, first = box.host(), box.ns("p0")
    out = [["-n", host, "link", "del", "vp0"], ["-n", first, "link", "set", "eth0", "down"],
           ["-n", host, "link", "set", "br0", "mtu", "1300"], ["-n", first, "addr", "flush", "dev", "eth0"],
           ["-n", host, "link", "set", "vp0", "nomaster"], ["netns", "del", first],
           ["-n", host, "addr", "add", "192.0.2.9/24", "dev", "br0"]]
    if document["namespaces"]["p0"].get("routes"):
        out.append(["-n", first, "route", "del", "default"])
    return out


def edited(document: dict, choice: int) -> dict:
    document = json.loads(json.dumps(document))
    if choice == 0 and len(document["namespaces"]) > 1:  # a container leaves
        last = sorted(document["namespaces"])[-1]
        del document["namespaces"][last]
        document["links"] = [link for link in document["links"]
                             if all(e.get("namespace") != last for e in link["endpoints"])]
    elif choice == 1:  # a bridge's MTU changes, with its ports
        for bridge in document["bridges"].values():
            bridge["mtu"] = 1400
        for link in document["links"]:
            for end in link["endpoints"]:
                if "mtu" in end:
                    end["mtu"] = 1400
    elif choice == 4:  # a container leaves and the MTUs change: a deletion, then more steps
        document = edited(edited(document, 0), 1)
    elif choice == 2:  # an address moves within its subnet
        end = document["links"][0]["endpoints"][0]
        end["addresses"] = [end["addresses"][0].replace(".0.10/", ".0.200/")]
    else:  # a container joins
        document["namespaces"]["pn"] = {"routes": [{"to": "default", "via": "10.50.0.1"}]}
        document["links"].append({"type": "veth", "endpoints": [
            {"namespace": "pn", "name": "eth0", "addresses": ["10.50.0.250/24"],
             "mtu": document["bridges"]["br0"]["mtu"]},
            {"bridge": "br0", "name": "vpn", "mtu": document["bridges"]["br0"]["mtu"]}]})
    return document


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=topologies(), drift=st.integers(0, 7), edit=st.integers(0, 3))
def test_random_topologies_converge_from_drift_and_edits_and_leave_nothing(document, drift, edit):
    with tempfile.TemporaryDirectory() as folder:
        box = Sandbox(Path(folder), document)
        try:
            box.apply()
            assert box.plan_exit() == 0
            commands = drifts(box, document)
            subprocess.run(["ip", *commands[drift % len(commands)]], check=True, capture_output=True)
            box.apply()
            assert box.plan_exit() == 0, "not converged after drift"
            box.write(edited(document, edit))
            box.apply()
            assert box.plan_exit() == 0, "not converged after an edit of the file"
            box.run("destroy")
            assert box.leftovers() == []
        finally:
            box.run("destroy", expect=None)
            box.force_clean()


ROLLBACK_EXAMPLES = int(os.environ.get("TOPOCTL_ROLLBACK_EXAMPLES", "20"))


@settings(max_examples=ROLLBACK_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=topologies(), edit=st.integers(0, 4), where=st.floats(0, 1, exclude_max=True))
def test_random_edits_failing_at_a_random_step_roll_back_to_the_state_before(document, edit, where):
    """Any edit of any topology, made to fail at any of its steps (deletions of namespaces,
    links and addresses included), leaves the state it found; then the edit applies."""
    with tempfile.TemporaryDirectory() as folder:
        box = Sandbox(Path(folder), document)
        try:
            box.apply()
            box.write(edited(document, edit))
            # seen through the edited file, which may read more (a sysctl it derives): the same view after
            before = box.show()
            steps = len(box.plan()["actions"])
            if steps == 0:
                return
            k = 1 + int(where * steps)
            env = {**os.environ, "TOPOCTL_FAULT_AT": str(k)}
            result = subprocess.run([*TOPOCTL, "apply", "--emulate", str(box.path)], capture_output=True,
                                    text=True, cwd=ROOT, env=env, timeout=120)
            assert result.returncode == 1 and f"step {k} of {steps} failed" in result.stderr, result.stderr
            assert "not undone" not in result.stderr, result.stderr
            assert box.show() == before, f"fault at step {k} of {steps}: the state differs after the rollback"
            box.apply()
            assert box.plan_exit() == 0
            box.run("destroy")
            assert box.leftovers() == []
        finally:
            box.run("destroy", expect=None)
            box.force_clean()
