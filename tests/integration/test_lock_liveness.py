"""A dead run does not block its stack, a live one keeps its lock: real playbooks on real Docker.

One stack (locktest-live, ports 27480/27482, its lock in the test's own lock directory) is
deployed for the whole module. Each test attacks the lock one way and shows that it fails
safely:
  - a promote killed (its whole process tree, module included) before, during and after its
    converge: the next promote or rollback takes the lock over within a minute with no manual
    step, records lock_takeover, and leaves the stack in its recorded state with the history
    chain intact;
  - a lock of another controller: taken over when its heartbeat is old, not when it is fresh;
  - two project directories for one stack name exclude each other;
  - a lock dated in the future is broken, with a message;
  - a long wait (a canary window longer than stale_after) keeps the lock alive;
  - the run's token appears nowhere, even at -vvv.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = "locktest-live"
PORT, ADMIN_PORT = 27480, 27482
WINDOW_SECONDS = 20

# timing: kills at chosen moments, heartbeats against stale_after (scripts/test.sh runs it alone).
pytestmark = [pytest.mark.slow, pytest.mark.timing]


def _load_history():
    spec = importlib.util.spec_from_file_location(
        "swiftdeploy_history", ROOT / "plugins" / "module_utils" / "_history.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


history = _load_history()


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


def served_generation():
    try:
        conn = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=2)
        conn.request("GET", "/_swiftdeploy/generation")
        body = conn.getresponse().read().decode().strip()
        conn.close()
        return int(body)
    except (OSError, ValueError):
        return None


def process_tree(root):
    """root and every process descending from it, from /proc. Ansible's workers leave the
    playbook's session (setsid), so a process-group kill would spare them and their modules."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def kill_tree(proc):
    """Freeze the run's whole process tree, then kill -9 it: the playbook, its workers and the
    module running on the host die at the same instant, as when a controller is lost with its
    host, or an operator kills everything."""
    tree = process_tree(proc.pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    tree = sorted(set(tree) | set(process_tree(proc.pid)))
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def wait_until(predicate, timeout=60, every=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


class Stack:
    def __init__(self, tmp, env, write_manifest):
        self.tmp = tmp
        self.env = env
        self.project = tmp / "project"
        self.lock_dir = tmp / "locks"
        self.lock = self.lock_dir / ("%s.lock" % NAME)
        self.manifest = write_manifest(tmp / "manifest.yml", {
            "stack": NAME, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT,
            "network.name": "%s-net" % NAME, "services.log_volume": "%s-logs" % NAME,
            "canary": {"weight": 10, "version": "1.1.0", "window_seconds": WINDOW_SECONDS}})

    def command(self, playbook, *args, project=None):
        return ["ansible-playbook", str(ROOT / "playbooks" / ("%s.yml" % playbook)),
                "-e", "swiftdeploy_manifest=%s" % self.manifest,
                "-e", "swiftdeploy_project_dir=%s" % (project or self.project),
                "-e", "swiftdeploy_lock_dir=%s" % self.lock_dir, *args]

    def run(self, playbook, *args, project=None, timeout=300):
        started = time.monotonic()
        done = subprocess.run(self.command(playbook, *args, project=project), cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        done.seconds = time.monotonic() - started
        done.output = done.stdout + done.stderr
        return done

    def start(self, playbook, *args, project=None):
        return subprocess.Popen(self.command(playbook, *args, project=project), cwd=ROOT, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def state(self):
        return json.loads((self.project / "state.json").read_text())

    def history(self):
        path = self.project / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def app_slots(self):
        out = docker("ps", "-a", "--filter", "label=com.docker.compose.project=%s" % NAME,
                     "--filter", "label=org.swiftdeploy.role=app",
                     "--format", '{{.Label "org.swiftdeploy.slot"}}').stdout
        return sorted(out.split())

    def assert_consistent(self):
        """The stack is in the state it records: one container per recorded slot and no other,
        nginx serving the recorded generation, the history chain intact, no lock left."""
        state = self.state()
        assert self.app_slots() == sorted(state["slots"]), (self.app_slots(), state)
        assert served_generation() == state["generation"], (served_generation(), state)
        verified = history.verify(str(self.project / "history.jsonl"))
        assert verified["ok"] and verified["first_problem"] is None, verified
        assert not self.lock.exists(), self.lock.read_text()
        return state

    def write_lock(self, since, mtime, controller=None, user="ghost"):
        self.lock_dir.mkdir(exist_ok=True)
        self.lock.write_text(json.dumps({
            "user": user, "playbook": "SwiftDeploy promote", "host": "elsewhere", "pid": 1, "since": since,
            "controller": controller or {"host": "other-controller", "boot_id": "b0", "pid": 4242, "pid_start": 1},
            "token_sha256": "0" * 64}))
        os.utime(self.lock, (mtime, mtime))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, ansible_env, write_manifest, docker_engine, app_image):
    tmp = tmp_path_factory.mktemp("locktest")
    stack = Stack(tmp, ansible_env, write_manifest)
    try:
        deployed = stack.run("deploy")
        assert deployed.returncode == 0, deployed.output
        yield stack
    finally:
        down = stack.run("teardown", "-e", "clean=true", "-e", "purge_history=true",
                         "-e", "swiftdeploy_lock_ttl=1")
        if down.returncode != 0:
            docker("compose", "-p", NAME, "down", "--volumes", "--remove-orphans")


@pytest.fixture
def stable(stack):
    """Each test starts from a stable stack and no lock."""
    if stack.lock.exists():
        stack.lock.unlink()
    if stack.state()["canary"] is not None:
        back = stack.run("rollback", "-e", "reason=test setup")
        assert back.returncode == 0, back.output
    stack.assert_consistent()
    return stack


def events(stack, since):
    """The events recorded since, but lock_wait: a takeover of a killed playbook's lock waits a
    few seconds (until no module of it can still be running), and says so."""
    return [record["event"] for record in stack.history()[since:] if record["event"] != "lock_wait"]


def takeover_of(stack, since):
    found = [record for record in stack.history()[since:] if record["event"] == "lock_takeover"]
    assert len(found) == 1, events(stack, since)
    return found[0]["details"]["previous_holder"]


# --------------------------------------------------------------------------------------------
# A killed promote: before, during and after its converge
# --------------------------------------------------------------------------------------------


def test_a_promote_killed_right_after_taking_the_lock(stable):
    stack, before = stable, len(stable.history())
    run = stack.start("promote", "-e", "mode=canary")
    assert wait_until(stack.lock.exists), "the promote never took the lock"
    kill_tree(run)
    assert stack.lock.exists()
    assert stack.state()["canary"] is None, "killed before its converge"

    again = stack.run("promote", "-e", "mode=canary")
    assert again.returncode == 0, again.output
    assert again.seconds < 60, again.seconds
    assert re.search(r"Took over the stack lock of root \(SwiftDeploy promote, on %s since \S+\): its playbook "
                     r"process \(pid %d on controller %s\) is gone and nothing refreshed the lock for \d+ s\."
                     % (re.escape(socket.gethostname()), run.pid, re.escape(socket.gethostname())), again.output), \
        again.output
    assert takeover_of(stack, before)["controller"]["pid"] == run.pid
    assert events(stack, before) == ["lock_takeover", "lock_repair", "promote"]
    state = stack.assert_consistent()
    assert state["canary"] is not None


def test_a_promote_killed_during_its_converge(stable):
    stack, before = stable, len(stable.history())
    run = stack.start("promote", "-e", "mode=canary")
    # state.json is written before the canary slot starts and nginx reloads.
    assert wait_until(lambda: '"canary": "' in (stack.project / "state.json").read_text()), "no converge seen"
    kill_tree(run)
    assert stack.lock.exists()

    back = stack.run("rollback", "-e", "reason=after a killed promote")
    assert back.returncode == 0, back.output
    assert back.seconds < 60, back.seconds
    assert takeover_of(stack, before)["playbook"] == "SwiftDeploy promote"
    assert events(stack, before)[:2] == ["lock_takeover", "lock_repair"]
    assert events(stack, before)[-1] == "rollback"
    state = stack.assert_consistent()
    assert state["canary"] is None and list(state["slots"]) == [state["stable"]]


def test_a_promote_killed_after_its_converge(stable):
    stack, before = stable, len(stable.history())
    generation = stack.state()["generation"]
    run = stack.start("promote", "-e", "mode=canary")
    assert wait_until(lambda: (served_generation() or 0) > generation, every=0.002), "nginx never switched"
    kill_tree(run)
    held = stack.lock.exists()  # the converge releases the lock a few ms after the reload
    print("lock held at the kill after the converge: %s" % held)

    again = stack.run("promote", "-e", "mode=canary")
    assert again.returncode == 0, again.output
    assert again.seconds < 60, again.seconds
    if held:
        assert takeover_of(stack, before)["playbook"] == "SwiftDeploy promote"
    else:
        assert "lock_takeover" not in events(stack, before)
    state = stack.assert_consistent()
    assert state["canary"] is not None and state["generation"] == generation + 1
    back = stack.run("rollback")
    assert back.returncode == 0, back.output
    stack.assert_consistent()


# --------------------------------------------------------------------------------------------
# Locks of other controllers, other project directories, and forged dates
# --------------------------------------------------------------------------------------------


def test_another_controllers_lock_is_taken_over_by_its_heartbeat_only(stable):
    stack, before = stable, len(stable.history())
    now = time.time()
    stack.write_lock(since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 30)), mtime=now - 5)
    held = stack.run("rollback")
    assert held.returncode != 0, held.output
    assert re.search(r"stack is locked by ghost \(playbook SwiftDeploy promote\) on host elsewhere since \S+ "
                     r"\(3\d s ago\)", held.output), held.output
    assert stack.lock.exists() and events(stack, before) == []

    os.utime(stack.lock, (now - 100, now - 100))
    taken = stack.run("rollback")
    assert taken.returncode == 0, taken.output
    holder = takeover_of(stack, before)
    assert holder["user"] == "ghost" and holder["controller"]["host"] == "other-controller"
    assert re.match(r"no heartbeat for 1\d\d s \(stale after 90 s\)$", holder["reason"]), holder
    stack.assert_consistent()


def test_two_project_directories_for_one_stack_exclude_each_other(stable, tmp_path):
    stack = stable
    first = stack.start("promote", "-e", "mode=canary")
    try:
        assert wait_until(stack.lock.exists), "the first run never took the lock"
        other = stack.run("deploy", project=tmp_path / "another-project")
        assert other.returncode != 0, other.output
        assert re.search(r"stack is locked by root \(playbook SwiftDeploy promote\) on host %s"
                         % re.escape(socket.gethostname()), other.output), other.output
        assert not (tmp_path / "another-project" / "state.json").exists()
    finally:
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output
    stack.assert_consistent()


def test_a_lock_dated_in_the_future_is_broken_with_a_message(stable):
    stack, before = stable, len(stable.history())
    stack.write_lock(since="2099-01-01T00:00:00Z", mtime=time.time(), user="mallory")
    run = stack.run("rollback")
    assert run.returncode == 0, run.output
    holder = takeover_of(stack, before)
    assert holder["user"] == "mallory"
    assert re.match(r"its since 2099-01-01T00:00:00Z lies \d+ h in the future of this host's clock: "
                    r"the lock is broken$", holder["reason"]), holder
    assert "lies" in run.output and "in the future of this host's clock" in run.output
    stack.assert_consistent()


def test_a_long_canary_window_keeps_the_lock_alive(stable, tmp_path):
    """Judging a canary waits for its window (20 s) under the lock; with stale_after 10 s, only
    the heartbeat kept during the wait stops a second run from taking the lock over."""
    stack, before = stable, len(stable.history())
    canary = stack.run("promote", "-e", "mode=canary")
    assert canary.returncode == 0, canary.output
    judge = stack.start("promote", "-e", "mode=stable", "-e", "swiftdeploy_lock_stale_after=10")
    try:
        assert wait_until(stack.lock.exists), "the judge never took the lock"
        time.sleep(14)  # longer than stale_after since the lock was taken
        assert stack.lock.exists(), "the judge is still measuring its window"
        assert time.time() - stack.lock.stat().st_mtime < 10, "the heartbeat was refreshed during the wait"
        other = stack.run("rollback", "-e", "swiftdeploy_lock_stale_after=10", project=tmp_path / "second")
        assert other.returncode != 0, other.output
        assert "stack is locked by root (playbook SwiftDeploy promote)" in other.output, other.output
    finally:
        output = judge.communicate(timeout=300)[0]
    # No traffic reached the canary: the judge refuses it and rolls it back, under its own lock.
    assert "Canary rejected by the canary policy and rolled back" in output, output
    assert "lock_takeover" not in events(stack, before) and events(stack, before)[-1] == "rollback"
    stack.assert_consistent()


# --------------------------------------------------------------------------------------------
# The token
# --------------------------------------------------------------------------------------------


def test_the_token_appears_in_no_output_even_at_vvv(stable):
    stack = stable
    digests = set()

    def watch(stop):
        while not stop.is_set():
            try:
                digests.add(json.loads(stack.lock.read_text())["token_sha256"])
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.005)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    try:
        run = stack.run("promote", "-e", "mode=canary", "-vvv")
    finally:
        stop.set()
        watcher.join()
    assert run.returncode == 0, run.output
    assert len(digests) == 1, digests
    digest = digests.pop()
    text = run.output
    candidates = {match.group(1) for match in re.finditer(r"(?=([0-9A-Fa-f]{32}))", text)}
    assert candidates, "the -vvv output has hex strings (hashes) to check"
    assert not [c for c in candidates if hashlib.sha256(c.encode()).hexdigest() == digest], \
        "the run's token is in its output"
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in text, "the token option is masked, not dropped"
    back = stack.run("rollback")
    assert back.returncode == 0, back.output
    stack.assert_consistent()
