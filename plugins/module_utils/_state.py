# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The live state of a stack and the rules that move it: pure functions over a validated state.

This is a private module_utils file: its API may change without notice. No Ansible imports, no
I/O, so the unit tests drive every rule as a table of (state, event) -> state.

The live state (state.json on the managed host) says which app slots run (blue, green), what
each runs (image, version, mode), which slot is stable, which is the canary and its weight, and
the routing generation nginx serves. Everything rendered into nginx.conf and docker-compose.yml
comes from it, so a state read from disk is validated first (`validate_state`): a hand-edited
or corrupted file is refused with a message naming the field, and nothing is rendered from it.

The transitions:
  deploy_target   a deploy: the first one, a no-op, or a new stable release on the idle slot
  canary_target   start a canary on the idle slot, or change a running canary's weight
  roll_forward    the judged canary becomes the stable release in place
  roll_back       all traffic back to the stable slot, the canary gone (and its fresh baseline)
  rollback_target a kept release (_releases.py) stable again, through the idle slot
  with_generations   number the states a converge goes through (routing generations) and, for
                     sticky sessions, stamp each slot with the generation its release arrived at
"""

from __future__ import annotations

import json
import re

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import _IMAGE_RE, _VERSION_RE
from ansible_collections.swiftdeploy.stack.plugins.module_utils._releases import (
    DEFAULT_KEEP,
    ReleaseError,
    pick,
    remember,
    slot_spec,
    validate_releases,
)

SLOTS = ("blue", "green")
# analysis.baseline: fresh (docs/auto-rollout.md): a third slot runs the stable slot's very release
# beside the canary, at the canary's weight (the stable slot gets 100 - 2 x weight). It is never a
# blue/green slot: it never becomes stable, and it leaves with the canary.
BASELINE_SLOT = "baseline"
MAX_BASELINE_WEIGHT = 50
MODES = ("stable", "canary")
STATE_KEYS = ("generation", "mode", "weight", "stable", "canary", "slots")
SLOT_KEYS = ("image", "version", "mode")
# Kept by stacks deployed since releases are recorded (_releases.py); older states lack it.
# slot_generations: with sticky sessions (canary.sticky), the generation at which each slot's
# release was first routed; a sticky cookie names a release by it (_sticky.py).
# baseline: the fresh baseline's slot (BASELINE_SLOT) while one runs; absent or null otherwise.
OPTIONAL_STATE_KEYS = ("releases", "slot_generations", "baseline")
# Optional in a slot: the keyed hash (HMAC-SHA256, stack_secrets) of a service's secrets, never a
# value (it names the slot's secrets directory, and a new hash is a new release); the ID of the
# image the slot was started from (absent: not recorded).
OPTIONAL_SLOT_KEYS = ("secrets", "image_id")
SECRETS_DIGEST_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
IMAGE_ID_RE = re.compile(r"sha256:[0-9a-f]{64}")
# The manifest's own rules for an image and a version, matched whole and ASCII only: the state is
# rendered into nginx.conf and docker-compose.yml.
IMAGE_RE = _IMAGE_RE
VERSION_RE = _VERSION_RE
MAX_GENERATION = 2 ** 53


class StateError(ValueError):
    """A state that cannot be used; the message names the field and the fix."""


def _show(value):
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where, field, value, fix):
    raise StateError("%s: field '%s' is %s; %s" % (where, field, _show(value), fix))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def validate_state(state, where="state.json"):
    """The state, checked: every key known and of its type, the slots blue/green with a valid
    image, version and mode, stable and canary naming slots that exist, the weight 0 without a
    canary and 1-100 with one. StateError names the first field that is wrong."""
    if not isinstance(state, dict):
        raise StateError("%s: holds %s, not a state object; restore it from a backup or remove it to start over"
                         % (where, _show(state)))
    for key in state:
        if key not in STATE_KEYS + OPTIONAL_STATE_KEYS:
            _fail(where, key, state[key], "it is not a field of the state (%s); remove it"
                  % ", ".join(STATE_KEYS + OPTIONAL_STATE_KEYS))
    for key in STATE_KEYS:
        if key not in state:
            raise StateError("%s: field '%s' is missing; restore the file or remove it to start over" % (where, key))
    if not _is_int(state["generation"]) or not 1 <= state["generation"] <= MAX_GENERATION:
        _fail(where, "generation", state["generation"], "it must be a whole number of 1 or more")
    if state["mode"] not in MODES:
        _fail(where, "mode", state["mode"], "it must be one of %s" % ", ".join(MODES))
    if state.get("baseline") not in (None, BASELINE_SLOT):
        _fail(where, "baseline", state["baseline"], "it must be null or '%s' (the fresh baseline's slot)" % BASELINE_SLOT)
    slots = state["slots"]
    if not isinstance(slots, dict) or not slots:
        _fail(where, "slots", slots, "it must map the slots %s to what runs in them" % " and ".join(SLOTS))
    for slot, spec in slots.items():
        if slot not in SLOTS and not (slot == BASELINE_SLOT and state.get("baseline") == BASELINE_SLOT):
            _fail(where, "slots", slot, "a slot is named %s" % " or ".join(SLOTS))
        _validate_slot(where, "slots.%s" % slot, spec)
    if state["stable"] not in slots:
        _fail(where, "stable", state["stable"], "it must name a slot of 'slots' (%s)" % ", ".join(sorted(slots)))
    canary = state["canary"]
    if canary is not None and (canary not in slots or canary == state["stable"]):
        _fail(where, "canary", canary, "it must be null or name the slot of 'slots' that is not the stable one")
    weight = state["weight"]
    if not _is_int(weight) or not 0 <= weight <= 100:
        _fail(where, "weight", weight, "it must be a whole percentage from 0 to 100")
    if canary is None and weight != 0:
        _fail(where, "weight", weight, "it must be 0 when there is no canary")
    if canary is not None and weight == 0:
        _fail(where, "weight", weight, "a canary gets 1 to 100 percent of requests")
    extra = sorted(set(slots) - {state["stable"], canary, state.get("baseline")})
    if extra:
        _fail(where, "slots", extra[0], "every slot is the stable one or the canary; remove the other")
    if state.get("baseline") is not None:
        _validate_baseline(where, state)
    if "releases" in state:
        try:
            validate_releases(state["releases"], where)
        except ReleaseError as exc:
            raise StateError(str(exc))
    if "slot_generations" in state:
        _validate_slot_generations(where, state)
    return state


def _validate_baseline(where, state):
    """A fresh baseline: only beside a canary, at most MAX_BASELINE_WEIGHT percent (it takes its
    share from the stable slot, as the canary does), running exactly the stable slot's release."""
    baseline = state["baseline"]
    if state["canary"] is None:
        _fail(where, "baseline", baseline, "a fresh baseline runs only beside a canary; set it to null")
    if BASELINE_SLOT not in state["slots"]:
        _fail(where, "baseline", baseline, "'slots' has no '%s' slot; add it or set 'baseline' to null" % BASELINE_SLOT)
    if state["weight"] > MAX_BASELINE_WEIGHT:
        _fail(where, "weight", state["weight"], "with a fresh baseline the canary and the baseline get the weight "
              "each, so it must be at most %d" % MAX_BASELINE_WEIGHT)
    if state["slots"][BASELINE_SLOT] != state["slots"][state["stable"]]:
        _fail(where, "slots.%s" % BASELINE_SLOT, "another release",
              "the fresh baseline runs the stable slot's release (%s) with the same fields; set it to slots.%s"
              % (state["slots"][state["stable"]]["version"], state["stable"]))


def _validate_slot_generations(where, state):
    stamps = state["slot_generations"]
    if not isinstance(stamps, dict) or sorted(stamps) != sorted(state["slots"]):
        shown = "for %s" % (", ".join(sorted(str(slot) for slot in stamps)) or "no slot") if isinstance(stamps, dict) \
            else stamps
        _fail(where, "slot_generations", shown, "it must map each slot of 'slots' (%s) to the generation its "
              "release was first routed at; remove it to stamp them again" % ", ".join(sorted(state["slots"])))
    for slot, stamp in stamps.items():
        if not _is_int(stamp) or not 1 <= stamp <= state["generation"]:
            _fail(where, "slot_generations.%s" % slot, stamp,
                  "it must be a whole number from 1 to the state's generation (%d)" % state["generation"])


def _validate_slot(where, path, spec):
    if not isinstance(spec, dict):
        _fail(where, path, spec, "it must hold image, version and mode")
    for key in spec:
        if key not in SLOT_KEYS + OPTIONAL_SLOT_KEYS:
            _fail(where, "%s.%s" % (path, key), spec[key], "it is not a field of a slot (%s); remove it"
                  % ", ".join(SLOT_KEYS + OPTIONAL_SLOT_KEYS))
    for key in SLOT_KEYS:
        if key not in spec:
            raise StateError("%s: field '%s.%s' is missing; restore the file or remove it to start over"
                             % (where, path, key))
    if not isinstance(spec["image"], str) or not IMAGE_RE.fullmatch(spec["image"]):
        _fail(where, path + ".image", spec["image"], "it must be a Docker image reference such as 'app:1.2.0'")
    if not isinstance(spec["version"], str) or not VERSION_RE.fullmatch(spec["version"]):
        _fail(where, path + ".version", spec["version"],
              "it must be a version of letters, digits, '.', '_', '+' and '-' such as '1.2.0'")
    if spec["mode"] not in MODES:
        _fail(where, path + ".mode", spec["mode"], "it must be one of %s" % ", ".join(MODES))
    if "secrets" in spec and not (isinstance(spec["secrets"], str) and SECRETS_DIGEST_RE.fullmatch(spec["secrets"])):
        _fail(where, path + ".secrets", spec["secrets"], "it must be the 64 hex digits of the secrets' keyed hash")
    if "image_id" in spec and not (isinstance(spec["image_id"], str) and IMAGE_ID_RE.fullmatch(spec["image_id"])):
        _fail(where, path + ".image_id", spec["image_id"],
              "it must be an image ID such as 'sha256:' and 64 lower-case hex digits, or left out")


def parse_state(text, where="state.json"):
    """The validated state in a state.json's text; None for no file (None or empty text)."""
    if text is None or not text.strip():
        return None
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise StateError("%s: is not valid JSON (%s); restore it from a backup or remove it to start over"
                         % (where, exc))
    return validate_state(state, where)


# --------------------------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------------------------


def release_spec(image, version, mode, secrets=None, image_id=None):
    """A slot's spec; `secrets` (the secrets' keyed hash) only for a service that has secrets,
    image_id (the image's ID on the host) only when it is known."""
    spec = {"image": image, "version": version, "mode": mode}
    if secrets:
        spec["secrets"] = secrets
    if image_id:
        spec["image_id"] = image_id
    return spec


def same_release(spec, image, version, image_id=None, secrets=None):
    """Whether a slot runs image/version with these secrets: the same reference, version and
    secrets' keyed hash, and, when the image's ID on the host is known, that very ID (a rebuilt
    `latest` is another release). A slot whose ID was not recorded (a stack deployed before IDs
    were) counts as another release once the ID is known, so that what runs is known from then on."""
    if spec["image"] != image or spec["version"] != version or spec.get("secrets") != (secrets or None):
        return False
    return not image_id or spec.get("image_id") == image_id


def initial_state(image, version, mode="stable", secrets=None, image_id=None):
    """The state of a stack's first deploy: one stable slot, blue."""
    return {"generation": 1, "mode": mode, "weight": 0, "stable": "blue", "canary": None,
            "slots": {"blue": release_spec(image, version, mode, secrets, image_id)}}


def with_release(state, stamp, keep=DEFAULT_KEEP):
    """state with its stable slot's release recorded as the latest (_releases.remember); the
    same state when stamp is None. stamp: {at, by}."""
    if stamp is None:
        return state
    try:
        releases = remember(state.get("releases"), state["slots"][state["stable"]], stamp, keep)
    except ReleaseError as exc:
        raise TransitionError(str(exc))
    return dict(state, releases=releases)


def idle_slot(state):
    """The slot colour the stable release is not in."""
    return "green" if state["stable"] == "blue" else "blue"


def deploy_target(state, found, image, version, mode="stable", stamp=None, keep=DEFAULT_KEEP, secrets=None,
                  image_id=None):
    """The state a deploy of image/version (image_id: its ID on the host, when known) wants, or
    {} when a canary blocks it.

    A first deploy gets the initial state; a live stack keeps its state unless the release
    differs (same_release: image, version, secrets' keyed hash, image ID), which goes to the
    idle slot (blue/green) in the live mode and replaces the old slot once healthy. While a
    canary runs, a new stable release is refused: {} (not None, which ansible-core 2.16 would
    turn into the string "None" in a template). A new stable release is recorded among the
    releases with stamp (none recorded without one)."""
    if not found:
        return with_release(initial_state(image, version, mode, secrets, image_id), stamp, keep)
    current = state["slots"][state["stable"]]
    if same_release(current, image, version, image_id, secrets):
        return dict(state)
    if state["canary"] is not None:
        return {}
    idle = idle_slot(state)
    return with_release(dict(state, stable=idle, canary=None, weight=0, mode="stable",
                             slots={idle: release_spec(image, version, current["mode"], secrets, image_id)}),
                        stamp, keep)


class TransitionError(ValueError):
    """A transition the state does not allow; the message says what to do instead."""


def canary_target(state, image, version, weight, secrets=None, image_id=None, baseline=None):
    """Start a canary of image/version (image_id: its ID on the host, when known) at weight
    percent on the idle slot, or change the weight of the same canary. TransitionError for a
    weight outside 1-100 or another canary running.

    baseline (analysis.baseline: fresh): True runs a fresh baseline beside the canary (slot
    BASELINE_SLOT, the stable slot's release, at the same weight), False drops it, None keeps
    what runs. With a baseline the weight is at most MAX_BASELINE_WEIGHT."""
    if not _is_int(weight) or not 1 <= weight <= 100:
        raise TransitionError("weight: %s is not a percentage; use a whole number from 1 to 100 (-e weight=10)."
                              % _show(weight))
    spec = release_spec(image, version, "canary", secrets, image_id)
    slot = state["canary"] or idle_slot(state)
    if state["canary"] is not None:
        running = state["slots"][slot]
        # A canary started before IDs were recorded keeps its weight changes.
        if not same_release(running, image, version, image_id if running.get("image_id") else None, secrets):
            raise TransitionError("A canary of version %s is already running; the manifest now names %s. End it first "
                                  "(promote.yml -e mode=stable or rollback.yml)."
                                  % (_release_name(running), _release_name(spec)))
        spec = running
    slots = dict(state["slots"], **{slot: spec})
    if baseline is None:
        baseline = state.get("baseline") is not None
    slots.pop(BASELINE_SLOT, None)
    if baseline:
        if weight > MAX_BASELINE_WEIGHT:
            raise TransitionError("weight: %d with a fresh baseline (analysis.baseline: fresh) would leave the stable "
                                  "slot %d%%; the canary and the baseline get the weight each, so use at most %d."
                                  % (weight, 100 - 2 * weight, MAX_BASELINE_WEIGHT))
        slots[BASELINE_SLOT] = dict(state["slots"][state["stable"]])
    target = dict(state, mode="canary", canary=slot, weight=weight, slots=slots, baseline=BASELINE_SLOT)
    if not baseline:
        del target["baseline"]
    return target


def _release_name(spec):
    return spec["version"] + (" (image %s)" % spec["image_id"][:19] if spec.get("image_id") else "")


def roll_forward(state, stamp=None, keep=DEFAULT_KEEP):
    """The canary's release becomes the stable one at 100%, in the slot that was judged, and is
    recorded among the releases with stamp."""
    canary = _running_canary(state, "roll forward")
    return with_release(_without_baseline(dict(state, mode="stable", weight=0, stable=canary, canary=None,
                                               slots={canary: dict(state["slots"][canary], mode="stable")})),
                        stamp, keep)


def roll_back(state):
    """All traffic back to the stable slot; the canary slot goes (and a fresh baseline)."""
    _running_canary(state, "roll back")
    stable = state["stable"]
    return _without_baseline(dict(state, mode="stable", weight=0, canary=None, slots={stable: state["slots"][stable]}))


def _without_baseline(state):
    """state without the fresh baseline's field (its slot is already gone from `slots`)."""
    return dict((key, value) for key, value in state.items() if key != "baseline")


def rollback_target(state, to=None, version=None, stamp=None, keep=DEFAULT_KEEP):
    """(the kept release chosen, the state that runs it) for rollback.yml -e to=previous or
    -e version=X: the release goes to the idle slot, as a deploy's new release does (started and
    healthy, then routed, then the old slot retired), and becomes the latest release again. The
    state is the same one when the release chosen is the stable one already. TransitionError
    while a canary runs, and for a release that is not kept (naming the kept ones)."""
    if state["canary"] is not None:
        raise TransitionError(
            "rollback: a canary of version %s is running (slot %s, %d%% of requests); end it first with "
            "promote.yml -e mode=stable (judge it) or rollback.yml without to or version (drop it), then roll "
            "back to an earlier release" % (state["slots"][state["canary"]]["version"], state["canary"], state["weight"]))
    current = state["slots"][state["stable"]]
    try:
        record = pick(state.get("releases"), current, to, version)
    except ReleaseError as exc:
        raise TransitionError(str(exc))
    if record is None:
        return None, dict(state)
    idle = idle_slot(state)
    spec = slot_spec(record, current["mode"])
    if current.get("secrets"):
        # A release comes back with today's secrets (docs/rollback.md): their directory exists.
        spec["secrets"] = current["secrets"]
    target = dict(state, stable=idle, canary=None, weight=0, mode="stable", slots={idle: spec})
    return record, with_release(target, stamp, keep)


def _running_canary(state, what):
    if state["canary"] is None:
        raise TransitionError("there is no canary to %s; start one with promote.yml -e mode=canary" % what)
    return state["canary"]


def routing(state):
    """What nginx routes by: a change of any of these is a new generation."""
    return [state["stable"], state["canary"], int(state["weight"]), sorted(state["slots"])]


def _release(spec):
    """What makes a slot's release: everything of its spec but its mode (a roll forward changes
    the mode alone, and the release stays)."""
    return dict(spec, mode=None)


def _replaced(previous, target):
    """Whether a slot of both states runs another release in target."""
    return any(slot in previous["slots"] and _release(previous["slots"][slot]) != _release(spec)
               for slot, spec in target["slots"].items())


def _stamps(previous, live):
    """live's slot_generations: a slot keeps its stamp while it runs the same release; a release
    new in its slot is stamped with live's generation."""
    kept = (previous or {}).get("slot_generations") or {}
    stamps = {}
    for slot, spec in live["slots"].items():
        before = previous["slots"].get(slot) if previous is not None else None
        same = before is not None and _release(before) == _release(spec)
        stamps[slot] = kept[slot] if same and slot in kept else live["generation"]
    return stamps


def with_generations(current, found, targets, sticky=False):
    """The states a converge goes through, numbered: the generation moves only when nginx must
    route differently (stable, canary, weight or the set of slots), because every reload retires
    nginx's old workers, which close their idle keep-alive client connections. A stack's first
    converge keeps the generation it starts with.

    sticky (canary.sticky): each state also gets slot_generations, the generation at which each
    slot's release was first routed, and a slot that runs another release than before is a new
    generation too, so that a generation names one release per slot (a sticky cookie is
    '<slot>.<its stamp>'). Without it, states carry no slot_generations."""
    lives, previous, generation = [], current, int(current["generation"])
    for index, target in enumerate(targets):
        first_deploy = index == 0 and not found
        target = dict((key, value) for key, value in target.items() if key != "slot_generations")
        moved = routing(target) != routing(previous) or (sticky and _replaced(previous, target))
        if not first_deploy and moved:
            generation += 1
        live = dict(target, generation=generation)
        if sticky:
            live["slot_generations"] = _stamps(None if first_deploy else previous, live)
        lives.append(live)
        previous = live
    return lives
