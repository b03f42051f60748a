"""Plan actions on topoctl's nftables tables: each writes or deletes one whole table, in one
nftables transaction, so a table is never left half written."""

from __future__ import annotations

from dataclasses import dataclass

from topoctl.core.actions import CHANGE, CREATE, DELETE, Action
from topoctl.core.nft_text import rule_changes
from topoctl.core.state import NftTable, Scope, scope_label


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
