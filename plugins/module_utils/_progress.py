# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which wait a module is in, noted in a small file on the host for its action plugin to show.

This is a private module_utils file: its API may change without notice. No Ansible imports.

A module runs on the host and cannot print; the controller prints (plugin_utils/_progress.py).
When a module call has run for a few seconds, its action plugin reads this file through the
connection and prints what the module waits for, for how long, and its limit. The module writes
it only when a wait begins or ends, never while it polls: a wait that ends fast costs two small
writes and nothing on the controller.

The action plugin names the file (the module's `progress_path` option, random per call, in a
directory the module uses anyway); `start()` makes it this run's file and removes it when the
module exits (`activate()` does the same for a block). Writing is best effort: a full disk or a removed directory never fails a deploy. The file
holds {what, limit, started} (started in Unix time on the host, so the controller compares it
with the host's own clock); what is plain text made from names and numbers, never a secret.

A call killed before its exit (SIGKILL, a lost host) leaves its file behind. The first write of
each call prunes the files that other calls left in its directory once they are stale (`stale()`):
a wait with a limit is over `GRACE_SECONDS` after its limit, any other after `MAX_AGE_SECONDS`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import time

FILE_MODE = 0o644  # read by the connection's user when the module ran with become

# The module's option that names the file, set by its action plugin (doc fragment
# swiftdeploy.stack.progress).
ARGUMENT_SPEC = {"progress_path": {"type": "path"}}

# The names progress_path() (plugin_utils/_progress.py) gives, and their temporary files.
NAME_RE = re.compile(r"\.swiftdeploy-progress-[0-9a-f]{16}\.json(\.new)?")
# A module gives up a wait with a limit soon after it (then it notes the next wait or removes the
# file); a wait without one (an image load, containers to stop) lasts minutes, never an hour.
GRACE_SECONDS = 300
MAX_AGE_SECONDS = 3600
_MAX_READ = 4096

_path = None
_stack = []
_pruned = False


def start(path):
    """Note this run's waits in path (None: nowhere) until stop(), or the module's exit."""
    global _path, _pruned
    stop()
    _path = path or None
    _pruned = False
    if _path:
        atexit.register(stop)


def stop():
    """Remove the file; later waits are noted nowhere."""
    global _path
    if _path:
        _remove(_path)
        atexit.unregister(stop)
    _path = None
    del _stack[:]


@contextlib.contextmanager
def activate(path):
    """Note the block's waits in path (None: nowhere); remove it at the end."""
    start(path)
    try:
        yield
    finally:
        stop()


def entry(what, limit=None, started=None, clock=time.time):
    """What the file holds for a wait: what (text), limit (seconds or None), started (Unix time)."""
    return {"what": str(what), "limit": None if limit is None else float(limit),
            "started": clock() if started is None else float(started)}


def note(what, limit=None, started=None):
    """The wait under way now, replacing the current one (a wait whose end the caller does not
    mark, such as the lock's; clear() ends it)."""
    if _stack:
        _stack[-1] = entry(what, limit, started)
    else:
        _stack.append(entry(what, limit, started))
    _write_top()


def clear():
    """The wait noted last is over."""
    if _stack:
        _stack.pop()
        _write_top()


@contextlib.contextmanager
def waiting(what, limit=None):
    """The block is a wait for `what`, of at most `limit` seconds (None: none known)."""
    _stack.append(entry(what, limit))
    _write_top()
    try:
        yield
    finally:
        clear()


def stale(text, age, now):
    """Whether a progress file another call left may be removed. text: its content (None when it
    cannot be read, or a temporary file); age: seconds since it was last written; now: the
    host's Unix time. Its wait has a limit: stale GRACE_SECONDS after started + limit; otherwise
    (no limit, not a wait this module wrote) stale after MAX_AGE_SECONDS."""
    if age > MAX_AGE_SECONDS:
        return True
    try:
        noted = json.loads(text) if text else None
        limit, started = float(noted["limit"]), float(noted["started"])
    except (TypeError, ValueError, KeyError):
        return False
    return now - started > limit + GRACE_SECONDS


def prune(directory, own, clock=time.time):
    """Remove the stale progress files (NAME_RE, stale()) in directory but `own`; the names
    removed. Best effort: a file it cannot read, judge or remove is left."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = clock()
    for name in sorted(names):
        path = os.path.join(directory, name)
        if path == own or not NAME_RE.fullmatch(name):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            age = now - os.fstat(fd).st_mtime
            text = None if name.endswith(".new") else os.read(fd, _MAX_READ).decode("utf-8", "replace")
        except OSError:
            continue
        finally:
            os.close(fd)
        if stale(text, age, now):
            try:
                os.unlink(path)
            except OSError:
                continue
            removed.append(name)
    return removed


def _write_top():
    global _pruned
    if not _path:
        return
    if not _stack:
        _remove(_path)
        return
    if not _pruned:
        _pruned = True
        prune(os.path.dirname(_path) or ".", _path)
    temporary = _path + ".new"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0),
                     FILE_MODE)
        try:
            os.write(fd, json.dumps(_stack[-1], sort_keys=True).encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(temporary, _path)
    except OSError:
        _remove(temporary)


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
