# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""One run's bookkeeping on the managed host: the project directory's layout, who acts, the
history it appends to and the stack lock it gives back.

This is a private module_utils file: its API may change without notice. No Ansible imports.

Every module that records events or releases the lock builds its options from
`session_argument_spec()` (documented once, in the doc fragment swiftdeploy.stack.session) and
does its bookkeeping through `Session`, so the file names, the actor's defaults and the order
"events first, then the lock" live here only.
"""

from __future__ import annotations

import os
import socket
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import HistoryError, record_event
from ansible_collections.swiftdeploy.stack.plugins.module_utils._identity import current_user
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import KeepAlive, LockError, read_lock, release, touch

COMPOSE_FILE = "docker-compose.yml"
STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".swiftdeploy.lock"
SLOTS_DIR = "slots"
METRICS_DIR = "metrics"


class SessionError(Exception):
    """Bookkeeping that failed; the message says what was done and what was not."""


class Layout(object):
    """Where a stack's files live in its project directory on the managed host."""

    def __init__(self, project):
        self.project = os.path.abspath(os.path.expanduser(project))

    def path(self, *parts):
        return os.path.join(self.project, *parts)

    @property
    def compose(self):
        return self.path(COMPOSE_FILE)

    @property
    def state(self):
        return self.path(STATE_FILE)

    @property
    def history(self):
        return self.path(HISTORY_FILE)

    @property
    def lock(self):
        return self.path(LOCK_FILE)

    def slot_dir(self, slot):
        return self.path(SLOTS_DIR, slot)

    def metrics(self, name):
        return self.path(METRICS_DIR, name)


def actor_of(actor):
    """The actor recorded with events and written into the lock: the caller's keys without
    nulls, and `user` defaulting to the login name the module runs as."""
    fields = dict((key, value) for key, value in (actor or {}).items() if value is not None)
    if "user" not in fields:
        fields["user"] = current_user()
    return fields


def session_argument_spec():
    """The options every recording module shares (documented in swiftdeploy.stack.session)."""
    return {
        "actor": {"type": "dict"},
        "history_key": {"type": "str", "no_log": True},
        "release_lock": {"type": "dict", "options": {
            "path": {"type": "path", "required": True},
            # Whoever has it may release or refresh the run's lock: kept out of every output.
            "token": {"type": "str", "required": True, "no_log": True},
            "keep": {"type": "bool", "default": False},
        }},
    }


class Session(object):
    """Record events in one history as one actor, then give one lock back."""

    def __init__(self, history_path, actor=None, release_lock=None, check_mode=False, stack=None, version=None,
                 mode=None, history_key=None):
        self.history_path = history_path
        self.history_key = history_key or None
        self.actor = actor_of(actor)
        self.release_lock = release_lock
        self.check = check_mode
        self.defaults = {"stack": stack, "version": version, "mode": mode}
        self.records = []

    def record(self, event, details=None, mode=None, **fields):
        """Append one event (in check mode: preview it) and return the record."""
        record_fields = dict(self.defaults, event=event, host=fields.pop("host", None) or socket.gethostname(),
                             actor=self.actor, details=dict(details or {}))
        if mode is not None:
            record_fields["mode"] = mode
        record_fields.update((key, value) for key, value in fields.items() if value is not None)
        try:
            record = record_event(self.history_path, record_fields, self.check, key=self.history_key)
        except HistoryError as exc:
            raise SessionError(str(exc))
        self.records.append(record)
        return record

    def check_lock(self, done="nothing was changed"):
        """SessionError unless the lock of O(release_lock) is still this run's: a write under a
        lock that another run took over (or that was never taken) must not happen. It also
        refreshes the lock's heartbeat. `done` says what the caller did before it checked.
        Nothing to check in check mode, where no lock was written."""
        lock = self.release_lock
        if not lock or self.check:
            return
        state = read_lock(lock["path"], time.time())
        if state is None:
            raise SessionError("the stack lock %s is not held (it was never taken, released, or taken over as dead); "
                               "%s: run the playbook again" % (lock["path"], done))
        if not state.owned_by(lock["token"]) or not touch(lock["path"], lock["token"]):
            raise SessionError("the stack lock %s is held by %s, not by this run; %s: wait for it to "
                               "finish and run the playbook again" % (lock["path"], state.describe(), done))

    def keep_alive(self):
        """A context manager that refreshes the lock's heartbeat every few seconds while a
        module waits (health and slot waits, a canary window): a long wait is not a dead run."""
        lock = self.release_lock
        if not lock or self.check:
            return KeepAlive(None, None)
        return KeepAlive(lock["path"], lock["token"])

    def release(self, what_happened="the events were recorded"):
        """Give the lock back (never in check mode); whether a lock was removed, None when no
        release was asked for."""
        lock = self.release_lock
        if not lock or lock.get("keep"):
            return None
        try:
            return release(lock["path"], lock["token"], check_mode=self.check)["changed"]
        except LockError as exc:
            raise SessionError("%s, but the lock %s was not released: %s" % (what_happened, lock["path"], exc))
        except OSError as exc:
            raise SessionError("%s, but the lock %s could not be released: %s"
                               % (what_happened, lock["path"], exc.strerror or exc))

    def anchor(self):
        """{records, seq, hash} of what this session appended, for a module's result."""
        result = {"records": list(self.records),
                  "history_path": os.path.abspath(os.path.expanduser(self.history_path or ""))}
        if self.records:
            result.update(seq=self.records[-1]["seq"], hash=self.records[-1]["hash"])
        return result
