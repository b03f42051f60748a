"""Numbers of the kernel's rtnetlink ABI that give meaning to what a dump holds (flags, route
types and protocols, neighbour states), declared once for the codec and for assemble()."""

import socket

AF_BRIDGE = 7
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40  # operstate up: set by the kernel's linkwatch, up to a second after the carrier
IFF_LOWER_UP = 0x10000  # the carrier
RTPROT_KERNEL = 2
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x04
NUD_PERMANENT = 0x80
# neighbour cache entry states (linux/neighbour.h), by the names `ip neigh` prints
NUD_NAMES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE", 0x20: "FAILED",
             0x40: "NOARP", 0x80: "PERMANENT", 0x00: "NONE"}
ADDRESS_FAMILIES = (socket.AF_INET, socket.AF_INET6)
