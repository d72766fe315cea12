# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.image_load: copies the archive from the controller (O(src)) as
ansible.builtin.copy does, then loads it on the host; both print progress lines when they take a
few seconds (plugin_utils/_progress.py)."""

from __future__ import annotations

import os
import posixpath

from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._progress import shown

MODULE = "swiftdeploy.stack.image_load"
ARCHIVE_MODE = "0600"


def size_text(path):
    try:
        return "%.0f MB" % (os.path.getsize(path) / 1e6)
    except OSError:
        return "size unknown"


class ActionModule(ActionBase):
    # The copy action makes (and removes) its own temporary directory, only when it copies.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        src = args.pop("src", None)
        image = str(args.get("image") or "the image")
        if src and not self._task.check_mode:
            copied = self.copy(src, posixpath.dirname(str(args.get("archive") or "")) + "/", image, task_vars)
            if copied.get("failed"):
                result.update(copied)
                return result
        with shown(self, task_vars, "%s to be loaded (docker load)" % image, None):
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        return result

    def copy(self, src, directory, image, task_vars):
        """ansible.builtin.copy of src into directory (created when missing), mode 0600."""
        task = self._task.copy()
        task.args = {"src": src, "dest": directory, "mode": ARCHIVE_MODE}
        action = self._shared_loader_obj.action_loader.get(
            "ansible.legacy.copy", task=task, connection=self._connection, play_context=self._play_context,
            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        with shown(self, task_vars, "%s (%s) to be copied from the controller" % (image, size_text(src)), None):
            return action.run(task_vars=task_vars)
