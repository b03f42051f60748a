"""The kernel layer: netlink sockets for every namespace, and the execution of plan actions.

With netns.py and observe.py, the only code that imports pyroute2. One IPRoute per namespace
is opened on first use (its socket made inside the namespace by a setns thread, no fork) and
kept for the whole run.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import netns as ns
from .actions import (
    Action,
    AddAddress,
    AddFdb,
    AddNeighbour,
    AddRoute,
    CreateBridge,
    CreateNamespace,
    CreateVeth,
    CreateVxlan,
    DeleteAddress,
    DeleteFdb,
    DeleteNeighbour,
    DeleteLink,
    DeleteNamespace,
    DeleteRoute,
    ReplaceRoute,
    SetLink,
    SetSysctl,
)
from .errors import KernelError, PermissionDenied
from .state import Address, Fdb, Link, Neighbour, RouteEntry, Scope, owner_alias, route_record_key, scope_label

NETLINK_ROUTE = 0
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 0x04


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


class Kernel:
    """Netlink sockets by namespace, opened lazily and closed together."""

    def __init__(self) -> None:
        self._rtnl: dict[Scope, IPRoute] = {}
        self._nsids: dict[tuple[Scope, Scope], int | None] = {}
        self.writes = 0  # kernel changes made through this object: a second apply must make none

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rtnl(self, scope: Scope) -> IPRoute:
        ipr = self._rtnl.get(scope)
        if ipr is None:
            if scope is None:
                ipr = IPRoute()
            else:
                sock = ns.run_in_netns(scope, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
                ipr = IPRoute(fileno=sock.detach())
            self._rtnl[scope] = ipr
        return ipr

    def close_scope(self, scope: Scope) -> None:
        """Close our socket in a namespace; an open socket would keep a deleted namespace alive."""
        self._nsids = {k: v for k, v in self._nsids.items() if scope not in k}
        ipr = self._rtnl.pop(scope, None)
        if ipr is not None:
            ipr.close()

    def close(self) -> None:
        for scope in list(self._rtnl):
            self.close_scope(scope)

    # -- lookups -------------------------------------------------------------------------

    def nsid_of(self, seen_from: Scope, target: Scope) -> int | None:
        """The id namespace `seen_from` gives `target` (what veths report as link_netnsid)."""
        key = (seen_from, target)
        if key not in self._nsids:
            fd = ns.open_netns(target)
            try:
                reply = self.rtnl(seen_from).get_netnsid(fd=fd)
            finally:
                os.close(fd)
            nsid = reply.get("nsid") if reply else None
            self._nsids[key] = nsid if nsid is not None and nsid >= 0 else None
        return self._nsids[key]

    def index_of(self, scope: Scope, name: str) -> int:
        found = self.rtnl(scope).link_lookup(ifname=name)
        if not found:
            raise KernelError(f"interface {name} not found in {scope_label(scope)}")
        return found[0]

    def read_sysctl(self, scope: Scope, key: str) -> str | None:
        def read() -> str | None:
            try:
                with open(sysctl_path(key), encoding="ascii") as src:
                    return " ".join(src.read().split())
            except FileNotFoundError:
                return None
        return ns.run_in_netns(scope, read)

    def write_sysctl(self, scope: Scope, key: str, value: str) -> None:
        def write() -> None:
            with open(sysctl_path(key), "w", encoding="ascii") as out:
                out.write(value)
        try:
            ns.run_in_netns(scope, write)
        except FileNotFoundError:
            raise KernelError(f"sysctl {key} does not exist in {scope_label(scope)}",
                              "check its spelling; per-interface keys need the interface to exist") from None
        except OSError as err:
            if err.errno in (errno.EPERM, errno.EACCES):
                raise
            raise KernelError(f"sysctl {key} = {value!r} refused in {scope_label(scope)}: {err.strerror}") from None


def local_addresses() -> set:
    """The addresses of this machine's own namespace (no privileges needed to read them)."""
    import ipaddress

    with IPRoute() as ipr:
        return {ipaddress.ip_address(msg.get("local") or msg.get("address")) for msg in ipr.addr("dump")
                if msg.get("local") or msg.get("address")}


# -- executing actions ---------------------------------------------------------------------

def _link_attrs(link: Link) -> dict:
    attrs: dict = {"mtu": link.mtu} if link.mtu is not None else {}
    if link.mac is not None:
        attrs["address"] = link.mac
    return attrs


def _finish_link(kernel: Kernel, link: Link, topology: str) -> None:
    """Mark a new link as ours, attach it, and set its state: one netlink request."""
    attrs: dict = {"ifalias": owner_alias(topology), "state": "up" if link.up else "down"}
    if link.master is not None:
        attrs["master"] = kernel.index_of(link.scope, link.master)
    kernel.rtnl(link.scope).link("set", index=kernel.index_of(link.scope, link.name), **attrs)


def _create_namespace(kernel: Kernel, action: CreateNamespace, topology: str) -> None:
    name = action.netns.name
    ns.create_netns(name)
    ns.record_netns(name, ns.NetnsRecord(topology, action.netns.host or "", action.netns.role, ns.netns_inode(name)))
    kernel.rtnl(name).link("set", index=kernel.index_of(name, "lo"), state="up")


def _delete_namespace(kernel: Kernel, action: DeleteNamespace, topology: str) -> None:
    kernel.close_scope(action.netns.name)
    ns.delete_netns(action.netns.name)


def _create_bridge(kernel: Kernel, action: CreateBridge, topology: str) -> None:
    link = action.link
    kernel.rtnl(link.scope).link("add", ifname=link.name, kind="bridge", br_stp_state=1 if link.stp else 0,
                                 **_link_attrs(link))
    _finish_link(kernel, link, topology)


def _create_veth(kernel: Kernel, action: CreateVeth, topology: str) -> None:
    first, second = action.ordered()
    peer: dict = {"ifname": second.name, **_link_attrs(second)}
    if second.scope != first.scope:
        peer["net_ns_fd"] = second.scope
    kernel.rtnl(first.scope).link("add", ifname=first.name, kind="veth", peer=peer, **_link_attrs(first))
    _finish_link(kernel, first, topology)
    _finish_link(kernel, second, topology)


def _create_vxlan(kernel: Kernel, action: CreateVxlan, topology: str) -> None:
    link, vx = action.link, action.link.vxlan
    attrs: dict = {"vxlan_id": vx.vni, "vxlan_port": vx.port, "vxlan_learning": 1 if vx.learning else 0}
    if vx.local is not None:
        attrs["vxlan_local" if vx.local.version == 4 else "vxlan_local6"] = str(vx.local)
    if vx.underlay is not None:
        attrs["vxlan_link"] = kernel.index_of(link.scope, vx.underlay)
    kernel.rtnl(link.scope).link("add", ifname=link.name, kind="vxlan", **attrs, **_link_attrs(link))
    _finish_link(kernel, link, topology)


def _neighbour_request(kernel: Kernel, n: Neighbour, verb: str) -> None:
    attrs: dict = {"ifindex": kernel.index_of(n.scope, n.dev), "dst": str(n.ip),
                   "family": socket.AF_INET6 if n.ip.version == 6 else socket.AF_INET}
    if verb != "del":
        attrs.update(lladdr=n.mac, state=NUD_PERMANENT)
    kernel.rtnl(n.scope).neigh(verb, **attrs)


def _fdb_request(kernel: Kernel, f: Fdb, verb: str) -> None:
    kernel.rtnl(f.scope).fdb(verb, ifindex=kernel.index_of(f.scope, f.dev), lladdr=f.mac, dst=str(f.dst))


def _delete_link(kernel: Kernel, action: DeleteLink, topology: str) -> None:
    link = action.link
    try:
        kernel.rtnl(link.scope).link("del", index=kernel.index_of(link.scope, link.name))
    except KernelError:
        pass  # already gone with its veth peer or its namespace: the goal is met
    except NetlinkError as err:
        if err.code != errno.ENODEV:
            raise


def _set_link(kernel: Kernel, action: SetLink, topology: str) -> None:
    link = action.link
    index = kernel.index_of(link.scope, link.name)
    attrs: dict = {}
    for change in action.changes:
        if change.attribute == "mtu":
            attrs["mtu"] = change.new
        elif change.attribute == "mac":
            attrs["address"] = change.new
        elif change.attribute == "master":
            attrs["master"] = kernel.index_of(link.scope, change.new) if change.new else 0
        elif change.attribute == "up":
            attrs["state"] = "up" if change.new else "down"
        elif change.attribute == "stp":
            kernel.rtnl(link.scope).link("set", index=index, kind="bridge", br_stp_state=1 if change.new else 0)
        elif change.attribute == "local":
            key = "vxlan_local" if change.new.version == 4 else "vxlan_local6"
            kernel.rtnl(link.scope).link("set", index=index, kind="vxlan", **{key: str(change.new)})
        elif change.attribute == "learning":
            kernel.rtnl(link.scope).link("set", index=index, kind="vxlan", vxlan_learning=1 if change.new else 0)
        elif change.attribute == "underlay":
            kernel.rtnl(link.scope).link("set", index=index, kind="vxlan",
                                         vxlan_link=kernel.index_of(link.scope, change.new))
    if attrs:
        kernel.rtnl(link.scope).link("set", index=index, **attrs)


def _set_sysctl(kernel: Kernel, action: SetSysctl, topology: str) -> None:
    if action.new is None:
        return
    kernel.write_sysctl(action.scope, action.key, action.new)


def _address_request(kernel: Kernel, address: Address, verb: str) -> None:
    interface = address.interface
    attrs: dict = {"index": kernel.index_of(address.scope, address.link), "address": str(interface.ip),
                   "prefixlen": interface.network.prefixlen}
    if interface.version == 6 and verb == "add":
        attrs["flags"] = IFA_F_NODAD  # usable at once; duplicates are caught by validate, not DAD
    kernel.rtnl(address.scope).addr(verb, **attrs)


def _route_request(kernel: Kernel, route: RouteEntry, verb: str) -> None:
    attrs: dict = {"family": socket.AF_INET6 if route.dst.version == 6 else socket.AF_INET,
                   "dst": str(route.dst.network_address), "dst_len": route.dst.prefixlen,
                   "table": route.table, "priority": route.metric, "proto": route.proto}
    if route.dst.prefixlen == 0:
        del attrs["dst"]
    if verb != "del":
        if route.via is not None:
            attrs["gateway"] = str(route.via)
        if route.dev is not None:
            attrs["oif"] = kernel.index_of(route.scope, route.dev)
        if route.onlink:
            attrs["flags"] = RTNH_F_ONLINK
    kernel.rtnl(route.scope).route(verb, **attrs)
    if route.scope is None:
        ns.record_root_route(route.owner or "", route_record_key(route), present=verb != "del")


_EXECUTORS: dict[type, Callable[[Kernel, Action, str], None]] = {
    CreateNamespace: _create_namespace,
    DeleteNamespace: _delete_namespace,
    CreateBridge: _create_bridge,
    CreateVeth: _create_veth,
    DeleteLink: _delete_link,
    SetLink: _set_link,
    SetSysctl: _set_sysctl,
    AddAddress: lambda k, a, t: _address_request(k, a.address, "add"),
    DeleteAddress: lambda k, a, t: _address_request(k, a.address, "del"),
    AddRoute: lambda k, a, t: _route_request(k, a.route, "replace" if a.replace else "add"),
    ReplaceRoute: lambda k, a, t: _route_request(k, a.new, "replace"),
    DeleteRoute: lambda k, a, t: _route_request(k, a.route, "del"),
    CreateVxlan: _create_vxlan,
    AddNeighbour: lambda k, a, t: _neighbour_request(k, a.neighbour, "replace"),
    DeleteNeighbour: lambda k, a, t: _neighbour_request(k, a.neighbour, "del"),
    AddFdb: lambda k, a, t: _fdb_request(k, a.fdb, "append"),
    DeleteFdb: lambda k, a, t: _fdb_request(k, a.fdb, "del"),
}


def execute(kernel: Kernel, action: Action, topology: str) -> None:
    """Carry out one action; kernel refusals become KernelError naming the action."""
    try:
        _EXECUTORS[type(action)](kernel, action, topology)
    except NetlinkError as err:
        code = err.code
        reason = os.strerror(code) if code > 0 else str(err)
        if code in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"{action.verb} {action.subject()}: {reason}",
                                   "changing network state needs CAP_NET_ADMIN (run as root)") from None
        raise KernelError(f"{action.verb} {action.subject()}: {reason}") from None
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"{action.verb} {action.subject()}: {err.strerror}", "run as root") from None
        raise KernelError(f"{action.verb} {action.subject()}: {err.strerror or err}") from None
    finally:
        kernel.writes += 1
