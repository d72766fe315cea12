"""Table tests of an automated rollout's rules (module_utils/_auto.py): looks, verdicts, resume."""

import copy
import json
import pathlib

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _auto

STACK = {
    "canary": {"weight": 10, "steps": [10, 50], "interval_seconds": 3, "max_duration_seconds": 60,
               "metrics": "app"},
    "analysis": {"alpha": 0.01, "min_canary_requests": 50, "latency_bound_seconds": 0.1, "baseline": "stable"},
    "policy": {"thresholds": {"min_requests": 20, "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0}},
}
SETTINGS = _auto.settings_of(STACK)
LIVE = {"mode": "canary", "stable": "blue", "canary": "green", "weight": 10,
        "slots": {"blue": {"version": "1.0.0"}, "green": {"version": "1.1.0"}}}
BOUNDS = ["0.005", "0.01", "0.1", "+Inf"]
ALLOW = {"allow": True, "reasons": [], "hold": False}
TOO_FEW = {"allow": False, "hold": True,
           "reasons": ["only 5 requests in the 3 s window, fewer than the 20 needed for a decision: not enough data"]}
DENY = {"allow": False, "hold": False, "reasons": ["error rate 20.00% exceeds the maximum 1.00%"]}


def app(requests, errors, slow=0, uptime=100.0):
    """A cumulative reading of the app's counters: `slow` requests above 0.1 s."""
    fast = requests - slow
    return _auto.counters_of(requests, errors, [["0.005", fast], ["0.01", fast], ["0.1", fast],
                                                ["+Inf", requests]], uptime)


def reading(canary, baseline, taken_at):
    return {"taken_at": taken_at, "slots": {"green": canary, "blue": baseline}}


def edge(requests, errors, slow=0):
    fast = requests - slow
    return {"window": {"requests": requests, "errors": errors,
                       "latency_buckets": [[b, fast if b != "+Inf" else requests] for b in BOUNDS] if requests else []}}


def rollout(*totals, host="h1", start_at=1000.0, state=None, settings=None):
    """The state after looks at the given cumulative (canary, baseline) readings, 3 s apart."""
    settings = settings or SETTINGS
    state = state or _auto.start(settings, LIVE, start_at)
    looked = None
    for index, (canary, baseline) in enumerate(totals):
        looked = _auto.look(state, {host: reading(canary, baseline, start_at + 3 * index)}, settings,
                            start_at + 3 * index)
        state = looked["state"]
    return state, looked


def test_settings_from_the_manifest():
    assert SETTINGS == {"steps": [10, 50], "interval_seconds": 3, "max_duration_seconds": 60, "alpha": 0.01,
                        "min_canary_requests": 50, "latency_bound": 0.1, "metrics": "app", "baseline": "stable",
                        "thresholds": STACK["policy"]["thresholds"], "max_looks": 22}
    single = copy.deepcopy(STACK)
    single["canary"].update(steps=None, weight=100)
    assert _auto.settings_of(single)["steps"] == [99]


def test_the_first_look_only_reads():
    state, looked = rollout((app(0, 0), app(5000, 5)))
    assert looked["measured"] is False
    assert looked["analysis"] is None
    assert state["readings"]["h1"]["baseline"]["counters"]["requests"] == 5000
    decided = _auto.decide(looked, None, SETTINGS, 1000.0)
    assert (decided["verdict"], decided["done"]) == ("hold", False)
    assert decided["line"] == ("step 1/2 at 10%: HOLD (first reading of this run: the next look judges the window "
                               "since it)")


def test_a_window_is_the_increase_since_the_last_reading():
    _state, looked = rollout((app(0, 0), app(5000, 5)), (app(30, 0), app(5270, 5)))
    assert looked["windows"]["canary"] == {"requests": 30, "errors": 0, "error_rate_percent": 0.0,
                                           "p99_latency_ms": 4.95, "window_seconds": 3.0}
    assert looked["windows"]["baseline"]["requests"] == 270
    assert looked["policy_input"]["metrics"] == {"requests": 30, "error_rate_percent": 0.0, "p99_latency_ms": 4.95,
                                                 "window_seconds": 3.0}
    assert looked["policy_input"]["analysis"]["verdict"] == "hold"
    assert looked["policy_input"]["rollout"] == {"step": 1, "steps": 2, "weight": 10}


def test_a_restarted_slot_counts_from_zero():
    _state, looked = rollout((app(100, 0, uptime=50), app(5000, 5)), (app(20, 0, uptime=2), app(5270, 5)))
    assert looked["windows"]["canary"]["requests"] == 20
    assert looked["restarted"] == ["canary on h1"]


@pytest.mark.parametrize("warm_up, errors_bad, latency_requests, latency_bad", [
    # a canary this run started: its first window judges errors, not latency (start-up slowness)
    (True, 12, 0, 0),
    # a canary taken over or resumed: every window counts on both
    (False, 12, 60, 20),
])
def test_a_just_started_canary_is_judged_on_errors_from_its_first_window(
        warm_up, errors_bad, latency_requests, latency_bad):
    state = _auto.start(SETTINGS, LIVE, 1000.0, warm_up=warm_up)
    state, looked = rollout((app(0, 0), app(0, 0)), (app(60, 12, slow=20), app(540, 0)), state=state)
    questions = looked["analysis"]["questions"]
    assert (questions["errors"]["canary_bad"], questions["latency"]["canary_requests"],
            questions["latency"]["canary_bad"]) == (errors_bad, latency_requests, latency_bad)
    assert looked["analysis"]["verdict"] == "rollback"
    assert looked["latency_warm_up"] is warm_up
    # from the second window on, latency counts too
    _state, looked = rollout((app(120, 12, slow=40), app(1080, 0)), state=state, start_at=1006.0)
    assert looked["analysis"]["questions"]["latency"]["canary_bad"] == latency_bad + 20


@pytest.mark.parametrize("looks, decision, verdict, reason", [
    # not enough canary requests for the analysis: hold, whatever the policy says
    ([(app(30, 0), app(270, 0))], ALLOW, "hold",
     "comparison with the baseline: errors: 30 of the 50 canary requests needed before a promotion"),
    # too few for the policy: hold, never a failure
    ([(app(30, 0), app(270, 0))], TOO_FEW, "hold",
     "canary policy: only 5 requests in the 3 s window, fewer than the 20 needed for a decision: not enough data"),
    # enough on both: the step advances
    ([(app(60, 0), app(540, 0))], ALLOW, "advance", "canary policy: allowed on 60 canary requests at 10%"),
    # the policy's absolute thresholds fail with enough data: roll back
    ([(app(60, 0), app(540, 0))], DENY, "rollback", "canary policy: error rate 20.00% exceeds the maximum 1.00%"),
    # the comparison with the baseline rejects: roll back even when the policy allows
    ([(app(60, 12), app(540, 0))], ALLOW, "rollback", "comparison with the baseline: errors: the canary's 5xx rate"),
    # slow canary requests against a fast baseline: the latency question rejects
    ([(app(60, 0, slow=20), app(540, 0))], ALLOW, "rollback",
     "comparison with the baseline: latency: the canary's share of slow requests"),
])
def test_verdicts(looks, decision, verdict, reason):
    totals = [(app(0, 0), app(0, 0))] + looks
    _state, looked = rollout(*totals)
    decided = _auto.decide(looked, decision, SETTINGS, 1003.0)
    assert decided["verdict"] == verdict
    assert decided["reasons"][0].startswith(reason), decided["reasons"]
    assert decided["event"]["verdict"] == verdict
    json.dumps(decided)


def test_the_last_step_promotes_and_advancing_resets_the_step():
    _state, looked = rollout((app(0, 0), app(0, 0)), (app(60, 0), app(540, 0)))
    advanced = _auto.decide(looked, ALLOW, SETTINGS, 1003.0)
    assert advanced["state"]["step"] == 1 and advanced["state"]["weight"] == 50
    assert advanced["state"]["step_totals"]["canary"]["requests"] == 0
    _state, looked = rollout((app(360, 0), app(840, 0)), state=advanced["state"], start_at=1006.0)
    assert _auto.decide(looked, ALLOW, SETTINGS, 1006.0)["verdict"] == "promote"


def test_not_enough_data_rolls_back_only_at_the_maximum_duration():
    _state, looked = rollout((app(0, 0), app(0, 0)), (app(3, 0), app(27, 0)))
    assert _auto.decide(looked, TOO_FEW, SETTINGS, 1059.0)["verdict"] == "hold"
    late = _auto.decide(looked, TOO_FEW, SETTINGS, 1060.0)
    assert late["verdict"] == "rollback"
    assert late["reasons"][0].startswith("not enough data by the maximum duration (60 s): canary policy: only 5")


def test_a_resumed_rollout_past_its_maximum_rolls_back_at_its_first_look():
    state, looked = rollout((app(0, 0), app(0, 0)))
    resumed, _note = _auto.resume(state, SETTINGS, LIVE, 2000.0)
    looked = _auto.look(resumed, {"h1": reading(app(0, 0), app(0, 0), 2000.0)}, SETTINGS, 2000.0)
    decided = _auto.decide(looked, None, SETTINGS, 2000.0)
    assert decided["verdict"] == "rollback"
    assert decided["reasons"] == ["the maximum duration (60 s) passed before the canary could be judged "
                                  "(1000 s since the rollout started)"]


def test_a_fleet_merges_counts_never_rates():
    state = _auto.start(SETTINGS, LIVE, 1000.0)
    first = {"h1": reading(app(0, 0), app(0, 0), 1000.0), "h2": reading(app(0, 0), app(0, 0), 1000.2)}
    state = _auto.look(state, first, SETTINGS, 1000.0)["state"]
    second = {"h1": reading(app(100, 0), app(900, 0), 1003.0), "h2": reading(app(10, 5), app(90, 0), 1003.2)}
    looked = _auto.look(state, second, SETTINGS, 1003.0)
    # 5 errors of 110, not the mean of 0 % and 50 %
    assert looked["windows"]["canary"]["error_rate_percent"] == pytest.approx(100 * 5 / 110.0)
    assert looked["windows"]["hosts"]["h2"]["canary"]["error_rate_percent"] == 50.0
    assert looked["state"]["analysis"]["errors"]["canary_requests"] == 110


def test_edge_windows_are_used_as_read():
    state = _auto.start(SETTINGS, LIVE, 1000.0)
    state = _auto.look(state, {"h1": reading(edge(0, 0), edge(50, 0), 1000.0)}, SETTINGS, 1000.0)["state"]
    looked = _auto.look(state, {"h1": reading(edge(30, 6), edge(270, 0), 1003.0)}, SETTINGS, 1003.0)
    assert looked["windows"]["canary"]["errors"] == 6
    assert looked["state"]["readings"]["h1"]["canary"] == {"window": True}


@pytest.mark.parametrize("buckets, bound", [
    ([[["0.005", 90], ["0.01", 96], ["0.1", 100], ["+Inf", 100]]], 0.01),
    ([[["0.005", 95], ["0.01", 100], ["+Inf", 100]]], 0.005),
    ([[["0.005", 5], ["+Inf", 10]]], 0.5),  # too few requests: the default
    ([[["0.005", 9], ["0.1", 10], ["+Inf", 10]], [["0.005", 10], ["0.1", 10], ["+Inf", 10]]], 0.005),
    ([[["0.005", 0], ["+Inf", 100]]], 0.5),  # every request above every bound: the default
])
def test_the_latency_bound_from_the_baseline(buckets, bound):
    assert _auto.choose_bound(buckets) == bound


def test_the_bound_is_chosen_once_at_the_first_reading_from_the_baseline_only():
    settings = dict(SETTINGS, latency_bound=None)
    state = _auto.start(settings, LIVE, 1000.0)
    slow_canary = _auto.counters_of(100, 0, [["0.005", 0], ["0.01", 0], ["0.1", 0], ["+Inf", 100]])
    state = _auto.look(state, {"h1": reading(slow_canary, app(1000, 0), 1000.0)}, settings, 1000.0)["state"]
    assert state["latency_bound"] == 0.005


@pytest.mark.parametrize("saved, live_weight, step, note", [
    ("same", 10, 0, "Resuming the automated rollout of canary 1.1.0 (slot green) at step 1 of 2 (weight 10%)"),
    ("same", 50, 1, "Resuming the automated rollout of canary 1.1.0 (slot green) at step 2 of 2 (weight 50%)"),
    (None, 10, 0, "Taking over canary 1.1.0 (slot green, weight 10%) for an automated rollout at step 1 of 2"),
    ("other", 30, 1, "Taking over canary 1.1.0 (slot green, weight 30%) for an automated rollout at step 2 of 2"),
])
def test_resume(saved, live_weight, step, note):
    state, _looked = rollout((app(0, 0), app(0, 0)), (app(30, 0), app(270, 0)))
    if saved == "other":
        state = dict(state, canary_version="0.9.0")
    resumed, said = _auto.resume(state if saved else None, SETTINGS, dict(LIVE, weight=live_weight), 1010.0)
    assert said.startswith(note), said
    assert resumed["step"] == step and resumed["readings"] == {}
    if saved == "same":
        assert resumed["started_at"] == 1000.0
        assert resumed["analysis"]["errors"]["canary_requests"] == 30


@pytest.mark.parametrize("readings, message", [
    ({}, "no host's readings to judge the canary on: every canary host must be read"),
    ({"h1": {"taken_at": 1.0, "slots": {"green": app(0, 0)}}},
     "host h1: no reading of slot green or blue; both the canary and the stable slot must answer"),
])
def test_bad_readings_are_refused_naming_them(readings, message):
    with pytest.raises(_auto.AutoError) as caught:
        _auto.look(_auto.start(SETTINGS, LIVE, 1000.0), readings, SETTINGS, 1000.0)
    assert str(caught.value) == message


def test_the_progress_line():
    _state, looked = rollout((app(0, 0), app(0, 0)), (app(60, 0), app(540, 3)))
    line = _auto.decide(looked, ALLOW, SETTINGS, 1003.0)["line"]
    assert line.startswith("step 1/2 at 10% over 3.0 s: canary 60 req, 0.00% errors, P99 5.0 ms | baseline 540 req, "
                           "0.56% errors, P99 5.0 ms | e-value errors "), line
    assert ", rollback at 200 | ADVANCE: canary policy: allowed on 60 canary requests at 10%" in line


@pytest.mark.parametrize("requests, verdict", [(10, "hold"), (60, "rollback")])
def test_a_policy_without_hold_holds_on_fewer_requests_than_its_minimum(requests, verdict):
    _state, looked = rollout((app(0, 0), app(0, 0)), (app(requests, 0), app(540, 0)))
    decided = _auto.decide(looked, {"allow": False, "reasons": ["my own rule"]}, SETTINGS, 1003.0)
    assert decided["verdict"] == verdict


def test_an_app_reading_counts_application_requests_only():
    from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import parse
    text = "\n".join([
        'http_requests_total{method="GET",path="/",status_code="200"} 90',
        'http_requests_total{method="GET",path="/",status_code="500"} 10',
        'http_requests_total{method="GET",path="/healthz",status_code="200"} 500',
        'http_request_duration_seconds_bucket{method="GET",path="/",le="0.1"} 95',
        'http_request_duration_seconds_bucket{method="GET",path="/",le="+Inf"} 100',
        'http_request_duration_seconds_bucket{method="GET",path="/healthz",le="0.1"} 500',
        'http_request_duration_seconds_bucket{method="GET",path="/healthz",le="+Inf"} 500',
        "app_uptime_seconds 12.5", ""])
    assert _auto.app_reading(parse(text, 1000.0)) == {
        "counters": {"requests": 100, "errors": 10, "le:0.1": 95, "le:+Inf": 100}, "uptime": 12.5}


def test_the_status_of_a_running_rollout():
    state, looked = rollout((app(0, 0), app(0, 0)), (app(60, 1), app(540, 0)))
    status = _auto.rollout_status(looked["state"], LIVE, SETTINGS, 1030.0)
    assert (status["version"], status["step"], status["steps"], status["weight"], status["looks"]) == \
        ("1.1.0", 1, 2, 10, 1)
    assert status["elapsed_seconds"] == 30.0 and status["max_duration_seconds"] == 60
    errors = status["errors"]
    assert (errors["canary_requests"], errors["canary_bad"], errors["baseline_requests"], errors["baseline_bad"]) == \
        (60, 1, 540, 0)
    assert errors["e_value"] > 1 and errors["threshold"] == 200.0 and errors["rejected"] is False
    assert status["line"].startswith(
        "Automated rollout of 1.1.0: step 1/2 at 10%, 1 look over 30 s (at most 60 s); evidence e-value errors ")
    assert status["line"].endswith(", latency 1 (>0.1 s), rollback at 200")
    assert json.loads(json.dumps(status)) == status


@pytest.mark.parametrize("saved, live", [
    (None, LIVE),                                           # no saved rollout: a canary started by hand
    ("not a rollout", LIVE),
    ("other version", LIVE),                                # a file of an earlier rollout
    ("same", dict(LIVE, canary=None, mode="stable")),       # no canary runs
])
def test_no_status_without_a_rollout_of_the_live_canary(saved, live):
    state, _looked = rollout((app(0, 0), app(0, 0)))
    saved = {"same": state, "other version": dict(state, canary_version="0.9.0"),
             "not a rollout": {"step": 1}}.get(saved)
    assert _auto.rollout_status(saved, live, SETTINGS, 1010.0) is None


def test_a_rollout_begun_with_first_readings_judges_at_its_first_look():
    from ansible_collections.swiftdeploy.stack.plugins.filter.auto import auto_begin

    first = {"h1": reading(app(0, 0), app(5000, 5), 1000.0)}
    begun = auto_begin(LIVE, STACK, fresh=True, readings=first)
    assert begun["state"]["readings"]["h1"]["taken_at"] == 1000.0 and begun["state"]["looks"] == 0
    looked = _auto.look(begun["state"], {"h1": reading(app(60, 12), app(5540, 5), 1003.0)}, SETTINGS, 1003.0)
    assert looked["measured"] is True and looked["latency_warm_up"] is True
    assert looked["analysis"]["verdict"] == "rollback"
    # without readings (check mode) the first look only reads
    assert auto_begin(LIVE, STACK, fresh=True)["state"]["readings"] == {}


@pytest.mark.parametrize("warm_up, first_p99, second_p99", [
    # a canary this run started: the policy sees its first window's P99 flagged as a warm-up,
    # and the step's P99 from then on leaves that window out
    (True, 100.0, 4.95),
    # otherwise the step's P99 covers every window of the step
    (False, 100.0, 100.0),
])
def test_the_policy_judges_a_warm_up_window_apart(warm_up, first_p99, second_p99):
    state = _auto.start(SETTINGS, LIVE, 1000.0, warm_up=warm_up)
    state, looked = rollout((app(0, 0), app(0, 0)), (app(60, 0, slow=20), app(540, 0)), state=state)
    assert looked["policy_input"]["metrics"]["p99_latency_ms"] == first_p99
    assert looked["policy_input"]["analysis"]["latency_warm_up"] is warm_up
    assert state["warm_up"] is False
    _state, looked = rollout((app(160, 0, slow=20), app(1440, 0)), state=state, start_at=1006.0)
    assert looked["policy_input"]["metrics"]["requests"] == 160
    assert looked["policy_input"]["metrics"]["p99_latency_ms"] == second_p99
    assert looked["policy_input"]["analysis"]["latency_warm_up"] is False


@pytest.mark.parametrize("saved, warm_up", [
    ("same", True),     # the rollout of this canary, resumed by a run that has just started its fresh baseline
    ("same", False),    # resumed with nothing new started: a warm-up an older file still carries is dropped
    (None, True),       # taken over while its fresh baseline starts
])
def test_a_resumed_rollout_warms_up_only_what_this_run_started(saved, warm_up):
    state, _looked = rollout((app(0, 0), app(0, 0)), (app(60, 0), app(540, 0)))
    saved = dict(state, warm_up=True) if saved else None
    resumed, _note = _auto.resume(saved, SETTINGS, LIVE, 1010.0, warm_up=warm_up)
    assert resumed["warm_up"] is warm_up


@pytest.mark.parametrize("warm_up, verdict", [(True, "hold"), (False, "rollback")])
def test_a_slow_first_window_holds_through_the_shipped_policy(warm_up, verdict):
    """A canary slower than the policy's 500 ms P99 maximum in its first window only (a service
    warming up), judged by the shipped canary.rego (regopy, as the embedded engine runs it): the
    step holds for a canary this run started, and the next, fast window advances it."""
    pytest.importorskip("regopy", reason="regopy evaluates the shipped policy")
    from ansible_collections.swiftdeploy.stack.plugins.module_utils._policy import decide as policy

    policies = str(pathlib.Path(__file__).resolve().parents[3] / "policies")
    settings = dict(SETTINGS, thresholds=dict(SETTINGS["thresholds"], max_p99_latency_ms=50.0))
    state = _auto.start(settings, LIVE, 1000.0, warm_up=warm_up)
    state, looked = rollout((app(0, 0), app(0, 0)), (app(60, 0, slow=20), app(540, 0)), state=state,
                            settings=settings)
    decision = policy("embedded", "canary", looked["policy_input"], policy_dir=policies)
    decided = _auto.decide(looked, decision, settings, 1003.0)
    assert decided["verdict"] == verdict, decided["reasons"]
    over = "p99 latency 100.00 ms exceeds the maximum 50.00 ms"
    assert decision["allow"] is False and decision["hold"] is warm_up
    # without the warm-up the comparison with the baseline rejects the slow window too
    assert decision["reasons"][0] == (over + " in the first window after the canary started (its warm-up): held, "
                                             "the windows after it decide" if warm_up else over)
    assert len(decision["reasons"]) == 1 if warm_up else 2
    if warm_up:
        state = decided["state"]
        _state, looked = rollout((app(160, 0, slow=20), app(1440, 0)), state=state, start_at=1006.0,
                                 settings=settings)
        decision = policy("embedded", "canary", looked["policy_input"], policy_dir=policies)
        assert decision["allow"] is True, decision
