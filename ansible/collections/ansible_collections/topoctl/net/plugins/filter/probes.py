# -*- coding: utf-8 -*-
"""Filters for the rows of `topoctl check -o json`: which probes are as designed, which of
those are no longer, and a one-line account of a probe.

A probe is identified by its group, kind, source, target, address, port and size. Only probes
that were as designed before a change are required after it (as kubernetes-nmstate requires
only the probes that passed before): a host not built yet fails its probes before, and those
are not held against the change."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json


def probe_key(row):
    return "%s %s %s -> %s %s port=%s size=%s" % (row.get("group"), row.get("kind"), row.get("from"),
                                                   row.get("to"), row.get("target"), row.get("port"),
                                                   row.get("size"))


def probe_text(row):
    """`app-2 -> app-1 10.244.1.2 (icmp): no reply within 2.0 s: <first broken hop> (fix: ...)`."""
    kind = row.get("kind") or "?"
    if row.get("size"):
        kind += ", full size with DF: %s-byte payload" % row["size"]
    elif row.get("port"):
        kind += "/%s" % row["port"]
    text = "%s -> %s %s (%s): %s" % (row.get("from"), row.get("to"), row.get("target"), kind, row.get("detail"))
    broken = [hop for hop in row.get("explanation") or [] if not hop.get("ok")]
    if broken:
        text += ": " + broken[0].get("text", "")
        if broken[0].get("fix"):
            text += " (fix: %s)" % broken[0]["fix"]
    return text


def _rows(value, name):
    if not isinstance(value, list):
        raise ValueError("%s: expected the list that topoctl check -o json prints, got %s"
                         % (name, type(value).__name__))
    return value


def probes_passing(rows):
    """Keys of the probes that ended as designed."""
    return [probe_key(row) for row in _rows(rows, "probes_passing") if row.get("as_designed")]


def probe_regressions(after, before):
    required = set(probes_passing(before))
    seen, found = set(), []
    for row in _rows(after, "probe_regressions"):
        key = probe_key(row)
        seen.add(key)
        if key in required and not row.get("as_designed"):
            found.append(dict(row, key=key, text=probe_text(row)))
    for key in sorted(required - seen):  # the same file gives the same probes; say so if not
        found.append({"key": key, "as_designed": False, "text": "%s: passed before, not probed after" % key})
    return found


def check_error(result):
    """What is wrong with a registered `topoctl check -o json` result, or "" when it is a list
    of probes (exit 0: all as designed; 2: some not). topoctl's JSON error document gives the
    message and hint; without one (topoctl missing, a crash), stderr does."""
    if not isinstance(result, dict):
        return "no result"
    rc, out = result.get("rc"), (result.get("stdout") or "").strip()
    try:
        parsed = json.loads(out) if out else None
    except ValueError:
        parsed = None
    if rc in (0, 2) and isinstance(parsed, list):
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        text = error.get("message") or "?"
        if parsed.get("problems"):
            text += ": " + "; ".join("%s:%s:%s: %s" % (p.get("file"), p.get("line"), p.get("column"), p.get("message"))
                                     for p in parsed["problems"])
        return text + (" (%s)" % error["hint"] if error.get("hint") else "")
    return (result.get("stderr") or result.get("msg") or "").strip() or "exit %s and no output" % rc


def probe_summary(rows):
    rows = _rows(rows, "probe_summary")
    good = sum(1 for row in rows if row.get("as_designed"))
    return "%d of %d probes as designed" % (good, len(rows))


class FilterModule(object):
    def filters(self):
        return {
            "probe_regressions": probe_regressions,
            "probes_passing": probes_passing,
            "probe_text": probe_text,
            "probe_summary": probe_summary,
            "check_error": check_error,
        }
