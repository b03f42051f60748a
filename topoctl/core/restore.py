"""What a rollback rebuilds: a topology's objects as they were before a failed run. Pure.

A failed apply is undone by planning again, from the live state it left towards the live state
observed before it started, and running that plan. The planner already knows how to build,
change and delete anything it can plan, so every step is undone by the same code that does
steps, deletions included: a deleted veth comes back with its peer, MAC, MTU, master, state,
addresses and routes; a deleted namespace with everything the observation saw inside it.
"""

from __future__ import annotations

from topoctl.core.state import State


def restore_target(before: State, topology: str) -> State:
    """The desired state that puts back what `topology` owned in `before`.

    Only the topology's own objects are in it: foreign ones were never changed, so the planner
    leaves them alone, and anything the failed run created (not in `before`) is deleted. What
    the kernel makes by itself (loopback addresses, IPv6 link-local addresses, kernel routes)
    is left to the kernel.
    """
    target = State(scopes=set(before.scopes))
    target.namespaces = {name: netns for name, netns in before.namespaces.items() if netns.owner == topology}
    owned = {key: link for key, link in before.links.items() if link.owner == topology}
    loopbacks = {key: link for key, link in before.links.items()
                 if link.kind == "loopback" and key[0] in target.namespaces}
    target.links = {**loopbacks, **owned}
    target.addresses = {a for a in before.addresses if (a.scope, a.link) in owned and not a.kernel_made}
    target.routes = {key: route for key, route in before.routes.items() if route.owner == topology}
    target.neighbours = {n for n in before.neighbours if (n.scope, n.dev) in owned}
    target.fdb = {f for f in before.fdb if (f.scope, f.dev) in owned}
    target.sysctls = dict(before.sysctls)
    target.tables = dict(before.tables)
    target.qdiscs = {key: q for key, q in before.qdiscs.items() if key in owned and not isinstance(q, str)}  # only ours are read: each is written back exactly, in one transaction
    return target
