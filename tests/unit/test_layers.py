"""The house shows its architecture: render runs without the kernel, the store or a run, the
package root stays small, modules stay short, and every module says what it is.

The import rules themselves are contracts in pyproject.toml ([tool.importlinter], checked by
`make lint`); this checks what a real command loads, lazy imports included.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "topoctl"
MODULES = sorted(PACKAGE.rglob("*.py"))
ROOT_MODULES_MAX = 8
MODULE_LINES_MAX = 500
NOT_FOR_RENDER = ("topoctl.kernel", "topoctl.store", "topoctl.run")  # a script needs no kernel, no state, no run


def imported_modules(importtime_stderr: str) -> list[str]:
    """The module names of `python -X importtime` lines: 'import time: self | cumulative | name'."""
    names = []
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.append(name)
    return names


def test_importtime_lines_are_parsed():
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       147 |        147 |   topoctl.output\n"
              "import time:       760 |      57864 | topoctl.output.render\n")
    assert imported_modules(stderr) == ["topoctl.output", "topoctl.output.render"]


@pytest.mark.parametrize("cache", ["default", "no cache"])
def test_render_loads_neither_the_kernel_nor_the_store_nor_a_run(cache):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPOCTL_")}
    if cache == "no cache":  # the whole parse: YAML, schema, builder, checks
        env["TOPOCTL_NO_CACHE"] = "1"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "topoctl", "render", "topologies/docker0.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("#!/bin/sh\n") and "ip netns add" in done.stdout, done.stdout[:500]
    loaded = imported_modules(done.stderr)
    assert "topoctl.output.render" in loaded  # the lines were read: render itself is among them
    forbidden = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in NOT_FOR_RENDER)]
    assert not forbidden, f"render loaded {forbidden}"


def test_the_package_root_keeps_few_modules():
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root_modules) <= ROOT_MODULES_MAX, root_modules


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_long(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MODULE_LINES_MAX, f"{path.relative_to(ROOT)}: {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_has_a_docstring(path):
    docstring = ast.get_docstring(ast.parse(path.read_text(), filename=str(path)))
    assert docstring and docstring.strip(), f"{path.relative_to(ROOT)} has no docstring"
