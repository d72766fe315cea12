# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.stack_converge: the module runs on the host; the last event it
recorded is kept as the history's anchor on the controller."""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._recording_action import RecordingAction


class ActionModule(RecordingAction):
    MODULE = "swiftdeploy.stack.stack_converge"
    WAITING_FOR = "the stack to converge"

    def progress_directory(self, args):
        return args.get("project_path")

    def history_of(self, args):
        history = args.get("history") or {}
        return history.get("stack"), history.get("path"), False
