"""Saved plans, as Terraform's `plan -out`: `topoctl plan --out PLAN` writes the plan with the
topology it came from and a fingerprint of the live state it was computed against; `topoctl
apply PLAN` applies it only if the live state still has that fingerprint (and so the plan,
a pure function of the two, is the same), and refuses a stale plan otherwise.

A saved plan is JSON, so it can be read in review; the `plan` key is `plan -o json`'s form.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

from topoctl.errors import InvalidTopology, Diagnostic
from topoctl.core.state import State

FORMAT = "topoctl-plan/v1"


def _compared(value: object) -> tuple:
    """A value's fields that take part in equality: what the planner compares, not what the
    kernel keeps changing on its own (ifindexes, a bridge port's STP state)."""
    return tuple(getattr(value, f.name) for f in fields(value) if f.compare)  # type: ignore[arg-type]


def fingerprint(state: State) -> str:
    """A hash of everything the planner looks at in a live state.

    Left out is what moves under a settled topology for a second after a link changes: port
    states, and the IPv6 link-local addresses the kernel adds and removes (never planned)."""
    parts = [
        sorted(repr(n) for n in state.namespaces.values()),
        sorted(repr(_compared(link)) for link in state.links.values()),
        sorted(repr(a) for a in state.addresses if not a.kernel_made),
        sorted(repr(r) for r in state.routes.values()),
        sorted(repr(item) for item in state.sysctls.items()),
        sorted(repr(n) for n in state.neighbours),
        sorted(repr(f) for f in state.fdb),
        sorted(repr(t) for t in state.tables.values()),
        sorted(repr((key, q if isinstance(q, str) else _compared(q))) for key, q in state.qdiscs.items()),
        sorted(repr(item) for item in state.foreign_drops.items()),
        sorted(repr(item) for item in state.foreign_tables.items()),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass(frozen=True)
class SavedPlan:
    source: str  # the topology file's path when the plan was made
    text: str  # and its content, so the plan does not depend on the file staying the same
    hosts: tuple[str, ...]
    emulate: bool
    destroy: bool
    fingerprint: str
    plan: dict

    def dumps(self) -> str:
        return json.dumps({"format": FORMAT, "source": self.source, "topology": self.text, "hosts": list(self.hosts),
                           "emulate": self.emulate, "destroy": self.destroy, "fingerprint": self.fingerprint,
                           "plan": self.plan}, indent=2) + "\n"


def is_saved_plan(path: str) -> bool:
    try:
        with open(path, "rb") as src:
            head = src.read(256)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and FORMAT.encode() in head


def load(path: str) -> SavedPlan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        saved = SavedPlan(source=str(data["source"]), text=str(data["topology"]), hosts=tuple(data["hosts"]),
                          emulate=bool(data["emulate"]), destroy=bool(data["destroy"]),
                          fingerprint=str(data["fingerprint"]), plan=dict(data["plan"]))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidTopology([Diagnostic(path, 0, 0, f"not a saved topoctl plan ({err})",
                                          "make one with: topoctl plan --out PLAN FILE")]) from None
    return saved
