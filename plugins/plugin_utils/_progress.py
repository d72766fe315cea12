# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Progress lines for an action plugin's module call that waits (docs/progress.md).

While the module runs on the host (synchronously, as every task does), a ticker thread on the
controller prints, from FIRST_SECONDS on and then every EVERY_SECONDS, one plain line:

    Waiting for <what> on <host>: 12 s of at most 60 s

A call that ends sooner prints nothing and costs one thread that is started and stopped. What
the action plugin knows (its limit, the lock's holder) is the line's fallback; which wait is
under way inside the module (a slot's health, the canary's window) is read from the small file
the module keeps on the host (module_utils/_progress.py), through a copy of the task's
connection, at each tick only. Reading is limited to the connection plugins whose exec_command
keeps its per-command state on the instance (ssh, local): the copy rebinds that state, so the
task's own command, running meanwhile, is not disturbed; privilege escalation is never used
for it. Any other connection shows the fallback lines.

This is a private plugin_utils file: its API may change without notice.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import secrets
import shlex
import threading
import time
import unicodedata

from ansible.utils.display import Display

FIRST_SECONDS = 3.0
EVERY_SECONDS = 5.0
MAX_TEXT = 200
READABLE_TRANSPORTS = frozenset(("ssh", "local"))

display = Display()


def plain(text, width=MAX_TEXT):
    """Text safe for a log line: no control or format characters (no terminal codes, no line
    breaks), runs of spaces collapsed, at most `width` characters."""
    cleaned = "".join(" " if unicodedata.category(char)[0] in ("C", "Z") else char for char in str(text))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= width else cleaned[:width - 3].rstrip() + "..."


def seconds_text(seconds):
    """Whole seconds for a progress line: 12, 1.5 only below 10."""
    if seconds < 10 and seconds != int(seconds):
        return "%.1f" % seconds
    return "%d" % int(seconds)


def progress_line(what, host, elapsed, limit=None):
    """Waiting for <what> on <host>: <elapsed> s[ of at most <limit> s]"""
    line = "Waiting for %s on %s: %s s" % (plain(what), plain(host, 80), int(max(0.0, elapsed)))
    if limit is not None and limit > 0:
        line += " of at most %s s" % seconds_text(limit)
    return line


def next_due(due, elapsed, every=EVERY_SECONDS):
    """When the tick after the one due at `due` is due, `elapsed` seconds into the call now: every
    `every` seconds, but never sooner than half of that after a late tick (a slow read), so late
    ticks do not print in bursts."""
    return max(due + every, elapsed + every / 2.0)


def read_command(path):
    """The shell command that prints the host's clock (Unix seconds, with nanoseconds where
    date(1) has %N), then the progress file's text (nothing when there is none). A path under
    `~/` is expanded by the shell. Run by /bin/sh whatever the remote user's login shell is, as
    Ansible runs its own commands."""
    if path.startswith("~/"):
        quoted = '"$HOME"/' + shlex.quote(path[2:])
    else:
        quoted = shlex.quote(path)
    return "/bin/sh -c %s" % shlex.quote("date +%%s.%%N; cat -- %s 2>/dev/null; true" % quoted)


def parse_host_progress(stdout):
    """(what, elapsed, limit) from read_command's output, or None when no wait is noted or the
    output is not what the command prints."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else str(stdout)
    now_text, _sep, content = text.strip().partition("\n")
    seconds, _dot, fraction = now_text.strip().partition(".")
    try:
        # A date(1) without %N prints it as is: whole seconds then.
        now = float(seconds) + (float("0." + fraction) if fraction.isdigit() else 0.0)
        noted = json.loads(content) if content.strip() else None
    except ValueError:
        return None
    if not isinstance(noted, dict) or not isinstance(noted.get("what"), str):
        return None
    try:
        started = float(noted.get("started"))
        limit = noted.get("limit")
        limit = None if limit is None else float(limit)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(started) or (limit is not None and not math.isfinite(limit)):
        return None
    return noted["what"], max(0.0, now - started), limit


def progress_path(directory):
    """A fresh file name in `directory` on the host for one call's progress (random, so that two
    runs waiting on one stack never share one)."""
    return "%s/.swiftdeploy-progress-%s.json" % (str(directory).rstrip("/") or "", secrets.token_hex(8))


class HostReader(object):
    """Reads a module's progress file through a copy of the task's connection; gives up for the
    rest of the call at the first error of the connection."""

    def __init__(self, connection, path):
        self.path = path
        self.connection = None
        if path and getattr(connection, "transport", None) in READABLE_TRANSPORTS:
            self.connection = connection

    def read(self):
        if self.connection is None:
            return None
        try:
            reader = copy.copy(self.connection)
            rc, stdout, _stderr = reader.exec_command(read_command(self.path), sudoable=False)
        except Exception:  # pylint: disable=broad-except
            # A progress line is never worth a failed task: fall back to what the action knows.
            self.connection = None
            return None
        return parse_host_progress(stdout) if rc == 0 else None


class Ticker(object):
    """Calls emit(line) for a running call: at FIRST_SECONDS, then about every EVERY_SECONDS,
    until stop(). describe(elapsed) gives (what, elapsed, limit) or None (nothing to say)."""

    def __init__(self, host, describe, emit, first=FIRST_SECONDS, every=EVERY_SECONDS, clock=time.monotonic):
        self.host = host
        self.describe = describe
        self.emit = emit
        self.first = first
        self.every = every
        self.clock = clock
        self.started = clock()
        self.due = first
        self.lines = 0
        self._stop = threading.Event()
        self._emitting = threading.Lock()
        self._thread = None

    def tick(self):
        """One tick, `clock()` now: the line printed (or None); schedules the next one."""
        elapsed = self.clock() - self.started
        if elapsed < self.due:
            return None
        described = self.describe(elapsed)
        line = None
        if described is not None:
            what, waited, limit = described
            with self._emitting:
                if self._stop.is_set():
                    return None
                line = progress_line(what, self.host, waited, limit)
                self.emit(line)
                self.lines += 1
        self.due = next_due(self.due, self.clock() - self.started, self.every)
        return line

    def _run(self):
        while not self._stop.wait(max(0.0, self.started + self.due - self.clock())):
            try:
                self.tick()
            except Exception:  # pylint: disable=broad-except
                return  # never let a progress line take the task down

    def start(self):
        self._thread = threading.Thread(target=self._run, name="swiftdeploy-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """No line after this returns; a read under way is not waited for (its line is dropped)."""
        with self._emitting:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(0.2)


def task_host(task_vars):
    """The host a line names: the task's inventory host."""
    return str((task_vars or {}).get("inventory_hostname") or "the host")


@contextlib.contextmanager
def shown(action, task_vars, what, limit=None, path=None, host=None):
    """Progress lines while the block (one module call of `action`, an ActionBase) runs.

    what/limit: the fallback line's wait and its limit in seconds (None: none known); what
    None prints nothing unless the module notes a wait. path: the module's progress file on
    the host (from progress_path()), or None."""
    reader = HostReader(getattr(action, "_connection", None), path)

    def describe(elapsed):
        noted = reader.read()
        if noted is not None:
            return noted
        if what is None:
            return None
        return what, elapsed, limit

    ticker = Ticker(host or task_host(task_vars), describe, display.display).start()
    try:
        yield ticker
    finally:
        ticker.stop()


def with_progress_path(args, directory):
    """args with a fresh progress_path in directory (on the host), and that path."""
    if not directory:
        return dict(args), None
    path = progress_path(directory)
    return dict(args, progress_path=path), path
