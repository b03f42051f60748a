"""Benchmark topoctl side by side with what a user would otherwise run.

    python -m bench [--sizes 10,100] [--large] [--repeat 3] [--smoke] [--out DIR]

For each N (containers on one bridge, under --emulate) it measures, in one run on this
machine: topoctl's cold apply, no-op plan, no-op apply, drift repair (10% of veths deleted)
and destroy, with the peak RSS of each; the rendered script and its teardown; the hand-written
pyroute2 floor (bench/floor.py, fork-free and pyroute2's own forking way); reading the
state with one `ip -n NS -j -d addr show` per namespace; and the CNI reference plugins
building the same topology as a container runtime calls them (bench/cni.py, docs/bench/cni.md).
It prints a table of seconds and of ratios, writes results.json, table.md and a plot
(plot.svg, log scale) into --out.
--smoke runs N=10 once with the correctness checks and no timing targets (CI).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cni_measure import NF_COLD, NF_DESTROY, NF_PLAN, comparison, comparison_table, measure_cni, port_check
from .plot import write_svg
from .topology import BenchTopology

ROOT = Path(__file__).resolve().parents[1]
TOPOCTL = [sys.executable, "-m", "topoctl"]


class Failure(Exception):
    pass


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


def settle(limit: float = 60.0) -> None:
    """Wait until the machine is idle again. The kernel frees deleted namespaces later, in its
    own worker threads (seconds of CPU after a thousand of them): a measurement started
    meanwhile would be charged for the previous one's clean-up."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        total, idle = _cpu_times()
        time.sleep(0.5)
        total2, idle2 = _cpu_times()
        if total2 > total and (idle2 - idle) / (total2 - total) > 0.9:
            return


def run(argv: list[str], stdin: str | None = None, check: bool = True,
        measured: bool = True) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command; return (seconds, peak RSS in MiB, result). RSS from wait4 of that child."""
    if measured:
        settle()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        if stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        out = proc.stdout.read()
        err = proc.stderr.read()
    except BaseException:
        # Ctrl-C or SIGTERM: the child goes first, so that the caller's clean-up by name
        # does not race a program still making what it is deleting.
        proc.kill()
        proc.wait()
        raise
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    result = subprocess.CompletedProcess(argv, code, out, err)
    if check and code != 0:
        raise Failure(f"{' '.join(argv[:6])}... exited {code}: {err.strip()[-800:]}")
    return seconds, usage.ru_maxrss / 1024, result


def ip_batch(namespace: str, lines: list[str]) -> None:
    subprocess.run(["ip", "-n", namespace, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)


def leftovers(t: BenchTopology) -> list[str]:
    return [n for n in os.listdir("/run/netns") if t.tag in n] if os.path.isdir("/run/netns") else []


def force_clean(t: BenchTopology) -> None:
    for name in leftovers(t):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    state = Path("/run/topoctl/netns")
    if state.is_dir():
        for record in state.glob(f"*{t.tag}*"):
            record.unlink()
    Path(f"/run/topoctl/deployments/{t.name}.json").unlink(missing_ok=True)  # what ls lists
    for lock in Path("/run/topoctl/locks").glob(f"*{t.tag}*.lock"):
        lock.unlink()  # kept by topoctl for a host's next run; this host has none


def ping(namespace: str, address: str) -> bool:
    from topoctl.kernel.namespaces import run_command_in

    return run_command_in(namespace, ["ping", "-c", "1", "-w", "5", "-i", "0.2", "-q", address], quiet=True) == 0


def check_correct(t: BenchTopology, path: Path, label: str) -> None:
    """Sampled reachability, and an empty plan."""
    code = run([*TOPOCTL, "plan", "--emulate", "-d", str(path)], check=False, measured=False)[2].returncode
    if code != 0:
        raise Failure(f"{label}: plan after it is not empty (exit {code})")
    for i in sorted({0, t.n // 2, t.n - 1}):
        if not ping(t.container(i), str(t.gateway.ip)):
            raise Failure(f"{label}: {t.container(i)} cannot reach the bridge address {t.gateway.ip}")


def measure_size(n: int, repeat: int, folder: Path, naive_floor_max: int, ipv6_off_variant: bool = True,
                 cni_check: bool = False) -> dict:
    """Every measurement for one N; returns {metric: {"seconds": s, "rss_mb": m}}.
    cni_check adds the CNI lines' correctness check (an untimed build, DEL inspected)."""
    samples: dict[str, list[tuple[float, float]]] = {}

    def record(metric: str, seconds: float, rss: float) -> None:
        samples.setdefault(metric, []).append((seconds, rss))

    # Cheap read-only lines are sampled several times per build where builds are few.
    per_build = 3 if n >= 1000 else 1
    for _ in range(repeat):
        t = BenchTopology(n, secrets.token_hex(2))
        path = t.write(folder)
        try:
            # The first command on a new file parses and validates it (then cached), as the
            # script's `topoctl render` does before the script is timed: its own line.
            record("topoctl validate (new file)", *run([*TOPOCTL, "validate", str(path)])[:2])
            s, m, r = run([*TOPOCTL, "apply", "--emulate", "-o", "json", str(path)])
            record("topoctl apply (cold)", s, m)
            writes = json.loads(r.stdout)["kernel_writes"]
            check_correct(t, path, "topoctl apply")
            for _ in range(per_build):
                record("topoctl plan (no-op)", *run([*TOPOCTL, "plan", "--emulate", str(path)])[:2])
            for _ in range(per_build):
                s, m, r = run([*TOPOCTL, "apply", "--emulate", "-o", "json", str(path)])
                if json.loads(r.stdout)["kernel_writes"] != 0:
                    raise Failure("the second apply changed the kernel")
                record("topoctl apply (no-op)", s, m)
            ip_batch(t.host_ns, [f"link del {t.port(i)}" for i in range(0, n, 10)])
            record("topoctl apply (10% drift)", *run([*TOPOCTL, "apply", "--emulate", str(path)])[:2])
            check_correct(t, path, "drift repair")
            record("topoctl destroy", *run([*TOPOCTL, "destroy", "--emulate", str(path)])[:2])
            if leftovers(t):
                raise Failure(f"destroy left {leftovers(t)[:5]}")
            record("topoctl writes", writes, 0)

            script = run([*TOPOCTL, "render", "--emulate", str(path)], measured=False)[2].stdout
            record("script build", *run(["sh", "-s"], stdin=script)[:2])
            check_correct(t, path, "rendered script")
            teardown = run([*TOPOCTL, "render", "--emulate", "--teardown", str(path)], measured=False)[2].stdout
            record("script teardown", *run(["sh", "-s"], stdin=teardown)[:2])
            if leftovers(t):
                raise Failure(f"teardown script left {leftovers(t)[:5]}")

            floor = [sys.executable, "-m", "bench.floor"]
            record("pyroute2 floor build", *run([*floor, "build", str(n), t.tag])[:2])
            names = [t.host_ns] + [t.container(i) for i in range(n)]
            reads = "\n".join(f"ip -n {name} -j -d addr show >/dev/null" for name in names)
            for _ in range(per_build):
                record("ip -j reads (1 per netns)", *run(["sh", "-s"], stdin=reads)[:2])
            record("pyroute2 floor teardown", *run([*floor, "teardown", str(n), t.tag])[:2])
            if n <= naive_floor_max:
                record("pyroute2 netns= build", *run([*floor, "build", str(n), t.tag, "--via", "netns"])[:2])
                run([*floor, "teardown", str(n), t.tag], measured=False)
        finally:
            force_clean(t)
            path.unlink(missing_ok=True)
    for _ in range(repeat if ipv6_off_variant else 0):
        # The same topology with IPv6 off in each namespace: what the kernel's IPv6
        # autoconfiguration on the bridge costs (docs/performance.md).
        t = BenchTopology(n, secrets.token_hex(2), ipv6=False)
        path = t.write(folder)
        try:
            run([*TOPOCTL, "validate", str(path)], measured=False)
            record("topoctl apply (cold, IPv6 off)", *run([*TOPOCTL, "apply", "--emulate", str(path)])[:2])
            check_correct(t, path, "topoctl apply, IPv6 off")
            run([*TOPOCTL, "destroy", "--emulate", str(path)], measured=False)
            if leftovers(t):
                raise Failure(f"destroy left {leftovers(t)[:5]}")
        finally:
            force_clean(t)
            path.unlink(missing_ok=True)
    for _ in range(repeat):
        # Masquerade plus one published port per container (issue 13): what the keys cost
        # against the plain lines above, and the peer of CNI's ipMasq + portmap lines.
        t = BenchTopology(n, secrets.token_hex(2), netfilter=True)
        path = t.write(folder)
        try:
            run([*TOPOCTL, "validate", str(path)], measured=False)
            record(NF_COLD, *run([*TOPOCTL, "apply", "--emulate", str(path)])[:2])
            check_correct(t, path, "topoctl apply, masquerade + ports")
            port_check(t.container(0), t.host_ns, "topoctl published port", Failure)
            for _ in range(per_build):
                record(NF_PLAN, *run([*TOPOCTL, "plan", "--emulate", str(path)])[:2])
            s, m, r = run([*TOPOCTL, "apply", "--emulate", "-o", "json", str(path)], measured=False)
            if json.loads(r.stdout)["kernel_writes"] != 0:
                raise Failure("the second apply of the masquerade + ports topology changed the kernel")
            record(NF_DESTROY, *run([*TOPOCTL, "destroy", "--emulate", str(path)])[:2])
            if leftovers(t):
                raise Failure(f"destroy left {leftovers(t)[:5]}")
        finally:
            force_clean(t)
            path.unlink(missing_ok=True)
    # The CNI reference plugins doing the same work (bench/cni_measure.py).
    measure_cni(n, repeat, folder, record, run, Failure, check=cni_check)
    return {metric: {"seconds": statistics.median(s for s, _ in values), "rss_mb": max(m for _, m in values),
                     "runs": len(values)}
            for metric, values in samples.items()}


def ratios(results: dict[int, dict]) -> list[tuple[str, str, float | None, str]]:
    """(target, measured as text, ratio, verdict) for each of the issue's targets present."""
    out = []

    def sec(n: int, metric: str) -> float | None:
        return results.get(n, {}).get(metric, {}).get("seconds")

    def target(label: str, value: float | None, ok: bool | None, text: str) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "MISSED")
        if label.startswith("(not a target"):
            verdict = f"informative ({'under' if ok else 'over'} 12)" if ok is not None else "n/a"
        out.append((label, text, value, verdict))

    a, s, f = sec(100, "topoctl apply (cold)"), sec(100, "script build"), sec(100, "pyroute2 floor build")
    target("N=100 apply >= 5x faster than the script", s / a if a and s else None,
           (s / a >= 5) if a and s else None, f"script/apply = {s / a:.2f}x" if a and s else "not run")
    target("N=100 apply within 1.5x of the pyroute2 floor", a / f if a and f else None,
           (a / f <= 1.5) if a and f else None, f"apply/floor = {a / f:.2f}x" if a and f else "not run")
    p, r = sec(1000, "topoctl plan (no-op)"), sec(1000, "ip -j reads (1 per netns)")
    target("N=1000 no-op plan >= 10x faster than ip -j reads", r / p if p and r else None,
           (r / p >= 10) if p and r else None, f"reads/plan = {r / p:.2f}x" if p and r else "not run")
    for metric in ("topoctl plan (no-op)", "topoctl apply (cold)", "topoctl apply (cold, IPv6 off)"):
        big, small = sec(1000, metric), sec(100, metric)
        label = f"{metric}: time(1000)/time(100) <= 12"
        if "IPv6 off" in metric:
            label = f"(not a target; the same with IPv6 off) {label}"
        target(label, big / small if big and small else None,
               (big / small <= 12) if big and small else None, f"{big / small:.2f}" if big and small else "not run")
    d, td = sec(100, "topoctl destroy"), sec(100, "script teardown")
    target("N=100 destroy no slower than the teardown script", d / td if d and td else None,
           (d <= td) if d and td else None, f"destroy/teardown = {d / td:.2f}x" if d and td else "not run")
    for plain, keyed, limit in (("topoctl apply (cold)", NF_COLD, 1.3), ("topoctl plan (no-op)", NF_PLAN, 1.2)):
        for n in (100, 1000):
            base, nf = sec(n, plain), sec(n, keyed)
            target(f"N={n} {keyed} within {limit}x of {plain}", nf / base if base and nf else None,
                   (nf / base <= limit) if base and nf else None, f"{nf / base:.2f}x" if base and nf else "not run")
    rss = results.get(1000, {}).get("topoctl plan (no-op)", {}).get("rss_mb")
    target("N=1000 plan peak RSS < 200 MB", rss, (rss < 200) if rss else None, f"{rss:.0f} MB" if rss else "not run")
    return out


def table(results: dict[int, dict]) -> str:
    sizes = sorted(results)
    metrics = [m for m in next(iter(results.values())) if m != "topoctl writes"]
    lines = ["| measurement | " + " | ".join(f"N={n} s" for n in sizes) + " | " + " | ".join(f"N={n} RSS MB" for n in sizes) + " |",
             "|---|" + "---:|" * (2 * len(sizes))]
    for metric in metrics:
        cells = [f"{results[n][metric]['seconds']:.3f}" if metric in results[n] else "-" for n in sizes]
        rss = [f"{results[n][metric]['rss_mb']:.0f}" if metric in results[n] else "-" for n in sizes]
        lines.append(f"| {metric} | " + " | ".join(cells) + " | " + " | ".join(rss) + " |")
    return "\n".join(lines)


def _interrupted(signum: int, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so that every `finally` deletes what its build made."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100", help="comma-separated N (default 10,100)")
    parser.add_argument("--large", action="store_true", help="add N=1000 (minutes)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per N below 1000; the median is kept")
    parser.add_argument("--smoke", action="store_true", help="N=10 once, correctness only (CI)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench"), help="where results go")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark builds namespaces: run it as root", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    sizes = [10] if args.smoke else sorted({int(s) for s in args.sizes.split(",")} | ({1000} if args.large else set()))
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="topoctl-bench-") as tmp:
        for n in sizes:
            repeat = 1 if args.smoke or n >= 1000 else args.repeat
            print(f"N={n}: {repeat} run(s)...", file=sys.stderr, flush=True)
            try:
                results[n] = measure_size(n, repeat, Path(tmp), naive_floor_max=100,
                                          cni_check=args.smoke or n == 10)
            except Failure as failure:
                print(f"N={n}: FAILED: {failure}", file=sys.stderr)
                return 1
    print(table(results))
    if cni := comparison_table(results):
        print(f"\n{cni}")
    if args.smoke:
        print("\nsmoke run: correctness checks passed (no timing targets asserted)")
        return 0
    print("\n| target | measured | verdict |\n|---|---|---|")
    for label, text, _, verdict in ratios(results):
        print(f"| {label} | {text} | {verdict} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d")}
    (out / "results.json").write_text(json.dumps({"machine": machine, "results": results,
                                                   "targets": ratios(results), "cni_comparison": comparison(results)},
                                                  indent=2, default=str))
    (out / "table.md").write_text(table(results) + "\n" + (f"\n{cni}\n" if cni else ""))
    write_svg(results, out / "plot.svg")
    print(f"\nwrote {out}/results.json, table.md, plot.svg", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
