"""Schema-valid data of a namespace's `ports` and `firewall` -> model objects, with the parsing
checks (ports in range, addresses that parse, a port only with tcp or udp)."""

from __future__ import annotations

import ipaddress
import re

from topoctl.spec.model import Firewall, FirewallDirection, FirewallRule, PublishedPort
from topoctl.spec import values
from topoctl.spec.values import Problems


_PORT = re.compile(r"^(?:(?P<ip>[0-9.]+|\[[0-9A-Fa-f:.]+\]):)?(?P<host>[0-9]+):(?P<ctr>[0-9]+)(?:/(?P<proto>tcp|udp))?$")


def _port_number(text: str, path: tuple, problems: Problems, what: str) -> int | None:
    number = int(text)
    if not 1 <= number <= 65535:
        problems.add(path, f"{what} {number} is not a port number", "ports are 1 to 65535")
        return None
    return number


def published_ports(items: list, path: tuple, problems: Problems) -> tuple[PublishedPort, ...]:
    ports = []
    for i, raw in enumerate(items):
        where = path + (i,)
        match = _PORT.match(str(raw))
        if match is None:  # an integer alone passes the schema's type but says nothing of the host port
            problems.add(where, f"{raw!r} is not [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]",
                         'write "8080:80" to publish container port 80 on host port 8080')
            continue
        host_ip = None
        if match["ip"] is not None:
            text = match["ip"].strip("[]")
            try:
                host_ip = ipaddress.ip_address(text)
            except ValueError:
                problems.add(where, f"{match['ip']!r} is not an IP address")
                continue
            if match["ip"].startswith("[") != (host_ip.version == 6):
                problems.add(where, f"{match['ip']!r}: an IPv6 host address goes in brackets, an IPv4 one does not",
                             'write "[fd00::1]:8080:80" or "192.0.2.1:8080:80"')
                continue
            if host_ip.version == 6 and host_ip.is_loopback:
                problems.add(where, "a port cannot be published on ::1",
                             "the kernel never routes ::1 to another interface (IPv4's route_localnet has no "
                             "IPv6 counterpart); publish on 127.0.0.1 or on the host's address")
                continue
            if host_ip.is_unspecified:
                host_ip = None if host_ip.version == 4 else host_ip
        host_port = _port_number(match["host"], where, problems, "host port")
        container_port = _port_number(match["ctr"], where, problems, "container port")
        if host_port is None or container_port is None:
            continue
        ports.append(PublishedPort(host_port=host_port, container_port=container_port,
                                   proto=match["proto"] or "tcp", host_ip=host_ip, origin=where))
    return tuple(ports)


def _rule(data: dict, path: tuple, problems: Problems) -> FirewallRule | None:
    source = values.network(data["from"], path + ("from",), problems, "address or prefix") if "from" in data else None
    dest = values.network(data["to"], path + ("to",), problems, "address or prefix") if "to" in data else None
    if ("from" in data and source is None) or ("to" in data and dest is None):
        return None
    if source is not None and dest is not None and source.version != dest.version:
        problems.add(path, f"from {source} is IPv{source.version} but to {dest} is IPv{dest.version}",
                     "a rule matches one family; write two rules")
        return None
    proto = data.get("proto")
    family = (source or dest).version if (source or dest) is not None else None
    if proto in ("icmp", "icmpv6") and family is not None and family != (4 if proto == "icmp" else 6):
        problems.add(path + ("proto",), f"proto {proto} never matches IPv{family} traffic",
                     "icmp is IPv4's, icmpv6 IPv6's")
        return None
    ports = None
    if "port" in data:
        if proto not in ("tcp", "udp"):
            problems.add(path + ("port",), "a port needs proto tcp or udp", "add proto: tcp", key=True)
            return None
        low, _, high = str(data["port"]).partition("-")
        first, last = int(low), int(high or low)
        if not (1 <= first <= last <= 65535):
            problems.add(path + ("port",), f"port {data['port']} is not a port or an ascending range of ports",
                         "ports are 1 to 65535; a range is N-M with N <= M")
            return None
        ports = (first, last)
    return FirewallRule(source=source, dest=dest, proto=proto, ports=ports, origin=path)


def firewall(data: dict, path: tuple, problems: Problems) -> Firewall:
    directions = {}
    for name in ("inbound", "outbound"):
        raw = data.get(name) or {}
        rules = tuple(r for i, item in enumerate(raw.get("allow", []))
                      if (r := _rule(item, path + (name, "allow", i), problems)) is not None)
        directions[name] = FirewallDirection(default=raw.get("default", "accept"), allow=rules)
    return Firewall(**directions)
