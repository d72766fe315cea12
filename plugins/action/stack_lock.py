# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.stack_lock: writes the controller's identity into the lock, and
takes over within seconds a lock whose holder is a playbook of this controller that is gone.

Only the controller can tell that a playbook process died (a kill -9, an AWX cancel): the
managed host may be another machine. Actions run in a worker forked from the ansible-playbook
process, so os.getppid() is the playbook's own pid. A lock of another controller is left to its
heartbeat (the module's stale_after).

A wait for the lock or for a canary's window prints progress lines (plugin_utils/_progress.py):
the module notes which wait it is in, in a file beside the lock.
"""

from __future__ import annotations

import os
import posixpath
import socket

from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import (
    TAKE_OVER_QUIET_SECONDS,
    controller_gone,
    controller_identity,
    holder_summary,
)
from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._progress import shown, with_progress_path

MODULE = "swiftdeploy.stack.stack_lock"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("state", "acquired") != "acquired":
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
            return result
        me = controller_identity(os.getppid(), socket.gethostname())
        if me is not None and not args.get("controller"):
            args["controller"] = me
        # First without waiting: a lock of a dead playbook of this controller is taken over at
        # once, not after the wait. It may still wait for a canary's window.
        first = self._run_module(dict(args, wait=0), task_vars, *window_of(args))
        lock_id = first.get("lock_id")
        if first.get("failed") and lock_id and controller_gone((first.get("holder") or {}).get("controller"), me):
            # The module takes it over once nothing has refreshed it for a little while (a
            # module of the dead playbook may still be finishing on the host): wait that long.
            wait = max(int(args.get("wait") or 0), TAKE_OVER_QUIET_SECONDS + 5)
            reply = self._run_module(dict(args, take_over=lock_id, wait=wait), task_vars,
                                     "the lock of a gone playbook to be quiet, to take it over", wait)
        elif first.get("failed") and lock_id and int(args.get("wait") or 0) > 0:
            reply = self._run_module(args, task_vars, "the stack lock held by %s" % holder_summary(first.get("holder")),
                                     int(args["wait"]))
        else:
            reply = first
        result.update(reply)
        return result

    def _run_module(self, args, task_vars, what, limit):
        """The module, with progress lines while it waits; the module notes which wait in a file
        beside the lock."""
        args, path = with_progress_path(args, posixpath.dirname(str(args.get("path") or "")))
        with shown(self, task_vars, what, limit, path):
            return self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)


def window_of(args):
    """The wait a call without a lock wait may still make, and its limit: a canary's window."""
    host = args.get("host") or {}
    edge = host.get("edge") or {}
    if edge.get("wait_for_canary"):
        return "the canary to be a window old", float(edge.get("window_seconds") or 0) or None
    if host.get("metrics_urls"):
        return "the canary's window of app metrics", float(host.get("window_seconds") or 0) or None
    return None, None
