"""Plan actions on topoctl's nftables tables (each writes or deletes one whole table, in one
nftables transaction, so a table is never left half written) and on the tbf qdiscs of a
veth end's `rate`."""

from __future__ import annotations

from dataclasses import dataclass

from topoctl.core.actions import CHANGE, CREATE, DELETE, Action
from topoctl.core.nft_text import rule_changes
from topoctl.core.state import NftTable, Scope, Tbf, scope_label


class _OnTable:
    @property
    def table(self) -> NftTable:
        raise NotImplementedError

    @property
    def scope(self) -> Scope:
        return self.table.scope

    def subject(self) -> str:
        return f"nftables table {self.table.family} {self.table.name} in {scope_label(self.scope)}"


@dataclass(frozen=True)
class WriteTable(_OnTable, Action):
    """Create the table, or replace a live one that differs (`old`) with exactly `new`."""

    new: NftTable
    old: NftTable | None = None
    phase = 20  # after the links, addresses and routes its rules are about
    noun = "table"

    @property
    def table(self) -> NftTable:
        return self.new

    @property
    def verb(self) -> str:  # type: ignore[override]
        return CHANGE if self.old is not None else CREATE

    def changes(self) -> list[tuple[str, str, str]]:
        return rule_changes(self.old, self.new)

    def details(self) -> dict:
        return {"family": self.new.family, "name": self.new.name,
                "rules": [{"change": sign, "chain": chain, "rule": text} for sign, chain, text in self.changes()]}

    def as_json(self) -> dict:
        out = super().as_json()
        out["rules"] = self.details()["rules"]
        return out


@dataclass(frozen=True)
class DeleteTable(_OnTable, Action):
    old: NftTable
    phase = 1
    verb = DELETE
    noun = "table"

    @property
    def table(self) -> NftTable:
        return self.old

    def details(self) -> dict:
        return {"family": self.old.family, "name": self.old.name}


def rate_label(tbf: "Tbf | str | None") -> str:
    if tbf is None:
        return "none"
    if isinstance(tbf, str):
        return "another qdisc"
    return f"tbf rate {tbf.rate}bit burst {tbf.burst}b limit {tbf.limit}b"


class _OnRate:
    """What both rate actions act on: the root qdisc of `dev` in `where`."""

    where: Scope
    dev: str

    @property
    def scope(self) -> Scope:
        return self.where

    def subject(self) -> str:
        return f"rate of {self.dev} in {scope_label(self.where)}"


@dataclass(frozen=True)
class SetRate(_OnRate, Action):
    """`tc qdisc replace dev DEV root tbf ...`: the egress limit of one interface."""

    where: Scope
    dev: str
    new: Tbf
    old: "Tbf | str | None" = None
    phase = 21  # once the interface exists and is up
    noun = "rate"

    @property
    def verb(self) -> str:  # type: ignore[override]
        return CHANGE if self.old is not None else CREATE

    def details(self) -> dict:
        out = {"dev": self.dev, "rate": self.new.rate, "burst": self.new.burst, "limit": self.new.limit}
        if self.old is not None:
            out["changes"] = [{"attribute": "qdisc", "old": rate_label(self.old), "new": rate_label(self.new)}]
        return out


@dataclass(frozen=True)
class ClearRate(_OnRate, Action):
    """`tc qdisc del dev DEV root`: the kernel's default qdisc again."""

    where: Scope
    dev: str
    old: Tbf
    phase = 1
    verb = DELETE
    noun = "rate"

    def details(self) -> dict:
        return {"dev": self.dev, "rate": self.old.rate}
