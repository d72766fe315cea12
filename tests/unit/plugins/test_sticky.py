"""Sticky sessions' rules, as tables: the cookie's name, value and header (module_utils/_sticky.py),
each slot's release generation in the live state (_state.with_generations, the
state_generations filter) and the manifest's canary.sticky keys."""

from __future__ import annotations

import copy
import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.filter.nginx import sticky_routing as sticky_routing_filter
from ansible_collections.swiftdeploy.stack.plugins.filter.state import state_generations
from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import ManifestError, validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import (
    StateError,
    canary_target,
    deploy_target,
    initial_state,
    roll_back,
    roll_forward,
    validate_state,
    with_generations,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._sticky import (
    StickyError,
    cookie_name,
    release_value,
    set_cookie,
    slot_generation,
    sticky_routing,
)

BLUE = {"image": "app:1.0.0", "version": "1.0.0", "mode": "stable"}
GREEN = {"image": "app:1.1.0", "version": "1.1.0", "mode": "canary"}
CANARY = {"generation": 4, "mode": "canary", "weight": 10, "stable": "blue", "canary": "green",
          "slots": {"blue": BLUE, "green": GREEN}, "slot_generations": {"blue": 1, "green": 4}}
MINIMAL = {"services": {"image": "app:1", "port": 3000}, "nginx": {"image": "nginx:1", "port": 8080},
           "contact": "ops@example.com"}


def manifest(canary=None, **top):
    data = copy.deepcopy(MINIMAL)
    data.update(top)
    if canary is not None:
        data["canary"] = canary
    return validate_manifest(data)


# --------------------------------------------------------------------------------------------
# The cookie
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack, name", [
    ("shop", "swiftdeploy_release_shop"),
    ("shop-eu", "swiftdeploy_release_shop_eu"),
    ("a_1", "swiftdeploy_release_a_1"),
    ("x" * 63, "swiftdeploy_release_" + "x" * 63),
])
def test_the_cookie_is_named_after_the_stack(stack, name):
    assert cookie_name(stack) == name


@pytest.mark.parametrize("stack", ["", "Shop", "shop;x=1", "shop=1", "shop eu", "shop\r\nX: 1", "shöp", "$shop",
                                   None, 7, "x" * 80])
def test_a_name_that_is_not_a_token_names_no_cookie(stack):
    with pytest.raises(StickyError, match="^stack: .* cannot name a cookie; use a stack name of lower-case"):
        cookie_name(stack)


@pytest.mark.parametrize("slot, generation, value", [
    ("blue", 1, "blue.1"),
    ("green", 2 ** 53, "green.9007199254740992"),
])
def test_a_release_value_is_its_slot_and_generation(slot, generation, value):
    assert release_value(slot, generation) == value


@pytest.mark.parametrize("slot, generation, message", [
    ("red", 1, "slot: 'red' is not a slot"),
    ("blue;", 1, "slot: 'blue;' is not a slot"),
    ("blue", 0, "generation: 0 is not a routing generation"),
    ("blue", True, "generation: True is not a routing generation"),
    ("blue", "3", "generation: '3' is not a routing generation"),
    ("blue", 2 ** 53 + 1, "generation: 9007199254740993 is not a routing generation"),
])
def test_a_release_value_refuses_what_is_not_a_slot_or_generation(slot, generation, message):
    with pytest.raises(StickyError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        release_value(slot, generation)


@pytest.mark.parametrize("live, slot, generation", [
    (CANARY, "blue", 1),
    (CANARY, "green", 4),
    # A state written before sticky sessions were on: the release runs at the state's generation.
    (dict(CANARY, slot_generations={}), "blue", 4),
    ({k: v for k, v in CANARY.items() if k != "slot_generations"}, "green", 4),
])
def test_a_slots_generation_is_its_stamp_or_the_states(live, slot, generation):
    assert slot_generation(live, slot) == generation


@pytest.mark.parametrize("seconds, secure, header", [
    (3600, False, "n=blue.1; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600"),
    (60, True, "n=blue.1; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"),
    (604800, False, "n=blue.1; Path=/; HttpOnly; SameSite=Lax; Max-Age=604800"),
])
def test_the_header_carries_every_attribute(seconds, secure, header):
    assert set_cookie("n", "blue.1", seconds, secure) == header


@pytest.mark.parametrize("seconds", [None, 0, 59, 604801, True, "3600", 1.5])
def test_the_max_age_is_bounded(seconds):
    with pytest.raises(StickyError, match="^canary.sticky_max_age: .* is out of range; use a whole number of seconds"):
        set_cookie("n", "blue.1", seconds, False)


def test_the_routing_lists_one_value_per_live_slot():
    routes = sticky_routing(manifest({"sticky": True, "sticky_max_age": 600}, stack="shop-eu"), CANARY)
    assert routes == {"cookie": "swiftdeploy_release_shop_eu", "slots": [
        {"slot": "blue", "value": "blue.1",
         "set_cookie": "swiftdeploy_release_shop_eu=blue.1; Path=/; HttpOnly; SameSite=Lax; Max-Age=600"},
        {"slot": "green", "value": "green.4",
         "set_cookie": "swiftdeploy_release_shop_eu=green.4; Path=/; HttpOnly; SameSite=Lax; Max-Age=600"}]}


def test_the_cookie_is_secure_behind_https():
    stack = manifest({"sticky": True})
    stack["nginx"]["tls"]["enabled"] = True
    routes = sticky_routing(stack, CANARY)
    assert all(route["set_cookie"].endswith("; Max-Age=3600; Secure") for route in routes["slots"])


@pytest.mark.parametrize("live, message", [
    (dict(CANARY, slot_generations={"blue": 0, "green": 4}), "slot_generations.blue: 0 is not a routing generation"),
    ({"generation": 1, "slots": {"red": BLUE}}, "slot: 'red' is not a slot"),
    ({"slots": {"blue": BLUE}}, "'slots'"),
])
def test_the_filter_fails_naming_the_value(live, message):
    with pytest.raises(AnsibleFilterError, match="^sticky_routing: .*Nothing was rendered") as caught:
        sticky_routing_filter(manifest({"sticky": True}), live)
    assert message in str(caught.value) or message == "'slots'"


# --------------------------------------------------------------------------------------------
# Each slot's release generation in the live state
# --------------------------------------------------------------------------------------------


def stamps(states):
    return [(state["generation"], state["slot_generations"]) for state in states]


FIRST = initial_state("app:1.0.0", "1.0.0")
STABLE = with_generations(FIRST, False, [FIRST], sticky=True)[0]
CANARY_10 = with_generations(STABLE, True, [canary_target(STABLE, "app:1.1.0", "1.1.0", 10)], sticky=True)[0]
CANARY_25 = with_generations(CANARY_10, True, [canary_target(CANARY_10, "app:1.1.0", "1.1.0", 25)], sticky=True)[0]
FORWARD = with_generations(CANARY_25, True, [roll_forward(CANARY_25)], sticky=True)[0]
BACK = with_generations(CANARY_25, True, [roll_back(CANARY_25)], sticky=True)[0]
# The next canary lands in blue, the slot the first release left.
NEXT = with_generations(FORWARD, True, [canary_target(FORWARD, "app:1.2.0", "1.2.0", 10)], sticky=True)[0]


@pytest.mark.parametrize("state, generation, expected", [
    pytest.param(STABLE, 1, {"blue": 1}, id="first deploy"),
    pytest.param(CANARY_10, 2, {"blue": 1, "green": 2}, id="a canary starts: its release is new"),
    pytest.param(CANARY_25, 3, {"blue": 1, "green": 2}, id="a weight change keeps both releases"),
    pytest.param(FORWARD, 4, {"green": 2}, id="a roll forward keeps the canary's release"),
    pytest.param(BACK, 4, {"blue": 1}, id="a roll back keeps the stable release"),
    pytest.param(NEXT, 5, {"green": 2, "blue": 5}, id="a slot reused by another release is stamped anew"),
])
def test_each_slot_keeps_its_stamp_while_it_runs_the_same_release(state, generation, expected):
    assert (state["generation"], state["slot_generations"]) == (generation, expected)
    assert validate_state(state) is state


def test_a_stack_that_turns_sticky_on_stamps_its_slots_with_the_generation_they_run_at():
    plain = with_generations(FIRST, False, [FIRST])[0]
    canary = with_generations(plain, True, [canary_target(plain, "app:1.1.0", "1.1.0", 10)])[0]
    assert "slot_generations" not in canary
    assert stamps(with_generations(canary, True, [dict(canary)], sticky=True)) == [(2, {"blue": 2, "green": 2})]
    assert stamps(with_generations(canary, True, [roll_forward(canary)], sticky=True)) == [(3, {"green": 3})]


def test_without_sticky_no_state_is_stamped_and_stamps_are_dropped():
    assert with_generations(CANARY_10, True, [canary_target(CANARY_10, "app:1.1.0", "1.1.0", 25)]) == [
        {k: v for k, v in CANARY_25.items() if k != "slot_generations"}]


def test_a_slot_whose_release_changes_in_place_is_a_new_generation_only_when_sticky():
    # No transition does this (a release goes to the idle slot), but a hand-made target may.
    other = dict(CANARY_10, slots=dict(CANARY_10["slots"], green=dict(GREEN, version="1.1.1")))
    assert stamps(with_generations(CANARY_10, True, [other], sticky=True)) == [(3, {"blue": 1, "green": 3})]
    assert [state["generation"] for state in with_generations(CANARY_10, True, [other])] == [2]


def test_a_deploy_through_two_states_stamps_the_new_release_once():
    deploy = deploy_target(STABLE, True, "app:2.0.0", "2.0.0")
    both = dict(deploy, slots=dict(STABLE["slots"], **deploy["slots"]), stable="blue", canary=None)
    lives = with_generations(STABLE, True, [both, deploy], sticky=True)
    assert stamps(lives) == [(2, {"blue": 1, "green": 2}), (3, {"green": 2})]


def test_the_filter_restamps_a_target_that_carries_the_live_states_stamps():
    # A transition copies the live state's slot_generations; the canary's slot is not in them.
    target = canary_target(STABLE, "app:1.1.0", "1.1.0", 10)
    assert target["slot_generations"] == {"blue": 1}
    lives = state_generations([target], STABLE, sticky=True)
    assert stamps(lives) == [(2, {"blue": 1, "green": 2})]
    assert "slot_generations" not in state_generations([target], STABLE)[0]


@pytest.mark.parametrize("stamps_value, message", [
    ({"blue": 1}, "field 'slot_generations' is \"for blue\"; it must map each slot of 'slots' (blue, green) to the "
                  "generation its release was first routed at; remove it to stamp them again"),
    ({"blue": 1, "green": 4, "red": 1}, "field 'slot_generations' is \"for blue, green, red\"; it must map"),
    ({}, "field 'slot_generations' is \"for no slot\""),
    ([1, 4], "field 'slot_generations' is list; it must map"),
    ({"blue": 0, "green": 4}, "field 'slot_generations.blue' is 0; it must be a whole number from 1 to the state's "
                              "generation (4)"),
    ({"blue": 1, "green": 5}, "field 'slot_generations.green' is 5;"),
    ({"blue": True, "green": 4}, "field 'slot_generations.blue' is true;"),
    ({"blue": "1", "green": 4}, "field 'slot_generations.blue' is \"1\";"),
])
def test_a_state_with_wrong_stamps_is_refused_naming_the_field(stamps_value, message):
    with pytest.raises(StateError) as caught:
        validate_state(dict(CANARY, slot_generations=stamps_value))
    assert message in str(caught.value)


def test_stamps_survive_state_json():
    assert validate_state(json.loads(json.dumps(CANARY))) == CANARY


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("canary, sticky, max_age", [
    (None, False, 3600),
    ({"sticky": True}, True, 3600),
    ({"sticky": True, "sticky_max_age": 60}, True, 60),
    ({"sticky": True, "sticky_max_age": 604800}, True, 604800),
])
def test_manifest_sticky_defaults(canary, sticky, max_age):
    validated = manifest(canary)["canary"]
    assert (validated["sticky"], validated["sticky_max_age"]) == (sticky, max_age)


@pytest.mark.parametrize("canary, message", [
    ({"sticky": "yes"}, "manifest field 'canary.sticky': 'yes' is string, expected true or false."),
    ({"sticky": 1}, "manifest field 'canary.sticky': 1 is integer, expected true or false."),
    ({"sticky": True, "sticky_max_age": 59}, "manifest field 'canary.sticky_max_age': 59 is out of range; use how long "
                                             "a client keeps its release, a whole number of seconds from 60 to 604800 "
                                             "(a week)."),
    ({"sticky": True, "sticky_max_age": 604801}, "manifest field 'canary.sticky_max_age': 604801 is out of range;"),
    ({"sticky": True, "sticky_max_age": "1h"}, "manifest field 'canary.sticky_max_age': '1h' is string, expected a "
                                               "whole number; use how long a client keeps its release"),
    ({"sticky_max_age": 600}, "manifest field 'canary.sticky_max_age': 600 is set but canary.sticky is false, so it "
                              "would be ignored; set canary.sticky: true for sticky sessions, or remove it."),
    ({"stiky": True}, "manifest field 'canary.stiky': unknown key; did you mean 'canary.sticky'?"),
])
def test_manifest_sticky_errors_name_field_value_and_fix(canary, message):
    with pytest.raises(ManifestError) as caught:
        manifest(canary)
    assert any(error.startswith(message) for error in caught.value.errors), caught.value.errors
