"""The agent's deployment files in docs/fleet/: the systemd unit passes systemd-analyze verify,
and the DaemonSet's parts fit together (it is not tested on a cluster: there is none here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

FLEET = Path(__file__).resolve().parents[2] / "docs" / "fleet"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_unit_verifies_and_runs_topoctl_watch(tmp_path):
    text = (FLEET / "topoctl-watch@.service").read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.split()[1:3] == ["watch", "$TOPOCTL_WATCH_ARGS"]
    assert "KillSignal=SIGTERM" in text and "Restart=on-failure" in text
    # the same unit with topoctl where this machine has it: systemd checks the rest
    unit = tmp_path / "topoctl-watch@fleet.service"
    topoctl = Path(sys.executable).with_name("topoctl")
    unit.write_text(text.replace("/usr/local/bin/topoctl", str(topoctl)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_daemonset_runs_watch_on_each_node_with_its_name_and_the_configmap_file():
    docs = list(yaml.safe_load_all((FLEET / "topoctl-daemonset.yaml").read_text()))
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    args = container["args"]
    assert args[0] == "watch" and args[args.index("--host") + 1] == "$(NODE_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert args[-1].startswith(mounts["topology"]["mountPath"] + "/") and "configMap" in volumes["topology"]
    assert volumes["netns"]["hostPath"]["path"] == "/run/netns" and mounts["netns"]["mountPropagation"] == "Bidirectional"
    assert volumes["state"]["hostPath"]["path"] == "/run/topoctl"
    assert ds["metadata"]["namespace"] == next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
