"""Interrupts fail closed: 1-3 SIGINT/SIGTERM at random moments of an apply or a destroy of 30
containers end in the state before the run or the state the file asks for, and the exit code
says which; a SIGKILL leaves what the next apply or destroy converges from.

Trials: TOPOCTL_SIGNAL_TRIALS (default 40); seed: TOPOCTL_SIGNAL_SEED (default: new each run,
printed with every failure and in the summary at the end of the run).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from topoctl.kernel import namespaces as ns
from topoctl import paths
from topoctl.run.context import Context, realise
from topoctl.kernel.sockets import Kernel
from topoctl.spec.loader import load_file
from topoctl.output.show import state_json

from .conftest import ROOT, TOPOCTL
from .test_scale import containers

pytestmark = pytest.mark.root

TRIALS = int(os.environ.get("TOPOCTL_SIGNAL_TRIALS", "40"))
SEED = int(os.environ.get("TOPOCTL_SIGNAL_SEED") or random.SystemRandom().randrange(1 << 30))
SUMMARY: dict[str, object] = {}  # printed by conftest's terminal summary


def snapshot(box) -> dict:
    """Everything of the box on the machine: its namespaces and records (ours or not), every
    link in them (with its owner), and the show --output json view."""
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    with Kernel() as kernel:
        live = context.observe(kernel)
    folder = Path(paths.netns_records_dir())
    return {
        "netns": sorted(n for n in ns.list_netns() if box.uid in n),
        "records": sorted(p.name for p in folder.iterdir() if box.uid in p.name) if folder.is_dir() else [],
        "links": sorted((link.scope or "", link.name, link.owner or "") for link in live.links.values()),
        "show": state_json(live, context),
    }


def plan_is_empty(box) -> bool:
    topology = load_file(box.path)
    context = Context(topology, realise(topology, None, True))
    with Kernel() as kernel:
        the_plan, _ = context.plan(kernel)
    return the_plan.empty


def dead_mounts(box) -> list[str]:
    """The box's /run/netns files that pin no namespace: what `ip netns list` reports as "Peer
    netns reference is invalid" (asked of the box's names only: other runs on the machine
    show such files for a moment while they make namespaces)."""
    return ns.half_made([n for n in ns.list_netns() if box.uid in n])


def drift(box, rng: random.Random) -> None:
    """Delete some of the containers' cables by hand (their host ends)."""
    victims = rng.sample(range(30), rng.randint(3, 12))
    subprocess.run(["ip", "-n", box.host(), "-batch", "-"], check=True, text=True,
                   input="".join(f"link del v{i}\n" for i in victims))


def signal_plan(rng: random.Random, timeline: dict[str, tuple[float, float]]) -> tuple[str, list[tuple[float, int]]]:
    """1-3 signals, timed from an anchor. Mostly the anchor is the moment the run begins to
    plan, and the first signal is aimed into one of the phases of `timeline` (when each began
    and ended, counted from there, in the last such run that was not stopped), chosen evenly,
    so that the short ones (verification) are hit as often as the long ones; some are timed
    from topoctl's first line (its start: importing, loading, locking). Returns (anchor,
    [(seconds after the anchor or the previous signal, signal)])."""
    count = rng.choice((1, 1, 2, 2, 3))
    if rng.random() < 0.8:
        begin, end = timeline[rng.choice(sorted(timeline))]
        anchor, first = "planning", rng.uniform(begin, end)
    else:
        anchor, first = "start", rng.uniform(0.0, 0.1)
    gaps = [rng.choice((0.0, rng.uniform(0.00001, 0.0001), rng.uniform(0.001, 0.005),
                       rng.uniform(0.005, 0.05), rng.uniform(0.05, 0.2)))
            for _ in range(count - 1)]
    return anchor, [(delay, rng.choice((signal.SIGINT, signal.SIGTERM))) for delay in [first, *gaps]]


def catching(pid: int) -> float:
    """When the process began to catch SIGINT and SIGTERM (topoctl's first lines, see
    topoctl/__main__.py): before that, a signal meets the Python interpreter's own start-up."""
    wanted = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as status:
                caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            break
        if caught & wanted == wanted:
            break
        time.sleep(0.0005)
    return time.monotonic()


def planning_began(run: subprocess.Popen, log: Path) -> float:
    """When the run wrote "phase planning" to its signal log (or ended without)."""
    while run.poll() is None:
        try:
            if "phase planning" in log.read_text():
                break
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    return time.monotonic()


class Signalled:
    """One run of topoctl COMMAND with signals sent to it (or to its process group)."""

    def __init__(self, box, command: str, anchor: str, signals: list[tuple[float, int]], log: Path,
                 group: bool) -> None:
        log.unlink(missing_ok=True)
        run = subprocess.Popen([*TOPOCTL, command, "--emulate", str(box.path)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               env={**os.environ, "TOPOCTL_SIGNAL_LOG": str(log)})
        at = catching(run.pid)
        if anchor == "planning":
            at = planning_began(run, log)
        self.sent = 0
        for delay, signum in signals:
            at += delay
            if at - time.monotonic() > 0.002:
                time.sleep(at - time.monotonic() - 0.002)  # the test shares the two CPUs with the run
            while time.monotonic() < at:
                pass  # the last 2 ms busy: sleep() cannot make microsecond gaps
            if run.poll() is not None:
                break
            (os.killpg if group else os.kill)(run.pid, signum)
            self.sent += 1
        self.out, self.err = run.communicate(timeout=120)
        ended = time.monotonic()
        self.code = run.returncode
        lines = [line.split() for line in (log.read_text().splitlines() if log.exists() else [])]
        self.phases = [fields[2] for fields in lines if fields[0] == "signal"]
        # when each phase of the run began and ended, counted from the start of planning
        starts = [(fields[1], float(fields[2])) for fields in lines if fields[0] == "phase"]
        planning = next((t for name, t in starts if name == "planning"), None)
        self.timeline = {}
        if planning is not None:
            for (name, t), (_, t_next) in zip(starts, starts[1:] + [("end", ended)]):
                if t >= planning and name != "done":
                    self.timeline[name] = (t - planning, t_next - planning)
        if self.sent and not self.phases:
            self.phases = ["start-up"]  # before the run installed its handlers: importing, loading
        if os.environ.get("TOPOCTL_SIGNAL_DEBUG"):
            print(command, anchor, [round(d, 4) for d, _ in signals], self.sent, self.phases, self.code)


def test_signals_at_random_moments_end_in_one_of_the_two_states(sandbox_factory, tmp_path):
    rng = random.Random(SEED)
    box = sandbox_factory(containers(30))
    log = tmp_path / "signals.log"
    tally: Counter = Counter()
    landed: Counter = Counter()
    # phase -> (began, ended) from the start of planning, in the last run of each kind not stopped
    timelines = {kind: {"planning": (0.0, 0.1)} for kind in ("cold apply", "repair", "destroy")}
    for trial in range(TRIALS):
        kind = rng.choice(("cold apply", "cold apply", "repair", "destroy", "destroy", "kill apply", "kill destroy"))
        where = f"seed {SEED}, trial {trial} ({kind})"
        command = "destroy" if kind.endswith("destroy") else "apply"
        if kind in ("repair", "destroy", "kill destroy"):
            box.run("apply")
            if kind == "repair":
                drift(box, rng)
        before = snapshot(box)
        if kind.startswith("kill"):
            _, end = max(timelines["cold apply" if command == "apply" else "destroy"].values())  # the last phase
            run = Signalled(box, command, "planning", [(rng.uniform(0, end), signal.SIGKILL)], log, False)
            code, err = run.code, run.err
            tally[f"{kind}: {'killed' if code == -9 else 'finished first'}"] += 1
            assert "Traceback" not in err, f"{where}: {err}"
            # Whatever it left, the next run of either command converges.
            first = rng.choice(("apply", "destroy"))
            result = box.run(first, expect=None)
            assert result.returncode == 0, f"{where}: {first} after SIGKILL exit {result.returncode}: {result.stderr}"
        else:
            anchor, signals = signal_plan(rng, timelines[kind])
            run = Signalled(box, command, anchor, signals, log, group=rng.random() < 0.3)
            code, out, err, phases = run.code, run.out, run.err, run.phases
            if code == 0 and run.timeline:
                timelines[kind] = run.timeline
            for phase in set(phases) or {"none (it had ended)"}:
                landed[phase] += 1
            assert "Traceback" not in err, f"{where}: {err}"
            after = snapshot(box)
            desired = (not after["netns"] and not after["records"]) if command == "destroy" else plan_is_empty(box)
            outcome = "desired" if code == 0 else "before"
            tally[f"{command}: {outcome} (exit {code})"] += 1
            if code == 0:
                assert desired, f"{where}: exit 0 but the state is not the file's:\n{err}"
                assert ("complete" in out or "No changes" in out), f"{where}: {out}"
            else:
                sent = {signum for _, signum in signals}
                assert code in {128 + s for s in sent}, f"{where}: exit {code} for signals {sent}:\n{err}"
                assert after == before, f"{where}: exit {code}, yet the state is not the one before:\n{err}"
                # "interrupted"/"terminated" alone: stopped while starting (a second signal within
                # microseconds of the first may repeat the word)
                assert ("rolled back" in err or "nothing was changed" in err or err.strip() and
                        set(err.split()) <= {"interrupted", "terminated"}), \
                    f"{where}: the message does not say the state:\n{err}"
                assert "not undone" not in err, f"{where}: {err}"
        assert dead_mounts(box) == [], f"{where}: {dead_mounts(box)}"
        result = box.run("apply", expect=None)
        assert result.returncode == 0 and plan_is_empty(box), f"{where}: the next apply: {result.stderr}"
        result = box.run("destroy", expect=None)
        assert result.returncode == 0 and box.leftovers() == [], f"{where}: the next destroy: {result.stderr}"
        assert dead_mounts(box) == [], f"{where}: {dead_mounts(box)}"
    SUMMARY.update(seed=SEED, trials=TRIALS, outcomes=dict(sorted(tally.items())),
                   signals_landed_in=dict(sorted(landed.items())))
    assert sum(tally.values()) == TRIALS


def test_signals_in_quick_succession_during_start_up_still_say_what_happened(sandbox_factory, tmp_path):
    """Two or three signals a millisecond apart while the command starts, loads or waits for
    its lock: the first ends it, the others must not cut short the message that says so."""
    box = sandbox_factory("docker0.yaml")
    log = tmp_path / "signals.log"
    for step in range(14):
        signals = [(0.008 * step, signal.SIGINT if step % 2 else signal.SIGTERM)] + \
            [(0.001, signal.SIGINT), (0.0005, signal.SIGTERM)][: 1 + step % 2]
        run = Signalled(box, "apply", "start", signals, log, group=False)
        said = run.err.strip().splitlines()
        assert "Traceback" not in run.err, run.err
        if run.code == 0:
            assert "complete" in run.out, run.out
            box.run("destroy")
            continue
        assert run.code in (130, 143) and said, f"delay {0.008 * step:.3f}: exit {run.code}, stderr {run.err!r}"
        assert said[-1] in ("interrupted", "terminated") or "nothing was changed" in run.err \
            or "rolled back" in run.err, run.err
        assert box.leftovers() == [] or box.plan_exit() == 0
        box.run("destroy")
