"""The rtnetlink codec's encoding and parsing, from bytes. No root."""

from __future__ import annotations

import resource
import socket
import struct
import subprocess
import sys

from topoctl.kernel import rtnl


def test_attributes_are_padded_and_parsed_back():
    packed = rtnl.attr_str(rtnl.IFLA_IFNAME, "eth0") + rtnl.attr_u32(rtnl.IFLA_MTU, 1450)
    assert len(packed) % 4 == 0
    parsed = rtnl.attrs(packed, 0, len(packed))
    assert bytes(parsed[rtnl.IFLA_IFNAME]) == b"eth0\0" and struct.unpack("=I", parsed[rtnl.IFLA_MTU])[0] == 1450


def test_a_nested_attribute_carries_the_nested_flag_and_is_found_without_it():
    packed = rtnl.nest(rtnl.IFLA_LINKINFO, rtnl.attr_str(rtnl.IFLA_INFO_KIND, "veth"))
    assert struct.unpack_from("=HH", packed)[1] == rtnl.IFLA_LINKINFO | rtnl.NLA_F_NESTED
    assert rtnl.IFLA_LINKINFO in rtnl.attrs(packed, 0, len(packed))


def test_a_link_message_is_parsed_with_its_vxlan_data():
    data = (rtnl.attr_u32(rtnl.IFLA_VXLAN_ID, 7) + rtnl.attr(rtnl.IFLA_VXLAN_PORT, (8472).to_bytes(2, "big"))
            + rtnl.attr(rtnl.IFLA_VXLAN_LOCAL, bytes([10, 168, 0, 2])) + rtnl.attr_u8(rtnl.IFLA_VXLAN_LEARNING, 0)
            + rtnl.attr_u32(rtnl.IFLA_VXLAN_LINK, 3))
    body = (struct.pack("=BxHiII", 0, 1, 6, 0x1, 0) + rtnl.attr_str(rtnl.IFLA_IFNAME, "flannel.1")
            + rtnl.attr_u32(rtnl.IFLA_MTU, 1450) + rtnl.attr(rtnl.IFLA_ADDRESS, bytes.fromhex("0242ac110002"))
            + rtnl.attr_str(rtnl.IFLA_IFALIAS, "topoctl:t")
            + rtnl.nest(rtnl.IFLA_LINKINFO, rtnl.attr_str(rtnl.IFLA_INFO_KIND, "vxlan"),
                        rtnl.nest(rtnl.IFLA_INFO_DATA, data)))
    link = rtnl._link(body, 0, len(body))
    assert (link.index, link.name, link.mtu, link.mac, link.alias, link.kind) == (
        6, "flannel.1", 1450, "02:42:ac:11:00:02", "topoctl:t", "vxlan")
    assert link.vxlan == (7, 8472, bytes([10, 168, 0, 2]), False, 3)


def test_an_error_reply_carries_the_kernels_text():
    request = struct.pack("=IHHII", 32, rtnl.RTM_NEWLINK, 5, 9, 0)
    payload = struct.pack("=i", -95) + request + rtnl.attr_str(rtnl.NLMSGERR_ATTR_MSG, "Cannot change VNI")
    error = rtnl.refusal(payload, 0, len(payload), rtnl.F_CAPPED | rtnl.F_ACK_TLVS)
    assert error.code == 95 and error.message == "Cannot change VNI"
    assert rtnl.refusal(struct.pack("=i", 0) + request, 0, 20, 0) is None


def test_the_descriptor_limit_is_raised_for_many_namespaces():
    code = ("import resource; from topoctl.kernel.sockets import _allow_descriptors\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "_allow_descriptors(300); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert int(out) == (300 if hard == resource.RLIM_INFINITY or hard >= 300 else hard)


def test_a_dump_of_this_namespace_needs_no_privilege():
    handle = rtnl.Rtnl.open()
    try:
        names = {link.name for link in handle.links()}
        assert "lo" in names
        assert any(a.family == socket.AF_INET for a in handle.addresses())
    finally:
        handle.close()
