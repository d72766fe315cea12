"""The rules of a stack's live state: validation of state.json and every transition, as tables."""

from __future__ import annotations

import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.filter.state import live_state, state_generations, state_transition
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import (
    StateError,
    TransitionError,
    canary_target,
    deploy_target,
    idle_slot,
    initial_state,
    parse_state,
    roll_back,
    roll_forward,
    validate_state,
    with_generations,
)

BLUE = {"image": "app:1.0.0", "version": "1.0.0", "mode": "stable"}
NEXT = {"image": "app:1.1.0", "version": "1.1.0", "mode": "stable"}
GREEN = {"image": "app:1.1.0", "version": "1.1.0", "mode": "canary"}
STABLE = {"generation": 1, "mode": "stable", "weight": 0, "stable": "blue", "canary": None, "slots": {"blue": BLUE}}
CANARY = {"generation": 2, "mode": "canary", "weight": 10, "stable": "blue", "canary": "green",
          "slots": {"blue": BLUE, "green": GREEN}}


def variant(base, **changes):
    state = json.loads(json.dumps(base))
    for path, value in changes.items():
        target = state
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[key]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return state


@pytest.mark.parametrize("state", [STABLE, CANARY, variant(STABLE, mode="canary", slots__blue__mode="canary"),
                                   variant(CANARY, weight=100), variant(STABLE, stable="green", slots={"green": BLUE}),
                                   variant(STABLE, slots__blue__image="registry.example.com:5000/team/app@sha256:" + "a" * 64),
                                   variant(CANARY, slots__blue__image_id="sha256:" + "0" * 64)])
def test_valid_states_pass(state):
    assert validate_state(state) is state


@pytest.mark.parametrize("state, message", [
    ([], 'state.json: holds list, not a state object; restore it from a backup or remove it to start over'),
    (variant(STABLE, extra=1), "state.json: field 'extra' is 1; it is not a field of the state (generation, mode, "
                               "weight, stable, canary, slots); remove it"),
    (variant(STABLE, weight=KeyError), "state.json: field 'weight' is missing; restore the file or remove it to start over"),
    (variant(STABLE, generation="1"), "state.json: field 'generation' is \"1\"; it must be a whole number of 1 or more"),
    (variant(STABLE, generation=True), "state.json: field 'generation' is true; it must be a whole number of 1 or more"),
    (variant(STABLE, generation=0), "state.json: field 'generation' is 0; it must be a whole number of 1 or more"),
    (variant(STABLE, mode="blue"), "state.json: field 'mode' is \"blue\"; it must be one of stable, canary"),
    (variant(STABLE, slots={}), "state.json: field 'slots' is dict; it must map the slots blue and green to what "
                                "runs in them"),
    (variant(STABLE, slots={"red": BLUE}), "state.json: field 'slots' is \"red\"; a slot is named blue or green"),
    (variant(STABLE, slots__blue="app:1"), "state.json: field 'slots.blue' is \"app:1\"; it must hold image, version "
                                           "and mode"),
    (variant(STABLE, slots__blue__port=80), "state.json: field 'slots.blue.port' is 80; it is not a field of a slot "
                                            "(image, version, mode, image_id); remove it"),
    (variant(STABLE, slots__blue__image_id="sha256:" + "A" * 64), "state.json: field 'slots.blue.image_id' is "
     "\"sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA...; it must be an image ID such as 'sha256:' and "
     "64 lower-case hex digits, or left out"),
    (variant(STABLE, slots__blue__image_id="sha256:" + "a" * 63), "state.json: field 'slots.blue.image_id' is "
     "\"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...; it must be an image ID such as 'sha256:' and "
     "64 lower-case hex digits, or left out"),
    (variant(STABLE, slots__blue__image_id=None), "state.json: field 'slots.blue.image_id' is null; it must be an "
     "image ID such as 'sha256:' and 64 lower-case hex digits, or left out"),
    (variant(STABLE, slots__blue__image_id="sha256:" + "a" * 64 + "\n"), "state.json: field 'slots.blue.image_id' is "
     "\"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...; it must be an image ID such as 'sha256:' and "
     "64 lower-case hex digits, or left out"),
    (variant(STABLE, slots__blue__image="app;\n}\nserver {"), "state.json: field 'slots.blue.image' is "
     "\"app;\\n}\\nserver {\"; it must be a Docker image reference such as 'app:1.2.0'"),
    (variant(STABLE, slots__blue__image="app:1.0\n"), "state.json: field 'slots.blue.image' is \"app:1.0\\n\"; it "
     "must be a Docker image reference such as 'app:1.2.0'"),
    (variant(STABLE, slots__blue__version="1.0 ; x"), "state.json: field 'slots.blue.version' is \"1.0 ; x\"; it must "
     "be a version of letters, digits, '.', '_', '+' and '-' such as '1.2.0'"),
    (variant(STABLE, slots__blue__version="１.0"), "state.json: field 'slots.blue.version' is \"\\uff11.0\"; it must be "
     "a version of letters, digits, '.', '_', '+' and '-' such as '1.2.0'"),
    (variant(STABLE, slots__blue__mode="beta"), "state.json: field 'slots.blue.mode' is \"beta\"; it must be one of "
                                                "stable, canary"),
    (variant(STABLE, stable="green"), "state.json: field 'stable' is \"green\"; it must name a slot of 'slots' (blue)"),
    (variant(CANARY, canary="blue"), "state.json: field 'canary' is \"blue\"; it must be null or name the slot of "
                                     "'slots' that is not the stable one"),
    (variant(STABLE, canary="green"), "state.json: field 'canary' is \"green\"; it must be null or name the slot of "
                                      "'slots' that is not the stable one"),
    (variant(CANARY, weight=101), "state.json: field 'weight' is 101; it must be a whole percentage from 0 to 100"),
    (variant(CANARY, weight=10.5), "state.json: field 'weight' is 10.5; it must be a whole percentage from 0 to 100"),
    (variant(CANARY, weight="10; return 200"), "state.json: field 'weight' is \"10; return 200\"; it must be a whole "
                                               "percentage from 0 to 100"),
    (variant(STABLE, weight=5), "state.json: field 'weight' is 5; it must be 0 when there is no canary"),
    (variant(CANARY, weight=0), "state.json: field 'weight' is 0; a canary gets 1 to 100 percent of requests"),
    (variant(STABLE, slots={"blue": BLUE, "green": GREEN}), "state.json: field 'slots' is \"green\"; every slot is "
                                                            "the stable one or the canary; remove the other"),
])
def test_invalid_states_are_refused_naming_the_field(state, message):
    with pytest.raises(StateError) as caught:
        validate_state(state)
    assert str(caught.value) == message


@pytest.mark.parametrize("text, message", [
    ("{", "state.json: is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
          "restore it from a backup or remove it to start over"),
    ("null", "state.json: holds null, not a state object; restore it from a backup or remove it to start over"),
])
def test_unreadable_state_files_are_refused(text, message):
    with pytest.raises(StateError) as caught:
        parse_state(text)
    assert str(caught.value) == message


def test_no_file_is_no_state():
    assert parse_state(None) is None and parse_state("  \n") is None


# --------------------------------------------------------------------------------------------
# Transitions: (state, event) -> state
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("state, found, release, wanted", [
    (None, False, ("app:1.0.0", "1.0.0", "stable"), STABLE),
    (None, False, ("app:1.0.0", "1.0.0", "canary"), variant(STABLE, mode="canary", slots__blue__mode="canary")),
    (STABLE, True, ("app:1.0.0", "1.0.0", "stable"), STABLE),
    (STABLE, True, ("app:1.1.0", "1.1.0", "stable"), variant(STABLE, stable="green", slots={"green": NEXT})),
    (variant(STABLE, stable="green", slots={"green": BLUE}), True, ("app:1.1.0", "1.1.0", "stable"),
     variant(STABLE, slots={"blue": NEXT})),
    # The live mode is kept; the manifest's mode is the first deploy's only.
    (variant(STABLE, mode="canary", slots__blue__mode="canary"), True, ("app:1.1.0", "1.1.0", "stable"),
     variant(STABLE, stable="green", slots={"green": dict(NEXT, mode="canary")})),
    (CANARY, True, ("app:1.0.0", "1.0.0", "stable"), CANARY),
    (CANARY, True, ("app:1.2.0", "1.2.0", "stable"), {}),
])
def test_deploy(state, found, release, wanted):
    assert deploy_target(state, found, *release) == wanted


@pytest.mark.parametrize("state, release, weight, wanted", [
    (STABLE, ("app:1.1.0", "1.1.0"), 10, CANARY | {"generation": 1}),
    (CANARY, ("app:1.1.0", "1.1.0"), 50, CANARY | {"weight": 50}),
    (variant(STABLE, stable="green", slots={"green": BLUE}), ("app:1.1.0", "1.1.0"), 100,
     CANARY | {"generation": 1, "stable": "green", "canary": "blue", "weight": 100,
               "slots": {"green": BLUE, "blue": GREEN}}),
])
def test_canary(state, release, weight, wanted):
    assert canary_target(state, release[0], release[1], weight) == wanted


@pytest.mark.parametrize("state, release, weight, message", [
    (STABLE, ("app:1.1.0", "1.1.0"), 0, "weight: 0 is not a percentage; use a whole number from 1 to 100 (-e weight=10)."),
    (STABLE, ("app:1.1.0", "1.1.0"), 101, "weight: 101 is not a percentage; use a whole number from 1 to 100 "
                                          "(-e weight=10)."),
    (STABLE, ("app:1.1.0", "1.1.0"), "10", 'weight: "10" is not a percentage; use a whole number from 1 to 100 '
                                           '(-e weight=10).'),
    (CANARY, ("app:1.2.0", "1.2.0"), 10, "A canary of version 1.1.0 is already running; the manifest now names 1.2.0. "
                                         "End it first (promote.yml -e mode=stable or rollback.yml)."),
])
def test_canary_refusals(state, release, weight, message):
    with pytest.raises(TransitionError) as caught:
        canary_target(state, release[0], release[1], weight)
    assert str(caught.value) == message


ID_A, ID_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
LATEST = {"image": "app:latest", "version": "1.0.0", "mode": "stable", "image_id": ID_A}
ON_LATEST = variant(STABLE, slots={"blue": LATEST})


@pytest.mark.parametrize("state, found, release, wanted", [
    # A first deploy records the ID.
    (None, False, ("app:latest", "1.0.0", "stable", ID_A), ON_LATEST),
    # The same ID again: nothing to do.
    (ON_LATEST, True, ("app:latest", "1.0.0", "stable", ID_A), ON_LATEST),
    # A rebuilt tag (same name and version, new ID) is a new release, blue/green.
    (ON_LATEST, True, ("app:latest", "1.0.0", "stable", ID_B),
     variant(STABLE, stable="green", slots={"green": dict(LATEST, image_id=ID_B)})),
    # The ID unknown (the image not on the host yet, in check mode): judged by name and version.
    (ON_LATEST, True, ("app:latest", "1.0.0", "stable", None), ON_LATEST),
    # A slot started before IDs were recorded: redeployed once, so that what runs is known.
    (STABLE, True, ("app:1.0.0", "1.0.0", "stable", ID_A),
     variant(STABLE, stable="green", slots={"green": dict(BLUE, image_id=ID_A)})),
    (STABLE, True, ("app:1.0.0", "1.0.0", "stable", None), STABLE),
    # While a canary runs, a rebuilt stable tag waits for it like any new release.
    (variant(CANARY, slots__blue=LATEST, slots__blue__image="app:latest"), True, ("app:latest", "1.0.0", "stable", ID_B),
     {}),
])
def test_deploy_by_image_id(state, found, release, wanted):
    assert deploy_target(state, found, *release) == wanted
    if wanted:
        assert validate_state(wanted) is wanted


CANARY_ID = variant(CANARY, slots__green__image_id=ID_A)


@pytest.mark.parametrize("state, image_id, weight, wanted", [
    (STABLE, ID_A, 10, variant(CANARY_ID, generation=1)),
    # The same canary at another weight keeps its recorded ID.
    (CANARY_ID, ID_A, 50, variant(CANARY_ID, weight=50)),
    (CANARY_ID, None, 50, variant(CANARY_ID, weight=50)),
    # A canary started before IDs were recorded keeps its weight changes.
    (CANARY, ID_B, 30, variant(CANARY, weight=30)),
])
def test_canary_by_image_id(state, image_id, weight, wanted):
    assert canary_target(state, "app:1.1.0", "1.1.0", weight, image_id) == wanted


def test_a_rebuilt_canary_image_is_another_canary():
    with pytest.raises(TransitionError) as caught:
        canary_target(CANARY_ID, "app:1.1.0", "1.1.0", 10, ID_B)
    assert str(caught.value) == ("A canary of version 1.1.0 (image sha256:aaaaaaaaaaaa) is already running; the manifest "
                                 "now names 1.1.0 (image sha256:bbbbbbbbbbbb). End it first (promote.yml -e "
                                 "mode=stable or rollback.yml).")


@pytest.mark.parametrize("transition, slot", [(roll_forward, "green"), (roll_back, "blue")])
def test_ending_a_canary_keeps_the_image_ids(transition, slot):
    state = variant(CANARY_ID, slots__blue__image_id=ID_B)
    assert transition(state)["slots"][slot]["image_id"] == {"green": ID_A, "blue": ID_B}[slot]


def test_state_transition_filter_passes_the_image_id():
    assert state_transition(ON_LATEST, "deploy", image="app:latest", version="1.0.0", image_id=ID_B)["slots"] == \
        {"green": dict(LATEST, image_id=ID_B)}
    assert state_transition(ON_LATEST, "deploy", image="app:latest", version="1.0.0", image_id="") == ON_LATEST


def test_roll_forward_keeps_the_judged_slot():
    assert roll_forward(CANARY) == {"generation": 2, "mode": "stable", "weight": 0, "stable": "green", "canary": None,
                                    "slots": {"green": dict(GREEN, mode="stable")}}


def test_roll_back_keeps_the_stable_slot():
    assert roll_back(CANARY) == variant(STABLE, generation=2)


@pytest.mark.parametrize("transition", [roll_forward, roll_back])
def test_ending_a_canary_needs_one(transition):
    with pytest.raises(TransitionError, match="there is no canary to roll"):
        transition(STABLE)


def test_every_transition_leads_to_a_valid_state():
    for state in (deploy_target(STABLE, True, "app:1.1.0", "1.1.0"), canary_target(STABLE, "app:1.1.0", "1.1.0", 5),
                  roll_forward(CANARY), roll_back(CANARY), initial_state("app:1.0.0", "1.0.0")):
        validate_state(state)


@pytest.mark.parametrize("state, idle", [(STABLE, "green"), (variant(STABLE, stable="green", slots={"green": BLUE}),
                                                             "blue")])
def test_idle_slot(state, idle):
    assert idle_slot(state) == idle


@pytest.mark.parametrize("current, found, targets, generations", [
    (STABLE, False, [STABLE], [1]),
    (STABLE, True, [STABLE], [1]),
    (STABLE, True, [variant(STABLE, slots__blue__mode="canary", mode="canary")], [1]),  # routing unchanged
    (STABLE, True, [canary_target(STABLE, "app:1.1.0", "1.1.0", 10)], [2]),
    (CANARY, True, [CANARY | {"weight": 50}, roll_forward(CANARY)], [3, 4]),
    (CANARY, True, [roll_back(CANARY)], [3]),
])
def test_generations_move_only_when_routing_does(current, found, targets, generations):
    assert [state["generation"] for state in with_generations(current, found, targets)] == generations


# --------------------------------------------------------------------------------------------
# The filters the role uses
# --------------------------------------------------------------------------------------------

def test_live_state_filter_reads_or_starts_a_state():
    assert live_state(None, "app:1.0.0", "1.0.0") == {"state": STABLE, "found": False}
    assert live_state(json.dumps(CANARY), "app:9", "9") == {"state": CANARY, "found": True}


def test_live_state_filter_refuses_a_crafted_file_before_anything_is_rendered():
    crafted = json.dumps(variant(STABLE, slots__blue__image="x;\n} server { listen 9999; location / { return 200; }"))
    with pytest.raises(AnsibleFilterError) as caught:
        live_state(crafted, "app:1.0.0", "1.0.0", where="/srv/demo/state.json")
    assert str(caught.value).startswith("/srv/demo/state.json: field 'slots.blue.image' is ")
    assert str(caught.value).endswith("Nothing was changed or rendered.")


def test_state_transition_filter_applies_each_rule():
    assert state_transition(STABLE, "deploy", image="app:1.0.0", version="1.0.0") == STABLE
    assert state_transition(STABLE, "canary", image="app:1.1.0", version="1.1.0", weight=10)["canary"] == "green"
    assert state_transition(CANARY, "roll_forward")["stable"] == "green"
    assert state_transition(CANARY, "roll_back")["slots"] == {"blue": BLUE}
    with pytest.raises(AnsibleFilterError, match="event 'promote' is not one of deploy, canary, roll_forward, roll_back"):
        state_transition(STABLE, "promote")
    with pytest.raises(AnsibleFilterError, match="there is no canary to roll back"):
        state_transition(STABLE, "roll_back")


def test_state_generations_filter_validates_what_it_numbers():
    assert state_generations([roll_back(CANARY)], CANARY)[0]["generation"] == 3
    with pytest.raises(AnsibleFilterError, match="a wanted state: field 'weight' is 7"):
        state_generations([variant(STABLE, weight=7)], STABLE)
