"""The namespace records' index (records.py): what it saves and when it must not be trusted.
No root needed: records are plain files under a temporary STATE_DIR."""

from __future__ import annotations

import json
import os

import pytest

from topoctl import paths
from topoctl.store import records as rec


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STATE_DIR", str(tmp_path))
    monkeypatch.setattr(rec, "_records_seen", {})
    reads: list[str] = []
    real_read = rec.read_netns_record

    def counting_read(name):
        reads.append(name)
        return real_read(name)

    monkeypatch.setattr(rec, "read_netns_record", counting_read)
    return tmp_path, reads


def fresh_process(monkeypatch):
    """What another run sees: nothing read yet in this process."""
    monkeypatch.setattr(rec, "_records_seen", {})


def make(count: int, topology: str = "t") -> dict[str, rec.NetnsRecord]:
    records = {f"c{i}": rec.NetnsRecord(topology, "", "container", 1000 + i, ("net.ipv4.ip_forward",) if i % 2 else ())
               for i in range(count)}
    for name, record in records.items():
        rec.record_netns(name, record)
    return records


def test_records_are_read_from_the_index_by_the_next_run(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 0)  # every file counts as old enough
    written = make(20)
    assert rec.netns_records() == written
    assert len(reads) == 20
    assert (folder / "netns" / rec.INDEX_NAME).exists()
    fresh_process(monkeypatch)
    reads.clear()
    assert rec.netns_records() == written
    assert reads == []  # all twenty came from the index


def test_young_files_are_not_indexed(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 3600 * 10**9)  # nothing is an hour old
    written = make(5)
    assert rec.netns_records() == written
    assert not (folder / "netns" / rec.INDEX_NAME).exists()
    fresh_process(monkeypatch)
    reads.clear()
    assert rec.netns_records() == written
    assert len(reads) == 5


def test_a_replaced_record_is_read_again(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 0)
    make(3)
    rec.netns_records()
    rec.record_netns("c1", rec.NetnsRecord("other", "h", "host", 7, ("net.ipv4.conf.all.forwarding",)))
    fresh_process(monkeypatch)
    reads.clear()
    records = rec.netns_records()
    assert records["c1"] == rec.NetnsRecord("other", "h", "host", 7, ("net.ipv4.conf.all.forwarding",))
    assert reads == ["c1"]


def test_a_deleted_record_is_gone_and_leaves_the_index(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 0)
    make(3)
    rec.netns_records()
    rec.forget_netns("c0")
    fresh_process(monkeypatch)
    assert sorted(rec.netns_records()) == ["c1", "c2"]
    index = json.loads((folder / "netns" / rec.INDEX_NAME).read_text())
    assert sorted(index["records"]) == ["c1", "c2"]


@pytest.mark.parametrize("damage", ["not json", json.dumps({"version": 2, "records": {}}),
                                    json.dumps({"version": 1, "records": {"c0": [1, 2]}}),
                                    json.dumps({"version": 1, "records": {"c0": [1, 2, 3, 4, ["t"]]}})])
def test_a_damaged_index_falls_back_to_the_files(state_dir, monkeypatch, damage):
    folder, reads = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 0)
    written = make(2)
    (folder / "netns" / rec.INDEX_NAME).write_text(damage)
    assert rec.netns_records() == written


def test_an_index_entry_with_a_stale_signature_is_not_used(state_dir, monkeypatch):
    """Same name, same size, other contents (a topology name of the same length), within
    the same tick of the file system's clock: the inode differs, so the file is read. (A
    reused inode in the same tick is what INDEX_AGE_NS rules out: such a file is too young
    to be indexed; see test_young_files_are_not_indexed.)"""
    folder, reads = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 0)
    rec.record_netns("c0", rec.NetnsRecord("aaa", "", "container", 5))
    rec.netns_records()
    os.link(folder / "netns" / "c0.json", folder / "old")  # holds the inode: the new file gets another
    rec.forget_netns("c0")
    rec.record_netns("c0", rec.NetnsRecord("bbb", "", "container", 5))
    fresh_process(monkeypatch)
    assert rec.netns_records()["c0"].topology == "bbb"


def test_the_index_and_folder_go_with_the_last_record(state_dir, monkeypatch):
    folder, _ = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 0)
    make(2)
    rec.netns_records()
    assert (folder / "netns" / rec.INDEX_NAME).exists()
    rec.forget_netns("c0")
    rec.forget_netns("c1")
    assert rec.netns_records() == {}
    assert not (folder / "netns").exists()
    rec.record_netns("c5", rec.NetnsRecord("t", "", "container", 1))  # made again when needed
    assert list(rec.netns_records()) == ["c5"]


def test_a_grown_folder_goes_when_empty_even_without_an_index(state_dir, monkeypatch):
    folder, _ = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 3600 * 10**9)  # never indexed: the records are young
    made = make(1200)
    rec.netns_records()
    for name in made:
        rec.forget_netns(name)
    grown = os.stat(folder / "netns").st_size > 16384
    assert rec.netns_records() == {}
    # On ext4 the emptied directory keeps its size, and is removed; where directories shrink
    # (tmpfs), there is nothing to gain and it stays.
    assert (folder / "netns").exists() != grown


def test_the_index_is_not_a_record(state_dir, monkeypatch):
    folder, _ = state_dir
    monkeypatch.setattr(rec, "INDEX_AGE_NS", 0)
    make(1)
    rec.netns_records()
    fresh_process(monkeypatch)
    assert list(rec.netns_records()) == ["c0"]
    assert sorted(os.listdir(folder / "netns")) == [rec.INDEX_NAME, "c0.json"]
