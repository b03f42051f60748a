"""The execution of plan actions: one executor per action type (execute), and runs of
actions done together (execute_run: new namespaces, sysctls)."""

from __future__ import annotations

import errno
import functools
import os
import socket
import time
import contextlib
from dataclasses import replace as dataclass_replace
from typing import Callable, Iterator

from topoctl.kernel import namespaces as ns
from topoctl.kernel import nft
from topoctl.core.table_actions import ClearRate, DeleteTable, SetRate, WriteTable
from topoctl.store import records
from topoctl.kernel.sockets import Kernel
from topoctl.kernel.sysctls import set_sysctl, set_sysctls
from topoctl.core.actions import (
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
    DeleteLink,
    DeleteNamespace,
    DeleteNeighbour,
    DeleteRoute,
    ReplaceRoute,
    SetLink,
    SetSysctl,
)
from topoctl.core.kabi import AF_BRIDGE, NUD_PERMANENT, RTNH_F_ONLINK
from topoctl.errors import KernelError, Missing, PermissionDenied, TopoctlError
from topoctl.kernel.rtnl import (
    IFA_F_NODAD,
    IFLA_ADDRESS,
    IFLA_BR_STP_STATE,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    IFLA_VXLAN_ID,
    IFLA_VXLAN_LEARNING,
    IFLA_VXLAN_LINK,
    IFLA_VXLAN_LOCAL,
    IFLA_VXLAN_LOCAL6,
    IFLA_VXLAN_PORT,
    NTF_SELF,
    NUD_NOARP,
    VETH_INFO_PEER,
    NetlinkError,
    Rtnl,
    attr,
    attr_str,
    attr_u8,
    attr_u32,
    ifinfo,
    mac_bytes,
    nest,
)
from topoctl.core.state import (
    Address,
    Fdb,
    Link,
    Neighbour,
    RouteEntry,
    State,
    owner_alias,
    route_record_key,
)


# -- executing actions ---------------------------------------------------------------------

def _link_attrs(link: Link) -> bytes:
    out = attr_u32(IFLA_MTU, link.mtu) if link.mtu is not None else b""
    if link.mac is not None:
        out += attr(IFLA_ADDRESS, mac_bytes(link.mac))
    return out


@contextlib.contextmanager
def _whole(kernel: Kernel, *created: Link) -> Iterator[None]:
    """Links just made, then finished (marked, attached, set up). Their names are looked up
    afresh: an index remembered for the same name may belong to a link that has gone since
    (a veth end whose peer's namespace was deleted). If finishing fails, the links go again,
    so that a failed step leaves nothing unmarked behind (deleting one end of a veth deletes
    the pair)."""
    for link in created:
        kernel.forget(link.scope, link.name)
    try:
        yield
    except BaseException:  # a kernel refusal (NetlinkError is an OSError), a lookup, an interruption
        for link in created:
            try:
                index = kernel.rtnl(link.scope).link_index(link.name)
                if index is not None:
                    kernel.rtnl(link.scope).link_del(index)
            except (OSError, TopoctlError):
                pass  # the step's own error is the one to report
            kernel.forget(link.scope, link.name)
        raise


def _finish_link(kernel: Kernel, link: Link, topology: str, mtu: int | None = None) -> None:
    """Mark a new link as ours, attach it, and set its state (and `mtu`): one netlink request."""
    attributes = attr_str(IFLA_IFALIAS, owner_alias(topology))
    if mtu is not None:
        attributes += attr_u32(IFLA_MTU, mtu)
    if link.master is not None:
        attributes += attr_u32(IFLA_MASTER, kernel.index_of(link.scope, link.master))
    kernel.rtnl(link.scope).link_set(kernel.index_of(link.scope, link.name), up=link.up, attributes=attributes)


def _create_namespace(kernel: Kernel, action: CreateNamespace, topology: str) -> None:
    try:
        create_namespaces(kernel, [action], topology)
    except ns.Partial as partial:
        raise partial.error from None


def create_namespaces(kernel: Kernel, actions: list[CreateNamespace], topology: str) -> int:
    """Several CreateNamespace actions at once: each namespace is made, recorded as ours and
    its lo set up by a thread that is inside it, with the socket kept for the rest of the run
    (ns.create_netns_many: two threads where there are two CPUs). Returns how many were made;
    raises ns.Partial (`done`: the first actions' namespaces, by name) when one fails."""
    wanted = {a.netns.name: a for a in actions}
    kernel.make_room(len(actions))

    def finish_inside(name: str) -> Rtnl:
        handle = Rtnl.open()  # here, so in the new namespace
        try:
            action = wanted[name]
            records.record_netns(name, records.NetnsRecord(topology, action.netns.host or "", action.netns.role,
                                                 ns.netns_inode(name)))
            handle.link_set(1, up=True)  # lo is always index 1 in a new namespace
        except OSError as err:  # a refused request, a record that cannot be written
            _undo(name, handle)
            raise KernelError(f"create namespace {name}: {err.strerror or err}") from None
        except BaseException:
            _undo(name, handle)
            raise
        return handle

    def _undo(name: str, handle: Rtnl) -> None:  # the namespace goes again: so do its socket and record
        handle.close()
        records.forget_netns(name)

    try:
        handles = ns.create_netns_many(list(wanted), finish_inside, undo=_undo)
    except ns.Partial as partial:
        for name, handle in partial.done.items():
            kernel.take_socket(name, handle)
        kernel.writes += len(partial.done)
        raise
    for name, handle in handles.items():
        kernel.take_socket(name, handle)
    kernel.writes += len(actions)
    return len(actions)


def _delete_namespace(kernel: Kernel, action: DeleteNamespace, topology: str) -> None:
    kernel.close_scope(action.netns.name)
    ns.delete_netns(action.netns.name)
    records.forget_netns(action.netns.name)


def _create_bridge(kernel: Kernel, action: CreateBridge, topology: str) -> None:
    link = action.link
    kernel.rtnl(link.scope).link_add(link.name, "bridge", _link_attrs(dataclass_replace(link, mtu=action.provisional_mtu())),
                                     attr_u32(IFLA_BR_STP_STATE, 1 if link.stp else 0))
    with _whole(kernel, link):
        _finish_link(kernel, link, topology, mtu=link.mtu)  # pins the MTU: see provisional_mtu()


def _create_veth(kernel: Kernel, action: CreateVeth, topology: str) -> None:
    first, second = action.ordered()
    peer = attr_str(IFLA_IFNAME, second.name) + _link_attrs(second)
    fd = None
    if second.scope != first.scope:
        fd = ns.open_netns(second.scope)
        peer += attr_u32(IFLA_NET_NS_FD, fd)
    try:
        kernel.rtnl(first.scope).link_add(first.name, "veth", _link_attrs(first), nest(VETH_INFO_PEER, ifinfo() + peer))
    finally:
        if fd is not None:
            os.close(fd)
    with _whole(kernel, first, second):
        _finish_link(kernel, first, topology)
        _finish_link(kernel, second, topology)


def _vxlan_local(address) -> bytes:
    return attr(IFLA_VXLAN_LOCAL if address.version == 4 else IFLA_VXLAN_LOCAL6, address.packed)


def _create_vxlan(kernel: Kernel, action: CreateVxlan, topology: str) -> None:
    link, vx = action.link, action.link.vxlan
    data = (attr_u32(IFLA_VXLAN_ID, vx.vni) + attr(IFLA_VXLAN_PORT, vx.port.to_bytes(2, "big"))
            + attr_u8(IFLA_VXLAN_LEARNING, 1 if vx.learning else 0))
    if vx.local is not None:
        data += _vxlan_local(vx.local)
    if vx.underlay is not None:
        data += attr_u32(IFLA_VXLAN_LINK, kernel.index_of(link.scope, vx.underlay))
    kernel.rtnl(link.scope).link_add(link.name, "vxlan", _link_attrs(link), data)
    with _whole(kernel, link):
        _finish_link(kernel, link, topology)


def _neighbour_request(kernel: Kernel, n: Neighbour, verb: str) -> None:
    family = socket.AF_INET6 if n.ip.version == 6 else socket.AF_INET
    kernel.rtnl(n.scope).neighbour(verb, family, kernel.index_of(n.scope, n.dev), n.ip.packed,
                                   n.mac if verb != "del" else None)


def _fdb_request(kernel: Kernel, f: Fdb, verb: str) -> None:
    kernel.rtnl(f.scope).neighbour(verb, AF_BRIDGE, kernel.index_of(f.scope, f.dev), f.dst.packed, f.mac,
                                   state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)


def _delete_link(kernel: Kernel, action: DeleteLink, topology: str) -> None:
    link = action.link
    try:
        kernel.rtnl(link.scope).link_del(kernel.index_of(link.scope, link.name))
    except Missing:
        pass  # already gone with its veth peer or its namespace: the goal is met
    except NetlinkError as err:
        if err.code != errno.ENODEV:
            raise
    kernel.forget(link.scope, link.name)
    if link.kind == "veth" and link.peer is not None:
        kernel.forget(*link.peer)


def _set_link(kernel: Kernel, action: SetLink, topology: str) -> None:
    link = action.link
    index = kernel.index_of(link.scope, link.name)
    attributes, up, vxlan = b"", None, b""
    for change in action.changes:
        if change.attribute == "mtu":
            attributes += attr_u32(IFLA_MTU, change.new)
        elif change.attribute == "mac":
            attributes += attr(IFLA_ADDRESS, mac_bytes(change.new))
        elif change.attribute == "master":
            attributes += attr_u32(IFLA_MASTER, kernel.index_of(link.scope, change.new) if change.new else 0)
        elif change.attribute == "up":
            up = bool(change.new)
        elif change.attribute == "stp":
            kernel.rtnl(link.scope).link_set(index, kind="bridge",
                                             data=attr_u32(IFLA_BR_STP_STATE, 1 if change.new else 0))
        elif change.attribute == "local":
            vxlan += _vxlan_local(change.new)
        elif change.attribute == "learning":
            vxlan += attr_u8(IFLA_VXLAN_LEARNING, 1 if change.new else 0)
        elif change.attribute == "underlay":
            vxlan += attr_u32(IFLA_VXLAN_LINK, kernel.index_of(link.scope, change.new))
    if vxlan:
        kernel.rtnl(link.scope).link_set(index, kind="vxlan", data=vxlan)
    if attributes or up is not None:
        request = functools.partial(kernel.rtnl(link.scope).link_set, index, up=up, attributes=attributes)
        if any(change.attribute == "mac" for change in action.changes):
            ns.run_in_netns(link.scope, lambda: _announcing(link.name, request))
        else:
            request()


# Neighbours keep an old MAC until their entry expires (tens of seconds); with these on
# for the change, the kernel tells them the new one (gratuitous ARP, unsolicited NA).
_ANNOUNCE = ("/proc/sys/net/ipv4/conf/{}/arp_notify", "/proc/sys/net/ipv6/conf/{}/ndisc_notify")


def _swap_key(path: str, value: str) -> str:
    with open(path, "r+", encoding="ascii") as key:
        old = key.read().strip()
        key.seek(0)
        key.write(value)
    return old


def _announcing(name: str, request: Callable[[], None]) -> None:
    """Run `request` (a MAC change) with the interface's announcements on, inside its namespace.
    Best effort: a key that cannot be written (no IPv6) costs only its announcement."""
    saved = {}
    for path in (template.format(name) for template in _ANNOUNCE):
        with contextlib.suppress(OSError):
            saved[path] = _swap_key(path, "1")
    try:
        request()
    finally:
        for path, value in saved.items():
            with contextlib.suppress(OSError):
                _swap_key(path, value)


BATCHED = (CreateNamespace, SetSysctl)  # a run of consecutive actions of one of these types is done together


def execute_run(kernel: Kernel, run: list[Action], topology: str) -> None:
    """Carry out a run of actions of one type in BATCHED, together. Raises ns.Partial, whose
    error is a TopoctlError naming the action that failed, after the first len(`done`) were done."""
    if isinstance(run[0], SetSysctl):
        try:
            kernel.writes += set_sysctls(kernel, run, topology)
        except ns.Partial as partial:
            kernel.writes += len(partial.done) + 1
            raise
        return
    try:
        create_namespaces(kernel, run, topology)
    except ns.Partial as partial:
        made = len(partial.done)
        error = partial.error if isinstance(partial.error, TopoctlError) else KernelError(
            f"create namespace {run[made].netns.name}: {partial.error}")
        raise ns.Partial(partial.done, error) from None


def _address_request(kernel: Kernel, address: Address, add: bool) -> None:
    interface = address.interface
    family = socket.AF_INET6 if interface.version == 6 else socket.AF_INET
    # IPv6 addresses are usable at once: duplicates are caught by validate, not by DAD.
    flags = IFA_F_NODAD if interface.version == 6 and add else 0
    kernel.rtnl(address.scope).address(add, kernel.index_of(address.scope, address.link), family,
                                       interface.network.prefixlen, interface.ip.packed, flags)


def _route_request(kernel: Kernel, route: RouteEntry, verb: str) -> None:
    family = socket.AF_INET6 if route.dst.version == 6 else socket.AF_INET
    gateway = route.via.packed if route.via is not None and verb != "del" else None
    oif = kernel.index_of(route.scope, route.dev) if route.dev is not None and verb != "del" else None
    kernel.rtnl(route.scope).route(verb, family, route.dst.network_address.packed, route.dst.prefixlen, route.table,
                                   route.proto, route.metric, gateway, oif,
                                   RTNH_F_ONLINK if route.onlink and verb != "del" else 0)
    if route.scope is None:
        records.record_root_route(route.owner or "", route_record_key(route), present=verb != "del")


_EXECUTORS: dict[type, Callable[[Kernel, Action, str], None]] = {
    CreateNamespace: _create_namespace,
    DeleteNamespace: _delete_namespace,
    CreateBridge: _create_bridge,
    CreateVeth: _create_veth,
    DeleteLink: _delete_link,
    SetLink: _set_link,
    SetSysctl: set_sysctl,
    AddAddress: lambda k, a, t: _address_request(k, a.address, True),
    DeleteAddress: lambda k, a, t: _address_request(k, a.address, False),
    AddRoute: lambda k, a, t: _route_request(k, a.route, "replace" if a.replace else "add"),
    ReplaceRoute: lambda k, a, t: _route_request(k, a.new, "replace"),
    DeleteRoute: lambda k, a, t: _route_request(k, a.route, "del"),
    CreateVxlan: _create_vxlan,
    AddNeighbour: lambda k, a, t: _neighbour_request(k, a.neighbour, "replace"),
    DeleteNeighbour: lambda k, a, t: _neighbour_request(k, a.neighbour, "del"),
    AddFdb: lambda k, a, t: _fdb_request(k, a.fdb, "append"),
    DeleteFdb: lambda k, a, t: _fdb_request(k, a.fdb, "del"),
    WriteTable: lambda k, a, t: _write_table(a, t),
    DeleteTable: lambda k, a, t: _delete_table(a, t),
    SetRate: lambda k, a, t: _set_rate(a, t),
    ClearRate: lambda k, a, t: _clear_rate(a),
}


def _set_rate(action: SetRate, topology: str) -> None:
    from topoctl.kernel import tc  # pyroute2's tbf encoding: only where a rate is involved

    records.record_table_scope(topology, action.scope, present=True)  # read back once the file drops it
    tc.set_tbf(action.scope, action.dev, action.new.rate, action.new.requested_burst)


def _clear_rate(action: ClearRate) -> None:
    from topoctl.kernel import tc

    tc.clear_root_qdisc(action.scope, action.dev)


def _write_table(action: WriteTable, topology: str) -> None:
    records.record_table_scope(topology, action.scope, present=True)  # first: a kill between leaves it findable
    nft.write_table(action.new)


def _delete_table(action: DeleteTable, topology: str) -> None:
    # The namespace stays in the record (it may hold the table of another family): reading a
    # namespace with no table of ours costs one `list tables`.
    nft.delete_table(action.old)


def execute(kernel: Kernel, action: Action, topology: str) -> None:
    """Carry out one action; kernel refusals become KernelError naming the action."""
    try:
        _EXECUTORS[type(action)](kernel, action, topology)
    except NetlinkError as err:
        code = err.code
        reason = f"{os.strerror(code)} ({err.message})" if err.message else os.strerror(code)
        if code in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"{action.verb} {action.subject()}: {reason}",
                                   "changing network state needs CAP_NET_ADMIN (run as root)") from None
        raise KernelError(f"{action.verb} {action.subject()}: {reason}") from None
    except KernelError as err:  # a reply that could not be trusted, a lookup: name the step
        named = f"{action.verb} {action.subject()}"
        if err.message.startswith(named):
            raise
        raise type(err)(f"{named}: {err.message}", err.hint) from None
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"{action.verb} {action.subject()}: {err.strerror}", "run as root") from None
        raise KernelError(f"{action.verb} {action.subject()}: {err.strerror or err}") from None
    finally:
        kernel.writes += 1


SETTLE_TIMEOUT = 10.0


def settle(kernel: Kernel, deleted: list[str], live: State) -> None:
    """Wait until the kernel has finished deleting namespaces (it does so asynchronously):
    veth ends whose peers were inside them vanish only then, and a plan made before that
    would see them."""
    waiting = [link for link in live.links.values()
               if link.kind == "veth" and link.peer is not None and link.peer[0] in deleted
               and link.scope not in deleted]
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while waiting and time.monotonic() < deadline:
        remaining = []
        for link in waiting:
            try:
                if kernel.rtnl(link.scope).link_index(link.name) is not None:
                    remaining.append(link)
            except Missing:
                pass  # its own namespace is gone too
        waiting = remaining
        if waiting:
            time.sleep(0.01)
