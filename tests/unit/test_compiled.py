"""The cache of validated topologies: hits for the same bytes only, never for invalid files,
never from a directory others can write."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from topoctl.spec import compiled
from topoctl.errors import InvalidTopology
from topoctl.spec.loader import load_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TOPOCTL_CACHE_DIR", str(folder))
    monkeypatch.delenv("TOPOCTL_NO_CACHE", raising=False)
    return folder


def test_a_valid_file_is_stored_and_served_for_the_same_bytes_only(cache, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes((ROOT / "topologies/docker0.yaml").read_bytes())
    first = load_file(path)
    (entry,) = cache.glob("*.pickle")
    assert oct(entry.stat().st_mode & 0o777) == "0o600" and oct(cache.stat().st_mode & 0o777) == "0o700"
    assert compiled.lookup(path.read_bytes()) == first
    assert load_file(path) == first
    path.write_bytes(path.read_bytes() + b"\n# edited\n")
    assert compiled.lookup(path.read_bytes()) is None


def test_an_invalid_file_is_never_stored(cache, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: topoctl/v1\nkind: Topology\nname: Bad\n")
    for _ in range(2):
        with pytest.raises(InvalidTopology):
            load_file(path)
    assert not cache.exists() or not list(cache.glob("*.pickle"))


def test_a_directory_others_can_write_is_not_trusted(cache, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes((ROOT / "topologies/docker0.yaml").read_bytes())
    load_file(path)
    (entry,) = cache.glob("*.pickle")
    entry.write_bytes(pickle.dumps("planted"))
    os.chmod(cache, 0o777)
    assert compiled.lookup(path.read_bytes()) is None
    assert load_file(path).name == "docker0"


def test_the_cache_can_be_turned_off(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TOPOCTL_NO_CACHE", "1")
    path = tmp_path / "t.yaml"
    path.write_bytes((ROOT / "topologies/docker0.yaml").read_bytes())
    load_file(path)
    assert not cache.exists()


def test_the_key_covers_the_code_that_validates(cache):
    assert compiled.key_for(b"x") != compiled.key_for(b"y")
    assert "spec/checks.py" in compiled._SOURCES and "spec/topology.schema.json" in compiled._SOURCES


# Run in a fresh interpreter: load every example (once parsed and stored, once from the cache)
# and an invalid file, then print each file of the package that was executed (sys.modules) or
# opened (the audit hook sees every open(), importlib.resources' included).
_LIST_WHAT_LOADING_USES = r"""
import json, os, sys
from pathlib import Path
opened = set()
sys.addaudithook(lambda event, args: opened.add(str(args[0])) if event == "open" and isinstance(args[0], str) else None)
from topoctl.errors import InvalidTopology
from topoctl.spec.loader import load_file
for path in sys.argv[1:]:
    for _ in range(2):
        try:
            load_file(path)
        except InvalidTopology:
            pass
package = Path(os.path.abspath(sys.modules["topoctl"].__file__)).parent  # abspath: the schema is a symlink
used = {Path(os.path.abspath(m.__file__)) for n, m in list(sys.modules.items())
        if (n == "topoctl" or n.startswith("topoctl.")) and getattr(m, "__file__", None)}
used |= {Path(os.path.abspath(p)) for p in opened if not p.endswith(".pyc")}
print(json.dumps(sorted(str(p.relative_to(package)) for p in used if p.is_relative_to(package))))
"""


def test_the_key_covers_every_file_that_loading_executes_or_reads(tmp_path):
    """compiled._SOURCES must name each package file a load runs or reads, or a change to that
    file would be served a Topology it might no longer give; the failure names the file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: topoctl/v1\nkind: Topology\nname: t\nbridges: {br0: {addresses: [10.0.0.300/24]}}\n"
                   "namespaces:\n  a: {routes: [{to: default, via: 10.9.0.1}], sysctls: {net.ipv4.ip_forward: '010'}}\n")
    files = [str(p) for p in sorted((ROOT / "topologies").glob("*.yaml"))] + [str(bad)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOPOCTL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TOPOCTL_NO_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", _LIST_WHAT_LOADING_USES, *files], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    used = json.loads(proc.stdout)
    assert list((tmp_path / "cache").glob("*.pickle")), "the cache path was not exercised"
    assert "spec/loader.py" in used and "spec/topology.schema.json" in used  # the listing itself works
    missing = [name for name in used if name not in compiled._SOURCES]
    assert not missing, f"loading uses {missing}, which compiled._SOURCES (the cache key) leaves out"
    package = Path(compiled.__file__).parent.parent
    assert all((package / name).is_file() for name in compiled._SOURCES)
