# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.image_build: runs the module that builds (community.docker's
docker_image for a build context, ansible.builtin.command for a script) on the host, and prints
progress lines while the build lasts (plugin_utils/_progress.py)."""

from __future__ import annotations

import posixpath

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._progress import shown

OPTIONS = ("name", "path", "build_args", "script")


def build_call(args):
    """(module, its arguments, what a progress line names) for image_build's arguments."""
    unknown = sorted(set(args) - set(OPTIONS))
    if unknown:
        raise AnsibleActionFail("image_build: unsupported option(s) %s; use %s" % (", ".join(unknown), ", ".join(OPTIONS)))
    name = args.get("name")
    if not name:
        raise AnsibleActionFail("image_build: name is required; give the image reference to build")
    if bool(args.get("path")) == bool(args.get("script")):
        raise AnsibleActionFail("image_build: give exactly one of path (a build context on the host) and script "
                                "(the argv of a script that builds %s)" % name)
    if args.get("script"):
        script = args["script"]
        if not isinstance(script, list) or not all(isinstance(item, str) for item in script):
            raise AnsibleActionFail("image_build: script must be a list of strings (an argv), not %r" % type(script).__name__)
        named = [item for item in script if "/" in item] or script
        return "ansible.legacy.command", {"argv": script}, "%s to be built by %s" % (name, posixpath.basename(named[0]))
    build = {"path": args["path"], "args": dict(args.get("build_args") or {}), "pull": False}
    return "community.docker.docker_image", {"name": name, "source": "build", "build": build}, \
        "%s to be built (docker build)" % name


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        module, module_args, what = build_call(dict(self._task.args))
        with shown(self, task_vars, what, None):
            result.update(self._execute_module(module_name=module, module_args=module_args, task_vars=task_vars))
        return result
