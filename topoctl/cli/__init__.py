"""The command line: thin, and the one place where errors become messages and exit codes.

No `from __future__ import annotations` here: typer reads the commands' parameter types, and
with string annotations it evaluates each one, on every start (docs/performance.md).
"""

import gc
import json
import os
import signal
import sys
from enum import Enum
from typing import Callable, List, Optional

import typer

from topoctl import __version__
from topoctl.errors import InvalidTopology, Terminated, TopoctlError

app = typer.Typer(
    add_completion=True, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
    help="Declarative topology-as-code for Linux container networking.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Console:
    """rich's Console for stdout or stderr, made on first use: a command whose output is
    JSON, or one plain line such as a no-op plan's, never imports rich (a fifth of a start-up)."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            # emoji off: a MAC such as a6:ab:75:... must not turn into a picture.
            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True, emoji=False)
            if not self._console.is_terminal and "COLUMNS" not in os.environ:
                self._console.width = 200  # piped or logged: do not squeeze tables into 80 columns
        return self._console

    def print(self, *objects, **options) -> None:
        if self._console is None and not options and len(objects) == 1 and isinstance(objects[0], str) \
                and "[" not in objects[0] and objects[0].isprintable():
            # no markup, no tab to expand, no control character to strip: rich (soft_wrap, no
            # highlighting, no emoji) would write exactly this line, on a terminal or not
            print(objects[0], file=sys.stderr if self._stderr else sys.stdout)
            return
        self.console.print(*objects, **options)


out = _Console()
err = _Console(stderr=True)


class Output(str, Enum):
    text = "text"
    json = "json"


class Flavor(str, Enum):
    ip = "ip"
    brctl = "brctl"


FileArg = typer.Argument(..., metavar="FILE", help="Topology YAML file.")
HostOpt = typer.Option(None, "--host", help="Act only on this host of the file.")
EmulateOpt = typer.Option(False, "--emulate", help="Realise each host as the namespace <topology>-<host>.")
OutputOpt = typer.Option(Output.text, "--output", "-o", help="text for people, json for machines.")
LockTimeoutOpt = typer.Option(30.0, "--lock-timeout", min=0,
                              help="Seconds to wait for another apply or destroy of the same host.")


def _warn_about(topology) -> None:
    """A file's warnings (valid, probably not meant), on stderr, in the errors' form."""
    for d in topology.warnings:
        err.print(f"[bold]{_esc(d.location())}:[/bold] [yellow]warning:[/yellow] {_esc(d.message)}")
        if d.hint:
            err.print(f"  [dim]hint: {_esc(d.hint)}[/dim]")


def _fail(error: TopoctlError, output: Output = Output.text, exit_code: Optional[int] = None) -> None:
    code = error.exit_code if exit_code is None else exit_code
    if output == Output.json:  # stdout has the error too: a program reads fields, not stderr
        document = {"format_version": 1, "error": {**error.as_json(), "exit_code": code}}
        if isinstance(error, InvalidTopology):
            document = {"valid": False, "problems": [d.as_dict() for d in error.diagnostics], **document}
        print(json.dumps(document, indent=2))
    if isinstance(error, InvalidTopology):
        for d in error.diagnostics:
            err.print(f"[bold]{_esc(d.location())}:[/bold] [red]error:[/red] {_esc(d.message)}")
            if d.hint:
                err.print(f"  [dim]hint: {_esc(d.hint)}[/dim]")
        err.print(f"[red]{_esc(error.message)}[/red]")
    else:
        err.print(f"[red]error:[/red] {_esc(error.message)}")
        if error.hint:
            err.print(f"  [dim]hint: {_esc(error.hint)}[/dim]")
    raise typer.Exit(code)


def _esc(text: str) -> str:
    from rich.markup import escape
    return escape(text)


def _guard(body: Callable[[], Optional[int]], output: Output = Output.text,
           error_code: Optional[int] = None) -> None:
    """Run a command body; typed errors become a message and an exit code (each error's own,
    or `error_code` for all of them), nothing else."""
    _in_body.append(True)
    try:
        code = body()
    except TopoctlError as error:
        _fail(error, output, error_code)
    except Terminated:
        _ignore_signals()
        err.print("[red]terminated[/red]")
        raise typer.Exit(143)
    except KeyboardInterrupt:
        _ignore_signals()
        err.print("[red]interrupted[/red]")
        raise typer.Exit(130)
    except RuntimeError as error:
        # A signal that lands while a lazy import creates a class is raised inside __set_name__,
        # which wraps it: still the signal, not a failure of ours.
        if isinstance(error.__cause__, KeyboardInterrupt):
            _ignore_signals()
            terminated = isinstance(error.__cause__, Terminated)
            err.print("[red]terminated[/red]" if terminated else "[red]interrupted[/red]")
            raise typer.Exit(143 if terminated else 130) from None
        raise
    raise typer.Exit(code or 0)


_in_body: list = []  # non-empty once a command's body has begun (its exit code is its own)


def _deployment(file: str, host: Optional[str], emulate: bool):
    """The file's topology and how this run realises it (pure: what render needs)."""
    from topoctl.core.desired import Deployment
    from topoctl.core.realisation import realise

    topology = _load(file)
    _warn_about(topology)

    def machine_addresses() -> set:  # only for a multi-host file without --host or --emulate
        from topoctl.kernel.reads import local_addresses
        return local_addresses()

    return Deployment(topology, realise(topology, host, emulate, machine_addresses))


_stdin_text: list = []  # "-" is read once, whichever command reads it first


def _load(file: str):
    """FILE, or the topology on stdin when FILE is '-' (its problems are reported at <stdin>:LINE:COL)."""
    if file != "-":
        from topoctl.spec.loader import load_file
        return load_file(file)
    from topoctl.spec.loader import load_text
    if not _stdin_text:
        _stdin_text.append(sys.stdin.read())
    return load_text(_stdin_text[0], "<stdin>")


def _context(file: str, host: Optional[str], emulate: bool):
    from topoctl.run.context import Context

    deployment = _deployment(file, host, emulate)
    return Context(deployment.topology, deployment.realisation)


def _saved_context(saved):
    """The context a saved plan was made in: its own copy of the topology, its hosts."""
    from topoctl.run.context import Context, realise
    from topoctl.spec.loader import load_text

    topology = load_text(saved.text, saved.source)
    host = saved.hosts[0] if len(saved.hosts) == 1 and len(topology.hosts) > 1 else None
    return Context(topology, realise(topology, host, saved.emulate))


def _need_privileges(what: str) -> None:
    from topoctl.errors import PermissionDenied
    from topoctl.kernel.privileges import missing_capabilities

    missing = missing_capabilities()
    if missing:
        raise PermissionDenied(f"{what} needs {' and '.join(missing)}, which this process does not have",
                               "run it as root (sudo topoctl ...); validate and render need no privileges")


@app.command()
def validate(files: List[str] = typer.Argument(..., metavar="FILE...", help="Topology files to check."),
             output: Output = OutputOpt) -> None:
    """Check files against the schema and the semantic rules. Needs no root."""

    def body() -> int:
        problems, warnings = [], []
        for file in files:
            try:
                topology = _load(file)
                warnings.extend(topology.warnings)
                _warn_about(topology)
                if output == Output.text:
                    out.print(f"{_esc(file)}: [green]valid[/green]")
            except InvalidTopology as invalid:
                problems.extend(invalid.diagnostics)
        if problems:
            raise InvalidTopology(problems)
        if output == Output.json:
            print(json.dumps({"valid": True, "problems": [], "warnings": [w.as_dict() for w in warnings]}, indent=2))
        return 0

    _guard(body, output)


@app.command()
def plan(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
         output: Output = OutputOpt,
         detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", "-d",
                                                help="Exit 0 when there is nothing to do, 2 when there are changes."),
         destroy: bool = typer.Option(False, "--destroy", help="Plan the destroy instead."),
         save_to: Optional[str] = typer.Option(None, "--out", metavar="PLAN",
                                               help="Save the plan, for `topoctl apply PLAN`.")) -> None:
    """Compare the live kernel state with the file and print the ordered changes."""
    from pathlib import Path

    def body() -> int:
        from topoctl.kernel.sockets import Kernel
        from topoctl.store.saved import SavedPlan, fingerprint
        from topoctl.output.show import print_plan
        context = _context(file, host, emulate)
        _need_privileges("plan")
        with Kernel() as kernel:
            the_plan, live = context.plan(kernel, destroy=destroy)
        if save_to is not None:
            saved = SavedPlan(source=file, text=Path(file).read_text(encoding="utf-8"),
                              hosts=context.realisation.hosts, emulate=emulate, destroy=destroy,
                              fingerprint=fingerprint(live), plan=the_plan.as_json())
            Path(save_to).write_text(saved.dumps(), encoding="utf-8")
            err.print(f"Saved the plan to {_esc(save_to)}; apply it with: topoctl apply {_esc(save_to)}")
        if output == Output.json:
            print(json.dumps(the_plan.as_json(), indent=2))
        else:
            print_plan(out, the_plan)
        # Terraform's convention: with -d, 0 means no changes, 2 means changes, 1 an error.
        return 2 if detailed_exitcode and not the_plan.empty else 0

    # With -d, 2 means "valid, and changes pending" only: an invalid file exits 1 like any error.
    _guard(body, output, error_code=1 if detailed_exitcode else None)


def _reconcile(file: str, host: Optional[str], emulate: bool, output: Output, destroy: bool,
               lock_timeout: float) -> None:

    verb = "destroy" if destroy else "apply"

    def body() -> int:
        from topoctl.run.reconcile import reconcile
        from topoctl.errors import Interrupted
        from topoctl.run.interrupts import Interrupts, signal_name, signal_reason
        from topoctl.kernel.sockets import Kernel
        from topoctl.store.locking import host_locks
        from topoctl.store.saved import is_saved_plan
        from topoctl.store.saved import load as load_saved
        from topoctl.output.show import print_plan, print_warnings, progress_bar
        nonlocal destroy
        expected = None
        if not destroy and is_saved_plan(file):
            expected = load_saved(file)
            destroy = expected.destroy
            context = _saved_context(expected)
        else:
            context = _context(file, host, emulate)
        _need_privileges(verb)
        # Until the locks are held a signal stops the command at once (nothing is changed yet);
        # from then on it is deferred until the process ends: the run decides when it takes
        # effect, and its report is printed whatever comes.
        signals = Interrupts().install()
        try:
            with host_locks(context.lock_names(), context.topology.name, verb, lock_timeout):
                signals.defer()
                with Kernel() as kernel, \
                        progress_bar((lambda: err.console) if output == Output.text else None) as progress:
                    report = reconcile(kernel, context, destroy=destroy, progress=progress, expected=expected,
                                       signals=signals)
        except KeyboardInterrupt:
            if signals.deferred or not signals.received:
                raise
            raise Interrupted(f"{verb} stopped before it began: {signal_reason(signals.first)}",
                              "nothing was changed", signals.first) from None
        late = [signum for signum, _ in signals.received]
        if output == Output.json:
            print(json.dumps({**report.plan.as_json(), "seconds": round(report.seconds, 3),
                              "kernel_writes": report.writes, "verified": True,
                              "signals": [signal.Signals(signum).name for signum in late]}, indent=2))
        else:
            if report.plan.empty:
                for note in report.plan.notes:
                    out.print(f"[dim]note: {_esc(note)}[/dim]")
                print_warnings(out, report.plan)
                out.print("No changes. The live state matches the file.")
            else:
                print_plan(out, report.plan, summary=False)
                c = report.plan.counts()
                done = "Destroy" if destroy else "Apply"
                out.print(f"[bold green]{done} complete![/bold green] {c['add']} added, {c['change']} changed, "
                          f"{c['destroy']} destroyed in {report.seconds:.2f}s; verified: a fresh plan is empty.")
            if late:
                why = ("there was nothing to change" if report.plan.empty
                       else "a destroy that has begun is finished, not left half done" if destroy
                       else "it came after the last step had begun, too late to stop the apply")
                out.print(f"[dim]note: {_esc(', '.join(signal_name(signum) for signum in late))} received; {why}[/dim]")
        return 0

    _guard(body, output)


@app.command()
def apply(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
          output: Output = OutputOpt, lock_timeout: float = LockTimeoutOpt) -> None:
    """Make the live state match the file (or apply a plan saved by plan --out), then verify."""
    _reconcile(file, host, emulate, output, destroy=False, lock_timeout=lock_timeout)


@app.command()
def destroy(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
            output: Output = OutputOpt, lock_timeout: float = LockTimeoutOpt) -> None:
    """Remove everything this topology owns, and nothing else."""
    _reconcile(file, host, emulate, output, destroy=True, lock_timeout=lock_timeout)


@app.command()
def render(file: str = FileArg, host: Optional[str] = HostOpt,
           emulate: bool = typer.Option(False, "--emulate", help="Address each host as the namespace <topology>-<host>."),
           teardown: bool = typer.Option(False, "--teardown", help="Print the script that removes the topology."),
           flavor: Flavor = typer.Option(Flavor.ip, "--flavor", help="ip: iproute2 only; brctl: brctl for bridge steps."),
           output: Output = typer.Option(Output.text, "--output", "-o",
                                         help="text: the shell script; json: its actions, as plan -o json.")) -> None:
    """Print the equivalent shell script (from the same plan apply executes). Needs no root."""

    def body() -> int:
        from topoctl.output.render import build_plan, render_plan, teardown_plan
        deployment = _deployment(file, host, emulate)
        the_plan = (teardown_plan if teardown else build_plan)(deployment)
        if output == Output.json:
            print(json.dumps(the_plan.as_json(), indent=2))  # the actions the script runs, as plan -o json
        else:
            sys.stdout.write(render_plan(the_plan, deployment, flavor.value, teardown=teardown))
        return 0

    _guard(body, output)


@app.command()
def show(file: str = FileArg, host: Optional[str] = HostOpt, emulate: bool = EmulateOpt,
         output: Output = OutputOpt) -> None:
    """Print the live state of this topology's objects."""

    def body() -> int:
        from topoctl.kernel.sockets import Kernel
        from topoctl.output.show import print_state, state_json
        context = _context(file, host, emulate)
        _need_privileges("show")
        with Kernel() as kernel:
            live = context.observe(kernel)
        if output == Output.json:
            print(json.dumps(state_json(live, context), indent=2))
        else:
            print_state(out.console, live, context)
        return 0

    _guard(body, output)


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
def exec_(file: str = FileArg,
          target: str = typer.Argument(..., metavar="NAMESPACE", help="A namespace of the file, a host (by name or as plan names it), or the emulated underlay."),
          command: List[str] = typer.Argument(..., metavar="-- CMD...", help="The command to run there."),
          host: Optional[str] = HostOpt, emulate: bool = EmulateOpt) -> None:
    """Run CMD inside one of the topology's namespaces (or a host's). Exits with CMD's code."""

    def body() -> int:
        from topoctl.errors import UsageError
        from topoctl.kernel.namespaces import run_command_in as run_in
        from topoctl.core.realisation import exec_scope
        context = _context(file, host, emulate)
        scope = exec_scope(context.topology, context.realisation, target)
        _need_privileges("exec")
        argv = command[1:] if command and command[0] == "--" else command
        if not argv:
            raise UsageError("no command given", "topoctl exec FILE NAMESPACE -- CMD...")
        return run_in(scope, argv)

    _guard(body)


from topoctl.cli import diagnose  # noqa: E402,F401 - registers check and the other troubleshooting commands
from topoctl.cli import agent  # noqa: E402,F401 - registers watch


def version_callback(value: bool) -> None:
    if value:
        print(f"topoctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                              help="Print the version.")) -> None:
    """topoctl: declarative topology-as-code for Linux container networking."""


def _interrupt_once(signum, frame) -> None:
    """Ctrl-C before a run defers signals: KeyboardInterrupt once; the process is then ending,
    and further signals must not cut short the message that says so."""
    _ignore_signals()
    raise KeyboardInterrupt()


def _ignore_signals() -> None:
    # A Python handler that does nothing, not SIG_IGN: CPython raises "Signal N ignored due to
    # race condition" for a signal already caught when its handler is set to SIG_IGN.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignored)


def _ignored(signum, frame) -> None:
    pass


def _exit_code(done: SystemExit) -> int:
    if done.code is None:
        return 0
    if isinstance(done.code, int):
        return done.code
    print(done.code, file=sys.stderr)
    return 1


def main() -> None:
    """The `topoctl` command. Two things here are for speed only (docs/performance.md): the
    cyclic garbage collector runs far less often (a plan makes many objects that form almost
    no cycles), and the process ends with os._exit once its output is flushed. Nothing is left
    for interpreter teardown to do: files and sockets are closed by the commands' own `with`
    blocks, locks are released with their descriptors, and topoctl registers no atexit handlers."""
    gc.set_threshold(100_000, 50, 100)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _interrupt_once)  # KeyboardInterrupt: see _guard
    try:
        app()
        code = 0
    except SystemExit as done:
        code = _exit_code(done)
    except KeyboardInterrupt:
        code = 130
    if code == 130 and not _in_body:
        err.print("interrupted")  # typer turns Ctrl-C while it parses into a silent exit 130
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed
            continue
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away; a closed stream
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    main()
