# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The stack lock: a file whose existence means that one run owns the stack.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports so that the unit tests can exercise every rule directly.

Protocol, on a local filesystem:
- acquire creates the file with O_CREAT|O_EXCL, which cannot succeed for two runs, and writes
  the holder as one JSON line (who, which playbook or AWX job, host, pid, since, and the
  SHA-256 of a random token that only the acquiring run knows);
- only two things remove the file: a release that presents the token, and the breaking of a
  lock older than its ttl. Both take an exclusive flock on the lock's directory and re-read the
  file under it before unlinking. As nothing can replace an existing file (creation is
  O_EXCL), the file judged under the flock is the file removed: two runs breaking the same
  stale lock cannot remove each other's fresh lock.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import secrets
import time

LOCK_FILE_MODE = 0o600
DIRECTORY_MODE = 0o750
POLL_SECONDS = 0.25
# Set by acquire; a caller's holder may not override them.
RESERVED_HOLDER_KEYS = ("host", "pid", "since", "token_sha256")
_MAX_LOCK_BYTES = 64 * 1024


class LockError(Exception):
    """A lock operation that did not happen; the message says what to do."""

    def __init__(self, message, holder=None, waited_seconds=0.0):
        super().__init__(message)
        self.holder = holder
        self.waited_seconds = waited_seconds


class LockHeldError(LockError):
    """Another run holds the lock and did not let go within the wait."""


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def rfc3339(epoch):
    """2026-11-27T03:00:00Z for a Unix time (whole seconds: the lock is coarse)."""
    moment = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text):
    """Unix time of a UTC RFC 3339 timestamp ending in Z, or None when it is not one."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    for layout in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            moment = datetime.datetime.strptime(text, layout)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


def token_digest(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def human_age(seconds):
    seconds = int(seconds)
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    return "%d h" % (seconds // 3600)


def public_holder(holder):
    """The holder as shown to users: everything but the token digest."""
    if holder is None:
        return None
    return {key: value for key, value in holder.items() if key != "token_sha256"}


class LockState:
    """What a lock file says: holder (None when unreadable), since (Unix time) and age."""

    __slots__ = ("holder", "since", "age")

    def __init__(self, holder, since, age):
        self.holder = holder
        self.since = since
        self.age = age

    def owned_by(self, token):
        return bool(token) and self.holder is not None and \
            self.holder.get("token_sha256") == token_digest(token)

    def describe(self):
        """root (playbook deploy.yml, AWX job 42) on host web1 since 2026-...Z (12 s ago)"""
        when = "since %s (%s ago)" % (rfc3339(self.since), human_age(self.age))
        holder = self.holder
        if holder is None:
            return "an unknown run (the lock file is empty or not JSON) %s" % when
        who = str(holder.get("user") or "an unknown user")
        about = []
        if holder.get("playbook"):
            about.append("playbook %s" % holder["playbook"])
        if holder.get("awx_job_id") not in (None, ""):
            about.append("AWX job %s" % holder["awx_job_id"])
        if about:
            who += " (%s)" % ", ".join(about)
        return "%s on host %s %s" % (who, holder.get("host") or "unknown", when)


def read_lock(path, now):
    """The state of the lock file at path, or None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        mtime = os.fstat(fd).st_mtime
        raw = os.read(fd, _MAX_LOCK_BYTES)
    finally:
        os.close(fd)
    try:
        holder = json.loads(raw.decode("utf-8"))
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        holder = None
    # An empty file is a run caught between creating and writing it, or one that died there:
    # the file's own time tells which.
    since = parse_rfc3339(holder.get("since")) if holder else None
    if since is None:
        since = mtime
    return LockState(holder, since, max(0.0, now - since))


def _holder_fields(holder):
    if not isinstance(holder, dict):
        raise LockError("holder must be a dict such as {user: ..., playbook: ...}, not %r." % (holder,))
    fields = {key: value for key, value in holder.items() if value is not None}
    reserved = sorted(set(fields) & set(RESERVED_HOLDER_KEYS))
    if reserved:
        raise LockError("holder.%s is filled in by the lock itself; leave it out." % reserved[0])
    if not isinstance(fields.get("user"), str) or not fields["user"]:
        raise LockError("holder.user must be a non-empty string, not %r." % (fields.get("user"),))
    for key, value in fields.items():
        if not isinstance(value, (str, int, float, bool)):
            raise LockError("holder.%s must be a string or a number, not %s."
                            % (key, type(value).__name__))
    return fields


def make_directory(path):
    """Create the lock's directory (mode 0750) when it is missing."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, DIRECTORY_MODE, exist_ok=True)
        os.chmod(directory, DIRECTORY_MODE)


class _DirectoryGuard:
    """Exclusive flock on the lock's directory, held by everything that removes the lock."""

    def __init__(self, path):
        self._directory = os.path.dirname(os.path.abspath(path))
        self._fd = None

    def __enter__(self):
        self._fd = os.open(self._directory, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        os.close(self._fd)


# --------------------------------------------------------------------------------------------
# Acquire and release
# --------------------------------------------------------------------------------------------


def _write_holder(fd, path, content):
    data = (json.dumps(content, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.unlink(path)  # a lock nobody can read helps nobody
        raise
    finally:
        os.close(fd)


def _break_stale(path, ttl, clock):
    """Remove the lock if, judged again under the guard, it is still older than ttl."""
    with _DirectoryGuard(path):
        state = read_lock(path, clock())
        if state is None or state.age <= ttl:
            return None
        os.unlink(path)
        return state


def _stale_report(state):
    report = public_holder(state.holder) or {}
    report = dict(report, age_seconds=int(state.age))
    if state.holder is None:
        report["since"] = rfc3339(state.since)
    return report


def held_message(path, state, waited=0):
    still = ", still after waiting %d s" % waited if waited else ""
    return ("stack is locked by %s%s; wait for it to finish, run again with "
            "-e swiftdeploy_lock_wait=SECONDS, or remove %s if that run is dead"
            % (state.describe(), still, path))


def option_problem(wait, ttl, wait_name="wait", ttl_name="ttl"):
    """Why wait or ttl (named as the module calls them) cannot be used, or None."""
    if wait < 0:
        return "%s: %d is negative; use 0 to fail at once or a number of seconds." % (wait_name, wait)
    if ttl < 1:
        return ("%s: %d is too small; use the age in seconds after which a lock is stale (default 3600)."
                % (ttl_name, ttl))
    return None


def acquire(path, holder, host, pid, wait=0, ttl=3600, token=None, check_mode=False,
            clock=time.time, monotonic=time.monotonic, sleep=time.sleep, poll=POLL_SECONDS):
    """Take the lock at path for holder, waiting up to `wait` seconds for another run.

    Returns {changed, free, token, holder, waited_seconds, broken_stale}. A lock older than
    ttl seconds is broken and its holder reported in broken_stale. Given the token of the
    current lock, acquire confirms it (changed false). In check mode nothing is written, but a
    lock held by another run still fails, so a check run tells the truth.
    Raises LockHeldError when another run still holds the lock after `wait`.
    """
    fields = _holder_fields(holder)
    if wait < 0 or ttl < 1:
        raise LockError("wait must be 0 or more and ttl 1 or more seconds (wait=%r, ttl=%r)."
                        % (wait, ttl))
    started = monotonic()
    deadline = started + wait
    waited = False
    broken = None

    def result(changed, new_token, written):
        return {"changed": changed, "free": True, "token": new_token,
                "holder": public_holder(written),
                "waited_seconds": round(monotonic() - started, 3) if waited else 0.0,
                "broken_stale": broken}

    if not check_mode:
        make_directory(path)
    while True:
        if not check_mode:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             LOCK_FILE_MODE)
            except FileExistsError:
                pass
            else:
                new_token = secrets.token_hex(16)
                content = dict(fields, host=host, pid=pid, since=rfc3339(clock()),
                               token_sha256=token_digest(new_token))
                _write_holder(fd, path, content)
                return result(True, new_token, content)
        state = read_lock(path, clock())
        if state is None:
            if check_mode:
                return result(True, secrets.token_hex(16),
                              dict(fields, host=host, pid=pid, since=rfc3339(clock())))
            continue  # released between our create and our read: try again at once
        if state.owned_by(token):
            return result(False, token, state.holder)
        if state.age > ttl:
            if check_mode:
                broken = _stale_report(state)
                return result(True, secrets.token_hex(16),
                              dict(fields, host=host, pid=pid, since=rfc3339(clock())))
            gone = _break_stale(path, ttl, clock)
            if gone is not None:
                broken = _stale_report(gone)
            continue
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise LockHeldError(held_message(path, state, wait if waited else 0),
                                holder=public_holder(state.holder),
                                waited_seconds=round(monotonic() - started, 3) if waited else 0.0)
        waited = True
        sleep(min(poll, remaining))


def release(path, token, check_mode=False, clock=time.time):
    """Remove the lock at path if token is the one its acquire returned.

    Returns {changed, holder}: changed false and holder None when there was no lock.
    Raises LockError for a missing or wrong token, naming the holder.
    """
    if not os.path.lexists(path):
        return {"changed": False, "holder": None}
    if not token:
        state = read_lock(path, clock())
        if state is None:
            return {"changed": False, "holder": None}
        raise LockError("a token is needed to release %s, held by %s: pass the token that "
                        "state=acquired returned (register that task), or remove %s by hand if "
                        "that run is dead." % (path, state.describe(), path),
                        holder=public_holder(state.holder))
    with _DirectoryGuard(path):
        state = read_lock(path, clock())
        if state is None:
            return {"changed": False, "holder": None}
        if not state.owned_by(token):
            raise LockError("%s is held by %s, and the token given is not the one that run got: "
                            "only the run that acquired the lock can release it; remove %s by "
                            "hand if that run is dead." % (path, state.describe(), path),
                            holder=public_holder(state.holder))
        if not check_mode:
            os.unlink(path)
        return {"changed": True, "holder": public_holder(state.holder)}
