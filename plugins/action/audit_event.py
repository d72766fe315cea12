# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.audit_event: the module runs on the host; the event it recorded
is kept as the history's anchor on the controller."""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._recording_action import RecordingAction


class ActionModule(RecordingAction):
    MODULE = "swiftdeploy.stack.audit_event"

    def history_of(self, args):
        return args.get("stack"), args.get("path"), False
