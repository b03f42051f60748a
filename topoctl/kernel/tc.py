"""Traffic control: the tbf root qdisc that gives a veth end its `rate`, read and written.

Part of the kernel layer. The requests go through topoctl's own rtnetlink client (`Rtnl`) on a
socket opened inside the namespace by a thread that setns()s there, like every other request
(namespaces.run_in_each(), run_in_netns(); no fork). pyroute2 encodes and decodes what is
tc's own, the TCA_OPTIONS of a tbf (its `sched_tbf.options` class, with the attributes its map
lacks added: TCA_TBF_RATE64 and TCA_TBF_BURST); it is imported on first use only, since it
costs about 0.2 s and most topologies declare no rate.

Why not pyroute2's IPRoute and its tc('replace', 'tbf', ...) (TC_NOTES.md has the details):
- IPRoute makes its socket lazily, per thread, in whatever namespace the thread using it is in.
  Made and used inside a setns thread it works (checked in tests/integration/test_tc.py), but
  the same object used from another thread silently opens a second socket in that thread's
  namespace: the root one, for the main thread, where a qdisc meant for a container's eth0 would
  land on the machine's interface of the same index;
- its tbf encoder truncates the bucket time (burst 1514 at 10mbit becomes a bucket of 1513
  bytes, and every full-size frame is dropped), sends no TCA_TBF_BURST and no TCA_TBF_RATE64
  (a rate from 34.4 gbit raises struct.error), and its decoder drops TCA_TBF_RATE64 (a 100gbit
  tbf reads as 34.36 gbit).

Values are plain: rates in bits per second, sizes in bytes, `Tbf` exactly as the kernel
reports it, which is what tbf_for() predicts from the file's values (topoctl.spec.rates).
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
from dataclasses import dataclass
from typing import Callable, TypeVar, Union

from topoctl.core.state import Scope  # a namespace's name; None: the root namespace
from topoctl.errors import KernelError, Missing, PermissionDenied
from topoctl.kernel import namespaces as ns
from topoctl.kernel.rtnl import F_CREATE, F_REPLACE, Malformed, NetlinkError, Rtnl, attr_str, attrs
from topoctl.spec import rates

T = TypeVar("T")

RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
TC_H_ROOT = 0xFFFFFFFF
TCA_KIND, TCA_OPTIONS = 1, 2
TC_LINKLAYER_ETHERNET = 1  # tc's default; with it the kernel needs no rate table (TCA_TBF_RTAB)
_TCMSG = struct.Struct("=BBHiIII")  # struct tcmsg: family, pads, ifindex, handle, parent, info
_NLA = struct.Struct("=HH")
_QOPT_SIZE = 36  # struct tc_tbf_qopt: two tc_ratespec of 12 bytes, limit, buffer, mtu

DEFAULT_LATENCY_MS = rates.DEFAULT_LATENCY_MS


@dataclass(frozen=True)
class Tbf:
    """A tbf root qdisc as the kernel reports it, and as set_tbf() writes it (tbf_for())."""

    rate: int  # bits per second: a multiple of 8, the kernel keeping bytes per second
    burst: int  # bytes the bucket holds, from the time the kernel reports (rates.canonical_burst)
    limit: int  # bytes the queue holds; tc's "latency" is (limit - burst) / rate


@dataclass(frozen=True)
class OtherQdisc:
    """A root qdisc that topoctl did not make: another kind, or a tbf with settings topoctl never
    writes (a peak rate, an overhead, an mpu, a link layer other than Ethernet)."""

    kind: str
    handle: int
    detail: str = ""


RootQdisc = Union[Tbf, OtherQdisc, None]  # None: the kernel's default (noqueue on a veth), handle 0


def tbf_for(rate_bps: int, burst: int, latency_ms: int = DEFAULT_LATENCY_MS) -> Tbf:
    """The Tbf that set_tbf() with these values leaves, as read_tbf() reads it back."""
    return Tbf(rates.canonical_rate(rate_bps), rates.canonical_burst(rate_bps, burst),
               rates.tbf_limit(rate_bps, burst, latency_ms))


# -- pyroute2's tbf options ----------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _options_class():
    """pyroute2's tbf options with the whole of the kernel's attribute list (its own stops at
    TCA_TBF_PTAB), imported here, on first use, rather than at start-up."""
    from pyroute2.netlink.rtnl.tcmsg import sched_tbf

    class TbfOptions(sched_tbf.options):
        nla_map = (
            ("TCA_TBF_UNSPEC", "none"),
            ("TCA_TBF_PARMS", "tbf_parms"),
            ("TCA_TBF_RTAB", "rtab"),
            ("TCA_TBF_PTAB", "ptab"),
            ("TCA_TBF_RATE64", "uint64"),
            ("TCA_TBF_PRATE64", "uint64"),
            ("TCA_TBF_BURST", "uint32"),
            ("TCA_TBF_PBURST", "uint32"),
            ("TCA_TBF_PAD", "hex"),
        )

    return TbfOptions


def tbf_options(rate_bps: int, burst: int, limit: int) -> bytes:
    """TCA_OPTIONS of a tbf as tc sends it: the parameters, the burst in bytes (so the kernel
    computes the bucket's time itself and lets packets of `burst` bytes pass), the rate in 64
    bits from 2**32 bytes per second. No rate table: the link layer is given."""
    rate = rates.rate_bytes(rate_bps)
    parms = {"rate": min(rate, rates.U32), "rate___reserved": TC_LINKLAYER_ETHERNET,  # linklayer
             "limit": limit, "buffer": min(rates.tc_ticks(rate_bps, burst), rates.U32), "peak": 0, "mtu": 0}
    options = _options_class()()
    options["header"]["type"] = TCA_OPTIONS
    options["attrs"] = [["TCA_TBF_PARMS", parms], ["TCA_TBF_BURST", burst]]
    if rate > rates.U32:
        options["attrs"].append(["TCA_TBF_RATE64", rate])
    options.encode()
    return bytes(options.data[:options.length])


def _decode_tbf(payload: bytes, handle: int) -> Tbf | OtherQdisc:
    """A tbf's TCA_OPTIONS (without its header) as a Tbf, or an OtherQdisc for one with settings
    of its own; Malformed if it is not what the kernel sends."""
    try:
        options = _options_class()(_NLA.pack(_NLA.size + len(payload), TCA_OPTIONS) + payload)
        options.decode()
        parms = options.get_attr("TCA_TBF_PARMS")
        rate64 = options.get_attr("TCA_TBF_RATE64")
        prate64 = options.get_attr("TCA_TBF_PRATE64")
    except Exception as err:  # noqa: BLE001 - pyroute2's decoder: whatever it raises, nothing is trusted
        raise Malformed(f"a tbf's options could not be decoded ({type(err).__name__}: {err})") from None
    # pyroute2 decodes leniently: an attribute of the wrong size comes back as its raw bytes
    if getattr(parms, "length", None) != _NLA.size + _QOPT_SIZE:
        raise Malformed("a tbf without its parameters (TCA_TBF_PARMS of 36 bytes)")
    for name, value in (("TCA_TBF_RATE64", rate64), ("TCA_TBF_PRATE64", prate64)):
        if value is not None and not isinstance(value, int):
            raise Malformed(f"a tbf's {name} is not a 64-bit number")
    if parms["peak"] or prate64 or parms["mtu"]:
        return OtherQdisc("tbf", handle, "with a peak rate (or its mtu)")
    if parms["rate___reserved"] != TC_LINKLAYER_ETHERNET or parms["rate_overhead"] or parms["rate_mpu"]:
        return OtherQdisc("tbf", handle, "with a link layer, overhead or mpu of its own")
    rate_bps = (rate64 if rate64 is not None else parms["rate"]) * 8
    return Tbf(rate_bps, rates.burst_of_ticks(rate_bps, parms["buffer"]), parms["limit"])


def _root_qdisc(buf: bytes, offset: int, end: int) -> tuple[int, Tbf | OtherQdisc] | None:
    """One message of a qdisc dump: (interface index, what it is) for a root qdisc of its own,
    None for the rest (a child, ingress, the kernel's default root with handle 0)."""
    if end - offset < _TCMSG.size:
        raise Malformed(f"a qdisc message of {end - offset} bytes, shorter than its {_TCMSG.size}-byte header")
    _, _, _, index, handle, parent, _ = _TCMSG.unpack_from(buf, offset)
    if parent != TC_H_ROOT or handle == 0:
        return None
    found = attrs(buf, offset + _TCMSG.size, end)
    kind = found.get(TCA_KIND)
    if kind is None:
        raise Malformed("a qdisc without its kind (TCA_KIND)")
    name = bytes(kind).split(b"\0", 1)[0].decode("ascii", "replace")
    if name != "tbf":
        return index, OtherQdisc(name, handle)
    options = found.get(TCA_OPTIONS)
    if options is None:
        raise Malformed("a tbf without its options (TCA_OPTIONS)")
    return index, _decode_tbf(bytes(options), handle)


# -- on a socket: for whoever holds one per namespace (sockets.Kernel) ---------------------

def root_qdiscs(rtnl: Rtnl) -> dict[int, Tbf | OtherQdisc]:
    """The root qdiscs of every interface of the socket's namespace that has one of its own, by
    interface index (an interface left out has the kernel's default). KernelError if the dump
    cannot be trusted."""
    found: dict[int, Tbf | OtherQdisc] = {}
    for item in rtnl.dump(RTM_GETQDISC, _TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0), _root_qdisc):
        if item is not None:
            found[item[0]] = item[1]
    return found


def replace_tbf(rtnl: Rtnl, index: int, rate_bps: int, burst: int, limit: int) -> None:
    """Make the interface's root qdisc this tbf: created, changed in place if it is a tbf
    already, or put in place of another kind. NetlinkError if the kernel refuses."""
    body = _TCMSG.pack(socket.AF_UNSPEC, 0, 0, index, 0, TC_H_ROOT, 0) + attr_str(TCA_KIND, "tbf")
    rtnl.call(RTM_NEWQDISC, F_CREATE | F_REPLACE, body + tbf_options(rate_bps, burst, limit))


def delete_root_qdisc(rtnl: Rtnl, index: int) -> bool:
    """Delete the interface's root qdisc, whatever its kind; False if it had none of its own
    (the kernel answers ENOENT, "Cannot delete qdisc with handle of zero")."""
    try:
        rtnl.call(RTM_DELQDISC, 0, _TCMSG.pack(socket.AF_UNSPEC, 0, 0, index, 0, TC_H_ROOT, 0))
    except NetlinkError as err:
        if err.code == errno.ENOENT:
            return False
        raise
    return True


# -- by namespace and interface name -------------------------------------------------------

def _label(scope: Scope) -> str:
    return scope if scope is not None else "the root namespace"


def _refused(err: NetlinkError, doing: str) -> KernelError:
    reason = os.strerror(err.code) + (f" ({err.message})" if err.message else "")
    if err.code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{doing}: {reason}", "traffic control needs CAP_NET_ADMIN (run as root)")
    hints = {errno.ENOENT: "the kernel may lack the tbf qdisc: `modprobe sch_tbf` (CONFIG_NET_SCH_TBF)",
             errno.EINVAL: "the kernel refused these tbf parameters; its reason is in parentheses, if it gave one"}
    return KernelError(f"{doing}: {reason}", hints.get(err.code, ""))


def _guarded(doing: str, fn: Callable[[Rtnl], T]) -> T:
    """fn(rtnl) on a socket opened here, by the calling thread, in its namespace; the kernel's
    refusals and replies that cannot be trusted become KernelErrors saying what was being done."""
    rtnl = Rtnl.open()
    try:
        return fn(rtnl)
    except NetlinkError as err:
        raise _refused(err, doing) from None
    except KernelError as err:
        if isinstance(err, (Missing, PermissionDenied)) or err.message.startswith(doing):
            raise
        raise KernelError(f"{doing}: {err.message}", err.hint) from None
    finally:
        rtnl.close()


def _in_scope(scope: Scope, doing: str, fn: Callable[[Rtnl], T]) -> T:
    """_guarded() in a thread that has entered the namespace (None: here); the socket lives
    and dies there, so no other thread ever uses it."""
    return ns.run_in_netns(scope, lambda: _guarded(doing, fn))


def _link(rtnl: Rtnl, scope: Scope, ifname: str):
    link = rtnl.link_by_name(ifname)
    if link is None:
        raise Missing(f"interface {ifname} not found in {_label(scope)}", "run plan to see what is missing")
    return link


def read_tbf(wanted: dict[Scope, list[str]]) -> dict[tuple[Scope, str], RootQdisc]:
    """The root qdisc of each named interface, by (namespace, name): a Tbf, an OtherQdisc, or
    None for the kernel's default. A namespace or interface that does not exist is left out.
    One thread enters every namespace in turn; one links dump and one qdisc dump in each."""
    def read(scope: Scope, rtnl: Rtnl) -> dict[str, RootQdisc]:
        index = {link.name: link.index for link in rtnl.links()}
        roots = root_qdiscs(rtnl)
        return {name: roots.get(index[name]) for name in wanted[scope] if name in index}

    def read_here(scope: Scope) -> dict[str, RootQdisc]:
        return _guarded(f"reading the root qdiscs in {_label(scope)}", lambda rtnl: read(scope, rtnl))

    found: dict[tuple[Scope, str], RootQdisc] = {}
    names = [scope for scope in wanted if scope is not None and wanted[scope]]
    if wanted.get(None):
        for name, qdisc in read_here(None).items():
            found[(None, name)] = qdisc
    for scope, qdiscs in ns.run_in_each(names, read_here).items():
        for name, qdisc in qdiscs.items():
            found[(scope, name)] = qdisc
    return found


def set_tbf(scope: Scope, ifname: str, rate_bps: int, burst: int, latency_ms: int = DEFAULT_LATENCY_MS) -> Tbf:
    """Make the interface's root qdisc a tbf of this rate (bits/s), burst (bytes) and queue
    (latency_ms at the rate on top of the burst): idempotent. Returns what the kernel now reports
    (tbf_for()). A rate and burst the kernel cannot keep as given, or that would drop the
    interface's full-size frames (rates.expressible()), are refused before anything is sent."""
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, int) or latency_ms < 0:
        raise ValueError(f"latency_ms must be a whole number of milliseconds, not {latency_ms!r}")
    doing = f"setting the rate of {ifname} in {_label(scope)}"

    def replace(rtnl: Rtnl) -> None:
        link = _link(rtnl, scope, ifname)
        reason = rates.expressible(rate_bps, burst, link.mtu or 1500, latency_ms)
        if reason is not None:
            raise KernelError(f"{doing}: {reason}", "change the rate or the burst in the file")
        replace_tbf(rtnl, link.index, rate_bps, burst, rates.tbf_limit(rate_bps, burst, latency_ms))

    _in_scope(scope, doing, replace)
    return tbf_for(rate_bps, burst, latency_ms)


def clear_root_qdisc(scope: Scope, ifname: str) -> bool:
    """Delete the interface's root qdisc, whatever its kind, leaving the kernel's default: True
    if there was one, False if there was none. Missing if the interface is not there."""
    return _in_scope(scope, f"removing the root qdisc of {ifname} in {_label(scope)}",
                        lambda rtnl: delete_root_qdisc(rtnl, _link(rtnl, scope, ifname).index))
