#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: project_files
short_description: Remove files and directories of a stack's project directory in one call
version_added: 0.2.0
description:
  - Removes the entries named in O(names) from the project directory O(path) on the managed
    host, files and whole directories alike, in one round trip. M(ansible.builtin.file) in a loop
    costs one round trip per entry, which made C(teardown.yml) slow.
  - Every name must stay inside O(path). Absolute names, C(..) and names that resolve outside
    through a symbolic link are refused before anything is removed. A symbolic link named in
    O(names) is removed itself, never followed.
  - Missing entries are fine; a missing O(path) removes nothing.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  path:
    description: The project directory.
    type: path
    required: true
  names:
    description: Entries of O(path) to remove, as relative paths such as V(state.json) or V(nginx).
    type: list
    elements: str
    required: true
  state:
    description: Only V(absent) is supported.
    type: str
    choices: [absent]
    default: absent
attributes:
  check_mode:
    support: full
    details:
      - Removes nothing and reports what would be removed.
  diff_mode:
    support: full
    details:
      - The diff lists the entries removed.
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Delete the generated files of the stack
  swiftdeploy.stack.project_files:
    path: "{{ swiftdeploy_project_path }}"
    names: [nginx, docker-compose.yml, state.json]
    state: absent
"""

RETURN = r"""
removed:
  description: The names that were removed (in check mode, that would be removed), in the order given.
  returned: always
  type: list
  elements: str
  sample: [nginx, docker-compose.yml]
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule


def inside(root, name):
    """The absolute path of name under root, or ValueError naming the entry and the fix."""
    if not name or os.path.isabs(name) or name.startswith("~"):
        raise ValueError("names: %r is not a path relative to the project directory; give a name such as "
                         "'state.json'" % name)
    parts = os.path.normpath(name).split(os.sep)
    if ".." in parts or parts == ["."]:
        raise ValueError("names: %r leaves the project directory; give a name inside it" % name)
    target = os.path.join(root, os.path.normpath(name))
    # The parent must resolve inside the root; the entry itself may be a link (removed, not followed).
    parent = os.path.realpath(os.path.dirname(target))
    real_root = os.path.realpath(root)
    if parent != real_root and not parent.startswith(real_root + os.sep):
        raise ValueError("names: %r resolves outside the project directory (through a symbolic link)" % name)
    return target


def remove(target):
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
    else:
        os.unlink(target)


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "names": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["absent"], "default": "absent"},
        },
        supports_check_mode=True,
    )
    root = module.params["path"]
    try:
        targets = [(name, inside(root, name)) for name in module.params["names"]]
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    removed = []
    for name, target in targets:
        if not os.path.lexists(target):
            continue
        if not module.check_mode:
            try:
                remove(target)
            except OSError as exc:
                module.fail_json(msg="cannot remove %s: %s; check that the remote user may write in %s"
                                     % (target, exc.strerror or exc, root), removed=removed, changed=bool(removed))
        removed.append(name)
    result = {"changed": bool(removed), "removed": removed}
    if module._diff:
        result["diff"] = {"before": "".join("%s\n" % name for name in removed), "after": "",
                          "before_header": root, "after_header": root}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
