"""The cache of validated topologies: hits for the same bytes only, never for invalid files,
never from a directory others can write."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from topoctl import compiled
from topoctl.errors import InvalidTopology
from topoctl.loader import load_file

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
    assert "checks.py" in compiled._SOURCES and "topology.schema.json" in compiled._SOURCES
