"""The agent's figures on the bench topology: `python -m bench.watch [--n 1000]`.

Starts `topoctl watch --emulate -o json` on the bench topology, then measures:
- repair latency: a container's veth deleted (its host end, `ip link del`, timed from just
  before the command starts) until the agent's log line for the repair, which it writes after
  the repair and the verifying plan; and until the veth is back up in the bridge, seen from a
  notification socket of the bench's own;
- idle CPU: the agent's user + system time over an idle period, in % of one CPU;
- memory: its RSS after start, then every 100 of `--drifts` deletions repaired in a loop.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .__main__ import ROOT, TOPOCTL, force_clean, settle
from .topology import BenchTopology


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for text in status:
            if text.startswith("VmRSS:"):
                return int(text.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Agent:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([*TOPOCTL, "watch", "--emulate", "-o", "json", str(path)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for text in self.proc.stdout:
            self.lines.put((time.monotonic(), json.loads(text)))

    def next(self, within: float = 120.0) -> tuple[float, dict]:
        try:
            return self.lines.get(timeout=within)
        except queue.Empty:
            raise SystemExit(f"no log line within {within}s: {self.proc.stderr.read() if self.proc.poll() is not None else ''}")

    def stop(self) -> tuple[int, float]:
        sent = time.monotonic()
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        return code, time.monotonic() - sent


def _link_back(t: BenchTopology, name: str, since: float, subs) -> float | None:
    """Seconds from `since` until NEWLINK says `name` is up in br0 again."""
    from topoctl.core.drift import LinkChange

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for sub in subs:
            for change in sub.read():
                if isinstance(change, LinkChange) and change.name == name and not change.deleted \
                        and change.planned[0] and change.planned[3]:
                    return time.monotonic() - since
        time.sleep(0.001)
    return None


def measure(n: int, repairs: int, drifts: int, idle: float, folder: Path) -> dict:
    from topoctl.kernel import notify

    t = BenchTopology(n, secrets.token_hex(2))
    path = t.write(folder)
    settle()
    agent = Agent(path)
    result: dict = {"n": n}
    try:
        _, first = agent.next(within=300)
        assert first["result"] == "applied", first
        result["start_seconds"] = first["seconds"]
        while True:  # the confirming plan after the start is quiet; wait until nothing more comes
            try:
                agent.lines.get(timeout=3)
            except queue.Empty:
                break
        settle()
        result["rss_kib_start"] = _rss_kib(agent.proc.pid)
        before = _cpu_seconds(agent.proc.pid)
        time.sleep(idle)
        result["idle_cpu_percent"] = round(100 * (_cpu_seconds(agent.proc.pid) - before) / idle, 3)
        result["idle_seconds"] = idle
        subs, _ = notify.subscribe([t.host_ns])
        logged, back = [], []
        rss = [(0, _rss_kib(agent.proc.pid))]
        for k in range(max(repairs, drifts)):
            i = random.randrange(n)
            made = time.monotonic()
            subprocess.run(["ip", "-n", t.host_ns, "link", "del", t.port(i)], check=True)
            if k < repairs:
                back.append(_link_back(t, t.port(i), made, subs))
            at, entry = agent.next()
            assert entry["result"] == "applied" and entry["trigger"] == "drift", entry
            if k < repairs:
                logged.append(at - made)
            for sub in subs:
                sub.read()
            if (k + 1) % 100 == 0:
                rss.append((k + 1, _rss_kib(agent.proc.pid)))
        for sub in subs:
            sub.close()
        result["repair_logged_seconds"] = _summary(logged)
        result["repair_link_back_seconds"] = _summary([b for b in back if b is not None])
        result["rss_kib_by_drifts"] = rss
        code, took = agent.stop()
        result["sigterm_exit"], result["sigterm_seconds"] = code, round(took, 3)
        check = subprocess.run([*TOPOCTL, "plan", "--emulate", "-d", str(path)], cwd=ROOT, capture_output=True)
        result["plan_after_exit"] = check.returncode
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
        subprocess.run([*TOPOCTL, "destroy", "--emulate", str(path)], cwd=ROOT, capture_output=True)
        force_clean(t)
    return result


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {"count": len(values), "median": round(statistics.median(values), 3),
            "p90": round(values[int(0.9 * (len(values) - 1))], 3), "max": round(values[-1], 3)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="containers")
    parser.add_argument("--repairs", type=int, default=20, help="deletions whose repair is timed")
    parser.add_argument("--drifts", type=int, default=500, help="deletions in all (RSS every 100)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measured")
    parser.add_argument("--out", help="a file for the JSON result")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the bench builds namespaces: run it as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args.n, args.repairs, args.drifts, args.idle, Path(folder))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
