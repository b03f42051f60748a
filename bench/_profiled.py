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
LAZY = ["topoctl.applier", "topoctl.loader", "topoctl.kernel", "topoctl.observe", "topoctl.planner",
        "topoctl.show", "topoctl.journal", "topoctl.locking", "topoctl.saved", "topoctl.compiled"]

# (module, attribute, label): the steps timed, where the code that calls them looks them up
STEPS = [
    ("topoctl.loader", "load_file", "load the cached topology"),
    ("topoctl.kernel.Kernel", "prefetch", "fork the reader"),
    ("topoctl.applier", "desired_state", "desired state"),
    ("topoctl.records", "netns_records", "namespace records"),
    ("topoctl.kernel.Kernel", "open", "open sockets"),
    ("topoctl.tables", "_read", "dumps read here"),
    ("topoctl.tables.Reader", "collect", "wait for the reader's share"),
    ("topoctl.observe", "read_tables", "read_tables (all dumps)"),
    ("topoctl.applier", "observe", "observe (read + build the live state)"),
    ("topoctl.applier", "plan", "planner"),
    ("topoctl.kernel", "create_namespaces", "create namespaces"),
    ("topoctl.applier", "execute", "other steps (veths, addresses, routes)"),
    ("topoctl.applier", "execute_plan", "execute the plan"),
    ("topoctl.journal.Journal", "_write", "journal writes"),
]


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
            path = module_name.split(".")
            owner = importlib.import_module(".".join(path[:2]))
            for part in path[2:]:
                owner = getattr(owner, part)
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
