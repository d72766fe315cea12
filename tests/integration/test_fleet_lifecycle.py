"""The whole lifecycle once against one fleet host over SSH, so nothing assumes the controller is
the target: deploy, a no-op redeploy, a canary rolled back by rollback.yml, a canary rolled
forward by promote.yml -e mode=stable, rollback.yml -e to=previous, status, audit and teardown.

The fleet host (tests/integration/fleet.py) is a Docker host of its own (its own dockerd, image
store, filesystem and IP), reached only over SSH. The images go to it from this machine with
`swiftdeploy_image_source: controller`. Every request goes to the host's own address while the
switches run, and none may fail. After each step the test looks on the host for what belongs
there (containers, state, history, edge logs, samples, the lock, the audit report) and on this
machine for what belongs here (the image cache, the history's anchor, the fetched report), and
for nothing else: no project directory, no lock and no containers of the stack here.

One stack (sdfleetlife, ports 19480/19482, the role's default project directory
~/.swiftdeploy/sdfleetlife, expanded on the host) is deployed for the module and used by the
tests in file order; each test starts where the previous one left off. Other fleet tests share
the session's hosts, so everything here is named apart, and the host is left without the stack.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils._anchors import anchor_path, read_anchor  # noqa: E402

from helpers import http_get, version_served  # tests/integration/helpers.py
from traffic import Traffic  # tests/integration/traffic.py

pytestmark = [pytest.mark.docker, pytest.mark.ssh, pytest.mark.slow]

STACK, PORT, ADMIN_PORT = "sdfleetlife", 19480, 19482
PROJECT = f"/root/.swiftdeploy/{STACK}"  # the role's default (~/.swiftdeploy/<stack>) for root on the host
LOCK = f"/run/lock/swiftdeploy/{STACK}.lock"  # the role's default lock directory
WINDOW_SECONDS = 5
MIN_REQUESTS = 20


def docker(*args, timeout=60):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def get(address, port, path="/"):
    """One request on a fresh connection: (status, headers as a dict, body bytes)."""
    return http_get(port, path, host=address)


def served(address):
    return version_served(PORT, host=address)


class FleetLife:
    """The module's stack on one fleet host: the playbook runs, and what is on the host."""

    def __init__(self, host, workdir, inventory, manifest, run_playbook):
        self.host = host
        self.workdir = workdir
        self.inventory = inventory
        self.manifest = manifest
        self.cache_dir = workdir / "cache"
        self.anchor_dir = workdir / "anchors"
        self.report_dir = workdir / "reports"
        self._run = run_playbook

    def run(self, playbook, *args, **kwargs):
        # No swiftdeploy_project_dir: the role's default, which only the host may expand.
        return self._run(playbook, "-e", f"swiftdeploy_manifest={self.manifest}",
                         "-e", "swiftdeploy_image_source=controller",
                         "-e", f"swiftdeploy_image_cache_dir={self.cache_dir}",
                         "-e", f"swiftdeploy_anchor_dir={self.anchor_dir}", *args,
                         inventory=self.inventory, **kwargs)

    def read(self, name):
        found = self.host.run("cat", f"{PROJECT}/{name}")
        assert found.returncode == 0, f"{PROJECT}/{name} on {self.host.name}: {found.stderr}"
        return found.stdout

    def state(self):
        return json.loads(self.read("state.json"))

    def history(self):
        return [json.loads(line) for line in self.read("history.jsonl").splitlines()]

    def exists_on_host(self, path):
        return self.host.run("test", "-e", path).returncode == 0

    def containers_on_host(self):
        """{compose service: state} of the stack's containers on the fleet host."""
        out = self.host.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={STACK}",
                               "--format", '{{.Label "com.docker.compose.service"}} {{.State}}').stdout
        return dict(line.split(" ", 1) for line in out.splitlines())

    def assert_nothing_on_the_controller(self):
        """The controller keeps its cache, anchors and fetched reports (under workdir), nothing else."""
        assert not os.path.exists(os.path.expanduser(f"~/.swiftdeploy/{STACK}")), "a project directory on the controller"
        assert not os.path.exists(LOCK), "the stack lock on the controller"
        local = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={STACK}")
        assert local.returncode == 0 and local.stdout.split() == [], "the stack's containers on the controller"
        assert docker("network", "inspect", f"{STACK}-net").returncode != 0, "the stack's network on the controller"

    def assert_anchor_matches_history(self):
        """The controller's anchor of the host's history is its last record (the audit checks it)."""
        last = self.history()[-1]
        kept = read_anchor(anchor_path(str(self.anchor_dir), STACK, self.host.name, f"{PROJECT}/history.jsonl"))
        assert kept is not None, sorted(str(path) for path in self.anchor_dir.rglob("*"))
        assert (kept["seq"], kept["hash"]) == (last["seq"], last["hash"]), (kept, last)


@pytest.fixture(scope="module")
def life(fleet_host, fleet, write_manifest, run_playbook, tmp_path_factory, app_image):
    workdir = tmp_path_factory.mktemp("fleet-life")
    manifest = write_manifest(workdir / "manifest.yml", {
        "stack": STACK, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT,
        "network.name": f"{STACK}-net", "services.log_volume": f"{STACK}-logs",
        "contact": f"oncall@{STACK}.example",
        "canary": {"weight": 50, "version": "1.1.0", "window_seconds": WINDOW_SECONDS},
        "policy": {"thresholds": {"min_requests": MIN_REQUESTS}}})
    inventory = fleet.inventory(workdir / "inventory.yml", [fleet_host])
    stack = FleetLife(fleet_host, workdir, inventory, manifest, run_playbook)
    assert not stack.exists_on_host(PROJECT), f"{PROJECT} is on {fleet_host.name} before the test"
    try:
        stack.first_deploy = stack.run("deploy")
        yield stack
    finally:
        stack.run("teardown", "-e", "clean=true", "-e", "purge_history=true")
        # The session's other tests share the host: what the teardown keeps (the project
        # directory, the lock file) goes too.
        fleet_host.run("rm", "-rf", PROJECT, LOCK)


def test_deploy_over_ssh_serves_at_the_hosts_own_address(life, parse_recap):
    run, host = life.first_deploy, life.host
    assert run.rc == 0, run.describe()
    assert parse_recap(run.stdout)[host.name]["failed"] == 0
    assert f"Host {host.name}: disk free" in run.stdout, run.describe()
    assert f"Stack {STACK} is healthy at http://{host.address}:{PORT}/" in run.stdout, run.describe()
    # The images came from this machine's image store, by ID.
    for image in ("swift-deploy-1-node:latest", "nginx:latest"):
        wanted = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
        assert host.image_id(image) == wanted, image

    status, headers, body = get(host.address, PORT)
    assert status == 200 and headers.get("X-Deployed-By") == "swiftdeploy", (status, headers)
    assert json.loads(body)["version"] == "1.0.0"
    # The admin port is published on the host's loopback only: there it answers, from here it is closed.
    on_host = host.run("python3", "-c", "import urllib.request as u; "
                       f"print(u.urlopen('http://127.0.0.1:{ADMIN_PORT}/healthz', timeout=5).status)")
    assert on_host.stdout.strip() == "200", on_host.stderr
    with pytest.raises(OSError):
        get(host.address, ADMIN_PORT, "/healthz")

    # Containers, files, state and history on the host; on the controller, none of them.
    assert life.containers_on_host() == {"app-blue": "running", "edge": "running", "nginx": "running"}
    assert host.docker("network", "inspect", f"{STACK}-net").returncode == 0
    assert host.docker("volume", "inspect", f"{STACK}-logs").returncode == 0
    for name in ("docker-compose.yml", "nginx/nginx.conf", "state.json", "history.jsonl", "edge"):
        assert life.exists_on_host(f"{PROJECT}/{name}"), name
    state = life.state()
    assert state["stable"] == "blue" and state["slots"]["blue"]["version"] == "1.0.0", state
    assert [event["event"] for event in life.history()] == ["deploy"]
    assert life.history()[0]["stack"] == STACK
    # The lock was taken on the host (its directory is there) and given back (its file is gone).
    assert life.exists_on_host(os.path.dirname(LOCK)) and not life.exists_on_host(LOCK)
    life.assert_nothing_on_the_controller()
    life.assert_anchor_matches_history()
    assert any(life.cache_dir.iterdir()), "the exported images are cached on the controller"


def test_validate_checks_the_hosts_image_and_port(life, validate_checks):
    """The stack's port is free here and no stack container runs here: only checks made on the
    host find the port held by this stack's own nginx."""
    run = life.run("validate")
    assert run.rc == 0, run.describe()
    assert [mark for _number, mark, _name in validate_checks(run.stdout)] == ["✔"] * 5, run.describe()
    assert f"port {PORT} is held by this stack (redeploy)" in run.stdout, run.describe()
    assert "swift-deploy-1-node:latest found" in run.stdout, run.describe()


def test_redeploy_changes_nothing(life, parse_recap):
    assert life.first_deploy.rc == 0, life.first_deploy.describe()
    before = (life.state(), life.read("docker-compose.yml"), life.read("nginx/nginx.conf"))
    run = life.run("deploy")
    assert run.rc == 0, run.describe()
    assert parse_recap(run.stdout)[life.host.name]["changed"] == 0, run.describe()
    assert "shipped from the controller to" not in run.stdout, run.describe()
    assert (life.state(), life.read("docker-compose.yml"), life.read("nginx/nginx.conf")) == before
    life.assert_nothing_on_the_controller()


def test_a_canary_then_rollback_with_no_failed_request(life):
    host = life.host
    with Traffic(PORT, host=host.address, warm_up=1.0) as traffic:
        canary = life.run("promote", "-e", "mode=canary")
        assert canary.rc == 0, canary.describe()
        state = life.state()
        assert state["mode"] == "canary" and state["weight"] == 50, state
        assert state["slots"][state["canary"]]["version"] == "1.1.0", state
        assert sorted(life.containers_on_host()) == ["app-blue", "app-green", "edge", "nginx"]
        with Traffic(PORT, host=host.address, threads=1) as during_canary:
            while during_canary.canary < 5:  # the split is live at the host's address
                assert len(during_canary.responses) < 500, during_canary.responses[-5:]
        rollback = life.run("rollback", "-e", json.dumps({"reason": "fleet test"}))
    assert rollback.rc == 0, rollback.describe()
    assert "Rolled back: canary 1.1.0 removed; stable 1.0.0 answers every request." in rollback.stdout, \
        rollback.describe()
    assert traffic.successes > 50 and not traffic.failures(), (traffic.successes, traffic.failures())
    assert traffic.canary > 0 and not during_canary.failures()

    state = life.state()
    assert state["mode"] == "stable" and state["canary"] is None and list(state["slots"]) == ["blue"], state
    assert life.containers_on_host() == {"app-blue": "running", "edge": "running", "nginx": "running"}
    assert [event["event"] for event in life.history()][-2:] == ["promote", "rollback"]
    assert life.history()[-1]["details"]["reason"] == "fleet test"
    assert served(host.address) == (200, "1.0.0")
    life.assert_nothing_on_the_controller()
    life.assert_anchor_matches_history()


def test_a_canary_rolled_forward_with_no_failed_request(life):
    host = life.host
    with Traffic(PORT, host=host.address, warm_up=1.0) as traffic:
        canary = life.run("promote", "-e", "mode=canary")
    assert canary.rc == 0, canary.describe()
    # promote stable judges the canary's last window, at the edge on the host: fill it first.
    with Traffic(PORT, host=host.address, warm_up=WINDOW_SECONDS + 1) as judged:
        forward = life.run("promote", "-e", "mode=stable")
    assert forward.rc == 0, forward.describe()
    assert "Canary 1.1.0 passed and is now stable at 100%." in forward.stdout, forward.describe()
    for each in (traffic, judged):
        assert each.successes > 20 and not each.failures(), (each.successes, each.failures())
    assert judged.canary > 0

    state = life.state()
    assert state["mode"] == "stable" and state["canary"] is None, state
    assert state["slots"][state["stable"]]["version"] == "1.1.0", state
    assert [release["version"] for release in state["releases"]] == ["1.0.0", "1.1.0"]
    assert sorted(life.containers_on_host()) == [f"app-{state['stable']}", "edge", "nginx"]
    assert served(host.address) == (200, "1.1.0")
    life.assert_nothing_on_the_controller()


def test_rollback_to_the_previous_release_with_no_failed_request(life):
    host = life.host
    before = life.state()
    with Traffic(PORT, host=host.address, warm_up=1.0) as traffic:
        run = life.run("rollback", "-e", "to=previous")
    assert run.rc == 0, run.describe()
    assert "Rolled back from 1.1.0 to release 1.0.0" in run.stdout, run.describe()
    assert traffic.successes > 20 and not traffic.failures(), (traffic.successes, traffic.failures())
    state = life.state()
    assert state["stable"] != before["stable"] and state["slots"][state["stable"]]["version"] == "1.0.0", state
    assert life.history()[-1]["event"] == "rollback_release"
    assert served(host.address) == (200, "1.0.0")
    life.assert_nothing_on_the_controller()
    life.assert_anchor_matches_history()


def test_status_measures_the_host(life):
    host = life.host
    before = len(life.history())
    with Traffic(PORT, host=host.address, warm_up=1.0):
        run = life.run("status")
    assert run.rc == 0, run.describe()
    assert f"SwiftDeploy status: stack {STACK} on {host.name}" in run.stdout, run.describe()
    slot = life.state()["stable"]
    assert f"[stable] slot {slot}, version 1.0.0" in run.stdout, run.describe()
    # Its samples and its record are on the host.
    assert life.exists_on_host(f"{PROJECT}/metrics/{slot}.status.json")
    assert [event["event"] for event in life.history()[before:]] == ["status_scrape"]
    life.assert_nothing_on_the_controller()
    life.assert_anchor_matches_history()


def test_logs_shows_the_hosts_containers(life):
    run = life.run("logs", "-e", "lines=3", "-e", "since=1h")
    assert run.rc == 0, run.describe()
    slot = life.state()["stable"]
    assert f"app-{slot} (running, slot {slot}): " in run.stdout and "nginx (running): " in run.stdout, run.describe()


def test_audit_renders_the_report_on_the_host_and_fetches_it(life):
    host = life.host
    run = life.run("audit", "-e", f"report_dir={life.report_dir}")
    assert run.rc == 0, run.describe()
    assert f"History of {STACK} on {host.name}: " in run.stdout and "chain verified" in run.stdout, run.describe()
    on_host = life.read("audit_report.md")
    fetched = life.report_dir / host.name / "audit_report.md"
    assert fetched.read_text() == on_host
    # Every run above is in the host's history (the no-op redeploy too) and in the report.
    events = [event["event"] for event in life.history()]
    assert events == ["deploy", "deploy", "promote", "rollback", "promote", "promote", "rollback_release",
                      "status_scrape"], events
    assert on_host.startswith(f"# Audit report: stack {STACK} on {host.name}\n"), on_host[:200]
    table = on_host.replace("\\_", "_")  # Markdown escapes the underscores of event names
    for event in set(events):
        assert f"| {event} | {events.count(event)} |" in table, (event, on_host)
    life.assert_nothing_on_the_controller()


def test_teardown_leaves_the_host_without_the_stack(life):
    host = life.host
    run = life.run("teardown", "-e", "clean=true")
    assert run.rc == 0, run.describe()
    assert life.containers_on_host() == {}
    assert host.docker("network", "inspect", f"{STACK}-net").returncode != 0
    assert host.docker("volume", "inspect", f"{STACK}-logs").returncode != 0
    for name in ("docker-compose.yml", "nginx/nginx.conf", "state.json"):
        assert not life.exists_on_host(f"{PROJECT}/{name}"), name
    assert life.history()[-1]["event"] == "teardown"
    with pytest.raises(OSError):
        get(host.address, PORT)
    life.assert_nothing_on_the_controller()
    life.assert_anchor_matches_history()
