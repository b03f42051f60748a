"""Network namespaces without forking: create, delete, enter (per thread) and record ownership.

Part of the kernel layer (with rtnl.py, kernel.py and observe.py): the only code that touches
/run/netns and the ownership records in /run/topoctl. Entering a namespace is done by a
short-lived thread that calls
setns(2); only that thread changes namespace, so the rest of the process never does. A socket
opened there stays in that namespace for its whole life, which is how netlink sockets for every
namespace are made without pyroute2's fork per `IPRoute(netns=...)`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from .errors import KernelError, PermissionDenied

NETNS_RUN_DIR = "/run/netns"
STATE_DIR = os.environ.get("TOPOCTL_STATE_DIR", "/run/topoctl")

CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

T = TypeVar("T")

PARALLEL_CREATE_FROM = 8  # namespaces; fewer are made by one thread (starting one costs ~0.1 ms)


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _os_error(call: str, target: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{call}({target}): {os.strerror(code)}")


def _check(result: int, call: str, target: str) -> None:
    if result != 0:
        raise _os_error(call, target)


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def open_netns(name: str | None) -> int:
    """A file descriptor of a namespace (None: the one this process's main thread lives in)."""
    path = netns_path(name) if name is not None else f"/proc/{os.getpid()}/ns/net"
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _translate(exc, name or "(root)") from None


def is_netns(name: str) -> bool:
    """Whether /run/netns/NAME really pins a namespace; a run killed between creating the file
    and bind-mounting the namespace onto it leaves a plain empty file."""
    try:
        return os.stat(netns_path(name)).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def remove_placeholder(name: str) -> None:
    """Remove a /run/netns file that pins no namespace (see is_netns)."""
    if not is_netns(name):
        try:
            os.unlink(netns_path(name))
        except FileNotFoundError:
            pass


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _in_threads(bodies: list[Callable[[], None]], label: str) -> list[BaseException]:
    """Run the bodies at once, each in a short-lived thread of its own that may enter other
    namespaces and is moved back to its own before it ends. Returns the errors that ended a
    body or its move back (a body that must report its own errors catches them)."""
    failures: list[BaseException] = []

    def worker(body: Callable[[], None]) -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                try:
                    body()
                finally:
                    _check(_libc.setns(own, CLONE_NEWNET), "setns", "own namespace")
            finally:
                os.close(own)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(body,), name=f"netns-{label}", daemon=True) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def _in_other_netns(enter: Callable[[], None], fn: Callable[[], T], label: str) -> T:
    """Run fn in a short-lived thread that first calls enter() to switch its network namespace,
    and switches back before it ends. Errors of enter() are translated; errors of fn() are
    handed over as they are."""
    outcome: dict = {}

    def body() -> None:
        enter()
        try:
            outcome["result"] = fn()
        except BaseException as exc:
            outcome["raised"] = exc

    failures = _in_threads([body], label)
    if failures:
        raise _translate(failures[0], label)
    if "raised" in outcome:
        raise outcome["raised"]
    return outcome["result"]


def _enter(name: str) -> None:
    """Move the calling thread into namespace `name` (OSError as the kernel gives it)."""
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(target, CLONE_NEWNET), "setns", name)
    finally:
        os.close(target)


def run_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Run fn in a thread that has entered namespace `name` (None: our own). Returns its result."""
    if name is None:
        return fn()
    return _in_other_netns(lambda: _enter(name), fn, name)


def run_in_each(names: list[str], fn: Callable[[str], T]) -> dict[str, T]:
    """fn(name) inside each of the namespaces, all in one thread that enters them in turn:
    one thread for many namespaces instead of one each. A namespace that does not exist is
    left out of the result."""

    def enter_each() -> dict[str, T]:
        results: dict[str, T] = {}
        for name in names:
            try:
                _enter(name)
            except FileNotFoundError:
                continue  # gone: left out
            except OSError as exc:
                raise _translate(exc, name) from None
            results[name] = fn(name)
        return results

    if not names:
        return {}
    return _in_other_netns(lambda: None, enter_each, names[0])


def open_in_each_here(names: list[str], open_socket: Callable[[], T]) -> dict[str, T]:
    """For a forked helper process, whose one thread never needs its own namespace again:
    open_socket() inside each namespace, entered by the calling thread itself (no thread at
    all). A namespace that does not exist is left out."""
    opened: dict[str, T] = {}
    for name in names:
        try:
            _enter(name)
        except FileNotFoundError:
            continue
        opened[name] = open_socket()
    return opened


def run_each_in_order(steps: list[tuple[str | None, Callable[[], T]]]) -> tuple[list[T], BaseException | None]:
    """Each step's fn inside its namespace (None: our own), in order, all by one thread that
    moves between namespaces only when the next step's differs. Stops at the first error:
    returns (the results of the steps done, that error or None). An error entering a namespace
    is translated as run_in_netns does; an error of a fn is returned as it is."""

    def body() -> tuple[list[T], BaseException | None]:
        results: list[T] = []
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        current: str | None = None
        try:
            for scope, fn in steps:
                if scope != current:
                    try:
                        if scope is None:
                            _check(_libc.setns(own, CLONE_NEWNET), "setns", "own namespace")
                        else:
                            _enter(scope)
                    except OSError as exc:
                        return results, _translate(exc, scope or "of topoctl itself")
                    current = scope
                try:
                    results.append(fn())
                except Exception as exc:  # noqa: BLE001 - handed to the caller with what was done
                    return results, exc
            return results, None
        finally:
            os.close(own)

    if not steps:
        return [], None
    return _in_other_netns(lambda: None, body, steps[0][0] or "own")


def _translate(exc: BaseException, name: str) -> BaseException:
    if isinstance(exc, OSError):
        if exc.errno in (errno.EPERM, errno.EACCES):
            return PermissionDenied(f"not allowed to enter network namespace {name}: {exc.strerror}",
                                    "run as root (CAP_SYS_ADMIN and CAP_NET_ADMIN are needed)")
        if exc.errno == errno.ENOENT:
            return KernelError(f"network namespace {name} does not exist",
                               "run plan to see what is missing; apply creates it")
        if exc.errno == errno.EINVAL:
            return KernelError(f"{netns_path(name)} is not a network namespace (left half-made by a killed run?)",
                               "if topoctl made it, the next apply of its topology removes it; else `ip netns del`")
    return exc


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so bind mounts propagate."""
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    target = NETNS_RUN_DIR.encode()
    if _libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        raise _os_error("mount", NETNS_RUN_DIR)
    _check(_libc.mount(target, target, b"none", MS_BIND | MS_REC, None), "mount", NETNS_RUN_DIR)
    _check(_libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None), "mount", NETNS_RUN_DIR)


class PartialCreate(Exception):
    """create_netns_many stopped part way: `made` (the first names, in order) were created,
    then `error` happened."""

    def __init__(self, made: dict, error: BaseException) -> None:
        super().__init__(str(error))
        self.made = made
        self.error = error


def _make_netns(name: str, inside: Callable[[str], T]) -> T:
    """One new namespace, made by the calling thread (which moves into it): the file, an
    unshare, a bind mount, then inside(name) there. If anything fails the namespace goes again."""
    path = netns_path(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    except FileExistsError:
        raise KernelError(f"network namespace {name} already exists") from None
    mounted = False
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare", name)
        _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None), "mount", path)
        mounted = True
        return inside(name)
    except BaseException:
        if mounted:
            _libc.umount2(path.encode(), MNT_DETACH)
            forget_netns(name)  # inside() may have recorded it
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def create_netns_many(names: list[str], inside: Callable[[str], T],
                      undo: Callable[[str, T], None] = lambda name, result: None) -> dict[str, T]:
    """New namespaces, each made by an unshare and a bind mount (what `ip netns add` does per
    process) with inside(name) called in it by the thread that made it, before it moves on.
    From PARALLEL_CREATE_FROM names on, two threads (with two CPUs) take the names in turn: the
    kernel sets up two namespaces at once (100 namespaces: 54-69 ms by one thread, ~40% less
    by two). A failure stops both threads; namespaces made after the failed one, in the order
    of `names`, are deleted again (undo(name, result) first), so that PartialCreate.made is
    always the first names, as if made one by one."""
    results: dict[int, T] = {}
    errors: dict[int, BaseException] = {}
    lock = threading.Lock()
    taken = 0

    def take() -> int | None:
        nonlocal taken
        with lock:
            if errors or taken >= len(names):
                return None
            taken += 1
            return taken - 1

    def make_in_turn() -> None:
        while (i := take()) is not None:
            try:
                results[i] = _make_netns(names[i], inside)
            except BaseException as exc:
                with lock:
                    errors[i] = exc
                return

    if not names:
        return {}
    try:
        _ensure_run_dir()
    except OSError as exc:
        raise PartialCreate({}, _translate(exc, names[0])) from None
    workers = min(2, cpus()) if len(names) >= PARALLEL_CREATE_FROM else 1
    # A thread that could not move back to its own namespace is ending anyway: what it made stands.
    _in_threads([make_in_turn] * workers, names[0])
    if not errors:
        return {name: results[i] for i, name in enumerate(names)}
    first = min(errors)
    for i in sorted(i for i in results if i > first):
        undo(names[i], results[i])
        delete_netns(names[i])
    error = errors[first]
    raise PartialCreate({names[i]: results[i] for i in range(first)},
                        _translate(error, names[first]) if isinstance(error, OSError) else error)


def delete_netns(name: str) -> None:
    """Unpin a namespace. The kernel frees it (and its interfaces) once nothing else holds it."""
    path = netns_path(name)
    if _libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        raise _translate(_os_error("umount", path), name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _translate(exc, name) from None
    forget_netns(name)


# -- ownership records --------------------------------------------------------------------

@dataclass(frozen=True)
class NetnsRecord:
    topology: str
    host: str
    role: str
    inode: int = 0  # of the namespace itself: a namespace re-made by someone else is not ours
    sysctls: tuple[str, ...] = ()  # keys topoctl has written in it: read back even when no file names them


def netns_inode(name: str) -> int:
    try:
        return os.stat(netns_path(name)).st_ino
    except OSError:
        return 0


def _record_path(name: str) -> str:
    return os.path.join(STATE_DIR, "netns", name + ".json")


_made_dirs: set[str] = set()


def _write_json(path: str, data: object) -> None:
    """Write by rename, so that a reader sees the old file or the new one, whole. One write
    call, and the folder made once per process: a namespace's record is written while it is
    created (measured: 100 records 34 ms with a buffered json.dump and makedirs each, 15 ms so)."""
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
# thousand namespaces parses one file instead of a thousand (measured: 35-55 ms -> ~10 ms; the
# files are still listed and stat'ed each time, and a file whose signature differs is read).
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
    /run is on some machines) never shrinks: after a thousand records had been in it, making a
    file there cost 0.3 ms instead of 0.09 ms, measured. It is made again when next needed."""
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
    folder = os.path.join(STATE_DIR, "netns")
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


def routes_record_dir(topology: str) -> str:
    return os.path.join(STATE_DIR, "routes", topology)


def route_record_name(key: str) -> str:
    """A file name for a route key ('254 10.244.2.0/24 0' -> '254_10.244.2.0_24_0')."""
    return key.replace(" ", "_").replace("/", "_")


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


def run_command_in(name: str | None, command: list[str], quiet: bool = False) -> int:
    """Run a command inside a namespace and return its exit code.

    The child enters the namespace with setns(2) before exec, without `ip netns exec`'s
    remount of /sys (slow here): /sys in the child still shows the caller's namespace.
    """
    import subprocess

    fd = None
    if name is not None:
        try:
            fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _translate(exc, name) from None

    def enter() -> None:
        if fd is not None and _libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)

    try:
        sink = subprocess.DEVNULL if quiet else None
        return subprocess.call(command, preexec_fn=enter, pass_fds=(), stdout=sink, stderr=sink)
    except FileNotFoundError:
        raise KernelError(f"command not found: {command[0]}", "install it, or give its full path") from None
    finally:
        if fd is not None:
            os.close(fd)
