# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""One refresh of the status dashboard, assembled from what status.yml measured.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import combine


def track_window(scrape, edge=None):
    """A track's window: the app's own since the previous refresh, or, for an app without
    /metrics (its scrape failed), nginx's figures of its slot over the last canary window
    (edge: host_resources_info's `edge` result); None when neither measured it."""
    if scrape.get("window") is not None:
        return scrape["window"]
    slots = (edge or {}).get("slots") or {}
    return slots.get(scrape["item"]["slot"])


def judged_window(scrapes, metrics, edge=None):
    """The figures a status refresh's canary policy judges: the canary track's (the stable
    track's without a canary), taken where promote.yml -e mode=stable would take them: nginx's
    edge log over the last canary window with canary.metrics "edge" (the app's own window when
    the edge could not be read), the app's /metrics since the previous refresh with "app".

    Returns {track, slot, window}, or {track, slot, error} naming what could not be read and
    where to look: the caller fails the host's refresh with it (the other hosts' rows are shown).
    """
    scrapes = dict((scrape["item"]["track"], scrape) for scrape in scrapes)
    track = "canary" if "canary" in scrapes else "stable"
    scrape = scrapes[track]
    slot = scrape["item"]["slot"]
    edge = edge or {}
    window = None
    if metrics == "edge":
        window = (edge.get("slots") or {}).get(slot)
    if window is None:
        window = scrape.get("window")
    if window is not None:
        return {"track": track, "slot": slot, "window": window}
    reasons = []
    if metrics == "edge":
        reasons.append("nginx's edge log: %s" % (edge.get("error") or "no figures of slot %s in it" % slot))
    reasons.append("the app's /metrics: %s" % (scrape.get("msg") or "no window"))
    return {"track": track, "slot": slot,
            "error": "The %s track (slot %s) could not be measured: %s. Check that the slot runs and nginx "
                     "serves it (status of the containers: logs.yml); nothing was changed."
                     % (track, slot, "; ".join(reasons))}


def _track(scrape, live, edge=None):
    window = track_window(scrape, edge)
    if window is None:
        raise ValueError("the %s slot %s could not be measured: %s" % (
            scrape["item"]["track"], scrape["item"]["slot"],
            scrape.get("msg") or (edge or {}).get("error") or "no metrics and no edge figures"))
    sample = scrape.get("sample") or {}
    slot = scrape["item"]["slot"]
    return {
        "source": "app" if scrape.get("window") is not None else "edge",
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


def status_report(stack, live, scrapes, infrastructure, canary, host, edge=None):
    """The status report: per track figures (scrapes: the metrics_scrape results of the stable
    and canary tracks, each with its loop item {track, slot}), the live state, both policies'
    verdicts (the opa_decision results), the host's figures, and under `event` the compact
    status_scrape event the history keeps (with the seed CLI's field names), and under `window`
    the host's tracks merged into one window (_metrics.combine), which a fleet's status merges.
    A track whose app has no /metrics (its scrape failed) is measured at the edge (`edge`)."""
    tracks = dict((scrape["item"]["track"], _track(scrape, live, edge)) for scrape in scrapes)
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
        "window": combine([track_window(scrape, edge) for scrape in scrapes]),
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
