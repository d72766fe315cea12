# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""One refresh of the status dashboard, assembled from what status.yml measured.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import combine


def _track(scrape, live):
    window = scrape["window"]
    sample = scrape.get("sample") or {}
    slot = scrape["item"]["slot"]
    return {
        "slot": slot,
        "version": live["slots"][slot]["version"],
        "req_s": window["req_per_s"], "requests": window["requests"], "errors": window["errors"],
        "error_rate_percent": window["error_rate_percent"], "p99_latency_ms": window["p99_latency_ms"],
        "window_seconds": window["window_seconds"], "previous_found": scrape.get("previous_found"),
        "mode": sample.get("mode"), "chaos": sample.get("chaos"), "uptime_seconds": sample.get("uptime"),
    }


def _verdict(decision):
    return {"allow": decision["allow"], "reasons": list(decision["reasons"]),
            "error": (decision.get("decision") or {}).get("error")}


def status_report(stack, live, scrapes, infrastructure, canary, host):
    """The status report: per track figures (scrapes: the metrics_scrape results of the stable
    and canary tracks, each with its loop item {track, slot}), the live state, both policies'
    verdicts (the opa_decision results), the host's figures, and under `event` the compact
    status_scrape event the history keeps (with the seed CLI's field names), and under `window`
    the host's tracks merged into one window (_metrics.combine), which a fleet's status merges."""
    tracks = dict((scrape["item"]["track"], _track(scrape, live)) for scrape in scrapes)
    judged_name = "canary" if "canary" in tracks else "stable"
    judged = tracks[judged_name]
    canary_verdict = dict(_verdict(canary), track=judged_name)
    report = {
        "stack": stack,
        "mode": live["mode"],
        "weight": live["weight"],
        "generation": live["generation"],
        "tracks": tracks,
        "policy": {"infrastructure": _verdict(infrastructure), "canary": canary_verdict},
        "host": host,
        "window": combine([scrape["window"] for scrape in scrapes]),
    }
    report["event"] = {
        "req_s": float(round(sum(track["req_s"] for track in tracks.values() if track["req_s"] is not None), 2)),
        "error_rate_percent": judged["error_rate_percent"],
        "p99_latency_ms": judged["p99_latency_ms"],
        "requests": sum(track["requests"] for track in tracks.values()),
        "errors": sum(track["errors"] for track in tracks.values()),
        "mode": live["mode"], "weight": live["weight"],
        "chaos": judged["chaos"],
        "policy_infra_pass": infrastructure["allow"],
        "policy_canary_pass": canary["allow"],
        "policy_reasons": list(infrastructure["reasons"]) + list(canary["reasons"]),
    }
    return report


# DryRunStackHost's mark on an action check mode did not run (_stack_host.py).
NOT_RUN = " (check mode: not run)"


def planned_lines(actions):
    """Check mode's plan as numbered lines: each action of a converge (stack_converge's
    `actions`) that check mode did not run, what it is and what it would touch; [] when there
    is none (the stack already is as wanted)."""
    planned = [action for action in actions or [] if str(action.get("detail", "")).endswith(NOT_RUN)]
    if not planned:
        return []
    lines = ["Check mode: nothing was changed; a real run would:"]
    for number, action in enumerate(planned, 1):
        step = " (state %s)" % action["step"] if action.get("step") is not None else ""
        lines.append("  %d. %s%s: %s" % (number, action.get("action", "?"), step,
                                         str(action["detail"])[:-len(NOT_RUN)]))
    return lines
