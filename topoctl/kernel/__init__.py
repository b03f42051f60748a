"""The kernel layer, the only code that talks netlink or touches /run/netns: the rtnetlink codec, namespaces, sockets, executors, reads."""
