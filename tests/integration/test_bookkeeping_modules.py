"""The bookkeeping modules as a playbook calls them, through real `ansible` ad-hoc runs.

stack_lock's `read` (the live state read under the lock, in the same round trip), audit_event's
`release_lock` (a run's last event and its release in one round trip) and project_files (one
round trip for every file teardown removes). Nothing here needs Docker.
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
    rc, result = module("stack_lock", {"path": str(lock), "read": [str(state), str(tmp_path / "absent.yml")]})
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


def test_a_wrong_token_keeps_the_lock_but_not_the_event_back(module, tmp_path):
    lock = tmp_path / ".swiftdeploy.lock"
    history = tmp_path / "history.jsonl"
    rc, _taken = module("stack_lock", {"path": str(lock)})
    assert rc == 0
    rc, result = module("audit_event", {"path": str(history), "event": "deploy",
                                        "release_lock": {"path": str(lock), "token": "not-the-token"}})
    assert rc != 0
    assert "the event was recorded (seq 1) but the lock was not released" in result["msg"]
    assert lock.exists(), "another run's lock must stay"
    assert len(history.read_text().splitlines()) == 1


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


def test_project_files_removes_files_and_directories_in_one_call(module, tmp_path):
    project = make_project(tmp_path)
    args = {"path": str(project), "names": ["state.json", "nginx", "metrics"]}
    rc, preview = module("project_files", args, check=True)
    assert rc == 0 and preview["changed"] and preview["removed"] == ["state.json", "nginx"]
    assert (project / "state.json").exists() and (project / "nginx" / "nginx.conf").exists()

    rc, result = module("project_files", args)
    assert rc == 0 and result["removed"] == ["state.json", "nginx"]
    assert sorted(os.listdir(project)) == ["history.jsonl"]

    rc, again = module("project_files", args)
    assert rc == 0 and again["changed"] is False and again["removed"] == []


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "nginx/../../outside", "."])
def test_project_files_refuses_names_outside_the_project(module, tmp_path, name):
    project = make_project(tmp_path)
    (tmp_path / "outside").write_text("keep me")
    rc, result = module("project_files", {"path": str(project), "names": ["state.json", name]})
    assert rc != 0
    assert repr(name) in result["msg"]
    # Refused before anything was removed.
    assert (project / "state.json").exists() and (tmp_path / "outside").read_text() == "keep me"


def test_project_files_removes_a_link_without_following_it(module, tmp_path):
    project = make_project(tmp_path)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    (project / "build").symlink_to(keep)
    (project / "linked").symlink_to(keep)
    rc, result = module("project_files", {"path": str(project), "names": ["build"]})
    assert rc == 0 and result["removed"] == ["build"]
    assert not (project / "build").is_symlink() and (keep / "precious").read_text() == "x"
    # A name whose parent is a link out of the project is refused.
    rc, result = module("project_files", {"path": str(project), "names": ["linked/precious"]})
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
