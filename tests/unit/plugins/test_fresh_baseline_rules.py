"""Table tests of the fresh baseline (analysis.baseline: fresh, docs/auto-rollout.md): the manifest's
rules, the state's transitions and validation, and the look that compares the canary with the
baseline slot (per host, merged for a fleet). Its nginx split: tests/unit/roles/test_fresh_baseline_templates.py."""

import copy

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _auto
from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import (
    BASELINE_SLOT,
    StateError,
    TransitionError,
    canary_target,
    roll_back,
    roll_forward,
    routing,
    validate_state,
    with_generations,
)

from manifest_seed import errors_of, with_changes  # tests/unit/plugins/manifest_seed.py

MINIMAL = {"stack": "shop", "services": {"image": "app:1", "port": 3000},
           "nginx": {"image": "nginx:1.27", "port": 8080}, "contact": "ops@example.com"}
BLUE = {"image": "app:1.0.0", "version": "1.0.0", "mode": "stable",
        "image_id": "sha256:" + "a" * 64, "secrets": "b" * 64}
GREEN = {"image": "app:1.1.0", "version": "1.1.0", "mode": "canary"}
STABLE = {"generation": 3, "mode": "stable", "weight": 0, "stable": "blue", "canary": None, "slots": {"blue": BLUE}}
CANARY = {"generation": 4, "mode": "canary", "weight": 10, "stable": "blue", "canary": "green",
          "slots": {"blue": BLUE, "green": GREEN}}
FRESH = dict(CANARY, baseline=BASELINE_SLOT, slots={"blue": BLUE, "green": GREEN, BASELINE_SLOT: dict(BLUE)})


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    {"analysis.baseline": "fresh", "canary.steps": [5, 25, 50]},
    {"analysis.baseline": "fresh"},  # one step at canary.weight (10)
    {"analysis.baseline": "fresh", "canary.steps": [50]},
    {"analysis.baseline": "stable", "canary.steps": [5, 25, 75]},
])
def test_fresh_baselines_with_weights_of_at_most_50_are_accepted(changes):
    result = validate_manifest(with_changes(MINIMAL, changes))
    assert result["analysis"]["baseline"] == changes["analysis.baseline"]


@pytest.mark.parametrize("changes, messages", [
    ({"analysis.baseline": "fresh", "canary.steps": [5, 25, 75]},
     ["manifest field 'canary.steps[2]': 75 is more than 50, but with analysis.baseline: fresh the canary and the "
      "baseline get 75% each, leaving the stable slot -50%; use steps of at most 50 (the rollout then goes to 100), "
      "or analysis.baseline: stable."]),
    ({"analysis.baseline": "fresh", "canary.steps": [51, 60]},
     ["manifest field 'canary.steps[0]': 51 is more than 50, but with analysis.baseline: fresh the canary and the "
      "baseline get 51% each, leaving the stable slot -2%; use steps of at most 50 (the rollout then goes to 100), "
      "or analysis.baseline: stable.",
      "manifest field 'canary.steps[1]': 60 is more than 50, but with analysis.baseline: fresh the canary and the "
      "baseline get 60% each, leaving the stable slot -20%; use steps of at most 50 (the rollout then goes to 100), "
      "or analysis.baseline: stable."]),
    ({"analysis.baseline": "fresh", "canary.weight": 60},
     ["manifest field 'canary.weight': 60 is more than 50, but with analysis.baseline: fresh and no canary.steps the "
      "rollout's one step is this weight, for the canary and the baseline each; set canary.steps (e.g. [5, 25, 50]) "
      "or a weight of at most 50, or use analysis.baseline: stable."]),
    ({"analysis.baseline": "fresh", "canary.sticky": True},
     ["manifest field 'analysis.baseline': 'fresh' cannot be used with canary.sticky: true (a sticky cookie names "
      "the stable or the canary release, and the fresh baseline is neither); set analysis.baseline: stable, or "
      "canary.sticky: false."]),
])
def test_fresh_baseline_rules_name_the_field_the_value_and_the_fix(changes, messages):
    assert errors_of(with_changes(MINIMAL, changes)) == messages


# --------------------------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------------------------


def test_a_canary_with_a_fresh_baseline_runs_the_stable_release_in_a_third_slot():
    target = canary_target(STABLE, "app:1.1.0", "1.1.0", 10, baseline=True)
    assert target["baseline"] == BASELINE_SLOT
    assert target["slots"] == {"blue": BLUE, "green": dict(GREEN), BASELINE_SLOT: BLUE}
    assert target["slots"][BASELINE_SLOT] is not target["slots"]["blue"]
    assert validate_state(dict(target, generation=4)) is not None


@pytest.mark.parametrize("name, state, weight, baseline, slots, has_baseline", [
    ("a weight change keeps a running baseline", FRESH, 25, None, ["baseline", "blue", "green"], True),
    ("a weight change asked with one keeps it", FRESH, 50, True, ["baseline", "blue", "green"], True),
    ("false removes it", FRESH, 25, False, ["blue", "green"], False),
    ("a running canary gets one", CANARY, 10, True, ["baseline", "blue", "green"], True),
    ("none keeps none", CANARY, 80, None, ["blue", "green"], False),
    ("a new canary without one", STABLE, 80, False, ["blue", "green"], False),
])
def test_canary_transitions_start_keep_and_drop_the_baseline(name, state, weight, baseline, slots, has_baseline):
    target = canary_target(state, "app:1.1.0", "1.1.0", weight, baseline=baseline)
    assert sorted(target["slots"]) == slots
    assert ("baseline" in target) is has_baseline
    assert target["weight"] == weight
    validate_state(target)


@pytest.mark.parametrize("state, weight, message", [
    (STABLE, 60, "weight: 60 with a fresh baseline (analysis.baseline: fresh) would leave the stable slot -20%; the "
                 "canary and the baseline get the weight each, so use at most 50."),
    (FRESH, 100, "weight: 100 with a fresh baseline (analysis.baseline: fresh) would leave the stable slot -100%; the "
                 "canary and the baseline get the weight each, so use at most 50."),
])
def test_a_weight_above_50_with_a_baseline_is_refused(state, weight, message):
    with pytest.raises(TransitionError) as caught:
        canary_target(state, "app:1.1.0", "1.1.0", weight, baseline=True if state is STABLE else None)
    assert str(caught.value) == message


@pytest.mark.parametrize("transition, stable", [(roll_forward, "green"), (roll_back, "blue")])
def test_roll_forward_and_roll_back_remove_the_baseline(transition, stable):
    target = transition(FRESH)
    assert sorted(target["slots"]) == [stable] and "baseline" not in target and target["canary"] is None
    validate_state(target)


def test_the_baseline_is_a_routing_change_of_its_own():
    """Starting or removing it is a new generation (nginx must route anew)."""
    assert routing(FRESH) != routing(CANARY)
    lives = with_generations(CANARY, True, [FRESH, roll_back(FRESH)])
    assert [live["generation"] for live in lives] == [5, 6]


# --------------------------------------------------------------------------------------------
# state.json
# --------------------------------------------------------------------------------------------


def variant(state, **changes):
    return dict(copy.deepcopy(state), **changes)


def test_old_states_without_the_field_and_null_stay_valid():
    validate_state(copy.deepcopy(CANARY))
    validate_state(variant(CANARY, baseline=None))
    validate_state(copy.deepcopy(FRESH))


@pytest.mark.parametrize("state, message", [
    (variant(FRESH, baseline="blue"),
     "state.json: field 'baseline' is \"blue\"; it must be null or 'baseline' (the fresh baseline's slot)"),
    (variant(FRESH, baseline=["baseline"]),
     "state.json: field 'baseline' is list; it must be null or 'baseline' (the fresh baseline's slot)"),
    (variant(STABLE, baseline="baseline"),
     "state.json: field 'baseline' is \"baseline\"; a fresh baseline runs only beside a canary; set it to null"),
    (variant(CANARY, baseline="baseline"),
     "state.json: field 'baseline' is \"baseline\"; 'slots' has no 'baseline' slot; add it or set 'baseline' to null"),
    (variant(CANARY, slots=dict(CANARY["slots"], baseline=BLUE)),
     "state.json: field 'slots' is \"baseline\"; a slot is named blue or green"),
    (variant(FRESH, weight=60),
     "state.json: field 'weight' is 60; with a fresh baseline the canary and the baseline get the weight each, so it "
     "must be at most 50"),
    (variant(FRESH, slots=dict(FRESH["slots"], baseline=GREEN)),
     "state.json: field 'slots.baseline' is \"another release\"; the fresh baseline runs the stable slot's release "
     "(1.0.0) with the same fields; set it to slots.blue"),
    (variant(FRESH, slots=dict(FRESH["slots"], baseline=dict(BLUE, image="evil:1"))),
     "state.json: field 'slots.baseline' is \"another release\"; the fresh baseline runs the stable slot's release "
     "(1.0.0) with the same fields; set it to slots.blue"),
    (variant(FRESH, slots=dict(FRESH["slots"], baseline=dict(BLUE, image="app:1;rm"))),
     "state.json: field 'slots.baseline.image' is \"app:1;rm\"; it must be a Docker image reference such as "
     "'app:1.2.0'"),
])
def test_a_forged_baseline_is_refused_naming_the_field(state, message):
    with pytest.raises(StateError) as caught:
        validate_state(state)
    assert str(caught.value) == message


# --------------------------------------------------------------------------------------------
# The look
# --------------------------------------------------------------------------------------------

STACK = {
    "canary": {"weight": 10, "steps": [10, 50], "interval_seconds": 3, "max_duration_seconds": 60, "metrics": "edge"},
    "analysis": {"alpha": 0.01, "min_canary_requests": 50, "latency_bound_seconds": 0.1, "baseline": "fresh"},
    "policy": {"thresholds": {"min_requests": 20, "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0}},
}
SETTINGS = _auto.settings_of(STACK)
STABLE_SETTINGS = _auto.settings_of(dict(STACK, analysis=dict(STACK["analysis"], baseline="stable")))


def edge(requests, errors):
    return {"window": {"requests": requests, "errors": errors,
                       "latency_buckets": [["0.1", requests], ["+Inf", requests]] if requests else []}}


def reading(taken_at, green, blue, baseline=None):
    slots = {"green": green, "blue": blue}
    if baseline is not None:
        slots["baseline"] = baseline
    return {"taken_at": taken_at, "slots": slots}


def first_look(settings, live, hosts=("h1",)):
    """The state after a rollout's start and first look at 1000.0, before any request on `hosts`
    (with the baseline slot's reading when live has one)."""
    fresh = live.get("baseline") is not None
    readings = {host: reading(1000.0, edge(0, 0), edge(0, 0), edge(0, 0) if fresh else None) for host in hosts}
    return _auto.look(_auto.start(settings, live, 1000.0), readings, settings, 1000.0)["state"]


def test_a_fresh_rollout_compares_the_canary_with_the_baseline_slot_not_stable():
    assert _auto.start(SETTINGS, FRESH, 1000.0)["baseline"] == "fresh"
    # Stable served 800 requests without an error; the baseline 100 with 10 errors, as many as the canary.
    looked = _auto.look(first_look(SETTINGS, FRESH),
                        {"h1": reading(1003.0, edge(100, 10), edge(800, 0), edge(100, 10))}, SETTINGS, 1003.0)
    assert looked["windows"]["baseline"]["requests"] == 100 and looked["windows"]["baseline"]["errors"] == 10
    assert looked["policy_input"]["analysis"]["baseline"]["requests"] == 100
    decided = _auto.decide(looked, {"allow": True, "reasons": [], "hold": False}, SETTINGS, 1003.0)
    assert decided["event"]["baseline"] == "fresh"
    assert "| fresh baseline 100 req, 10.00% errors" in decided["line"], decided["line"]


def test_a_stable_rollout_still_compares_with_the_stable_slot():
    looked = _auto.look(first_look(STABLE_SETTINGS, CANARY), {"h1": reading(1003.0, edge(100, 10), edge(800, 0))},
                        STABLE_SETTINGS, 1003.0)
    assert looked["windows"]["baseline"]["requests"] == 800
    decided = _auto.decide(looked, {"allow": True, "reasons": [], "hold": False}, STABLE_SETTINGS, 1003.0)
    assert decided["event"]["baseline"] == "stable" and "| baseline 800 req" in decided["line"]


def test_a_fleet_merges_each_hosts_own_baseline():
    looked = _auto.look(first_look(SETTINGS, FRESH, ("h1", "h2")),
                        {"h1": reading(1003.0, edge(60, 1), edge(500, 0), edge(50, 2)),
                         "h2": reading(1003.5, edge(40, 0), edge(300, 9), edge(70, 1))},
                        SETTINGS, 1003.5)
    assert looked["windows"]["baseline"]["requests"] == 120 and looked["windows"]["baseline"]["errors"] == 3
    assert looked["windows"]["canary"]["requests"] == 100 and looked["windows"]["canary"]["errors"] == 1
    assert looked["windows"]["hosts"]["h2"]["baseline"]["requests"] == 70
    summary = looked["state"]["analysis"]["errors"]
    assert (summary["canary_requests"], summary["baseline_requests"]) == (100, 120)


def test_a_host_without_its_baseline_reading_is_named():
    state = _auto.start(SETTINGS, FRESH, 1000.0)
    with pytest.raises(_auto.AutoError) as caught:
        _auto.look(state, {"h1": reading(1000.0, edge(0, 0), edge(0, 0))}, SETTINGS, 1000.0)
    assert str(caught.value) == ("host h1: no reading of slot green or baseline; both the canary and the fresh "
                                 "baseline must answer")


@pytest.mark.parametrize("saved_baseline, settings, resumed", [
    ("fresh", SETTINGS, True),
    (None, STABLE_SETTINGS, True),  # an auto.json saved before fresh baselines
    ("stable", SETTINGS, False),  # the evidence was gathered against another baseline
    ("fresh", STABLE_SETTINGS, False),
])
def test_a_rollout_resumes_only_against_the_same_baseline(saved_baseline, settings, resumed):
    saved = _auto.start(SETTINGS, FRESH, 1000.0)
    if saved_baseline is None:
        del saved["baseline"]
    else:
        saved["baseline"] = saved_baseline
    state, note = _auto.resume(saved, settings, FRESH, 1010.0)
    assert note.startswith("Resuming") is resumed, note
    assert _auto.baseline_of(state) == settings["baseline"]


def test_status_names_the_fresh_baseline():
    saved = _auto.start(SETTINGS, FRESH, 1000.0)
    status = _auto.rollout_status(saved, FRESH, SETTINGS, 1010.0)
    assert status["baseline"] == "fresh"
    assert status["line"].endswith("; baseline: fresh (slot baseline, the stable release at the canary's weight)")
    stable = _auto.rollout_status(_auto.start(STABLE_SETTINGS, CANARY, 1000.0), CANARY, STABLE_SETTINGS, 1010.0)
    assert stable["baseline"] == "stable" and "fresh" not in stable["line"]
