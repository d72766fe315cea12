# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""status.yml on a fleet, pure: one row per host and the fleet's own figures.

Each host's status refresh leaves an outcome: its status report (_status.status_report) or the
reason it could not be measured. `fleet_status` turns the outcomes of every host of the play into
the table's rows, the per-host results published for AWX, and the fleet-wide figures, which are
the hosts' windows merged (_fleet.merge: counts and histogram buckets summed, the error rate and
P99 computed once from the sums), never an average of the per-host figures. A host that was not
reached, failed before its status, or could not be measured is a row that says so.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.module_utils._fleet import merge

COLUMNS = ("Host", "Release", "Mode", "Slot", "req/s", "Errors", "P99", "Infrastructure", "Canary policy")

NOT_REACHED = "not reached: unreachable, or failed before its status was taken"


class FleetStatusError(ValueError):
    """An outcome that is not one status.yml leaves; the message names the host and the field."""


def _number(value, unit="", digits=2):
    if value is None:
        return "n/a"
    return ("%%.%df" % digits) % value + unit


def verdict(policy):
    """PASS, FAIL or OPA unavailable, as the dashboard shows a policy's verdict."""
    if policy.get("allow"):
        return "PASS"
    return "OPA unavailable" if policy.get("error") else "FAIL"


def _outcome(host, outcome, round_number):
    """('measured', report), ('failed', reason) or ('missing', reason) for one host's outcome."""
    if outcome is None:
        return "missing", NOT_REACHED
    if not isinstance(outcome, dict):
        raise FleetStatusError("host %s: its status outcome is %s, not a mapping; every host must run the same "
                               "version of the swiftdeploy.stack collection" % (host, type(outcome).__name__))
    if round_number is not None and outcome.get("round") != round_number:
        return "missing", NOT_REACHED
    if outcome.get("error") is not None:
        return "failed", " ".join(str(outcome["error"]).split())
    report = outcome.get("report")
    if not isinstance(report, dict) or not isinstance(report.get("window"), dict):
        raise FleetStatusError("host %s: its status outcome has no report with a window; every host must run "
                               "the same version of the swiftdeploy.stack collection" % host)
    return "measured", report


def _release(report):
    tracks = report["tracks"]
    stable = tracks["stable"]["version"]
    if "canary" in tracks:
        return "%s + canary %s" % (stable, tracks["canary"]["version"])
    return str(stable)


def _mode(report):
    return "canary %s%%" % report["weight"] if report["mode"] == "canary" else str(report["mode"])


def _slot(report):
    tracks = report["tracks"]
    if "canary" in tracks:
        return "%s + %s" % (tracks["stable"]["slot"], tracks["canary"]["slot"])
    return str(tracks["stable"]["slot"])


def _figure_cells(figures):
    return [_number(figures["req_per_s"]), _number(figures["error_rate_percent"], "%"),
            _number(figures["p99_latency_ms"], " ms", 1)]


def host_row(host, report):
    """The table's row of a measured host."""
    return [str(host), _release(report), _mode(report), _slot(report)] + _figure_cells(report["window"]) + [
        verdict(report["policy"]["infrastructure"]), verdict(report["policy"]["canary"])]


def fleet_status(outcomes, hosts, round_number=None):
    """The fleet's status from each host's outcome.

    outcomes      {host: {round, report} or {round, error} or None (no outcome: not reached)}
    hosts         every host of the play, in inventory order (rows follow it)
    round_number  the refresh these outcomes belong to; an outcome of another round is stale
                  (its host was not reached this time); None accepts any

    Returns {columns, rows, fleet_row, notes, hosts, fleet}:
    rows       one list of cells per host (COLUMNS)
    fleet_row  the fleet's row: how many hosts were measured, the merged figures, the verdicts
               counted
    notes      one line per host that was not measured, saying why
    hosts      {host: {measured, report or reason}} for set_stats
    fleet      {hosts, measured, not_measured: [host], releases: {version: [host]},
                modes: {mode: [host]}, figures (merged), outliers, policy: {infrastructure, canary}
                as {pass, fail} counts}
    """
    rows, notes, per_host, windows = [], [], {}, {}
    releases, modes = {}, {}
    passes = {"infrastructure": {"pass": 0, "fail": 0}, "canary": {"pass": 0, "fail": 0}}
    for host in hosts:
        host = str(host)
        kind, value = _outcome(host, outcomes.get(host), round_number)
        if kind == "measured":
            rows.append(host_row(host, value))
            windows[host] = value["window"]
            releases.setdefault(_release(value), []).append(host)
            modes.setdefault(_mode(value), []).append(host)
            for name in passes:
                passes[name]["pass" if value["policy"][name].get("allow") else "fail"] += 1
            per_host[host] = {"measured": True, "report": value}
        else:
            label = "NOT REACHED" if kind == "missing" else "NOT MEASURED"
            rows.append([host, "-", label, "-", "-", "-", "-", "-", "-"])
            notes.append("%s: %s" % (host, value))
            per_host[host] = {"measured": False, "reason": value}
    merged = merge(windows)
    fleet = {
        "hosts": len(rows),
        "measured": len(windows),
        "not_measured": [host for host, entry in per_host.items() if not entry["measured"]],
        "releases": releases,
        "modes": modes,
        "figures": merged["fleet"],
        "outliers": merged["outliers"],
        "policy": passes,
    }
    fleet_row = (["fleet (%d of %d measured)" % (len(windows), len(rows)),
                  "%d release%s" % (len(releases), "" if len(releases) == 1 else "s"), "-", "-"]
                 + _figure_cells(merged["fleet"])
                 + ["%d/%d PASS" % (passes[name]["pass"], len(windows)) for name in ("infrastructure", "canary")])
    for outlier in merged["outliers"]:
        notes.append("%s is much worse than the other hosts: %s" % (outlier["host"], "; ".join(outlier["reasons"])))
    return {"columns": list(COLUMNS), "rows": rows, "fleet_row": fleet_row, "notes": notes,
            "hosts": per_host, "fleet": fleet}


def table_lines(columns, rows, footer=None):
    """Text lines of a table: the columns left-aligned to their widest cell, a rule under the
    heading, and the footer row (if any) under a second rule."""
    body = [list(map(str, row)) for row in rows]
    every = [list(map(str, columns))] + body + ([list(map(str, footer))] if footer else [])
    widths = [max(len(row[index]) for row in every if index < len(row)) for index in range(len(columns))]

    def line(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [line(every[0]), rule] + [line(row) for row in body]
    if footer:
        lines += [rule, line(list(map(str, footer)))]
    return lines
