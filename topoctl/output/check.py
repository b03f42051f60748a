"""Output of `topoctl check`: one line per probe for people (with the walk of each probe that is
not as designed), a stable JSON list for machines (docs/commands.md#check)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from topoctl.core.explain import Checked, CheckReport
from topoctl.output.show import escape

if TYPE_CHECKING:
    from rich.console import Console


def _verdict(result: Checked) -> str:
    outcome, probe = result.outcome, result.outcome.probe
    if result.as_designed:
        return outcome.detail if probe.expect else f"blocked, as designed ({probe.why})"
    if probe.expect:
        return outcome.detail
    return f"{outcome.detail}: it should be blocked ({probe.why})"


def print_check(console: "Console", report: CheckReport) -> None:
    for result in report.results:
        probe = result.outcome.probe
        mark = "[green]ok  [/green]" if result.as_designed else "[bold red]FAIL[/bold red]"
        console.print(f"  {mark}  {escape(probe.label())}: {escape(_verdict(result))}")
        for hop in result.hops:
            if hop.ok:
                console.print(f"          [dim]· {escape(hop.text)}[/dim]")
            else:
                console.print(f"          [red]✗ {escape(hop.text)}[/red]")
                if hop.fix:
                    console.print(f"            [dim]fix: {escape(hop.fix)}[/dim]")
    good = sum(1 for r in report.results if r.as_designed)
    bad = len(report.results) - good
    colour = "green" if bad == 0 else "red"
    console.print(f"\n[{colour}]Check: {len(report.results)} probes in {report.seconds:.2f}s: {good} as designed, "
                  f"{bad} not.[/{colour}]")


def check_json(report: CheckReport) -> list[dict]:
    rows = []
    for result in report.results:
        outcome, probe = result.outcome, result.outcome.probe
        rows.append({
            "group": probe.group, "kind": probe.kind,
            "from": probe.source_label, "to": probe.target_label, "target": str(probe.target),
            "port": probe.port, "size": probe.size,
            "expected": "pass" if probe.expect else "blocked", "why": probe.why or None,
            "reached": outcome.reached, "as_designed": result.as_designed, "detail": outcome.detail,
            "seconds": round(outcome.seconds, 4) if outcome.seconds is not None else None,
            "explanation": [hop.as_json() for hop in result.hops],
        })
    return rows
