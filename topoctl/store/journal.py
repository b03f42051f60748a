"""The apply journal: what an apply is about to do, step by step, so that a run killed part way
(SIGKILL, power loss of the process) can be noticed and taken over by the next one.

Before each step the applier writes its intent; after it, that it is done. The journal is
removed when the apply ends, successfully or rolled back. A journal found by the next run
(which holds the host locks, so its writer is gone) means an interrupted apply: the objects
of steps begun but not finished may exist without topoctl's mark (a namespace without its
record, a link without its alias), and are adopted before planning, so that the next plan
converges instead of refusing them as foreign.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from topoctl.core.actions import Action, AddRoute, CreateBridge, CreateNamespace, CreateVeth, CreateVxlan, ReplaceRoute
from topoctl.paths import journal_dir, journal_path

# Test hook: every journal line is also appended here, tagged with the writer's pid, and kept
# (the journal itself is removed when a run ends), so that tests can see how runs followed
# each other.
TEE_ENV = "TOPOCTL_JOURNAL_TEE"


def _path(topology: str) -> str:
    return journal_path(topology)


def _objects(action: Action) -> list[dict]:
    """What a step creates that must carry topoctl's mark: namespaces, links, root routes."""
    if isinstance(action, CreateNamespace):
        n = action.netns
        return [{"netns": n.name, "host": n.host or "", "role": n.role}]
    if isinstance(action, (CreateBridge, CreateVxlan)):
        return [{"link": action.link.name, "scope": action.link.scope}]
    if isinstance(action, CreateVeth):
        return [{"link": end.name, "scope": end.scope} for end in (action.a, action.b)]
    if isinstance(action, (AddRoute, ReplaceRoute)):
        route = action.route if isinstance(action, AddRoute) else action.new
        if route.scope is None:
            return [{"route": [route.table, str(route.dst), route.metric]}]
    return []


class Journal:
    """Appends one JSON line per event to /run/topoctl/journal/<topology>.jsonl."""

    def __init__(self, topology: str, verb: str, steps: int) -> None:
        os.makedirs(journal_dir(), mode=0o755, exist_ok=True)
        self.path = _path(topology)
        self.out = open(self.path, "a", encoding="utf-8")
        tee = os.environ.get(TEE_ENV)
        self.tee = open(tee, "a", encoding="utf-8") if tee else None
        self._write({"event": "begin", "pid": os.getpid(), "verb": verb, "steps": steps,
                     "since": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _write(self, *records: dict) -> None:
        """The records' lines, in one write: a run of steps done together is logged at once."""
        self.out.write("".join(json.dumps(record) + "\n" for record in records))
        self.out.flush()  # a line must reach the file before the step's first netlink request
        if self.tee is not None:
            pid = os.getpid()
            self.tee.write("".join(json.dumps({"pid": pid, **record}) + "\n" for record in records))
            self.tee.flush()

    def intend(self, first: int, *actions: Action) -> None:
        """Steps first, first + 1, ... are about to be done (their objects, for recovery)."""
        self._write(*({"event": "intend", "step": first + offset, "what": f"{action.verb} {action.subject()}",
                       "objects": _objects(action)} for offset, action in enumerate(actions)))

    def done(self, first: int, count: int = 1) -> None:
        """Steps first .. first + count - 1 are done."""
        self._write(*({"event": "done", "step": step} for step in range(first, first + count)))

    def paused(self, step: int) -> None:
        """Test hook (applier.PAUSE_ENV): the run waits before step `step`."""
        self._write({"event": "paused", "step": step})

    def close(self) -> None:
        if self.tee is not None:
            self._write({"event": "end"})
            self.tee.close()
        self.out.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class Interrupted:
    """An apply that did not end: who, how far, and what it may have left unmarked."""

    pid: int
    since: str
    steps: int
    reached: int  # the last step it began
    unfinished: tuple[dict, ...]  # objects of steps begun and not done
    last: str  # what that step was

    def describe(self) -> str:
        return (f"an earlier apply (pid {self.pid}, started {self.since}) was interrupted at step {self.reached} of "
                f"{self.steps} ({self.last}); taking over what it had begun")


def interrupted(topology: str) -> Interrupted | None:
    try:
        with open(_path(topology), encoding="utf-8") as src:
            lines = [json.loads(line) for line in src if line.strip()]
    except (FileNotFoundError, ValueError):
        return None
    begin = next((r for r in lines if r.get("event") == "begin"), {})
    intents = {r["step"]: r for r in lines if r.get("event") == "intend"}
    finished = {r["step"] for r in lines if r.get("event") == "done"}
    open_steps = [intents[s] for s in sorted(intents) if s not in finished]
    last = intents[max(intents)] if intents else {}
    return Interrupted(pid=int(begin.get("pid", 0)), since=str(begin.get("since", "?")),
                       steps=int(begin.get("steps", 0)), reached=int(max(intents)) if intents else 0,
                       unfinished=tuple(o for r in open_steps for o in r.get("objects", [])),
                       last=str(last.get("what", "before the first step")))


def forget(topology: str) -> None:
    try:
        os.unlink(_path(topology))
    except FileNotFoundError:
        pass
