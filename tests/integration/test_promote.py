"""promote.yml, rollback.yml and status.yml on a real stack: canary split, canary gate, roll
forward, roll back, and who may inject chaos.

One stack (sdpromo, ports 17180/17182) is deployed for the whole module and reused: each test
brings it to the state it needs (a canary at a given weight, or stable) with as few playbook
runs as possible, so in file order most tests start where the previous one left off. The roll
forward comes last because it makes the canary's release (1.1.0) the stable one.

Traffic comes from background threads (stdlib http.client, keep-alive) while a playbook runs.
promote.yml -e mode=stable judges the canary on its last window (the manifest's 5 s, from the
app's own counter snapshots), so a test that needs a judged window full of traffic starts the
clients a window before the playbook (`warm_up`); the clients run until the playbook returns.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _edge as edge_log  # noqa: E402

from traffic import Traffic  # tests/integration/traffic.py

# timing: a canary judged before it is a window old, windows filled by traffic (scripts/test.sh runs it alone).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timing]

NAME, PORT, ADMIN_PORT = "sdpromo", 17180, 17182
WEIGHT = 10
MIN_REQUESTS = 50
WINDOW_SECONDS = 5

# The client "host" of the isolation test: a network namespace joined to this machine by a veth
# pair (names and addresses of its own, so it never meets test_sidecar_isolation's).
NETNS = "sdpromo-client"
HOST_IF, NS_IF = "sdp-host", "sdp-ns"
HOST_IP, NS_IP = "10.204.0.1", "10.204.0.2"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def docker(*args, timeout=60):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def request(port, path="/", method="GET", body=None, host="127.0.0.1"):
    """One request on a fresh connection: (status, headers as a dict, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body is not None else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def chaos(spec):
    """POST /chaos on the host's admin port (nginx sends it to the canary while there is one)."""
    return request(ADMIN_PORT, "/chaos", method="POST", body=json.dumps(spec).encode())


def count_canary(port, total):
    """Send `total` GET / on one keep-alive connection; return how many came from the canary."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    canary = 0
    try:
        for done in range(total):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            assert response.status in (200, 500), "request %d answered %d" % (done, response.status)
            canary += response.getheader("X-Mode") == "canary"
    finally:
        conn.close()
    return canary


def metrics_requests(slot):
    """How many requests the slot's app has answered on /metrics (this one included): a judge
    that measures at the edge never asks."""
    status, _headers, body = request(ADMIN_PORT, "/slots/%s/metrics" % slot)
    assert status == 200, body
    counts = re.findall(r'^http_requests_total\{[^}]*path="/metrics"[^}]*\} ([0-9.]+)$', body.decode(), re.M)
    return sum(float(count) for count in counts)


def binomial_bounds(total, share, sigmas=4.0):
    """The range of successes within `sigmas` standard deviations of a binomial's mean."""
    mean = total * share
    spread = sigmas * math.sqrt(total * share * (1.0 - share))
    return mean - spread, mean + spread


class Stack:
    """The module's stack: its manifest, project directory and the playbook runs on it."""

    def __init__(self, tmp_path, write_manifest, run_playbook, ansible_env, repo_root):
        self.name, self.port, self.admin_port = NAME, PORT, ADMIN_PORT
        self.project = tmp_path / "project"
        # The role's default: one lock per stack on the host.
        self.lock = pathlib.Path("/run/lock/swiftdeploy/%s.lock" % NAME)
        overrides = {
            "stack": NAME, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT,
            "network.name": "%s-net" % NAME, "services.log_volume": "%s-logs" % NAME,
            "contact": "oncall@%s.example" % NAME,
            "canary": {"weight": WEIGHT, "version": "1.1.0", "window_seconds": WINDOW_SECONDS},
            "policy": {"thresholds": {"min_requests": MIN_REQUESTS}}}
        # canary.metrics is edge by default; the same stack judged on the app's own /metrics:
        self.manifest = write_manifest(tmp_path / "manifest.yml", overrides)
        overrides["canary"] = dict(overrides["canary"], metrics="app")
        self.app_metrics_manifest = write_manifest(tmp_path / "manifest-app-metrics.yml", overrides)
        self._run = run_playbook
        self._env = ansible_env
        self._repo_root = repo_root

    def args(self, manifest=None):
        return ("-e", "swiftdeploy_manifest=%s" % (manifest or self.manifest), "-e", "swiftdeploy_project_dir=%s" % self.project)

    def run(self, playbook, *args, **kwargs):
        return self._run(playbook, *self.args(), *args, **kwargs)

    def run_with_custom_stats(self, playbook, *args):
        """ansible-playbook with the default callback's custom stats shown (set_stats data)."""
        env = dict(self._env, ANSIBLE_SHOW_CUSTOM_STATS="1")
        command = ["ansible-playbook", str(self._repo_root / "playbooks" / ("%s.yml" % playbook)), *self.args(), *args]
        return subprocess.run(command, cwd=self._repo_root, env=env, capture_output=True, text=True,
                              timeout=600, check=False)

    def run_with_slot_paused(self, slot, playbook, *args, manifest=None):
        """A playbook run while the slot's container is paused: it accepts connections (through
        nginx too) but never answers, so a request to it times out."""
        container = "%s-app-%s-1" % (self.name, slot)
        assert docker("pause", container).returncode == 0
        try:
            return self._run(playbook, *self.args(manifest), *args)
        finally:
            docker("unpause", container)

    def state(self):
        return json.loads((self.project / "state.json").read_text())

    def history(self):
        path = pathlib.Path(self.project) / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def app_slots(self):
        """The slot label of every app container of the compose project, running or not."""
        out = docker("ps", "-a", "--filter", "label=com.docker.compose.project=%s" % self.name,
                     "--filter", "label=org.swiftdeploy.role=app",
                     "--format", '{{.Label "org.swiftdeploy.slot"}}').stdout
        return sorted(out.split())

    # -- bring the stack to the state a test needs --------------------------------------------

    def ensure_canary(self, weight=WEIGHT):
        state = self.state()
        if state["canary"] is not None and state["weight"] == weight:
            return None
        run = self.run("promote", "-e", "mode=canary", "-e", "weight=%d" % weight)
        assert run.rc == 0, run.describe()
        state = self.state()
        assert state["mode"] == "canary" and state["canary"] and state["weight"] == weight, state
        return run

    def ensure_stable(self):
        if self.state()["canary"] is None:
            return None
        run = self.run("rollback", "-e", "reason=test setup")
        assert run.rc == 0, run.describe()
        return run

    def assert_one_stable_slot(self):
        state = self.state()
        assert state["mode"] == "stable" and state["canary"] is None, state
        assert list(state["slots"]) == [state["stable"]], state
        assert self.app_slots() == [state["stable"]]
        return state


def events_since(stack, count):
    return [entry["event"] for entry in stack.history()[count:]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, write_manifest, run_playbook, ansible_env, repo_root, app_image):
    stack = Stack(tmp_path_factory.mktemp("promote"), write_manifest, run_playbook, ansible_env, repo_root)
    try:
        run = stack.run("deploy")
        assert run.rc == 0, run.describe()
        stack.assert_one_stable_slot()
        yield stack
    finally:
        stack.run("teardown", "-e", "clean=true")


# --------------------------------------------------------------------------------------------
# Tests, in the order they are meant to run
# --------------------------------------------------------------------------------------------


def test_weight_10_sends_about_10_percent_to_the_canary(stack):
    stack.ensure_canary(WEIGHT)
    total = 2000
    canary = count_canary(stack.port, total)
    low, high = binomial_bounds(total, WEIGHT / 100.0)
    print("canary answered %d of %d requests (4-sigma range %.0f-%.0f)" % (canary, total, low, high))
    assert low <= canary <= high


def test_the_edge_log_counts_each_slots_public_requests(stack):
    stack.ensure_canary(WEIGHT)
    edge = stack.project / "edge"
    found = edge.stat()
    assert (found.st_uid, found.st_mode & 0o7777) == (101, 0o755)  # nginx's alone to write
    # nginx stamps a line with its cached clock in whole milliseconds ($msec), which can be a
    # millisecond before this process's clock: open the window 50 ms before the first request,
    # after 100 ms of quiet, so it holds these requests and no earlier one.
    time.sleep(0.1)
    started = time.time() - 0.05
    canary = count_canary(stack.port, 300)
    # Probes, scrapes and chaos on the public port are not traffic (the last two are refused).
    for path in ("/healthz", "/metrics", "/chaos?x=1"):
        for _probe in range(10):
            request(stack.port, path)
    now = time.time()  # lines are stamped when a request ends: the window holds exactly these
    figures = edge_log.read_window(str(edge), now - started, now)
    slots = figures["slots"]
    state = stack.state()
    print("edge: %s" % {slot: (value["requests"], value["errors"], value["p99_latency_ms"]) for slot, value in slots.items()})
    assert slots[state["canary"]]["requests"] == canary
    assert slots[state["stable"]]["requests"] == 300 - canary
    assert figures["excluded"] == 30
    assert slots[state["stable"]]["errors"] == 0 and slots[state["stable"]]["p99_latency_ms"] > 0
    assert figures["skipped"] == 0 and figures["future"] == 0
    assert all(name.startswith("edge-") and name.endswith(".log") for name in os.listdir(edge))


def test_status_during_a_canary_shows_both_tracks(stack):
    stack.ensure_canary(WEIGHT)
    count_canary(stack.port, 200)
    before = len(stack.history())
    with Traffic(stack.port, warm_up=1.0):
        proc = stack.run_with_custom_stats("status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Mode CANARY, canary weight %d%%" % WEIGHT in out
    state = stack.state()
    assert "[stable] slot %s, version 1.0.0, app mode stable" % state["stable"] in out
    assert "[canary] slot %s, version 1.1.0, app mode canary" % state["canary"] in out
    # nginx's figures per slot over the last canary window (the 200 requests above at least).
    assert "At the edge (nginx), last %.1f s:" % WINDOW_SECONDS in out, out
    edge = dict(re.findall(r"\[(stable|canary)\] slot \w+: [0-9.]+ req/s \| errors [0-9.]+% \| P99 [0-9.]+ ms \| "
                           r"([0-9]+) requests over", out))
    assert set(edge) == {"stable", "canary"}, out
    assert int(edge["stable"]) > 0 and int(edge["canary"]) > 0, out
    assert events_since(stack, before) == ["status_scrape"]
    scrape = stack.history()[-1]
    assert scrape["mode"] == "canary" and scrape["details"]["weight"] == WEIGHT

    # set_stats: the same report, for AWX, in the run's custom stats.
    (line,) = [line for line in out.splitlines() if line.startswith("\tRUN: ")]
    stats = json.loads(line[len("\tRUN: "):])["swiftdeploy_status"]
    assert stats["mode"] == "canary" and stats["weight"] == WEIGHT
    assert sorted(stats["tracks"]) == ["canary", "stable"]
    assert stats["tracks"]["canary"]["slot"] == state["canary"]
    assert stats["tracks"]["canary"]["version"] == "1.1.0"
    assert stats["tracks"]["stable"]["slot"] == state["stable"]
    assert stats["policy"]["canary"]["track"] == "canary"
    assert stats["event"]["mode"] == "canary"


def test_a_deploy_during_a_canary_keeps_it(stack):
    stack.ensure_canary(WEIGHT)
    before = stack.state()
    run = stack.run("deploy")
    assert run.rc == 0, run.describe()
    assert "Live mode is canary (canary 1.1.0 at %d%%)" % WEIGHT in run.stdout
    assert "applies to a stack's first deploy only" in run.stdout
    after = stack.state()
    assert after["canary"] is not None and after == before
    assert sorted(stack.app_slots()) == sorted(after["slots"])
    assert count_canary(stack.port, 300) > 0
    assert stack.history()[-1]["event"] == "deploy" and stack.history()[-1]["mode"] == "canary"


def test_a_running_canary_is_not_replaced_by_another_release(stack, tmp_path, write_manifest):
    """The manifest now names canary 1.2.0 while 1.1.0 runs: promote canary refuses, naming both
    releases and the way out, and changes nothing; a weight outside 1..100 is refused first."""
    stack.ensure_canary(WEIGHT)
    before, history = stack.state(), len(stack.history())
    manifest = write_manifest(tmp_path / "manifest-1.2.0.yml", {"canary.version": "1.2.0"}, base=stack.manifest)
    args = ("-e", "swiftdeploy_manifest=%s" % manifest, "-e", "swiftdeploy_project_dir=%s" % stack.project,
            "-e", "mode=canary")
    run = stack._run("promote", *args)
    assert run.rc != 0
    assert ("A canary of version 1.1.0 is already running; the manifest now names 1.2.0. End it first "
            "(promote.yml -e mode=stable or rollback.yml).") in run.output, run.describe()
    run = stack._run("promote", *args, "-e", "weight=0")
    assert run.rc != 0
    assert "weight: 0 is not a percentage; use a whole number from 1 to 100 (-e weight=10)." in run.output, run.describe()
    run = stack._run("promote", *args, "-e", "weight=ten")
    assert run.rc != 0
    assert "argument 'swiftdeploy_promote_weight' is of type str and we were unable to convert to int" in run.output
    assert "'ten'" in run.output, run.describe()
    assert stack.state() == before and len(stack.history()) == history
    assert sorted(stack.app_slots()) == sorted(before["slots"])


# A client in the namespace: status and X-Mode of one request, or the exception's name.
CLIENT = """
import http.client, json, sys
host, port, method, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    conn = http.client.HTTPConnection(host, port, timeout=3)
    conn.request(method, path, body=b'{"mode": "recover"}' if method == "POST" else None,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    print(json.dumps({"status": response.status, "mode": response.getheader("X-Mode")}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


def ip(*command, check=True):
    return subprocess.run(["ip", *command], capture_output=True, text=True, timeout=60, check=check)


def from_namespace(port, path, method="GET"):
    out = ip("netns", "exec", NETNS, "python3", "-c", CLIENT, HOST_IP, str(port), method, path).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def client_namespace():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is missing (scripts/setup-host.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    ip("netns", "del", NETNS, check=False)
    ip("link", "del", HOST_IF, check=False)
    ip("netns", "add", NETNS)
    try:
        ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        ip("link", "set", NS_IF, "netns", NETNS)
        ip("addr", "add", HOST_IP + "/24", "dev", HOST_IF)
        ip("link", "set", HOST_IF, "up")
        ip("netns", "exec", NETNS, "ip", "addr", "add", NS_IP + "/24", "dev", NS_IF)
        ip("netns", "exec", NETNS, "ip", "link", "set", NS_IF, "up")
        ip("netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
        yield NETNS
    finally:
        ip("link", "del", HOST_IF, check=False)
        ip("netns", "del", NETNS, check=False)


def test_chaos_is_refused_from_another_host_and_reaches_the_canary_from_this_one(stack, client_namespace):
    stack.ensure_canary(WEIGHT)
    # The public port answers the other host, so the refusals below are isolation, not a
    # broken network.
    assert from_namespace(stack.port, "/")["status"] == 200
    assert from_namespace(stack.port, "/chaos", method="POST") == {"status": 403, "mode": None}
    assert "error" in from_namespace(stack.admin_port, "/chaos", method="POST")
    # The host itself reaches the canary's /chaos on the admin port.
    status, headers, body = chaos({"mode": "recover"})
    assert status == 200, body
    assert headers.get("X-Mode") == "canary"
    assert json.loads(body) == {"chaos": {"mode": "none"}}


def test_rollback_playbook_leaves_one_stable_slot_and_records_why(stack):
    stack.ensure_canary(WEIGHT)
    before = len(stack.history())
    # Quoted inside the value: `-e reason=two words` would keep only "two" (key=value parsing).
    run = stack.run("rollback", "-e", 'reason="operator saw a regression"')
    assert run.rc == 0, run.describe()
    state = stack.assert_one_stable_slot()
    assert state["slots"][state["stable"]]["version"] == "1.0.0"
    assert events_since(stack, before) == ["rollback"]
    rollback = stack.history()[-1]
    assert rollback["details"]["reason"] == "operator saw a regression"
    assert rollback["details"]["canary_version"] == "1.1.0"
    assert rollback["mode"] == "stable"
    assert count_canary(stack.port, 200) == 0
    # The report after the converge ran too (a condition on the roll back must not reach it).
    assert "Rolled back: canary 1.1.0 removed; stable 1.0.0 answers every request." in run.stdout, run.describe()
    assert "History: rollback recorded, last as seq %d" % rollback["seq"] in run.stdout, run.describe()


def test_a_canary_is_not_started_beside_an_unhealthy_stable_slot(stack):
    stack.ensure_stable()
    state = stack.state()
    before = len(stack.history())
    run = stack.run_with_slot_paused(state["stable"], "promote", "-e", "mode=canary")  # its health times out
    assert run.rc != 0, run.describe()
    assert "Promotion to canary blocked; nothing was started" in run.stdout
    assert stack.app_slots() == [state["stable"]]
    assert stack.state() == state
    assert events_since(stack, before) == ["promote_blocked"]
    (reason,) = [r for r in stack.history()[-1]["details"]["reasons"] if r.startswith("stable slot")]
    assert reason.startswith("stable slot %s is not healthy: " % state["stable"]) and "healthz" in reason, reason
    # The lock was given back with the record: the next run is not refused.
    assert not stack.lock.exists()


def test_a_canary_that_cannot_be_measured_is_not_judged(stack):
    stack.ensure_stable()
    stack.ensure_canary(WEIGHT)
    state = stack.state()
    before = len(stack.history())
    # Judged on the app's own metrics (canary.metrics: app), which time out.
    run = stack.run_with_slot_paused(state["canary"], "promote", "-e", "mode=stable", manifest=stack.app_metrics_manifest)
    assert run.rc != 0, run.describe()
    assert ("The canary slot %s could not be measured, so it cannot be judged (nothing was changed): "
            % state["canary"]) in run.output, run.describe()
    assert "Check it with status.yml, or end it with rollback.yml." in run.output
    assert "Canary policy" not in run.output  # never asked
    assert stack.state() == state
    assert sorted(stack.app_slots()) == sorted(state["slots"])
    assert events_since(stack, before) == []
    # The lock was given back: the next run is not refused.
    assert not stack.lock.exists()


def test_too_few_requests_are_denied_for_lack_of_data(stack):
    stack.ensure_stable()
    stack.ensure_canary(WEIGHT)
    before = len(stack.history())
    run = stack.run("promote", "-e", "mode=stable")  # no traffic at all in the window
    assert run.rc != 0, run.describe()
    # Judged at once after it started: waited for until it is a window old, like on app metrics.
    assert "(its whole life, measured by nginx; waited for)" in run.output, run.describe()
    assert "rolled back" in run.output
    assert "not enough data" in run.output
    assert "passed and is now stable" not in run.output
    stack.assert_one_stable_slot()
    assert events_since(stack, before) == ["promote_blocked", "rollback"]
    assert "History: promote_blocked, rollback recorded" in run.stdout, run.describe()
    assert "Rolled back: canary 1.1.0 removed" in run.stdout, run.describe()
    blocked = stack.history()[before]
    assert blocked["details"]["policy"] == "canary"
    assert any("not enough data" in reason for reason in blocked["details"]["reasons"])
    assert blocked["details"]["checked"]["requests"] < MIN_REQUESTS
    assert blocked["details"]["checked"]["min_requests"] == MIN_REQUESTS


def test_a_failing_canary_never_reaches_100_percent(stack):
    stack.ensure_stable()
    stack.ensure_canary(WEIGHT)
    status, headers, body = chaos({"mode": "error", "rate": 1.0})
    assert status == 200 and headers.get("X-Mode") == "canary", body
    before = len(stack.history())
    with Traffic(stack.port, warm_up=WINDOW_SECONDS + 0.5) as traffic:
        run = stack.run("promote", "-e", "mode=stable")
    assert run.rc != 0, run.describe()
    assert "rolled back" in run.output
    assert "error rate 100.00% exceeds the maximum" in run.output
    stack.assert_one_stable_slot()
    assert events_since(stack, before) == ["promote_blocked", "rollback"]
    blocked, rollback = stack.history()[before:]
    assert any("error rate" in reason for reason in blocked["details"]["reasons"])
    assert blocked["details"]["window"]["requests"] >= 1
    assert rollback["details"]["reason"] == "canary policy denied the promotion"

    # While the promotion ran, the canary got its share and never more.
    responses = traffic.responses
    canary_at = [index for index, entry in enumerate(responses) if entry[2]]
    assert canary_at, "the background client never reached the canary"
    live = responses[:canary_at[-1] + 1]  # until the canary's last answer, before the roll back
    low, high = binomial_bounds(len(live), WEIGHT / 100.0)
    share = len(canary_at) / len(live)
    buckets = traffic.buckets()
    print("%d responses while the canary was live, %d from the canary (%.1f%%, 4-sigma range %.0f-%.0f); "
          "%d responses in all; other failures: %s"
          % (len(live), len(canary_at), 100 * share, low, high, len(responses), dict(traffic.failures())))
    assert low <= len(canary_at) <= high
    # In no second did the canary answer most requests (a canary at 100% would answer all).
    for second, (total, canary) in sorted(buckets.items()):
        if total >= 20:
            assert canary / total < 0.5, "second %d: %d of %d responses from the canary" % (second, canary, total)
    # Every canary answer was the injected error, and nothing else failed but the canary.
    assert all(entry[1] == 500 for entry in responses if entry[2])

    # Afterwards the canary is gone.
    assert count_canary(stack.port, 300) == 0


def test_a_passing_canary_rolls_forward(stack):
    stack.ensure_stable()
    # A weight of 50 gives the 5 s window several times the 50 requests the gate needs even on
    # a busy host; the split itself is test_weight_10_sends_about_10_percent_to_the_canary's.
    stack.ensure_canary(50)
    before = len(stack.history())
    canary = stack.state()["canary"]
    with Traffic(stack.port, warm_up=WINDOW_SECONDS + 0.5) as traffic:
        scrapes = metrics_requests(canary)
        run = stack.run("promote", "-e", "mode=stable")
    assert run.rc == 0, run.describe()
    # Judged without the app's /metrics: only this test's own two scrapes reached it (the judged
    # canary is switched to stable in place, so its counters go on).
    assert metrics_requests(canary) == scrapes + 1
    assert "Canary 1.1.0 passed and is now stable at 100%." in run.stdout
    # The judged figures are shown first (the assert's success message).
    assert re.search(r'msg"?: "?Canary 1\.1\.0 over [0-9.]+ s \(its last window, measured by nginx\)', run.stdout), run.describe()
    assert " requests, error rate " in run.stdout
    # The stable slot's figures over the same window come with them (the baseline).
    assert re.search(r"Baseline, stable 1\.0\.0 over the same [0-9.]+ s: [1-9][0-9]* requests, error rate 0\.0%", run.stdout), \
        run.describe()
    print("%d responses during the roll forward; failures: %s" % (len(traffic.responses), dict(traffic.failures())))
    assert traffic.canary > 0
    state = stack.assert_one_stable_slot()
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", "swift-deploy-1-node:latest"],
                              capture_output=True, text=True, check=True).stdout.strip()
    # The judged slot keeps the image ID it was started from (docs/images.md).
    assert state["slots"][state["stable"]] == {"image": "swift-deploy-1-node:latest", "version": "1.1.0", "mode": "stable",
                                               "image_id": image_id}
    status, headers, body = request(stack.port, "/")
    assert status == 200
    data = json.loads(body)
    assert data["version"] == "1.1.0" and data["mode"] == "stable"
    assert "X-Mode" not in headers
    assert count_canary(stack.port, 200) == 0
    assert events_since(stack, before) == ["promote"]
    promote = stack.history()[-1]
    assert promote["mode"] == "stable"
    assert promote["details"]["result"] == "rolled_forward"
    assert promote["details"]["from_version"] == "1.0.0" and promote["details"]["version"] == "1.1.0"
    assert promote["details"]["window"]["requests"] >= MIN_REQUESTS


def test_the_nginx_container_deletes_old_edge_files(stack):
    # Its loop runs every 60 s, from nginx's start (this module's deploy), through every reload.
    edge = stack.project / "edge"
    old, recent = edge / "edge-1.log", edge / ("edge-%d.log" % (edge_log.bucket_of(time.time()) - 5))
    for path, age in ((old, 20 * 60), (recent, 8 * 60)):
        path.write_text("")
        os.chown(path, 101, 101)
        os.utime(path, (time.time() - age, time.time() - age))
    deadline = time.monotonic() + 75
    while old.exists() and time.monotonic() < deadline:
        time.sleep(1)
    assert not old.exists(), "nginx's loop did not delete a 20 min old edge log file within 75 s"
    assert recent.exists()  # 8 min old: a 600 s window may still need it
    recent.unlink()
