"""The troubleshooting commands: check (and the commands that explain a network: trace, graph,
ls). Registered on the app of topoctl.cli; bodies import what they need when they run."""

import json
import sys
from enum import Enum
from typing import Optional

import typer

from topoctl.cli import (EmulateOpt, FileArg, HostOpt, LockTimeoutOpt, Output, OutputOpt, _context, _deployment, _guard,
                         _need_privileges, app, out)


@app.command()
def check(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
          output: Output = OutputOpt,
          source: Optional[str] = typer.Option(None, "--from", metavar="NS", help="Only probes from this namespace or host."),
          target: Optional[str] = typer.Option(None, "--to", metavar="NS|ADDRESS",
                                               help="Only probes to this namespace (or address; with --from, any address)."),
          only: Optional[str] = typer.Option(None, "--only", metavar="GROUP",
                                             help="Only this group: gateway, peer, across, path-mtu, port, outside, firewall."),
          deadline: float = typer.Option(2.0, "--deadline", min=0.1, max=30,
                                         help="Seconds every probe has to be answered (2: room for one ARP retry).")) -> None:
    """Probe the reachability the design implies, and explain every probe that is not as designed.
    Exits 0 when all are, 2 when any is not, 1 on error."""

    def body() -> int:
        from topoctl.kernel.sockets import Kernel
        from topoctl.output.check import check_json, print_check
        from topoctl.run.checking import check as run_check
        context = _context(file, host, emulate)
        _need_privileges("check")
        with Kernel() as kernel:
            report = run_check(kernel, context, source, target, deadline, only)
        if output == Output.json:
            print(json.dumps(check_json(report), indent=2))
        else:
            print_check(out, report)
        return 0 if report.as_designed else 2

    _guard(body, output)


class GraphFormat(str, Enum):
    dot = "dot"
    mermaid = "mermaid"
    svg = "svg"
    json = "json"


@app.command()
def graph(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
          fmt: GraphFormat = typer.Option(GraphFormat.dot, "--format", "-f", help="dot, mermaid, svg (Graphviz) or json."),
          live: bool = typer.Option(False, "--live", help="Draw what the kernel shows over the design (missing, down, drift).")) -> None:
    """Draw the topology: hosts as clusters, bridges, namespaces, veth cables with names and addresses, overlays."""

    def body() -> int:
        from topoctl.output.graph import build_graph, live_statuses, only_host, to_dot, to_json, to_mermaid
        deployment = _deployment(file, host, emulate) if not live else _context(file, host, emulate)
        statuses = None
        if live:
            from topoctl.kernel.sockets import Kernel
            _need_privileges("graph --live")
            with Kernel() as kernel:
                the_plan, state = deployment.plan(kernel)
            statuses = live_statuses(deployment.topology, deployment.realisation, state, the_plan)
        picture = build_graph(deployment.topology, statuses)
        if host is not None:
            picture = only_host(picture, host)
        if fmt == GraphFormat.json:
            sys.stdout.write(to_json(picture))
        elif fmt == GraphFormat.mermaid:
            sys.stdout.write(to_mermaid(picture))
        elif fmt == GraphFormat.dot:
            sys.stdout.write(to_dot(picture))
        else:
            sys.stdout.write(_svg(to_dot(picture)))
        return 0

    _guard(body)


def _svg(dot_text: str) -> str:
    import shutil
    import subprocess

    from topoctl.errors import TopoctlError
    if shutil.which("dot") is None:
        raise TopoctlError("graph --format svg needs Graphviz's dot, which is not installed",
                           "apt-get install graphviz (make sysdeps installs it), or use --format dot or mermaid")
    done = subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True)
    if done.returncode != 0:
        raise TopoctlError(f"dot -Tsvg failed: {done.stderr.strip()[-300:]}", "report it: the dot text is topoctl's")
    return done.stdout


@app.command(name="ls")
def list_deployed(output: Output = OutputOpt) -> None:
    """List the topologies deployed on this machine (from topoctl's records), with a fresh plan of each."""

    def body() -> int:
        from topoctl.kernel.sockets import Kernel
        from topoctl.output.listing import print_listing
        from topoctl.run.listing import deployed
        _need_privileges("ls")
        with Kernel() as kernel:
            rows = deployed(kernel)
        if output == Output.json:
            print(json.dumps([row.as_json() for row in rows], indent=2))
        else:
            print_listing(out.console, rows)
        return 0

    _guard(body, output)


class Proto(str, Enum):
    icmp = "icmp"
    tcp = "tcp"
    udp = "udp"


@app.command()
def trace(file: str = FileArg,
          source: str = typer.Argument(..., metavar="FROM", help="A namespace or host of the file."),
          target: str = typer.Argument(..., metavar="TO", help="A namespace of the file, or an address."),
          host: Optional[str] = HostOpt, emulate: bool = EmulateOpt, output: Output = OutputOpt,
          proto: Proto = typer.Option(Proto.icmp, "--proto", help="icmp (an echo), tcp (a connection) or udp."),
          port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="The port, for tcp and udp."),
          lock_timeout: float = LockTimeoutOpt) -> None:
    """Send one probe FROM -> TO with nftables tracing on along its path; print every rule and
    chain policy that matched it, with its verdict. The trace tables are always removed."""

    def body() -> int:
        from topoctl.kernel.sockets import Kernel
        from topoctl.output.trace import print_trace, trace_json
        from topoctl.run.tracing import run_trace
        context = _context(file, host, emulate)
        _need_privileges("trace")
        with Kernel() as kernel:
            report = run_trace(kernel, context, source, target, proto.value, port, lock_timeout)
        if output == Output.json:
            print(json.dumps(trace_json(report), indent=2))
        else:
            print_trace(out, report)
        return 0

    _guard(body, output)
