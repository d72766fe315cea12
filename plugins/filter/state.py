# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that apply the rules of a stack's live state (module_utils/_state.py) in the role."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import (
    StateError,
    TransitionError,
    canary_target,
    deploy_target,
    initial_state,
    parse_state,
    roll_back,
    roll_forward,
    rollback_target,
    validate_state,
    with_generations,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._status import judged_window, planned_lines, status_report

TRANSITIONS = ("deploy", "canary", "roll_forward", "roll_back")


def live_state(text, image, version, mode="stable", where="state.json"):
    """{state, found}: the validated state in a state.json's text, or the first deploy's
    state of image/version/mode when there is none."""
    try:
        state = parse_state(text if isinstance(text, str) or text is None else str(text), where)
    except StateError as exc:
        raise AnsibleFilterError("%s. Nothing was changed or rendered." % exc)
    if state is None:
        return {"state": initial_state(image, version, mode), "found": False}
    return {"state": state, "found": True}


def _keep(keep):
    """-e swiftdeploy_releases_kept=7 arrives as a string: a string of digits is its number."""
    return int(keep) if isinstance(keep, str) and keep.isdigit() and keep.isascii() else keep


def state_transition(state, event, image=None, version=None, weight=None, found=True, mode="stable", stamp=None,
                     keep=5, secrets=None, image_id=None, baseline=None):
    """The state `event` leads to from `state` (validated first); {} when a deploy is refused
    because a canary runs. stamp ({at, by}): a deploy or roll forward that makes a release
    stable records it among the `keep` kept releases (none without a stamp). image_id: the
    image's ID on the host, when known (deploy, canary). baseline (canary): true runs a fresh
    baseline beside the canary, false drops it, none keeps what runs."""
    if event not in TRANSITIONS:
        raise AnsibleFilterError("state_transition: event %r is not one of %s" % (event, ", ".join(TRANSITIONS)))
    try:
        validate_state(state, "the live state")
        if event == "deploy":
            return deploy_target(state, found, image, version, mode, stamp, _keep(keep), secrets or None,
                                 image_id or None)
        if event == "canary":
            return canary_target(state, image, version, weight, secrets or None, image_id or None, baseline)
        return roll_forward(state, stamp, _keep(keep)) if event == "roll_forward" else roll_back(state)
    except (StateError, TransitionError) as exc:
        raise AnsibleFilterError(str(exc))


def state_rollback(state, to=None, version=None, stamp=None, keep=5):
    """{release, from, state} for rollback.yml -e to=previous or -e version=X: the kept release
    chosen (None when it is the stable one already), the stable slot's release now, and the
    state that runs the chosen one through the idle slot."""
    try:
        validate_state(state, "the live state")
        release, target = rollback_target(state, to or None, None if version in (None, "") else str(version),
                                          stamp, _keep(keep))
    except (StateError, TransitionError) as exc:
        raise AnsibleFilterError(str(exc))
    return {"release": release, "from": state["slots"][state["stable"]], "state": target}


def _unstamped(state):
    """A wanted state without the slot_generations a transition copied from the live state (its
    slots may differ): with_generations stamps them again."""
    if isinstance(state, dict) and "slot_generations" in state:
        return dict((key, value) for key, value in state.items() if key != "slot_generations")
    return state


def state_generations(targets, current, found=True, sticky=False):
    """The states a converge goes through from `current`, each with its routing generation and,
    with sticky (canary.sticky), each slot's release generation (slot_generations)."""
    try:
        return with_generations(validate_state(current, "the live state"), found,
                                [validate_state(_unstamped(target), "a wanted state") for target in targets],
                                sticky=bool(sticky))
    except StateError as exc:
        raise AnsibleFilterError(str(exc))


def status_report_filter(scrapes, stack, live, infrastructure, canary, host, edge=None):
    """The status report of one refresh (module_utils/_status.py)."""
    try:
        return status_report(stack, live, scrapes, infrastructure, canary, host, edge)
    except ValueError as exc:
        raise AnsibleFilterError("%s. Check the slot with logs.yml; nothing was changed." % exc)


def status_judged(scrapes, metrics, edge=None):
    """The figures a status refresh's canary policy judges, or why they could not be read."""
    return judged_window(scrapes, metrics, edge)


class FilterModule(object):
    def filters(self):
        return {
            "live_state": live_state,
            "state_transition": state_transition,
            "state_rollback": state_rollback,
            "state_generations": state_generations,
            "status_report": status_report_filter,
            "status_judged": status_judged,
            "converge_plan": planned_lines,
        }
