"""Crash recovery: an apply killed with SIGKILL at a random moment is noticed by the next run,
which takes over what it had begun and converges; nothing leaks, nothing foreign is touched."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from .conftest import ROOT, TOPOCTL, ip, netns_names
from .test_scale import containers  # noqa: E402

pytestmark = pytest.mark.root

TRIALS = int(os.environ.get("TOPOCTL_KILL_TRIALS", "20"))


def test_sigkill_at_random_moments_then_apply_converges(sandbox_factory):
    box = sandbox_factory(containers(60))
    foreign = f"foreign-{box.uid}"
    ip("netns", "add", foreign)
    rng = random.Random(1234)
    noticed = 0
    try:
        for trial in range(TRIALS):
            if trial % 2 == 0:
                box.run("destroy")  # kill an apply that builds from nothing...
            else:  # ...or one that repairs a third of the veths, deleted by hand
                subprocess.run(["ip", "-n", box.host(), "-batch", "-"], check=True, text=True,
                               input="".join(f"link del v{i}\n" for i in range(0, 60, 3)))
            doomed = subprocess.Popen([*TOPOCTL, "apply", "--emulate", str(box.path)], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Wait for the apply to start changing the kernel (its journal appears), then kill it
            # at a random moment of its work.
            journal = f"/run/topoctl/journal/{box.topology}.jsonl"
            deadline = time.monotonic() + 5
            while not os.path.exists(journal) and doomed.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.12))
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
            recovered = box.run("apply", "-o", "json")
            if any("was interrupted" in note for note in json.loads(recovered.stdout)["notes"]):
                noticed += 1
            assert box.plan_exit() == 0, f"trial {trial}: not converged after the recovery apply"
        print(f"{noticed} of {TRIALS} kills landed inside an apply; all converged")
        assert noticed >= TRIALS // 3, f"only {noticed} of {TRIALS} kills landed inside an apply"
        assert foreign in netns_names()  # never touched
        box.run("destroy")
        assert [n for n in box.leftovers() if n != foreign] == []
    finally:
        ip("netns", "del", foreign, check=False)
