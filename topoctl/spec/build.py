"""Schema-valid data -> model objects, then the semantic checks the schema cannot express.

Every problem is collected with the path it came from; the loader turns paths into lines.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from typing import Any

from topoctl.errors import Diagnostic
from topoctl.spec import rates
from topoctl.spec.build_netfilter import firewall, published_ports
from topoctl.spec.design_warnings import warn_design
from topoctl.spec import values
from topoctl.spec.values import Problems
from topoctl.spec.overlay_mtu import apply_overlay_mtu
from topoctl.spec.model import (
    DEFAULT_MTU,
    IMPLICIT_HOST,
    Bridge,
    Endpoint,
    Host,
    HostRoute,
    IPInterface,
    Namespace,
    Overlay,
    Route,
    Topology,
    VethLink,
    canonical_mac,
    canonical_sysctl,
    default_route_for,
    kernel_integer,
)

IFNAMSIZ = 16  # including the trailing NUL


_NUMBER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|[0-9]+)")  # what the kernel's proc_get_long may take


def _sysctls(data: dict, path: tuple, problems: Problems) -> tuple[tuple[str, str], ...]:
    """Values in the kernel's printed form (model.canonical_sysctl), so that what is read back
    compares equal; a number the kernel would read otherwise than it looks is an error."""
    found = []
    for key, raw in (data.get("sysctls") or {}).items():
        text, where = str(raw), path + ("sysctls", key)
        tokens = text.split()
        if not tokens:
            problems.add(where, f"sysctl {key}: the value is empty", "the kernel ignores an empty write; give the value")
            continue
        if all(_NUMBER.fullmatch(t) for t in tokens) and (bad := next(filter(_octal_surprise, tokens), None)):
            problems.add(where, *_octal_problem(key, bad))
            continue
        found.append((key, canonical_sysctl(text)))
    return tuple(sorted(found))


def _octal_surprise(token: str) -> bool:
    """A leading 0 makes the kernel read octal: true when that is not the decimal it looks like."""
    digits = token.lstrip("-")
    return len(digits) > 1 and digits[0] == "0" and digits.isdigit() and kernel_integer(token) != int(token)


def _octal_problem(key: str, token: str) -> tuple[str, str]:
    decimal = int(token)
    octal = kernel_integer(token)
    if octal is None:
        return (f"sysctl {key}: the kernel refuses {token!r}: a leading 0 means octal, which has no digit 8 or 9",
                f"write {decimal} without the leading 0")
    return (f"sysctl {key}: the kernel reads {token!r} as octal, {octal}, not {decimal}",
            f"write {octal}, or {decimal} without the leading 0")


def _route(data: dict, path: tuple, problems: Problems) -> Route | None:
    via = values.address(data["via"], path + ("via",), problems) if "via" in data else None
    if "via" in data and via is None:
        return None
    to_text = data["to"]
    if to_text == "default":
        to = default_route_for(via)
    elif to_text == "default6":
        to = ipaddress.IPv6Network("::/0")
    elif (to := values.network(to_text, path + ("to",), problems, "destination prefix")) is None:
        return None
    if via is not None and via.version != to.version:
        problems.add(path + ("via",), f"gateway {via} is IPv{via.version} but destination {to} is IPv{to.version}")
        return None
    if via is None and "dev" not in data:
        problems.add(path, f"route to {to} needs 'via' or 'dev'")
        return None
    return Route(to=to, via=via, dev=data.get("dev"), metric=data.get("metric"), origin=path)


def _check_ifname(name: str, path: tuple, problems: Problems, key: bool = False) -> None:
    size = len(name.encode("utf-8"))
    if size >= IFNAMSIZ:
        problems.add(path, f"interface name {name!r} is {size} bytes; the kernel allows at most {IFNAMSIZ - 1}",
                     "shorten it (IFNAMSIZ is 16 including the terminating NUL)", key=key)
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        problems.add(path, f"interface name {name!r} may not contain '/', ':' or whitespace", key=key)


def _rate(data: dict, path: tuple, problems: Problems) -> tuple[int | None, int | None]:
    """A veth end's `rate` (bits/s) and `burst` (bytes), read as tc reads them, and refused where
    the kernel's tbf cannot keep them or would drop full-size frames."""
    if "burst" in data and "rate" not in data:
        problems.add(path + ("burst",), "a burst without a rate limits nothing", "add rate: (e.g. 10mbit)", key=True)
        return None, None
    if "rate" not in data:
        return None, None
    try:
        rate = rates.parse_rate(data["rate"])
    except ValueError as err:
        problems.add(path + ("rate",), f"rate {data['rate']!r}: {err}", "write it as tc does, such as 10mbit or 500kbit")
        return None, None
    burst = None
    if "burst" in data:
        try:
            burst = rates.parse_size(data["burst"])
        except ValueError as err:
            problems.add(path + ("burst",), f"burst {data['burst']!r}: {err}", "write it as tc does, such as 32kb")
            return None, None
    mtu = data.get("mtu", DEFAULT_MTU)
    reason = rates.expressible(rate, burst if burst is not None else rates.default_burst(rate, mtu), mtu)
    if reason is not None:
        problems.add(path + (("burst",) if burst is not None else ("rate",)), f"the kernel cannot keep this rate: {reason}",
                     "change the rate or the burst")
        return None, None
    return rate, burst


def _host_of(data: dict, path: tuple, hosts: tuple[str, ...], problems: Problems, what: str) -> str:
    if "host" in data:
        host = data["host"]
        if host not in hosts:
            problems.add(path + ("host",), f"{what}: unknown host {host!r}", f"hosts are: {', '.join(hosts)}")
            problems.flawed.add(path + ("host",))
        return host
    if len(hosts) > 1:
        problems.add(path, f"{what}: 'host' is required when the file has more than one host",
                     f"add host: one of {', '.join(hosts)}")
        problems.flawed.add(path + ("host",))  # defaulted to the first host, which may be wrong
    return hosts[0]


def build_topology(data: dict, file: str, marks: Any) -> tuple[Topology, list[Diagnostic]]:
    problems = Problems(file, marks)
    name = data["name"]

    hosts: list[Host] = []
    for host_name, host_data in (data.get("hosts") or {}).items():
        host_data = host_data or {}
        path = ("hosts", host_name)
        address = values.interface(host_data["address"], path + ("address",), problems) if "address" in host_data else None
        if "interface" in host_data:
            _check_ifname(host_data["interface"], path + ("interface",), problems)
        gateway = values.address(host_data["gateway"], path + ("gateway",), problems) if "gateway" in host_data else None
        hosts.append(Host(
            name=host_name, address=address, interface=host_data.get("interface"), gateway=gateway,
            mtu=host_data.get("mtu", DEFAULT_MTU), sysctls=_sysctls(host_data, path, problems), origin=path,
        ))
    if not hosts:
        hosts.append(Host(name=IMPLICIT_HOST, origin=()))
    host_names = tuple(h.name for h in hosts)

    bridges: list[Bridge] = []
    for bridge_name, bridge_data in (data.get("bridges") or {}).items():
        bridge_data = bridge_data or {}
        path = ("bridges", bridge_name)
        ifname = bridge_data.get("name", bridge_name)
        if "name" in bridge_data:
            _check_ifname(ifname, path + ("name",), problems)
        else:
            _check_ifname(bridge_name, path, problems, key=True)
        addresses = tuple(a for i, text in enumerate(bridge_data.get("addresses", []))
                          if (a := values.interface(text, path + ("addresses", i), problems)) is not None)
        bridges.append(Bridge(
            name=ifname, key=bridge_name,
            host=_host_of(bridge_data, path, host_names, problems, f"bridge {bridge_name}"),
            addresses=addresses,
            mtu=bridge_data.get("mtu", DEFAULT_MTU),
            mac=canonical_mac(bridge_data["mac"]) if "mac" in bridge_data else None,
            stp=bridge_data.get("stp", False),
            up=bridge_data.get("state", "up") == "up",
            masquerade=bridge_data.get("masquerade", False),
            isolated=bridge_data.get("isolated", False),
            icc=bridge_data.get("icc", True),
            origin=path,
        ))

    namespaces: list[Namespace] = []
    for ns_name, ns_data in (data.get("namespaces") or {}).items():
        ns_data = ns_data or {}
        path = ("namespaces", ns_name)
        routes = tuple(r for i, r_data in enumerate(ns_data.get("routes", []))
                       if (r := _route(r_data, path + ("routes", i), problems)) is not None)
        sysctls = _sysctls(ns_data, path, problems)
        namespaces.append(Namespace(
            name=ns_name,
            host=_host_of(ns_data, path, host_names, problems, f"namespace {ns_name}"),
            routes=routes, sysctls=sysctls,
            ports=published_ports(ns_data.get("ports", []), path + ("ports",), problems),
            firewall=firewall(ns_data["firewall"], path + ("firewall",), problems) if "firewall" in ns_data else None,
            origin=path,
        ))

    links: list[VethLink] = []
    for i, link_data in enumerate(data.get("links") or []):
        path = ("links", i)
        ends = []
        for j, end_data in enumerate(link_data["endpoints"]):
            end_path = path + ("endpoints", j)
            _check_ifname(end_data["name"], end_path + ("name",), problems)
            addresses = tuple(a for k, text in enumerate(end_data.get("addresses", []))
                              if (a := values.interface(text, end_path + ("addresses", k), problems)) is not None)
            rate, burst = _rate(end_data, end_path, problems)
            ends.append(Endpoint(
                name=end_data["name"], rate=rate, burst=burst,
                namespace=end_data.get("namespace"),
                bridge=end_data.get("bridge"),
                host=end_data.get("host"),
                addresses=addresses,
                mtu=end_data.get("mtu", DEFAULT_MTU),
                mac=canonical_mac(end_data["mac"]) if "mac" in end_data else None,
                up=end_data.get("state", "up") == "up",
                origin=end_path,
            ))
        links.append(VethLink(a=ends[0], b=ends[1], origin=path))

    routes: list[HostRoute] = []
    for i, route_data in enumerate(data.get("routes") or []):
        path = ("routes", i)
        host = _host_of(route_data, path, host_names, problems, "route")
        route = _route(route_data, path, problems)
        if route is not None:
            routes.append(HostRoute(host=host, route=route, origin=path))

    overlays: list[Overlay] = []
    for i, overlay_data in enumerate(data.get("overlays") or []):
        path = ("overlays", i)
        subnets = []
        for host, text in overlay_data["subnets"].items():
            network = values.network(text, path + ("subnets", host), problems)
            if network is not None:
                subnets.append((host, network))
            else:
                problems.flawed.add(path + ("subnets", host))  # the checks skip that host's VTEP
        vni = overlay_data.get("vni", 1)
        is_vxlan = overlay_data["type"] == "vxlan"
        device = overlay_data.get("device", f"{overlay_data['name']}.{vni}") if is_vxlan else ""
        if is_vxlan:
            _check_ifname(device, path + (("device",) if "device" in overlay_data else ("name",)), problems)
        else:
            for key in ("vni", "port", "device"):
                if key in overlay_data:
                    problems.add(path + (key,), f"{key!r} belongs to a vxlan overlay, not host-gw", key=True)
        overlays.append(Overlay(name=overlay_data["name"], type=overlay_data["type"], subnets=tuple(subnets),
                                vni=vni, port=overlay_data.get("port", 8472), device=device, origin=path))

    topology = Topology(
        name=name, hosts=tuple(hosts), bridges=tuple(bridges), namespaces=tuple(namespaces),
        links=tuple(links), routes=tuple(routes), overlays=tuple(overlays), source=file,
    )
    explicit = {("bridges", key) for key, b in (data.get("bridges") or {}).items() if b and "mtu" in b}
    explicit |= {("links", i, "endpoints", j) for i, link in enumerate(data.get("links") or [])
                 for j, end in enumerate(link["endpoints"]) if "mtu" in end}
    if not problems.found:  # an overlay's MTU needs valid hosts and subnets
        topology = apply_overlay_mtu(topology, explicit, problems.warn)
    from topoctl.spec.checks import check_topology

    check_topology(topology, problems.add_between, problems.flawed)
    if not problems.found:
        warn_design(topology, problems.warn)
    return replace(topology, warnings=tuple(problems.warnings)), problems.found

