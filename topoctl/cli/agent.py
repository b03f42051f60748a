"""`topoctl watch`: the per-host agent. Registered on the app of topoctl.cli."""

import sys
from typing import Optional

import typer

from topoctl.cli import EmulateOpt, FileArg, HostOpt, LockTimeoutOpt, Output, OutputOpt, _guard, _need_privileges, app


@app.command()
def watch(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
          output: Output = OutputOpt, lock_timeout: float = LockTimeoutOpt,
          interval: float = typer.Option(300.0, "--interval", min=1.0,
                                         help="Seconds between full plans, the safety net behind notifications.")) -> None:
    """Keep this host converged on FILE until SIGTERM: apply now, then again when the file's
    content changes or the kernel state drifts (and every --interval). One log line each."""

    def body() -> int:
        import hashlib

        from topoctl.cli import _context, _warn_about
        from topoctl.core.realisation import realise
        from topoctl.output.watching import line
        from topoctl.run.context import Context
        from topoctl.run.watching import Watch
        from topoctl.spec.loader import load_text

        if file == "-":
            from topoctl.errors import UsageError
            raise UsageError("watch needs a file it can read again, not standard input",
                             "give the topology's path (a ConfigMap's mount, a git checkout)")
        with open(file, "rb") as src:
            digest = hashlib.sha256(src.read().decode("utf-8", "surrogateescape").encode()).hexdigest()
        first = _context(file, host, emulate)  # bad input at the start: FILE:LINE:COL, exit 2
        _need_privileges("watch")

        def make_context(text: str) -> Context:
            topology = load_text(text, file)
            _warn_about(topology)
            pick = host
            if pick is None and not emulate and len(topology.host_names()) > 1:
                pick = first.realisation.hosts[0]  # the host this machine was found to be at the start
            return Context(topology, realise(topology, pick, emulate))

        def log(entry) -> None:
            sys.stdout.write(line(entry, output == Output.json) + "\n")
            sys.stdout.flush()

        return Watch(file, first, digest, make_context, log, interval=interval, lock_timeout=lock_timeout).run()

    _guard(body, output)
