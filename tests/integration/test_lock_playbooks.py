"""Two real ansible-playbook runs on one stack: the lock lets one through and names it to the other.

Each test starts tests/integration/playbooks/lock_hold.yml (take the lock, work N seconds,
release in `always:`) as separate processes, as two operators or two AWX jobs would.
"""

import json
import pathlib
import re
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "tests" / "integration" / "playbooks" / "lock_hold.yml"
HOST = socket.gethostname()

pytestmark = pytest.mark.slow


class Run:
    """One ansible-playbook process of lock_hold.yml."""

    def __init__(self, env, lock_path, job, hold=3, wait=0, fail_midway=False, check=False):
        command = ["ansible-playbook", str(PLAYBOOK), "-e", "lock_path=%s" % lock_path,
                   "-e", "lock_job=%s" % job, "-e", "lock_hold_seconds=%d" % hold,
                   "-e", "lock_wait=%d" % wait, "-e", "lock_fail_midway=%s" % fail_midway]
        if check:
            command.append("--check")
        self.job = job
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.output = None
        self.ended = None

    def finish(self):
        self.output = self.proc.communicate(timeout=300)[0]
        self.ended = time.monotonic()
        return self

    @property
    def rc(self):
        return self.proc.returncode

    @property
    def waited(self):
        match = re.search(r"lock waited_seconds=([0-9.]+)", self.output)
        assert match, self.output
        return float(match.group(1))

    @property
    def taken_over(self):
        match = re.search(r"taken_over=(.*?)\"?$", self.output, re.M)
        assert match, self.output
        return json.loads(match.group(1).replace('\\"', '"'))


def finish_all(runs):
    """Wait for every run, each in its own thread, so that each one's end time is its own."""
    threads = [threading.Thread(target=run.finish) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(run.output is not None for run in runs), "a run did not finish"
    return runs


def _wait_for_file(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.05)


@pytest.fixture
def lock_path(tmp_path):
    return tmp_path / "project" / ".swiftdeploy.lock"


def test_the_second_run_fails_fast_naming_the_holder(ansible_env, lock_path):
    runs = finish_all([Run(ansible_env, lock_path, job, hold=8) for job in (41, 42)])
    assert sorted(run.rc for run in runs) == [0, 2], "\n\n".join(run.output for run in runs)
    winner, loser = sorted(runs, key=lambda run: run.rc)
    assert re.search(
        r"stack is locked by tester \(playbook lock_hold\.yml, AWX job %d\) on host %s since "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+ s ago\); wait for it to finish, run again with "
        r"-e swiftdeploy_lock_wait=SECONDS, or remove %s if that run is dead"
        % (winner.job, re.escape(HOST), re.escape(str(lock_path))), loser.output), loser.output
    assert "Give the lock back" not in loser.output, "the loser must not touch the winner's lock"
    assert loser.ended < winner.ended - 3, "the second run should fail at once, not wait"
    assert winner.waited == 0.0
    assert not lock_path.exists()


def test_with_a_wait_the_second_run_goes_after_the_first(ansible_env, lock_path):
    runs = finish_all([Run(ansible_env, lock_path, job, hold=4, wait=60) for job in (51, 52)])
    assert [run.rc for run in runs] == [0, 0], "\n\n".join(run.output for run in runs)
    waits = sorted(run.waited for run in runs)
    assert waits[0] == 0.0 and waits[1] > 0, waits
    assert not lock_path.exists()


def test_a_failure_midway_still_releases_the_lock(ansible_env, lock_path):
    run = Run(ansible_env, lock_path, 61, hold=1, fail_midway=True).finish()
    assert run.rc == 2, run.output
    assert "lock_hold.yml failed midway on purpose" in run.output
    assert re.search(r"TASK \[Give the lock back\] \*+\nchanged: \[localhost\]", run.output), run.output
    assert not lock_path.exists()
    assert lock_path.parent.is_dir(), "the lock's directory is created and kept"


def test_check_mode_tells_whether_the_lock_is_free(ansible_env, lock_path):
    holder = Run(ansible_env, lock_path, 71, hold=12)
    _wait_for_file(lock_path)
    busy = Run(ansible_env, lock_path, 72, check=True).finish()
    assert busy.rc == 2, busy.output
    assert "stack is locked by tester (playbook lock_hold.yml, AWX job 71)" in busy.output
    holder.finish()
    assert holder.rc == 0, holder.output
    free = Run(ansible_env, lock_path, 73, check=True).finish()
    assert free.rc == 0, free.output
    assert not lock_path.exists(), "a check run took the lock"


def test_a_dead_runs_lock_is_taken_over_after_its_ttl(ansible_env, lock_path):
    lock_path.parent.mkdir()
    lock_path.write_text(json.dumps({"user": "ghost", "playbook": "deploy.yml", "host": "old",
                                     "pid": 1, "since": "2020-01-01T00:00:00Z",
                                     "token_sha256": "0" * 64}))
    run = Run(ansible_env, lock_path, 81, hold=0).finish()
    assert run.rc == 0, run.output
    stale = run.taken_over
    assert (stale["user"], stale["since"]) == ("ghost", "2020-01-01T00:00:00Z")
    assert stale["age_seconds"] > 3600
    assert stale["reason"] == "older than its ttl of 3600 s (since 2020-01-01T00:00:00Z)"
    assert not lock_path.exists()
