"""Output for people (rich: coloured plans, tables, a progress bar) and the JSON form of state."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterator

from topoctl.core.actions import CHANGE, CREATE, DELETE, Action, Plan
from topoctl.core.state import State, scope_label

if TYPE_CHECKING:
    from rich.console import Console


def escape(text: str) -> str:
    """Text made safe for rich markup. rich is imported on first use: a JSON run never needs it."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


PROGRESS_MIN_ACTIONS = 50  # below this an apply is over before a bar helps

_STYLE = {CREATE: ("+", "green"), CHANGE: ("~", "yellow"), DELETE: ("-", "red")}


def _value(value: object, attribute: str = "") -> str:
    if attribute == "up":
        return "up" if value else "down"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def plan_line(action: Action) -> str:
    """One line of a plan, with rich markup."""
    symbol, colour = _STYLE[action.verb]
    reason = getattr(action, "reason", "")
    text = escape(action.subject())
    if reason and action.verb == DELETE:
        symbol, colour = "-/+", "magenta"
        text += f" [dim](forces replacement: {escape(reason)})[/dim]"
    elif reason:
        text += " [dim](replacement)[/dim]"
    details = action.details()
    if action.verb == CHANGE and "changes" in details:
        text += "  " + ", ".join(
            f"{'state' if c['attribute'] == 'up' else c['attribute']}: {escape(_value(c['old'], c['attribute']))} -> "
            f"{escape(_value(c['new'], c['attribute']))}" for c in details["changes"])
    elif action.verb == CHANGE and "key" in details:
        text += f"  {escape(_value(details['old']))} -> {escape(_value(details['new']))}"
        if details.get("why"):
            why = details["why"] if details["why"].startswith("restored") else f"needed by {details['why']}"
            text += f" [dim]({escape(why)})[/dim]"
    elif action.noun == "route":
        via = f" via {details['via']}" if details.get("via") else ""
        dev = f" dev {details['dev']}" if details.get("dev") else ""
        text += escape(f"{via}{dev} metric {details['metric']}")
    line = f"[{colour}]{symbol:>3}[/{colour}] {text}"
    if action.noun == "table" and action.verb != DELETE:
        line += "".join(_rule_line(change) for change in details["rules"])
    return line


_RULE_STYLE = {"+": "green", "-": "red", "~": "yellow"}


def _rule_line(change: dict) -> str:
    colour = _RULE_STYLE[change["change"]]
    return (f"\n      [{colour}]{change['change']}[/{colour}] {escape(change['chain'])}: "
            f"{escape(change['rule'])}")


def print_plan(console: Console, plan: Plan, summary: bool = True) -> None:
    """The plan for people, on `console` (a rich Console, or anything with its print())."""
    if plan.empty:
        console.print("No changes. The live state matches the file.")
    if plan.actions:  # one print: rich's per-call cost is most of the time for long plans
        console.print("\n".join(plan_line(action) for action in plan.actions))
    for note in plan.notes:
        console.print(f"[dim]note: {escape(note)}[/dim]")
    print_warnings(console, plan)
    if summary and not plan.empty:
        console.print(f"\n[bold]{plan.summary()}[/bold]")


def print_warnings(console: Console, plan: Plan) -> None:
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")


@contextlib.contextmanager
def progress_bar(console: Callable[[], Console] | None) -> Iterator:
    """A callback for the applier that drives a bar on a terminal, for long applies only.
    `console` gives the Console to draw on (None: no bar); it and rich's Progress are made at
    the first step of an apply long enough to show one, so that a no-op apply imports neither."""
    if console is None:
        yield None
        return
    bar = task = None
    shown = True

    def advance(number: int, total: int, action: Action) -> None:
        nonlocal bar, task, shown
        if total < PROGRESS_MIN_ACTIONS or not shown:
            return
        if bar is None:
            screen = console()
            if not screen.is_terminal:
                shown = False
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=screen, transient=True)
            bar.start()
            task = bar.add_task("applying", total=total)
        bar.update(task, completed=number - 1, description=f"{action.verb} {action.noun}")

    try:
        yield advance
    finally:
        if bar is not None:
            bar.stop()


def _owned_view(state: State, topology: str, indexes: bool = False) -> dict:
    """This topology's objects in a live state, as plain data (the --output json form).
    `indexes`: with the kernel's ifindexes (for people; the JSON leaves them out, since a link
    made again gets another and the state is otherwise the same)."""
    owned_ns = {name for name, n in state.namespaces.items() if n.owner == topology}
    links = [link for link in state.links.values()
             if link.owner == topology or (link.kind == "loopback" and link.scope in owned_ns)]
    link_keys = {link.key for link in links}
    return {
        "namespaces": [{"name": n.name, "role": n.role, "host": n.host or None}
                       for n in sorted(state.namespaces.values(), key=lambda n: n.name) if n.name in owned_ns],
        "links": [{"netns": link.scope, "name": link.name, "kind": link.kind, "state": "up" if link.up else "down",
                   "mtu": link.mtu, "mac": link.mac, "master": link.master,
                   "peer": {"netns": link.peer[0], "name": link.peer[1]} if link.peer else None,
                   **({"vxlan": {"vni": link.vxlan.vni, "port": link.vxlan.port,
                                 "local": str(link.vxlan.local) if link.vxlan.local else None,
                                 "learning": link.vxlan.learning, "underlay": link.vxlan.underlay}}
                      if link.vxlan else {})}
                  for link in sorted(links, key=lambda k: (k.scope or "", k.name))],
        "neighbours": [{"netns": n.scope, "dev": n.dev, "ip": str(n.ip), "mac": n.mac}
                       for n in sorted(state.neighbours, key=lambda n: (n.scope or "", n.dev, str(n.ip)))
                       if (n.scope, n.dev) in link_keys],
        "fdb": [{"netns": f.scope, "dev": f.dev, "mac": f.mac, "dst": str(f.dst)}
                for f in sorted(state.fdb, key=lambda f: (f.scope or "", f.dev, f.mac, str(f.dst)))
                if (f.scope, f.dev) in link_keys],
        "addresses": [{"netns": a.scope, "link": a.link, "address": str(a.interface)}
                      for a in sorted(state.addresses, key=lambda a: (a.scope or "", a.link, str(a.interface)))
                      if (a.scope, a.link) in link_keys and not a.kernel_made
                      and a.link != "lo"],
        "routes": [{"netns": r.scope, "to": str(r.dst), "via": str(r.via) if r.via else None, "dev": r.dev,
                    "metric": r.metric, "proto": r.proto}
                   for r in sorted(state.routes.values(), key=lambda r: (r.scope or "", r.dst.version, str(r.dst)))
                   if r.owner == topology],
        "sysctls": [{"netns": scope, "key": key, "value": value}
                    for (scope, key), value in sorted(state.sysctls.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))],
        "rates": [{"netns": scope, "dev": dev, "rate": q.rate, "burst": q.burst, "limit": q.limit}
                  for (scope, dev), q in sorted(state.qdiscs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
                  if not isinstance(q, str) and (scope, dev) in link_keys],
        "bridges": _bridges(state, links, indexes),
        "tables": [{"netns": t.scope, "family": t.family, "name": t.name,
                    "chains": [{"name": c.name, "header": c.header, "rules": list(c.rules)} for c in t.chains]}
                   for t in sorted(state.tables.values(), key=lambda t: (t.scope or "", t.family, t.name))],
    }


def _bridges(state: State, links: list, indexes: bool) -> list[dict]:
    """The brctl-show view of the topology's bridges: each port, and where its veth peer is
    (found by the peer's ifindex, as `ip link` shows `@ifN`)."""
    out = []
    for bridge in sorted((link for link in links if link.kind == "bridge"), key=lambda k: (k.scope or "", k.name)):
        ports = []
        for port in sorted((link for link in state.links.values() if link.scope == bridge.scope
                            and link.master == bridge.name), key=lambda k: k.name):
            peer = state.links.get(port.peer) if port.peer else None
            row = {"port": port.name, "state": "up" if port.up else "down",
                   "peer": {"netns": port.peer[0], "name": port.peer[1]} if port.peer else None}
            if indexes:
                row["ifindex"] = port.index or None
                if row["peer"] is not None:
                    row["peer"]["ifindex"] = (peer.index or None) if peer else None
            ports.append(row)
        out.append({"netns": bridge.scope, "bridge": bridge.name, "stp": bool(bridge.stp), "ports": ports})
    return out


def state_json(state: State, context) -> dict:
    return {"format_version": 1, "topology": context.topology.name, **_owned_view(state, context.topology.name)}


def print_state(console: Console, state: State, context) -> None:
    from rich.table import Table

    view = _owned_view(state, context.topology.name, indexes=True)
    if not view["namespaces"] and not view["links"]:
        console.print(f"Nothing of topology {escape(context.topology.name)} exists. Run apply to build it.")
        return
    table = Table(title="Links", title_justify="left")
    for column in ("netns", "name", "kind", "state", "mtu", "mac", "master", "peer"):
        table.add_column(column)
    for link in view["links"]:
        peer = f"{link['peer']['name']}@{scope_label(link['peer']['netns'])}" if link["peer"] else ""
        state_text = "[green]up[/green]" if link["state"] == "up" else "[red]down[/red]"
        table.add_row(escape(scope_label(link["netns"])), escape(link["name"]), link["kind"], state_text,
                      str(link["mtu"]), link["mac"] or "", escape(link["master"] or ""), escape(peer))
    console.print(table)
    table = Table(title="Addresses", title_justify="left")
    for column in ("netns", "link", "address"):
        table.add_column(column)
    for a in view["addresses"]:
        table.add_row(escape(scope_label(a["netns"])), escape(a["link"]), a["address"])
    console.print(table)
    table = Table(title="Routes", title_justify="left")
    for column in ("netns", "to", "via", "dev", "metric"):
        table.add_column(column)
    for r in view["routes"]:
        table.add_row(escape(scope_label(r["netns"])), "default" if r["to"] in ("0.0.0.0/0", "::/0") else r["to"],
                      r["via"] or "", escape(r["dev"] or ""), str(r["metric"]))
    console.print(table)
    if view["neighbours"] or view["fdb"]:
        table = Table(title="VXLAN peers (neighbour and FDB entries)", title_justify="left")
        for column in ("netns", "dev", "remote VTEP", "VTEP MAC", "underlay dst"):
            table.add_column(column)
        dst_of = {(f["netns"], f["dev"], f["mac"]): f["dst"] for f in view["fdb"]}
        for n in view["neighbours"]:
            table.add_row(escape(scope_label(n["netns"])), escape(n["dev"]), n["ip"], n["mac"],
                          dst_of.get((n["netns"], n["dev"], n["mac"]), "[red]missing[/red]"))
        console.print(table)
    if view["bridges"]:
        table = Table(title="Bridges (brctl show)", title_justify="left")
        for column in ("netns", "bridge", "stp", "port", "ifindex", "state", "peer", "peer ifindex"):
            table.add_column(column)
        for b in view["bridges"]:
            for i, port in enumerate(b["ports"] or [None]):
                first = (escape(scope_label(b["netns"])), escape(b["bridge"]), "yes" if b["stp"] else "no") if i == 0 \
                    else ("", "", "")
                if port is None:
                    table.add_row(*first, "", "", "", "", "")
                    continue
                peer = port["peer"]
                where = f"{peer['name']}@{scope_label(peer['netns'])}" if peer else ""
                table.add_row(*first, escape(port["port"]), str(port["ifindex"] or ""),
                              "[green]up[/green]" if port["state"] == "up" else "[red]down[/red]", escape(where),
                              str(peer["ifindex"] or "") if peer else "")
        console.print(table)
    if view["sysctls"]:
        table = Table(title="Sysctls", title_justify="left")
        for column in ("netns", "key", "value"):
            table.add_column(column)
        for s in view["sysctls"]:
            table.add_row(escape(scope_label(s["netns"])), s["key"], s["value"])
        console.print(table)
    if view["rates"]:
        table = Table(title="Rates (tbf)", title_justify="left")
        for column in ("netns", "dev", "rate bit/s", "burst bytes", "limit bytes"):
            table.add_column(column)
        for r in view["rates"]:
            table.add_row(escape(scope_label(r["netns"])), escape(r["dev"]), str(r["rate"]), str(r["burst"]),
                          str(r["limit"]))
        console.print(table)
    if view["tables"]:
        table = Table(title="nftables tables", title_justify="left")
        for column in ("netns", "table", "chain", "rules"):
            table.add_column(column)
        for t in view["tables"]:
            for i, chain in enumerate(t["chains"]):
                first = (escape(scope_label(t["netns"])), f"{t['family']} {escape(t['name'])}") if i == 0 else ("", "")
                table.add_row(*first, escape(chain["name"]), str(len(chain["rules"])))
        console.print(table)
