"""Integration fixtures: topologies copied under unique names, applied under --emulate, and
always destroyed afterwards, with a check that nothing of them is left on the machine."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from topoctl.kernel import namespaces as ns
from topoctl import paths

ROOT = Path(__file__).resolve().parents[2]
TOPOCTL = [sys.executable, "-m", "topoctl"]

pytestmark = pytest.mark.root


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_names() -> set[str]:
    return set(ns.list_netns())


class Sandbox:
    """One topology file, renamed so that it cannot collide with anything else on the machine."""

    def __init__(self, tmp_path: Path, source: str | dict) -> None:
        self.uid = secrets.token_hex(3)
        data = yaml.safe_load((ROOT / "topologies" / source).read_text()) if isinstance(source, str) else source
        self.original = json.loads(json.dumps(data))
        self.topology = f"{data['name'][:10]}-{self.uid}"
        self.path = tmp_path / f"{self.topology}.yaml"
        self.write(data)

    # -- the file --------------------------------------------------------------------------

    def rename(self, data: dict) -> dict:
        """The same topology with its name and namespace names made unique."""
        data = json.loads(json.dumps(data))
        data["name"] = self.topology
        renamed = {name: self.ns(name) for name in (data.get("namespaces") or {})}
        data["namespaces"] = {renamed[k]: v for k, v in (data.get("namespaces") or {}).items()}
        for link in data.get("links") or []:
            for end in link["endpoints"]:
                if "namespace" in end:
                    end["namespace"] = renamed.get(end["namespace"], end["namespace"])
        return data

    def write(self, data: dict) -> None:
        self.data = self.rename(data)
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))

    def ns(self, name: str) -> str:
        return f"{name}-{self.uid}"

    def host(self, name: str = "local") -> str:
        return f"{self.topology}-{name}"

    # -- running topoctl -------------------------------------------------------------------

    def run(self, *args: str, expect: int | None = 0, path: Path | None = None) -> subprocess.CompletedProcess:
        command, rest = args[0], args[1:]
        result = subprocess.run([*TOPOCTL, command, "--emulate", *rest, str(path or self.path)],
                                capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert "Traceback" not in result.stderr, result.stderr
        if expect is not None:
            assert result.returncode == expect, f"{command}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def apply(self) -> dict:
        return json.loads(self.run("apply", "-o", "json").stdout)

    def plan_exit(self) -> int:
        return self.run("plan", "-d", expect=None).returncode

    def plan(self) -> dict:
        return json.loads(self.run("plan", "-o", "json").stdout)

    def show(self) -> dict:
        return json.loads(self.run("show", "-o", "json").stdout)

    def exec(self, where: str, *command: str) -> int:
        return ns.run_command_in(where, list(command))

    def ping(self, where: str, address: str) -> bool:
        # One reply within a deadline: the first packets may wait on neighbour discovery.
        return self.exec(where, "ping", "-c", "1", "-w", "5", "-i", "0.2", "-q", address) == 0

    # -- what exists ---------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        found = [name for name in netns_names() if self.uid in name]
        folder = Path(paths.netns_records_dir())
        if folder.is_dir():
            found += [str(p) for p in folder.iterdir() if self.uid in p.name]
        routes = Path(paths.routes_record_dir(self.topology))
        if routes.exists():
            found.append(str(routes))
        for record in (Path(paths.tables_record_path(self.topology)), Path(paths.deployment_path(self.topology)),
                       *Path(paths.derived_sysctls_dir()).glob(f"*{self.uid}*")):
            if record.exists():
                found.append(str(record))
        return found

    def force_clean(self) -> None:
        for name in netns_names():
            if self.uid in name:
                ip("netns", "del", name, check=False)
        for path in Path(paths.netns_records_dir()).glob(f"*{self.uid}*"):
            path.unlink()
        Path(paths.tables_record_path(self.topology)).unlink(missing_ok=True)
        Path(paths.deployment_path(self.topology)).unlink(missing_ok=True)
        for path in Path(paths.derived_sysctls_dir()).glob(f"*{self.uid}*"):
            path.unlink()
        for path in Path(paths.lock_dir()).glob(f"*{self.uid}*.lock"):
            path.unlink()  # nobody holds it now; topoctl keeps a host's lock file for its next run


@pytest.fixture
def sandbox_factory(tmp_path):
    """Make sandboxes; destroy each at the end and fail if anything of it is left."""
    made: list[Sandbox] = []

    def make(source: str | dict) -> Sandbox:
        folder = tmp_path / f"s{len(made)}"
        folder.mkdir()
        box = Sandbox(folder, source)
        made.append(box)
        return box

    yield make
    problems = []
    for box in made:
        subprocess.run([*TOPOCTL, "destroy", "--emulate", str(box.path)], capture_output=True, cwd=ROOT, timeout=120)
        left = box.leftovers()
        if left:
            problems.append(f"{box.topology}: left behind {left}")
        box.force_clean()
    assert not problems, "; ".join(problems)


def normalised(view: dict, declared_macs: set[tuple]) -> dict:
    """A show --output json view, ready to compare whole: MACs included. Every link topoctl
    makes has a MAC from the file or derived from names (`declared_macs`: the desired links
    with a MAC), so none is the kernel's random choice and none is masked; a link outside that
    set, other than lo, is an error of the test's premise."""
    view = json.loads(json.dumps(view))
    for link in view["links"]:
        key = (link["netns"], link["name"])
        assert link["kind"] == "loopback" or key in declared_macs, f"{key}: MAC left to the kernel"
    return view


@pytest.fixture(autouse=True, scope="session")
def _environment_check():
    if os.geteuid() == 0:
        for tool in ("ping", "ip"):
            assert subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode == 0, \
                f"{tool} is missing: run make test, which installs it"
