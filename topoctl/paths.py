"""Where topoctl keeps its state (one place for every path): /run/topoctl, or TOPOCTL_STATE_DIR.
Names only; reading and writing them is the store's (topoctl.store) and the cache's. The paths
are made from STATE_DIR when asked for, so that tests can point it elsewhere."""

from __future__ import annotations

import os

STATE_DIR = os.environ.get("TOPOCTL_STATE_DIR", "/run/topoctl")
NETNS_RUN_DIR = "/run/netns"  # iproute2's, not ours: where named network namespaces are pinned


def state_path(*parts: str) -> str:
    return os.path.join(STATE_DIR, *parts)


def netns_records_dir() -> str:
    return state_path("netns")


def netns_record_path(name: str) -> str:
    return state_path("netns", name + ".json")


def routes_record_dir(topology: str) -> str:
    return state_path("routes", topology)


def route_record_name(key: str) -> str:
    """A file name for a route key ('254 10.244.2.0/24 0' -> '254_10.244.2.0_24_0')."""
    return key.replace(" ", "_").replace("/", "_")


def journal_dir() -> str:
    return state_path("journal")


def journal_path(topology: str) -> str:
    return state_path("journal", f"{topology}.jsonl")


def lock_dir() -> str:
    return state_path("locks")


def lock_path(host: str) -> str:
    return state_path("locks", f"{host}.lock")


def cache_dir() -> str:
    return state_path("cache")


def tables_record_path(topology: str) -> str:
    """Where the namespaces holding a topology's nftables tables are listed."""
    return state_path("tables", f"{topology}.json")


def derived_sysctls_dir() -> str:
    return state_path("sysctls")


def derived_sysctls_path(scope: str | None) -> str:
    """Forwarding keys topoctl turned on in a namespace that may outlive its topologies (the
    root one, an emulated host): the value before, and which topologies need it."""
    return state_path("sysctls", ("_root" if scope is None else scope) + ".json")


def deployments_dir() -> str:
    return state_path("deployments")


def deployment_path(topology: str) -> str:
    """Which file a topology was applied from on this machine, how, and for which hosts (ls)."""
    return state_path("deployments", f"{topology}.json")
