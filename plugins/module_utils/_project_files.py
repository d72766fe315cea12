# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Removing entries of a stack's project directory without ever leaving it.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

import os
import shutil


def inside(root, name):
    """The absolute path of name under root, or ValueError naming the entry and the fix."""
    if not name or os.path.isabs(name) or name.startswith("~"):
        raise ValueError("remove: %r is not a path relative to the project directory; give a name such as "
                         "'state.json'" % name)
    parts = os.path.normpath(name).split(os.sep)
    if ".." in parts or parts == ["."]:
        raise ValueError("remove: %r leaves the project directory; give a name inside it" % name)
    target = os.path.join(root, os.path.normpath(name))
    # The parent must resolve inside the root; the entry itself may be a link (removed, not followed).
    parent = os.path.realpath(os.path.dirname(target))
    real_root = os.path.realpath(root)
    if parent != real_root and not parent.startswith(real_root + os.sep):
        raise ValueError("remove: %r resolves outside the project directory (through a symbolic link)" % name)
    return target


def remove(target):
    """Remove a file, a link (never followed) or a whole directory."""
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
    else:
        os.unlink(target)
