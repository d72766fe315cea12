"""Long waits print progress lines in the play output; fast runs print none (docs/progress.md).

- A lock held by another run (ansible-playbook) for ~6 s: the waiting run, an ansible-runner job
  as AWX runs it, prints "Waiting for the stack lock held by ... on localhost: N s of at most
  30 s" lines, N growing, in its stdout and its events; the holder, which never waited, prints
  none. No Docker.
- The same wait in a module whose action knows nothing of it (stack_teardown's lock wait): the
  line names the holder only because the action read the module's note on the host, over SSH.
- A slow image build through image_build (a build context, and a script) prints its wait.
- One real stack (sdprogress, ports 27580/27582) whose app starts 5 s late (services.command):
  its first deploy prints the slot's health wait; a no-op redeploy prints nothing; promote to
  stable right after a canary prints the wait for the canary's window.
Every line is one plain line (no terminal codes), and no progress file is left on the host.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import time

import pytest

# timing: which waits last long enough to print a line (scripts/test.sh runs it alone).
pytestmark = pytest.mark.timing

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCK_PLAYBOOK = ROOT / "tests" / "integration" / "playbooks" / "lock_hold.yml"
NAME, PORT, ADMIN_PORT = "sdprogress", 27580, 27582
WINDOW_SECONDS = 15
START_DELAY = 5
LINE = re.compile(r"^Waiting for (?P<what>.+) on (?P<host>\S+): (?P<elapsed>\d+) s(?: of at most (?P<limit>[\d.]+) s)?$",
                  re.M)


def progress_lines(output, what=None):
    """[(what, elapsed, limit)] of the progress lines in output, those whose what matches `what`."""
    found = []
    for match in LINE.finditer(output):
        if what is None or re.fullmatch(what, match["what"]):
            found.append((match["what"], int(match["elapsed"]), match["limit"] and float(match["limit"])))
    return found


def assert_plain(output):
    for line in output.splitlines():
        if line.startswith("Waiting for "):
            assert LINE.fullmatch(line) and re.fullmatch(r"[ -~]+", line), repr(line)


def no_progress_files(*directories, since=0.0):
    """The progress files in `directories` written at `since` (epoch seconds) or later: the shared
    lock directory may hold one a run killed before this test left (not this test's doing)."""
    return [str(path) for directory in directories for path in pathlib.Path(directory).glob(".swiftdeploy-progress-*")
            if path.stat().st_mtime >= since]


# --------------------------------------------------------------------------------------------
# A lock wait, no Docker
# --------------------------------------------------------------------------------------------


def lock_hold(env, lock_path, job, hold, wait):
    return subprocess.Popen(["ansible-playbook", str(LOCK_PLAYBOOK), "-e", "lock_path=%s" % lock_path,
                             "-e", "lock_job=%d" % job, "-e", "lock_hold_seconds=%d" % hold, "-e", "lock_wait=%d" % wait],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_waiting_for_the_lock_says_so_every_few_seconds_also_under_ansible_runner(ansible_env, tmp_path):
    """The waiting run is an ansible-runner job, as AWX runs it: the lines are in its stdout and
    its events."""
    ansible_runner = pytest.importorskip("ansible_runner")
    lock_path = tmp_path / "locks" / "shop.lock"
    holder = lock_hold(ansible_env, lock_path, 81, hold=6, wait=0)
    wait_for(lock_path)
    private = tmp_path / "private"
    (private / "project").mkdir(parents=True)
    envvars = dict((key, ansible_env[key]) for key in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_CONFIG", "PATH")
                   if key in ansible_env)
    runner = ansible_runner.run(private_data_dir=str(private), playbook=str(LOCK_PLAYBOOK), quiet=True,
                                extravars={"lock_path": str(lock_path), "lock_job": 82, "lock_hold_seconds": 0,
                                           "lock_wait": 30},
                                envvars=envvars)
    held = holder.communicate(timeout=120)[0]
    waited = runner.stdout.read()
    assert holder.returncode == 0 and runner.rc == 0, held + waited
    wanted = r"the stack lock held by tester \(playbook lock_hold\.yml, AWX job 81, controller \S+\)"
    lines = progress_lines(waited, wanted)
    assert len(lines) >= 1, waited
    elapsed = [line[1] for line in lines]
    assert elapsed == sorted(set(elapsed)) and all(limit == 30.0 for _what, _elapsed, limit in lines), waited
    assert "on localhost:" in waited
    # One line about every 5 s: a wait of a few seconds prints one or two, not one per poll.
    assert len(lines) <= 3, waited
    assert progress_lines(held) == [], held
    assert_plain(waited)
    events = [event.get("stdout", "") for event in runner.events]
    assert any(progress_lines(text, wanted) for text in events), events
    assert no_progress_files(lock_path.parent) == []


TEARDOWN_PLAYBOOK = """
- name: Tear down a stack whose lock another run holds
  hosts: all
  gather_facts: false
  tasks:
    - name: Tear the stack down once the lock is free
      swiftdeploy.stack.stack_teardown:
        project_path: {project}
        lock_path: {lock_path}
        lock_wait: 30
        history: {{stack: shop}}
"""


@pytest.mark.slow
def test_the_wait_a_module_notes_on_the_host_is_read_over_ssh(ssh_host, ansible_env, run_playbook, tmp_path):
    """stack_teardown's action only knows "the stack to be torn down"; the holder comes from the
    module's note, read on the host in a second SSH session beside the module's own. (The local
    connection's read is shown by the slow health check below.)"""
    inventory = ssh_host.write_inventory(tmp_path / "inventory.yml")
    host = ssh_host.name
    lock_path = tmp_path / "locks" / "shop.lock"
    project = tmp_path / "project"
    project.mkdir()
    playbook = tmp_path / "teardown.yml"
    playbook.write_text(TEARDOWN_PLAYBOOK.format(project=project, lock_path=lock_path))
    holder = lock_hold(ansible_env, lock_path, 83, hold=6, wait=0)
    wait_for(lock_path)
    run = run_playbook(playbook, "-e", "swiftdeploy_anchor_dir=%s" % (tmp_path / "anchors"), inventory=inventory)
    holder.communicate(timeout=120)
    assert run.rc == 0, run.describe()
    lines = progress_lines(run.stdout, r"the stack lock held by tester \(playbook lock_hold\.yml, AWX job 83, "
                                       r"controller \S+\)")
    assert lines and all(limit == 30.0 for _what, _elapsed, limit in lines), run.describe()
    assert "on %s:" % host in run.stdout, run.describe()
    assert "the stack to be torn down" not in run.stdout, run.describe()
    assert_plain(run.stdout)
    assert no_progress_files(lock_path.parent) == []


# --------------------------------------------------------------------------------------------
# A real stack: a slow health check, a no-op deploy, a canary's window
# --------------------------------------------------------------------------------------------


class Stack:
    def __init__(self, tmp_path, write_manifest, run_playbook):
        self.project = tmp_path / "project"
        self.lock_dir = pathlib.Path("/run/lock/swiftdeploy")
        self.created = time.time()
        self.manifest = write_manifest(tmp_path / "manifest.yml", {
            "stack": NAME, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT,
            "network.name": "%s-net" % NAME, "services.log_volume": "%s-logs" % NAME,
            "contact": "oncall@%s.example" % NAME,
            # The app answers its health check only START_DELAY seconds after each start.
            "services.command": ["sh", "-c", "sleep %d; exec python3 -u /app/swiftdeploy_app.py" % START_DELAY],
            "services.healthcheck.start_period": 30,
            "canary": {"version": "1.1.0", "window_seconds": WINDOW_SECONDS}})
        self._run = run_playbook

    def run(self, playbook, *args):
        return self._run(playbook, "-e", "swiftdeploy_manifest=%s" % self.manifest,
                         "-e", "swiftdeploy_project_dir=%s" % self.project, *args)


@pytest.fixture(scope="module")
def stack(docker_engine, app_image, tmp_path_factory, write_manifest, run_playbook):
    stack = Stack(tmp_path_factory.mktemp("progress"), write_manifest, run_playbook)
    stack.run("teardown", "-e", "clean=true")
    yield stack
    stack.run("teardown", "-e", "clean=true")


@pytest.fixture(scope="module")
def first_deploy(stack):
    return stack.run("deploy")


@pytest.mark.docker
@pytest.mark.slow
def test_a_slow_health_check_prints_what_it_waits_for(stack, first_deploy):
    run = first_deploy
    assert run.rc == 0, run.describe()
    lines = progress_lines(run.stdout, r"app-blue to be healthy|the stack's containers to start and be healthy")
    assert lines, run.describe()
    assert all(elapsed <= START_DELAY + 5 and limit and limit >= START_DELAY for _what, elapsed, limit in lines), lines
    assert_plain(run.stdout)
    assert no_progress_files(stack.project, stack.lock_dir, since=stack.created) == []


@pytest.mark.docker
@pytest.mark.slow
def test_a_no_op_deploy_prints_no_progress_line(stack, first_deploy):
    assert first_deploy.rc == 0, first_deploy.describe()
    run = stack.run("deploy")
    assert run.rc == 0, run.describe()
    assert "changed=0" in run.stdout, run.describe()
    assert progress_lines(run.stdout) == [], run.describe()
    assert "Waiting for" not in run.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_promote_to_stable_prints_the_wait_for_the_canarys_window(stack, first_deploy):
    assert first_deploy.rc == 0, first_deploy.describe()
    canary = stack.run("promote", "-e", "mode=canary")
    assert canary.rc == 0, canary.describe()
    judged = stack.run("promote", "-e", "mode=stable")  # no traffic: denied, rolled back
    lines = progress_lines(judged.stdout, r"the canary \(slot green\) to be a %d s window old" % WINDOW_SECONDS)
    assert lines, judged.describe()
    assert all(limit <= WINDOW_SECONDS and elapsed < limit for _what, elapsed, limit in lines), lines
    assert "(its whole life, measured by nginx; waited for)" in judged.stdout, judged.describe()
    assert_plain(judged.stdout)
    assert no_progress_files(stack.project, stack.lock_dir, since=stack.created) == []


# --------------------------------------------------------------------------------------------
# A slow build
# --------------------------------------------------------------------------------------------

BUILD_PLAYBOOK = """
- name: Slow builds
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Build from a context whose RUN takes a while
      swiftdeploy.stack.image_build:
        name: {image}
        path: {context}
        build_args:
          BASE_IMAGE: {base}
      register: built

    - name: Build by a script
      swiftdeploy.stack.image_build:
        name: {image}
        script: [sh, -c, "sleep 4; echo built {image}"]
      register: scripted

    - name: Report
      ansible.builtin.debug:
        msg: "built={{{{ built.image.Id is defined }}}} scripted={{{{ scripted.stdout }}}}"
"""


@pytest.mark.docker
@pytest.mark.slow
def test_a_slow_build_prints_what_it_builds(docker_engine, app_image, tmp_path, run_playbook):
    image = "sdprogress-build:1"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN sleep 5\n"
                                        "LABEL org.swiftdeploy.test=%s\n" % tmp_path.name)
    playbook = tmp_path / "build.yml"
    playbook.write_text(BUILD_PLAYBOOK.format(image=image, context=context, base=app_image))
    try:
        run = run_playbook(playbook)
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
    assert run.rc == 0, run.describe()
    assert "built=True scripted=built %s" % image in run.stdout, run.describe()
    assert progress_lines(run.stdout, re.escape(image) + r" to be built \(docker build\)"), run.describe()
    assert progress_lines(run.stdout, re.escape(image) + " to be built by sh"), run.describe()
    assert_plain(run.stdout)
