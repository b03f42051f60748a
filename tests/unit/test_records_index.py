"""The namespace records' index (netns.py): what it saves and when it must not be trusted.
No root needed: records are plain files under a temporary STATE_DIR."""

from __future__ import annotations

import json
import os

import pytest

from topoctl import netns as ns


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(ns, "STATE_DIR", str(tmp_path))
    monkeypatch.setattr(ns, "_records_seen", {})
    reads: list[str] = []
    real_read = ns.read_netns_record

    def counting_read(name):
        reads.append(name)
        return real_read(name)

    monkeypatch.setattr(ns, "read_netns_record", counting_read)
    return tmp_path, reads


def fresh_process(monkeypatch):
    """What another run sees: nothing read yet in this process."""
    monkeypatch.setattr(ns, "_records_seen", {})


def make(count: int, topology: str = "t") -> dict[str, ns.NetnsRecord]:
    records = {f"c{i}": ns.NetnsRecord(topology, "", "container", 1000 + i, ("net.ipv4.ip_forward",) if i % 2 else ())
               for i in range(count)}
    for name, record in records.items():
        ns.record_netns(name, record)
    return records


def test_records_are_read_from_the_index_by_the_next_run(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 0)  # every file counts as old enough
    written = make(20)
    assert ns.netns_records() == written
    assert len(reads) == 20
    assert (folder / "netns" / ns.INDEX_NAME).exists()
    fresh_process(monkeypatch)
    reads.clear()
    assert ns.netns_records() == written
    assert reads == []  # all twenty came from the index


def test_young_files_are_not_indexed(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 3600 * 10**9)  # nothing is an hour old
    written = make(5)
    assert ns.netns_records() == written
    assert not (folder / "netns" / ns.INDEX_NAME).exists()
    fresh_process(monkeypatch)
    reads.clear()
    assert ns.netns_records() == written
    assert len(reads) == 5


def test_a_replaced_record_is_read_again(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 0)
    make(3)
    ns.netns_records()
    ns.record_netns("c1", ns.NetnsRecord("other", "h", "host", 7, ("net.ipv4.conf.all.forwarding",)))
    fresh_process(monkeypatch)
    reads.clear()
    records = ns.netns_records()
    assert records["c1"] == ns.NetnsRecord("other", "h", "host", 7, ("net.ipv4.conf.all.forwarding",))
    assert reads == ["c1"]


def test_a_deleted_record_is_gone_and_leaves_the_index(state_dir, monkeypatch):
    folder, reads = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 0)
    make(3)
    ns.netns_records()
    ns.forget_netns("c0")
    fresh_process(monkeypatch)
    assert sorted(ns.netns_records()) == ["c1", "c2"]
    index = json.loads((folder / "netns" / ns.INDEX_NAME).read_text())
    assert sorted(index["records"]) == ["c1", "c2"]


@pytest.mark.parametrize("damage", ["not json", json.dumps({"version": 2, "records": {}}),
                                    json.dumps({"version": 1, "records": {"c0": [1, 2]}}),
                                    json.dumps({"version": 1, "records": {"c0": [1, 2, 3, 4, ["t"]]}})])
def test_a_damaged_index_falls_back_to_the_files(state_dir, monkeypatch, damage):
    folder, reads = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 0)
    written = make(2)
    (folder / "netns" / ns.INDEX_NAME).write_text(damage)
    assert ns.netns_records() == written


def test_an_index_entry_with_a_stale_signature_is_not_used(state_dir, monkeypatch):
    """Same name, same size, other contents (a topology name of the same length), within
    the same tick of the file system's clock: the inode differs, so the file is read. (A
    reused inode in the same tick is what INDEX_AGE_NS rules out: such a file is too young
    to be indexed; see test_young_files_are_not_indexed.)"""
    folder, reads = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 0)
    ns.record_netns("c0", ns.NetnsRecord("aaa", "", "container", 5))
    ns.netns_records()
    os.link(folder / "netns" / "c0.json", folder / "old")  # holds the inode: the new file gets another
    ns.forget_netns("c0")
    ns.record_netns("c0", ns.NetnsRecord("bbb", "", "container", 5))
    fresh_process(monkeypatch)
    assert ns.netns_records()["c0"].topology == "bbb"


def test_the_index_and_folder_go_with_the_last_record(state_dir, monkeypatch):
    folder, _ = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 0)
    make(2)
    ns.netns_records()
    assert (folder / "netns" / ns.INDEX_NAME).exists()
    ns.forget_netns("c0")
    ns.forget_netns("c1")
    assert ns.netns_records() == {}
    assert not (folder / "netns").exists()
    ns.record_netns("c5", ns.NetnsRecord("t", "", "container", 1))  # made again when needed
    assert list(ns.netns_records()) == ["c5"]


def test_a_grown_folder_goes_when_empty_even_without_an_index(state_dir, monkeypatch):
    folder, _ = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 3600 * 10**9)  # never indexed: the records are young
    made = make(1200)
    ns.netns_records()
    for name in made:
        ns.forget_netns(name)
    grown = os.stat(folder / "netns").st_size > 16384
    assert ns.netns_records() == {}
    # On ext4 the emptied directory keeps its size, and is removed; where directories shrink
    # (tmpfs), there is nothing to gain and it stays.
    assert (folder / "netns").exists() != grown


def test_the_index_is_not_a_record(state_dir, monkeypatch):
    folder, _ = state_dir
    monkeypatch.setattr(ns, "INDEX_AGE_NS", 0)
    make(1)
    ns.netns_records()
    fresh_process(monkeypatch)
    assert list(ns.netns_records()) == ["c0"]
    assert sorted(os.listdir(folder / "netns")) == [ns.INDEX_NAME, "c0.json"]
