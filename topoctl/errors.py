"""Typed errors. The library raises these; only the CLI turns them into output and exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Diagnostic:
    """One problem in an input file, with the place it was found."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    message: str
    hint: str = ""
    # 0: a problem of one value (YAML, schema, a bad address); 1: one between objects (a
    # semantic check). Rank 0 is listed first: a cause comes before what may follow from it.
    rank: int = field(default=0, compare=False, repr=False)

    def location(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class Rollback:
    """What the rollback of a failed apply did: the steps it ran back, and what it could not
    undo (nothing: the state before the apply is back)."""

    steps: int
    not_undone: tuple[str, ...] = ()


class TopoctlError(Exception):
    """Base of every error topoctl reports to a user. Carries a message and a hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", rollback: Rollback | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # what a failed apply rolled back; None when nothing was (or, a destroy, is never) undone
        self.rollback = rollback

    def as_json(self) -> dict:
        """The error as `-o json` prints it, so a program decides from fields, not from text."""
        rollback = self.rollback
        return {"type": _snake(type(self).__name__), "message": self.message, "hint": self.hint,
                "exit_code": self.exit_code,
                "rollback": None if rollback is None else
                {"steps": rollback.steps, "complete": not rollback.not_undone,
                 "not_undone": list(rollback.not_undone)}}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


class InvalidTopology(TopoctlError):
    """The input file is invalid: every problem found, each with FILE:LINE:COL."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.rank, d.line, d.column, d.message))
        count = len(self.diagnostics)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} found")


class UsageError(TopoctlError):
    """A command-line mistake (unknown host, bad option combination)."""

    exit_code = 2


class OwnershipConflict(TopoctlError):
    """The topology wants an object that exists but belongs to someone else."""


class KernelError(TopoctlError):
    """The kernel refused a change or a read."""


class Missing(KernelError):
    """What a step or a read needs is not there: a namespace, an interface."""


class PermissionDenied(TopoctlError):
    """Reading or changing network state needs privileges we do not have."""


class LockTimeout(TopoctlError):
    """Another topoctl holds the lock of a host for longer than we were willing to wait."""


class Terminated(KeyboardInterrupt):
    """SIGTERM before an apply or destroy has begun to change anything (waiting for a lock, say),
    raised where the process is, as Ctrl-C raises KeyboardInterrupt: exit 143."""


class ApplyFailed(TopoctlError):
    """An apply step failed; carries what was rolled back (None for a destroy, which does not)."""


class Interrupted(ApplyFailed):
    """A signal stopped an apply (or a destroy before its first step): the state is the one
    before the run, as the message and hint say. Exits 128 + the signal's number."""

    def __init__(self, message: str, hint: str, signum: int, rollback: Rollback | None = None) -> None:
        super().__init__(message, hint, rollback)
        self.signum = signum
        self.exit_code = 128 + signum


class StalePlan(TopoctlError):
    """A saved plan was made from a live state that is no longer there."""


class VerificationFailed(TopoctlError):
    """After apply, a fresh plan was not empty (the apply is then rolled back, a destroy not)."""
