# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit report's data: a digest of the history turned into what each section of the
report shows, for the role's template (templates/audit_report.md.j2) to render.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports so that the unit tests and the benchmark drive it directly.

Values are raw (strings as the history holds them, numbers as numbers): the template escapes
every one with the swiftdeploy.stack.md_cell, md_text and md_mermaid filters. Only what a
template cannot easily work out is given as text: durations ("4 min 10 s"), the notes and
details of a row, the actor ("alice (AWX job 42, template promote)"), the chart's labels and
numbers. The report depends on the history only, so an unchanged history gives unchanged data.
"""

from __future__ import annotations

import datetime

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_digest import (
    POLICY_REASONS_KEPT,
    _reasons,
    _who,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import GENESIS
from ansible_collections.swiftdeploy.stack.plugins.module_utils._markdown import (
    compact as _compact,
)

POLICY_REASONS_SHOWN = 50


def duration(seconds):
    """The two largest units: 3 d 4 h, 2 h, 2 h 5 min, 4 min 10 s, 12 s."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    while len(parts) > 1 and not parts[0][0]:
        parts.pop(0)
    shown = [part for part in parts[:2] if part[0]] or parts[-1:]
    return " ".join("%d %s" % part for part in shown)


def _count(number):
    return "{:,}".format(number)


def report_data(path, verdict, digest, stack=None, host=None, anchor=None):
    """Everything the report shows but the verdict (chain_verdict), from a finished digest.

    Returns {"summary", "chart_points", "title", "chain", "figures", "events_by_type",
    "timeline", "mode_changes", "blocked", "policy_failures", "chaos", "lock_waits", "chart",
    "images"}.
    """
    stack = stack if stack else digest.last_names[0]
    host = host if host else digest.last_names[1]
    points = digest.chart.points()
    summary = digest.summary()
    return {
        "summary": summary,
        "chart_points": len(points),
        "title": {
            "stack": _compact(stack) if stack else "(unnamed)",
            "host": _compact(host) if host else "(unknown host)",
            "last_event": None if digest.last_stamp is None else _compact(digest.last_stamp),
            "history": path,
        },
        "chain": {
            "anchor_seq": None if anchor is None else anchor["seq"],
            "sound_record_before": verdict["last_hash"] != GENESIS,
            "not_records": digest.not_records,
        },
        "figures": _figures(digest, summary),
        "events_by_type": [{"event": name, "count": number} for name, number in
                           sorted(digest.by_event.items(), key=lambda item: (-item[1], item[0]))],
        "timeline": {
            "total": digest.timeline_total,
            "rows": [{"timestamp": record["timestamp"], "seq": record["seq"],
                      "event": record["event"], "mode": record.get("mode") or "",
                      "version": record.get("version") or "", "who": _who(record.get("actor")),
                      "details": _details_summary(record)} for record in digest.timeline],
        },
        "mode_changes": {
            "total": digest.mode_changes_total,
            "rows": [{"timestamp": stamp, "event": event, "from_mode": was or "-",
                      "to_mode": now or "-", "version": version or "", "details": note,
                      "who": who}
                     for stamp, event, was, now, version, note, who in digest.mode_changes],
        },
        "blocked": {
            "total": digest.by_event["deploy_blocked"] + digest.by_event["promote_blocked"],
            "rows": [{"timestamp": stamp, "event": event,
                      "target": target if target is not None else "-",
                      "policy": policy if policy is not None else "-", "reasons": reasons or "-",
                      "who": who}
                     for stamp, event, target, policy, reasons, who in digest.blocked],
        },
        "policy_failures": _policy_failures(digest),
        "chaos": {
            "states": [{"state": state, "scrapes": count, "first_seen": first, "last_seen": last}
                       for state, (count, first, last) in
                       sorted(digest.chaos_seen.items(), key=lambda item: item[1][1])],
            "transitions_total": digest.chaos_transitions_total,
            "transitions": [{"timestamp": stamp, "from_state": was, "to_state": now}
                            for stamp, was, now in digest.chaos_transitions],
        },
        "lock_waits": {
            "total": digest.by_event["lock_wait"],
            "waited": duration(digest.lock_wait_seconds),
            "longest": duration(digest.lock_wait_longest),
            "rows": [{"timestamp": stamp, "waited": "-" if waited is None else "%g" % waited,
                      "who": who, "stale_lock_broken": "-" if stale is None else stale}
                     for stamp, waited, who, stale in digest.lock_waits],
        },
        "chart": _chart(points, digest),
        "images": _images(digest),
        "judgements": _judgements(digest),
    }


def _judgements(digest):
    """The automated rollouts' looks (canary_judged): the last JUDGEMENTS_SHOWN, and every
    verdict counted."""
    def figures(side):
        requests, rate, p99 = side
        return ("-" if requests is None else "%d" % requests, "-" if rate is None else "%.2f %%" % rate,
                "-" if p99 is None else "%.1f ms" % p99)

    def evidence(pair):
        value, threshold = pair
        return "-" if value is None else ("%.3g" % value) + ("" if threshold is None else " / %.3g" % threshold)

    rows = []
    for stamp, version, step, steps, weight, verdict, canary, baseline, errors, latency, reasons in digest.judgements:
        canary_req, canary_rate, canary_p99 = figures(canary)
        base_req, base_rate, base_p99 = figures(baseline)
        rows.append({"timestamp": stamp, "version": version or "",
                     "step": "-" if step is None else "%d/%s" % (step, "?" if steps is None else "%d" % steps),
                     "weight": "-" if weight is None else "%d %%" % weight,
                     "canary": "%s req, %s, P99 %s" % (canary_req, canary_rate, canary_p99),
                     "baseline": "%s req, %s, P99 %s" % (base_req, base_rate, base_p99),
                     "errors_evidence": evidence(errors), "latency_evidence": evidence(latency),
                     "verdict": verdict, "reasons": reasons or "-"})
    verdicts = sorted(digest.judgement_verdicts.items(), key=lambda item: (-item[1], item[0]))
    return {"total": digest.by_event["canary_judged"], "rows": rows,
            "verdicts": [{"verdict": name, "count": count} for name, count in verdicts],
            "verdicts_text": ", ".join("%s %d" % (_compact(name), count) for name, count in verdicts)}


def _images(digest):
    """{rows, kept}: a row per slot each time what runs changed (by the last IMAGES_KEPT events
    that say), oldest first: from `timestamp` on, `slot` ran `image` with `image_id`."""
    rows, previous = [], None
    for stamp, seq, event, running in digest.images:
        if running == previous:
            continue
        previous = running
        if not running:
            rows.append({"timestamp": stamp, "seq": seq, "event": event, "slot": "-", "mode": "-",
                         "image": "(nothing runs)", "image_id": "-", "version": "-"})
        for slot, mode, image, image_id, version in running:
            rows.append({"timestamp": stamp, "seq": seq, "event": event, "slot": slot, "mode": mode, "image": image,
                         "image_id": image_id or "(not recorded)", "version": version})
    return {"rows": rows, "kept": len(digest.images)}


def _figures(digest, summary):
    """The rows of the summary table: [{"figure", "value"}], values as text."""
    canary = duration(digest.canary_seconds)
    if digest.canary_periods:
        canary += " over %s period%s" % (
            _count(digest.canary_periods), "" if digest.canary_periods == 1 else "s")
    if digest.canary_since is not None:
        canary += "; still in canary at the last event"
    rows = [
        ("Events", _count(summary["events"])),
        ("Deploys", _count(summary["deploys"])),
        ("Promotions", _count(summary["promotions"])),
        ("Roll-backs", _count(summary["rollbacks"])),
        ("Blocked operations", "%s (deploys %s, promotions %s)"
         % (_count(summary["blocked"]), _count(summary["deploys_blocked"]),
            _count(summary["promotions_blocked"]))),
        ("Time in canary", canary),
        ("Policy bypasses", _count(summary["policy_bypasses"])),
        ("Lock waits", "%s (%s waited in all)" % (_count(summary["lock_waits"]),
                                                  duration(digest.lock_wait_seconds))),
        ("Teardowns", _count(summary["teardowns"])),
        ("Status scrapes", "%s (%s with a failing policy)"
         % (_count(summary["status_scrapes"]), _count(summary["scrape_policy_failures"]))),
        ("First event", summary["first_timestamp"] or "-"),
        ("Last event", summary["last_timestamp"] or "-"),
    ]
    return [{"figure": figure, "value": value} for figure, value in rows]


def _details_summary(record):
    details = record["details"]
    event = record["event"]
    get = details.get
    if event in ("deploy_blocked", "policy_bypass"):
        parts = [("policy %s" % _compact(get("policy"))) if get("policy") else ""]
        if get("operation"):
            parts.insert(0, "operation %s" % _compact(get("operation")))
        reasons = "; ".join(_reasons(get("reasons")))
        return ", ".join(part for part in parts if part) + (": " + reasons if reasons else "")
    if event == "promote_blocked":
        reasons = "; ".join(_reasons(get("reasons")))
        return "to %s, policy %s%s" % (_compact(get("target_mode")), _compact(get("policy")),
                                       ": " + reasons if reasons else "")
    if event == "lock_wait":
        return "waited %s s" % _compact(get("waited_seconds"))
    return _compact(details) if details else ""


def _policy_failures(digest):
    """The failing policies status scrapes saw, the most frequent sets of reasons first."""
    ranked = sorted(digest.policy_failures.items(),
                    key=lambda item: (-item[1][0], item[1][1], item[0]))
    rows = [{"policies": ", ".join(failed), "reasons": "\n".join(reasons) or "(no reason given)",
             "scrapes": count, "first_seen": first, "last_seen": last}
            for (failed, reasons), (count, first, last) in ranked[:POLICY_REASONS_SHOWN]]
    shown = len(rows)
    if digest.policy_pooled is not None:
        count, first, last = digest.policy_pooled
        rows.append({"policies": "-", "reasons": "(other reasons, beyond %d distinct sets)"
                     % POLICY_REASONS_KEPT, "scrapes": count, "first_seen": first,
                     "last_seen": last})
    return {"total": digest.policy_failures_total, "distinct": len(ranked), "shown": shown,
            "rows": rows}


def _utc(seconds, layout):
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(layout)
    except (OverflowError, OSError, ValueError):  # before year 1 or after 9999
        return "%d s" % seconds


def _mermaid_number(value):
    text = "%.3f" % value
    text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _chart(points, digest):
    """The chart's data: the bucket width, its labels (bucket starts in UTC) and its two lines
    (error rate and P99, numbers as text, 0 where a bucket has no figure)."""
    width = digest.chart.width
    layout = "%H:%M"
    if width >= 86400:
        layout = "%Y-%m-%d"
    elif points and points[-1][0] - points[0][0] >= 86400:
        layout = "%m-%d %H:%M"
    return {
        "bucket": duration(width),
        "bucket_seconds": width,
        "scrapes": digest.scrapes,
        "labels": [_utc(start, layout) for start, _error, _p99 in points],
        "error_rate": [_mermaid_number(error or 0.0) for _start, error, _p99 in points],
        "p99": [_mermaid_number(p99 or 0.0) for _start, _error, p99 in points],
    }
