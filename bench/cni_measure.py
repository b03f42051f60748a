"""The CNI lines of the benchmark: bench/cni.py's builds and teardowns, timed with the
bench's own run() (which settles the machine first and takes the peak RSS from wait4), their
correctness checks, and the comparison with topoctl (docs/bench/cni.md).

Lines, per N (each the median of its runs, like topoctl's):
- CNI ADD (sequential): one `python -m bench.cni add` process: the emulated host namespace,
  then per container its namespace and its plugin execs, one container after the other;
- CNI ADD (8-way parallel): the same with eight containers at a time;
- CNI teardown: one `bench.cni del` process: a DEL per container, then every namespace deleted;
- the same three with ipMasq on and a portmap per container, up to N=100 (PORTMAP_MAX).
Every name starts with `bcni<tag>-`, the host-local data and result cache live under the
bench's temporary folder, and whatever a run leaves is deleted by name in a `finally`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import cni
from .cni import CniTopology
from .topology import BenchTopology

ADD, ADD8, TEARDOWN = "CNI ADD (sequential)", "CNI ADD (8-way parallel)", "CNI teardown (DEL, then netns del)"
ADD_PM, ADD_PM8 = "CNI ADD, ipMasq + portmap (sequential)", "CNI ADD, ipMasq + portmap (8-way parallel)"
TEARDOWN_PM = "CNI teardown, ipMasq + portmap"
LINES = {"plain": (ADD, ADD8, TEARDOWN), "portmap": (ADD_PM, ADD_PM8, TEARDOWN_PM)}
# Each CNI line against the topoctl line doing the same work: ratio = CNI s / topoctl s.
# topoctl's lines for the bench topology with masquerade and one published port per container
NF_COLD, NF_PLAN = "topoctl apply (cold, masquerade + ports)", "topoctl plan (no-op, masquerade + ports)"
NF_DESTROY = "topoctl destroy (masquerade + ports)"
COMPARED = [(line, "topoctl apply (cold)") for line in (ADD, ADD8)] + \
           [(line, NF_COLD) for line in (ADD_PM, ADD_PM8)] + \
           [(TEARDOWN, "topoctl destroy"), (TEARDOWN_PM, NF_DESTROY)]
PLUGINS = ("loopback", "bridge", "host-local", "portmap")
# The ipMasq + portmap lines stop here: at N=1000 one sequential ADD took 7.0 min and its DEL
# 4.6 min (each iptables-nft call reads the whole ruleset, which grows with N), and the 8-way
# build and its untimed teardown would add as much again (docs/bench/cni.md).
PORTMAP_MAX = 100
# Links the bridge plugin makes: if one showed up in the machine's namespace, a plugin ran there.
PLUGIN_LINK = re.compile(r"^(veth[0-9a-f]{8}|br0|cni0)$")


def available() -> tuple[bool, bool]:
    """(the plugins are installed, iptables is there for ipMasq and portmap); says why not."""
    missing = [p for p in PLUGINS if not os.access(cni.PLUGINS / p, os.X_OK)]
    if missing:
        print(f"CNI lines skipped: no {', '.join(missing)} in {cni.PLUGINS} (make sysdeps installs "
              "Debian's containernetworking-plugins)", file=sys.stderr)
        return False, False
    if not shutil.which("iptables", path=cni.PATH):
        print("CNI ipMasq + portmap lines skipped: no iptables (make sysdeps installs it)", file=sys.stderr)
        return True, False
    return True, True


def driver(what: str, t: CniTopology, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.cni", what, str(t.n), t.tag, str(t.state), "--variant", t.variant, *extra]


def new_topology(n: int, folder: Path, variant: str) -> CniTopology:
    # A tag of four hex digits, as topoctl's lines use, with bcni in front of every name.
    return CniTopology(n, secrets.token_hex(2), Path(tempfile.mkdtemp(prefix="bcni-", dir=folder)), variant)


def leftovers(t: CniTopology) -> list[str]:
    return [name for name in os.listdir("/run/netns") if name.startswith(t.prefix + "-")] \
        if os.path.isdir("/run/netns") else []


def force_clean(t: CniTopology) -> None:
    """Delete by name whatever namespaces of this build exist, then its state folder. Deleting
    the host namespace takes its bridge, veths, ip_forward and iptables rules with it. Tried
    a few times: a driver stopped by Ctrl-C may still be making its last namespace."""
    for attempt in range(5):
        names = leftovers(t)
        if not names:
            break
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        time.sleep(0.1 * attempt)
    shutil.rmtree(t.state, ignore_errors=True)


def root_state() -> str:
    """What the plugins could have changed in the machine's own namespace if one ran there:
    the whole nftables ruleset (iptables-nft writes there), ip_forward, and links with the
    names the bridge plugin gives. Compared before and after the CNI lines."""
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    links = sorted(name for line in shown.splitlines()
                   if PLUGIN_LINK.match(name := line.split(":")[1].strip().split("@")[0]))
    return f"ip_forward={forward}\nlinks={links}\n{rules}"


def addresses(t: CniTopology) -> list[str]:
    """Each container's address, from the result cache (a parallel build hands them out in
    completion order)."""
    out = []
    for i in range(t.n):
        result = json.loads((t.results_dir / f"{t.container(i)}.json").read_text())["net"]
        out.append(str(ipaddress.ip_interface(result["ips"][0]["address"]).ip))
    return out


def in_ns(name: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    # `ip netns exec` is slow here (it remounts /sys), but the checks are not timed.
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, **kw)


def ping_check(t: CniTopology, fail: type[Exception]) -> None:
    """The first container reaches the last one across the bridge, and the bridge address."""
    last = addresses(t)[-1]
    for target in (last, cni.GATEWAY):
        if in_ns(t.container(0), ["ping", "-c", "1", "-w", "5", "-q", target]).returncode != 0:
            raise fail(f"CNI {t.variant}: {t.container(0)} cannot ping {target}")


LISTEN = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',80));s.listen(1);s.settimeout(10);print('ready',flush=True)\n"
          "c,_=s.accept();c.sendall(b'bcni');c.close()")
CONNECT = ("import socket,sys\nc=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n"
           "sys.stdout.write(c.recv(16).decode())")


def port_check(container: str, host_ns: str, label: str, fail: type[Exception]) -> None:
    """Host port 20000 in the host namespace reaches port 80 of the first container: a
    one-shot listener there, a connection from the host namespace to its bridge address.
    The same check serves CNI's portmap and topoctl's published ports (bench/__main__.py)."""
    listener = subprocess.Popen(["ip", "netns", "exec", container, sys.executable, "-c", LISTEN],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if listener.stdout.readline().strip() != "ready":
            raise fail(f"{label} check: no listener in {container}: {listener.stderr.read()[-300:]}")
        try:
            reply = in_ns(host_ns, [sys.executable, "-c", CONNECT, cni.GATEWAY, str(cni.HOST_PORT)], timeout=15)
        except subprocess.TimeoutExpired:
            raise fail(f"{label}: connecting to {cni.GATEWAY}:{cni.HOST_PORT} in {host_ns} hung") from None
        if reply.stdout != "bcni":
            raise fail(f"{label}: {cni.GATEWAY}:{cni.HOST_PORT} in {host_ns} did not reach "
                       f"{container}:80 ({reply.stderr.strip()[-300:]})")
    finally:
        listener.kill()
        listener.wait()


def link_names(namespace: str) -> set[str]:
    out = subprocess.run(["ip", "-n", namespace, "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def check_after_del(t: CniTopology, fail: type[Exception]) -> None:
    """What DEL must leave (the namespaces still there): no veth on either side, no iptables
    rule or chain of a container, no host-local allocation, no cached result."""
    if (links := link_names(t.host_ns)) != {"lo", "br0"}:  # the bridge plugin never deletes the bridge
        raise fail(f"CNI {t.variant} DEL left links in {t.host_ns}: {sorted(links - {'lo', 'br0'})}")
    for i in range(t.n):
        if (links := link_names(t.container(i))) != {"lo"}:
            raise fail(f"CNI {t.variant} DEL left links in {t.container(i)}: {sorted(links)}")
    saved = in_ns(t.host_ns, ["iptables-save"]).stdout
    nft = in_ns(t.host_ns, ["nft", "list", "ruleset"]).stdout
    if t.variant == "plain" and nft.strip():
        raise fail(f"CNI plain (no ipMasq, no portmap) left nftables rules in {t.host_ns}:\n{nft[:600]}")
    # portmap's shared chains (CNI-HOSTPORT-DNAT, -SETMARK, -MASQ and the jumps to them) stay
    # by design, empty of containers; a container's own rules name it, its address or its chain.
    own = re.compile(r"CNI-DN-|:CNI-[0-9a-f]{24}|10\.128\.|" + re.escape(t.prefix + "-c"))
    if stray := [line for line in (saved + nft).splitlines() if own.search(line)]:
        raise fail(f"CNI {t.variant} DEL left rules in {t.host_ns}: {stray[:5]}")
    # host-local keeps its lock and last_reserved_ip.0 (where the next allocation starts); an
    # allocation is a file named by its address.
    allocated = [p.name for p in (t.ipam_dir / t.network).iterdir()
                 if p.name != "lock" and not p.name.startswith("last_reserved_ip")]
    if allocated or any(t.results_dir.iterdir()):
        raise fail(f"CNI {t.variant} DEL left host-local files {allocated[:5]} or cached results")


def checked_build(t: CniTopology, run: Callable, fail: type[Exception]) -> None:
    """The correctness check, untimed: ADD, reachability (and the published port), DEL with
    the namespaces kept, what DEL left, then the namespaces deleted and nothing left."""
    run(driver("add", t, "--jobs", "1"), measured=False)
    ping_check(t, fail)
    if t.variant == "portmap":
        port_check(t.container(0), t.host_ns, "CNI portmap", fail)
    run(driver("del", t, "--keep-netns"), measured=False)
    check_after_del(t, fail)
    run(driver("rmns", t), measured=False)
    if leftovers(t):
        raise fail(f"CNI {t.variant}: namespaces left after deleting them: {leftovers(t)[:5]}")


def measure_cni(n: int, repeat: int, folder: Path, record: Callable[[str, float, float], None],
                run: Callable, fail: type[Exception], check: bool) -> None:
    """The CNI lines for one N, recorded with the bench's record(); `check` adds the
    correctness check (N=10, and --smoke). The machine's own namespace is compared before
    and after every build: the plugins must never have run there."""
    plain, portmap = available()
    if not plain:
        return
    model = BenchTopology(n, "0000")
    if (ipaddress.ip_network(cni.SUBNET), cni.GATEWAY, cni.FIRST) != (
            model.gateway.network, str(model.gateway.ip), str(model.address(0).ip)):
        raise fail("bench/cni.py's addressing differs from bench/topology.py's")
    variants = ["plain"] + (["portmap"] if portmap and n <= PORTMAP_MAX else [])
    before = root_state()

    def same_root(what: str) -> None:
        if (after := root_state()) != before:
            raise fail(f"the machine's own namespace changed during {what} (a plugin ran there, or "
                       f"another program changed it meanwhile):\nbefore:\n{before[:800]}\nafter:\n{after[:800]}")

    if check:
        for variant in variants:
            t = new_topology(n, folder, variant)
            try:
                checked_build(t, run, fail)
            finally:
                force_clean(t)
            same_root(f"the CNI {variant} check")
    for _ in range(repeat):
        for variant in variants:
            add_line, parallel_line, teardown_line = LINES[variant]
            t = new_topology(n, folder, variant)
            try:
                record(add_line, *run(driver("add", t, "--jobs", "1"))[:2])
                ping_check(t, fail)
                record(teardown_line, *run(driver("del", t))[:2])
                if leftovers(t):
                    raise fail(f"CNI {variant} teardown left {leftovers(t)[:5]}")
            finally:
                force_clean(t)
            same_root(f"CNI {variant} at N={n}")
            # Eight pods at a time (a runtime sets up pods concurrently); torn down untimed.
            t = new_topology(n, folder, variant)
            try:
                record(parallel_line, *run(driver("add", t, "--jobs", "8"))[:2])
                ping_check(t, fail)
                run(driver("del", t), measured=False)
            finally:
                force_clean(t)
            same_root(f"CNI {variant} 8-way at N={n}")


def comparison(results: dict[int, dict]) -> list[dict]:
    """One row per CNI line and N: its seconds, the topoctl line's, and CNI s / topoctl s."""
    rows = []
    for line, other in COMPARED:
        for n in sorted(results):
            mine, theirs = results[n].get(line, {}).get("seconds"), results[n].get(other, {}).get("seconds")
            if mine and theirs:
                rows.append({"cni": line, "topoctl": other, "n": n, "cni_seconds": mine,
                             "topoctl_seconds": theirs, "ratio": mine / theirs})
    return rows


def comparison_table(results: dict[int, dict]) -> str:
    """The ratio table printed under the main one: above 1, topoctl took less time."""
    rows = comparison(results)
    if not rows:
        return ""
    lines = ["| CNI line | N | CNI s | topoctl line | topoctl s | CNI s / topoctl s (above 1: topoctl took less time) |",
             "|---|---:|---:|---|---:|---:|"]
    lines += [f"| {r['cni']} | {r['n']} | {r['cni_seconds']:.3f} | {r['topoctl']} | {r['topoctl_seconds']:.3f} "
              f"| {r['ratio']:.2f}x |" for r in rows]
    return "\n".join(lines)
