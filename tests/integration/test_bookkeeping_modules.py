"""The bookkeeping modules as a playbook calls them, through real `ansible` ad-hoc runs.

stack_lock's `read` (the live state read under the lock, in the same round trip), audit_event's
`release_lock` (a run's last event and its release in one round trip) and stack_teardown (lock,
removal, record and release in one round trip). Nothing here needs Docker: stack_teardown's
compose part is tested on a real stack in test_deploy_lifecycle.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest


@pytest.fixture
def module(ansible_env, repo_root):
    """module(name, args, check=False) -> (rc, result dict) of one real module run on localhost."""

    def run(name, args, check=False):
        command = ["ansible", "localhost", "-c", "local", "-e", "ansible_python_interpreter=" + str(
            repo_root / ".venv" / "bin" / "python"), "-m", "swiftdeploy.stack." + name, "-a", json.dumps(args),
            "--one-line"]
        if check:
            command.append("--check")
        proc = subprocess.run(command, cwd=repo_root, env=ansible_env, capture_output=True, text=True,
                              timeout=120, check=False)
        # "localhost | SUCCESS => {...}" (or FAILED! =>) on one line
        _head, sep, body = proc.stdout.partition("=> ")
        assert sep, proc.stdout + proc.stderr
        return proc.returncode, json.loads(body)

    return run


def test_lock_reads_files_under_the_lock(module, tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"mode": "canary"}')
    lock = tmp_path / ".swiftdeploy.lock"
    # Held by a playbook of another controller: only its heartbeat says whether it lives (a lock
    # of this controller whose ad-hoc process has exited would be taken over).
    rc, result = module("stack_lock", {"path": str(lock), "read": [str(state), str(tmp_path / "absent.yml")],
                                       "controller": {"host": "another-controller", "pid": 1}})
    assert rc == 0, result
    assert result["files"] == [{"path": str(state), "content": '{"mode": "canary"}'},
                               {"path": str(tmp_path / "absent.yml"), "content": None}]
    assert lock.exists()
    # A held lock is not read by a second run: it fails naming the holder, before reading.
    rc, second = module("stack_lock", {"path": str(lock), "read": [str(state)]})
    assert rc != 0 and "files" not in second and "stack is locked by" in second["msg"]


def test_lock_reads_a_path_under_home_in_order(module, tmp_path):
    """The role's default project directory is ~/.swiftdeploy/<stack>: files come back in the
    order asked, whatever ~ expanded to."""
    home_file = pathlib.Path.home() / (".swiftdeploy-bookkeeping-%s.json" % tmp_path.name)
    home_file.write_text("{}")
    try:
        rc, result = module("stack_lock", {"path": str(tmp_path / ".swiftdeploy.lock"),
                                           "read": ["~/" + home_file.name, str(tmp_path / "none")]})
    finally:
        home_file.unlink()
    assert rc == 0, result
    assert result["files"] == [{"path": str(home_file), "content": "{}"},
                               {"path": str(tmp_path / "none"), "content": None}]


def test_lock_refuses_a_file_it_should_not_read_and_keeps_no_lock(module, tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    lock = tmp_path / ".swiftdeploy.lock"
    rc, result = module("stack_lock", {"path": str(lock), "read": [str(big)]})
    assert rc != 0
    assert str(big) in result["msg"] and "larger than 1 MiB" in result["msg"]
    assert not lock.exists(), "a failed read must not leave the stack locked"


def test_last_event_releases_the_lock(module, tmp_path):
    lock = tmp_path / ".swiftdeploy.lock"
    history = tmp_path / "history.jsonl"
    rc, taken = module("stack_lock", {"path": str(lock)})
    assert rc == 0 and lock.exists()
    rc, result = module("audit_event", {"path": str(history), "event": "deploy",
                                        "release_lock": {"path": str(lock), "token": taken["token"]}})
    assert rc == 0, result
    assert result["lock_released"] is True and not lock.exists()
    assert json.loads(history.read_text().splitlines()[-1])["event"] == "deploy"


def test_a_wrong_token_records_nothing_and_keeps_the_lock(module, tmp_path):
    """The lock is checked before the event is written (Session.check_lock): a run that does not
    hold the lock writes nothing."""
    lock = tmp_path / ".swiftdeploy.lock"
    history = tmp_path / "history.jsonl"
    rc, _taken = module("stack_lock", {"path": str(lock)})
    assert rc == 0
    rc, result = module("audit_event", {"path": str(history), "event": "deploy",
                                        "release_lock": {"path": str(lock), "token": "not-the-token"}})
    assert rc != 0
    assert "is held by" in result["msg"] and "not by this run; nothing was changed" in result["msg"], result["msg"]
    assert lock.exists(), "another run's lock must stay"
    assert not history.exists()


def test_release_lock_in_check_mode_changes_nothing(module, tmp_path):
    lock = tmp_path / ".swiftdeploy.lock"
    history = tmp_path / "history.jsonl"
    rc, taken = module("stack_lock", {"path": str(lock)})
    assert rc == 0
    rc, result = module("audit_event", {"path": str(history), "event": "deploy",
                                        "release_lock": {"path": str(lock), "token": taken["token"]}}, check=True)
    assert rc == 0, result
    assert lock.exists() and not history.exists()


def make_project(root: pathlib.Path) -> pathlib.Path:
    project = root / "project"
    (project / "nginx").mkdir(parents=True)
    (project / "nginx" / "nginx.conf").write_text("events {}\n")
    (project / "state.json").write_text("{}")
    (project / "history.jsonl").write_text("")
    return project


def teardown_args(project, **extra):
    args = {"project_path": str(project), "lock_path": str(project / ".swiftdeploy.lock"),
            "remove": ["state.json", "nginx", "metrics"],
            "actor": {"user": "tester", "playbook": "bookkeeping"},
            "history": {"stack": "books", "mode": "stable", "version": "1.0.0", "details": {"clean": True}}}
    args.update(extra)
    return args


def events(project):
    path = project / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_stack_teardown_removes_records_and_releases_in_one_call(module, tmp_path):
    """No compose file (never deployed, or cleaned): nothing to take down, but the files go, the
    teardown is recorded and the lock is given back. Docker's part is in test_deploy_lifecycle."""
    project = make_project(tmp_path)
    rc, preview = module("stack_teardown", teardown_args(project), check=True)
    assert rc == 0, preview
    assert preview["changed"] and preview["removed"] == ["state.json", "nginx"] and preview["stack_removed"] is False
    assert preview["record"]["event"] == "teardown" and preview["record"]["seq"] == 1
    assert (project / "state.json").exists() and (project / "nginx" / "nginx.conf").exists()
    assert events(project) == [] and not (project / ".swiftdeploy.lock").exists()

    rc, result = module("stack_teardown", teardown_args(project))
    assert rc == 0, result
    assert result["removed"] == ["state.json", "nginx"] and result["seq"] == 1
    assert sorted(os.listdir(project)) == ["history.jsonl", "history.jsonl.lock"]
    (event,) = events(project)
    assert event["event"] == "teardown" and event["actor"] == {"user": "tester", "playbook": "bookkeeping"}
    assert event["details"] == {"clean": True, "removed": False, "files_removed": ["state.json", "nginx"]}

    rc, again = module("stack_teardown", teardown_args(project))
    assert rc == 0 and again["changed"] is False and again["removed"] == [] and again["seq"] == 2


def test_stack_teardown_without_history_records_nothing(module, tmp_path):
    project = make_project(tmp_path)
    args = teardown_args(project, remove=["state.json", "history.jsonl", "history.jsonl.lock"])
    del args["history"]
    rc, result = module("stack_teardown", args)
    assert rc == 0 and "seq" not in result, result
    assert sorted(os.listdir(project)) == ["nginx"]


def test_stack_teardown_fails_naming_the_holder_and_touches_nothing(module, tmp_path):
    project = make_project(tmp_path)
    rc, taken = module("stack_lock", {"path": str(project / ".swiftdeploy.lock"), "holder": {"user": "alice"}})
    assert rc == 0
    rc, result = module("stack_teardown", teardown_args(project))
    assert rc != 0
    assert "stack is locked by alice" in result["msg"] and result["holder"]["user"] == "alice"
    assert (project / "state.json").exists() and events(project) == []
    rc, released = module("stack_lock", {"path": str(project / ".swiftdeploy.lock"), "state": "released",
                                         "token": taken["token"]})
    assert rc == 0 and released["changed"], "alice's lock must still be hers"


# timing: the holder keeps the lock 4 s, which a busy machine can spend starting the module
@pytest.mark.timing
def test_stack_teardown_records_the_wait_for_the_lock(module, tmp_path, repo_root):
    """Another run holds the lock for 4 s (longer than ansible takes to start the module): the
    teardown waits, then records lock_wait before teardown."""
    project = make_project(tmp_path)
    lock = str(project / ".swiftdeploy.lock")
    script = ("import sys, time\n"
              "sys.path.insert(0, %r)\n"
              "from ansible_collections.swiftdeploy.stack.plugins.module_utils import _lock\n"
              "got = _lock.acquire(%r, {'user': 'bob'}, host='h', pid=1)\n"
              "print('held', flush=True)\n"
              "time.sleep(4)\n"
              "_lock.release(%r, got['token'])\n" % (str(repo_root / ".collections"), lock, lock))
    holder = subprocess.Popen(
        [str(repo_root / ".venv" / "bin" / "python"), "-c", script],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, result = module("stack_teardown", teardown_args(project, lock_wait=30))
    finally:
        holder.wait(timeout=30)
    assert rc == 0, result
    assert result["waited_seconds"] > 0
    assert [e["event"] for e in events(project)] == ["lock_wait", "teardown"]
    assert events(project)[0]["details"]["waited_seconds"] == result["waited_seconds"]
    assert not (project / ".swiftdeploy.lock").exists()


def test_stack_teardown_gives_the_lock_back_when_compose_fails(module, tmp_path):
    project = make_project(tmp_path)
    (project / "docker-compose.yml").write_text("services: [this is not a compose file\n")
    rc, result = module("stack_teardown", teardown_args(project))
    assert rc != 0
    assert "docker compose down failed" in result["msg"] and "nothing was removed or recorded" in result["msg"]
    assert (project / "state.json").exists() and events(project) == []
    assert not (project / ".swiftdeploy.lock").exists(), "a failed teardown must not leave the stack locked"


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "nginx/../../outside", "."])
def test_stack_teardown_refuses_names_outside_the_project(module, tmp_path, name):
    project = make_project(tmp_path)
    (tmp_path / "outside").write_text("keep me")
    rc, result = module("stack_teardown", teardown_args(project, remove=["state.json", name]))
    assert rc != 0
    assert repr(name) in result["msg"]
    # Refused before anything was done: no lock taken, nothing removed or recorded.
    assert (project / "state.json").exists() and (tmp_path / "outside").read_text() == "keep me"
    assert events(project) == [] and not (project / ".swiftdeploy.lock").exists()


def test_stack_teardown_removes_a_link_without_following_it(module, tmp_path):
    project = make_project(tmp_path)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    (project / "build").symlink_to(keep)
    (project / "linked").symlink_to(keep)
    rc, result = module("stack_teardown", teardown_args(project, remove=["build"]))
    assert rc == 0 and result["removed"] == ["build"]
    assert not (project / "build").is_symlink() and (keep / "precious").read_text() == "x"
    # A name whose parent is a link out of the project is refused.
    rc, result = module("stack_teardown", teardown_args(project, remove=["linked/precious"]))
    assert rc != 0 and "outside the project directory" in result["msg"]
    assert (keep / "precious").exists()


def test_teardown_in_the_default_project_directory(run_playbook, write_manifest, tmp_path):
    """No swiftdeploy_project_dir: the role's default ~/.swiftdeploy/<stack>, whose ~ the
    modules expand on the host. A stack never deployed tears down cleanly and records it."""
    stack = "sdhome-%s" % tmp_path.name.lower().replace("_", "-")[-20:].strip("-")
    project = pathlib.Path.home() / ".swiftdeploy" / stack
    manifest = write_manifest(tmp_path / "manifest.yml", {"stack": stack})
    try:
        run = run_playbook("teardown", "-e", "swiftdeploy_manifest=%s" % manifest)
        assert run.rc == 0, run.describe()
        (line,) = (project / "history.jsonl").read_text().splitlines()
        assert json.loads(line)["event"] == "teardown"
        assert not (project / ".swiftdeploy.lock").exists()
    finally:
        shutil.rmtree(project, ignore_errors=True)
