"""Output of `topoctl ls`: a table for people; the JSON list is each row's as_json()."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def print_listing(console: "Console", rows: list) -> None:
    if not rows:
        console.print("No topology of topoctl is deployed on this machine.")
        return
    from rich.table import Table

    table = Table("topology", "hosts", "emulate", "namespaces", "links", "plan", "file")
    for row in rows:
        emulate = "" if row.emulate is None else ("yes" if row.emulate else "no")
        plan = row.plan if row.plan != "empty" else "[green]empty[/green]"
        table.add_row(row.topology, ", ".join(row.hosts), emulate, str(row.namespaces),
                      "" if row.links is None else str(row.links), plan, row.file or "")
    console.print(table)
