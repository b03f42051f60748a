"""Network namespaces without forking: create, delete and enter (per thread).

The only code that touches /run/netns; what is recorded about a namespace is the callers'
(kernel/executors.py writes and removes its record, topoctl.store keeps it). Entering
a namespace is done by a short-lived thread that calls setns(2); only that thread changes
namespace, so the rest of the process never does. A socket opened there stays in that
namespace for its whole life, which is how netlink sockets for every namespace are made
without pyroute2's fork per `IPRoute(netns=...)`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Callable, TypeVar

from topoctl.paths import NETNS_RUN_DIR
from topoctl.errors import KernelError, Missing, PermissionDenied


CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

T = TypeVar("T")

PARALLEL_CREATE_FROM = 8  # namespaces; fewer are made by one thread (starting a second costs more)


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


def half_made(names) -> list[str]:
    """Those of these names whose /run/netns file exists but pins no namespace (see is_netns):
    one stat each."""
    nsfs = os.stat("/proc/self/ns/net").st_dev
    found = []
    for name in names:
        try:
            if os.stat(netns_path(name)).st_dev != nsfs:
                found.append(name)
        except OSError:
            pass  # not there at all
    return found


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
            return Missing(f"network namespace {name} does not exist",
                               "run plan to see what is missing; apply creates it")
        if exc.errno == errno.EINVAL:
            return not_a_namespace(name)
    return exc


def not_a_namespace(name: str) -> KernelError:
    """The error for a /run/netns file that pins nothing and that topoctl does not know as its own."""
    return KernelError(f"{netns_path(name)} is not a network namespace: the file pins nothing",
                       "a run killed while making a namespace leaves such a file; no record or interrupted "
                       f"run of this topology names it, so it is left alone: `ip netns del {name}` removes it")


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


class Partial(Exception):
    """A run of actions done together stopped part way: the first len(`done`) were done, then
    `error`. `done` is what they made, in order: a dict by name (create_netns_many) or a list."""

    def __init__(self, done: dict | list, error: BaseException) -> None:
        super().__init__(str(error))
        self.done = done
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
    kernel sets up two namespaces at once (docs/performance.md). A failure stops both threads; namespaces made after the failed one, in the order
    of `names`, are deleted again (undo(name, result) first), so that Partial.done is
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
        raise Partial({}, _translate(exc, names[0])) from None
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
    raise Partial({names[i]: results[i] for i in range(first)},
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


def netns_inode(name: str) -> int:
    try:
        return os.stat(netns_path(name)).st_ino
    except OSError:
        return 0



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
