# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Canary analysis: an anytime-valid sequential test of a canary against its live baseline.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports and needs only the standard library, so the unit tests and scripts/bench_analysis.py
call it directly; docs/analysis.md explains the statistics and shows the simulated figures.

One question ("is the canary's bad rate higher than the baseline's?") is asked twice: bad is a
5xx for the error question, and slower than a fixed latency bound for the latency question.
Each analysis interval gives, per side, the requests and the bad requests of that window.

The test conditions on the bad events (Lindon & Malek 2022, "Anytime-valid inference for
multinomial count data"; Lindon, Sanden & Shirikian 2022, "Rapid regression detection in software
deployments through sequential testing"). With rho = the canary's share of the window's
requests, a bad event comes from the canary with probability p(r) = rho*r / (rho*r + 1 - rho)
when the canary's bad rate is r times the baseline's. The likelihood ratio of the observed
split for a ratio r against r0 is a test supermartingale while the true ratio is at most r0;
an average of such ratios over a fixed grid of r > r0 (equal prior weights) is an e-process,
and by Ville's inequality it ever reaches 1/alpha with probability at most alpha, however
often it is looked at (Ramdas et al., "Game-theoretic statistics and safe anytime-valid
inference"). rho is recomputed every window, so changing weights between steps is allowed.

Why it also holds when each request is a coin toss rather than a Poisson count: with equal
rates and k bad events among the window's requests, the canary's share of them is
hypergeometric, and Hoeffding (1963) showed that a convex function (the likelihood ratio is
exp(a*x + b)) has a smaller mean under sampling without replacement than under the binomial
the test assumes. For a tolerated ratio r0 > 1 the binomial model is exact for Poisson counts
and a close approximation while bad rates are small (errors and tail latencies).

State is a plain JSON-serialisable dict (new_test(), update()), so a caller can persist it
between intervals and an interrupted rollout resumes where it stopped.
"""

from __future__ import annotations

import functools
import math

STATE_VERSION = 1
# Ratios r0 * 10**(k/10): about 26 % apart, from r0/10 (for upper bounds) to 100 * r0.
GRID_EXPONENTS = tuple(range(-10, 21))
QUESTIONS = ("errors", "latency")
DEFAULT_CONFIG = {
    "alpha": 0.01,
    "min_canary_requests": 1000,
    "tolerance": None,
}
_STATE_KEYS = (
    "version", "alpha", "r0", "grid", "log_lr", "canary_requests", "canary_bad", "baseline_requests",
    "baseline_bad", "windows", "looks", "rejected", "rejected_at_look", "max_log_e",
)


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message names the value and what to do."""


# ---------------------------------------------------------------------------------------------
# Turning metrics into window counts
# ---------------------------------------------------------------------------------------------


def window_delta(previous, current):
    """The increase of one counter between two readings, as Prometheus' increase() takes it.

    A decrease means the process restarted and counted from zero, so the current value is the
    increase (what happened before the restart within the window is lost, never negative).
    previous=None means the series did not exist yet: it started at zero in this window.
    """
    for name, value in (("previous", previous), ("current", current)):
        if value is not None and (not _is_number(value) or value < 0):
            raise AnalysisError("%s counter reading %r is not a non-negative number" % (name, value))
    if current is None:
        raise AnalysisError("current counter reading is missing: read the counter before computing its window")
    if previous is None or current < previous:
        return current
    return current - previous


def slot_window_delta(previous, current):
    """Window deltas of every counter of one slot, with one restart rule for all of them.

    `previous` and `current` map counter names to readings (a missing name is a series that
    did not exist yet). When any counter went down or vanished, or the optional "start_time"
    reading (process_start_time_seconds) changed, the slot restarted, and every counter's delta
    is its current value: taking the rule counter by counter could pair a requests delta from
    before the restart with a bad delta from after it and make the canary look worse than it
    is. Returns (deltas, restarted). _metrics.window() applies the same rule to a whole sample.
    """
    start_before, start_now = previous.get("start_time"), current.get("start_time")
    restarted = start_before is not None and start_now is not None and start_before != start_now
    names = [name for name in current if name != "start_time"]
    deltas = {name: window_delta(previous.get(name), current[name]) for name in names}
    restarted = restarted or any(previous.get(name) is not None and current[name] < previous[name] for name in names)
    restarted = restarted or any(name not in current for name in previous if name != "start_time")
    if restarted:
        deltas = {name: current[name] for name in names}
    return deltas, restarted


def bad_above(buckets, bound):
    """(requests, requests slower than bound) from cumulative Prometheus-style buckets.

    `buckets` is [[upper_bound, cumulative_count], ..., ["+Inf", total]] with bounds as numbers
    or strings (the window figures of _metrics write them as strings). The bound must be one
    of the bucket bounds: between two bounds the histogram cannot say how many were slower.

    Choose the bound without looking at the canary: either a fixed value from configuration
    (a latency objective), or read off the baseline before the canary starts (for example the
    smallest bound that at most 5 % of the baseline's recent requests exceed), and keep it for
    the whole rollout. A bound picked after seeing canary data would void the guarantee.
    """
    if not buckets:
        raise AnalysisError("no latency buckets: the window has no histogram to read bound %r from" % (bound,))
    parsed = []
    for pair in buckets:
        try:
            upper, count = float(pair[0]), pair[1]
        except (TypeError, ValueError, IndexError):
            raise AnalysisError("bucket %r is not [upper_bound, cumulative_count]" % (pair,)) from None
        if not _is_number(count) or count < 0:
            raise AnalysisError("bucket %r has a count that is not a non-negative number" % (pair,))
        parsed.append((upper, count))
    parsed.sort(key=lambda item: item[0])
    if parsed[-1][0] != math.inf:
        raise AnalysisError("the buckets have no +Inf bucket, so the number of requests is unknown")
    try:
        wanted = float(bound)
    except (TypeError, ValueError):
        raise AnalysisError("latency bound %r is not a number" % (bound,)) from None
    counts = dict(parsed)
    if wanted not in counts or wanted == math.inf:
        available = ", ".join(_format_bound(upper) for upper, _count in parsed if upper != math.inf)
        raise AnalysisError("latency bound %s is not one of the bucket bounds (%s): choose one of them"
                            % (_format_bound(wanted), available))
    total = counts[math.inf]
    within = counts[wanted]
    if within > total:
        raise AnalysisError("bucket %s counts %s but +Inf counts only %s: the buckets are not cumulative"
                            % (_format_bound(wanted), within, total))
    return total, total - within


# ---------------------------------------------------------------------------------------------
# One sequential test
# ---------------------------------------------------------------------------------------------


def new_test(alpha, r0=1.0):
    """A fresh test of "canary bad rate <= r0 * baseline bad rate" at level alpha.

    r0 = 1 rolls back when the canary is worse at all; r0 = 1.2 tolerates 20 % more bad events.
    """
    if not _is_number(alpha) or not 0 < alpha < 1:
        raise AnalysisError("alpha %r must be a number between 0 and 1 (exclusive), e.g. 0.01" % (alpha,))
    if not _is_number(r0) or r0 <= 0 or not math.isfinite(r0):
        raise AnalysisError("r0 %r must be a positive ratio, e.g. 1.0 (no tolerance)" % (r0,))
    grid = [float(r0) * 10 ** (k / 10.0) for k in GRID_EXPONENTS]
    return {
        "version": STATE_VERSION,
        "alpha": float(alpha),
        "r0": float(r0),
        "grid": grid,
        "log_lr": [0.0] * len(grid),
        "canary_requests": 0,
        "canary_bad": 0,
        "baseline_requests": 0,
        "baseline_bad": 0,
        "windows": 0,
        "looks": 0,
        "rejected": False,
        "rejected_at_look": None,
        "max_log_e": 0.0,
    }


def update(state, canary_requests, canary_bad, baseline_requests, baseline_bad):
    """The state after one more window; `state` is not changed.

    The counts are the window's deltas (see window_delta), not totals. A window in which
    either side had no requests, or without bad events, adds nothing to the evidence: the
    split of bad events says nothing about the ratio then. Once rejected, a test stays rejected.
    """
    _check_state(state)
    counts = (("canary_requests", canary_requests), ("canary_bad", canary_bad),
              ("baseline_requests", baseline_requests), ("baseline_bad", baseline_bad))
    for name, value in counts:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnalysisError("%s %r is not an integer count of this window" % (name, value))
        if value < 0:
            raise AnalysisError("%s is %d: window counts cannot be negative; turn cumulative counters into "
                                "window deltas with window_delta(), which handles counter resets" % (name, value))
    if canary_bad > canary_requests or baseline_bad > baseline_requests:
        raise AnalysisError("a side has more bad requests than requests (canary %d of %d, baseline %d of %d): "
                            "count bad and all requests over the same window"
                            % (canary_bad, canary_requests, baseline_bad, baseline_requests))
    new = dict(state)
    new["looks"] = state["looks"] + 1
    new["canary_requests"] = state["canary_requests"] + canary_requests
    new["canary_bad"] = state["canary_bad"] + canary_bad
    new["baseline_requests"] = state["baseline_requests"] + baseline_requests
    new["baseline_bad"] = state["baseline_bad"] + baseline_bad
    if canary_requests == 0 or baseline_requests == 0 or canary_bad + baseline_bad == 0:
        return new
    rho = canary_requests / float(canary_requests + baseline_requests)
    terms = _window_terms(rho, state["r0"], tuple(state["grid"]))
    new["log_lr"] = [log_lr + canary_bad * from_canary + baseline_bad * from_baseline
                     for log_lr, (from_canary, from_baseline) in zip(state["log_lr"], terms)]
    new["windows"] = state["windows"] + 1
    log_e = _log_mixture(new["log_lr"], _above(new["grid"], new["r0"]), 0.0)
    new["max_log_e"] = max(state["max_log_e"], log_e)
    if not state["rejected"] and log_e >= math.log(1.0 / state["alpha"]):
        new["rejected"] = True
        new["rejected_at_look"] = new["looks"]
    return new


def log_e_value(state):
    """log of the e-process now: the mixture's likelihood ratio against r0."""
    _check_state(state)
    return _log_mixture(state["log_lr"], _above(state["grid"], state["r0"]), 0.0)


def summary(state):
    """The figures a policy, the history and a report show for one test (JSON-serialisable).

    max_e_value is the largest value the e-process reached (the rejection, once made, stays).
    ratio_estimate is the maximum-likelihood ratio (None before any bad event). ratio_lower and
    ratio_upper each hold with probability at least 1 - alpha at every look at once (both
    together 1 - 2 alpha): a confidence sequence read off the same grid by inverting the test
    at each grid ratio g, the bound being the last grid ratio up to which every hypothesis was
    rejected; None where nothing is known. Away from ratio 1 they rest on the binomial model,
    exact for Poisson counts and close for rare bad events (see the module docstring).
    """
    _check_state(state)
    log_e = log_e_value(state)
    lower, upper = _bounds(state)
    return {
        "e_value": _exp_capped(log_e),
        "log_e_value": log_e,
        "max_e_value": _exp_capped(state["max_log_e"]),
        "threshold": 1.0 / state["alpha"],
        "alpha": state["alpha"],
        "r0": state["r0"],
        "rejected": state["rejected"],
        "rejected_at_look": state["rejected_at_look"],
        "ratio_estimate": _estimate(state),
        "ratio_lower": lower,
        "ratio_upper": upper,
        "canary_requests": state["canary_requests"],
        "canary_bad": state["canary_bad"],
        "baseline_requests": state["baseline_requests"],
        "baseline_bad": state["baseline_bad"],
        "looks": state["looks"],
        "windows_with_evidence": state["windows"],
    }


# ---------------------------------------------------------------------------------------------
# The judge: both questions and the promote rule
# ---------------------------------------------------------------------------------------------


def split_alpha(alpha):
    """Each question's level: alpha / 2 (Bonferroni), so that the chance that either question
    ever rolls back an identical release is at most alpha in total."""
    if not _is_number(alpha) or not 0 < alpha < 1:
        raise AnalysisError("alpha %r must be a number between 0 and 1 (exclusive), e.g. 0.01" % (alpha,))
    return alpha / len(QUESTIONS)


def new_analysis(alpha=0.01, r0=1.0):
    """Both questions' fresh tests, each at split_alpha(alpha).

    Create them once per rollout and carry them across weight steps (rho follows the weights):
    a fresh test at every step would spend alpha again at each step.
    """
    return {question: new_test(split_alpha(alpha), r0) for question in QUESTIONS}


def update_analysis(analysis, errors, latency):
    """Both tests after one window; `errors` and `latency` are each (canary_requests,
    canary_bad, baseline_requests, baseline_bad) for the window."""
    _check_analysis(analysis)
    return {"errors": update(analysis["errors"], *errors), "latency": update(analysis["latency"], *latency)}


def judge(analysis, config=None, at_max_duration=False):
    """One verdict for this interval: "rollback", "hold" or "pass", with reasons as sentences.

    rollback: either test's e-process reached 1/alpha of its question (or, at the maximum
              duration, there still was not enough data to pass).
    pass:     every question has at least min_canary_requests canary requests without a
              rejection, and, when `tolerance` is set, an upper confidence bound on the ratio
              at most tolerance (or no bad events at all on either side). The step may advance.
    hold:     not enough data yet; never a promotion, never a failure before the maximum.
    The absolute thresholds of the policy are a separate judgement that must pass as well.
    """
    _check_analysis(analysis)
    settings = dict(DEFAULT_CONFIG)
    settings.update(config or {})
    unknown = sorted(set(settings) - set(DEFAULT_CONFIG))
    if unknown:
        raise AnalysisError("unknown analysis setting(s) %s; known: %s"
                            % (", ".join(unknown), ", ".join(DEFAULT_CONFIG)))
    spent = sum(analysis[question]["alpha"] for question in QUESTIONS)
    if spent > settings["alpha"] * (1 + 1e-9):
        raise AnalysisError("the tests spend alpha %g in total, more than analysis alpha %g: create them with "
                            "new_analysis(alpha)" % (spent, settings["alpha"]))
    minimum, tolerance = settings["min_canary_requests"], settings["tolerance"]
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise AnalysisError("min_canary_requests %r must be a positive integer, e.g. 1000" % (minimum,))
    if tolerance is not None and (not _is_number(tolerance) or tolerance < 1):
        raise AnalysisError("tolerance %r must be a ratio of at least 1 (e.g. 1.5) or None" % (tolerance,))
    figures = {question: summary(analysis[question]) for question in QUESTIONS}
    rejected = [question for question in QUESTIONS if figures[question]["rejected"]]
    if rejected:
        reasons = [_rejection_sentence(question, figures[question]) for question in rejected]
        return {"verdict": "rollback", "rejected": rejected, "reasons": reasons, "questions": figures}
    waiting = []
    for question in QUESTIONS:
        sentence = _waiting_sentence(question, figures[question], minimum, tolerance)
        if sentence:
            waiting.append(sentence)
    if not waiting:
        reasons = ["%s: %d canary requests without evidence that the canary is worse than the baseline"
                   % (question, figures[question]["canary_requests"]) for question in QUESTIONS]
        return {"verdict": "pass", "rejected": [], "reasons": reasons, "questions": figures}
    if at_max_duration:
        reasons = ["not enough data by the maximum duration: " + sentence for sentence in waiting]
        return {"verdict": "rollback", "rejected": [], "reasons": reasons, "questions": figures}
    return {"verdict": "hold", "rejected": [], "reasons": waiting, "questions": figures}


def _rejection_sentence(question, figures):
    what = "5xx rate" if question == "errors" else "share of slow requests"
    lower = figures["ratio_lower"]
    return ("%s: the canary's %s is higher than the baseline's (e-value %.4g reached 1/alpha = %.4g at look %d; "
            "estimated ratio %s%s)" % (question, what, figures["e_value"], figures["threshold"],
                                       figures["rejected_at_look"], _format_ratio(figures["ratio_estimate"]),
                                       "" if lower is None else ", above %s" % _format_ratio(lower)))


def _waiting_sentence(question, figures, minimum, tolerance):
    if figures["canary_requests"] < minimum:
        return "%s: %d of the %d canary requests needed before a promotion" % (
            question, figures["canary_requests"], minimum)
    if tolerance is None or figures["canary_bad"] + figures["baseline_bad"] == 0:
        return None
    upper = figures["ratio_upper"]
    if upper is None or upper > tolerance:
        return "%s: not yet shown that the canary is at most %s times worse (upper bound %s)" % (
            question, _format_ratio(tolerance), "unknown" if upper is None else _format_ratio(upper))
    return None


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _window_terms(rho, r0, grid):
    """Per grid ratio: log p(r)/p(r0) and log (1-p(r))/(1-p(r0)), the log likelihood ratio of
    one bad event from the canary and from the baseline. Cached: rho repeats from window to window."""
    def share(ratio):
        return rho * ratio / (rho * ratio + 1.0 - rho)
    null = share(r0)
    return tuple((math.log(share(ratio) / null), math.log((1.0 - share(ratio)) / (1.0 - null))) for ratio in grid)


def _above(grid, r0):
    return [index for index, ratio in enumerate(grid) if ratio > r0 * (1 + 1e-9)]


def _log_mixture(log_lr, indices, base):
    """log of the equal-weight average of exp(log_lr[i] - base) over `indices`."""
    top = max(log_lr[index] for index in indices)
    total = sum(math.exp(log_lr[index] - top) for index in indices)
    return top - base + math.log(total / len(indices))


def _bounds(state):
    """Confidence bounds on the ratio by inverting one-sided tests at each grid ratio g.

    Lower: H_g "ratio <= g" is tested by the mixture over grid ratios above g; the bound is the
    last g of an unbroken run of rejections from the bottom, so a bound above the true ratio
    needs the one test at the grid point just above it to reject (probability <= alpha).
    Upper: the mirror image with the ratios below g.
    """
    grid, log_lr = state["grid"], state["log_lr"]
    threshold = math.log(1.0 / state["alpha"])
    lower = None
    for index in range(len(grid) - 1):
        if _log_mixture(log_lr, range(index + 1, len(grid)), log_lr[index]) < threshold:
            break
        lower = grid[index]
    upper = None
    for index in range(len(grid) - 1, 0, -1):
        if _log_mixture(log_lr, range(0, index), log_lr[index]) < threshold:
            break
        upper = grid[index]
    return lower, upper


def _estimate(state):
    """The maximum-likelihood ratio: the grid's best point refined by a parabola in log ratio
    through it and its neighbours (the log likelihood is concave in log ratio)."""
    if state["canary_bad"] + state["baseline_bad"] == 0 or state["windows"] == 0:
        return None
    grid, log_lr = state["grid"], state["log_lr"]
    best = max(range(len(grid)), key=lambda index: log_lr[index])
    if best in (0, len(grid) - 1):
        return grid[best]
    left, middle, right = log_lr[best - 1], log_lr[best], log_lr[best + 1]
    curvature = left - 2 * middle + right
    offset = 0.0 if curvature >= 0 else 0.5 * (left - right) / curvature
    step = math.log(grid[best + 1] / grid[best])
    return grid[best] * math.exp(offset * step)


def _check_state(state):
    if not isinstance(state, dict):
        raise AnalysisError("test state %r is not a dict: create it with new_test()" % (type(state).__name__,))
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise AnalysisError("test state lacks %s: create it with new_test()" % ", ".join(missing))
    if state["version"] != STATE_VERSION:
        raise AnalysisError("test state version %r is not %d: it was written by another release; start a new test"
                            % (state["version"], STATE_VERSION))
    if len(state["grid"]) != len(state["log_lr"]) or len(state["grid"]) < 2:
        raise AnalysisError("test state has %d grid ratios and %d log likelihood ratios: the file is damaged"
                            % (len(state["grid"]), len(state["log_lr"])))


def _check_analysis(analysis):
    if not isinstance(analysis, dict) or any(question not in analysis for question in QUESTIONS):
        raise AnalysisError("analysis must be a dict with the tests %s: create it with new_analysis()"
                            % ", ".join(QUESTIONS))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _exp_capped(log_value):
    # JSON has no infinity: a huge e-value is shown as the largest float, and the log says more.
    return math.exp(min(log_value, 700.0))


def _format_ratio(value):
    return "unknown" if value is None else "%.3g" % value


def _format_bound(value):
    return "+Inf" if value == math.inf else repr(float(value))
