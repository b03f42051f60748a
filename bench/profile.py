"""Where the time of one topoctl command goes, on the benchmark's topology.

    python -m bench.profile [--what apply|plan] [--n N] [--repeat 5] [--out DIR]

`apply` profiles a cold apply of N containers (default 100), `plan` a no-op plan of a built
topology (default N=1000): the two lines of the targets that are hardest to meet. Each run is
a fresh `python -m topoctl` process, as in the benchmark:

- `--repeat` runs with wall-clock timers around the main steps (no profiler, so the times are
  real), reported as the median and range of each step;
- one run under cProfile, from before the first import of topoctl, reported as the top
  functions by own time and by cumulative time.

Both run in `bench/_profiled.py`, which imports nothing but topoctl (and the standard library),
so that the process is topoctl's alone.

The namespace threads are timed from the calling thread; the reader process (from 200
namespaces on) is not profiled, only the wait for it (`Reader.collect`). It writes
`profile-<what>-<N>.txt` into --out (default: print only) and leaves nothing on the machine.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .__main__ import ROOT, TOPOCTL, force_clean, leftovers, settle
from .topology import BenchTopology

def _topoctl(*args: str) -> None:
    subprocess.run([*TOPOCTL, *args], cwd=ROOT, check=True, capture_output=True, text=True)


def _run_child(mode: str, out: Path, argv: list[str]) -> float:
    begun = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench._profiled", mode, str(out), *argv],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - begun


def profile(what: str, n: int, repeat: int, settle_limit: float = 60.0, netfilter: bool = False) -> str:
    t = BenchTopology(n, secrets.token_hex(2), netfilter=netfilter)
    with tempfile.TemporaryDirectory(prefix="topoctl-profile-") as tmp:
        folder = Path(tmp)
        path = t.write(folder)
        argv = [what, "--emulate", str(path)] + (["-o", "json"] if what == "apply" else [])
        timings: dict[str, list[float]] = {}
        walls: list[float] = []
        try:
            _topoctl("validate", str(path))  # as in the benchmark: the file is cached
            if what == "plan":
                _topoctl("apply", "--emulate", str(path))
            for run in range(repeat + 1):
                if what == "apply":
                    _topoctl("destroy", "--emulate", str(path))
                settle(settle_limit)  # as the benchmark does: the kernel frees deleted namespaces late, in its own threads
                out = folder / f"timers-{run}.tsv"
                if run < repeat:
                    walls.append(_run_child("timers", out, argv))
                    for line in out.read_text().splitlines():
                        label, seconds = line.split("\t")
                        timings.setdefault(label, []).append(float(seconds))
                else:
                    _run_child("cprofile", folder / "stats", argv)
            _topoctl("destroy", "--emulate", str(path))
        finally:
            force_clean(t)
        if leftovers(t):
            raise SystemExit(f"left behind: {leftovers(t)[:5]}")
        report = io.StringIO()
        command = f"topoctl {what} --emulate" + (" -o json" if what == "apply" else "")
        variant = ", masquerade + ports" if netfilter else ""
        report.write(f"# {command}, N={n}{variant} ({'cold' if what == 'apply' else 'no-op'}), {time.strftime('%Y-%m-%d')}\n\n")
        report.write(f"Wall-clock, {repeat} runs (median, min-max), seconds; the process: "
                     f"{statistics.median(walls):.3f} ({min(walls):.3f}-{max(walls):.3f})\n\n")
        for label, values in timings.items():
            report.write(f"  {statistics.median(values):7.3f}  ({min(values):.3f}-{max(values):.3f})  {label}\n")
        report.write("\nOne run under cProfile (times inflated by the profiler), by own time:\n\n")
        stats = pstats.Stats(str(folder / "stats"), stream=report)
        stats.strip_dirs().sort_stats("tottime").print_stats(25)
        report.write("By cumulative time:\n\n")
        stats.sort_stats("cumulative").print_stats(25)
        return report.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=["apply", "plan"], default="apply")
    parser.add_argument("--n", type=int, help="containers (default: 100 for apply, 1000 for plan)")
    parser.add_argument("--repeat", type=int, default=5, help="runs with timers")
    parser.add_argument("--out", help="folder for profile-<what>-<N>.txt")
    parser.add_argument("--netfilter", action="store_true",
                        help="the bench topology with masquerade and one published port per container")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to wait at most for an idle machine before each run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the profile builds namespaces: run it as root", file=sys.stderr)
        return 2
    n = args.n or (100 if args.what == "apply" else 1000)
    text = profile(args.what, n, args.repeat, args.settle, args.netfilter)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"profile-{args.what}-{n}{'-nf' if args.netfilter else ''}.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
