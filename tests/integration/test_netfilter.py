"""Issue 13: the rest of a container's network stack, proven with traffic between the
topology's own namespaces: masquerade, published ports (TCP, UDP, IPv6, 127.0.0.1, hairpin),
isolated bridges, icc off, container firewalls, forwarding derived from the design, drift of
the tables repaired, rollback restoring them exactly, a SIGKILL mid-apply converging."""

from __future__ import annotations

import copy
import json
import signal
import socket
import subprocess

import pytest

from topoctl.kernel import namespaces as ns

from . import probes
from .test_rollback import start_paused

NODE1, NODE2 = "10.168.0.2", "10.168.0.3"

TWO_HOSTS = {
    "apiVersion": "topoctl/v1", "kind": "Topology", "name": "nf",
    "hosts": {"node1": {"address": f"{NODE1}/24"}, "node2": {"address": f"{NODE2}/24"}},
    "bridges": {"docker0": {"host": "node1", "addresses": ["172.17.0.1/16", "fd00:17::1/64"]}},
    "namespaces": {
        "web": {"host": "node1", "routes": [{"to": "default", "via": "172.17.0.1"},
                                            {"to": "default6", "via": "fd00:17::1"}]},
        "client": {"host": "node1", "routes": [{"to": "default", "via": "172.17.0.1"},
                                               {"to": "default6", "via": "fd00:17::1"}]},
    },
    "links": [
        {"type": "veth", "endpoints": [{"namespace": "web", "name": "eth0", "addresses": ["172.17.0.2/16", "fd00:17::2/64"]},
                                       {"bridge": "docker0", "name": "veth-web"}]},
        {"type": "veth", "endpoints": [{"namespace": "client", "name": "eth0",
                                        "addresses": ["172.17.0.3/16", "fd00:17::3/64"]},
                                       {"bridge": "docker0", "name": "veth-client"}]},
    ],
}


def variant(**changes) -> dict:
    data = copy.deepcopy(TWO_HOSTS)
    for path, value in changes.items():
        where = data
        keys = path.split("__")
        for key in keys[:-1]:
            where = where[key]
        where[keys[-1]] = value
    return data


def nft_text(scope: str, family: str, table: str) -> str:
    return subprocess.run(["ip", "netns", "exec", scope, "nft", "list", "table", family, table],
                          capture_output=True, text=True).stdout


def nft(scope: str, command: str) -> None:
    subprocess.run(["ip", "netns", "exec", scope, "nft", command], check=True, capture_output=True)


def test_masquerade_lets_a_container_reach_another_host(sandbox_factory):
    box = sandbox_factory(TWO_HOSTS)
    box.apply()
    client, node2 = box.ns("client"), box.host("node2")
    with probes.server(node2, 7000) as peers:
        # node2 has no route back to 172.17.0.0/16: without masquerade the reply is lost
        assert probes.request(client, NODE2, 7000, deadline=1) is None
        box.write(variant(bridges__docker0__masquerade=True))
        result = box.apply()
        assert any(a.get("type") == "table" for a in result["actions"])
        assert probes.request(client, NODE2, 7000) == b"hello from " + node2.encode()
        assert box.ping(client, NODE2)
    assert peers[-1] == NODE1  # SNATed to node1's underlay address
    assert box.plan_exit() == 0


def test_published_ports_from_everywhere_they_should_answer(sandbox_factory):
    data = variant(namespaces__web__ports=["8080:80", "127.0.0.1:5353:53/udp", "9000:90/udp", "[fd00:17::1]:8443:443"])
    # br_netfilter's IPv6 hook (on by default once the module is loaded) bridges a DNATed
    # packet back into its own bridge before it is masqueraded: IPv6 hairpin needs it off
    # (docs/netfilter.md); IPv4 hairpin works either way.
    data["hosts"]["node1"]["sysctls"] = {"net.bridge.bridge-nf-call-ip6tables": "0"}
    box = sandbox_factory(data)
    plan = box.plan()
    sysctls = {(a["netns"], a["key"]): a.get("why") for a in plan["actions"] if a["type"] == "sysctl"}
    node1, node2, client, web = box.host("node1"), box.host("node2"), box.ns("client"), box.ns("web")
    assert sysctls[(node1, "net.ipv4.ip_forward")]  # said why
    assert sysctls[(node1, "net.ipv4.conf.docker0.route_localnet")].startswith("published port 8080:80/tcp")
    box.apply()
    answer = b"hello from " + web.encode()
    with probes.server(web, 80) as tcp_peers, probes.server(web, 53, "udp"), probes.server(web, 90, "udp"), \
            probes.server(web, 443):
        assert probes.request(node2, NODE1, 8080) == answer  # from another host
        assert probes.request(node1, NODE1, 8080) == answer  # from the host itself
        assert probes.request(node1, "172.17.0.1", 8080) == answer
        assert probes.request(node1, "127.0.0.1", 8080) == answer  # localhost (route_localnet)
        assert probes.request(client, NODE1, 8080) == answer  # another container, through the host
        assert tcp_peers[-1] == "172.17.0.1"  # hairpin: SNATed, so the reply comes back the same way
        assert probes.request(client, "fd00:17::1", 8080) == answer  # IPv6, all addresses
        assert probes.request(node1, "fd00:17::1", 8443) == answer  # IPv6 host address in brackets
        assert probes.request(node2, NODE1, 9000, "udp") == answer  # UDP
        assert probes.request(node1, "127.0.0.1", 5353, "udp") == answer  # 127.0.0.1: the host only
        assert probes.request(node2, NODE1, 5353, "udp", deadline=1) is None
        assert probes.request(node2, NODE1, 8081, deadline=1) is None  # nothing else is published
    assert box.plan_exit() == 0


TWO_BRIDGES = {
    "apiVersion": "topoctl/v1", "kind": "Topology", "name": "iso",
    "bridges": {"br-a": {"addresses": ["10.1.0.1/24"]}, "br-b": {"addresses": ["10.2.0.1/24"]}},
    "namespaces": {"c1": {"routes": [{"to": "default", "via": "10.1.0.1"}]},
                   "c2": {"routes": [{"to": "default", "via": "10.2.0.1"}]}},
    "links": [
        {"type": "veth", "endpoints": [{"namespace": "c1", "name": "eth0", "addresses": ["10.1.0.2/24"]},
                                       {"bridge": "br-a", "name": "veth-c1"}]},
        {"type": "veth", "endpoints": [{"namespace": "c2", "name": "eth0", "addresses": ["10.2.0.2/24"]},
                                       {"bridge": "br-b", "name": "veth-c2"}]},
    ],
}


def test_two_bridges_carry_traffic_without_a_sysctl_and_isolated_blocks_it(sandbox_factory):
    box = sandbox_factory(TWO_BRIDGES)
    plan = box.plan()
    [forward] = [a for a in plan["actions"] if a["type"] == "sysctl"]
    assert forward["key"] == "net.ipv4.ip_forward" and forward["why"] == "bridges br-a and br-b"
    box.apply()
    c1, c2 = box.ns("c1"), box.ns("c2")
    assert box.ping(c1, "10.2.0.2")
    data = copy.deepcopy(TWO_BRIDGES)
    data["bridges"]["br-a"]["isolated"] = True
    box.write(data)
    box.apply()
    assert not box.ping(c1, "10.2.0.2") and not box.ping(c2, "10.1.0.2")
    assert box.ping(c1, "10.1.0.1")  # its own gateway still answers
    assert box.plan_exit() == 0


def test_vxlan_overlay_without_sysctls_carries_traffic(sandbox_factory):
    import yaml

    from .conftest import ROOT, TOPOCTL

    data = yaml.safe_load((ROOT / "topologies" / "vxlan-2hosts.yaml").read_text())
    for host in data["hosts"].values():
        host.pop("sysctls")
    box = sandbox_factory(data)
    reasons = {a["netns"]: a["why"] for a in box.plan()["actions"] if a["type"] == "sysctl"}
    assert reasons == {box.host("node1"): "overlay flannel", box.host("node2"): "overlay flannel"}
    box.apply()
    assert box.ping(box.ns("web-1"), "10.244.2.2") and box.ping(box.ns("db-2"), "10.244.1.3")


def test_icc_off_separates_containers_but_not_from_the_gateway_or_the_outside(sandbox_factory):
    box = sandbox_factory(variant(bridges__docker0__icc=False, bridges__docker0__masquerade=True))
    box.apply()
    web, client = box.ns("web"), box.ns("client")
    assert not box.ping(client, "172.17.0.2") and not box.ping(web, "172.17.0.3")
    assert box.ping(client, "172.17.0.1") and box.ping(web, "172.17.0.1")
    assert box.ping(client, NODE2) and box.ping(web, NODE2)
    assert box.plan_exit() == 0


FIREWALL = {"inbound": {"default": "drop", "allow": [
    {"proto": "tcp", "port": 80}, {"proto": "udp", "port": "53-54"}, {"proto": "icmp"},
    {"from": "172.17.0.3/32", "proto": "tcp"}]},
    "outbound": {"default": "drop", "allow": [{"to": "172.17.0.1", "proto": "tcp", "port": 7000}, {"proto": "icmp"}]}}


def test_a_firewall_allows_exactly_what_it_lists(sandbox_factory):
    box = sandbox_factory(variant(namespaces__web__firewall=FIREWALL))
    box.apply()
    node1, web, client = box.host("node1"), box.ns("web"), box.ns("client")
    answer = b"hello from " + web.encode()
    with probes.server(web, 80), probes.server(web, 81), probes.server(web, 54, "udp"), \
            probes.server(web, 55, "udp"):
        assert probes.request(node1, "172.17.0.2", 80) == answer
        assert probes.request(node1, "172.17.0.2", 81, deadline=1) is None  # not listed
        assert probes.request(client, "172.17.0.2", 81) == answer  # from its one allowed source
        assert probes.request(node1, "172.17.0.2", 54, "udp") == answer  # in the range
        assert probes.request(node1, "172.17.0.2", 55, "udp", deadline=1) is None
        assert box.ping(node1, "172.17.0.2")
    with probes.server(node1, 7000), probes.server(node1, 7001):
        assert probes.request(web, "172.17.0.1", 7000) == b"hello from " + node1.encode()  # outbound allowed
        assert probes.request(web, "172.17.0.1", 7001, deadline=1) is None
    assert box.plan_exit() == 0


DRIFTS = {
    "rule deleted": lambda s, t: nft(s, f"flush chain inet {t} input"),
    "rule added": lambda s, t: nft(s, f"add rule inet {t} input tcp dport 9999 accept"),
    "policy changed": lambda s, t: nft(s, f"chain inet {t} input {{ policy accept ; }}"),
    "table flushed": lambda s, t: nft(s, f"flush table inet {t}"),
    "table deleted": lambda s, t: nft(s, f"delete table inet {t}"),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_drift_inside_a_table_is_shown_and_repaired(sandbox_factory, drift):
    box = sandbox_factory(variant(namespaces__web__firewall=FIREWALL, namespaces__web__ports=["8080:80"]))
    box.apply()
    web, table = box.ns("web"), f"topoctl-{box.topology}"
    before = nft_text(web, "inet", table)
    DRIFTS[drift](web, table)
    assert box.plan_exit() == 2
    [change] = [a for a in box.plan()["actions"] if a["type"] == "table"]
    assert change["netns"] == web and (change["rules"] or drift == "policy changed")
    box.apply()
    assert nft_text(web, "inet", table) == before
    assert box.plan_exit() == 0


def test_rollback_restores_the_tables_exactly(sandbox_factory):
    box = sandbox_factory(variant(namespaces__web__firewall=FIREWALL, bridges__docker0__masquerade=True))
    box.apply()
    node1, web, table = box.host("node1"), box.ns("web"), f"topoctl-{box.topology}"
    before = {scope: nft_text(scope, "inet", table) for scope in (node1, web)}
    changed = variant(namespaces__web__ports=["8080:80"], bridges__docker0__icc=False,
                      namespaces__web__firewall={"inbound": {"default": "drop"}})
    box.write(changed)
    steps = box.plan()["actions"]
    assert [a["type"] for a in steps].count("table") == 3  # two changed, one new
    result = subprocess.run([*box_command(box, "apply")], capture_output=True, text=True,
                            env={**__import__("os").environ, "TOPOCTL_FAULT_AT": str(len(steps))})
    assert result.returncode == 1 and "rolled back" in result.stderr, result.stderr
    assert {scope: nft_text(scope, "inet", table) for scope in (node1, web)} == before
    assert nft_text(node1, "bridge", table) == ""
    box.write(variant(namespaces__web__firewall=FIREWALL, bridges__docker0__masquerade=True))
    assert box.plan_exit() == 0


def box_command(box, command: str) -> list[str]:
    from .conftest import TOPOCTL

    return [*TOPOCTL, command, "--emulate", str(box.path)]


def test_sigkill_while_writing_tables_converges(sandbox_factory):
    box = sandbox_factory(variant(namespaces__web__firewall=FIREWALL, bridges__docker0__masquerade=True))
    steps = box.plan()["actions"]
    first_table = next(i for i, a in enumerate(steps, 1) if a["type"] == "table")
    run = start_paused(box, "apply", str(first_table + 1))  # the first table written, the next not
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert box.plan_exit() == 2
    box.apply()
    assert box.plan_exit() == 0
    web = box.ns("web")
    assert "policy drop" in nft_text(web, "inet", f"topoctl-{box.topology}")


def test_destroy_leaves_no_table_and_no_record(sandbox_factory):
    from topoctl import paths

    box = sandbox_factory(variant(namespaces__web__firewall=FIREWALL, bridges__docker0__masquerade=True))
    box.apply()
    recorded = json.loads(open(paths.tables_record_path(box.topology)).read())
    assert recorded == sorted([box.host("node1"), box.ns("web")])
    box.run("destroy")
    assert not __import__("os").path.exists(paths.tables_record_path(box.topology))
    assert not [name for name in ns.list_netns() if box.uid in name]


def test_the_rendered_script_builds_the_same_tables(sandbox_factory):
    from .conftest import normalised
    from .test_examples import _declared_macs

    data = variant(namespaces__web__firewall=FIREWALL, namespaces__web__ports=["8080:80", "127.0.0.1:53:53/udp"],
                   bridges__docker0__masquerade=True, bridges__docker0__icc=False)
    box = sandbox_factory(data)
    box.apply()
    applied = normalised(box.show(), _declared_macs(box))
    assert len(applied["tables"]) == 3
    box.run("destroy")
    script = box.run("render").stdout
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert normalised(box.show(), _declared_macs(box)) == applied
    assert box.plan_exit() == 0


FOREIGN = """table ip docker-bridges {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "docker9" accept
	}
}
table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
}
"""


def test_foreign_tables_are_never_touched_and_a_drop_policy_is_a_warning(sandbox_factory):
    box = sandbox_factory(variant(bridges__docker0__masquerade=True, namespaces__web__ports=["8080:80"]))
    box.apply()
    node1 = box.host("node1")
    subprocess.run(["ip", "netns", "exec", node1, "nft", "-f", "-"], input=FOREIGN, text=True, check=True)
    foreign = {t: nft_text(node1, "ip", t) for t in ("docker-bridges", "filter")}
    assert all(foreign.values())
    plan = box.plan()
    (warning,) = plan["warnings"]
    assert "ip filter FORWARD" in warning and "docker-bridges" not in warning
    assert "warning:" in box.run("plan").stdout
    assert box.ping(box.ns("client"), "172.17.0.1")  # the host itself still answers
    box.write(variant(bridges__docker0__masquerade=True, namespaces__web__ports=["8081:80"], bridges__docker0__icc=False))
    box.apply()
    assert {t: nft_text(node1, "ip", t) for t in ("docker-bridges", "filter")} == foreign
    result = box.run("destroy")
    assert "keeping namespace" in result.stdout and "ip filter" in result.stdout
    assert {t: nft_text(node1, "ip", t) for t in ("docker-bridges", "filter")} == foreign
    assert nft_text(node1, "inet", f"topoctl-{box.topology}") == ""  # ours went, theirs stayed
    subprocess.run(["ip", "netns", "del", node1], check=True)  # the test's own tables go with it


def test_destroy_puts_back_the_forwarding_it_turned_on_in_a_host_that_stays(sandbox_factory):
    from topoctl import paths

    plain = variant()
    for name in ("web", "client"):
        plain["namespaces"][name]["routes"] = []  # nothing crosses node1: it need not forward
    box = sandbox_factory(plain)
    box.apply()
    node1 = box.host("node1")
    forward = ["ip", "netns", "exec", node1, "sysctl", "-n", "net.ipv4.ip_forward"]
    assert subprocess.run(forward, capture_output=True, text=True).stdout.strip() == "0"
    box.write(variant(bridges__docker0__masquerade=True))
    box.apply()
    assert subprocess.run(forward, capture_output=True, text=True).stdout.strip() == "1"
    record = json.loads(open(paths.derived_sysctls_path(node1)).read())
    assert record["net.ipv4.ip_forward"] == {"before": "0", "by": [box.topology]}
    # something not topoctl's keeps node1 alive through the destroy
    subprocess.run(["ip", "-n", node1, "link", "add", "keepme0", "type", "veth", "peer", "name", "keepme1"], check=True)
    plan = json.loads(box.run("plan", "--destroy", "-o", "json").stdout)
    put_back = sorted((a["key"], a["old"], a["new"]) for a in plan["actions"] if a["type"] == "sysctl")
    assert put_back == [("net.ipv4.ip_forward", "1", "0"), ("net.ipv6.conf.all.forwarding", "1", "0")]
    box.run("destroy")
    assert subprocess.run(forward, capture_output=True, text=True).stdout.strip() == "0"
    assert not __import__("os").path.exists(paths.derived_sysctls_path(node1))
    subprocess.run(["ip", "netns", "del", node1], check=True)


def test_the_emulated_gateway_is_the_outside_a_masquerading_bridge_reaches(sandbox_factory):
    import yaml

    from .conftest import ROOT, TOPOCTL

    data = yaml.safe_load((ROOT / "topologies" / "docker0.yaml").read_text())
    data["bridges"]["docker0"]["masquerade"] = False
    box = sandbox_factory(data)
    box.apply()
    nginx, underlay = box.ns("nginx-1"), box.host("underlay")
    for name in ("underlay", underlay, box.host()):  # the names exec takes for the emulated namespaces
        shown = subprocess.run([*TOPOCTL, "exec", "--emulate", str(box.path), name, "--", "ip", "netns", "identify"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert shown == (box.host() if name == box.host() else underlay)
    with probes.server(underlay, 8000, family=socket.AF_INET) as peers:
        # the underlay has no route back to 172.17.0.0/16: without masquerade no answer comes back
        assert probes.request(nginx, "192.0.2.1", 8000, deadline=1) is None
        data["bridges"]["docker0"]["masquerade"] = True
        box.write(data)
        box.apply()
        assert probes.request(nginx, "192.0.2.1", 8000) == b"hello from " + underlay.encode()
        assert box.ping(nginx, "192.0.2.1")
    assert peers[-1] == "192.0.2.2"  # the host's address, as the outside sees the container
