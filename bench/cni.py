"""The CNI peer: the bench topology built by the CNI reference plugins, called as a container
runtime calls them (docs/bench/cni.md).

This is a container runtime in miniature. It lives in an emulated host namespace it makes
(the counterpart of topoctl's `<topology>-local`), exactly as containerd lives in the
machine's root namespace, and every plugin it starts inherits that namespace: the bridge,
the host-side veths, ip_forward and every iptables rule the plugins write stay there, never
in the machine's root namespace. Per container it makes the namespace (the unshare and bind
mount of `ip netns add`, done in-process as containerd does) and then execs, once each, the
plugins of the container's networks: `loopback`, then `bridge` (which execs `host-local`
for the address), then `portmap` chained after it in the ipMasq + portmap variant. The
results are kept in STATE/results, as libcni keeps them in /var/lib/cni/results, because DEL
is given the ADD result as prevResult.

    python -m bench.cni add N TAG STATE [--variant plain|portmap] [--jobs J]
    python -m bench.cni del N TAG STATE [--variant plain|portmap] [--keep-netns]
    python -m bench.cni rmns N TAG STATE
    python -m bench.cni probe [--count 200]

`add` and `del` are the two timed lines (bench/cni_measure.py times each as one process).
`del --keep-netns` stops after the DELs, so that the correctness check can look at what DEL
left; `rmns` then deletes the namespaces. `probe` compares the ways of running one exec in
a namespace (why the plugins are not started with `ip netns exec` or nsenter).

Only the standard library is imported: this process's start-up is part of each timed line,
as topoctl's is part of its own.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PLUGINS = Path("/usr/lib/cni")
# The highest version the Debian plugins (1.1.1) support: `CNI_COMMAND=VERSION` on each says so.
CNI_VERSION = "1.0.0"
# The bench topology's addressing (bench/topology.py, checked equal by bench/cni_measure.py):
# not imported from there because that module imports yaml, which this timed process needn't.
SUBNET, GATEWAY, FIRST = "10.128.0.0/16", "10.128.0.1", "10.128.0.2"
HOST_PORT = 20000  # container i's port 80 is published as host port 20000 + i (portmap variant)
# The plugins look iptables up in PATH; nothing else of the caller's environment is passed.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
# The namespace this process started in (the machine's own, for the bench): never the plugins'.
STARTED_IN = os.stat("/proc/self/ns/net").st_ino


class PluginError(Exception):
    pass


@dataclass(frozen=True)
class CniTopology:
    """Names and network configurations of one CNI build. Every name starts with
    `bcni<tag>-` so that nothing collides with topoctl's bench (`bench<N>-<tag>`, `b<tag>-`),
    with pytest's namespaces or with another run."""

    n: int
    tag: str
    state: Path
    variant: str = "plain"  # or "portmap": bridge ipMasq true and portmap chained after it

    @property
    def prefix(self) -> str:
        return f"bcni{self.tag}-{self.n}"

    @property
    def host_ns(self) -> str:
        return f"{self.prefix}-host"

    def container(self, i: int) -> str:
        return f"{self.prefix}-c{i}"  # also its CNI_CONTAINERID

    def names(self) -> list[str]:
        return [self.container(i) for i in range(self.n)] + [self.host_ns]

    @property
    def network(self) -> str:
        return f"bcni{self.tag}n{self.n}"  # host-local's folder and the iptables comments name it

    @property
    def ipam_dir(self) -> Path:
        return self.state / "ipam"  # host-local keeps its allocations here, not in /var/lib/cni

    @property
    def results_dir(self) -> Path:
        return self.state / "results"

    def loopback_conf(self) -> dict:
        # containerd's go-cni adds this network to every pod, before the pod's own.
        return {"cniVersion": CNI_VERSION, "name": "cni-loopback", "type": "loopback"}

    def bridge_conf(self) -> dict:
        # isGateway: the bridge gets the gateway address, like topoctl's br0; the default
        # route through it comes from host-local's routes; rangeStart makes a sequential run
        # hand out 10.128.0.2, .3, ... in container order, the bench topology's addresses.
        return {"cniVersion": CNI_VERSION, "name": self.network, "type": "bridge", "bridge": "br0",
                "isGateway": True, "ipMasq": self.variant == "portmap",
                "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                         "ranges": [[{"subnet": SUBNET, "rangeStart": FIRST, "gateway": GATEWAY}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}}

    def portmap_conf(self, i: int) -> dict:
        # What libcni hands the second plugin of a conflist: the list's name and version, and
        # the runtime's portMappings injected as runtimeConfig because the plugin declares
        # that capability. snat (the default) also makes 127.0.0.1:port reach the container.
        return {"cniVersion": CNI_VERSION, "name": self.network, "type": "portmap", "snat": True,
                "capabilities": {"portMappings": True},
                "runtimeConfig": {"portMappings": [
                    {"hostPort": HOST_PORT + i, "containerPort": 80, "protocol": "tcp"}]}}


# --- namespaces, done as a runtime does them: no exec, no `ip netns` -------------------------

def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def make_netns(name: str) -> None:
    """A new pinned namespace: the file, then unshare and bind mount in a short-lived thread
    (only that thread moves, so the caller stays in the host namespace). The file is made
    exclusively, so an existing namespace is never taken over."""
    path = netns_path(name)
    os.makedirs("/run/netns", exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    failure: list[str] = []

    def body() -> None:
        if libc.unshare(CLONE_NEWNET) != 0:
            failure.append(f"unshare: {os.strerror(ctypes.get_errno())}")
        elif libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) != 0:
            failure.append(f"mount {path}: {os.strerror(ctypes.get_errno())}")

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if failure:
        os.unlink(path)
        raise OSError(failure[0])


def delete_netns(name: str) -> None:
    """What `ip netns del` does: unpin; the kernel frees the namespace and all in it later."""
    path = netns_path(name)
    libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def enter_host(name: str) -> None:
    """Move this process's main thread (before any other thread or child exists) into the
    host namespace, and prove it: if this failed, the plugins would write the machine's own
    bridge and iptables rules."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(f"setns {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    here, wanted = os.stat("/proc/self/ns/net").st_ino, os.stat(netns_path(name)).st_ino
    if here != wanted or here == STARTED_IN:
        raise OSError(f"not in namespace {name} after setns (inode {here}, wanted {wanted}, started in {STARTED_IN})")


def loopback_up() -> None:
    """`ip link set lo up` in the current namespace, by ioctl: topoctl brings up its emulated
    host's lo, and a real host's lo is up already."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + b"\0" * 22)


# --- the plugins ----------------------------------------------------------------------------

def invoke(plugin: str, command: str, container: str, ifname: str, conf: dict) -> dict:
    """One exec of a plugin, as libcni does it: the CNI_* variables, the configuration on
    stdin, the result (or a JSON error) on stdout."""
    env = {"PATH": PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": container,
           "CNI_NETNS": netns_path(container), "CNI_IFNAME": ifname, "CNI_PATH": str(PLUGINS)}
    proc = subprocess.run([str(PLUGINS / plugin)], input=json.dumps(conf).encode(), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        said = (proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")).strip()
        raise PluginError(f"{plugin} {command} {container}: exit {proc.returncode}: {said[-600:]}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def add_one(t: CniTopology, i: int) -> None:
    """A pod's network set-up: its namespace, then its networks in order."""
    name = t.container(i)
    make_netns(name)
    # go-cni gives the loopback network CNI_IFNAME=lo (the plugin ignores it anyway).
    lo = invoke("loopback", "ADD", name, "lo", t.loopback_conf())
    result = invoke("bridge", "ADD", name, "eth0", t.bridge_conf())
    if t.variant == "portmap":
        result = invoke("portmap", "ADD", name, "eth0", {**t.portmap_conf(i), "prevResult": result})
    (t.results_dir / f"{name}.json").write_text(json.dumps({"lo": lo, "net": result}))


def del_one(t: CniTopology, i: int) -> None:
    """A pod's network tear-down: its networks' plugins in reverse order, each given the
    cached ADD result as prevResult (as CNI 1.0 asks of a runtime that has it)."""
    name = t.container(i)
    cache = t.results_dir / f"{name}.json"
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    previous = {"prevResult": cached["net"]} if "net" in cached else {}
    if t.variant == "portmap":
        invoke("portmap", "DEL", name, "eth0", {**t.portmap_conf(i), **previous})
    invoke("bridge", "DEL", name, "eth0", {**t.bridge_conf(), **previous})
    invoke("loopback", "DEL", name, "lo", {**t.loopback_conf(), **({"prevResult": cached["lo"]} if "lo" in cached else {})})
    cache.unlink(missing_ok=True)


def add(t: CniTopology, jobs: int) -> None:
    """The timed cold build. Counted, in this one process: its start; making the host
    namespace, entering it and bringing its lo up; then per container making its namespace
    and the plugin execs (with the host-local and iptables execs they make), and writing the
    result cache. `jobs` containers at a time (1 is kubelet's one pod at a time)."""
    t.results_dir.mkdir(parents=True, exist_ok=True)
    make_netns(t.host_ns)
    enter_host(t.host_ns)
    loopback_up()
    if jobs == 1:
        for i in range(t.n):
            add_one(t, i)
    else:
        # Threads start after enter_host, so they and the plugins they start are in the host namespace.
        with ThreadPoolExecutor(jobs) as pool:
            for future in [pool.submit(add_one, t, i) for i in range(t.n)]:
                future.result()


def delete(t: CniTopology, keep_netns: bool) -> None:
    """The timed teardown: a DEL per container (its plugins in reverse order), then the
    container namespaces and the host namespace deleted (as topoctl's destroy deletes its
    namespaces, the emulated host's included)."""
    enter_host(t.host_ns)
    for i in range(t.n):
        del_one(t, i)
    if not keep_netns:
        remove_namespaces(t)


def remove_namespaces(t: CniTopology) -> None:
    for name in t.names():
        delete_netns(name)


# --- probe: how to run an exec in the host namespace ------------------------------------------

def probe(count: int) -> None:
    """Milliseconds per exec of `loopback` with CNI_COMMAND=VERSION (which touches nothing),
    run in a scratch namespace five ways, taken in turn (one exec of each way per round, so
    that the machine's drifting speed is shared out evenly). Printed as a table."""
    name = f"bcni{secrets.token_hex(2)}-probe"
    path = netns_path(name)
    make_netns(name)
    try:
        argv = [str(PLUGINS / "loopback")]
        env = {"PATH": PATH, "CNI_COMMAND": "VERSION"}

        def setns_child() -> None:
            fd = os.open(path, os.O_RDONLY)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                os._exit(126)

        ways = [("plain exec, in the caller's namespace (the floor)", argv, {}),
                ("ip netns exec NS plugin", ["ip", "netns", "exec", name, *argv], {}),
                ("nsenter --net=/run/netns/NS plugin", ["nsenter", f"--net={path}", *argv], {}),
                ("preexec_fn doing setns (ctypes)", argv, {"preexec_fn": setns_child})]
        spent = [0.0] * (len(ways) + 1)
        # The way bench.cni runs the plugins: the caller is in the namespace already (here it
        # enters and leaves around each exec, so that this way too is taken in turn).
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        there = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for _ in range(count):
                for k, (_, command, kw) in enumerate(ways):
                    started = time.perf_counter()
                    subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, **kw)
                    spent[k] += time.perf_counter() - started
                started = time.perf_counter()
                if libc.setns(there, CLONE_NEWNET) != 0:
                    raise OSError("setns into the probe namespace failed")
                try:
                    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
                finally:
                    if libc.setns(own, CLONE_NEWNET) != 0:
                        raise OSError("setns back failed")  # stops the probe: nothing more runs in the wrong place
                spent[-1] += time.perf_counter() - started
        finally:
            os.close(own)
            os.close(there)
        ways.append(("caller in the namespace (setns once), plain exec: bench.cni's way", argv, {}))
        print(f"| way ({count} execs each of loopback VERSION, in turn) | ms per exec |\n|---|---:|")
        for (label, _, _), seconds in zip(ways, spent):
            print(f"| {label} | {seconds / count * 1000:.2f} |")
    finally:
        delete_netns(name)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cni", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["add", "del", "rmns", "probe"])
    parser.add_argument("n", type=int, nargs="?")
    parser.add_argument("tag", nargs="?")
    parser.add_argument("state", nargs="?", type=Path)
    parser.add_argument("--variant", choices=["plain", "portmap"], default="plain")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--keep-netns", action="store_true")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    if args.what == "probe":
        probe(args.count)
        return 0
    if args.state is None:
        parser.error("add, del and rmns need N TAG STATE")
    t = CniTopology(args.n, args.tag, args.state, args.variant)
    try:
        if args.what == "add":
            add(t, args.jobs)
        elif args.what == "del":
            delete(t, args.keep_netns)
        else:
            remove_namespaces(t)
    except (PluginError, OSError) as error:
        # What is left is the caller's to remove (bench/cni_measure.py deletes by name).
        print(f"bench.cni {args.what}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
