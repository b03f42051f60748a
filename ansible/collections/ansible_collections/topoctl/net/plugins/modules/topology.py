#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module topoctl.net.topology: plan, then apply exactly that plan, with topoctl."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: topology
short_description: Make a host's network match a topoctl topology file
description:
  - Plans the topology file I(src) for one host with C(topoctl plan --out PLAN -o json), then
    applies exactly that saved plan with C(topoctl apply PLAN -o json). topoctl refuses a saved
    plan whose live state changed since it was computed (a I(stale plan)), so what runs is what
    the plan showed.
  - C(changed) comes from the JSON summary of the apply (actions added, changed, destroyed),
    never from text. A second run with the same file reports C(changed=false).
  - In check mode only C(topoctl plan -o json) runs; C(changed) is true when actions are
    pending. With C(--diff), the result has one before/after pair per planned action and the
    whole plan as readable text (C(prepared)).
  - When an apply fails, topoctl rolls the host back itself; the module fails with the message,
    hint and rollback of the JSON error document topoctl prints with C(-o json), and
    C(rolled_back) says whether the rollback was complete.
  - I(state=absent) plans with C(topoctl plan --destroy --out PLAN) and applies that saved
    plan, which destroys what the topology owns on the host.
  - The action plugin of the same name fills I(host) with the task's C(inventory_hostname)
    when the task does not give it.
version_added: "0.1.0"
author:
  - topoctl authors
requirements:
  - topoctl on the target (C(pip install topoctl)), run as root
options:
  src:
    description:
      - Path of the topology file on the target.
    type: path
    required: true
  host:
    description:
      - The host of the file that this target is (C(topoctl --host)).
      - Defaults to the inventory hostname (filled in by the action plugin).
      - An empty string passes no C(--host), so topoctl picks the host itself from the
        machine's underlay addresses (or the file's single host); with I(emulate=true) it
        then acts on every host of the file.
    type: str
  state:
    description:
      - C(present) builds or repairs the host's part; C(absent) destroys it.
    type: str
    choices: [present, absent]
    default: present
  emulate:
    description:
      - Pass C(--emulate), so the host is the network namespace C(<topology>-<host>) instead of
        the machine's own namespace (for rehearsals and tests on one machine).
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds the apply waits for another apply or destroy of the same host
        (C(--lock-timeout)). topoctl's default (30) when not given.
    type: float
  executable:
    description:
      - The topoctl command, a path or a name looked up on C(PATH).
    type: str
    default: topoctl
attributes:
  check_mode:
    description: Runs C(topoctl plan) only, and reports whether actions are pending.
    support: full
  diff_mode:
    description: One before/after pair per planned action, and the plan as text.
    support: full
notes:
  - Under I(emulate=true), hosts of one file share an emulated underlay; run the hosts one
    after the other (C(serial), or C(throttle=1)), since a plan saved by one host turns
    stale when another host's apply changes the shared underlay.
"""

EXAMPLES = r"""
- name: Build this host's part of the cluster
  topoctl.net.topology:
    src: /etc/topoctl/cluster.yaml

- name: Rehearse on one machine, each inventory host an emulated namespace
  topoctl.net.topology:
    src: /tmp/cluster.yaml
    emulate: true
    executable: /opt/topoctl/bin/topoctl

- name: Remove this host's part
  topoctl.net.topology:
    src: /etc/topoctl/cluster.yaml
    state: absent
"""

RETURN = r"""
changed:
  description: In check mode, whether actions are pending; otherwise whether the apply's
    summary counts any added, changed or destroyed object.
  returned: always
  type: bool
host:
  description: The host passed to topoctl (C(null) when topoctl picked it).
  returned: always
  type: str
topology:
  description: The topology's name.
  returned: success
  type: str
actions:
  description: Number of actions in the plan (pending in check mode, run otherwise).
  returned: success
  type: int
  sample: 14
summary:
  description: The plan's summary.
  returned: success
  type: dict
  sample: {"add": 13, "change": 1, "destroy": 0}
plan:
  description: The plan, as C(topoctl plan -o json) prints it.
  returned: success, and on failure of the apply (with C(prepared))
  type: dict
applied:
  description: The document C(topoctl apply PLAN -o json) printed (the plan run, plus
    C(seconds), C(kernel_writes), C(verified), C(signals)).
  returned: success, not in check mode
  type: dict
kernel_writes:
  description: Actions the apply ran (0 when there was nothing to do).
  returned: success, not in check mode
  type: int
seconds:
  description: Wall time topoctl reports for plan, run and verification of the apply.
  returned: success, not in check mode
  type: float
prepared:
  description: The plan as text, one line per action, and its summary line.
  returned: success
  type: str
error:
  description: topoctl's error message.
  returned: failure
  type: str
error_type:
  description: topoctl's kind of error (C(apply_failed), C(stale_plan), C(lock_timeout),
    C(invalid_topology), C(usage_error), C(verification_failed), ...).
  returned: failure
  type: str
hint:
  description: topoctl's hint; after a failed apply it says what was rolled back.
  returned: failure
  type: str
rollback:
  description: What topoctl's rollback did, C(steps) run back, C(complete), and the
    C(not_undone) list; null when nothing was rolled back (nothing had changed, a stale plan,
    a destroy, which does not roll back).
  returned: failure
  type: dict
  sample: {"steps": 1, "complete": true, "not_undone": []}
rolled_back:
  description: True when topoctl rolled the host back completely, false when something was
    not undone, null when there was no rollback (see C(rollback)).
  returned: failure
  type: bool
problems:
  description: For an invalid file, topoctl's list of problems (file, line, column, message, hint).
  returned: failure, invalid input
  type: list
  elements: dict
cmd:
  description: The topoctl commands run, in order, each as its argument list.
  returned: always
  type: list
  elements: list
state:
  description: The I(state) asked for.
  returned: success
  type: str
emulate:
  description: Whether C(--emulate) was passed.
  returned: success
  type: bool
verified:
  description: Always true after a real run (topoctl fails the apply when its fresh plan is not empty).
  returned: success, not in check mode
  type: bool
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

SYMBOL = {"create": "+", "change": "~", "delete": "-"}
HIDDEN = ("action", "subject")


def parsed_json(text):
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def format_value(value):
    return "none" if value is None else str(value)


def describe(action):
    """One action as a line of the readable plan (close to topoctl's text form)."""
    sym = SYMBOL.get(action["action"], "?")
    subject = action["subject"]
    if action["action"] == "delete" and action.get("replace_reason"):
        return "-/+ %s (forces replacement: %s)" % (subject, action["replace_reason"])
    line = "  %s %s" % (sym, subject)
    if action["action"] == "create" and action.get("type") == "route":
        line += "".join(" %s %s" % (k, action[k]) for k in ("via", "dev") if action.get(k))
        line += " metric %s" % action.get("metric", 0)
    if action["action"] == "create" and action.get("replace_reason"):
        line += " (replacement)"
    if action["action"] == "change":
        if action.get("changes"):
            line += "  " + ", ".join("%s: %s -> %s" % (c["attribute"], format_value(c["old"]), format_value(c["new"]))
                                     for c in action["changes"])
        elif action.get("type") == "sysctl":
            line += "  %s -> %s" % (format_value(action.get("old")), format_value(action.get("new")))
            if action.get("why"):
                line += " (%s)" % action["why"]
    lines = [line]
    for rule in action.get("rules") or []:
        lines.append("      %s %s: %s" % (rule["change"], rule["chain"], rule["rule"]))
    return "\n".join(lines)


def prepared_text(plan, host):
    where = "host %s" % host if host else "the host topoctl picked"
    head = "topoctl plan of topology %s for %s:" % (plan.get("topology"), where)
    body = [describe(action) for action in plan.get("actions", [])]
    summary = plan.get("summary", {})
    if body:
        tail = "Plan: %d to add, %d to change, %d to destroy." % (
            summary.get("add", 0), summary.get("change", 0), summary.get("destroy", 0))
    else:
        tail = "No changes. The live state matches the file."
    notes = ["note: " + note for note in plan.get("notes", [])]
    warnings = ["warning: " + warning for warning in plan.get("warnings", [])]
    return "\n".join([head] + body + notes + warnings + ["", tail]) + "\n"


def object_diff(action):
    """Before and after of the one object an action touches, from the plan's JSON alone."""
    kind = action["action"]
    identity = {k: v for k, v in action.items() if k not in HIDDEN}
    before, after = None, None
    if kind == "create":
        after = identity
    elif kind == "delete":
        before = identity
    else:
        base = {k: v for k, v in identity.items() if k not in ("changes", "rules", "old", "new", "why")}
        before, after = dict(base), dict(base)
        if action.get("changes"):
            for change in action["changes"]:
                before[change["attribute"]] = change["old"]
                after[change["attribute"]] = change["new"]
        elif action.get("type") == "sysctl":
            before["value"], after["value"] = action.get("old"), action.get("new")
            if action.get("why"):
                after["why"] = action["why"]
        if action.get("rules"):
            before["rules"], after["rules"] = [], []
            for rule in action["rules"]:
                if rule["change"] == "-":
                    before["rules"].append("%s: %s" % (rule["chain"], rule["rule"]))
                elif rule["change"] == "+":
                    after["rules"].append("%s: %s" % (rule["chain"], rule["rule"]))
                else:  # "~": OLD -> NEW
                    old, _, new = rule["rule"].partition(" -> ")
                    before["rules"].append("%s: %s" % (rule["chain"], old))
                    after["rules"].append("%s: %s" % (rule["chain"], new))
    header = action["subject"]
    return {
        "before_header": header + ("" if before is not None else " (absent)"),
        "after_header": header + ("" if after is not None else " (absent)"),
        "before": json.dumps(before, indent=2, sort_keys=True) + "\n" if before is not None else "",
        "after": json.dumps(after, indent=2, sort_keys=True) + "\n" if after is not None else "",
    }


def plan_diff(plan, host):
    diffs = [object_diff(action) for action in plan.get("actions", [])]
    diffs.append({"prepared": prepared_text(plan, host)})
    return diffs


class Runner(object):
    def __init__(self, module):
        self.module = module
        self.commands = []

    def run(self, argv):
        self.commands.append(argv)
        return self.module.run_command(argv)

    def fail(self, msg, **extra):
        extra.setdefault("changed", False)
        self.module.fail_json(msg=msg, cmd=self.commands, **extra)

    def document(self, what, rc, out, err, **extra):
        """The JSON topoctl printed; on an error, a failure with the message, hint and rollback
        of topoctl's JSON error document (`-o json` prints one for every error)."""
        parsed = parsed_json(out)
        if rc == 0 and isinstance(parsed, dict) and "actions" in parsed:
            return parsed
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(error, dict):  # not topoctl's document: a crash, a wrong executable
            self.fail("topoctl %s failed (exit %d) without its JSON error document: %s"
                      % (what, rc, err.strip() or out.strip()), rc=rc, stderr=err, stdout=out, **extra)
        if parsed.get("valid") is False:
            problems = parsed.get("problems", [])
            lines = ["%s:%s:%s: %s%s" % (p.get("file"), p.get("line"), p.get("column"), p.get("message"),
                                         " (hint: %s)" % p["hint"] if p.get("hint") else "") for p in problems]
            self.fail("topoctl %s: the input is invalid: %s" % (what, "; ".join(lines)),
                      problems=problems, error=error["message"], error_type=error["type"], rc=rc, **extra)
        rollback = error.get("rollback")
        rolled_back = None if rollback is None else bool(rollback.get("complete"))
        # the host was changed: a rollback that did not undo everything, or a destroy that
        # failed after it began (a destroy does not roll back)
        changed = rolled_back is False or (what == "destroy" and error.get("type") in (
            "apply_failed", "verification_failed"))
        where = "host %s" % extra["host"] if extra.get("host") else "this host"
        message = "topoctl %s failed on %s (exit %d): %s" % (what, where, rc, error["message"])
        if rolled_back:
            message += "; topoctl rolled the host back (%s)" % error.get("hint")
        elif rolled_back is False:
            message += "; topoctl could NOT roll everything back (%s)" % error.get("hint")
        elif error.get("hint"):
            message += " (%s)" % error["hint"]
        self.fail(message, error=error["message"], error_type=error["type"], hint=error.get("hint", ""),
                  rollback=rollback, rolled_back=rolled_back, changed=changed, rc=rc, stderr=err, **extra)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            host=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            emulate=dict(type="bool", default=False),
            lock_timeout=dict(type="float"),
            executable=dict(type="str", default="topoctl"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    runner = Runner(module)
    host = params["host"] or None
    destroy = params["state"] == "absent"
    if not os.path.isfile(params["src"]):
        runner.fail("topology file %s does not exist on the target" % params["src"], host=host)
    executable = params["executable"]
    if os.sep not in executable:
        executable = module.get_bin_path(executable, required=True)

    selection = (["--host", host] if host else []) + (["--emulate"] if params["emulate"] else [])
    plan_argv = [executable, "plan", "-o", "json"] + selection + (["--destroy"] if destroy else [])
    saved = None
    if not module.check_mode:
        saved = os.path.join(module.tmpdir, "topoctl-plan.json")
        plan_argv += ["--out", saved]
    rc, out, err = runner.run(plan_argv + [params["src"]])
    plan = runner.document("plan", rc, out, err, host=host)
    for warning in plan.get("warnings", []):
        module.warn("topoctl: %s" % warning)
    for line in err.splitlines():
        if ": warning: " in line:
            module.warn("topoctl: %s" % line)

    result = dict(
        host=host,
        state=params["state"],
        emulate=params["emulate"],
        topology=plan.get("topology"),
        summary=plan.get("summary"),
        actions=len(plan.get("actions", [])),
        plan=plan,
        prepared=prepared_text(plan, host),
    )
    if module._diff:
        result["diff"] = plan_diff(plan, host)
    if module.check_mode:
        module.exit_json(changed=bool(plan.get("actions")), cmd=runner.commands, **result)

    apply_argv = [executable, "apply", "-o", "json"]
    if params["lock_timeout"] is not None:
        apply_argv += ["--lock-timeout", repr(float(params["lock_timeout"]))]
    rc, out, err = runner.run(apply_argv + [saved])
    applied = runner.document("destroy" if destroy else "apply", rc, out, err, host=host, plan=plan,
                              prepared=result["prepared"])
    summary = applied.get("summary", {})
    changed = any(summary.get(k, 0) for k in ("add", "change", "destroy")) or (applied.get("kernel_writes") or 0) > 0
    for warning in applied.get("warnings", []):
        if warning not in plan.get("warnings", []):
            module.warn("topoctl: %s" % warning)
    result.update(
        applied=applied,
        summary=summary,
        actions=len(applied.get("actions", [])),
        kernel_writes=applied.get("kernel_writes"),
        seconds=applied.get("seconds"),
        verified=applied.get("verified"),
    )
    module.exit_json(changed=changed, cmd=runner.commands, **result)


if __name__ == "__main__":
    main()
