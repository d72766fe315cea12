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
    validate_state,
    with_generations,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._status import status_report

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


def state_transition(state, event, image=None, version=None, weight=None, found=True, mode="stable", image_id=None):
    """The state `event` leads to from `state` (validated first); {} when a deploy is refused
    because a canary runs. image_id: the image's ID on the host, when known (deploy, canary)."""
    if event not in TRANSITIONS:
        raise AnsibleFilterError("state_transition: event %r is not one of %s" % (event, ", ".join(TRANSITIONS)))
    try:
        validate_state(state, "the live state")
        if event == "deploy":
            return deploy_target(state, found, image, version, mode, image_id or None)
        if event == "canary":
            return canary_target(state, image, version, weight, image_id or None)
        return roll_forward(state) if event == "roll_forward" else roll_back(state)
    except (StateError, TransitionError) as exc:
        raise AnsibleFilterError(str(exc))


def state_generations(targets, current, found=True):
    """The states a converge goes through from `current`, each with its routing generation."""
    try:
        return with_generations(validate_state(current, "the live state"), found,
                                [validate_state(target, "a wanted state") for target in targets])
    except StateError as exc:
        raise AnsibleFilterError(str(exc))


def status_report_filter(scrapes, stack, live, infrastructure, canary, host):
    """The status report of one refresh (module_utils/_status.py)."""
    return status_report(stack, live, scrapes, infrastructure, canary, host)


class FilterModule(object):
    def filters(self):
        return {
            "live_state": live_state,
            "state_transition": state_transition,
            "state_generations": state_generations,
            "status_report": status_report_filter,
        }
