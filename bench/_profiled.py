"""The child process of bench/profile.py: one `topoctl` command, with timers or under cProfile.

    python -m bench._profiled timers|cprofile OUT ARGS...

It imports only topoctl and the standard library, so that the process is topoctl's alone.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

# what the commands import lazily (cli.py imports them inside the command functions)
LAZY = ["topoctl.run.reconcile", "topoctl.run.steps", "topoctl.run.rollback", "topoctl.run.context", "topoctl.spec.loader", "topoctl.kernel.executors",
        "topoctl.kernel.observe", "topoctl.core.planner", "topoctl.output.show", "topoctl.store.journal",
        "topoctl.store.locking", "topoctl.store.saved", "topoctl.spec.compiled"]

# (module[.class], attribute, label): the steps timed, where the code that calls them looks them up
STEPS = [
    ("topoctl.spec.loader", "load_file", "load the cached topology"),
    ("topoctl.kernel.sockets.Kernel", "prefetch", "fork the reader"),
    ("topoctl.core.desired", "desired_state", "desired state"),
    ("topoctl.store.records", "netns_records", "namespace records"),
    ("topoctl.kernel.sockets.Kernel", "open", "open sockets"),
    ("topoctl.kernel.tables", "_read", "dumps read here"),
    ("topoctl.kernel.tables.Reader", "collect", "wait for the reader's share"),
    ("topoctl.kernel.observe", "read_tables", "read_tables (all dumps)"),
    ("topoctl.kernel.observe", "_read_nft", "nftables tables (libnftables, parse)"),
    ("topoctl.kernel.nft", "_run_here", "libnftables commands (list), all namespaces"),
    ("topoctl.kernel.nft", "parse_tables", "parse the listed tables"),
    ("topoctl.run.context", "observe", "observe (read + build the live state)"),
    ("topoctl.run.context", "plan", "planner"),
    ("topoctl.kernel.executors", "create_namespaces", "create namespaces"),
    ("topoctl.run.steps", "execute", "other steps (veths, addresses, routes)"),
    ("topoctl.run.reconcile", "execute_plan", "execute the plan"),
    ("topoctl.store.journal.Journal", "_write", "journal writes"),
]


def _owner(dotted: str):
    """The module, or the class inside a module, that a dotted name names."""
    path = dotted.split(".")
    for cut in range(len(path), 1, -1):
        try:
            owner = importlib.import_module(".".join(path[:cut]))
        except ImportError:
            continue
        for part in path[cut:]:
            owner = getattr(owner, part)
        return owner
    raise ImportError(dotted)


def main(mode: str, out: str, argv: list[str]) -> None:
    """Run topoctl here: `timers` writes one line per step, `cprofile` the stats."""
    started = time.perf_counter()
    profiler = None
    if mode == "cprofile":
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    import topoctl.cli as cli

    for module in LAZY:  # what the commands import when they run, imported here to time it apart
        importlib.import_module(module)
    imported = time.perf_counter()
    spent: dict[str, float] = {}
    if mode == "timers":
        for module_name, attribute, label in STEPS:
            owner = _owner(module_name)
            real = getattr(owner, attribute)

            def timed(*args, _real=real, _label=label, **kwargs):
                begun = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - begun

            setattr(owner, attribute, timed)
    sys.argv = ["topoctl", *argv]
    try:
        cli.app()
    except SystemExit:
        pass
    ended = time.perf_counter()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(out)
    else:
        lines = [f"imports (topoctl, typer, the standard library)\t{imported - started}",
                 f"the command, after its imports\t{ended - imported}"]
        lines += [f"{label}\t{spent[label]}" for _, _, label in STEPS if label in spent]
        Path(out).write_text("\n".join(lines) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
