"""The floor: a minimal hand-written pyroute2 program issuing the same kernel operations as
topoctl's apply (and destroy) of the benchmark topology, with no planning, no observation
and no verification.

Two ways of reaching namespaces, both measured:
- `setns` (the default): one netlink socket per namespace opened by a thread that setns()s
  into it, handed to IPRoute(fileno=...) -- the best a Python program can do with pyroute2;
- `netns`: pyroute2's own IPRoute(netns=NAME) and netns.create(), which fork per namespace --
  what the pyroute2 documentation shows.

    python -m bench.floor build|teardown N TAG [--via setns|netns]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import threading

from pyroute2 import IPRoute, netns

from .topology import BenchTopology

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
libc = ctypes.CDLL(None, use_errno=True)


def _in_thread(fn):
    box = {}

    def run():
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            box["r"] = fn()
        finally:
            libc.setns(own, CLONE_NEWNET)
            os.close(own)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return box["r"]


def create_ns_setns(name: str) -> None:
    path = f"/run/netns/{name}"
    os.makedirs("/run/netns", exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))

    def make():
        assert libc.unshare(CLONE_NEWNET) == 0
        assert libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) == 0

    _in_thread(make)


def open_setns(name: str) -> IPRoute:
    def make():
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            assert libc.setns(fd, CLONE_NEWNET) == 0
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        finally:
            os.close(fd)

    return IPRoute(fileno=_in_thread(make).detach())


def build(t: BenchTopology, via: str) -> None:
    create = create_ns_setns if via == "setns" else (lambda name: netns.create(name))
    open_ns = open_setns if via == "setns" else (lambda name: IPRoute(netns=name))
    create(t.host_ns)
    for i in range(t.n):
        create(t.container(i))
    host = open_ns(t.host_ns)
    host.link("set", index=host.link_lookup(ifname="lo")[0], state="up")
    host.link("add", ifname="br0", kind="bridge", br_stp_state=0, mtu=1500)
    br = host.link_lookup(ifname="br0")[0]
    host.link("set", index=br, ifalias=f"topoctl:{t.name}", state="up")
    host.addr("add", index=br, address=str(t.gateway.ip), prefixlen=t.gateway.network.prefixlen)
    for i in range(t.n):
        name = t.container(i)
        inner = open_ns(name)
        inner.link("set", index=inner.link_lookup(ifname="lo")[0], state="up")
        host.link("add", ifname=t.port(i), kind="veth", mtu=1500,
                  peer={"ifname": "eth0", "mtu": 1500, "net_ns_fd": name})
        port = host.link_lookup(ifname=t.port(i))[0]
        host.link("set", index=port, ifalias=f"topoctl:{t.name}", master=br, state="up")
        eth0 = inner.link_lookup(ifname="eth0")[0]
        inner.link("set", index=eth0, ifalias=f"topoctl:{t.name}", state="up")
        address = t.address(i)
        inner.addr("add", index=eth0, address=str(address.ip), prefixlen=address.network.prefixlen)
        inner.route("add", dst="0.0.0.0/0", gateway=str(t.gateway.ip), oif=eth0, proto=116)
        inner.close()
    host.close()


def teardown(t: BenchTopology, via: str) -> None:
    for name in [t.container(i) for i in range(t.n)] + [t.host_ns]:
        netns.remove(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["build", "teardown"])
    parser.add_argument("n", type=int)
    parser.add_argument("tag")
    parser.add_argument("--via", choices=["setns", "netns"], default="setns")
    args = parser.parse_args()
    t = BenchTopology(args.n, args.tag)
    (build if args.what == "build" else teardown)(t, args.via)


if __name__ == "__main__":
    main()
