"""All or nothing: a step the kernel refuses rolls back every change made before it."""

from __future__ import annotations

import json

import pytest

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
    assert "rolled back 4 of 4 earlier changes" in result.stderr
    assert netns_names() == before
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
