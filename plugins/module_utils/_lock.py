# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The stack lock: a file whose existence means that one run owns the stack.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports so that the unit tests can exercise every rule directly.

Protocol, on a local filesystem:
- acquire creates the file with O_CREAT|O_EXCL, which cannot succeed for two runs, and writes
  the holder as one JSON line (who, which playbook or AWX job, host, pid, since, the
  controller that runs the play, and the SHA-256 of a random token that only the acquiring run
  knows);
- the file's mtime is the holder's heartbeat: every call that presents the token touches it
  (`touch`), and `KeepAlive` touches it every few seconds while a module waits;
- only two things remove the file: a release that presents the token, and a takeover. A lock
  is taken over when it is dead (`judge`): no heartbeat for stale_after seconds, its since or
  heartbeat in the future (a broken clock or a forged file), older than the ttl backstop, or
  named by the caller's controller as one whose playbook process is gone (take_over). Both take
  an exclusive flock on the lock's directory and re-read the file under it before unlinking.
  As nothing can replace an existing file (creation is O_EXCL), the file judged under the flock
  is the file removed: two runs taking over the same dead lock cannot remove each other's fresh
  lock.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as progress

# Readable by the lock directory's group (the users who deploy, see make_directory), so that a
# run of another user can name the holder and judge its heartbeat; the token is only a digest.
LOCK_FILE_MODE = 0o640
# The directory is shared by the users who deploy: group-writable so that one of them can take
# over another's dead lock, setgid so that every lock file gets the directory's group.
DIRECTORY_MODE = 0o2770
SHARED_GROUP = "docker"
POLL_SECONDS = 0.25
# A lock file without its holder yet is read again for up to this long, WRITING_POLL apart.
WRITING_SECONDS = 2.0
WRITING_POLL = 0.05
WRITING_REREADS = 40
STALE_AFTER = 90
# How far a lock's time may lie ahead of this host's clock before the lock counts as broken.
CLOCK_SKEW_SECONDS = 30
HEARTBEAT_SECONDS = 5
# A lock named by take_over is taken over once its heartbeat is older than this.
TAKE_OVER_QUIET_SECONDS = 2 * HEARTBEAT_SECONDS
# Set by acquire; a caller's holder may not override them.
RESERVED_HOLDER_KEYS = ("host", "pid", "since", "token_sha256", "controller")
_MAX_LOCK_BYTES = 64 * 1024


class LockError(Exception):
    """A lock operation that did not happen; the message says what to do."""

    def __init__(self, message, holder=None, waited_seconds=0.0, lock_id=None):
        super().__init__(message)
        self.holder = holder
        self.waited_seconds = waited_seconds
        # The SHA-256 of the holder's token: names this very lock for a takeover (take_over) and
        # reveals nothing that releases or refreshes it.
        self.lock_id = lock_id


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
    """What a lock file says: holder (None when unreadable), since (Unix time) and age, and its
    heartbeat (the file's mtime) with the heartbeat's age; ages are negative for a time in the
    future."""

    __slots__ = ("holder", "since", "age", "heartbeat", "heartbeat_age")

    def __init__(self, holder, since, age, heartbeat=None, heartbeat_age=0.0):
        self.holder = holder
        self.since = since
        self.age = age
        self.heartbeat = since if heartbeat is None else heartbeat
        self.heartbeat_age = heartbeat_age

    @property
    def lock_id(self):
        return self.holder.get("token_sha256") if self.holder else None

    def owned_by(self, token):
        return bool(token) and self.holder is not None and \
            self.holder.get("token_sha256") == token_digest(token)

    def describe(self):
        """root (playbook deploy.yml, AWX job 42) on host web1 since 2026-...Z (12 s ago)"""
        if self.age < 0:
            when = "since %s (%s in the future)" % (rfc3339(self.since), human_age(-self.age))
        else:
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


def holder_summary(holder):
    """root (playbook deploy.yml, AWX job 42, controller ctl1): a lock's holder in a progress
    line, which names the managed host itself."""
    if not isinstance(holder, dict):
        return "an unknown run"
    about = ["playbook %s" % holder["playbook"]] if holder.get("playbook") else []
    if holder.get("awx_job_id") not in (None, ""):
        about.append("AWX job %s" % holder["awx_job_id"])
    controller = holder.get("controller")
    if isinstance(controller, dict) and controller.get("host"):
        about.append("controller %s" % controller["host"])
    return "%s%s" % (holder.get("user") or "an unknown user", " (%s)" % ", ".join(about) if about else "")


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
    return LockState(holder, since, now - since, mtime, now - mtime)


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


def _shared_gid():
    try:
        import grp  # POSIX only, like flock
        return grp.getgrnam(SHARED_GROUP).gr_gid
    except (ImportError, KeyError):
        return None


def make_directory(path):
    """Create the lock's directory when it is missing: mode 2770, group docker when there is
    one (the users who may deploy, who are root on the host through Docker anyway), so that
    every user who deploys sees, and can take over, every other's lock on the stack. Refuse a
    directory that is a symbolic link: whoever planted it would choose where locks go."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.islink(directory):
        raise LockError("the lock directory %s is a symbolic link; remove it (a run creates the directory "
                        "itself) or choose another swiftdeploy_lock_dir." % directory)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755, exist_ok=True)
        os.chmod(directory, DIRECTORY_MODE)
        gid = _shared_gid()
        if gid is not None:
            try:
                os.chown(directory, -1, gid)
            except PermissionError:
                pass  # not a member: the directory stays the creator's group


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


def judge(state, ttl=3600, stale_after=STALE_AFTER, take_over=None):
    """Why the lock in state is dead and may be taken over, or None while its holder lives."""
    if state.age < -CLOCK_SKEW_SECONDS:
        return ("its since %s lies %s in the future of this host's clock: the lock is broken"
                % (rfc3339(state.since), human_age(-state.age)))
    if state.heartbeat_age < -CLOCK_SKEW_SECONDS:
        return ("its heartbeat %s lies %s in the future of this host's clock: the lock is broken"
                % (rfc3339(state.heartbeat), human_age(-state.heartbeat_age)))
    if take_over and state.lock_id == take_over and state.heartbeat_age > TAKE_OVER_QUIET_SECONDS:
        # The playbook is gone, but a module it started may still run on the host (Ansible's
        # workers leave the playbook's session): only once nothing has refreshed the lock for
        # two keeper intervals is its work over too.
        controller = (state.holder or {}).get("controller") or {}
        return ("its playbook process (pid %s on controller %s) is gone and nothing refreshed the lock for %s"
                % (controller.get("pid", "?"), controller.get("host", "?"), human_age(state.heartbeat_age)))
    if state.heartbeat_age > stale_after:
        return "no heartbeat for %s (stale after %d s)" % (human_age(state.heartbeat_age), stale_after)
    if state.age > ttl:
        return "older than its ttl of %d s (since %s)" % (ttl, rfc3339(state.since))
    return None


def _take_over(path, clock, **rules):
    """Remove the lock if, judged again under the guard, it is still dead: (state, reason)."""
    with _DirectoryGuard(path):
        state = read_lock(path, clock())
        reason = judge(state, **rules) if state is not None else None
        if reason is None:
            return None
        os.unlink(path)
        return state, reason


def _takeover_report(state, reason):
    report = public_holder(state.holder) or {}
    report = dict(report, age_seconds=int(state.age), heartbeat_age_seconds=int(state.heartbeat_age),
                  reason=reason)
    if state.holder is None:
        report["since"] = rfc3339(state.since)
    return report


def held_message(path, state, waited=0):
    still = ", still after waiting %d s" % waited if waited else ""
    return ("stack is locked by %s%s; wait for it to finish, run again with "
            "-e swiftdeploy_lock_wait=SECONDS, or remove %s if that run is dead"
            % (state.describe(), still, path))


def option_problem(wait, ttl, wait_name="wait", ttl_name="ttl", stale_after=STALE_AFTER,
                   stale_after_name="stale_after"):
    """Why wait, ttl or stale_after (named as the module calls them) cannot be used, or None."""
    if wait < 0:
        return "%s: %d is negative; use 0 to fail at once or a number of seconds." % (wait_name, wait)
    if ttl < 1:
        return ("%s: %d is too small; use the age in seconds after which a lock is stale (default 3600)."
                % (ttl_name, ttl))
    if stale_after < 2 * HEARTBEAT_SECONDS:
        return ("%s: %d is too small; a holder touches its lock every %d s, so use %d s or more (default %d)."
                % (stale_after_name, stale_after, HEARTBEAT_SECONDS, 2 * HEARTBEAT_SECONDS, STALE_AFTER))
    return None


def acquire(path, holder, host, pid, wait=0, ttl=3600, token=None, check_mode=False,
            stale_after=STALE_AFTER, controller=None, take_over=None,
            clock=time.time, monotonic=time.monotonic, sleep=time.sleep, poll=POLL_SECONDS):
    """Take the lock at path for holder, waiting up to `wait` seconds for another run.

    Returns {changed, free, token, holder, waited_seconds, taken_over}. A dead lock (see
    `judge`) is taken over and its holder, with the reason, reported in taken_over. Given the
    token of the current lock, acquire confirms it (changed false) and refreshes its heartbeat;
    given a token and a free lock, it takes the lock with that token (so that a caller can keep
    the token out of every result). controller ({host, boot_id, pid, pid_start}) is written as
    the holder's controller; take_over names (by its lock_id) a lock whose controller process
    the caller found gone. In check mode nothing is written, but a lock held by another run
    still fails, so a check run tells the truth.
    Raises LockHeldError when another run still holds the lock after `wait`.
    """
    fields = _holder_fields(holder)
    problem = option_problem(wait, ttl, stale_after=stale_after)
    if problem:
        raise LockError(problem)
    started = monotonic()
    deadline = started + wait
    waited = False
    taken = None
    rules = {"ttl": ttl, "stale_after": stale_after, "take_over": take_over}

    def content():
        written = dict(fields, host=host, pid=pid, since=rfc3339(clock()))
        if controller:
            written["controller"] = dict(controller)
        return written

    def result(changed, new_token, written):
        return {"changed": changed, "free": True, "token": new_token,
                "holder": public_holder(written),
                "waited_seconds": round(monotonic() - started, 3) if waited else 0.0,
                "taken_over": taken}

    if not check_mode:
        make_directory(path)
    rereads = 0
    while True:
        if not check_mode:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             LOCK_FILE_MODE)
            except FileExistsError:
                pass
            else:
                new_token = token or secrets.token_hex(16)
                written = dict(content(), token_sha256=token_digest(new_token))
                _write_holder(fd, path, written)
                now = clock()
                os.utime(path, (now, now))  # the first heartbeat, on the same clock as since
                return result(True, new_token, written)
        state = read_lock(path, clock())
        if state is None:
            if check_mode:
                return result(True, token or secrets.token_hex(16), content())
            continue  # released between our create and our read: try again at once
        if state.owned_by(token):
            if not check_mode:
                touch(path, token, clock)
            return result(False, token, state.holder)
        # No holder yet in a file created a moment ago: a run between its create and its write.
        # Read it again rather than name "an unknown run" (a second run started at the same
        # instant saw exactly that).
        if state.holder is None and state.age < WRITING_SECONDS and rereads < WRITING_REREADS:
            rereads += 1
            sleep(WRITING_POLL)
            continue
        reason = judge(state, **rules)
        if reason is not None:
            if check_mode:
                taken = _takeover_report(state, reason)
                return result(True, token or secrets.token_hex(16), content())
            gone = _take_over(path, clock, **rules)
            if gone is not None:
                taken = _takeover_report(*gone)
            continue
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise LockHeldError(held_message(path, state, wait if waited else 0),
                                holder=public_holder(state.holder),
                                waited_seconds=round(monotonic() - started, 3) if waited else 0.0,
                                lock_id=state.lock_id)
        if not waited:
            # For the action plugin's progress lines (module_utils/_progress.py); the module
            # clears it once acquire returns.
            progress.note("the stack lock held by %s" % holder_summary(state.holder), wait, clock() - (monotonic() - started))
        waited = True
        sleep(min(poll, remaining))


# --------------------------------------------------------------------------------------------
# Heartbeat
# --------------------------------------------------------------------------------------------


def touch(path, token, clock=time.time):
    """Refresh the heartbeat of the lock at path if token holds it; whether it does.

    The file is checked and touched through one descriptor, so the file touched is the file
    whose holder was checked, even if the lock changes hands in between."""
    if not token:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            holder = json.loads(os.read(fd, _MAX_LOCK_BYTES).decode("utf-8"))
        except ValueError:
            return False
        if not isinstance(holder, dict) or holder.get("token_sha256") != token_digest(token):
            return False
        now = clock()
        os.utime(fd, (now, now))
        return True
    finally:
        os.close(fd)


class KeepAlive(object):
    """A daemon thread that touches the lock every `every` seconds while a module waits (a
    health wait, a canary window), so that a long wait does not look like a dead holder. It
    stops at the end of the `with`, or for good once the lock is no longer this token's (a
    later write then fails on the lock check, naming the new holder)."""

    def __init__(self, path, token, every=HEARTBEAT_SECONDS, clock=time.time):
        self.path = path
        self.token = token
        self.every = every
        self.clock = clock
        self.lost = False
        self.beats = 0
        self._stop = threading.Event()
        self._thread = None

    def _run(self):
        while not self._stop.wait(self.every):
            try:
                alive = touch(self.path, self.token, self.clock)
            except OSError:
                alive = False
            if not alive:
                self.lost = True
                return
            self.beats += 1

    def __enter__(self):
        if self.path and self.token:
            touch(self.path, self.token, self.clock)
            self._thread = threading.Thread(target=self._run, name="swiftdeploy-lock-keeper", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False


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


# --------------------------------------------------------------------------------------------
# The controller's side (the action plugin): who runs the play, and whether it still runs
# --------------------------------------------------------------------------------------------


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def process_start(pid):
    """The start time of process pid (clock ticks since boot, /proc/<pid>/stat field 22), or
    None when there is no such process or no /proc. With the boot id, it tells a live process
    from a new one that got the same pid."""
    stat = _read("/proc/%d/stat" % pid)
    if not stat:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def controller_identity(pid, hostname):
    """{host, boot_id, pid, pid_start} of the playbook process pid on this machine, or None
    where there is no /proc (then a lock falls back to its heartbeat alone)."""
    boot_id = (_read("/proc/sys/kernel/random/boot_id") or "").strip()
    start = process_start(pid)
    if not boot_id or start is None:
        return None
    return {"host": hostname, "boot_id": boot_id, "pid": pid, "pid_start": start}


def controller_gone(theirs, mine):
    """Whether the controller process that wrote `theirs` into a lock is certainly gone, as seen
    by the controller `mine`: only a lock of this very machine since its last boot can be judged
    (same host name and boot id), and its process is gone when no process has its pid and start
    time. A lock of another machine, or one without an identity, is judged by its heartbeat."""
    if not isinstance(theirs, dict) or not mine:
        return False
    if theirs.get("host") != mine["host"] or theirs.get("boot_id") != mine["boot_id"]:
        return False
    pid = theirs.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if pid == mine["pid"]:
        return False  # this very playbook holds it (another host of the same play, or a re-take)
    return process_start(pid) != theirs.get("pid_start")
