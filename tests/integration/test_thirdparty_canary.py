"""A third-party-style service through a whole release cycle, judged at the edge.

thirdparty-app (tests/fixtures/thirdparty_app): no /metrics, no mode file and no SIGHUP
(services.mode_switch: none), health on /ready checked from outside, its own port and uid. The
stack sdtp (ports 27580/27582) runs, in order, each under constant load through nginx:
  deploy of 1.0.0;
  a canary of a bad 2.0.0 (the same image with FAIL_PERCENT=40 baked in) -> judged from nginx's
  edge log, denied on its error rate and rolled back; the only non-200 answers are the bad
  canary's own 500s, never a switch's;
  a canary of a good 2.0.0 -> allowed and rolled forward by routing alone;
  rollback.yml -e to=previous -> 1.0.0 again through the idle slot, 0 failed requests.
Each step also checks the longest gap between two successful answers.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from helpers import failing_image
from traffic import Traffic

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT, ADMIN_PORT = "sdtp", 27580, 27582
WINDOW = 5
BAD_TAG = "thirdparty-app:2-bad"
# nginx switches without a gap; 2 s allows for a busy 2-CPU host pausing the client threads.
MAX_GAP_S = 2.0


def longest_gap(traffic):
    times = [moment for moment, status, _canary in traffic.responses if status == 200]
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


class ThirdPartyStack:
    def __init__(self, root, run_playbook, app):
        self.root = root
        self.project = root / "project"
        self.app = app
        self._run = run_playbook

    def manifest(self, canary_image=None, canary_version=None):
        data = self.app.manifest(NAME, PORT, ADMIN_PORT, tag="1", mode_switch="none")
        data["canary"] = {"weight": 50, "window_seconds": WINDOW}
        if canary_image:
            data["canary"].update(image=canary_image, version=canary_version)
        data["policy"] = {"thresholds": {"min_requests": 20, "max_error_rate_percent": 5.0}}
        path = self.root / ("manifest-%s.yml" % (canary_version or "base"))
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def run(self, playbook, *args, manifest=None):
        return self._run(playbook, "-e", "swiftdeploy_manifest=%s" % (manifest or self.manifest()),
                         "-e", "swiftdeploy_project_dir=%s" % self.project, *args)

    def state(self):
        return json.loads((self.project / "state.json").read_text())

    def stable(self):
        state = self.state()
        return state["slots"][state["stable"]]


@pytest.fixture(scope="module")
def bad_image(thirdparty_app):
    """thirdparty-app:2 that answers 40 of every 100 requests to / with a 500."""
    with failing_image(thirdparty_app.images["2"], BAD_TAG, 40) as tag:
        yield tag


@pytest.fixture(scope="module")
def stack(tmp_path_factory, run_playbook, thirdparty_app):
    stack = ThirdPartyStack(tmp_path_factory.mktemp("thirdparty"), run_playbook, thirdparty_app)
    try:
        yield stack
    finally:
        stack.run("teardown", "-e", "clean=true")
        subprocess.run(["docker", "volume", "rm", "-f", "%s-logs" % NAME], capture_output=True, check=False)


def test_deploy(stack, thirdparty_app):
    run = stack.run("deploy")
    assert run.rc == 0, run.describe()
    assert stack.stable()["version"] == thirdparty_app.versions["1"]
    inspect = subprocess.run(["docker", "inspect", "-f", "{{json .Config.Env}}", "%s-app-blue-1" % NAME],
                             capture_output=True, text=True, check=True)
    assert "MODE_FILE" not in inspect.stdout


def test_a_failing_canary_is_denied_at_the_edge_and_rolled_back(stack, thirdparty_app, bad_image):
    manifest = stack.manifest(bad_image, "2.0.0-bad")
    with Traffic(PORT, threads=2) as traffic:
        run = stack.run("promote", "-e", "mode=canary", manifest=manifest)
        assert run.rc == 0, run.describe()
        # status.yml on an app with no /metrics: both tracks measured at the edge, and the canary
        # policy's verdict on the figures promote judges.
        status = stack.run("status", manifest=manifest)
        run = stack.run("promote", "-e", "mode=stable", manifest=manifest)  # waits for the window
    assert status.rc == 0, status.describe()
    assert status.stdout.count("app mode n/a (no /metrics: figures at the edge)") == 2, status.stdout
    assert "canary (canary track): FAIL" in status.stdout, status.stdout
    assert "first sample" not in status.stdout
    assert run.rc != 0, run.describe()
    assert "measured by nginx" in run.output and "exceeds the maximum" in run.output, run.describe()
    assert "rolled back" in run.output
    state = stack.state()
    assert state["canary"] is None and stack.stable()["version"] == thirdparty_app.versions["1"]
    # Every non-200 is the bad canary's own 500: no request was lost to a switch.
    failures = traffic.failures()
    assert set(failures) <= {500} and failures[500] > 0, failures
    assert traffic.successes > 50 and longest_gap(traffic) <= MAX_GAP_S, longest_gap(traffic)


def test_a_healthy_canary_is_allowed_and_rolled_forward(stack, thirdparty_app):
    manifest = stack.manifest(thirdparty_app.images["2"], thirdparty_app.versions["2"])
    with Traffic(PORT, threads=2) as traffic:
        run = stack.run("promote", "-e", "mode=canary", manifest=manifest)
        assert run.rc == 0, run.describe()
        run = stack.run("promote", "-e", "mode=stable", manifest=manifest)
    assert run.rc == 0, run.describe()
    assert re.search(r"Canary %s over [0-9.]+ s \(its (whole life|last window), measured by nginx"
                     % re.escape(thirdparty_app.versions["2"]), run.stdout), run.describe()
    assert "passed and is now stable" in run.stdout
    assert stack.stable()["image"] == thirdparty_app.images["2"]
    assert not traffic.failures(), traffic.failures()
    assert traffic.successes > 50 and longest_gap(traffic) <= MAX_GAP_S, longest_gap(traffic)


def test_rollback_to_the_previous_release_loses_no_request(stack, thirdparty_app):
    with Traffic(PORT, threads=2, warm_up=0.5) as traffic:
        run = stack.run("rollback", "-e", "to=previous")
    assert run.rc == 0, run.describe()
    assert stack.stable()["version"] == thirdparty_app.versions["1"]
    assert not traffic.failures(), traffic.failures()
    assert traffic.successes > 20 and longest_gap(traffic) <= MAX_GAP_S, longest_gap(traffic)
    print("rollback: %d answers, longest gap %.3f s" % (traffic.successes, longest_gap(traffic)))


def test_status_names_both_sources_when_neither_measures_the_app(stack):
    """An app without /metrics whose edge log cannot be read either: status.yml fails that host
    with a message naming the track, the edge log's reason and the app's, not a template error."""
    edge = stack.project / "edge"
    hidden = stack.project / "edge.hidden"
    edge.rename(hidden)
    edge.write_text("not a directory\n")  # nginx keeps writing into the renamed directory
    try:
        status = stack.run("status")
    finally:
        edge.unlink()
        hidden.rename(edge)
    assert status.rc != 0, status.describe()
    assert "The stable track (slot " in status.output and "could not be measured: nginx's edge log:" in status.output, \
        status.describe()
    assert "the app's /metrics:" in status.output, status.describe()
    assert "Traceback" not in status.output and "object has no attribute" not in status.output, status.describe()
