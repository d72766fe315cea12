# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.stack_teardown: the module runs on the host; its teardown event
is kept as the history's anchor on the controller, and a purged history's anchor is forgotten."""

from __future__ import annotations

import posixpath

from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._recording_action import RecordingAction

HISTORY_FILE = "history.jsonl"


class ActionModule(RecordingAction):
    MODULE = "swiftdeploy.stack.stack_teardown"
    WAITING_FOR = "the stack to be torn down"

    def progress_directory(self, args):
        # Beside the lock: a teardown may remove the project directory.
        return posixpath.dirname(str(args.get("lock_path") or "")) or None

    def history_of(self, args):
        history = args.get("history") or {}
        project = args.get("project_path") or ""
        purged = HISTORY_FILE in (args.get("remove") or [])
        return history.get("stack") or args.get("stack"), project.rstrip("/") + "/" + HISTORY_FILE, purged
