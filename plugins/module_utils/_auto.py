# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""An automated canary rollout's rules (promote.yml -e mode=auto), pure.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports; the role calls it through the auto_* filters and the unit tests call it directly.
docs/auto-rollout.md describes the rollout; docs/analysis.md the statistics.

A rollout is a state (a JSON-serialisable dict: the step, its weight, the analysis tests, the
last counter readings of each host) taken through one look per interval:

- look(state, readings, settings, now): the interval's window of the canary and of its baseline
  (the live stable slot, or with analysis.baseline: fresh the slot `baseline` that runs the stable
  release beside the canary, at its weight), per host from the counter readings (a restarted slot's counters count
  from zero: _analysis.slot_window_delta), merged for a fleet as _fleet merges (counts and
  buckets summed, never rates averaged), fed to the sequential test (_analysis), and the canary
  policy's input with the test's results in it.
- decide(looked, decision, settings, now): both judgements together (the policy's absolute
  thresholds on the step's figures, and the comparison with the baseline), the verdict
  (hold / advance / promote / rollback), its reasons, the new state, the progress line and the
  history event's details.

"Not enough data" (too few requests for the policy, or for the analysis) holds the step; it never
promotes, and it only rolls back once the maximum duration has passed.
"""

from __future__ import annotations

import math

from ansible_collections.swiftdeploy.stack.plugins.module_utils._analysis import (
    AnalysisError,
    bad_above,
    judge,
    new_analysis,
    slot_window_delta,
    summary,
    update_analysis,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import EXCLUDED_PATHS, combine, format_bound
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import BASELINE_SLOT

STATE_VERSION = 1
VERDICTS = ("hold", "advance", "promote", "rollback")
# A latency bound chosen from the baseline: the smallest bucket bound that at most this share of
# its requests exceeded, read before the canary's first window; with fewer requests than
# BOUND_MIN_REQUESTS to read it from, DEFAULT_BOUND.
BOUND_SLOW_SHARE = 0.05
BOUND_MIN_REQUESTS = 20
DEFAULT_BOUND = 0.5
BUCKET_PREFIX = "le:"
_STATE_KEYS = ("version", "canary_version", "canary_slot", "started_at", "step", "weight", "step_started_at",
               "looks", "step_looks", "analysis", "latency_bound", "readings", "step_totals")


class AutoError(ValueError):
    """Input the rollout cannot use; the message names the value and what to do."""


def settings_of(stack):
    """The rollout's settings from the validated manifest (swiftdeploy_stack)."""
    canary, analysis = stack["canary"], stack["analysis"]
    steps = list(canary["steps"] or [min(int(canary["weight"]), 99)])
    return {
        "steps": steps,
        "interval_seconds": canary["interval_seconds"],
        "max_duration_seconds": canary["max_duration_seconds"],
        "alpha": analysis["alpha"],
        "min_canary_requests": analysis["min_canary_requests"],
        "latency_bound": analysis["latency_bound_seconds"],
        "metrics": canary["metrics"],
        "baseline": analysis.get("baseline", "stable"),
        "thresholds": dict(stack["policy"]["thresholds"]),
        "max_looks": int(math.ceil(canary["max_duration_seconds"] / float(canary["interval_seconds"]))) + 2,
    }


def start(settings, live, now, step=0, warm_up=False):
    """A fresh rollout of the live state's canary at `step`; `warm_up`: the canary (or its fresh
    baseline) has just started, so the next measured window is not counted on latency (look())."""
    if not live.get("canary"):
        raise AutoError("the live state has no canary: start one before its rollout")
    return {
        "version": STATE_VERSION,
        "canary_version": live["slots"][live["canary"]]["version"],
        "canary_slot": live["canary"],
        "started_at": float(now),
        "step": step,
        "weight": settings["steps"][step],
        "step_started_at": float(now),
        "looks": 0,
        "step_looks": 0,
        "analysis": new_analysis(settings["alpha"]),
        "latency_bound": settings["latency_bound"],
        "readings": {},
        "step_totals": _no_totals(),
        "warm_up": bool(warm_up),
        # Optional (a rollout saved before fresh baselines is a "stable" one): what it compares with.
        "baseline": settings.get("baseline", "stable"),
    }


def baseline_of(state):
    """The rollout's baseline: "fresh" (the slot BASELINE_SLOT) or "stable" (the live stable slot)."""
    return state.get("baseline") or "stable"


def resume(saved, settings, live, now, warm_up=False):
    """The rollout to continue for the live canary: (state, note).

    `saved` is the state the last run wrote (None when there is none). It is resumed when it is
    the rollout of this very canary (same slot and version), at the step of the canary's live
    weight (a run killed after raising the weight but before saving resumes at the new step);
    its readings are dropped, so the next look takes fresh ones and the window never spans the
    interruption. Otherwise (a canary started by hand, a stale file) a new rollout starts at the
    first step at or above the live weight. `warm_up`: this run has just started a slot the
    rollout reads (a fresh baseline the manifest now asks for), as start()'s.
    """
    canary = live.get("canary")
    if not canary:
        raise AutoError("the live state has no canary to resume a rollout of")
    version = live["slots"][canary]["version"]
    weight = live["weight"]
    step = next((index for index, value in enumerate(settings["steps"]) if value >= weight),
                len(settings["steps"]) - 1)
    if _matches(saved, canary, version, settings):
        state = dict(saved, readings={}, step_totals=_no_totals(), step_looks=0, warm_up=bool(warm_up))
        if state["weight"] != weight or state["step"] != step:
            state.update(step=step, weight=settings["steps"][step], step_started_at=float(now))
        elapsed = now - state["started_at"]
        return state, ("Resuming the automated rollout of canary %s (slot %s) at step %d of %d (weight %d%%), "
                       "started %.0f s ago, after %d looks."
                       % (version, canary, step + 1, len(settings["steps"]), settings["steps"][step], elapsed,
                          state["looks"]))
    state = start(settings, live, now, step, warm_up=warm_up)
    return state, ("Taking over canary %s (slot %s, weight %d%%) for an automated rollout at step %d of %d "
                   "(weight %d%%): no rollout of it was recorded."
                   % (version, canary, weight, step + 1, len(settings["steps"]), settings["steps"][step]))


def rollout_status(saved, live, settings, now):
    """What status.yml shows of the automated rollout of the live canary: None without a canary
    or without a saved rollout of this very canary (a canary started by hand, a stale file).
    `saved` is <project>/auto.json as the last look wrote it (its evidence up to that look)."""
    canary = live.get("canary")
    if not canary or not _matches(saved, canary, live["slots"][canary]["version"], settings):
        return None
    questions = {}
    for name in ("errors", "latency"):
        figures = summary(saved["analysis"][name])
        questions[name] = dict((key, figures[key]) for key in (
            "e_value", "threshold", "rejected", "canary_requests", "canary_bad", "baseline_requests", "baseline_bad"))
    steps = settings["steps"]
    step = min(int(saved["step"]), len(steps) - 1)
    elapsed = max(0.0, float(now) - saved["started_at"])
    line = ("Automated rollout of %s: step %d/%d at %d%%, %d look%s over %.0f s (at most %d s); evidence e-value "
            "errors %s, latency %s (>%s s), rollback at %s" % (
                saved["canary_version"], step + 1, len(steps), live["weight"], saved["looks"],
                "" if saved["looks"] == 1 else "s", elapsed,
                settings["max_duration_seconds"], _number(questions["errors"]["e_value"]),
                _number(questions["latency"]["e_value"]),
                "n/a" if saved["latency_bound"] is None else "%g" % saved["latency_bound"],
                _number(questions["errors"]["threshold"])))
    if baseline_of(saved) == "fresh":
        line += "; baseline: fresh (slot %s, the stable release at the canary's weight)" % BASELINE_SLOT
    return {"version": saved["canary_version"], "step": step + 1, "baseline": baseline_of(saved), "steps": len(steps), "weight": live["weight"],
            "looks": saved["looks"], "elapsed_seconds": round(elapsed, 1),
            "max_duration_seconds": settings["max_duration_seconds"], "latency_bound_seconds": saved["latency_bound"],
            "errors": questions["errors"], "latency": questions["latency"], "line": line}


def _matches(saved, canary, version, settings):
    if not isinstance(saved, dict) or any(key not in saved for key in _STATE_KEYS):
        return False
    if saved["version"] != STATE_VERSION or saved["canary_slot"] != canary or saved["canary_version"] != version:
        return False
    if baseline_of(saved) != settings.get("baseline", "stable"):
        return False
    return abs(sum(test["alpha"] for test in saved["analysis"].values()) - settings["alpha"]) < 1e-12


# ---------------------------------------------------------------------------------------------
# One look
# ---------------------------------------------------------------------------------------------


def look(state, readings, settings, now):
    """One interval: its windows from the hosts' readings, the analysis updated, the policy input.

    readings  {host: {taken_at, slots: {slot: reading}}}, a reading being either cumulative
              counters {counters: {requests, errors, "le:<bound>"...}, uptime} (the app's
              /metrics) or the interval's figures {window: {...}} (nginx's edge log).
    Returns {state, measured, windows: {canary, baseline, hosts}, analysis (judge()'s result or
    None), policy_input, restarted}. The first look of a run only takes readings (measured False):
    a window needs two.
    """
    _check_state(state)
    if not isinstance(readings, dict) or not readings:
        raise AutoError("no host's readings to judge the canary on: every canary host must be read")
    canary = state["canary_slot"]
    fresh = baseline_of(state) == "fresh"
    baseline = BASELINE_SLOT if fresh else "blue" if canary == "green" else "green"
    new = dict(state, readings={})
    per_host, restarted, first = {}, [], False
    for host in sorted(readings):
        slots = (readings[host] or {}).get("slots") or {}
        if canary not in slots or baseline not in slots:
            raise AutoError("host %s: no reading of slot %s or %s; both the canary and the %s must answer"
                            % (host, canary, baseline, "fresh baseline" if fresh else "stable slot"))
        previous = state["readings"].get(host)
        taken_at = float(readings[host]["taken_at"])
        new["readings"][host] = {"taken_at": taken_at, "canary": _kept(slots[canary]),
                                 "baseline": _kept(slots[baseline])}
        seconds = taken_at - previous["taken_at"] if previous else 0.0
        windows = {}
        for side, slot in (("canary", canary), ("baseline", baseline)):
            windows[side], reset = _slot_window(previous and previous[side], slots[slot], seconds)
            if reset:
                restarted.append("%s on %s" % (side, host))
        if windows["canary"] is None or windows["baseline"] is None:
            first = True
        per_host[host] = windows
    if new["latency_bound"] is None:
        new["latency_bound"] = choose_bound([_bound_source(readings[host]["slots"][baseline]) for host in readings])
    result = {"state": new, "measured": not first, "windows": None, "analysis": None, "policy_input": None,
              "restarted": restarted, "latency_warm_up": False}
    if first:
        return result
    merged = {side: _merge([per_host[host][side] for host in per_host]) for side in ("canary", "baseline")}
    counts = {side: _question_counts(merged[side], new["latency_bound"]) for side in merged}
    # A canary (or fresh baseline) this run has just started is read as soon as it takes traffic,
    # so that its first window is judged: on errors (its users get them), not on latency (a
    # process that has just started is slower, which is not what the comparison is about).
    # Skipping a window decided before its data is seen leaves the e-process a test
    # supermartingale (docs/analysis.md). The step's latency figures for the policy leave that
    # window out too; the policy sees its P99 only flagged as a warm-up (policy_input()).
    warm_up = bool(state.get("warm_up"))
    new["warm_up"] = False
    try:
        new["analysis"] = update_analysis(
            state["analysis"],
            errors=(counts["canary"][0], counts["canary"][1], counts["baseline"][0], counts["baseline"][1]),
            latency=(0, 0, 0, 0) if warm_up else
            (counts["canary"][2], counts["canary"][3], counts["baseline"][2], counts["baseline"][3]))
        verdict = judge(new["analysis"], {"alpha": settings["alpha"],
                                          "min_canary_requests": settings["min_canary_requests"]})
    except AnalysisError as exc:
        raise AutoError("the canary's analysis cannot use this window: %s" % exc)
    new["looks"] = state["looks"] + 1
    new["step_looks"] = state["step_looks"] + 1
    new["step_totals"] = {side: _add(state["step_totals"][side],
                                     dict(merged[side], latency_buckets=[]) if warm_up else merged[side])
                          for side in merged}
    result["windows"] = {"canary": _figures(merged["canary"]), "baseline": _figures(merged["baseline"]),
                         "hosts": {host: {side: _figures(per_host[host][side]) for side in ("canary", "baseline")}
                                   for host in per_host}}
    result["analysis"] = verdict
    result["latency_warm_up"] = warm_up
    result["policy_input"] = policy_input(new, verdict, settings, warm_up=merged["canary"] if warm_up else None)
    return result


def policy_input(state, verdict, settings, warm_up=None):
    """The canary policy's input: the canary's figures at this step so far (the absolute
    thresholds), and the comparison with the baseline (input.analysis, docs/policies.md).

    warm_up  the window of a canary that has just started (look()): the step's figures hold no
             latency yet, so the P99 is this window's, and input.analysis.latency_warm_up tells
             the policy that a P99 over its maximum holds the step rather than failing it."""
    totals = state["step_totals"]
    metrics = _policy_figures(totals["canary"])
    if warm_up is not None:
        metrics["p99_latency_ms"] = _figures(warm_up)["p99_latency_ms"]
    return {
        "metrics": metrics,
        "source": settings["metrics"],
        "thresholds": settings["thresholds"],
        "analysis": {
            "verdict": verdict["verdict"],
            "reasons": verdict["reasons"],
            "rejected": verdict["rejected"],
            "alpha": settings["alpha"],
            "latency_bound_seconds": state["latency_bound"],
            "errors": verdict["questions"]["errors"],
            "latency": verdict["questions"]["latency"],
            "baseline": _policy_figures(totals["baseline"]),
            "latency_warm_up": warm_up is not None,
        },
        "rollout": {"step": state["step"] + 1, "steps": len(settings["steps"]), "weight": state["weight"]},
    }


# ---------------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------------


def decide(looked, decision, settings, now):
    """The verdict of one look, both judgements together.

    decision  the canary policy's decision for looked["policy_input"] ({allow, reasons, hold}),
              None when the look measured nothing (the first reading of a run).
    Returns {verdict, reasons, reason, state, done, line, event}; `state` is the rollout after
    the verdict (the next step for advance).
    """
    state = dict(looked["state"])
    steps = settings["steps"]
    elapsed = float(now) - state["started_at"]
    expired = elapsed >= settings["max_duration_seconds"]
    analysis = looked["analysis"]
    if not looked["measured"]:
        verdict, reasons = ("rollback", ["the maximum duration (%d s) passed before the canary could be judged "
                                         "(%.0f s since the rollout started)" % (settings["max_duration_seconds"],
                                                                                 elapsed)]) \
            if expired else ("hold", ["first reading of this run: the next look judges the window since it"])
    elif analysis["verdict"] == "rollback":
        verdict, reasons = "rollback", ["comparison with the baseline: " + text for text in analysis["reasons"]]
    elif decision is None:
        raise AutoError("a measured look needs the canary policy's decision")
    elif not decision.get("allow") and not _holds(decision, state, settings):
        verdict, reasons = "rollback", ["canary policy: " + text for text in decision.get("reasons") or []]
    elif decision.get("allow") and analysis["verdict"] == "pass":
        verdict = "promote" if state["step"] == len(steps) - 1 else "advance"
        reasons = ["canary policy: allowed on %d canary requests at %d%%" % (
            state["step_totals"]["canary"]["requests"], state["weight"])] + \
            ["comparison with the baseline: " + text for text in analysis["reasons"]]
    else:
        waiting = ([] if decision.get("allow") else ["canary policy: " + text for text in decision.get("reasons") or []])
        waiting += ["comparison with the baseline: " + text for text in analysis["reasons"]
                    if analysis["verdict"] != "pass"]
        if expired:
            verdict = "rollback"
            reasons = ["not enough data by the maximum duration (%d s): " % settings["max_duration_seconds"]
                       + text for text in waiting]
        else:
            verdict, reasons = "hold", waiting
    line = progress_line(looked, settings, verdict, reasons)
    event = {
        "verdict": verdict,
        "reasons": reasons,
        "canary_version": state["canary_version"],
        "step": state["step"] + 1,
        "steps": len(steps),
        "weight": state["weight"],
        "baseline": baseline_of(state),
        "elapsed_seconds": round(elapsed, 3),
        "looks": state["looks"],
        "windows": looked["windows"],
        "analysis": None if analysis is None else {
            "verdict": analysis["verdict"], "rejected": analysis["rejected"],
            "latency_bound_seconds": state["latency_bound"], "alpha": settings["alpha"],
            "errors": analysis["questions"]["errors"], "latency": analysis["questions"]["latency"]},
        "policy": None if decision is None else {"allow": bool(decision.get("allow")),
                                                 "hold": bool(decision.get("hold")),
                                                 "reasons": list(decision.get("reasons") or [])},
        "restarted": looked["restarted"],
        "latency_warm_up": looked.get("latency_warm_up", False),
    }
    if verdict == "advance":
        step = state["step"] + 1
        state.update(step=step, weight=steps[step], step_started_at=float(now), step_looks=0,
                     step_totals=_no_totals())
    return {"verdict": verdict, "reasons": reasons, "reason": "; ".join(reasons), "state": state,
            "done": verdict in ("promote", "rollback"), "line": line, "event": event}


def _holds(decision, state, settings):
    """Whether a deny is "not enough data yet": the policy's own hold, or, from a policy that does
    not say (one of your own), fewer canary requests at this step than thresholds.min_requests."""
    if isinstance(decision.get("hold"), bool):
        return decision["hold"]
    minimum = settings["thresholds"].get("min_requests")
    return minimum is not None and state["step_totals"]["canary"]["requests"] < minimum


def progress_line(looked, settings, verdict, reasons):
    """One line per look: step, weight, each side's requests, error rate and P99 over the
    interval, the evidence (e-values against their threshold) and the verdict."""
    state = looked["state"]
    head = "step %d/%d at %d%%" % (state["step"] + 1, len(settings["steps"]), state["weight"])
    if not looked["measured"]:
        return "%s: %s (%s)" % (head, verdict.upper(), "; ".join(reasons))
    windows, questions = looked["windows"], looked["analysis"]["questions"]
    return "%s over %.1f s: canary %s | %s %s | e-value errors %s, latency %s (>%s s), rollback at %s | %s: %s" % (
        head, windows["canary"]["window_seconds"], _side(windows["canary"]),
        "fresh baseline" if baseline_of(state) == "fresh" else "baseline", _side(windows["baseline"]),
        _number(questions["errors"]["e_value"]), _number(questions["latency"]["e_value"]),
        "%g" % state["latency_bound"], _number(questions["errors"]["threshold"]), verdict.upper(),
        "; ".join(reasons))


# ---------------------------------------------------------------------------------------------
# Windows from readings
# ---------------------------------------------------------------------------------------------


def counters_of(requests, errors, buckets, uptime=None):
    """A reading of the app's cumulative counters: {counters: {requests, errors, "le:<bound>"},
    uptime}; buckets [[bound, cumulative count]] with +Inf. The module builds it from /metrics."""
    counters = {"requests": requests, "errors": errors}
    for bound, count in buckets:
        counters[BUCKET_PREFIX + format_bound(float(bound))] = count
    return {"counters": counters, "uptime": uptime}


def app_reading(sample):
    """counters_of() for a _metrics.Sample of the app's /metrics: application requests only
    (probes and control paths excluded, as _metrics.window() excludes them), summed over paths."""
    requests = errors = 0
    buckets = {}
    for (path, status), value in sample.requests.items():
        if path in EXCLUDED_PATHS:
            continue
        requests += value
        errors += value if len(status) == 3 and status.startswith("5") and status.isdigit() else 0
    for path, bounds in sample.buckets.items():
        if path in EXCLUDED_PATHS:
            continue
        for bound, count in bounds.items():
            buckets[bound] = buckets.get(bound, 0) + count
    return counters_of(int(requests), int(errors), [[bound, int(count)] for bound, count in sorted(buckets.items())],
                       sample.uptime)


def choose_bound(baseline_buckets, share=BOUND_SLOW_SHARE, minimum=BOUND_MIN_REQUESTS, default=DEFAULT_BOUND):
    """The smallest bucket bound that at most `share` of the baseline's requests exceeded, from
    its latency buckets (one list per host, summed); `default` with fewer than `minimum`."""
    totals = {}
    for buckets in baseline_buckets:
        for bound, count in buckets or []:
            totals[float(bound)] = totals.get(float(bound), 0) + count
    total = totals.get(math.inf, 0)
    if total < minimum:
        return default
    for bound in sorted(value for value in totals if value != math.inf):
        if total - totals[bound] <= share * total:
            return bound
    return default


def _bound_source(reading):
    if "window" in reading:
        return reading["window"].get("latency_buckets") or []
    return [[key[len(BUCKET_PREFIX):], value] for key, value in (reading.get("counters") or {}).items()
            if key.startswith(BUCKET_PREFIX)]


def _kept(reading):
    """What the next look needs of a reading: counters (app), or nothing but the time (edge)."""
    if "window" in reading:
        return {"window": True}
    return {"counters": dict(reading["counters"]), "uptime": reading.get("uptime")}


def _slot_window(previous, current, seconds):
    """(window counts, restarted) of one slot; (None, False) without a previous reading."""
    if "window" in current:
        if previous is None:
            return None, False
        figures = current["window"]
        return {"requests": int(figures["requests"]), "errors": int(figures["errors"]),
                "latency_buckets": figures.get("latency_buckets") or [], "window_seconds": seconds}, False
    if not isinstance(current.get("counters"), dict):
        raise AutoError("a slot's reading has neither counters nor a window: %r" % (sorted(current),))
    if previous is None or "counters" not in previous:
        return None, False
    deltas, restarted = slot_window_delta(previous["counters"], current["counters"])
    before, after = previous.get("uptime"), current.get("uptime")
    if not restarted and before is not None and after is not None and after < before:
        restarted, deltas = True, dict(current["counters"])
    buckets = [[key[len(BUCKET_PREFIX):], int(value)] for key, value in deltas.items() if key.startswith(BUCKET_PREFIX)]
    return {"requests": int(deltas.get("requests", 0)), "errors": int(deltas.get("errors", 0)),
            "latency_buckets": buckets, "window_seconds": seconds}, restarted


def _merge(windows):
    """One window from several hosts': counts and buckets summed, the longest duration."""
    merged = combine([dict(window, req_per_s=None, counter_reset=False) for window in windows])
    return {"requests": merged["requests"], "errors": merged["errors"],
            "latency_buckets": merged["latency_buckets"],
            "window_seconds": max([window["window_seconds"] for window in windows] or [0.0])}


def _add(totals, window):
    merged = _merge([totals, window])
    merged["window_seconds"] = totals["window_seconds"] + window["window_seconds"]
    return merged


def _question_counts(window, bound):
    """(requests, 5xx, requests in the histogram, slower than bound) of a window."""
    if window["requests"] == 0 or not window["latency_buckets"]:
        timed, slow = 0, 0
    else:
        timed, slow = bad_above(window["latency_buckets"], bound)
    return int(window["requests"]), int(window["errors"]), int(timed), int(slow)


def _figures(window):
    """requests, errors, error rate, P99 and seconds of a window (no histogram)."""
    full = combine([dict(window, req_per_s=None, counter_reset=False)])
    return {"requests": full["requests"], "errors": full["errors"],
            "error_rate_percent": full["error_rate_percent"], "p99_latency_ms": full["p99_latency_ms"],
            "window_seconds": round(window["window_seconds"], 3)}


def _policy_figures(window):
    figures = _figures(window)
    del figures["errors"]
    return figures


def _no_totals():
    empty = {"requests": 0, "errors": 0, "latency_buckets": [], "window_seconds": 0.0}
    return {"canary": dict(empty), "baseline": dict(empty)}


def _side(figures):
    rate, p99 = figures["error_rate_percent"], figures["p99_latency_ms"]
    return "%d req, %s errors, P99 %s" % (figures["requests"], "n/a" if rate is None else "%.2f%%" % rate,
                                          "n/a" if p99 is None else "%.1f ms" % p99)


def _number(value):
    return "%.3g" % value


def _check_state(state):
    if not isinstance(state, dict) or any(key not in state for key in _STATE_KEYS):
        raise AutoError("the rollout state is missing or damaged: start the rollout with start() or resume()")
