"""Sysctl values written unlike the kernel prints them converge (issue 11): the kernel prints an
integer vector tab-separated ("32768\t60999"), so "32768  60999" used to fail verification on
every apply and roll back. Everything runs in sandbox namespaces under --emulate."""

from __future__ import annotations

import pytest

from topoctl.kernel import namespaces as ns

from .conftest import ip

pytestmark = pytest.mark.root

WRITTEN = {
    "net.ipv4.ip_local_port_range": "32768  60999",     # the value: two spaces
    "net.ipv4.tcp_rmem": "4096  0x10000\t6291456",      # hex and a tab: the kernel reads 65536
    "net.ipv4.ping_group_range": " 0   2147483647 ",
}
PRINTED = {  # what /proc/sys shows afterwards (probed on this kernel: tab-separated, decimal)
    "net.ipv4.ip_local_port_range": "32768\t60999\n",
    "net.ipv4.tcp_rmem": "4096\t65536\t6291456\n",
    "net.ipv4.ping_group_range": "0\t2147483647\n",
}
TOPOLOGY = {
    "apiVersion": "topoctl/v1", "kind": "Topology", "name": "sysctl",
    "hosts": {"local": {"sysctls": {"net.ipv4.ip_local_port_range": "40000  50000"}}},
    "namespaces": {"box": {"sysctls": WRITTEN}},
}


def proc_sys(netns: str, key: str) -> str:
    """The value as the kernel prints it, read inside `netns` (one of the test's namespaces)."""
    return ip("netns", "exec", netns, "cat", "/proc/sys/" + key.replace(".", "/")).stdout


def test_values_written_unlike_the_kernel_prints_them_converge(sandbox_factory):
    box = sandbox_factory(TOPOLOGY)
    applied = box.apply()
    assert applied["verified"]
    assert box.plan_exit() == 0  # nothing differs: before the fix, every plan showed the keys
    for key, printed in PRINTED.items():
        assert proc_sys(box.ns("box"), key) == printed
    assert proc_sys(box.host(), "net.ipv4.ip_local_port_range") == "40000\t50000\n"
    again = box.apply()
    assert again["verified"] and not again["actions"]
    script = box.run("render").stdout  # the script writes the same, kernel-form values
    assert f"ip netns exec {box.ns('box')} sysctl -qw 'net.ipv4.ip_local_port_range=32768 60999'" in script
    assert f"ip netns exec {box.ns('box')} sysctl -qw 'net.ipv4.tcp_rmem=4096 65536 6291456'" in script


def test_a_value_the_kernel_would_read_as_octal_is_refused_before_anything_is_made(sandbox_factory):
    box = sandbox_factory({**TOPOLOGY, "namespaces": {"box": {"sysctls": {"net.ipv4.conf.all.rp_filter": "010"}}}})
    result = box.run("apply", expect=2)
    lines = box.path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, start=1) if "rp_filter" in text)
    column = lines[line - 1].index("'010'") + 1  # the value, as the sandbox wrote the file
    assert result.stderr.splitlines() == [
        f"{box.path}:{line}:{column}: error: sysctl net.ipv4.conf.all.rp_filter: the kernel reads '010' as octal, 8, not 10",
        "  hint: write 8, or 10 without the leading 0", "1 problem found"]
    assert box.ns("box") not in ns.list_netns() and box.host() not in ns.list_netns()
