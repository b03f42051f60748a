"""Read the live kernel state of every namespace a topology cares about (the kernel half of an
observation), and hand it to core.assemble for the State.

Each namespace's tables are dumped once (links, addresses, routes) and indexed; nothing is
looked up per object; the interface indexes are remembered for the steps that follow.
"""

from __future__ import annotations

from typing import Iterable

from topoctl.core.assemble import Owner, Readings, assemble, sysctls_to_read, vxlan_devices
from topoctl.core.kabi import AF_BRIDGE
from topoctl.core.state import Scope, State
from topoctl.core.state import OTHER_QDISC, Tbf, nft_table_name, owner_from_alias
from topoctl.kernel import namespaces as ns
from topoctl.kernel import nft
from topoctl.kernel.sockets import Kernel
from topoctl.kernel.tables import read_tables
from topoctl.store import records


def observe(kernel: Kernel, topology: str, scopes: Iterable[Scope], sysctls: Iterable[tuple[Scope, str]] = (),
            hosts: set[str] | None = None, skim_containers: bool = False,
            half_made_ours: Iterable[str] = (), tables_in: Iterable[Scope] = (),
            host_scopes: Iterable[Scope] = (), rates_on: Iterable[tuple[Scope, str]] = ()) -> State:
    """The live State of `scopes` (namespaces that do not exist are left out), as seen by `topology`."""
    return assemble(read(kernel, topology, scopes, sysctls, hosts, skim_containers, half_made_ours, tables_in,
                         host_scopes, rates_on), topology)


def read(kernel: Kernel, topology: str, scopes: Iterable[Scope], sysctls: Iterable[tuple[Scope, str]] = (),
         hosts: set[str] | None = None, skim_containers: bool = False,
         half_made_ours: Iterable[str] = (), tables_in: Iterable[Scope] = (),
         host_scopes: Iterable[Scope] = (), rates_on: Iterable[tuple[Scope, str]] = ()) -> Readings:
    """What assemble() needs: the namespaces in view with their records, the tables of each
    (`skim_containers`: our container namespaces are only listed, not read, since a destroy
    deletes them whole), the VXLAN devices' neighbours and FDB entries, the sysctls.

    A /run/netns file that pins no namespace (a run killed while making it) counts as absent
    when this topology's record or `half_made_ours` (what an interrupted run of it began)
    names it, since its next apply or destroy removes it; any other is a KernelError.

    nftables tables are read where the file wants one (`tables_in`), where the topology wrote
    one before, and in its hosts (`host_scopes`, with the other tables' forward policies, for
    the warnings) when libnftables is there: a container without firewall costs nothing.
    Root qdiscs are read for the links with a `rate` (`rates_on`) and, where the topology wrote
    a table or a rate before, for its own veths."""
    existing = set(ns.list_netns())
    by_name = records.netns_records()
    recorded = [name for name, r in by_name.items() if r.topology == topology]
    if hosts is not None:  # acting on some hosts: other hosts' namespaces are not in view
        recorded = [n for n in recorded if by_name[n].host in hosts or not by_name[n].host]
    wanted = set(scopes) | set(recorded)
    half_made = ns.half_made(sorted(n for n in wanted if n is not None and n in existing))
    if half_made:
        ours = set(recorded) | set(half_made_ours)
        foreign = [name for name in half_made if name not in ours]
        if foreign:
            raise ns.not_a_namespace(foreign[0])
        existing.difference_update(half_made)
    namespaces: dict[str, Owner | None] = {}
    for name in sorted(n for n in wanted if n is not None and n in existing):
        record = by_name.get(name)
        # a record is valid for the namespace it was made for (same inode), not a later one of that name
        mine = record is not None and (record.inode == 0 or record.inode == ns.netns_inode(name))
        namespaces[name] = Owner(record.topology, record.host, record.role, record.sysctls) if mine else None
    live_scopes = [s for s in sorted(wanted, key=lambda s: s or "") if s is None or s in existing]
    if skim_containers:
        live_scopes = [s for s in live_scopes if s is None or not (
            namespaces[s] is not None and namespaces[s].topology == topology and namespaces[s].role == "container")]
    tables = read_tables(kernel, live_scopes, kernel.take_prefetch())
    tables = {scope: tables[scope] for scope in live_scopes}
    for scope, (links, _, _) in tables.items():
        kernel.remember(scope, {msg.name: msg.index for msg in links})
    neighbours = {}
    for scope in sorted({scope for scope, _ in vxlan_devices(tables, topology)}, key=lambda s: s or ""):
        handle = kernel.rtnl(scope)
        neighbours[scope] = (handle.neighbours(), handle.neighbours(AF_BRIDGE))
    wrote_in = records.table_scopes(topology)  # where earlier runs wrote tables or rates
    nft_tables, foreign = _read_nft(topology, set(tables_in), set(host_scopes), set(live_scopes), wrote_in)
    qdiscs = _read_qdiscs(topology, set(rates_on), tables, wrote_in)
    return Readings(
        namespaces=namespaces, tables=tables, nft_tables=nft_tables,
        foreign_tables={scope: names for scope, (names, _) in foreign.items()},
        foreign_drops={scope: drops for scope, (_, drops) in foreign.items() if drops}, qdiscs=qdiscs,
        root_routes=records.recorded_root_routes(topology) if None in live_scopes else set(),
        neighbours=neighbours,
        sysctls=kernel.read_sysctls(sysctls_to_read(namespaces, live_scopes, list(sysctls), topology)),
        nsid_of=kernel.nsid_of,
    )


def _read_nft(topology: str, wanted: set[Scope], hosts: set[Scope], live: set[Scope],
              wrote_in: set[Scope]) -> tuple[dict, dict]:
    """topoctl's tables where they may be (among the scopes read), and the hosts' foreign
    forward policies."""
    scopes = wanted | {s for s in wrote_in if s in live}
    if not wanted and not nft.available():
        return {}, {}  # nothing asks for nftables and there is none: nothing of ours to read
    scopes = {s for s in scopes | hosts if s in live}
    ordered = sorted(scopes, key=lambda s: s or "")
    return nft.read(ordered, nft_table_name(topology), hosts)


def _read_qdiscs(topology: str, wanted: set[tuple[Scope, str]], tables: dict, wrote_in: set[Scope]) -> dict:
    """The root qdiscs of the links that want a rate, and of this topology's veths where it
    wrote tables or rates before (so a rate dropped from the file is found and removed)."""
    wanted = {(scope, dev) for scope, dev in wanted if scope in tables}
    for scope in wrote_in:
        if scope in tables:
            wanted.update((scope, msg.name) for msg in tables[scope][0]
                          if msg.kind == "veth" and owner_from_alias(msg.alias) == topology)
    if not wanted:
        return {}
    from topoctl.kernel import tc  # imports pyroute2's tbf encoding: only where a rate is involved

    by_scope: dict[Scope, list[str]] = {}
    for scope, dev in sorted(wanted, key=lambda k: (k[0] or "", k[1])):
        by_scope.setdefault(scope, []).append(dev)
    found = {}
    for key, qdisc in tc.read_tbf(by_scope).items():
        if isinstance(qdisc, tc.Tbf):
            found[key] = Tbf(qdisc.rate, qdisc.burst, qdisc.limit, requested_burst=qdisc.burst)  # a rollback writes it back
        elif qdisc is not None:
            found[key] = OTHER_QDISC
    return found
