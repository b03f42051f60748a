"""Output of `topoctl trace`: each namespace the probe passed, each rule and chain policy that
matched it and its verdict, as `nft monitor trace` would show them; and the JSON form."""

from __future__ import annotations

from typing import TYPE_CHECKING

from topoctl.core.state import scope_label
from topoctl.output.show import escape

if TYPE_CHECKING:
    from rich.console import Console


def _rows(report) -> list[dict]:
    traced = report.traced
    rows = []
    for event in traced.events:
        rule = traced.rules.get((event.scope, event.family, event.table, event.handle), "") if event.handle else ""
        what = "policy" if event.kind == "policy" else ("return" if event.kind == "return" else rule or f"handle {event.handle}")
        rows.append({"netns": event.scope, "family": event.family, "table": event.table, "chain": event.chain,
                     "type": event.kind, "rule": rule or None, "handle": event.handle, "verdict": event.verdict,
                     "jump_to": event.target, "topoctl_trace_table": event.ours, "what": what, "trace_id": event.trace_id,
                     "reply": bool(event.reply)})
    return rows


def print_trace(console: "Console", report) -> None:
    probe, traced = report.probe, report.traced
    colour = "green" if traced.reached else "red"
    console.print(f"trace {escape(probe.label())}: [{colour}]{escape(traced.detail)}[/{colour}]")
    console.print(f"  [dim]traced in: {escape(', '.join(scope_label(s) for s in report.scopes))}[/dim]")
    lines: list[str] = []
    last = None
    for row in _rows(report):
        if row["topoctl_trace_table"]:
            if row["type"] != "rule":
                continue  # our own chain's policy: nothing to say
            hook = "prerouting" if row["chain"] == "pre" else "output"
            way = "arp" if "ether type arp" in (row["rule"] or "") else "reply" if row["reply"] else "probe"
            where = f"{way} in {scope_label(row['netns'])} ({hook}{', bridge' if row['family'] == 'bridge' else ''})"
            if where != last:
                lines.append(f"  [dim]· {escape(where)}[/dim]")
                last = where
            continue
        verdict = row["verdict"] or ""
        mark = "[red]" if verdict in ("drop", "reject") else "[green]" if verdict == "accept" else ""
        end = "[/red]" if mark == "[red]" else "[/green]" if mark == "[green]" else ""
        target = f" {row['jump_to']}" if row["jump_to"] else ""
        lines.append(f"    {escape(scope_label(row['netns']))}: {row['family']} {escape(row['table'])} "
                     f"{escape(row['chain'])}: {escape(row['what'])} -> {mark}{verdict}{target}{end}")
    # the same line again (ARP's retries, TCP's): said once, with how many times
    shown: list[list] = []
    for line in lines:
        if shown and shown[-1][0] == line:
            shown[-1][1] += 1
        else:
            shown.append([line, 1])
    for text, times in shown:
        console.print(text + (f" [dim](x{times})[/dim]" if times > 1 else ""))
    if not traced.events:
        console.print("  [dim]no trace event: the packet met no netfilter hook topoctl traced[/dim]")


def trace_json(report) -> dict:
    probe, traced = report.probe, report.traced
    return {"from": probe.source_label, "to": str(probe.target), "kind": probe.kind, "port": probe.port,
            "reached": traced.reached, "detail": traced.detail,
            "namespaces": list(report.scopes), "events": _rows(report)}
