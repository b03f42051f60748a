"""Ownership records under /run/topoctl: which namespaces a topology made (and as what), and
which routes it added to the machine's own namespace: plain files, no kernel call.

A record is JSON, written by rename, so a reader sees the old file or the new one, whole. Each
run lists the folder; parsed records are kept in an index file (see below) so that a run over
a thousand namespaces parses one file instead of a thousand.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass

from topoctl import paths
from topoctl.paths import (deployment_path, deployments_dir, derived_sysctls_dir, derived_sysctls_path,  # noqa: F401
                           netns_record_path, route_record_name,
                           routes_record_dir, tables_record_path)



@dataclass(frozen=True)
class NetnsRecord:
    topology: str
    host: str
    role: str
    inode: int = 0  # of the namespace itself: a namespace re-made by someone else is not ours
    sysctls: tuple[str, ...] = ()  # keys topoctl has written in it: read back even when no file names them


def _record_path(name: str) -> str:
    return netns_record_path(name)


_made_dirs: set[str] = set()


def _write_json(path: str, data: object) -> None:
    """Write by rename, so that a reader sees the old file or the new one, whole. One write
    call, and the folder made once per process: a namespace's record is written while it is
    created, so this is on the path of every new namespace."""
    folder = os.path.dirname(path)
    if folder not in _made_dirs:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        _made_dirs.add(folder)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:  # the folder was removed since: make it again
        os.makedirs(folder, mode=0o755, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(data, sort_keys=True).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_json(path: str) -> object | None:
    try:
        with open(path, encoding="utf-8") as src:
            return json.load(src)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None  # an unreadable record owns nothing


def record_netns(name: str, record: NetnsRecord) -> None:
    _write_json(_record_path(name), {"topology": record.topology, "host": record.host, "role": record.role,
                                     "inode": record.inode, "sysctls": list(record.sysctls)})


def read_netns_record(name: str) -> NetnsRecord | None:
    data = _read_json(_record_path(name))
    if not isinstance(data, dict) or not isinstance(data.get("topology"), str):
        return None
    inode, sysctls = data.get("inode"), data.get("sysctls")
    return NetnsRecord(data["topology"], str(data.get("host", "")), str(data.get("role", "container")),
                       inode if isinstance(inode, int) else 0,
                       tuple(k for k in sysctls if isinstance(k, str)) if isinstance(sysctls, list) else ())


def forget_netns(name: str) -> None:
    try:
        os.unlink(_record_path(name))
    except FileNotFoundError:
        pass


def _remove_orphaned_temporaries(folder: str, files: list[str]) -> None:
    """A record is written to NAME.json.tmpPID, then renamed; a writer killed in between
    leaves the temporary behind. Remove those whose writer is gone."""
    for file in files:
        _, _, pid = file.rpartition(".tmp")
        if ".json.tmp" in file and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                try:
                    os.unlink(os.path.join(folder, file))
                except FileNotFoundError:
                    pass
            except PermissionError:
                pass  # alive, someone else's


# Records already read, by name, with the (inode, mtime, ctime, size) their file had. A record
# is only ever replaced by rename, so a changed file has a new inode, and a new ctime.
Signature = tuple[int, int, int, int]
_records_seen: dict[str, tuple[Signature, NetnsRecord | None]] = {}

# The index: what earlier runs read from the record files, in one file, so that a run over a
# thousand namespaces parses one file instead of a thousand (the files are still listed and
# stat'ed each time, and a file whose signature differs is read).
# An entry is kept only for a file whose ctime is older than INDEX_AGE_NS before the listing
# began: any later change of that file then gets a later ctime, so it cannot carry a signature
# the index knows, however coarse the file system's clock (git's "racy index" rule).
INDEX_NAME = ".index.json"  # namespace names start with a letter or digit: no record is named so
INDEX_VERSION = 1  # holds parsed records: raise it whenever NetnsRecord or read_netns_record changes
INDEX_AGE_NS = 1_000_000_000


def _load_index(folder: str) -> dict[str, tuple[Signature, NetnsRecord | None]]:
    data = _read_json(os.path.join(folder, INDEX_NAME))
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("records"), dict):
        return {}
    index: dict[str, tuple[Signature, NetnsRecord | None]] = {}
    for name, row in data["records"].items():
        try:
            ino, mtime, ctime, size, fields = row
            signature = (int(ino), int(mtime), int(ctime), int(size))
            record = None if fields is None else NetnsRecord(
                str(fields[0]), str(fields[1]), str(fields[2]), int(fields[3]), tuple(str(k) for k in fields[4]))
        except (TypeError, ValueError, IndexError):
            continue  # a damaged entry: its file is read instead
        index[name] = (signature, record)
    return index


def _store_index(folder: str, entries: dict[str, tuple[Signature, NetnsRecord | None]]) -> None:
    rows = {name: [*signature, None if record is None else
                   [record.topology, record.host, record.role, record.inode, list(record.sysctls)]]
            for name, (signature, record) in entries.items()}
    try:
        _write_json(os.path.join(folder, INDEX_NAME), {"version": INDEX_VERSION, "records": rows})
    except OSError:
        pass  # without an index the records are only read one by one


def _grown(folder: str) -> bool:
    try:
        return os.stat(folder).st_size > 16384  # a fresh directory is one 4 KiB block
    except OSError:
        return False


def _remove_empty_folder(folder: str) -> None:
    """No records are left: remove the index and the folder itself. A directory on ext4 (what
    /run is on some machines) never shrinks, and making a file in a directory that once held
    a thousand is slower (docs/performance.md). It is made again when next needed."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, INDEX_NAME))
        os.rmdir(folder)
    except OSError:
        pass  # a record written meanwhile, or not ours to remove
    _made_dirs.discard(folder)


def netns_records() -> dict[str, NetnsRecord]:
    """Every namespace record. A file whose signature this process or the index has seen is
    not read again."""
    folder = paths.netns_records_dir()
    listed_at = time.time_ns()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return {}
    _remove_orphaned_temporaries(folder, [e.name for e in entries])
    index: dict[str, tuple[Signature, NetnsRecord | None]] | None = None  # loaded when first needed
    present: dict[str, tuple[Signature, NetnsRecord | None]] = {}
    read_from_files = 0
    for entry in entries:
        if not entry.name.endswith(".json") or entry.name.startswith("."):
            continue
        name = entry.name[:-5]
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        signature = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        seen = _records_seen.get(name)
        if seen is None or seen[0] != signature:
            if index is None:
                index = _load_index(folder)
            seen = index.get(name)
            if seen is None or seen[0] != signature:
                seen = (signature, read_netns_record(name))
                read_from_files += 1
            _records_seen[name] = seen
        present[name] = seen
    if not present and (any(e.name == INDEX_NAME for e in entries) or _grown(folder)):
        _remove_empty_folder(folder)
    elif index is not None and (read_from_files or len(index) != len(present)):
        trusted = {name: seen for name, seen in present.items() if seen[0][2] < listed_at - INDEX_AGE_NS}
        if trusted.keys() != index.keys() or any(trusted[n][0] != index[n][0] for n in trusted):
            _store_index(folder, trusted)
    return {name: record for name, (_, record) in present.items() if record is not None}


def recorded_netns(topology: str) -> list[str]:
    """Namespaces whose record names `topology`, including any already gone from /run/netns."""
    return sorted(name for name, record in netns_records().items() if record.topology == topology)




def recorded_root_routes(topology: str) -> set[str]:
    """File names of the routes this topology added to the machine's own namespace."""
    try:
        return set(os.listdir(routes_record_dir(topology)))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def record_root_route(topology: str, key: str, present: bool) -> None:
    path = os.path.join(routes_record_dir(topology), route_record_name(key))
    if present:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "w", encoding="utf-8"):
            pass
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def table_scopes(topology: str) -> set[str | None]:
    """The namespaces (None: the root one) where `topology` has written nftables tables, so that
    they are read back even once the file no longer wants them there; nothing else is read."""
    data = _read_json(tables_record_path(topology))
    if not isinstance(data, list):
        return set()
    return {None if name == "" else name for name in data if isinstance(name, str)}


def record_table_scope(topology: str, scope: str | None, present: bool) -> None:
    scopes = table_scopes(topology)
    changed = (scope not in scopes) if present else (scope in scopes)
    if changed:
        _write_table_scopes(topology, scopes | {scope} if present else scopes - {scope})


def prune_table_scopes(topology: str, existing: set[str], keep_root: bool) -> None:
    """Forget the namespaces that are gone (and, after a destroy, the root namespace: a destroy
    that ended well left no table of the topology there)."""
    scopes = table_scopes(topology)
    kept = {s for s in scopes if (s is None and keep_root) or (s is not None and s in existing)}
    if kept != scopes:
        _write_table_scopes(topology, kept)


def _write_table_scopes(topology: str, scopes: set[str | None]) -> None:
    if scopes:
        _write_json(tables_record_path(topology), sorted("" if s is None else s for s in scopes))
    else:
        try:
            os.unlink(tables_record_path(topology))
        except FileNotFoundError:
            pass


def derived_sysctls(scope: str | None) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{key: (the value before topoctl first wrote it, the topologies that need it)}."""
    data = _read_json(derived_sysctls_path(scope))
    if not isinstance(data, dict):
        return {}
    found = {}
    for key, entry in data.items():
        if isinstance(entry, dict) and isinstance(entry.get("before"), str) and isinstance(entry.get("by"), list):
            found[key] = (entry["before"], tuple(t for t in entry["by"] if isinstance(t, str)))
    return found


def _write_derived(scope: str | None, entries: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    if entries:
        _write_json(derived_sysctls_path(scope), {k: {"before": b, "by": sorted(set(by))} for k, (b, by) in entries.items()})
    else:
        try:
            os.unlink(derived_sysctls_path(scope))
        except FileNotFoundError:
            pass


def need_sysctls(scope: str | None, before: dict[str, str], topology: str) -> None:
    """`topology` needs these keys as topoctl sets them; the first need records the value before."""
    entries = derived_sysctls(scope)
    changed = False
    for key, value in before.items():
        old, by = entries.get(key, (value, ()))
        if topology not in by:
            entries[key] = (old, by + (topology,))
            changed = True
    if changed:
        _write_derived(scope, entries)


def release_sysctls(scope: str | None, topology: str) -> None:
    """`topology` no longer needs anything in `scope`; entries nobody needs are forgotten."""
    entries = derived_sysctls(scope)
    kept = {k: (b, tuple(t for t in by if t != topology)) for k, (b, by) in entries.items()}
    kept = {k: v for k, v in kept.items() if v[1]}
    if kept != entries:
        _write_derived(scope, kept)


def derived_sysctl_scopes() -> list[str | None]:
    try:
        names = os.listdir(derived_sysctls_dir())
    except FileNotFoundError:
        return []
    return [None if n == "_root.json" else n[:-5] for n in sorted(names) if n.endswith(".json")]


@dataclass(frozen=True)
class Deployed:
    """What `topoctl ls` knows of a topology applied here: the file, --emulate, the hosts."""

    topology: str
    file: str
    emulate: bool
    hosts: tuple[str, ...]


def record_deployment(topology: str, file: str, emulate: bool, hosts: tuple[str, ...], present: bool,
                      whole: bool) -> None:
    """After an apply (present) the hosts are added, or are the hosts when the run acted on the
    whole file (`whole`); after a destroy they are taken away (all of them, when whole), and the
    record goes with the last one."""
    old = deployments().get(topology)
    have = set(old.hosts) if old is not None else set()
    if whole:
        hosts_now = sorted(hosts) if present else []
    else:
        hosts_now = sorted(have | set(hosts)) if present else sorted(have - set(hosts))
    path = deployment_path(topology)
    if not hosts_now:
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return
    new = Deployed(topology, file if present or old is None else old.file,
                   emulate if present or old is None else old.emulate, tuple(hosts_now))
    if new != old:
        _write_json(path, {"topology": new.topology, "file": new.file, "emulate": new.emulate, "hosts": list(new.hosts)})


def deployments() -> dict[str, Deployed]:
    found = {}
    try:
        names = sorted(os.listdir(deployments_dir()))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for name in names:
        data = _read_json(os.path.join(deployments_dir(), name)) if name.endswith(".json") else None
        if isinstance(data, dict) and isinstance(data.get("topology"), str) and isinstance(data.get("file"), str):
            found[data["topology"]] = Deployed(data["topology"], data["file"], bool(data.get("emulate")),
                                               tuple(h for h in data.get("hosts", ()) if isinstance(h, str)))
    return found
