"""Which notifications are drift, as data: core.drift's filter without a kernel. No root."""

from __future__ import annotations

from topoctl.core.drift import (AddressChange, DriftFilter, LinkChange, NamespaceGone, NeighbourChange, Overflow,
                                RouteChange)

from .test_planner import HOST, context

UP = (True, 1500, "02:42:ac:11:00:02", 0, "veth", None)


def watching(shared: bool = False) -> DriftFilter:
    desired = context().desired
    whole = {name for name in desired.namespaces if not (shared and name == HOST)}
    return DriftFilter.of(desired, whole)


def test_a_link_is_drift_when_what_the_planner_compares_changes_not_when_the_kernel_settles():
    f = watching()
    assert f.drift(LinkChange("nginx-1", 4, "eth0", False, UP, initial=True)) is None  # primed
    assert f.drift(LinkChange("nginx-1", 4, "eth0", False, UP)) is None  # carrier, operstate: the same
    why = f.drift(LinkChange("nginx-1", 4, "eth0", False, (True, 1400, *UP[2:])))
    assert why == "eth0 changed in nginx-1: mtu 1500 -> 1400"
    assert f.drift(LinkChange("nginx-1", 4, "eth0", True, UP)) == "eth0 deleted in nginx-1"
    assert f.drift(LinkChange("nginx-1", 5, "eth9", False, UP)) == "eth9 appeared in nginx-1"  # ours whole


def test_in_a_namespace_shared_with_others_only_the_desired_interfaces_count():
    f = watching(shared=True)
    assert f.drift(LinkChange(HOST, 9, "someone-else0", False, UP)) is None
    assert f.drift(AddressChange(HOST, 9, False, "10.1.1.1/24", False)) is None
    assert f.drift(LinkChange(HOST, 3, "veth-nginx1", False, UP, initial=True)) is None
    assert f.drift(AddressChange(HOST, 3, False, "10.1.1.1/24", False)) == \
        "address 10.1.1.1/24 added on veth-nginx1 in demo-local"
    assert f.drift(LinkChange(HOST, 3, "veth-nginx1", True, UP)) == "veth-nginx1 deleted in demo-local"


def test_addresses_and_routes_that_repeat_what_is_there_or_that_the_kernel_makes_are_not_drift():
    f = watching()
    assert f.drift(AddressChange("nginx-1", 4, False, "fd00::2/64", False, initial=True)) is None
    assert f.drift(AddressChange("nginx-1", 4, False, "fd00::2/64", False)) is None  # DAD ended
    assert f.drift(AddressChange("nginx-1", 4, False, "fe80::1/64", True)) is None  # link-local
    assert f.drift(AddressChange("nginx-1", 4, True, "fd00::2/64", False)) is not None
    route = RouteChange("nginx-1", 4, False, "0.0.0.0/0", True, ("172.17.0.1", 0), initial=True)
    assert f.drift(route) is None
    assert f.drift(RouteChange("nginx-1", 4, False, "0.0.0.0/0", True, ("172.17.0.1", 0))) is None  # replaced by itself
    assert f.drift(RouteChange("nginx-1", 4, False, "172.17.0.0/16", False)) is None  # proto kernel
    assert f.drift(RouteChange("nginx-1", 4, True, "0.0.0.0/0", True, ("172.17.0.1", 0))) == \
        "route 0.0.0.0/0 deleted in nginx-1"


def test_a_deleted_interface_takes_its_routes_along_without_a_notification_each():
    f = watching()
    f.drift(LinkChange("nginx-1", 4, "eth0", False, UP, initial=True))
    f.drift(RouteChange("nginx-1", 4, False, "0.0.0.0/0", True, ("172.17.0.1", 0), initial=True))
    f.drift(LinkChange("nginx-1", 4, "eth0", True, UP))
    f.drift(LinkChange("nginx-1", 6, "eth0", False, UP))  # made again (by the repair)
    assert f.drift(RouteChange("nginx-1", 6, False, "0.0.0.0/0", True, ("172.17.0.1", 0))) is not None
    assert len(f._routes) == 1 and len(f._links) == 1  # nothing of the old index is kept


def test_overlay_entries_namespaces_and_lost_notifications():
    f = watching()
    assert f.drift(NeighbourChange("nginx-1", 4, False, True, "10.0.0.9")) is None  # not a VXLAN device
    assert f.drift(NamespaceGone("nginx-1")) == "namespace nginx-1 deleted"
    assert f.drift(NamespaceGone("someone-else")) is None
    assert f.drift(Overflow(HOST)) == "notifications lost in demo-local (queue overflow)"
    assert f.drift(LinkChange("elsewhere", 4, "eth0", True, UP)) is None  # not one of the topology's


def test_a_notification_becomes_the_change_of_its_message_type():
    """kernel/notify: a decoded notification becomes the Change its rtnetlink type names."""
    from topoctl.kernel import notify
    from topoctl.kernel.rtnl_decode import RTM_DELLINK, RTM_NEWLINK, notifications

    from .nlfake import link, message, link_body

    gram = link(7, "veth-a", seq=0) + message(RTM_DELLINK, link_body(8, "veth-b"), seq=0)
    (new_kind, _, _, new), (del_kind, _, _, gone) = notifications(gram)
    assert (new_kind, del_kind) == (RTM_NEWLINK, RTM_DELLINK)
    added, deleted = notify._changes("ns1", new_kind, new), notify._changes("ns1", del_kind, gone)
    assert isinstance(added, LinkChange) and (added.index, added.name, added.deleted) == (7, "veth-a", False)
    assert isinstance(deleted, LinkChange) and (deleted.index, deleted.name, deleted.deleted) == (8, "veth-b", True)
