# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The action of every module that appends to a stack's history: run the module on the host,
then keep the last record it appended as the history's anchor on the controller
(module_utils/_anchors.py) and in the job's stats. While the module waits, the play shows
progress lines (plugin_utils/_progress.py).

This is a private plugin_utils file: its API may change without notice.
"""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.module_utils._anchors import (
    AnchorError,
    advance,
    anchor_path,
    read_anchor,
    remove_anchor,
    stats,
    write_anchor,
)
from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._progress import shown, with_progress_path

DEFAULT_ANCHOR_DIR = "anchors"


class RecordingAction(ActionBase):
    """Subclasses name their module and say where its stack and history are in its arguments."""

    MODULE = None
    # The wait a progress line names when the module has noted none (module_utils/_progress.py).
    WAITING_FOR = None

    def progress_directory(self, args):
        """The directory on the host for the module's progress file, or None for none."""
        return None

    def history_of(self, args):
        """(stack, history path on the host, whether this call purges the history)."""
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super(RecordingAction, self).run(tmp, task_vars)
        args, path = with_progress_path(self._task.args, self.progress_directory(self._task.args))
        with shown(self, task_vars, self.WAITING_FOR, None, path):
            result.update(self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars))
        if self._task.check_mode:
            return result
        try:
            self.anchor(result, task_vars or {})
        except (AnchorError, OSError) as exc:
            # The events are on the host already; the anchor is what the audit will miss.
            result.setdefault("warnings", []).append(
                "the history's anchor could not be kept on the controller (%s); the next audit cannot tell a cut "
                "history from this one" % exc)
        return result

    def anchor(self, result, task_vars):
        stack, history, purged = self.history_of(self._task.args)
        stack = stack or (task_vars.get("swiftdeploy_stack") or {}).get("stack")
        # The module says where the history is on the host, `~` expanded there.
        history = result.get("history_path") or history
        host = task_vars.get("inventory_hostname", "localhost")
        anchor_dir = task_vars.get("swiftdeploy_anchor_dir") or DEFAULT_ANCHOR_DIR
        path = anchor_path(os.path.abspath(os.path.expanduser(str(anchor_dir))), stack, host, history)
        if purged and not result.get("failed"):
            remove_anchor(path)
            return
        records = [record for record in (result.get("records") or [result.get("record")])
                   if isinstance(record, dict) and isinstance(record.get("seq"), int)]
        if not records:
            return
        anchor = advance(read_anchor(path), stack, host, history, records[-1])
        write_anchor(path, anchor)
        result["anchor"] = dict((key, anchor[key]) for key in ("seq", "hash", "regressed") if key in anchor)
        result["ansible_stats"] = {"data": stats(anchor, host), "per_host": False, "aggregate": True}
