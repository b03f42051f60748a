"""Loader errors: every bad input gives exit 2 and `FILE:LINE:COL: error: message` at the right place.

Each YAML below is written so that the offending token's line and column are known exactly.
The first three lines are always HEAD, so a body starts at line 4. No root is needed.

typer 0.29 vendors its own click (typer._click): its CliRunner has no `mix_stderr` and
always keeps `result.stdout` and `result.stderr` apart, which is what these tests rely on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topoctl.cli import app
from topoctl.errors import Diagnostic, InvalidTopology
from topoctl.spec.loader import load_file, load_text
from topoctl.spec.model import Topology

REPO = Path(__file__).resolve().parents[2]
# The interpreter running the tests, on this tree's package: a work tree has no .venv of its own.
TOPOCTL = (sys.executable, "-m", "topoctl")
EXAMPLES = sorted((REPO / "topologies").glob("*.yaml"))
HEAD = "apiVersion: topoctl/v1\nkind: Topology\nname: t\n"  # lines 1-3
YAML_HINT = "check indentation, colons and quotes"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

runner = CliRunner()


def veth(a: str, b: str) -> str:
    """One link: 4 lines, endpoint a on the 3rd and endpoint b on the 4th."""
    return f"  - type: veth\n    endpoints:\n      - {a}\n      - {b}\n"


def write(tmp_path: Path, text: str | bytes, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def cli_validate(*args: str):
    result = runner.invoke(app, ["validate", *args])
    return result, ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)


def run_topoctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["NO_COLOR"] = "1"
    return subprocess.run([*TOPOCTL, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def diagnostics_of(text: str, file: str = "t.yaml") -> list[Diagnostic]:
    with pytest.raises(InvalidTopology) as info:
        load_text(text, file)
    assert all(isinstance(d, Diagnostic) for d in info.value.diagnostics)
    assert info.value.exit_code == 2
    return info.value.diagnostics


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    line: int
    column: int
    message: str  # a substring of the diagnostic's message
    hint: str | None = None  # the exact hint, when the code gives one


NS_A = "namespaces:\n  a: {}\n"  # lines 4-5
NS_AB = "namespaces:\n  a: {}\n  b: {}\n"  # lines 4-6

BAD_INPUTS = [
    # --- malformed YAML
    Bad("yaml-bad-indentation", HEAD + "namespaces:\n  a:\n    routes:\n  - {to: default}\n",
        7, 3, "malformed YAML: while parsing a block mapping, expected <block end>, but found '-'", YAML_HINT),
    Bad("yaml-misaligned-key", HEAD + "bridges:\n  br0:\n    mtu: 1500\n   stp: true\n",
        7, 4, "malformed YAML: while parsing a block mapping", YAML_HINT),
    Bad("yaml-unclosed-bracket", HEAD + "bridges:\n  br0:\n    addresses: [10.0.0.1/24\n    mtu: 1500\n" + NS_A,
        6, 16, "'[' is never closed: while parsing a flow sequence, expected ',' or ']', but got ':' at line 7, column 8",
        "close it with ']'"),  # where the '[' opens, not the next line's ':' where the parser stops
    Bad("yaml-tab-indent", HEAD + "bridges:\n\tbr0: {}\n",
        5, 1, "found character '\\t' that cannot start any token", YAML_HINT),
    Bad("yaml-python-object-tag", HEAD + "namespaces: !!python/object:os.system {}\n",
        4, 13, "unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'"),
    Bad("yaml-python-name-tag-on-scalar", HEAD + "namespaces:\n  a:\n    host: !!python/name:os.system ''\n",
        6, 11, "unsupported YAML tag 'tag:yaml.org,2002:python/name:os.system'", "topology files use plain YAML values only"),
    Bad("yaml-deep-nesting", HEAD + "links: " + "[" * 100 + "]" * 100 + "\n",
        4, 8 + 64, "document nested deeper than 64 levels"),  # the 65th '[' is the first too deep
    Bad("yaml-duplicate-key", HEAD + "bridges:\n  br0: {}\n  br0: {}\n",
        6, 3, "duplicate key 'br0' (first given at line 5)"),
    Bad("yaml-duplicate-key-flow", HEAD + "namespaces:\n  a:\n    routes:\n      - {to: default, to: 10.0.0.0/8}\n",
        7, 23, "duplicate key 'to' (first given at line 7)"),
    Bad("yaml-duplicate-top-level-name", HEAD + "name: u\n", 4, 1, "duplicate key 'name' (first given at line 3)"),
    Bad("empty-file", "", 1, 1, "the file is empty", "start from topologies/docker0.yaml"),
    Bad("comments-only-file", "# nothing here\n\n", 1, 1, "the file is empty", "start from topologies/docker0.yaml"),
    # --- schema: unknown, missing and mistyped keys
    Bad("unknown-key-did-you-mean", HEAD + "bridges:\n  br0:\n    adresses: [10.0.0.1/24]\n",
        6, 5, "unknown key 'adresses' in bridges.br0", "did you mean 'addresses'?"),
    Bad("unknown-top-level-key", HEAD + "namespace: {}\n",
        4, 1, "unknown key 'namespace' in the document", "did you mean 'namespaces'?"),
    Bad("missing-name", "apiVersion: topoctl/v1\nkind: Topology\n", 1, 1, "missing key 'name' in the document"),
    Bad("missing-route-to", HEAD + "namespaces:\n  a:\n    routes:\n      - {via: 10.0.0.1}\n",
        7, 9, "missing key 'to' in namespaces.a.routes.0"),
    Bad("missing-endpoints", HEAD + "links:\n  - type: veth\n", 5, 5, "missing key 'endpoints' in links.0"),
    Bad("mtu-as-string", HEAD + "bridges:\n  br0:\n    mtu: '1500'\n",
        6, 10, "bridges.br0.mtu: expected an integer, got a string"),
    Bad("addresses-as-string", HEAD + "bridges:\n  br0:\n    addresses: 10.0.0.1/24\n",
        6, 16, "bridges.br0.addresses: expected a list, got a string"),
    # --- addresses and routes
    Bad("cidr-octet-300", HEAD + "bridges:\n  br0:\n    addresses: [172.17.0.300/16]\n",
        6, 17, "'172.17.0.300/16' is not a valid address with prefix length", "write it as 172.17.0.2/16 or fd00::2/64"),
    Bad("address-without-prefix", HEAD + "bridges:\n  br0:\n    addresses: [172.17.0.1]\n",
        6, 17, "'172.17.0.1' is invalid: expected an address with a prefix length"),
    Bad("bad-gateway-address", HEAD + "namespaces:\n  a:\n    routes:\n      - {to: default, via: 10.0.0.999}\n",
        7, 28, "'10.0.0.999' is not a valid IP address"),
    Bad("route-destination-host-bits", HEAD + "namespaces:\n  a:\n    routes:\n      - {to: 10.1.0.5/24, dev: eth0}\n",
        7, 14, "'10.1.0.5/24' has host bits set", "did you mean 10.1.0.0/24?"),
    Bad("gateway-not-on-connected-subnet",
        HEAD + "namespaces:\n  a:\n    routes:\n      - {to: default, via: 10.9.0.1}\nlinks:\n"
        + veth("{namespace: a, name: eth0, addresses: [10.0.0.2/24]}", "{name: v, addresses: [10.0.0.1/24]}"),
        7, 28, "gateway 10.9.0.1 is not on any connected subnet of namespace 'a'", "connected subnets: 10.0.0.0/24"),
    # --- references
    Bad("unknown-namespace", HEAD + NS_A + "links:\n" + veth("{namespace: a, name: eth0}", "{namespace: bb, name: eth0}"),
        10, 21, "unknown namespace 'bb'", "namespaces are: a"),
    Bad("unknown-bridge", HEAD + "bridges:\n  br0: {}\n" + NS_A + "links:\n"
        + veth("{namespace: a, name: eth0}", "{bridge: br1, name: veth-a}"),
        12, 18, "unknown bridge 'br1'", "bridges are: br0"),
    Bad("unknown-host-of-bridge", HEAD + "hosts:\n  node1: {}\nbridges:\n  br0:\n    host: node2\n",
        8, 11, "bridge br0: unknown host 'node2'", "hosts are: node1"),
    Bad("unknown-host-of-endpoint", HEAD + NS_A + "links:\n" + veth("{namespace: a, name: eth0}", "{host: nodex, name: v}"),
        10, 16, "unknown host 'nodex'", "hosts are: local"),
    # --- uniqueness
    Bad("same-address-twice", HEAD + NS_AB + "links:\n"
        + veth("{namespace: a, name: eth0, addresses: [10.0.0.1/24]}", "{namespace: b, name: eth0, addresses: [10.0.0.1/24]}"),
        11, 48, "address 10.0.0.1 is used twice (also on eth0 in namespace 'a')"),
    Bad("same-interface-name-in-namespace", HEAD + NS_AB + "links:\n"
        + veth("{namespace: a, name: eth0}", "{namespace: b, name: eth0}")
        + veth("{namespace: a, name: eth0}", "{namespace: b, name: eth1}"),
        14, 30, "interface 'eth0' is claimed twice in namespace 'a'",
        "every interface of a namespace or host needs its own name"),
    # --- interface names (IFNAMSIZ): endpoint name at line 9 column 30
    Bad("ifname-16-bytes", HEAD + NS_A + "links:\n" + veth("{namespace: a, name: eth0123456789012}", "{name: v}"),
        9, 30, "'eth0123456789012' is invalid: an interface name is 1 to 15 bytes"),
    Bad("ifname-9-chars-18-bytes", HEAD + NS_A + "links:\n" + veth("{namespace: a, name: ééééééééé}", "{name: v}"),
        9, 30, "interface name 'ééééééééé' is 18 bytes; the kernel allows at most 15",
        "shorten it (IFNAMSIZ is 16 including the terminating NUL)"),
    Bad("bridge-name-multibyte", HEAD + "bridges:\n  ééééééééé: {}\n",
        5, 3, "interface name 'ééééééééé' is 18 bytes"),
    Bad("ifname-with-slash", HEAD + NS_A + "links:\n" + veth("{namespace: a, name: eth/0}", "{name: v}"),
        9, 30, "'eth/0' is invalid: an interface name is 1 to 15 bytes with no '/', ':' or whitespace"),
    Bad("ifname-with-space", HEAD + NS_A + "links:\n" + veth("{namespace: a, name: 'eth 0'}", "{name: v}"),
        9, 30, "'eth 0' is invalid"),
    Bad("bridge-port-with-address", HEAD + "bridges:\n  br0: {}\n" + NS_A + "links:\n"
        + veth("{namespace: a, name: eth0}", "{bridge: br0, name: veth-a, addresses: [10.0.0.1/24]}"),
        12, 48, "'veth-a' is a port of bridge 'br0' and cannot carry an address",
        "put the address on the bridge 'br0' instead"),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_load_text_reports_one_diagnostic_at_the_right_place(bad: Bad) -> None:
    [d] = diagnostics_of(bad.text, "in.yaml")
    assert (d.file, d.line, d.column) == ("in.yaml", bad.line, bad.column), d
    assert bad.message in d.message
    if bad.hint is not None:
        assert d.hint == bad.hint


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_validate_cli_exits_2_with_file_line_col(bad: Bad, tmp_path: Path) -> None:
    path = write(tmp_path, bad.text)
    result, stdout, stderr = cli_validate(str(path))
    assert result.exit_code == 2, (stdout, stderr)
    assert not isinstance(result.exception, Exception), result.exception  # no crash behind the exit code
    lines = stderr.splitlines()
    assert lines[0].startswith(f"{path}:{bad.line}:{bad.column}: error: ")
    assert bad.message in lines[0]
    if bad.hint:
        assert lines[1] == f"  hint: {bad.hint}"
    assert lines[-1] == "1 problem found"
    assert "valid" not in stdout  # nothing claims the file is fine


def test_python_apply_tag_is_rejected_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = HEAD + f'x: !!python/object/apply:os.system ["touch {marker}"]\n'
    [d] = diagnostics_of(text)
    assert (d.line, d.column) == (4, 4)
    assert "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'" in d.message
    result, _, stderr = cli_validate(str(write(tmp_path, text)))
    assert result.exit_code == 2 and ":4:4: error: unsupported YAML tag" in stderr
    assert not marker.exists()


def billion_laughs() -> str:
    text = HEAD + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'  # line 4
    for prev, cur in zip("abcdefgh", "bcdefghi"):  # lines 5-12: 9**9 strings once expanded
        text += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return text


def _too_slow(signum, frame):
    raise TimeoutError("the alias bomb was not stopped within 5 s")


def test_alias_bomb_fails_fast_in_the_library() -> None:
    previous = signal.signal(signal.SIGALRM, _too_slow)  # fail, rather than hang, without a budget
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        [d] = diagnostics_of(billion_laughs())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert "document too large: more than 200000 values (an alias bomb?)" in d.message
    assert 4 <= d.line <= 12 and d.column > 1


def test_alias_bomb_fails_fast_in_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs())
    start = time.monotonic()
    proc = run_topoctl("validate", str(path), timeout=5)
    assert time.monotonic() - start < 5
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.match(rf"{re.escape(str(path))}:(\d+):(\d+): error: document too large", proc.stderr)


def test_non_utf8_file_names_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD.encode() + b"bridges:\n  br\xff0: {}\n")
    with pytest.raises(InvalidTopology) as info:
        load_file(path)
    [d] = info.value.diagnostics
    assert (d.line, d.column, d.message, d.hint) == (5, 5, "the file is not valid UTF-8", "save it as UTF-8")
    result, _, stderr = cli_validate(str(path))
    assert result.exit_code == 2
    assert stderr.splitlines()[:2] == [f"{path}:5:5: error: the file is not valid UTF-8", "  hint: save it as UTF-8"]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + HEAD.encode())
    assert load_file(path).name == "t"


def test_missing_file_and_directory_exit_2_without_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result, _, stderr = cli_validate(str(missing), str(tmp_path))
    assert result.exit_code == 2
    assert f"{missing}: error: no such file\n  hint: check the path\n" in stderr
    assert f"{tmp_path}: error: is a directory, not a topology file\n" in stderr
    assert stderr.splitlines()[-1] == "2 problems found"
    for target, message in ((missing, "no such file"), (tmp_path, "is a directory, not a topology file")):
        with pytest.raises(InvalidTopology) as info:
            load_file(target)
        [d] = info.value.diagnostics
        assert (d.file, d.line, d.column, d.message) == (str(target), 0, 0, message)
        assert d.location() == str(target)


MANY_SCHEMA_PROBLEMS = HEAD + (
    "bridges:\n"                          # 4
    "  br0:\n"                            # 5
    "    adresses: [10.0.0.1/24]\n"       # 6  unknown key
    "    mtu: big\n"                      # 7  not an integer
    "namespaces:\n"                       # 8
    "  a:\n"                              # 9
    "    routes:\n"                       # 10
    "      - {via: 10.0.0.1}\n"           # 11 missing 'to'
    "links:\n"                            # 12
    "  - type: veth\n"                    # 13 missing 'endpoints'
    "kind2: x\n"                          # 14 unknown key
)

MANY_SEMANTIC_PROBLEMS = HEAD + (
    "bridges:\n"                                                          # 4
    "  br0: {}\n"                                                         # 5
    "namespaces:\n"                                                       # 6
    "  a:\n"                                                              # 7
    "    routes:\n"                                                       # 8
    "      - {to: default, via: 10.9.0.1}\n"                              # 9  gateway unreachable
    "  b: {}\n"                                                           # 10
    "links:\n"                                                            # 11
    "  - type: veth\n"                                                    # 12
    "    endpoints:\n"                                                    # 13
    "      - {namespace: a, name: eth0, addresses: [10.0.0.2/24]}\n"      # 14
    "      - {namespace: zz, name: eth0}\n"                               # 15 unknown namespace
    "  - type: veth\n"                                                    # 16
    "    endpoints:\n"                                                    # 17
    "      - {namespace: b, name: eth0, addresses: [10.0.0.2/24]}\n"      # 18 address used twice
    "      - {bridge: br0, name: veth-b, addresses: [10.0.0.3/24]}\n"     # 19 port with address
)


@pytest.mark.parametrize("text, expected", [
    (MANY_SCHEMA_PROBLEMS, [(6, 5, "unknown key 'adresses'"), (7, 10, "bridges.br0.mtu: expected an integer"),
                            (11, 9, "missing key 'to'"), (13, 5, "missing key 'endpoints'"),
                            (14, 1, "unknown key 'kind2'")]),
    (MANY_SEMANTIC_PROBLEMS, [(9, 28, "gateway 10.9.0.1 is not on any connected subnet"),
                              (15, 21, "unknown namespace 'zz'"), (18, 48, "address 10.0.0.2 is used twice"),
                              (19, 48, "'veth-b' is a port of bridge 'br0'")]),
], ids=["schema", "semantic"])
def test_every_problem_in_a_file_is_reported_in_one_run(text: str, expected: list, tmp_path: Path) -> None:
    diagnostics = diagnostics_of(text)
    assert len(diagnostics) == len(expected), diagnostics
    for d, (line, column, message) in zip(diagnostics, expected):
        assert (d.line, d.column) == (line, column) and message in d.message, d
    path = write(tmp_path, text)
    result, _, stderr = cli_validate(str(path))
    assert result.exit_code == 2
    errors = [ln for ln in stderr.splitlines() if ": error: " in ln]
    assert [ln.split(": error: ")[0] for ln in errors] == [f"{path}:{line}:{col}" for line, col, _ in expected]
    assert stderr.splitlines()[-1] == f"{len(expected)} problems found"


def test_validate_reports_every_file_and_still_names_the_valid_ones(tmp_path: Path) -> None:
    bad1 = write(tmp_path, HEAD + "bridges:\n  br0:\n    mtu: '1500'\n", "bad1.yaml")
    bad2 = write(tmp_path, HEAD + "bridges:\n\tbr0: {}\n", "bad2.yaml")
    good = str(EXAMPLES[0])
    result, stdout, stderr = cli_validate(str(bad1), good, str(bad2))
    assert result.exit_code == 2
    assert stdout.strip() == f"{good}: valid"
    assert f"{bad1}:6:10: error:" in stderr and f"{bad2}:5:1: error: malformed YAML" in stderr
    assert stderr.splitlines()[-1] == "2 problems found"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_topology_is_valid(example: Path) -> None:
    assert isinstance(load_file(example), Topology)
    result, stdout, stderr = cli_validate(str(example))
    assert result.exit_code == 0, stderr
    assert stdout.strip() == f"{example}: valid" and stderr == ""


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"docker0.yaml", "point-to-point.yaml", "routed.yaml"}


def test_json_output_lists_problems_when_invalid(tmp_path: Path) -> None:
    path = write(tmp_path, MANY_SCHEMA_PROBLEMS)
    result, stdout, _ = cli_validate("--output", "json", str(path))
    assert result.exit_code == 2
    report = json.loads(stdout)  # stdout holds the JSON document and nothing else
    assert report["valid"] is False
    problems = report["problems"]
    assert [(p["line"], p["column"]) for p in problems] == [(6, 5), (7, 10), (11, 9), (13, 5), (14, 1)]
    assert all(set(p) == {"file", "line", "column", "message", "hint"} and p["file"] == str(path) for p in problems)
    assert problems[0]["hint"] == "did you mean 'addresses'?"


def test_json_output_when_valid() -> None:
    result, stdout, _ = cli_validate("-o", "json", *map(str, EXAMPLES))
    assert result.exit_code == 0
    assert json.loads(stdout) == {"valid": True, "problems": [], "warnings": []}


DEEP_5000 = HEAD + "links: " + "[" * 5000 + "]" * 5000 + "\n"  # deeper than the composer's recursion


@pytest.mark.parametrize("name, content, location", [
    ("unknown-key", HEAD + "bridges:\n  br0:\n    adresses: [10.0.0.1/24]\n", r":6:5: error: unknown key 'adresses'"),
    ("tab", HEAD + "bridges:\n\tbr0: {}\n", r":5:1: error: malformed YAML"),
    ("python-tag", HEAD + "namespaces: !!python/object:os.system {}\n", r":4:13: error: unsupported YAML tag"),
    ("deep-5000", DEEP_5000, r":\d+:\d+: error: document nested too deeply"),  # exact place: see test_very_deep_nesting_points_at_the_nesting
    ("non-utf8", b"apiVersion: \xc0\n", r":1:13: error: the file is not valid UTF-8"),
    ("empty", "", r":1:1: error: the file is empty"),
])
def test_real_process_exits_2_without_traceback(name: str, content, location: str, tmp_path: Path) -> None:
    path = write(tmp_path, content, f"{name}.yaml")
    proc = run_topoctl("validate", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert re.match(re.escape(str(path)) + location, proc.stderr), proc.stderr


def test_real_process_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run_topoctl("validate", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{tmp_path / 'missing.yaml'}: error: no such file")


# ---- Regressions: each of these was a library bug found by this suite, since fixed.

HOST_ROUTE_UNKNOWN_HOST = HEAD + "routes:\n  - {host: nodex, to: 10.1.0.0/24, via: 10.0.0.1}\n"


def test_host_route_with_unknown_host_is_a_diagnostic(tmp_path: Path) -> None:
    try:
        diagnostics = load_text(HOST_ROUTE_UNKNOWN_HOST, "t.yaml")
    except InvalidTopology as invalid:
        diagnostics = invalid.diagnostics
    assert [(d.line, d.column, d.message) for d in diagnostics][:1] == [(5, 12, "route: unknown host 'nodex'")]
    proc = run_topoctl("validate", str(write(tmp_path, HOST_ROUTE_UNKNOWN_HOST)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_control_character_is_a_diagnostic(tmp_path: Path) -> None:
    text = HEAD + "bridges:\n  br0:\n    mtu: 1500\x07\n"  # the BEL is at line 6, column 14
    proc = run_topoctl("validate", str(write(tmp_path, text)))
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2
    [d] = diagnostics_of(text)
    assert (d.line, d.column) == (6, 14)


def test_error_in_key_overriding_a_merge_points_at_the_key() -> None:
    text = HEAD + "bridges:\n  br0: &d {mtu: 1500}\n  br1:\n    <<: *d\n    mtu: big\n"
    [d] = diagnostics_of(text)
    assert "bridges.br1.mtu: expected an integer" in d.message
    assert (d.line, d.column) == (8, 10)  # today: (5, 17), br0's valid mtu


def test_unclosed_quote_exits_2_with_a_yaml_message(tmp_path: Path) -> None:
    text = HEAD + 'bridges:\n  br0:\n    mac: "02:42:ac:11:00:02\n    mtu: 1500\n' + NS_A
    [d] = diagnostics_of(text)
    assert d.message == "malformed YAML: while scanning a quoted scalar, found unexpected end of stream"
    result, _, stderr = cli_validate(str(write(tmp_path, text)))
    assert result.exit_code == 2 and "error: malformed YAML: while scanning a quoted scalar" in stderr


def test_very_deep_nesting_points_at_the_nesting() -> None:
    [d] = diagnostics_of(DEEP_5000)
    assert "nested" in d.message
    assert d.line == 4  # today: 1:1


def test_unclosed_quote_points_at_the_opening_quote() -> None:
    text = HEAD + 'bridges:\n  br0:\n    mac: "02:42:ac:11:00:02\n    mtu: 1500\n' + NS_A  # 9 lines
    [d] = diagnostics_of(text)
    assert "while scanning a quoted scalar" in d.message and d.hint == YAML_HINT
    assert (d.line, d.column) == (6, 10)  # today: (10, 1)


# --- an unclosed '[' or '{' is reported where it opens (docs/format.md, YAML rules)

UNCLOSED = [
    # (id, body from line 4, line, column, the exact message)
    ("bracket-before-next-key", "bridges:\n  br0: {addresses: [10.0.0.1/24\n  br1: {}\n", 5, 20,
     "malformed YAML: '[' is never closed: while parsing a flow sequence, expected ',' or ']', but got ':' at line 6, column 6"),
    ("brace-at-end-of-file", "bridges: {br0: {}\n", 4, 10,
     "malformed YAML: '{' is never closed: while parsing a flow mapping, expected ',' or '}', but got '<stream end>' "
     "at line 5, column 1"),
    ("bracket-at-end-of-file", "links: [\n", 4, 8,
     "malformed YAML: '[' is never closed: while parsing a flow node, expected the node content, but found '<stream end>' "
     "at line 5, column 1"),
    ("brace-before-next-key", "bridges: {br0: {}\nnamespaces: {}\n", 4, 10,
     "malformed YAML: '{' is never closed: while parsing a flow mapping, expected ',' or '}', but got '<scalar>' "
     "at line 5, column 1"),
    ("inner-bracket-of-a-list", "links:\n  - [1, 2\n  - [3]\n", 5, 5,
     "malformed YAML: '[' is never closed: while parsing a flow sequence, expected ',' or ']', but got '[' at line 6, column 5"),
    ("bracket-with-comment-after", "links: [1, 2  # ]\n", 4, 8,
     "malformed YAML: '[' is never closed: while parsing a flow sequence, expected ',' or ']', but got '<stream end>' "
     "at line 5, column 1"),
]


@pytest.mark.parametrize("body, line, column, message", [u[1:] for u in UNCLOSED], ids=[u[0] for u in UNCLOSED])
def test_an_unclosed_bracket_is_reported_where_it_opens(body, line, column, message, tmp_path: Path) -> None:
    [d] = diagnostics_of(HEAD + body)
    assert (d.line, d.column, d.message) == (line, column, message)
    assert d.hint == f"close it with {']' if message.split(chr(39))[1] == '[' else '}'!r}"
    result, _, stderr = cli_validate(str(path := write(tmp_path, HEAD + body)))
    assert result.exit_code == 2
    assert stderr.splitlines() == [f"{path}:{line}:{column}: error: {message}", f"  hint: {d.hint}", "1 problem found"]


@pytest.mark.parametrize("body, line, column, message", [
    # closed on the same line, but wrong inside: the parser's own place is the right one
    ("namespaces: {a: {routes: [{to: default via: 10.0.0.1}]}}\n", 4, 43,
     "malformed YAML: while parsing a flow mapping, expected ',' or '}', but got ':'"),
    ("bridges: {br0: [1, 2}}\n", 4, 21, "malformed YAML: while parsing a flow sequence, expected ',' or ']', but got '}'"),
], ids=["missing-comma", "wrong-closer"])
def test_a_closed_bracket_with_a_mistake_inside_is_reported_at_the_mistake(body, line, column, message) -> None:
    [d] = diagnostics_of(HEAD + body)
    assert (d.line, d.column, d.message, d.hint) == (line, column, message, YAML_HINT)


# --- sysctl values: held as the kernel prints them, so that what is read back compares equal

def sysctl_value(value: str | int, key: str = "net.ipv4.ip_local_port_range") -> str:
    quoted = value if isinstance(value, int) else json.dumps(value)
    topology = load_text(HEAD + f"namespaces:\n  a:\n    sysctls: {{{key}: {quoted}}}\n")
    [(got_key, got)] = topology.namespaces[0].sysctls
    assert got_key == key
    return got


@pytest.mark.parametrize("written, canonical", [
    ("32768  60999", "32768 60999"),        # the issue: two spaces, the kernel prints a tab
    ("32768\t60999", "32768 60999"),        # the kernel's own form
    (" 32768 60999\n", "32768 60999"),
    ("0x8000 60999", "32768 60999"),        # the kernel reads 0x as hex, prints decimal
    ("4096\t0X20000   6291456", "4096 131072 6291456"),
    (" 1", "1"),
    ("01", "1"),                            # a leading 0 is octal, but 01 is 1 either way
    ("00", "0"),
    ("-0", "0"),
    ("-1 -1", "-1 -1"),
    (4096, "4096"),                         # a YAML integer
    (-1, "-1"),
    (" reno ", "reno"),                     # a string sysctl: only its whitespace is tidied
    ("8080,9000-9010", "8080,9000-9010"),   # not all numbers: left as written
    ("+1", "+1"),                           # the kernel refuses a '+'; the apply will say so
])
def test_a_sysctl_value_is_held_in_the_kernels_printed_form(written, canonical) -> None:
    assert sysctl_value(written) == canonical


def test_the_canonical_value_is_what_the_kernel_read_gives_for_what_the_kernel_prints(tmp_path, monkeypatch) -> None:
    """The two sides of the comparison: kernel._read_sysctl on the text /proc/sys shows (probed:
    ip_local_port_range "32768\\t60999\\n", tcp_rmem "4096\\t131072\\t6291456\\n") equals the model."""
    from topoctl.kernel import sysctls as kernel

    for key, printed, written in [("net.ipv4.ip_local_port_range", "32768\t60999\n", "32768  60999"),
                                  ("net.ipv4.tcp_rmem", "4096\t131072\t6291456\n", "4096 0x20000 6291456"),
                                  ("net.ipv4.conf.all.rp_filter", "1\n", " 01")]:
        proc = tmp_path / key
        proc.write_text(printed)
        monkeypatch.setattr(kernel, "sysctl_path", lambda _key, proc=proc: str(proc))
        assert kernel._read_sysctl(key) == sysctl_value(written, key)


SYSCTL_AT = (6, 44)  # the value of `    sysctls: {net.ipv4.conf.all.rp_filter: ...}` on line 6


@pytest.mark.parametrize("written, message, hint", [
    ('"010"', "sysctl net.ipv4.conf.all.rp_filter: the kernel reads '010' as octal, 8, not 10",
     "write 8, or 10 without the leading 0"),
    ('"08"', "sysctl net.ipv4.conf.all.rp_filter: the kernel refuses '08': a leading 0 means octal, which has no digit 8 or 9",
     "write 8 without the leading 0"),
    ('"1 -017"', "sysctl net.ipv4.conf.all.rp_filter: the kernel reads '-017' as octal, -15, not -17",
     "write -15, or -17 without the leading 0"),
    ('"  "', "sysctl net.ipv4.conf.all.rp_filter: the value is empty", "the kernel ignores an empty write; give the value"),
], ids=["octal", "not-octal", "negative-octal", "empty"])
def test_a_sysctl_value_the_kernel_would_read_otherwise_is_an_error(written, message, hint, tmp_path: Path) -> None:
    text = HEAD + f"namespaces:\n  a:\n    sysctls: {{net.ipv4.conf.all.rp_filter: {written}}}\n"
    [d] = diagnostics_of(text)
    assert ((d.line, d.column), d.message, d.hint) == (SYSCTL_AT, message, hint)
    result, _, stderr = cli_validate(str(path := write(tmp_path, text)))
    assert result.exit_code == 2 and not isinstance(result.exception, Exception)
    assert stderr.splitlines() == [f"{path}:6:44: error: {message}", f"  hint: {hint}", "1 problem found"]


def test_a_host_sysctl_is_checked_and_held_the_same_way() -> None:
    topology = load_text(HEAD + 'hosts:\n  h: {sysctls: {net.ipv4.ip_local_port_range: "32768  60999"}}\n')
    assert topology.hosts[0].sysctls == (("net.ipv4.ip_local_port_range", "32768 60999"),)
    [d] = diagnostics_of(HEAD + 'hosts:\n  h: {sysctls: {net.ipv4.ip_forward: "01 010"}}\n')
    assert (d.line, d.column) == (5, 38) and "reads '010' as octal" in d.message
