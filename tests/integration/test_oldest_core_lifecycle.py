"""One lifecycle under the oldest ansible-core meta/runtime.yml allows: deploy, promote to
canary, promote to stable (judged on real traffic, allowed), teardown.

scripts/test-min.sh runs it with SWIFTDEPLOY_VENV=.venv-min (requirements-min.txt); without
that variable it is skipped, since test_deploy_lifecycle and test_promote cover the same
playbooks under the newest ansible-core. The stack has a name, ports, network and volume of
its own (mincore, 18080/18082), so it never meets another test's or the example's, and it is
torn down with its history at the end, also when a step failed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess

import pytest
import yaml

from traffic import Traffic  # tests/integration/traffic.py

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SWIFTDEPLOY_VENV"),
                       reason="runs in the oldest-ansible-core stage: scripts/test-min.sh"),
]

NAME, PORT, ADMIN_PORT = "mincore", 18080, 18082
WINDOW_SECONDS = 5


def docker(*args, timeout=60):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_the_venv_holds_the_oldest_ansible_core_runtime_yml_allows(repo_root, venv):
    """What this stage proves is what requires_ansible claims: its lower bound's major.minor."""
    required = yaml.safe_load((repo_root / "meta" / "runtime.yml").read_text())["requires_ansible"]
    lowest = re.fullmatch(r">=(\d+)\.(\d+)\.\d+", required)
    assert lowest, "requires_ansible should be one lower bound, '>=X.Y.Z': %r" % required
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", "import ansible; print(ansible.__version__)"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip().split(".")[:2] == [lowest[1], lowest[2]], (proc.stdout, required)


class Stack:
    def __init__(self, tmp_path, write_manifest, run_playbook):
        self.project = tmp_path / "project"
        self.manifest = write_manifest(tmp_path / "manifest.yml", {
            "stack": NAME, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT,
            "network.name": "%s-net" % NAME, "services.log_volume": "%s-logs" % NAME,
            "contact": "oncall@%s.example" % NAME,
            "canary": {"weight": 50, "version": "1.1.0", "window_seconds": WINDOW_SECONDS},
            "policy": {"thresholds": {"min_requests": 20}}})
        self._run = run_playbook

    def run(self, playbook, *args):
        return self._run(playbook, "-e", "swiftdeploy_manifest=%s" % self.manifest,
                         "-e", "swiftdeploy_project_dir=%s" % self.project, *args)

    def state(self):
        return json.loads((self.project / "state.json").read_text())

    def remove_leftovers(self):
        """A run killed before its teardown leaves containers behind; they are this stack's."""
        containers = docker("ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % NAME).stdout.split()
        if containers:
            docker("rm", "-f", *containers)
        docker("network", "rm", "%s-net" % NAME)
        docker("volume", "rm", "%s-logs" % NAME)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, write_manifest, run_playbook, app_image):
    stack = Stack(tmp_path_factory.mktemp(NAME), write_manifest, run_playbook)
    stack.remove_leftovers()
    yield stack
    # A playbook that stopped on an Ansible error leaves its lock behind; no other run uses this
    # project directory, so it is broken here rather than waited out.
    (stack.project / ".swiftdeploy.lock").unlink(missing_ok=True)
    run = stack.run("teardown", "-e", "clean=true", "-e", "purge_history=true")
    if run.rc != 0:
        stack.remove_leftovers()
    assert run.rc == 0, run.describe()
    containers = docker("ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % NAME).stdout.split()
    assert containers == [], "teardown left %s" % containers


def test_deploy_promote_and_teardown(stack):
    run = stack.run("deploy")
    assert run.rc == 0, run.describe()
    assert "is healthy at http://" in run.stdout, run.stdout
    status, body = get(PORT)
    assert (status, body["mode"], body["version"]) == (200, "stable", "1.0.0")

    run = stack.run("promote", "-e", "mode=canary")
    assert run.rc == 0, run.describe()
    state = stack.state()
    assert state["mode"] == "canary" and state["canary"] and state["weight"] == 50, state

    # The canary is judged on its last window: traffic for all of it, then during the judgement.
    with Traffic(PORT, warm_up=WINDOW_SECONDS + 0.5) as traffic:
        run = stack.run("promote", "-e", "mode=stable")
    assert run.rc == 0, run.describe()
    assert "Canary 1.1.0 passed and is now stable at 100%." in run.stdout, run.describe()
    assert traffic.canary > 0, "no request reached the canary"
    state = stack.state()
    assert state["canary"] is None and state["slots"][state["stable"]]["version"] == "1.1.0", state
    status, body = get(PORT)
    assert (status, body["mode"], body["version"]) == (200, "stable", "1.1.0"), run.describe()
