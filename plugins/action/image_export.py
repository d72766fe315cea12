# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.image_export: the module runs where the task runs (the role
delegates it to the controller); an export that takes a few seconds prints progress lines
(plugin_utils/_progress.py)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._progress import shown, task_host

MODULE = "swiftdeploy.stack.image_export"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        images = [str(image) for image in (self._task.args.get("images") or [])]
        what = "%s to be exported where a host lacks them (docker save)" % ", ".join(dict.fromkeys(images))
        where = self._task.delegate_to or task_host(task_vars)
        with shown(self, task_vars, what, None, host=where):
            result.update(self._execute_module(module_name=MODULE, module_args=self._task.args, task_vars=task_vars))
        return result
