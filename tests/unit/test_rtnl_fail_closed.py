"""The codec fails closed: a reply it cannot trust is a KernelError, never a short table, a
success or a traceback. Built from raw bytes (captured in data/, or made here); no socket."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from topoctl.kernel import rtnl
from topoctl.errors import KernelError

from .nlfake import FakeSocket, ack, done, handle, link, link_body, load, message, retag

NAMES = ["lo", "br0", "v1", "v0", "vx0"]  # data/links.bin, in its order


# -- dumps across datagrams ---------------------------------------------------------------

def test_a_captured_dump_of_three_datagrams_is_read_whole():
    ours, sock = handle(load("links.bin"))
    links = ours.links()
    assert [m.name for m in links] == NAMES
    assert links[4].vxlan == (42, 4789, bytes([10, 99, 0, 1]), False, 4) and links[1].stp_state == 1
    assert links[1].alias == "topoctl:fuzz" and (links[2].master, links[2].link) == (2, 4)
    assert not ours.unfinished and not sock.queue


def test_a_dump_made_of_several_datagrams_skips_another_requests_leftovers():
    grams = [link(1, "lo") + link(2, "a"), link(9, "stale", seq=77) + link(10, "stale2", seq=77),
             link(3, "b") + link(4, "c"), link(5, "d") + done()]
    ours, _ = handle(grams)
    assert [m.name for m in ours.links()] == ["lo", "a", "b", "c", "d"]


def test_a_dump_without_its_end_is_an_error_not_what_came_so_far():
    ours, _ = handle([link(1, "lo") + link(2, "a")])  # then nothing: the reply timeout
    with pytest.raises(KernelError, match="reading the interfaces: no reply from the kernel"):
        ours.links()


# -- NLMSG_DONE carrying an error -----------------------------------------------------------

def test_a_dump_that_ends_with_an_error_is_a_kernel_error():
    ours, _ = handle([link(1, "lo") + link(2, "a"), done(error=-errno.EMSGSIZE)])
    with pytest.raises(KernelError, match="reading the interfaces: the kernel ended the dump with an error: "
                                          "Message too long$"):
        ours.links()
    assert not ours.unfinished  # it ended: the next dump needs no settling


def test_a_dump_that_ends_with_an_error_carries_the_extended_ack_text():
    ours, _ = handle([link(1, "lo"), done(error=-errno.EINVAL, text="Invalid values in header for link dump")])
    with pytest.raises(KernelError, match=r"Invalid argument \(Invalid values in header for link dump\)"):
        ours.links()


def test_a_refused_dump_is_a_kernel_error():
    ours, _ = handle([ack(error=-errno.EOPNOTSUPP, text="not here")])
    with pytest.raises(KernelError, match=r"reading the routes: the kernel refused the dump: Operation not supported \(not here\)"):
        ours.routes()


@pytest.mark.parametrize("body", [b"", b"\0\0"], ids=["empty", "short"])
def test_a_dump_end_too_short_for_its_code_is_malformed(body):
    ours, _ = handle([link(1, "lo") + message(rtnl.NLMSG_DONE, body)])
    with pytest.raises(KernelError, match="malformed: a dump's end message's body is"):
        ours.links()


@pytest.mark.parametrize("code", [1, -4096, -2 ** 31])
def test_a_dump_end_with_a_code_no_errno_has_is_malformed(code):
    ours, _ = handle([link(1, "lo") + done(error=code)])
    with pytest.raises(KernelError, match=f"malformed: a dump's end carries the code {code}$"):
        ours.links()


def test_messages_after_the_end_of_a_dump_are_malformed():
    ours, _ = handle([link(1, "lo") + done() + link(2, "late")])
    with pytest.raises(KernelError, match="bytes after the end of the dump"):
        ours.links()


# -- NLM_F_DUMP_INTR ------------------------------------------------------------------------

def _interrupted_then(clean: int):
    """A reply function: the links capture, with NLM_F_DUMP_INTR on one middle message until
    request number `clean` (counting from 1)."""
    calls = []

    def reply(seq: int, request: bytes) -> list[bytes]:
        calls.append(seq)
        grams = load("links.bin")
        return retag(grams, seq, rtnl.F_DUMP_INTR, at=2) if len(calls) < clean else retag(grams, seq)

    return reply


def test_a_dump_interrupted_once_is_read_again_and_its_second_reading_kept():
    reply = _interrupted_then(clean=2)
    ours, sock = handle(reply, reply)
    assert [m.name for m in ours.links()] == NAMES
    assert len(sock.sent) == 2
    assert sock.queued_at_send == [0, 0]  # the interrupted reading was drained before the retry
    assert not ours.unfinished


def test_a_table_that_keeps_changing_is_a_kernel_error_after_the_bound():
    reply = _interrupted_then(clean=10 ** 6)
    ours, sock = handle(*[reply] * (rtnl.DUMP_ATTEMPTS + 3))
    with pytest.raises(KernelError, match=f"the table kept changing while it was read \\({rtnl.DUMP_ATTEMPTS} attempts"):
        ours.links()
    assert len(sock.sent) == rtnl.DUMP_ATTEMPTS and set(sock.queued_at_send) == {0}
    assert not ours.unfinished


def test_the_interrupted_flag_on_the_dumps_end_alone_counts_too():
    ours, sock = handle([link(1, "lo") + done(flags=rtnl.F_MULTI | rtnl.F_DUMP_INTR)], [link(1, "lo", seq=2) + done(seq=2)])
    assert [m.name for m in ours.links()] == ["lo"] and len(sock.sent) == 2


# -- attributes -----------------------------------------------------------------------------

def _link_with_raw_attribute(raw: bytes) -> bytes:
    return message(rtnl.RTM_NEWLINK, link_body(7, "x") + raw) + done()


@pytest.mark.parametrize("raw, problem", [
    (struct.pack("=HH", 0, 3) + b"abcd", "gives a length of 0"),
    (struct.pack("=HH", 3, 3) + b"abcd", "gives a length of 3"),
    (struct.pack("=HH", 12, 3) + b"abcd", "claims 12 bytes, past the end"),
    (struct.pack("=HH", 0xFFFF, 3) + b"abcd", "claims 65535 bytes, past the end"),
    (b"\0\0", "2 stray bytes after the last attribute"),
], ids=["zero", "three", "over-long", "huge", "stray"])
def test_a_truncated_or_over_long_attribute_is_malformed(raw, problem):
    ours, _ = handle([_link_with_raw_attribute(raw)])
    with pytest.raises(KernelError, match=f"reading the interfaces: the kernel's reply is malformed: .*{problem}"):
        ours.links()


def test_an_attribute_past_its_nest_is_malformed_even_inside_the_message():
    inner = struct.pack("=HH", 40, rtnl.IFLA_INFO_KIND) + b"veth\0\0\0\0"  # claims 40 bytes in a nest of 16
    nest = struct.pack("=HH", 4 + len(inner), rtnl.IFLA_LINKINFO) + inner
    ours, _ = handle([_link_with_raw_attribute(nest + rtnl.attr_str(rtnl.IFLA_IFALIAS, "x" * 40))])
    with pytest.raises(KernelError, match="past the end of what holds it"):
        ours.links()


@pytest.mark.parametrize("raw, problem", [
    (rtnl.attr(rtnl.IFLA_MTU, b"\x05\xdc"), "an MTU is 2 bytes long, not 4"),
    (rtnl.attr(rtnl.IFLA_MASTER, b"\0" * 6), "a master index is 6 bytes long"),
    (rtnl.nest(rtnl.IFLA_LINKINFO, rtnl.attr_str(rtnl.IFLA_INFO_KIND, "vxlan"),
               rtnl.nest(rtnl.IFLA_INFO_DATA, rtnl.attr(rtnl.IFLA_VXLAN_PORT, b"\x12"))), "a VXLAN port is 1 bytes"),
    (rtnl.nest(rtnl.IFLA_LINKINFO, rtnl.attr_str(rtnl.IFLA_INFO_KIND, "vxlan"),
               rtnl.nest(rtnl.IFLA_INFO_DATA, rtnl.attr(rtnl.IFLA_VXLAN_LOCAL, b"\n\0\0"))), "local address is 3"),
], ids=["mtu", "master", "vxlan-port", "vxlan-local"])
def test_a_fixed_size_value_of_another_size_is_malformed(raw, problem):
    ours, _ = handle([_link_with_raw_attribute(raw)])
    with pytest.raises(KernelError, match=problem):
        ours.links()


def test_an_address_of_the_wrong_size_for_its_family_is_malformed():
    body = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 2) + rtnl.attr(rtnl.IFA_LOCAL, b"\n\0\0\1\0")
    ours, _ = handle([message(rtnl.RTM_NEWADDR, body) + done()])
    with pytest.raises(KernelError, match="an address is 5 bytes long, not 4"):
        ours.addresses()


def test_a_name_that_is_not_utf8_is_read_not_a_traceback():
    ours, _ = handle([message(rtnl.RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 3, 0, 0)
                              + rtnl.attr(rtnl.IFLA_IFNAME, b"eth\xff\0")) + done()])
    assert ours.links()[0].name.encode("utf-8", "surrogateescape") == b"eth\xff"


# -- headers --------------------------------------------------------------------------------

@pytest.mark.parametrize("gram, problem", [
    (link(1, "lo")[:-4] , "claims .* bytes, past the end of its .*-byte datagram"),
    (message(rtnl.RTM_NEWLINK, link_body(1, "lo"), length=12) + done(), "gives a length of 12"),
    (message(rtnl.RTM_NEWLINK, link_body(1, "lo"), length=0) + done(), "gives a length of 0"),
    (message(rtnl.RTM_NEWLINK, link_body(1, "lo"), length=4000) + done(), "claims 4000 bytes"),
    (link(1, "lo") + b"\0" * 8, "8 stray bytes at the end"),
    (message(rtnl.RTM_NEWLINK, b"\0" * 8) + done(), "an interface message's body is 8 bytes, shorter than its 16"),
    (message(rtnl.RTM_NEWROUTE, b"\0" * 8) + done(), "a message of type 24 in a dump of type 16"),
    (b"", "an empty datagram"),
], ids=["cut", "short", "zero", "long", "stray", "short-body", "wrong-type", "empty"])
def test_a_header_whose_length_lies_is_malformed(gram, problem):
    ours, _ = handle([gram])
    with pytest.raises(KernelError, match=problem) as raised:
        ours.links()
    assert raised.value.hint  # says it was not used, and to report it
    assert ours.unfinished  # the dump may still run in the kernel: the next one settles first


def test_a_short_header_in_a_stale_datagram_is_malformed_too():
    ours, _ = handle([link(1, "lo", seq=99)[:10]])
    with pytest.raises(KernelError, match="10 stray bytes"):
        ours.links()


def test_a_datagram_larger_than_the_buffer_is_an_error_not_a_short_read():
    class Big(FakeSocket):
        def recv_into(self, buffer, nbytes=0, flags=0):
            assert flags & socket.MSG_TRUNC
            return len(buffer) + 1

    ours = rtnl.Rtnl(Big([]))
    with pytest.raises(KernelError, match="a datagram of 1048577 bytes"):
        ours.links()


# -- acknowledgements -----------------------------------------------------------------------

def test_a_captured_uncapped_refusal_carries_its_text():
    ours, _ = handle(load("refusal-uncapped.bin"))
    with pytest.raises(rtnl.NetlinkError) as refused:
        ours.call(rtnl.RTM_NEWLINK, 0, b"\0" * 16)
    assert refused.value.code == errno.EOPNOTSUPP and refused.value.message == "Cannot change VNI"


def test_a_captured_capped_refusal_carries_its_text():
    ours, _ = handle(load("refusal-capped.bin"))
    with pytest.raises(rtnl.NetlinkError) as refused:
        ours.call(rtnl.RTM_NEWLINK, 0, b"\0" * 16)
    assert refused.value.code == errno.EOPNOTSUPP and refused.value.message == "Cannot change VNI"


def test_the_uncapped_layout_skips_the_whole_quoted_request():
    # the quoted request holds an attribute that a reader assuming the capped layout takes for the text
    decoy = rtnl.attr_str(rtnl.NLMSGERR_ATTR_MSG, "decoy")
    request = struct.pack("=IHHII", 16 + 16 + len(decoy), rtnl.RTM_NEWLINK, 5, 1, 0) + b"\0" * 16 + decoy
    ours, _ = handle([ack(error=-errno.EINVAL, request=request, text="the real text")])
    with pytest.raises(rtnl.NetlinkError) as refused:
        ours.call(rtnl.RTM_NEWLINK, 0, b"")
    assert refused.value.message == "the real text"


def test_the_capped_layout_has_only_the_requests_header():
    request = struct.pack("=IHHII", 200, rtnl.RTM_NEWLINK, 5, 1, 0) + b"\0" * 184  # its header says 200 bytes
    ours, _ = handle([ack(error=-errno.EINVAL, request=request, text="capped text", capped=True)])
    with pytest.raises(rtnl.NetlinkError) as refused:
        ours.call(rtnl.RTM_NEWLINK, 0, b"")
    assert refused.value.message == "capped text"


def test_an_uncapped_refusal_quoting_a_request_longer_than_itself_is_malformed():
    request = struct.pack("=IHHII", 400, rtnl.RTM_NEWLINK, 5, 1, 0) + b"\0" * 16
    ours, _ = handle([ack(error=-errno.EINVAL, request=request, text="x")])
    with pytest.raises(KernelError, match="quotes a request of 400 bytes"):
        ours.call(rtnl.RTM_NEWLINK, 0, b"")


def test_an_acknowledgement_is_success():
    ours, sock = handle([ack()])
    assert ours.call(rtnl.RTM_NEWLINK, 0, b"") is None
    assert struct.unpack_from("=H", sock.sent[0], 6)[0] & rtnl.F_ACK


@pytest.mark.parametrize("reply, problem", [
    ([], "no reply from the kernel"),
    ([ack(seq=5)], "no reply from the kernel"),  # an answer to someone else
    ([message(rtnl.NLMSG_ERROR, b"\0" * 8, flags=0)], "an error message's body is 8 bytes"),
    ([message(rtnl.NLMSG_ERROR, struct.pack("=i", 0), flags=0, length=12)], "gives a length of 12"),
    ([ack()[:-4]], "past the end of its"),
    ([done()], "a message of type 3 in answer to a request to be acknowledged"),
    ([message(rtnl.NLMSG_ERROR, struct.pack("=i", 5) + b"\0" * 16, flags=0)], "carries the code 5$"),
    ([message(rtnl.NLMSG_ERROR, struct.pack("=i", -2 ** 31) + b"\0" * 16, flags=0)], "carries the code -2147483648"),
], ids=["nothing", "other-seq", "short-body", "header-lies", "cut", "wrong-type", "positive-code", "huge-code"])
def test_an_acknowledgement_that_never_comes_or_is_malformed_is_not_success(reply, problem):
    ours, _ = handle(reply)
    with pytest.raises(KernelError, match=problem):
        ours.call(rtnl.RTM_NEWLINK, 0, b"")


def test_a_lookup_reads_its_answer_and_a_missing_link_is_none():
    ours, _ = handle([link(3, "eth0", flags=0)], [ack(seq=2, error=-errno.ENODEV)])
    assert ours.link_index("eth0") == 3
    assert ours.link_by_name("nope") is None


def test_a_lookup_answered_by_a_bare_acknowledgement_is_malformed():
    ours, _ = handle([ack()])
    with pytest.raises(KernelError, match="looking up an interface: .*an acknowledgement where an object"):
        ours.link_index("eth0")


# -- the socket -----------------------------------------------------------------------------

def test_socket_errors_are_kernel_errors():
    ours, sock = handle([link(1, "lo") + done()])
    sock.recv_error = OSError(errno.ENOBUFS, "No buffer space available")
    with pytest.raises(KernelError, match="reading the interfaces: reading the kernel's reply failed: No buffer"):
        ours.links()

    class Refusing(FakeSocket):
        def send(self, data):
            raise OSError(errno.ECONNREFUSED, "Connection refused")

    with pytest.raises(KernelError, match="deleting an interface: sending the request failed: Connection refused"):
        rtnl.Rtnl(Refusing()).link_del(3)


def test_a_socket_that_cannot_be_opened_is_a_kernel_error_with_a_hint(monkeypatch):
    def no_more(*_):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket, "socket", no_more)
    with pytest.raises(KernelError, match="opening a netlink socket: Too many open files") as raised:
        rtnl.Rtnl.open()
    assert "ulimit" in raised.value.hint


def test_replies_are_awaited_for_a_bounded_time():
    _, sock = handle()
    seconds, micro = struct.unpack("@ll", sock.options[(socket.SOL_SOCKET, socket.SO_RCVTIMEO)])
    assert seconds == rtnl.REPLY_TIMEOUT and micro == 0


# -- strict checking ------------------------------------------------------------------------

def test_a_table_is_filtered_by_the_kernel_with_strict_checking():
    ours, sock = handle(load("routes.bin"))
    ours.routes(254)  # (this capture is of all tables: a strict kernel would have sent table 254 only)
    assert sock.options[(rtnl.SOL_NETLINK, rtnl.NETLINK_GET_STRICT_CHK)] == 1 and ours.strict is True
    assert rtnl.attr_u32(rtnl.RTA_TABLE, 254) in sock.sent[0]


def test_without_strict_checking_a_table_is_filtered_here():
    ours, _ = handle(load("routes.bin"), retag(load("routes.bin"), 2), refuse_strict=True)
    main = ours.routes(254)
    assert ours.strict is False and main and {r.table for r in main} == {254}
    assert len(main) == len([r for r in rtnl.Rtnl(FakeSocket(load("routes.bin"))).routes() if r.table == 254])
    assert {r.table for r in ours.routes(255)} == {255}  # no second attempt at the option
