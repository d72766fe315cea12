"""Canary analysis: exact values and messages of the pure functions, JSON round trips, and
seeded simulations proving that identical releases are rolled back at most alpha of the time
(constant and changing weights, bursts, empty windows, counter resets) while a large
regression is caught within the first intervals.

The simulations run at alpha = 0.1 so that a few hundred rollouts tell a valid test from a
broken one (a fixed-horizon test repeated 36 times at 10 % rejects about half of them);
scripts/bench_analysis.py runs 10,000 rollouts at alpha = 1 %.
"""

from __future__ import annotations

import copy
import json
import math
import random

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _analysis as analysis
from ansible_collections.swiftdeploy.stack.plugins.module_utils._analysis import (
    AnalysisError,
    bad_above,
    judge,
    new_analysis,
    new_test,
    slot_window_delta,
    summary,
    update,
    update_analysis,
    window_delta,
)

RATIOS_ABOVE_ONE = [10 ** (k / 10.0) for k in range(1, 21)]
BUCKETS = [["0.05", 60], ["0.1", 90], ["0.25", 99], ["+Inf", 100]]


# ---------------------------------------------------------------------------------------------
# Window deltas and buckets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("previous, current, expected", [
    (None, 7, 7),        # a series born in this window started at zero
    (3, 10, 7),
    (10, 10, 0),
    (10, 4, 4),          # restarted: the new value is the increase
    (0, 0, 0),
    (2.5, 4.0, 1.5),
])
def test_window_delta(previous, current, expected):
    assert window_delta(previous, current) == expected


@pytest.mark.parametrize("previous, current, message", [
    (-1, 3, "previous counter reading -1 is not a non-negative number"),
    (3, -2, "current counter reading -2 is not a non-negative number"),
    ("3", 4, "previous counter reading '3' is not a non-negative number"),
    (3, None, "current counter reading is missing: read the counter before computing its window"),
])
def test_window_delta_errors(previous, current, message):
    with pytest.raises(AnalysisError) as caught:
        window_delta(previous, current)
    assert str(caught.value) == message


@pytest.mark.parametrize("previous, current, deltas, restarted", [
    ({"requests": 100, "errors": 2}, {"requests": 150, "errors": 3}, {"requests": 50, "errors": 1}, False),
    # the errors counter went down: the slot restarted, so the requests delta is its new value too,
    # although the requests counter alone looked like it had grown
    ({"requests": 100, "errors": 5}, {"requests": 120, "errors": 1}, {"requests": 120, "errors": 1}, True),
    ({"requests": 100, "errors": 2, "start_time": 1.0}, {"requests": 130, "errors": 2, "start_time": 9.0},
     {"requests": 130, "errors": 2}, True),
    ({"requests": 100}, {"requests": 110, "errors": 1}, {"requests": 10, "errors": 1}, False),
    ({}, {"requests": 0, "errors": 0}, {"requests": 0, "errors": 0}, False),
    # a series that vanished went down to zero: the process restarted
    ({"requests": 100, "errors": 5}, {"requests": 130}, {"requests": 130}, True),
])
def test_slot_window_delta(previous, current, deltas, restarted):
    assert slot_window_delta(previous, current) == (deltas, restarted)


@pytest.mark.parametrize("bound, expected", [
    (0.1, (100, 10)),
    ("0.1", (100, 10)),
    (0.05, (100, 40)),
    (0.25, (100, 1)),
])
def test_bad_above(bound, expected):
    assert bad_above(BUCKETS, bound) == expected


def test_bad_above_reads_unsorted_numeric_buckets():
    assert bad_above([[float("inf"), 8], [0.5, 6], [0.1, 2]], 0.5) == (8, 2)


@pytest.mark.parametrize("buckets, bound, message", [
    (BUCKETS, 0.2, "latency bound 0.2 is not one of the bucket bounds (0.05, 0.1, 0.25): choose one of them"),
    (BUCKETS, "+Inf", "latency bound +Inf is not one of the bucket bounds (0.05, 0.1, 0.25): choose one of them"),
    (BUCKETS, "fast", "latency bound 'fast' is not a number"),
    ([], 0.1, "no latency buckets: the window has no histogram to read bound 0.1 from"),
    ([["0.1", 5]], 0.1, "the buckets have no +Inf bucket, so the number of requests is unknown"),
    ([["0.1", 5], ["+Inf", 3]], 0.1, "bucket 0.1 counts 5 but +Inf counts only 3: the buckets are not cumulative"),
    ([["0.1"], ["+Inf", 3]], 0.1, "bucket ['0.1'] is not [upper_bound, cumulative_count]"),
    ([["0.1", -1], ["+Inf", 3]], 0.1, "bucket ['0.1', -1] has a count that is not a non-negative number"),
])
def test_bad_above_errors(buckets, bound, message):
    with pytest.raises(AnalysisError) as caught:
        bad_above(buckets, bound)
    assert str(caught.value) == message


# ---------------------------------------------------------------------------------------------
# One test: exact values
# ---------------------------------------------------------------------------------------------


def test_new_test_is_neutral():
    state = new_test(0.01)
    assert state["grid"][10] == 1.0 and len(state["grid"]) == 31
    assert summary(state)["e_value"] == 1.0
    assert summary(state)["ratio_estimate"] is None
    assert (summary(state)["ratio_lower"], summary(state)["ratio_upper"]) == (None, None)


def test_one_bad_event_from_the_canary_at_equal_shares():
    # rho = 1/2: p(r) = r / (r + 1), so the likelihood ratio of r against 1 is 2r / (r + 1).
    state = update(new_test(0.01), 100, 1, 100, 0)
    expected = sum(2 * r / (r + 1) for r in RATIOS_ABOVE_ONE) / 20
    assert summary(state)["e_value"] == pytest.approx(expected, rel=1e-12)
    assert summary(state)["e_value"] == pytest.approx(1.7273, abs=1e-4)


def test_split_follows_the_window_share():
    # rho = 1/10 with 1 bad event from each side: ratio (p(r)/rho) * ((1 - p(r))/(1 - rho)).
    state = update(new_test(0.01), 100, 1, 900, 1)
    rho = 0.1
    ratios = [(rho * r / (rho * r + 1 - rho)) / rho * ((1 - rho) / (rho * r + 1 - rho)) / (1 - rho)
              for r in RATIOS_ABOVE_ONE]
    assert analysis.log_e_value(state) == pytest.approx(math.log(sum(ratios) / 20), rel=1e-12)


@pytest.mark.parametrize("window", [(0, 0, 500, 3), (500, 2, 0, 0), (100, 0, 900, 0), (0, 0, 0, 0)])
def test_windows_without_evidence_change_only_the_counts(window):
    before = update(new_test(0.01), 100, 1, 900, 4)
    after = update(before, *window)
    assert after["log_lr"] == before["log_lr"]
    assert after["windows"] == before["windows"]
    assert after["looks"] == before["looks"] + 1
    assert after["canary_requests"] == before["canary_requests"] + window[0]
    assert after["baseline_bad"] == before["baseline_bad"] + window[3]


def test_update_does_not_change_its_input():
    state = update(new_test(0.01), 100, 1, 900, 4)
    frozen = copy.deepcopy(state)
    update(state, 100, 5, 900, 1)
    assert state == frozen


def test_state_survives_a_json_round_trip():
    state = new_test(0.005, r0=1.2)
    for window in [(200, 3, 1800, 9), (0, 0, 0, 0), (50, 1, 1950, 10), (200, 0, 1800, 12)]:
        state = update(state, *window)
        loaded = json.loads(json.dumps(state))
        assert loaded == state
        state = loaded
    assert update(json.loads(json.dumps(state)), 200, 2, 1800, 9) == update(state, 200, 2, 1800, 9)


def test_a_rejection_sticks():
    state = new_test(0.01)
    looks = 0
    while not state["rejected"]:
        state = update(state, 100, 10, 900, 5)
        looks += 1
    assert state["rejected_at_look"] == looks
    for _look in range(20):
        state = update(state, 100, 0, 900, 30)
    assert state["rejected"] and state["rejected_at_look"] == looks
    assert summary(state)["e_value"] < 100 <= summary(state)["max_e_value"]


def test_estimate_and_bounds_of_a_clear_regression():
    # rho = 1/2 and 300 of 400 bad events from the canary: the estimated ratio is 3.
    state = update(new_test(0.01), 10000, 300, 10000, 100)
    figures = summary(state)
    assert figures["ratio_estimate"] == pytest.approx(3.0, rel=0.02)
    assert 1.5 < figures["ratio_lower"] < 3.0 < figures["ratio_upper"] < 6.0
    assert figures["rejected"] and figures["rejected_at_look"] == 1


def test_estimate_at_the_edge_of_the_grid():
    state = update(new_test(0.01), 100, 50, 900, 0)
    assert summary(state)["ratio_estimate"] == 100.0
    assert summary(state)["ratio_upper"] is None


def test_tolerated_ratio_needs_more_evidence():
    strict, tolerant = new_test(0.01), new_test(0.01, r0=2.0)
    for _look in range(10):
        strict, tolerant = update(strict, 100, 3, 900, 9), update(tolerant, 100, 3, 900, 9)
    assert strict["rejected"] and not tolerant["rejected"]


@pytest.mark.parametrize("alpha, r0, message", [
    (0, 1.0, "alpha 0 must be a number between 0 and 1 (exclusive), e.g. 0.01"),
    (1, 1.0, "alpha 1 must be a number between 0 and 1 (exclusive), e.g. 0.01"),
    (True, 1.0, "alpha True must be a number between 0 and 1 (exclusive), e.g. 0.01"),
    ("0.01", 1.0, "alpha '0.01' must be a number between 0 and 1 (exclusive), e.g. 0.01"),
    (0.01, 0, "r0 0 must be a positive ratio, e.g. 1.0 (no tolerance)"),
    (0.01, float("inf"), "r0 inf must be a positive ratio, e.g. 1.0 (no tolerance)"),
])
def test_new_test_errors(alpha, r0, message):
    with pytest.raises(AnalysisError) as caught:
        new_test(alpha, r0)
    assert str(caught.value) == message


@pytest.mark.parametrize("window, message", [
    ((100, -1, 900, 0), "canary_bad is -1: window counts cannot be negative; turn cumulative counters into "
                        "window deltas with window_delta(), which handles counter resets"),
    ((100, 0, -900, 0), "baseline_requests is -900: window counts cannot be negative; turn cumulative counters "
                        "into window deltas with window_delta(), which handles counter resets"),
    ((100.0, 0, 900, 0), "canary_requests 100.0 is not an integer count of this window"),
    ((100, True, 900, 0), "canary_bad True is not an integer count of this window"),
    ((10, 11, 900, 0), "a side has more bad requests than requests (canary 11 of 10, baseline 0 of 900): "
                       "count bad and all requests over the same window"),
])
def test_update_errors(window, message):
    with pytest.raises(AnalysisError) as caught:
        update(new_test(0.01), *window)
    assert str(caught.value) == message


@pytest.mark.parametrize("state, message", [
    ([], "test state 'list' is not a dict: create it with new_test()"),
    ({"version": 1}, "test state lacks alpha, r0, grid, log_lr, canary_requests, canary_bad, baseline_requests, "
                     "baseline_bad, windows, looks, rejected, rejected_at_look, max_log_e: create it with new_test()"),
    (dict(new_test(0.01), version=0),
     "test state version 0 is not 1: it was written by another release; start a new test"),
    (dict(new_test(0.01), log_lr=[0.0]),
     "test state has 31 grid ratios and 1 log likelihood ratios: the file is damaged"),
])
def test_state_errors(state, message):
    with pytest.raises(AnalysisError) as caught:
        update(state, 1, 0, 1, 0)
    assert str(caught.value) == message


# ---------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------


def _analysis_after(windows, alpha=0.01):
    state = new_analysis(alpha)
    for errors, latency in windows:
        state = update_analysis(state, errors, latency)
    return state


def test_new_analysis_splits_alpha():
    state = new_analysis(0.01)
    assert state["errors"]["alpha"] == state["latency"]["alpha"] == 0.005


def test_judge_holds_before_the_minimum_traffic():
    state = _analysis_after([((200, 1, 1800, 9), (200, 7, 1800, 60))] * 2)
    verdict = judge(state)
    assert verdict["verdict"] == "hold" and verdict["rejected"] == []
    assert verdict["reasons"] == ["errors: 400 of the 1000 canary requests needed before a promotion",
                                  "latency: 400 of the 1000 canary requests needed before a promotion"]


def test_judge_passes_after_the_minimum_traffic():
    state = _analysis_after([((200, 1, 1800, 9), (200, 7, 1800, 60))] * 5)
    verdict = judge(state)
    assert verdict["verdict"] == "pass"
    assert verdict["reasons"] == [
        "errors: 1000 canary requests without evidence that the canary is worse than the baseline",
        "latency: 1000 canary requests without evidence that the canary is worse than the baseline"]
    assert set(verdict["questions"]) == {"errors", "latency"}
    json.dumps(verdict)


def test_judge_rolls_back_and_says_which_question():
    state = _analysis_after([((200, 1, 1800, 9), (200, 60, 1800, 60))])
    verdict = judge(state)
    assert verdict["verdict"] == "rollback" and verdict["rejected"] == ["latency"]
    assert verdict["reasons"][0].startswith("latency: the canary's share of slow requests is higher than the "
                                            "baseline's (e-value ")
    # 60 of 120 slow requests from a canary with a tenth of the traffic: ratio 9
    assert verdict["reasons"][0].endswith("reached 1/alpha = 200 at look 1; estimated ratio 9, above 3.98)")


def test_judge_never_promotes_without_data_and_fails_at_the_maximum():
    state = _analysis_after([((0, 0, 1800, 9), (0, 0, 1800, 60))] * 36)
    assert judge(state)["verdict"] == "hold"
    verdict = judge(state, at_max_duration=True)
    assert verdict["verdict"] == "rollback" and verdict["rejected"] == []
    assert verdict["reasons"][0] == ("not enough data by the maximum duration: errors: 0 of the 1000 canary "
                                     "requests needed before a promotion")


def test_judge_with_a_tolerance_waits_for_an_upper_bound():
    few = _analysis_after([((200, 1, 1800, 9), (200, 7, 1800, 60))] * 5)
    verdict = judge(few, {"tolerance": 2.0})
    assert verdict["verdict"] == "hold"
    assert verdict["reasons"][0] == "errors: not yet shown that the canary is at most 2 times worse (upper bound 5.01)"
    many = _analysis_after([((2000, 10, 18000, 90), (2000, 70, 18000, 600))] * 20)
    assert judge(many, {"tolerance": 2.0})["verdict"] == "pass"
    # the bound moves in grid steps of 10**0.1: 1.58 is the best it can say here
    assert judge(many, {"tolerance": 1.5})["reasons"] == [
        "errors: not yet shown that the canary is at most 1.5 times worse (upper bound 1.58)"]


@pytest.mark.parametrize("config, message", [
    ({"alpha": 0.001}, "the tests spend alpha 0.01 in total, more than analysis alpha 0.001: create them with "
                       "new_analysis(alpha)"),
    ({"beta": 1}, "unknown analysis setting(s) beta; known: alpha, min_canary_requests, tolerance"),
    ({"min_canary_requests": 0}, "min_canary_requests 0 must be a positive integer, e.g. 1000"),
    ({"tolerance": 0.5}, "tolerance 0.5 must be a ratio of at least 1 (e.g. 1.5) or None"),
])
def test_judge_errors(config, message):
    with pytest.raises(AnalysisError) as caught:
        judge(new_analysis(0.01), config)
    assert str(caught.value) == message


def test_judge_needs_both_questions():
    with pytest.raises(AnalysisError) as caught:
        judge({"errors": new_test(0.005)})
    assert str(caught.value) == "analysis must be a dict with the tests errors, latency: create it with new_analysis()"


# ---------------------------------------------------------------------------------------------
# Simulations (seeded)
# ---------------------------------------------------------------------------------------------

ALPHA = 0.1
ROLLOUTS = 600
LOOKS = 36


def binomial(rng, n, p):
    """Exact Binomial(n, p) by inversion from 0 (cheap while n * p is small)."""
    u, k = rng.random(), 0
    pmf = (1.0 - p) ** n
    cumulative = pmf
    while u > cumulative and k < n:
        pmf *= (n - k) / (k + 1.0) * p / (1.0 - p)
        k += 1
        cumulative += pmf
    return k


def simulate(rng, stress=None, canary_rate=0.02, looks=LOOKS, alpha=ALPHA):
    """One rollout of the errors question; returns the look of the rollback or None."""
    state = new_test(alpha)
    cumulative = {"requests": 0, "bad": 0, "start_time": 0}
    for look in range(looks):
        share, rate, total = 0.1, 0.02, 1000
        if stress == "weights":
            share = (0.05, 0.25, 0.5)[look * 3 // looks]
            rate = (0.02, 0.06, 0.01)[look * 3 // looks]
        if stress == "bursts" and rng.random() < 0.1:
            total, rate = 8000, 0.05
        n_canary, n_baseline = int(total * share), total - int(total * share)
        if stress == "zero":
            draw = rng.random()
            n_canary = 0 if draw < 0.3 else n_canary
            n_baseline = 0 if draw < 0.2 else n_baseline
        canary_p = rate if canary_rate == 0.02 else canary_rate
        if stress == "resets" and rng.random() < 0.1:
            kept = rng.randrange(n_canary + 1)
            current = {"requests": kept, "bad": binomial(rng, kept, canary_p), "start_time": look}
        else:
            current = {"requests": cumulative["requests"] + n_canary,
                       "bad": cumulative["bad"] + binomial(rng, n_canary, canary_p),
                       "start_time": cumulative["start_time"]}
        deltas, _restarted = slot_window_delta(cumulative, current)
        cumulative = current
        state = update(state, deltas["requests"], deltas["bad"], n_baseline, binomial(rng, n_baseline, rate))
        if state["rejected"]:
            return look + 1
    return None


def limit(rollouts, alpha=ALPHA):
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / rollouts)


@pytest.mark.parametrize("stress", [None, "weights", "bursts", "zero", "resets"])
def test_identical_releases_are_rarely_rolled_back(stress):
    rng = random.Random("aa-%s" % stress)
    rolled_back = sum(simulate(rng, stress) is not None for _rollout in range(ROLLOUTS))
    assert rolled_back / float(ROLLOUTS) <= limit(ROLLOUTS)


def test_repeated_fixed_horizon_tests_would_fail_the_same_check():
    # The margin is tight enough to catch peeking: a z-test at nominal 10 % looked at 36 times.
    rng = random.Random("peeking")
    rolled_back = 0
    for _rollout in range(ROLLOUTS):
        totals = [0, 0, 0, 0]
        for _look in range(LOOKS):
            window = (100, binomial(rng, 100, 0.02), 900, binomial(rng, 900, 0.02))
            totals = [total + value for total, value in zip(totals, window)]
            pooled = (totals[1] + totals[3]) / float(totals[0] + totals[2])
            spread = math.sqrt(pooled * (1 - pooled) * (1.0 / totals[0] + 1.0 / totals[2])) if pooled else 0
            if spread and (totals[1] / float(totals[0]) - totals[3] / float(totals[2])) / spread > 1.2816:
                rolled_back += 1
                break
    assert rolled_back / float(ROLLOUTS) > limit(ROLLOUTS)


def test_the_judge_holds_alpha_for_both_questions_together():
    rng = random.Random("judge-aa")
    rolled_back = 0
    for _rollout in range(300):
        state = new_analysis(ALPHA)
        for _look in range(LOOKS):
            errors = (100, binomial(rng, 100, 0.02), 900, binomial(rng, 900, 0.02))
            latency = (100, binomial(rng, 100, 0.05), 900, binomial(rng, 900, 0.05))
            state = update_analysis(state, errors, latency)
        rolled_back += judge(state, {"alpha": ALPHA})["verdict"] == "rollback"
    assert rolled_back / 300.0 <= limit(300)


def test_a_large_regression_is_caught_in_the_first_intervals():
    rng = random.Random("regression")
    looks = [simulate(rng, canary_rate=0.22, alpha=0.01) for _rollout in range(200)]
    assert sum(look is not None and look <= 2 for look in looks) >= 190


def test_a_small_regression_is_caught_within_the_rollout():
    rng = random.Random("small")
    looks = [simulate(rng, canary_rate=0.06, alpha=0.01) for _rollout in range(200)]
    assert sum(look is not None for look in looks) >= 180


@pytest.mark.parametrize("ratio", [1.0, 10 ** 0.4])
def test_the_confidence_bounds_cover_the_true_ratio_at_every_look(ratio):
    # On a grid point (the hardest case: "ratio <= g" is then exactly true at g).
    rng = random.Random("coverage-%s" % ratio)
    lower_wrong = upper_wrong = 0
    for _rollout in range(200):
        state, missed_low, missed_high = new_test(ALPHA), False, False
        for _look in range(LOOKS):
            state = update(state, 100, binomial(rng, 100, 0.01 * ratio), 900, binomial(rng, 900, 0.01))
            figures = summary(state)
            missed_low = missed_low or (figures["ratio_lower"] is not None and figures["ratio_lower"] >= ratio)
            missed_high = missed_high or (figures["ratio_upper"] is not None and figures["ratio_upper"] <= ratio)
        lower_wrong += missed_low
        upper_wrong += missed_high
    assert lower_wrong / 200.0 <= limit(200) and upper_wrong / 200.0 <= limit(200)
