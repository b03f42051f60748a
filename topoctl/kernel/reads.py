"""Reads of the machine itself that are not a topology's state."""

from __future__ import annotations

from topoctl.kernel.rtnl import Rtnl


def local_addresses() -> set:
    """The addresses of this machine's own namespace (no privileges needed to read them)."""
    import ipaddress

    handle = Rtnl.open()
    try:
        return {ipaddress.ip_address(a.address) for a in handle.addresses() if a.address}
    finally:
        handle.close()
