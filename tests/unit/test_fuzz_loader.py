"""Bad input never crashes: whatever the bytes, loading gives a Topology or InvalidTopology
(the CLI's exit 0 or 2), never another exception. Longer runs: TOPOCTL_FUZZ_EXAMPLES=5000."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topoctl.errors import InvalidTopology
from topoctl.spec.loader import load_file, load_text
from topoctl.spec.model import Topology

EXAMPLES = int(os.environ.get("TOPOCTL_FUZZ_EXAMPLES", "150"))
ROOT = Path(__file__).resolve().parents[2]
SEEDS = [(ROOT / "topologies" / name).read_text() for name in
         ("docker0.yaml", "routed.yaml", "vxlan-2hosts.yaml", "host-gw-3hosts.yaml")]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loads_or_refuses(text: str) -> None:
    try:
        assert isinstance(load_text(text, "fuzz.yaml"), Topology)
    except InvalidTopology as invalid:
        assert invalid.diagnostics and all(d.message for d in invalid.diagnostics)


@FUZZ
@given(st.text(max_size=400))
def test_any_text(text):
    loads_or_refuses(text)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 6), st.text(max_size=6)),
                                        min_size=1, max_size=6))
def test_mutated_examples(seed, edits):
    text = seed
    for position, cut, insert in edits:
        position %= len(text) + 1
        text = text[:position] + insert + text[position + cut:]
    loads_or_refuses(text)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=20),
                    st.sampled_from(["10.0.0.1/24", "fd00::1/64", "default", "veth", "eth0", "up", "node1"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["name", "host", "hosts", "bridges", "namespaces", "links", "routes", "overlays",
                                     "endpoints", "addresses", "type", "to", "via", "mtu", "subnets", "vni"]) | st.text(max_size=8),
                    inner, max_size=5)), max_leaves=30)


@FUZZ
@given(documents)
def test_random_structures_in_the_topology_shape(body):
    document = {"apiVersion": "topoctl/v1", "kind": "Topology", "name": "fuzz"}
    if isinstance(body, dict):
        document.update(body)
    loads_or_refuses(yaml.safe_dump(document))


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_from_a_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "t.yaml"
    path.write_bytes(data)
    try:
        load_file(path)
    except InvalidTopology:
        pass


sysctl_values = st.one_of(
    st.integers(-2**40, 2**40),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-99999, 99999).map(str), st.sampled_from(["0", "00", "07", "010", "08", "0x1f", "-0x10"])),
             min_size=1, max_size=4).flatmap(lambda tokens: st.sampled_from([" ", "  ", "\t", " \t "]).map(
                 lambda sep: sep.join(tokens))),
)


@FUZZ
@given(sysctl_values)
def test_a_sysctl_value_loads_to_a_fixed_point_that_means_what_the_kernel_reads(value):
    """Whatever the value: an error, or a canonical form that loads to itself and, for numbers,
    holds the values the kernel would have read from what was written."""
    from topoctl.spec.model import canonical_sysctl, kernel_integer

    text = "apiVersion: topoctl/v1\nkind: Topology\nname: f\nnamespaces:\n  a:\n    sysctls:\n      net.core.x: "
    try:
        topology = load_text(text + yaml.safe_dump(value, default_style='"' if isinstance(value, str) else None).strip()
                             + "\n", "fuzz.yaml")
    except InvalidTopology as invalid:
        assert all(d.line == 7 for d in invalid.diagnostics)
        return
    [(_, held)] = topology.namespaces[0].sysctls
    assert canonical_sysctl(held) == held and held == held.strip() and "  " not in held and "\t" not in held
    written = str(value).split()
    if written and all(kernel_integer(t) is not None for t in written):
        assert [int(t) for t in held.split()] == [kernel_integer(t) for t in written]
