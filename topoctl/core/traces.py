"""What `topoctl trace` saw: the kernel's trace events of one probe, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

from topoctl.core.state import Scope

TRACE_PREFIX = "topoctltrace_"  # the temporary tables' names: never a topology's (topoctl-<name>)


@dataclass(frozen=True)
class TraceEvent:
    scope: Scope
    trace_id: int
    family: str
    table: str
    chain: str
    kind: str  # rule | return | policy
    handle: int | None
    verdict: str | None  # accept, drop, continue, jump, ...
    target: str | None  # the chain of a jump or goto
    iif: int | None
    oif: int | None
    rule: str = ""  # the rule's text, looked up by its handle
    transport: bytes = b""  # the first bytes of the transport header, in a traversal's first event
    reply: bool | None = None  # the probe's way back (its reply), found from `transport`

    @property
    def ours(self) -> bool:
        return self.table.startswith(TRACE_PREFIX)


@dataclass(frozen=True)
class Traced:
    reached: bool
    detail: str
    events: tuple[TraceEvent, ...]
    rules: dict  # (scope, family, table, handle) -> the rule's text
