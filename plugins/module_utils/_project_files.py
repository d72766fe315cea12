# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A stack's files on the host: written atomically, removed without ever leaving the project directory.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile


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


def synced_temp(path, data, mode, uid=None, gid=None):
    """A temporary file beside path holding data (bytes), synced to disk; its name.

    mkstemp creates it 0600 and never through a link; it gets its owner and mode before a byte is
    written, so a key is never readable by others, not even for an instant."""
    handle, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp",
                                         dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(handle, "wb") as out:
            if uid is not None or gid is not None:
                os.fchown(out.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        _discard(temporary)
        raise
    return temporary


def write_atomic(path, data, mode, uid=None, gid=None, move=os.replace):
    """Replace path with data (bytes) so that a reader sees the old file or the new one, never part.

    move(temporary, path) puts the synced temporary file in place: os.replace, or a module's
    atomic_move (files written by modules), after which the mode and owner are given again, since
    atomic_move gives a new file the umask's mode and a replaced one the old file's."""
    temporary = synced_temp(path, data, mode, uid, gid)
    try:
        move(temporary, path)
    except BaseException:
        _discard(temporary)
        raise
    if move is not os.replace:
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid, follow_symlinks=False)
        os.chmod(path, mode)


def fsync_directory(path):
    """Make a rename in the directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(temporary):
    if os.path.lexists(temporary):
        os.unlink(temporary)
