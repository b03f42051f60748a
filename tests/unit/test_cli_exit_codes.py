"""Exit codes a pipeline relies on, for input that is invalid (no root needed: nothing is read
from the kernel before the file is loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAD = "apiVersion: topoctl/v1\nkind: Topology\nname: Bad_Name\n"


def topoctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topoctl", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


@pytest.fixture
def bad_file(tmp_path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return str(path)


def test_plan_with_detailed_exitcode_exits_1_for_an_invalid_file(bad_file):
    """2 means "valid, and changes pending" only (Terraform's convention), never "invalid"."""
    for flag in ("-d", "--detailed-exitcode"):
        result = topoctl("plan", flag, bad_file)
        assert result.returncode == 1, result.stderr
        assert f"{bad_file}:3:7: error:" in result.stderr and "Traceback" not in result.stderr


def test_plan_with_detailed_exitcode_exits_1_for_a_usage_error():
    result = topoctl("plan", "-d", "--host", "nowhere", str(ROOT / "topologies/docker0.yaml"))
    assert result.returncode == 1, result.stderr
    assert "unknown host 'nowhere'" in result.stderr


def test_with_json_output_an_error_is_a_document_with_its_exit_code(bad_file):
    """-o json puts the error on stdout as well, with the exit code the process ends with."""
    result = topoctl("plan", "-o", "json", "--host", "nowhere", str(ROOT / "topologies/docker0.yaml"))
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "usage_error" and error["exit_code"] == 2 and error["rollback"] is None
    assert "unknown host 'nowhere'" in error["message"]
    for args, code in ((["plan", "-o", "json"], 2), (["plan", "-d", "-o", "json"], 1), (["apply", "-o", "json"], 2)):
        result = topoctl(*args, bad_file)
        document = json.loads(result.stdout)
        assert result.returncode == code and document["error"]["exit_code"] == code, (args, result.stderr)
        assert document["valid"] is False and document["problems"][0]["line"] == 3, args  # as before
        assert document["error"]["type"] == "invalid_topology" and document["error"]["message"] == "1 problem found"


def test_without_detailed_exitcode_an_invalid_file_exits_2(bad_file):
    for command in (["plan"], ["apply"], ["destroy"], ["validate"], ["render"]):
        result = topoctl(*command, bad_file)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{bad_file}:3:7: error:" in result.stderr


def test_a_signal_wrapped_by_a_class_creation_is_still_the_signal():
    """SIGINT during a lazy import that creates a dataclass is raised inside __set_name__, and
    CPython wraps it in a RuntimeError: that is still Ctrl-C (130), not a traceback."""
    import signal

    import typer

    from topoctl.cli import _guard

    def body():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance") from interrupt

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(typer.Exit) as caught:
            _guard(body)
        assert caught.value.exit_code == 130
        with pytest.raises(RuntimeError):
            _guard(lambda: (_ for _ in ()).throw(RuntimeError("ours")))  # any other RuntimeError is not hidden
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
