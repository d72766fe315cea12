# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters of an automated canary rollout (module_utils/_auto.py): begin, look, decide.

The controller's clock is the rollout's (started_at, the maximum duration); each host's own clock
only times its readings.
"""

from __future__ import annotations

import json
import time

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._analysis import AnalysisError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._auto import (
    AutoError,
    decide,
    look,
    resume,
    rollout_status,
    settings_of,
    start,
)


def auto_begin(live, stack, saved=None, fresh=False, readings=None, warm_up=False):
    """{settings, state, note}: the rollout of the live canary, new (fresh: this run started the
    canary) or resumed from the state a previous run saved (its text, or null); with `readings`
    (every canary host's first reading), the state starts from them. `warm_up`: this run has just
    started the fresh baseline beside a running canary, so its first window is not judged on
    latency (as a canary's that the run starts)."""
    try:
        settings = settings_of(stack)
        now = time.time()
        if fresh:
            state = start(settings, live, now, warm_up=True)
            note = ("Automated rollout of canary %s (slot %s): steps %s then 100%%, a look every %s s, at most %s s."
                    % (state["canary_version"], state["canary_slot"], settings["steps"],
                       settings["interval_seconds"], settings["max_duration_seconds"]))
        else:
            try:
                previous = json.loads(saved) if saved else None
            except ValueError:
                previous = None
            state, note = resume(previous, settings, live, now, warm_up=warm_up)
        if readings:
            state = look(state, readings, settings, now)["state"]
    except (AutoError, AnalysisError, KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("auto_begin: %s" % exc)
    return {"settings": settings, "state": state, "note": note}


def auto_look(readings, state, settings):
    """One look at every canary host's readings ({host: the canary_interval result})."""
    if not isinstance(readings, dict):
        raise AnsibleFilterError("auto_look expects a mapping of host to its canary_interval result, not %s"
                                 % type(readings).__name__)
    try:
        return look(state, readings, settings, time.time())
    except (AutoError, AnalysisError, KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("auto_look: %s" % exc)


def auto_decide(looked, decision, settings):
    """The verdict of a look with the canary policy's decision (null for a look that measured nothing)."""
    try:
        return decide(looked, decision or None, settings, time.time())
    except (AutoError, KeyError, TypeError) as exc:
        raise AnsibleFilterError("auto_decide: %s" % exc)


def auto_status(live, stack, saved=None):
    """What status.yml shows of the live canary's automated rollout (null when none is recorded)."""
    try:
        previous = json.loads(saved) if saved else None
    except ValueError:
        previous = None
    try:
        return rollout_status(previous, live, settings_of(stack), time.time())
    except (AutoError, AnalysisError, KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("auto_status: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"auto_begin": auto_begin, "auto_look": auto_look, "auto_decide": auto_decide,
                "auto_status": auto_status}
