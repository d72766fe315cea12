"""The rules of a stack's live state: validation of state.json and every transition, as tables."""

from __future__ import annotations

import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.filter.state import (
    live_state,
    state_generations,
    state_rollback,
    state_transition,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._releases import remember
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
    rollback_target,
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
                               "weight, stable, canary, slots, releases, slot_generations, baseline); remove it"),
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
                                            "(image, version, mode, secrets, image_id); remove it"),
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
    image, version, mode, image_id = release
    assert deploy_target(state, found, image, version, mode, image_id=image_id) == wanted
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
    assert canary_target(state, "app:1.1.0", "1.1.0", weight, image_id=image_id) == wanted


def test_a_rebuilt_canary_image_is_another_canary():
    with pytest.raises(TransitionError) as caught:
        canary_target(CANARY_ID, "app:1.1.0", "1.1.0", 10, image_id=ID_B)
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


# --------------------------------------------------------------------------------------------
# Releases: recorded when a release becomes stable, kept to N, brought back through the idle slot
# --------------------------------------------------------------------------------------------

AT1, AT2, AT3 = "2026-12-07T10:00:00Z", "2026-12-07T11:00:00Z", "2026-12-07T12:00:00Z"
R100 = {"image": "app:1.0.0", "version": "1.0.0", "stable_at": AT1, "by": "alice"}
R110 = {"image": "app:1.1.0", "version": "1.1.0", "stable_at": AT2, "by": "bob (AWX job 42)"}
ID = "sha256:" + "a" * 64
# Deployed 1.0.0, rolled forward to 1.1.0 (green): 1.0.0 is the previous release.
FORWARD = {"generation": 3, "mode": "stable", "weight": 0, "stable": "green", "canary": None,
           "slots": {"green": NEXT}, "releases": [R100, R110]}


def stamp(at, by="carol"):
    return {"at": at, "by": by}


@pytest.mark.parametrize("state", [
    variant(STABLE, releases=[]),
    variant(STABLE, releases=[R100]),
    FORWARD,
    variant(FORWARD, releases=[dict(R100, image_id=ID, config_hash="sha256:" + "0" * 64), R110]),
])
def test_valid_release_records_pass(state):
    assert validate_state(state) is state


@pytest.mark.parametrize("releases, message", [
    ({}, "state.json: field 'releases' is dict; it must be a list of releases (image, version, stable_at, by)"),
    ([R100] * 51, "state.json: field 'releases' is \"51 releases\"; at most 50 are kept; remove the oldest"),
    (["1.0.0"], "state.json: field 'releases[0]' is \"1.0.0\"; a release holds image, version, stable_at and by"),
    ([dict(R100, mode="stable")], "state.json: field 'releases[0].mode' is \"stable\"; it is not a field of a release "
                                  "(image, version, stable_at, by, image_id, config_hash); remove it"),
    ([variant(R100, by=KeyError)], "state.json: field 'releases[0].by' is missing; restore the file or remove the release"),
    ([dict(R100, image="x;} server {")], "state.json: field 'releases[0].image' is \"x;} server {\"; it must be a "
                                         "Docker image reference such as 'app:1.2.0'"),
    ([R100, dict(R110, version="1.1 ")], "state.json: field 'releases[1].version' is \"1.1 \"; it must be a version "
                                         "of letters, digits, '.', '_', '+' and '-' such as '1.2.0'"),
    ([dict(R100, stable_at="yesterday")], "state.json: field 'releases[0].stable_at' is \"yesterday\"; it must be a "
                                          "UTC time such as '2026-12-07T11:34:56Z'"),
    ([dict(R100, by="eve\nroot")], "state.json: field 'releases[0].by' is \"eve\\nroot\"; it must name who made the "
                                   "release stable, in at most 128 printable characters"),
    ([dict(R100, image_id="sha256:ABC")], "state.json: field 'releases[0].image_id' is \"sha256:ABC\"; it must be an "
                                          "image ID such as 'sha256:' and 64 lower-case hex digits, or absent"),
    ([dict(R100, image_id=None)], "state.json: field 'releases[0].image_id' is null; it must be an image ID such as "
                                  "'sha256:' and 64 lower-case hex digits, or absent"),
    ([dict(R100, config_hash="$(id)")], "state.json: field 'releases[0].config_hash' is \"$(id)\"; it must be a hash "
                                        "of letters, digits, ':', '.', '_' and '-' (at most 100), or absent"),
])
def test_bad_release_records_are_refused_naming_the_field(releases, message):
    with pytest.raises(StateError) as caught:
        validate_state(variant(STABLE, releases=releases))
    assert str(caught.value) == message


@pytest.mark.parametrize("state, event, wanted", [
    # A first deploy records its release.
    (None, lambda s: deploy_target(s, False, "app:1.0.0", "1.0.0", stamp=stamp(AT1, "alice")),
     variant(STABLE, releases=[R100])),
    # A no-op deploy records nothing (the state, hence state.json, stays as it is).
    (variant(STABLE, releases=[R100]), lambda s: deploy_target(s, True, "app:1.0.0", "1.0.0", stamp=stamp(AT3)),
     variant(STABLE, releases=[R100])),
    # A new stable release on the idle slot is recorded last.
    (variant(STABLE, releases=[R100]), lambda s: deploy_target(s, True, "app:1.1.0", "1.1.0", stamp=stamp(AT2, "bob (AWX job 42)")),
     variant(STABLE, stable="green", slots={"green": NEXT}, releases=[R100, R110])),
    # A canary and a canary dropped record nothing.
    (variant(STABLE, releases=[R100]), lambda s: canary_target(s, "app:1.1.0", "1.1.0", 10),
     variant(CANARY, generation=1, releases=[R100])),
    (variant(CANARY, releases=[R100]), roll_back, variant(STABLE, generation=2, releases=[R100])),
    # A roll forward records the judged release.
    (variant(CANARY, releases=[R100]), lambda s: roll_forward(s, stamp(AT2, "bob (AWX job 42)")),
     variant(FORWARD, generation=2)),
    # Without a stamp nothing is recorded (and a state without releases gets none).
    (CANARY, roll_forward, {"generation": 2, "mode": "stable", "weight": 0, "stable": "green", "canary": None,
                            "slots": {"green": dict(GREEN, mode="stable")}}),
    # A release stable again moves to the end with its new time and actor, not twice in the list.
    (variant(CANARY, releases=[R100, R110]), lambda s: roll_forward(s, stamp(AT3)),
     variant(FORWARD, generation=2, releases=[R100, dict(R110, stable_at=AT3, by="carol")])),
])
def test_releases_are_recorded_when_a_release_becomes_stable(state, event, wanted):
    assert event(state) == wanted
    validate_state(wanted)


@pytest.mark.parametrize("releases, spec, wanted", [
    # The same image and version from another image ID (a rebuilt tag) is another release.
    ([dict(R100, image_id=ID)], dict(BLUE, image_id="sha256:" + "b" * 64),
     [dict(R100, image_id=ID), dict(R100, image_id="sha256:" + "b" * 64, stable_at=AT3, by="carol")]),
    # The same image ID again replaces its record; a config hash is kept with it but is no identity.
    ([dict(R100, image_id=ID, config_hash="h1"), R110], dict(BLUE, image_id=ID, config_hash="h2"),
     [R110, dict(R100, image_id=ID, config_hash="h2", stable_at=AT3, by="carol")]),
    (None, BLUE, [dict(R100, stable_at=AT3, by="carol")]),
])
def test_a_release_is_the_same_one_by_image_version_and_image_id(releases, spec, wanted):
    assert remember(releases, spec, stamp(AT3)) == wanted


@pytest.mark.parametrize("keep, before, kept", [
    (5, ["1", "2", "3"], ["1", "2", "3", "new"]),
    (3, ["1", "2", "3"], ["2", "3", "new"]),
    (1, ["1", "2", "3"], ["new"]),
    (2, ["new", "1"], ["1", "new"]),
])
def test_releases_are_trimmed_to_the_most_recent_n(keep, before, kept):
    releases = [dict(R100, version=version, image="app:" + version) for version in before]
    state = variant(STABLE, releases=releases)
    after = deploy_target(state, True, "app:new", "new", stamp=stamp(AT3), keep=keep)
    assert [record["version"] for record in after["releases"]] == kept
    assert after["releases"][-1] == {"image": "app:new", "version": "new", "stable_at": AT3, "by": "carol"}


@pytest.mark.parametrize("keep", [0, 51, "5", True, None])
def test_a_bad_keep_count_is_refused_naming_the_variable(keep):
    with pytest.raises(TransitionError, match="swiftdeploy_releases_kept: .* is not a number of releases; use a whole "
                                              "number from 1 to 50"):
        deploy_target(STABLE, True, "app:1.1.0", "1.1.0", stamp=stamp(AT3), keep=keep)


@pytest.mark.parametrize("state, to, version, chosen, wanted", [
    # Back to the previous release, on the idle slot (blue), recorded as the latest again.
    (FORWARD, "previous", None, R100,
     variant(FORWARD, stable="blue", slots={"blue": BLUE}, releases=[R110, dict(R100, stable_at=AT3, by="carol")])),
    (FORWARD, None, "1.0.0", R100,
     variant(FORWARD, stable="blue", slots={"blue": BLUE}, releases=[R110, dict(R100, stable_at=AT3, by="carol")])),
    # "previous" twice goes back and forth, like `cd -`.
    (variant(FORWARD, stable="blue", slots={"blue": BLUE}, releases=[R110, R100]), "previous", None, R110,
     variant(FORWARD, stable="green", slots={"green": NEXT}, releases=[R100, dict(R110, stable_at=AT3, by="carol")])),
    # The image ID of the release is what runs again.
    (variant(FORWARD, releases=[dict(R100, image_id=ID), R110]), "previous", None, dict(R100, image_id=ID),
     variant(FORWARD, stable="blue", slots={"blue": dict(BLUE, image_id=ID)},
             releases=[R110, dict(R100, image_id=ID, stable_at=AT3, by="carol")])),
    # The stable release already: nothing to do, the same state.
    (FORWARD, None, "1.1.0", None, FORWARD),
    # The most recent of a version kept twice.
    (variant(FORWARD, releases=[dict(R100, image="app:old"), R100, R110]), None, "1.0.0", R100,
     variant(FORWARD, stable="blue", slots={"blue": BLUE},
             releases=[dict(R100, image="app:old"), R110, dict(R100, stable_at=AT3, by="carol")])),
])
def test_rollback_to_a_kept_release(state, to, version, chosen, wanted):
    release, target = rollback_target(state, to, version, stamp(AT3))
    assert release == chosen
    assert target == wanted


@pytest.mark.parametrize("state, to, version, message", [
    (FORWARD, None, "0.9.0", "rollback: version \"0.9.0\" is not among the kept releases; kept: 1.1.0 (app:1.1.0, "
                             "stable since 2026-12-07T11:00:00Z), 1.0.0 (app:1.0.0, stable since 2026-12-07T10:00:00Z); "
                             "use -e version= with one of them"),
    (STABLE, None, "0.9.0", "rollback: version \"0.9.0\" is not among the kept releases (none is kept yet); use "
                            "-e version= with one of them"),
    (variant(STABLE, releases=[R100]), "previous", None,
     "rollback: nothing to go back to: the state keeps no release other than the current one (1.0.0); kept: 1.0.0 "
     "(app:1.0.0, stable since 2026-12-07T10:00:00Z). Releases are kept from the first deploy or roll forward that "
     "makes each one stable; deploy an earlier version with deploy.yml instead."),
    (STABLE, "previous", None,
     "rollback: nothing to go back to: the state keeps no release other than the current one (1.0.0). Releases are "
     "kept from the first deploy or roll forward that makes each one stable; deploy an earlier version with "
     "deploy.yml instead."),
    (FORWARD, "first", None, "rollback: to=\"first\" is not a target; use -e to=previous, or -e version=X for a kept "
                             "release; kept: 1.1.0 (app:1.1.0, stable since 2026-12-07T11:00:00Z), 1.0.0 (app:1.0.0, "
                             "stable since 2026-12-07T10:00:00Z)"),
    (FORWARD, "previous", "1.0.0", "rollback: give either -e to=previous or -e version=X, not both "
                                   "(to=\"previous\", version=\"1.0.0\")"),
    (variant(CANARY, releases=[R100]), "previous", None,
     "rollback: a canary of version 1.1.0 is running (slot green, 10% of requests); end it first with promote.yml "
     "-e mode=stable (judge it) or rollback.yml without to or version (drop it), then roll back to an earlier release"),
])
def test_rollback_refusals_say_what_is_kept(state, to, version, message):
    with pytest.raises(TransitionError) as caught:
        rollback_target(state, to, version, stamp(AT3))
    assert str(caught.value) == message


def test_state_rollback_filter_names_the_releases_and_the_target():
    plan = state_rollback(FORWARD, to="previous", stamp=stamp(AT3), keep="5")
    assert plan["release"] == R100 and plan["from"] == NEXT and plan["state"]["slots"] == {"blue": BLUE}
    # A version given as a number (-e '{"version": 1.1}') is read as its text.
    assert state_rollback(variant(FORWARD, releases=[dict(R100, version="1.1")]), version=1.1)["release"]["version"] == "1.1"
    with pytest.raises(AnsibleFilterError, match="is not among the kept releases"):
        state_rollback(FORWARD, version="2.0.0")
    with pytest.raises(AnsibleFilterError, match="field 'releases' is dict"):
        state_rollback(variant(FORWARD, releases={}), to="previous")


def test_state_transition_filter_records_releases_with_a_stamp():
    state = state_transition(variant(CANARY, releases=[R100]), "roll_forward", stamp=stamp(AT2, "bob (AWX job 42)"),
                             keep="5")
    assert state["releases"] == [R100, R110]
    assert state_generations([state], CANARY)[0]["releases"] == [R100, R110]


# -- check mode's plan (converge_plan filter, _status.planned_lines) ----------------------------

PLAN_ACTIONS = [
    {"step": 1, "action": "plan", "detail": "docker-compose.yml, state.json differ; slots added: green"},
    {"step": 1, "action": "compose ps", "detail": "app-blue running, nginx running"},
    {"step": 1, "action": "write", "detail": "docker-compose.yml, state.json (check mode: not run)"},
    {"step": 1, "action": "start slots", "detail": "app-green (check mode: not run)"},
    {"step": None, "action": "wait health", "detail": "http://127.0.0.1:8080/healthz (check mode: not run)"},
]


@pytest.mark.parametrize("actions, expected", [
    (PLAN_ACTIONS, ["Check mode: nothing was changed; a real run would:",
                    "  1. write (state 1): docker-compose.yml, state.json",
                    "  2. start slots (state 1): app-green",
                    "  3. wait health: http://127.0.0.1:8080/healthz"]),
    (PLAN_ACTIONS[:2], []),
    ([], []),
    (None, []),
])
def test_check_modes_plan_lists_what_it_did_not_run(actions, expected):
    from ansible_collections.swiftdeploy.stack.plugins.module_utils._status import planned_lines
    assert planned_lines(actions) == expected


# -- releases of a service with secrets --------------------------------------------------------

SECRETS_A = "a" * 64
SECRETS_B = "b" * 64


def test_a_release_records_its_secrets_by_their_keyed_hash_and_comes_back_with_todays():
    stamp = {"at": "2026-12-07T10:00:00Z", "by": "ops"}
    first = deploy_target(None, False, "shop:1", "1.0.0", stamp=stamp, secrets=SECRETS_A)
    assert first["releases"] == [dict(image="shop:1", version="1.0.0", stable_at=stamp["at"], by="ops",
                                      config_hash=SECRETS_A)]
    second = deploy_target(first, True, "shop:2", "2.0.0", stamp=stamp, secrets=SECRETS_B)
    record, back = rollback_target(second, to="previous", stamp=stamp)
    assert record["version"] == "1.0.0" and record["config_hash"] == SECRETS_A
    # The old release's image and version, today's secrets (their directory is the one written).
    assert back["slots"][back["stable"]] == {"image": "shop:1", "version": "1.0.0", "mode": "stable",
                                             "secrets": SECRETS_B}
