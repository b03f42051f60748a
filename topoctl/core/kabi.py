"""Numbers of the kernel's rtnetlink ABI that give meaning to what a dump holds (flags, route
types and protocols, neighbour states), declared once for the codec and for assemble()."""

import socket

AF_BRIDGE = 7
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTPROT_KERNEL = 2
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x04
NUD_PERMANENT = 0x80
ADDRESS_FAMILIES = (socket.AF_INET, socket.AF_INET6)
