"""rollback.yml -e to=previous / -e version=X on a real stack, and a roll forward of an app
without mode switching (services.mode_switch: none), both under load with no failed request.

Two stacks: sdrelease (ports 17680/17682) is deployed at 1.0.0, given a canary of 1.1.0 that is
rolled forward, then rolled back to 1.0.0 through the idle slot; the refusals (an unknown
version, a canary running, an image no longer on the host) come after, on the same stack.
sdnomode (17780/17782) runs the example app with mode_switch none: no MODE_FILE, no mode file,
no signal; its canary is rolled forward by routing alone, in the same container.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest

from helpers import LocalStack, version_served  # tests/integration/helpers.py
from traffic import Traffic  # tests/integration/traffic.py

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WINDOW_SECONDS = 5
WEIGHT = 50
MIN_REQUESTS = 20


def docker(*args, timeout=60):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


class Stack(LocalStack):
    def __init__(self, name, port, tmp_path, write_manifest, run_playbook, **overrides):
        super().__init__(tmp_path, write_manifest, run_playbook, name, (port, port + 2), dict({
            "canary": {"weight": WEIGHT, "version": "1.1.0", "window_seconds": WINDOW_SECONDS},
            "policy": {"thresholds": {"min_requests": MIN_REQUESTS}}}, **overrides))

    def container(self, slot):
        return "%s-app-%s-1" % (self.name, slot)

    def app_slots(self):
        out = docker("ps", "-a", "--filter", "label=com.docker.compose.project=%s" % self.name,
                     "--filter", "label=org.swiftdeploy.role=app",
                     "--format", '{{.Label "org.swiftdeploy.slot"}}').stdout
        return sorted(out.split())

    def canary_then_roll_forward(self, *args):
        """A canary of 1.1.0, judged on a window full of traffic and rolled forward; the traffic."""
        run = self.run("promote", "-e", "mode=canary")
        assert run.rc == 0, run.describe()
        with Traffic(self.port, threads=2, warm_up=WINDOW_SECONDS + 1) as traffic:
            run = self.run("promote", "-e", "mode=stable", *args)
        assert run.rc == 0, run.describe()
        assert "passed and is now stable at 100%" in run.stdout, run.describe()
        return run, traffic


def deployed(stack):
    """The stack deployed for the block; torn down after it, its files and history with it."""
    return stack.deployed("-e", "clean=true", "-e", "purge_history=true")


# --------------------------------------------------------------------------------------------
# Rollback to a kept release
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory, write_manifest, run_playbook, app_image):
    with deployed(Stack("sdrelease", 17680, tmp_path_factory.mktemp("release"), write_manifest, run_playbook)) as stack:
        yield stack


def test_a_deploy_and_a_roll_forward_record_their_releases(stack):
    (first,) = stack.state()["releases"]
    assert first["version"] == "1.0.0" and first["image"] == stack.state()["slots"]["blue"]["image"]
    assert first["by"] and first["stable_at"].endswith("Z")
    _run, traffic = stack.canary_then_roll_forward()
    assert not traffic.failures(), traffic.failures()
    state = stack.state()
    assert [release["version"] for release in state["releases"]] == ["1.0.0", "1.1.0"]
    assert state["stable"] == "green" and state["slots"]["green"]["version"] == "1.1.0"


def test_rollback_to_previous_goes_back_through_the_idle_slot_without_a_failed_request(stack):
    before = stack.state()
    assert before["slots"][before["stable"]]["version"] == "1.1.0", before
    old_slot = before["stable"]
    # Check mode says what it would do and does nothing.
    run = stack.run("rollback", "-e", "to=previous", "--check")
    assert run.rc == 0, run.describe()
    assert stack.state() == before and stack.app_slots() == [old_slot]
    idle = "blue" if old_slot == "green" else "green"
    assert "Check mode: nothing was changed; a real run would:" in run.stdout, run.describe()
    assert re.search(r"\d\. start slots \(state \d+\): app-%s" % idle, run.stdout), run.describe()
    assert re.search(r"\d\. remove slots \(state \d+\): app-%s" % old_slot, run.stdout), run.describe()
    history = len(stack.history())
    with Traffic(stack.port, threads=2, warm_up=1.0) as traffic:
        run = stack.run("rollback", "-e", "to=previous", "-e", json.dumps({"reason": "1.1.0 is slow"}))
    assert run.rc == 0, run.describe()
    assert traffic.successes > 50 and not traffic.failures(), (traffic.successes, traffic.failures())
    assert "Rolled back from 1.1.0 to release 1.0.0" in run.stdout, run.describe()

    state = stack.state()
    assert state["stable"] != old_slot and state["canary"] is None
    assert state["slots"] == {state["stable"]: dict(before["slots"][old_slot], version="1.0.0")}
    assert state["generation"] > before["generation"]
    assert [release["version"] for release in state["releases"]] == ["1.1.0", "1.0.0"]
    assert stack.app_slots() == [state["stable"]]
    assert version_served(stack.port) == (200, "1.0.0")

    (event,) = stack.history()[history:]
    assert event["event"] == "rollback_release" and event["mode"] == "stable"
    details = event["details"]
    assert details["from"]["version"] == "1.1.0" and details["to"]["version"] == "1.0.0"
    assert details["reason"] == "1.1.0 is slow" and details["stable_slot"] == state["stable"]
    assert details["to"]["stable_at"] == before["releases"][0]["stable_at"]


def test_an_unknown_version_is_refused_naming_the_kept_ones(stack):
    before, history = stack.state(), len(stack.history())
    run = stack.run("rollback", "-e", "version=9.9.9")
    assert run.rc != 0
    assert 'rollback: version \\"9.9.9\\" is not among the kept releases; kept: 1.0.0 (' in run.output \
        or 'rollback: version "9.9.9" is not among the kept releases; kept: 1.0.0 (' in run.output, run.describe()
    assert "1.1.0 (" in run.output and "use -e version= with one of them" in run.output
    assert stack.state() == before and len(stack.history()) == history
    # The lock was given back: the stable release itself is "nothing to do".
    run = stack.run("rollback", "-e", "version=1.0.0")
    assert run.rc == 0, run.describe()
    assert "Release 1.0.0" in run.stdout and "is already the stable release of sdrelease; nothing to roll back" \
        in run.stdout, run.describe()
    assert stack.state() == before


def test_a_running_canary_is_not_rolled_over(stack):
    run = stack.run("promote", "-e", "mode=canary")
    assert run.rc == 0, run.describe()
    before = stack.state()
    run = stack.run("rollback", "-e", "to=previous")
    assert run.rc != 0
    assert "rollback: a canary of version 1.1.0 is running" in run.output, run.describe()
    assert "end it first with promote.yml -e mode=stable (judge it) or rollback.yml without to or version" \
        in run.output
    assert stack.state() == before
    # -e to=canary (the AWX survey's other choice) is today's rollback.yml: the canary is dropped.
    run = stack.run("rollback", "-e", "to=canary")
    assert run.rc == 0, run.describe()
    assert "Rolled back: canary 1.1.0 removed" in run.stdout
    assert stack.state()["canary"] is None


def test_a_release_whose_image_is_gone_is_refused_naming_it(stack):
    state = stack.state()
    gone = {"image": "sdrelease-gone:0.1", "version": "0.1", "stable_at": "2026-01-01T00:00:00Z", "by": "test"}
    state["releases"] = [gone] + state["releases"]
    (stack.project / "state.json").write_text(json.dumps(state))
    run = stack.run("rollback", "-e", "version=0.1")
    assert run.rc != 0
    assert "Release 0.1 cannot be brought back: its image sdrelease-gone:0.1 is no longer on" in run.output, \
        run.describe()
    assert stack.state() == state and stack.app_slots() == [state["stable"]]


# --------------------------------------------------------------------------------------------
# An app without mode switching
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nomode(tmp_path_factory, write_manifest, run_playbook, app_image):
    with deployed(Stack("sdnomode", 17780, tmp_path_factory.mktemp("nomode"), write_manifest, run_playbook,
                        **{"services.mode_switch": "none"})) as stack:
        yield stack


def inspect(container):
    out = docker("inspect", container)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def test_without_mode_switching_a_canary_rolls_forward_by_routing_alone(nomode):
    run = nomode.run("promote", "-e", "mode=canary")
    assert run.rc == 0, run.describe()
    canary = nomode.state()["canary"]
    before = inspect(nomode.container(canary))
    for slot in nomode.state()["slots"]:
        info = inspect(nomode.container(slot))
        assert not [env for env in info["Config"]["Env"] if env.startswith("MODE_FILE=")], info["Config"]["Env"]
        assert not [mount for mount in info["Mounts"] if "/slots/" in mount.get("Source", "")], info["Mounts"]
    assert not (nomode.project / "slots").exists()

    with Traffic(nomode.port, threads=2, warm_up=WINDOW_SECONDS + 1) as traffic:
        run = nomode.run("promote", "-e", "mode=stable", "-v")
    assert run.rc == 0, run.describe()
    assert "passed and is now stable at 100%" in run.stdout, run.describe()
    assert traffic.successes > 50 and not traffic.failures(), (traffic.successes, traffic.failures())
    # The judged container itself is the stable release now: not restarted, never signalled.
    state = nomode.state()
    assert state["stable"] == canary and state["canary"] is None and nomode.app_slots() == [canary]
    after = inspect(nomode.container(canary))
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert '"switch mode"' not in run.stdout and "slots switching mode" not in run.stdout, run.describe()
    assert "slots rerouted in place: %s" % canary in run.stdout, run.describe()
    assert '"slots_switched": []' in run.stdout, run.describe()
    assert version_served(nomode.port) == (200, "1.1.0")
    assert [release["version"] for release in state["releases"]] == ["1.0.0", "1.1.0"]
    assert not pathlib.Path(nomode.project / "slots").exists()
