"""The troubleshooting commands: check (and the commands that explain a network: trace, graph,
ls). Registered on the app of topoctl.cli; bodies import what they need when they run."""

import json
from typing import Optional

import typer

from topoctl.cli import EmulateOpt, FileArg, HostOpt, Output, OutputOpt, _context, _guard, _need_privileges, app, out


@app.command()
def check(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
          output: Output = OutputOpt,
          source: Optional[str] = typer.Option(None, "--from", metavar="NS", help="Only probes from this namespace or host."),
          target: Optional[str] = typer.Option(None, "--to", metavar="NS|ADDRESS",
                                               help="Only probes to this namespace (or address; with --from, any address)."),
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
            report = run_check(kernel, context, source, target, deadline)
        if output == Output.json:
            print(json.dumps(check_json(report), indent=2))
        else:
            print_check(out, report)
        return 0 if report.as_designed else 2

    _guard(body, output)
