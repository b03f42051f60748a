"""`topoctl watch`'s log: one line per reconciliation, for people or (-o json) for machines."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

# What a reconciliation came to: nothing to do; repaired; the new file is invalid (the last good
# one is kept); the apply failed (and was rolled back); another run held the lock; stopped.
IN_SYNC, APPLIED, INVALID, FAILED, BUSY = "in-sync", "applied", "invalid", "failed", "busy"


@dataclass(frozen=True)
class Reconciliation:
    trigger: str  # start | file | drift | interval | retry
    reason: str  # what set it off, in a few words ("veth-nginx1 deleted in docker0-local")
    result: str
    actions: int = 0
    seconds: float = 0.0
    message: str = ""
    hint: str = ""
    retry_in: float | None = None  # seconds until the next try, after a failure
    at: float = 0.0  # wall-clock time it ended (time.time())

    def as_json(self) -> dict:
        return {"time": _stamp(self.at), "trigger": self.trigger, "reason": self.reason, "result": self.result,
                "actions": self.actions, "seconds": round(self.seconds, 3), "message": self.message,
                "hint": self.hint, "retry_in": self.retry_in}


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def line(entry: Reconciliation, machine: bool) -> str:
    if machine:
        return json.dumps(entry.as_json(), sort_keys=False)
    what = f"{entry.trigger} ({entry.reason})" if entry.reason else entry.trigger
    if entry.result == IN_SYNC:
        outcome = "in sync, nothing to do"
    elif entry.result == APPLIED:
        outcome = f"applied {entry.actions} action{'s' if entry.actions != 1 else ''}, verified"
    elif entry.result == INVALID:
        outcome = "invalid file, kept the last good one"
    elif entry.result == BUSY:
        outcome = "another run holds the lock"
    else:
        outcome = "failed"
    text = f"{_stamp(entry.at)} {what}: {outcome} in {entry.seconds:.2f}s"
    if entry.message:
        text += f"\n  error: {entry.message}"
    if entry.hint:
        text += f"\n  hint: {entry.hint}"
    if entry.retry_in is not None:
        text += f"\n  next try in {entry.retry_in:g}s"
    return text
