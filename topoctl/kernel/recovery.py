"""Taking over what a run killed part way had begun (its journal names the objects)."""

from __future__ import annotations

from typing import Iterable

from topoctl.core.state import owner_alias, owner_from_alias, scope_label
from topoctl.kernel import namespaces as ns
from topoctl.kernel.rtnl import IFLA_IFALIAS, attr_str
from topoctl.kernel.sockets import Kernel
from topoctl.store import records


def mark_unfinished(kernel: Kernel, topology: str, objects: Iterable[dict]) -> list[str]:
    """Put topoctl's mark on what an interrupted apply had begun to create (see journal.py):
    a namespace without a record, a link without an alias, a root route without a record.
    Objects that already carry someone's mark, or no longer exist, are left alone."""
    adopted: list[str] = []
    existing = set(ns.list_netns())
    for obj in objects:
        if "netns" in obj:
            name = obj["netns"]
            if name in existing and not ns.is_netns(name):
                ns.remove_placeholder(name)  # killed between creating the file and mounting the namespace
                records.forget_netns(name)
                adopted.append(f"the half-made {ns.netns_path(name)} (removed)")
            elif name in existing and records.read_netns_record(name) is None:
                records.record_netns(name, records.NetnsRecord(topology, obj.get("host", ""), obj.get("role", "container"),
                                                     ns.netns_inode(name)))
                adopted.append(f"namespace {name}")
        elif "link" in obj:
            scope = obj.get("scope")
            if scope is not None and scope not in existing:
                continue
            link = kernel.rtnl(scope).link_by_name(obj["link"])
            if link is not None and owner_from_alias(link.alias) is None:
                kernel.rtnl(scope).link_set(link.index, attributes=attr_str(IFLA_IFALIAS, owner_alias(topology)))
                adopted.append(f"link {obj['link']} in {scope_label(scope)}")
        elif "route" in obj:
            table, dst, metric = obj["route"]
            records.record_root_route(topology, f"{table} {dst} {metric}", present=True)
            adopted.append(f"route {dst} in (root)")
    return adopted
