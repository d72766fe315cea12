"""promote.yml -e mode=auto with analysis.baseline: fresh on a real stack under load
(docs/auto-rollout.md, "A fresh baseline").

One stack (sdfresh, ports 17980/17982), short intervals (2 s), steps [20, 50]: a third app
container, slot `baseline`, runs the stable release beside the canary at the canary's weight (at
50 % the stable slot gets nothing), the canary is judged against it, and it is gone after the
promotion or the rollback, with no failed request but the canary's own.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from helpers import AutoStack, Background, judged  # tests/integration/helpers.py
from traffic import Traffic  # tests/integration/traffic.py

# timing: the rollouts are judged on 2 s windows (scripts/test.sh runs the timing stage alone)
# Its own stack (sdfresh) and ports, and no assertion on wall-clock time: it runs beside the
# foreground's local-engine tests (scripts/test.sh, marker `beside`).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.beside]

NAME, PORT, ADMIN_PORT = "sdfresh", 17980, 17982


def baseline_containers():
    """[(name, image, state)] of the stack's baseline containers, running or not."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", "label=org.swiftdeploy.stack=%s" % NAME,
                          "--filter", "label=org.swiftdeploy.slot=baseline", "--format",
                          "{{.Names}}\t{{.Image}}\t{{.State}}"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line.strip()]


class Watcher(Background):
    """Polls the baseline container and state.json while a rollout runs."""

    def __init__(self, stack):
        super().__init__()
        self.stack = stack
        self.seen = []  # (image, state.json's weight)
        self.states = []

    def _run(self):
        while not self._stop.is_set():
            containers = baseline_containers()
            try:
                state = self.stack.state()
            except (OSError, ValueError):
                state = {}
            if state.get("baseline"):
                self.states.append(state)
            for _name, image, status in containers:
                if status == "running":
                    self.seen.append((image, state.get("weight")))
            self._stop.wait(0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, write_manifest, run_playbook, ansible_env, repo_root, app_image):
    stack = AutoStack(tmp_path_factory.mktemp("fresh"), (write_manifest, run_playbook, ansible_env, repo_root),
                      NAME, (PORT, ADMIN_PORT), steps=[20, 50], baseline="fresh")
    with stack.deployed("-e", "clean=true"):
        yield stack
    assert baseline_containers() == []


def stable_image(stack):
    state = stack.state()
    return state["slots"][state["stable"]]["image"]


def test_a_good_release_reaches_100_percent_beside_a_fresh_baseline_without_a_failed_request(stack):
    before = len(stack.history())
    image = stable_image(stack)
    with Watcher(stack) as watcher, Traffic(PORT, threads=2, warm_up=1.0) as traffic:
        run = stack.run("promote", "-e", "mode=auto", manifest=stack.manifest_for("1.1.0"))
        time.sleep(0.5)
    assert run.rc == 0, run.describe()
    state = stack.state()
    assert state["mode"] == "stable" and state["canary"] is None and "baseline" not in state, state
    assert state["slots"][state["stable"]]["version"] == "1.1.0"
    statuses = [status for _at, status, _canary in traffic.responses]
    failed = [status for status in statuses if status != 200]
    print("%d requests, failed: %s" % (len(statuses), failed[:10]))
    assert len(statuses) > 200 and failed == []
    # The baseline ran the stable release's image through both steps, and is gone.
    print("baseline seen at weights %s" % sorted(set(weight for _image, weight in watcher.seen)))
    assert watcher.seen and set(seen for seen, _weight in watcher.seen) == {image}
    assert {20, 50} <= set(weight for _image, weight in watcher.seen)
    during = watcher.states[-1]
    assert during["slots"]["baseline"] == during["slots"][during["stable"]]
    assert baseline_containers() == []
    looks = judged(stack.history(), before)
    assert [entry["details"]["baseline"] for entry in looks] == ["fresh"] * len(looks)
    assert looks[-1]["details"]["verdict"] == "promote" and looks[-1]["details"]["weight"] == 50
    # nginx sent the baseline the canary's share: comparable numbers of requests in each window.
    measured = [entry["details"]["windows"] for entry in looks if entry["details"]["windows"]]
    canary = sum(window["canary"]["requests"] for window in measured)
    baseline = sum(window["baseline"]["requests"] for window in measured)
    print("canary %d, baseline %d requests judged" % (canary, baseline))
    assert baseline > 0 and 0.5 < canary / baseline < 2.0
    assert "| fresh baseline " in run.stdout and "| PROMOTE:" in run.stdout, run.stdout


def test_a_bad_release_is_rolled_back_against_the_fresh_baseline_and_the_baseline_leaves(stack):
    before = len(stack.history())
    stable = stack.state()
    version = stable["slots"][stable["stable"]]["version"]
    with Watcher(stack) as watcher, Traffic(PORT, threads=2, warm_up=1.0) as traffic, \
            stack.chaos_in_the_background(0.2) as injected:
        run = stack.run("promote", "-e", "mode=auto", manifest=stack.manifest_for("1.2.0"))
        time.sleep(0.5)
    assert injected.get("at"), "the canary never accepted the chaos"
    assert run.rc != 0, run.describe()
    assert "Canary rejected by the automated rollout and rolled back" in run.stdout, run.stdout
    state = stack.state()
    assert state["mode"] == "stable" and state["canary"] is None and "baseline" not in state, state
    assert state["slots"][state["stable"]]["version"] == version
    assert watcher.seen and baseline_containers() == []
    # Every failed request is the canary's own (X-Mode: canary); the stable release and its fresh
    # baseline answered every one of theirs.
    not_canary = [status for _at, status, canary in traffic.responses if not canary]
    failed = [status for status in not_canary if status != 200]
    print("%d requests not on the canary, failed: %s" % (len(not_canary), failed[:10]))
    assert len(not_canary) > 100 and failed == []
    looks = judged(stack.history(), before)
    print([entry["details"]["verdict"] for entry in looks])
    last = looks[-1]["details"]
    assert last["verdict"] == "rollback" and last["baseline"] == "fresh"
    assert [entry["event"] for entry in stack.history()[before:]][-1] == "rollback"


def test_a_killed_rollout_finds_its_baseline_and_status_shows_it(stack):
    before = len(stack.history())
    image = stable_image(stack)
    # Enough canary requests are needed that the first step holds for a few looks (20 % of the
    # load is 100-300 canary requests a look here), and time for the status and the rerun.
    manifest = stack.manifest_for("1.3.0", max_duration=120, min_canary_requests=1500)
    with Traffic(PORT, threads=2, warm_up=1.0) as traffic:
        stack.killed_after_looks(manifest, before, 2)
        state = stack.state()
        assert state["canary"] and state["baseline"] == "baseline" and state["weight"] in (20, 50), state
        running = baseline_containers()
        assert [(item[1], item[2]) for item in running] == [(image, "running")], running
        # status.yml shows the baseline's track and names the baseline of the interrupted rollout.
        status = stack.run("status", manifest=manifest)
        assert status.rc == 0, status.describe()
        stable = state["slots"][state["stable"]]["version"]
        assert "[baseline] slot baseline, version %s" % stable in status.stdout, status.stdout
        assert "; baseline: fresh (slot baseline" in status.stdout, status.stdout
        run = stack.run("promote", "-e", "mode=auto", manifest=manifest)
    assert run.rc == 0, run.describe()
    assert "Resuming the automated rollout of canary 1.3.0" in run.stdout, run.stdout
    looks = judged(stack.history(), before)
    assert looks[-1]["details"]["verdict"] == "promote" and looks[-1]["details"]["baseline"] == "fresh"
    # the resumed run compared with the same baseline container: its counts carry on
    assert looks[-1]["details"]["analysis"]["errors"]["baseline_requests"] >= 700
    state = stack.state()
    assert state["mode"] == "stable" and "baseline" not in state
    assert state["slots"][state["stable"]]["version"] == "1.3.0"
    assert baseline_containers() == []
    failed = [status for _at, status, _canary in traffic.responses if status != 200]
    assert failed == [], failed[:10]


def test_a_canary_started_by_hand_gets_its_fresh_baseline_warmed_up(stack):
    """A canary started with mode=canary (no baseline), then rolled out with mode=auto and
    analysis.baseline: fresh: the rerun starts the baseline beside it before the first look, and
    that look leaves the baseline's first window out of the latency comparison (a process that has
    just started is slower), as for a canary the run starts itself."""
    before = len(stack.history())
    image = stable_image(stack)
    manifest = stack.manifest_for("1.4.0")
    with Traffic(PORT, threads=2, warm_up=1.0) as traffic:
        started = stack.run("promote", "-e", "mode=canary", manifest=manifest)
        assert started.rc == 0, started.describe()
        assert "baseline" not in stack.state() and baseline_containers() == []
        with Watcher(stack) as watcher:
            run = stack.run("promote", "-e", "mode=auto", manifest=manifest)
    assert run.rc == 0, run.describe()
    assert "Taking over canary 1.4.0" in run.stdout, run.stdout
    assert {seen[0] for seen in watcher.seen} == {image}, watcher.seen
    looks = [entry["details"] for entry in judged(stack.history(), before) if entry["details"]["windows"]]
    assert looks[0]["baseline"] == "fresh" and looks[0]["latency_warm_up"] is True, looks[0]
    assert looks[0]["analysis"]["latency"]["canary_requests"] == 0, looks[0]["analysis"]
    assert all(look["latency_warm_up"] is False for look in looks[1:]), looks
    assert looks[-1]["verdict"] == "promote"
    assert stack.state()["slots"][stack.state()["stable"]]["version"] == "1.4.0" and baseline_containers() == []
    failed = [status for _at, status, _canary in traffic.responses if status != 200]
    assert failed == [], failed[:10]
