"""The benchmark topology: docker0-style, N containers on one bridge."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml

SUBNET = ipaddress.ip_network("10.128.0.0/16")


@dataclass(frozen=True)
class BenchTopology:
    n: int
    tag: str  # keeps names unique on the machine
    # False: IPv6 off in every namespace before its interfaces exist (sysctl default.disable_ipv6),
    # which removes the kernel's per-interface IPv6 autoconfiguration traffic (docs/performance.md)
    ipv6: bool = True
    # True: the bridge masquerades and each container publishes one port (20000 + i -> 80),
    # the issue-13 variant whose cost is compared with the plain topology
    netfilter: bool = False

    @property
    def name(self) -> str:
        return f"bench{self.n}{'nf' if self.netfilter else ''}-{self.tag}"

    @property
    def host_ns(self) -> str:
        return f"{self.name}-local"

    def container(self, i: int) -> str:
        return f"b{self.tag}-{self.n}-c{i}"

    def address(self, i: int) -> ipaddress.IPv4Interface:
        return ipaddress.ip_interface(f"{SUBNET.network_address + i + 2}/{SUBNET.prefixlen}")

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        return ipaddress.ip_interface(f"{SUBNET.network_address + 1}/{SUBNET.prefixlen}")

    def port(self, i: int) -> str:
        return f"v{i}"

    def document(self) -> dict:
        off = {"sysctls": {"net.ipv6.conf.default.disable_ipv6": "1"}} if not self.ipv6 else {}
        return {
            "apiVersion": "topoctl/v1", "kind": "Topology", "name": self.name,
            **({"hosts": {"local": off}} if off else {}),
            "bridges": {"br0": {"addresses": [str(self.gateway)], **({"masquerade": True} if self.netfilter else {})}},
            "namespaces": {self.container(i): {"routes": [{"to": "default", "via": str(self.gateway.ip)}], **off,
                                               **({"ports": [f"{20000 + i}:80"]} if self.netfilter else {})}
                           for i in range(self.n)},
            "links": [{"type": "veth", "endpoints": [
                {"namespace": self.container(i), "name": "eth0", "addresses": [str(self.address(i))]},
                {"bridge": "br0", "name": self.port(i)}]} for i in range(self.n)],
        }

    def write(self, folder: Path) -> Path:
        path = folder / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.document(), sort_keys=False))
        return path
