"""The stack lock: atomic acquire, waiting, heartbeats and takeovers, tokens, check mode, exact messages."""

import datetime
import json
import multiprocessing
import os
import stat
import time

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _lock as lock
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import (
    LockError,
    LockHeldError,
    acquire,
    release,
)

T0 = datetime.datetime(2026, 11, 27, 3, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
HOLDER = {"user": "root", "playbook": "deploy.yml", "awx_job_id": 42}


class FakeTime:
    """A wall clock and a monotonic clock that only move when the code sleeps."""

    def __init__(self, now=T0):
        self.now = now
        self.sleeps = []
        self.on_sleep = None

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))

    def kwargs(self):
        return {"clock": self.clock, "monotonic": self.clock, "sleep": self.sleep}


@pytest.fixture
def fake():
    return FakeTime()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "project" / ".swiftdeploy.lock")


def take(path, fake, holder=None, host="web1", pid=4242, **options):
    return acquire(path, HOLDER if holder is None else holder, host=host, pid=pid, **fake.kwargs(),
                   **options)


def held_message(path, holder_text, extra=""):
    return ("stack is locked by %s%s; wait for it to finish, run again with "
            "-e swiftdeploy_lock_wait=SECONDS, or remove %s if that run is dead"
            % (holder_text, extra, path))


# --------------------------------------------------------------------------------------------
# Acquire and release
# --------------------------------------------------------------------------------------------


def test_acquire_writes_the_holder_and_returns_a_token(path, fake):
    result = take(path, fake)
    expected_holder = {"user": "root", "playbook": "deploy.yml", "awx_job_id": 42, "host": "web1",
                       "pid": 4242, "since": "2026-11-27T03:00:00Z"}
    assert result == {"changed": True, "free": True, "token": result["token"],
                      "holder": expected_holder, "waited_seconds": 0.0, "taken_over": None}
    assert len(result["token"]) == 32
    with open(path) as handle:
        content = json.loads(handle.read())
    assert content == dict(expected_holder, token_sha256=lock.token_digest(result["token"]))
    assert result["token"] not in open(path).read()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o2770
    assert os.stat(path).st_mtime == T0, "the first heartbeat is on the lock's clock"


def test_a_held_lock_fails_at_once_naming_the_holder(path, fake):
    take(path, fake)
    fake.now += 12
    with pytest.raises(LockHeldError) as info:
        take(path, fake, holder={"user": "alice"})
    assert str(info.value) == held_message(
        path, "root (playbook deploy.yml, AWX job 42) on host web1 since 2026-11-27T03:00:00Z "
              "(12 s ago)")
    assert info.value.holder["user"] == "root" and "token_sha256" not in info.value.holder
    assert info.value.waited_seconds == 0.0
    assert fake.sleeps == []


@pytest.mark.parametrize("holder, age, text", [
    ({"user": "bob"}, 5, "bob on host web1 since 2026-11-27T03:00:00Z (5 s ago)"),
    ({"user": "bob", "playbook": "promote.yml"}, 600,
     "bob (playbook promote.yml) on host web1 since 2026-11-27T03:00:00Z (10 min ago)"),
    ({"user": "awx", "awx_job_id": "7"}, 3 * 3600 - 1,
     "awx (AWX job 7) on host web1 since 2026-11-27T03:00:00Z (2 h ago)"),
])
def test_holder_descriptions(path, fake, holder, age, text):
    token = take(path, fake, holder=holder)["token"]
    fake.now += age
    lock.touch(path, token, fake.clock)
    with pytest.raises(LockHeldError, match="^stack is locked by (.*?); wait") as info:
        take(path, fake, holder={"user": "alice"}, ttl=4 * 3600)
    assert str(info.value) == held_message(path, text)


def test_waiting_for_a_release(path, fake):
    first = take(path, fake)
    fake.on_sleep = lambda count: count == 8 and release(path, first["token"])
    second = take(path, fake, holder={"user": "alice"}, wait=10)
    assert second["changed"] and second["holder"]["user"] == "alice"
    assert second["waited_seconds"] == 2.0  # eight polls of 0.25 s
    assert second["token"] != first["token"]


def test_waiting_in_vain(path, fake):
    take(path, fake)
    with pytest.raises(LockHeldError) as info:
        take(path, fake, holder={"user": "alice"}, wait=3)
    assert str(info.value) == held_message(
        path, "root (playbook deploy.yml, AWX job 42) on host web1 since 2026-11-27T03:00:00Z "
              "(3 s ago)", ", still after waiting 3 s")
    assert info.value.waited_seconds == 3.0
    assert sum(fake.sleeps) == 3.0


def test_release_removes_only_with_the_token(path, fake):
    token = take(path, fake)["token"]
    with pytest.raises(LockError) as info:
        release(path, "0" * 32, clock=fake.clock)
    assert str(info.value) == (
        "%s is held by root (playbook deploy.yml, AWX job 42) on host web1 since "
        "2026-11-27T03:00:00Z (0 s ago), and the token given is not the one that run got: only the "
        "run that acquired the lock can release it; remove %s by hand if that run is dead."
        % (path, path))
    with pytest.raises(LockError) as info:
        release(path, None, clock=fake.clock)
    assert str(info.value) == (
        "a token is needed to release %s, held by root (playbook deploy.yml, AWX job 42) on host "
        "web1 since 2026-11-27T03:00:00Z (0 s ago): pass the token that state=acquired returned "
        "(register that task), or remove %s by hand if that run is dead." % (path, path))
    assert os.path.exists(path)
    result = release(path, token, clock=fake.clock)
    assert result["changed"] and result["holder"]["user"] == "root"
    assert not os.path.exists(path)
    assert release(path, token) == {"changed": False, "holder": None}
    assert release(path, None) == {"changed": False, "holder": None}


def test_acquire_with_the_current_token_confirms_the_lock(path, fake):
    token = take(path, fake)["token"]
    again = take(path, fake, token=token)
    assert (again["changed"], again["token"], again["holder"]["user"]) == (False, token, "root")
    with pytest.raises(LockHeldError):
        take(path, fake, token="f" * 32)


# --------------------------------------------------------------------------------------------
# Stale locks
# --------------------------------------------------------------------------------------------


def test_a_lock_without_heartbeat_is_taken_over_and_reported(path, fake):
    take(path, fake)
    fake.now += 91
    result = take(path, fake, holder={"user": "alice"})
    assert result["changed"] and result["holder"]["user"] == "alice"
    assert result["taken_over"] == {"user": "root", "playbook": "deploy.yml", "awx_job_id": 42,
                                    "host": "web1", "pid": 4242, "since": "2026-11-27T03:00:00Z",
                                    "age_seconds": 91, "heartbeat_age_seconds": 91,
                                    "reason": "no heartbeat for 91 s (stale after 90 s)"}
    assert json.load(open(path))["user"] == "alice"


def test_stale_after_is_the_limit_and_a_heartbeat_resets_it(path, fake):
    token = take(path, fake)["token"]
    fake.now += 60
    assert lock.touch(path, token, fake.clock) is True
    fake.now += 60  # 120 s old, but its heartbeat is 60 s old
    with pytest.raises(LockHeldError):
        take(path, fake, holder={"user": "alice"})
    fake.now += 30
    with pytest.raises(LockHeldError):
        take(path, fake, holder={"user": "alice"})
    fake.now += 1
    assert take(path, fake, holder={"user": "alice"})["taken_over"]["heartbeat_age_seconds"] == 91


def test_presenting_the_token_refreshes_the_heartbeat(path, fake):
    token = take(path, fake)["token"]
    fake.now += 80
    take(path, fake, token=token)
    assert os.stat(path).st_mtime == T0 + 80
    fake.now += 80
    with pytest.raises(LockHeldError):
        take(path, fake, holder={"user": "alice"})


def test_touch_refreshes_only_the_holders_lock(path, fake):
    token = take(path, fake)["token"]
    fake.now += 50
    assert lock.touch(path, "f" * 32, fake.clock) is False
    assert lock.touch(path, None, fake.clock) is False
    assert os.stat(path).st_mtime == T0
    release(path, token)
    assert lock.touch(path, token, fake.clock) is False


def test_ttl_is_a_backstop_whatever_the_heartbeat(path, fake):
    token = take(path, fake)
    fake.now += 60
    lock.touch(path, token["token"], fake.clock)
    with pytest.raises(LockHeldError):
        take(path, fake, holder={"user": "alice"}, ttl=60)
    fake.now += 1
    lock.touch(path, token["token"], fake.clock)
    taken = take(path, fake, holder={"user": "alice"}, ttl=60)["taken_over"]
    assert taken["reason"] == "older than its ttl of 60 s (since 2026-11-27T03:00:00Z)"


def test_an_empty_lock_file_is_judged_by_its_heartbeat(path, fake):
    """An empty file is a run between create and write, or one that died there."""
    os.makedirs(os.path.dirname(path))
    open(path, "w").close()
    os.utime(path, (T0, T0))
    fake.now += 5
    with pytest.raises(LockHeldError) as info:
        take(path, fake)
    assert str(info.value) == held_message(
        path, "an unknown run (the lock file is empty or not JSON) since 2026-11-27T03:00:00Z "
              "(5 s ago)")
    fake.now += 90
    result = take(path, fake)
    assert result["taken_over"] == {"since": "2026-11-27T03:00:00Z", "age_seconds": 95, "heartbeat_age_seconds": 95,
                                    "reason": "no heartbeat for 95 s (stale after 90 s)"}


def test_a_lock_being_written_is_read_again_and_its_holder_named(path, fake):
    """Two runs at once: the second may read the file between the first's create and write."""
    os.makedirs(os.path.dirname(path))
    open(path, "w").close()
    os.utime(path, (T0, T0))

    def written(_count):
        with open(path, "w") as handle:
            handle.write(json.dumps({"user": "bob", "host": "web2", "pid": 7, "since": "2026-11-27T03:00:00Z",
                                     "token_sha256": "0" * 64}))
        os.utime(path, (T0, T0))
    fake.on_sleep = written
    with pytest.raises(LockHeldError) as info:
        take(path, fake)
    assert "stack is locked by bob on host web2 since 2026-11-27T03:00:00Z" in str(info.value)
    assert fake.sleeps == [0.05]


def test_a_lock_dated_in_the_future_is_broken_with_a_message(path, fake):
    """A forged or clock-jumped lock must not block the stack until that date."""
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        json.dump({"user": "mallory", "host": "h", "pid": 1, "since": "2027-01-01T00:00:00Z",
                   "token_sha256": "0" * 64}, handle)
    os.utime(path, (T0, T0))
    result = take(path, fake)
    assert result["taken_over"]["reason"] == (
        "its since 2027-01-01T00:00:00Z lies 837 h in the future of this host's clock: the lock is broken")
    assert json.load(open(path))["user"] == "root"


def test_a_heartbeat_in_the_future_is_broken_but_a_small_skew_is_tolerated(path, fake):
    take(path, fake, holder={"user": "skewed"})
    os.utime(path, (T0 + 30, T0 + 30))  # within the allowance: a live holder
    with pytest.raises(LockHeldError):
        take(path, fake)
    os.utime(path, (T0 + 3600, T0 + 3600))  # a heartbeat that would keep it alive for an hour
    result = take(path, fake)
    assert result["taken_over"]["reason"] == (
        "its heartbeat 2026-11-27T04:00:00Z lies 60 min in the future of this host's clock: the lock is broken")


def test_take_over_names_one_lock_and_only_that_one(path, fake):
    """The action plugin found the holder's playbook process gone: take over that lock, not a
    fresh one that replaced it meanwhile."""
    controller = {"host": "ctl", "boot_id": "b", "pid": 777, "pid_start": 1}
    take(path, fake, controller=controller)
    fake.now += 10
    with pytest.raises(LockHeldError) as info:
        take(path, fake, holder={"user": "alice"})
    dead_id = info.value.lock_id
    assert dead_id == json.load(open(path))["token_sha256"]
    assert info.value.holder["controller"] == controller
    with pytest.raises(LockHeldError):
        take(path, fake, holder={"user": "alice"}, take_over="0" * 64)
    with pytest.raises(LockHeldError):  # refreshed 10 s ago: a module of that playbook may still run
        take(path, fake, holder={"user": "alice"}, take_over=dead_id)
    fake.now += 1
    result = take(path, fake, holder={"user": "alice"}, take_over=dead_id)
    assert result["taken_over"]["reason"] == (
        "its playbook process (pid 777 on controller ctl) is gone and nothing refreshed the lock for 11 s")
    with pytest.raises(LockHeldError):  # alice's fresh lock is not the one named
        take(path, fake, holder={"user": "bob"}, take_over=dead_id)


def test_a_given_token_takes_a_free_lock(path, fake):
    """The role makes the token on the controller so that no result carries it."""
    result = take(path, fake, token="a" * 32)
    assert result["token"] == "a" * 32
    assert json.load(open(path))["token_sha256"] == lock.token_digest("a" * 32)
    assert "a" * 32 not in open(path).read()
    assert release(path, "a" * 32)["changed"]


def test_taking_over_rechecks_under_the_guard(path, fake):
    """A run that judged the lock dead must not remove the fresh lock another run took since."""
    take(path, fake)
    fake.now += 4000
    stale_seen = lock.read_lock(path, fake.clock())
    assert stale_seen.heartbeat_age > 90
    fresh = take(path, fake, holder={"user": "quick"})  # another run took it over first
    assert fresh["taken_over"]
    assert lock._take_over(path, fake.clock) is None
    assert json.load(open(path))["user"] == "quick"


def _race_for_stale(path, barrier, results):
    barrier.wait()
    try:
        result = acquire(path, {"user": "racer%d" % os.getpid()}, host="h", pid=os.getpid())
        results.put(("acquired", bool(result["taken_over"])))
    except LockHeldError:
        results.put(("held", False))


def test_many_runs_breaking_one_stale_lock_leave_one_holder(path):
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        json.dump({"user": "dead", "host": "h", "pid": 1, "since": "2020-01-01T00:00:00Z"}, handle)
    os.utime(path, (1577836800, 1577836800))
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Queue()
    workers = [context.Process(target=_race_for_stale, args=(path, barrier, results))
               for number in range(8)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for worker in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(kind for kind, broke in outcomes) == ["acquired"] + ["held"] * 7
    assert json.load(open(path))["user"].startswith("racer")


# --------------------------------------------------------------------------------------------
# Check mode
# --------------------------------------------------------------------------------------------


def test_check_mode_on_a_free_lock_writes_nothing(tmp_path, path, fake):
    result = take(path, fake, check_mode=True)
    assert result["changed"] and result["free"] and result["token"]
    assert not os.path.exists(os.path.dirname(path))


def test_check_mode_tells_the_truth_about_a_held_lock(path, fake):
    take(path, fake)
    with pytest.raises(LockHeldError, match="^stack is locked by root"):
        take(path, fake, holder={"user": "alice"}, check_mode=True)


def test_check_mode_reports_a_dead_lock_without_taking_it_over(path, fake):
    take(path, fake)
    fake.now += 7200
    result = take(path, fake, holder={"user": "alice"}, check_mode=True)
    assert result["taken_over"]["user"] == "root"
    assert json.load(open(path))["user"] == "root"


def test_check_mode_release_keeps_the_lock(path, fake):
    token = take(path, fake)["token"]
    assert release(path, token, check_mode=True)["changed"] is True
    assert os.path.exists(path)
    with pytest.raises(LockError, match="the token given is not the one that run got"):
        release(path, "nope", check_mode=True)


# --------------------------------------------------------------------------------------------
# Validation and small helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("holder, message", [
    ({"user": "u", "host": "x"}, "holder.host is filled in by the lock itself; leave it out."),
    ({"user": "u", "token_sha256": "x"}, "holder.token_sha256 is filled in by the lock itself"),
    ({"user": "u", "controller": "x"}, "holder.controller is filled in by the lock itself"),
    ({"playbook": "deploy.yml"}, "holder.user must be a non-empty string, not None."),
    ({"user": "u", "extra": {"a": 1}}, "holder.extra must be a string or a number, not dict."),
    ("root", "holder must be a dict such as {user: ..., playbook: ...}, not 'root'."),
])
def test_bad_holders_are_refused(path, fake, holder, message):
    with pytest.raises(LockError) as info:
        take(path, fake, holder=holder)
    assert str(info.value).startswith(message)
    assert not os.path.exists(path)


def test_null_holder_values_are_dropped(path, fake):
    result = take(path, fake, holder={"user": "u", "awx_job_id": None})
    assert "awx_job_id" not in result["holder"]


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (119, "119 s"), (120, "2 min"),
                                           (7199, "119 min"), (7200, "2 h"), (90000, "25 h")])
def test_human_age(seconds, text):
    assert lock.human_age(seconds) == text


@pytest.mark.parametrize("text, expected", [
    ("2026-11-27T03:00:00Z", T0), ("2026-11-27T03:00:00.500Z", T0 + 0.5),
    ("2026-11-27T03:00:00", None), ("yesterday", None), (None, None), (17, None),
])
def test_parse_rfc3339(text, expected):
    assert lock.parse_rfc3339(text) == expected


def test_rfc3339_round_trip():
    assert lock.rfc3339(T0 + 0.9) == "2026-11-27T03:00:00Z"
    assert lock.parse_rfc3339(lock.rfc3339(T0)) == T0


@pytest.mark.parametrize("wait, ttl, stale_after, expected", [
    (0, 1, 10, None),
    (-1, 3600, 90, "lock_wait: -1 is negative; use 0 to fail at once or a number of seconds."),
    (5, 0, 90, "lock_ttl: 0 is too small; use the age in seconds after which a lock is stale (default 3600)."),
    (5, 60, 9, "lock_stale_after: 9 is too small; a holder touches its lock every 5 s, so use 10 s or more "
               "(default 90)."),
])
def test_option_problem_names_the_option_as_the_module_calls_it(wait, ttl, stale_after, expected):
    assert lock.option_problem(wait, ttl, "lock_wait", "lock_ttl", stale_after, "lock_stale_after") == expected


# --------------------------------------------------------------------------------------------
# Keeping a lock alive, the lock directory, and the controller's identity
# --------------------------------------------------------------------------------------------


def test_keep_alive_touches_while_held_and_stops_when_lost(path):
    token = acquire(path, HOLDER, host="h", pid=1)["token"]
    os.utime(path, (1000, 1000))
    with lock.KeepAlive(path, token, every=0.05) as keeper:
        deadline = time.monotonic() + 5
        while keeper.beats < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert keeper.beats >= 2 and os.stat(path).st_mtime > 1000
        release(path, token)
        taken = acquire(path, {"user": "other"}, host="h", pid=2)
        os.utime(path, (1000, 1000))
        time.sleep(0.3)
        assert keeper.lost, "the keeper stops once the lock is another's"
    assert os.stat(path).st_mtime == 1000, "the keeper never touches another run's lock"
    assert taken["holder"]["user"] == "other"


def test_a_symlinked_lock_directory_is_refused(tmp_path, fake):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "locks").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockError) as info:
        take(str(tmp_path / "locks" / "shop.lock"), fake)
    assert str(info.value) == ("the lock directory %s is a symbolic link; remove it (a run creates the directory "
                               "itself) or choose another swiftdeploy_lock_dir." % (tmp_path / "locks"))
    assert os.listdir(tmp_path / "elsewhere") == []


def test_controller_identity_and_a_gone_process():
    me = lock.controller_identity(os.getpid(), "ctl")
    assert me["host"] == "ctl" and me["pid"] == os.getpid() and me["boot_id"]
    child = multiprocessing.get_context("fork").Process(target=os.getpid)
    child.start()
    child.join()
    theirs = lock.controller_identity(child.pid, "ctl") or dict(me, pid=child.pid, pid_start=-1)
    assert lock.controller_gone(dict(theirs, pid=child.pid), me)
    parent = lock.controller_identity(os.getppid(), "ctl")
    assert not lock.controller_gone(parent, me), "a live process is not gone"
    assert lock.controller_gone(dict(parent, pid_start=parent["pid_start"] + 1), me), "a reused pid is not the holder"
    assert not lock.controller_gone(dict(theirs, pid=child.pid, host="other"), me), "another controller: heartbeat"
    assert not lock.controller_gone(dict(theirs, pid=child.pid, boot_id="x"), me), "another boot: heartbeat"
    assert not lock.controller_gone(None, me) and not lock.controller_gone(theirs, None)
