"""Issue 13: `rate` on a veth end, a tbf root qdisc: a bounded transfer takes at least the time
the rate implies and is much faster without it; drift of the qdisc is repaired; a rate taken
out of the file is removed; the rendered script makes the same qdiscs."""

from __future__ import annotations

import copy
import subprocess

from . import probes

SIZE = 3_000_000  # bytes: 2.4 s at 10mbit
RATE = 10_000_000

RATED = {
    "apiVersion": "topoctl/v1", "kind": "Topology", "name": "rate",
    "bridges": {"br0": {"addresses": ["10.9.0.1/24"]}},
    "namespaces": {"a": {}, "b": {}},
    "links": [
        {"type": "veth", "endpoints": [{"namespace": "a", "name": "eth0", "addresses": ["10.9.0.2/24"], "rate": "10mbit"},
                                       {"bridge": "br0", "name": "veth-a", "rate": "10mbit"}]},
        {"type": "veth", "endpoints": [{"namespace": "b", "name": "eth0", "addresses": ["10.9.0.3/24"]},
                                       {"bridge": "br0", "name": "veth-b"}]},
    ],
}


def unrated() -> dict:
    data = copy.deepcopy(RATED)
    for end in data["links"][0]["endpoints"]:
        end.pop("rate")
    return data


def seconds_to_send(box) -> float:
    with probes.sink(box.ns("b"), 5001):
        return probes.transfer_seconds(box.ns("a"), "10.9.0.3", 5001, SIZE)


def test_a_rate_limits_what_the_end_sends_and_nothing_else_does(sandbox_factory):
    box = sandbox_factory(unrated())
    box.apply()
    free = seconds_to_send(box)
    box.write(RATED)
    box.apply()
    limited = seconds_to_send(box)
    burst = 12_500  # the default: 10 ms at the rate
    assert limited >= (SIZE - burst) * 8 / RATE * 0.95, (limited, free)
    assert free < limited / 4, (limited, free)
    assert box.plan_exit() == 0


def test_qdisc_drift_is_repaired_and_a_rate_taken_out_is_removed(sandbox_factory):
    box = sandbox_factory(RATED)
    box.apply()
    a = box.ns("a")
    subprocess.run(["tc", "-n", a, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "10kb",
                    "latency", "50ms"], check=True)
    assert box.plan_exit() == 2
    box.apply()
    shown = subprocess.run(["tc", "-n", a, "qdisc", "show", "dev", "eth0"], capture_output=True, text=True).stdout
    assert "rate 10Mbit" in shown
    box.write(unrated())
    steps = [(s["action"], s["type"]) for s in box.plan()["actions"]]
    assert steps == [("delete", "rate"), ("delete", "rate")]
    box.apply()
    shown = subprocess.run(["tc", "-n", a, "qdisc", "show", "dev", "eth0"], capture_output=True, text=True).stdout
    assert "tbf" not in shown
    assert box.plan_exit() == 0


def test_the_rendered_script_makes_the_same_qdiscs(sandbox_factory):
    from .conftest import normalised
    from .test_examples import _declared_macs

    box = sandbox_factory(RATED)
    box.apply()
    applied = normalised(box.show(), _declared_macs(box))
    assert len(applied["rates"]) == 2
    box.run("destroy")
    ran = subprocess.run(["sh", "-c", box.run("render").stdout], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert normalised(box.show(), _declared_macs(box)) == applied
    assert box.plan_exit() == 0
