"""swiftdeploy.stack.stack_converge against the real Docker engine, real nginx and real HTTP.

The files are the role's own templates, rendered by tests/integration/playbooks/converge_steps.yml
for each live state, as the role renders them. The stack has its own name, ports, network and
volume, so it collides with no other stack; it is taken down (with its volume) at the end.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import subprocess
import sys
import time

import pytest

# make setup links the checkout into .collections (integration tests need the set-up anyway).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils._converge import (  # noqa: E402
    nginx_exec_test_argv, nginx_test_argv,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import acquire  # noqa: E402

from helpers import Background  # noqa: E402  (tests/integration/helpers.py)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STACK = "swiftdeploy-converge-test"
PORT = 19180
ADMIN_PORT = 19182
PLAYBOOK = "tests/integration/playbooks/converge_steps.yml"
NGINX_IMAGE = "nginx:latest"

BLUE = {"image": "swift-deploy-1-node:latest", "version": "1.0.0", "mode": "stable"}
GREEN = {"image": "swift-deploy-1-node:latest", "version": "1.1.0", "mode": "canary"}


def live(generation, slots, canary=None, weight=0):
    return {"generation": generation, "mode": "canary" if canary else "stable", "weight": weight,
            "stable": "blue", "canary": canary, "slots": slots}


def docker(*args, timeout=120):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def containers(service=None):
    """Names of the stack's containers (of one compose service), running or not."""
    label = ["--filter", "label=com.docker.compose.project=%s" % STACK]
    if service:
        label += ["--filter", "label=com.docker.compose.service=%s" % service]
    return sorted(docker("ps", "-a", "--format", "{{.Names}}", *label).stdout.split())


def container_id(service):
    names = containers(service)
    assert len(names) == 1, names
    return docker("inspect", "--format", "{{.Id}}", names[0]).stdout.strip()


def get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def snapshot(project):
    """Every file under the project with its content, mode and mtime: proof that nothing was written."""
    files = {}
    for path in sorted(pathlib.Path(project).rglob("*")):
        if path.is_file():
            info = path.stat()
            files[str(path.relative_to(project))] = (path.read_bytes(), info.st_mode, info.st_mtime_ns)
    return files


class Traffic(Background):
    """Requests to the public port, one connection each, from a background thread."""

    def __init__(self, port):
        super().__init__()
        self.port = port
        self.statuses = {}
        self.failures = []
        self.versions = set()

    def _run(self):
        while not self._stop.is_set():
            try:
                status, body = get(self.port, "/")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                continue
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != 200:
                self.failures.append("HTTP %d: %s" % (status, body[:200]))
            else:
                self.versions.add(json.loads(body).get("version"))

    @property
    def total(self):
        return sum(self.statuses.values())


class ConvergeStack:
    def __init__(self, tmp_path, manifest, run_playbook):
        self.tmp_path = tmp_path
        self.manifest = manifest
        self.project = tmp_path / "project"
        self.run_playbook = run_playbook
        self.runs = 0

    def converge(self, *lives, check=False, files=None, health=True, probe=True, history=None, baseline=None,
                 engine_api=True, drain=None):
        """Run the playbook with one step per live state; return the module's result."""
        self.runs += 1
        extra = self.tmp_path / ("vars-%d.json" % self.runs)
        result_file = self.tmp_path / ("result-%d.json" % self.runs)
        values = {
            "converge_manifest": str(self.manifest), "converge_project": str(self.project),
            "converge_result": str(result_file), "converge_lives": list(lives),
            "converge_files": files or {}, "converge_health": health, "converge_probe": probe,
            "converge_engine_api": engine_api}
        if history is not None:
            values["converge_history"] = history
        if baseline is not None:
            values["converge_baseline"] = baseline
        if drain is not None:
            values["converge_drain"] = drain
        extra.write_text(json.dumps(values))
        run = self.run_playbook(PLAYBOOK, "-e", "@%s" % extra, check=check)
        assert run.rc == 0, run.describe()
        assert result_file.exists(), run.describe()
        result = json.loads(result_file.read_text())
        result["_run"] = run
        return result

    def state(self):
        return json.loads((self.project / "state.json").read_text())

    def down(self):
        if (self.project / "docker-compose.yml").exists():
            subprocess.run(["docker", "compose", "--project-directory", str(self.project), "down", "-v",
                            "--remove-orphans", "-t", "2"], capture_output=True, text=True, timeout=180, check=False)


def ok(result):
    assert not result.get("failed"), json.dumps({k: v for k, v in result.items() if k != "_run"}, indent=2)
    return result


def actions(result, step=None):
    return [a["action"] for a in result["actions"] if step is None or a["step"] == step]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, write_manifest, run_playbook, app_image):
    if docker("image", "inspect", NGINX_IMAGE).returncode != 0:
        pytest.skip("%s is not on this host; run `make setup`" % NGINX_IMAGE)
    assert not containers(), "containers of %s are left from an earlier run: %s" % (STACK, containers())
    tmp_path = tmp_path_factory.mktemp("converge")
    manifest = write_manifest(tmp_path / "manifest.yml", {
        "stack": STACK, "services.log_volume": "%s-logs" % STACK, "nginx.port": PORT,
        # The routing nginx alone: the edge's converge (edge.conf loaded in place) is test_tls's and
        # test_keepalive's, through the role.
        "nginx.admin_port": ADMIN_PORT, "network.name": "%s-net" % STACK, "nginx.edge": False})
    converge_stack = ConvergeStack(tmp_path, manifest, run_playbook)
    try:
        converge_stack.first = ok(converge_stack.converge(live(1, {"blue": BLUE})))
        yield converge_stack
    finally:
        converge_stack.down()


def test_first_converge_starts_blue_then_nginx_and_is_healthy(stack):
    result = stack.first
    assert result["changed"] is True
    assert result["files_changed"] == ["docker-compose.yml", "nginx/nginx.conf", "slots/blue/mode", "state.json"]
    assert result["steps"][0]["slots_started"] == ["blue"]
    assert result["steps"][0]["nginx"] == "started"
    order = actions(result)
    assert order.index("validate nginx.conf") < order.index("write") < order.index("start slots") \
        < order.index("compose up") < order.index("wait generation") < order.index("wait health")
    # The slot answered its health URL from the host before Docker's first health check.
    (wait,) = [a for a in result["actions"] if a["action"] == "wait slots"]
    assert wait["detail"] == "app-blue healthy (probe)"
    assert containers() == ["%s-app-blue-1" % STACK, "%s-nginx-1" % STACK]
    assert get(PORT, "/healthz")[0] == 200
    assert get(ADMIN_PORT, "/_swiftdeploy/generation") == (200, "1")
    assert stack.state() == live(1, {"blue": BLUE})
    modes = {name: (stack.project / name).stat().st_mode & 0o7777
             for name in ("nginx", "nginx/nginx.conf", "docker-compose.yml", "state.json", "slots/blue", "slots/blue/mode")}
    assert modes == {"nginx": 0o755, "nginx/nginx.conf": 0o644, "docker-compose.yml": 0o640, "state.json": 0o640,
                     "slots/blue": 0o755, "slots/blue/mode": 0o644}
    assert (stack.project / "slots" / "blue" / "mode").read_text() == "stable\n"
    assert stack.project.stat().st_mode & 0o7777 == 0o750


def test_the_same_call_again_does_nothing_and_is_fast(stack):
    result = ok(stack.converge(live(1, {"blue": BLUE})))
    assert result["changed"] is False
    assert result["files_changed"] == []
    assert actions(result) == ["plan", "compose ps", "check generation", "wait health"]
    assert result["seconds"] < 2, result["actions"]
    assert result["steps"] == [{"step": 1, "changed": False, "files_changed": [], "slots_started": [],
                                "slots_switched": [], "slots_removed": [], "nginx": "unchanged", "edge": "unchanged"}]


def test_check_mode_reports_the_canary_and_writes_nothing(stack):
    before = snapshot(stack.project)
    result = ok(stack.converge(live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=50), check=True))
    assert result["changed"] is True
    assert result["files_changed"] == ["docker-compose.yml", "nginx/nginx.conf", "slots/green/mode", "state.json"]
    skipped = [a["action"] for a in result["actions"] if a["detail"].endswith("(check mode: not run)")]
    assert skipped == ["write", "start slots", "wait slots", "reload nginx", "wait health"]
    headers = [d["before_header"] for d in result["diff"]]
    assert headers == ["docker-compose.yml", "nginx/nginx.conf", "slots/green/mode (absent)", "state.json"]
    assert "app-green" in result["diff"][0]["after"] and "app-green" not in result["diff"][0]["before"]
    assert snapshot(stack.project) == before
    assert containers("app-green") == []
    assert get(ADMIN_PORT, "/_swiftdeploy/generation") == (200, "1")


def test_an_invalid_nginx_conf_fails_with_nginx_message_and_writes_nothing(stack):
    before = snapshot(stack.project)
    bad = {"nginx/nginx.conf": {"content": "events {}\nhttp {\n    bogus_directive on;\n}\n", "mode": "0644"}}
    result = stack.converge(live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=50), files=bad)
    assert result["failed"] is True
    assert "nginx/nginx.conf is refused by nginx -t in nginx:latest, nothing was written" in result["msg"]
    assert 'unknown directive "bogus_directive"' in result["msg"]
    # Refused in the running nginx first, then (which alone decides) in a fresh container.
    tests = [a["detail"] for a in result["actions"] if a["action"] == "validate nginx.conf"]
    assert tests == ["nginx -t in the running nginx %s-nginx-1 (step 1): refused, so tested again in a fresh "
                     "container" % STACK, "nginx -t in nginx:latest (step 1)"]
    assert result["changed"] is False and result["files_changed"] == []
    assert "write" not in actions(result)
    assert snapshot(stack.project) == before
    assert containers("app-green") == []


def test_a_canary_starts_and_leaves_without_a_failed_request(stack):
    """Through the docker CLI (engine_api: false), the way for hosts whose CLI uses a context or
    a remote engine; the other tests take the Engine API on the local socket."""
    canary = live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=50)
    with Traffic(PORT) as during_start:
        time.sleep(0.5)
        # Without slot_port the module can only wait for Docker's health status: the fallback
        # for hosts that cannot reach container addresses.
        started = ok(stack.converge(canary, probe=False, engine_api=False))
        time.sleep(1)
    assert started["changed"] is True
    assert started["steps"][0]["slots_started"] == ["green"]
    assert started["steps"][0]["nginx"] == "reloaded"
    order = actions(started)
    assert order.index("start slots") < order.index("wait slots") < order.index("reload nginx") \
        < order.index("wait generation")
    (wait,) = [a for a in started["actions"] if a["action"] == "wait slots"]
    assert wait["detail"] == "app-green healthy (docker)"
    # Adding a slot to the compose file needs no whole-project `up`: nothing else changed.
    assert "compose up" not in order
    assert during_start.failures == [], during_start.statuses
    assert during_start.total > 20
    assert during_start.versions == {"1.0.0", "1.1.0"}
    assert get(ADMIN_PORT, "/_swiftdeploy/generation") == (200, "2")
    assert stack.state() == canary

    with Traffic(PORT) as during_removal:
        time.sleep(0.5)
        removed = ok(stack.converge(live(3, {"blue": BLUE}), engine_api=False))
        time.sleep(0.5)
    assert removed["steps"][0]["slots_removed"] == ["app-green"]
    order = actions(removed)
    assert order.index("reload nginx") < order.index("wait generation") < order.index("drain") \
        < order.index("remove slots")
    # The drain (drain_seconds 1 here) already outlasts nginx's old workers: no extra wait.
    assert "retire old workers" not in order
    assert during_removal.failures == [], during_removal.statuses
    assert during_removal.total > 20
    assert containers("app-green") == []
    assert containers() == ["%s-app-blue-1" % STACK, "%s-nginx-1" % STACK]
    assert get(ADMIN_PORT, "/_swiftdeploy/generation") == (200, "3")


def test_a_roll_forward_is_one_call_of_three_steps_without_a_failed_request(stack):
    ok(stack.converge(live(4, {"blue": BLUE, "green": GREEN}, canary="green", weight=50)))
    forward = dict(GREEN, mode="stable")
    steps = [
        live(5, {"blue": BLUE, "green": GREEN}, canary="green", weight=100),
        live(5, {"blue": forward, "green": GREEN}, canary="green", weight=100),
        live(6, {"blue": forward}),
    ]
    blue_before = docker("inspect", "--format", "{{.Id}}", "%s-app-blue-1" % STACK).stdout.strip()
    with Traffic(PORT) as traffic:
        time.sleep(0.5)
        result = ok(stack.converge(*steps))
        time.sleep(0.5)
    assert traffic.failures == [], traffic.statuses
    assert [(s["slots_started"], s["slots_removed"], s["nginx"]) for s in result["steps"]] == [
        ([], [], "reloaded"), (["blue"], [], "unchanged"), ([], ["app-green"], "reloaded")]
    assert docker("inspect", "--format", "{{.Id}}", "%s-app-blue-1" % STACK).stdout.strip() != blue_before
    assert containers("app-green") == []
    assert stack.state() == steps[-1]
    status, body = get(PORT, "/")
    assert status == 200 and json.loads(body)["version"] == "1.1.0"
    # Each distinct file is tested, all in the running nginx, before the first write.
    order = actions(result)
    (validate,) = [a for a in result["actions"] if a["action"] == "validate nginx.conf"]
    assert validate["detail"] == "nginx -t in the running nginx %s-nginx-1 (step 1, 3): passed" % STACK
    assert max(i for i, a in enumerate(order) if a.startswith("validate")) < order.index("write")
    # One `compose ps` for the three steps: the later ones know what the earlier ones left.
    assert order.count("compose ps") == 1


def test_a_canary_that_only_changes_mode_becomes_stable_in_place(stack):
    """The role's roll forward: the judged canary process switches to stable mode (its mode file,
    SIGHUP, confirmed by its /healthz), takes all traffic, and the old stable slot goes. Nothing
    starts; the canary's container is the same one afterwards."""
    before = stack.state()
    generation, blue = before["generation"], before["slots"]["blue"]
    ok(stack.converge(live(generation + 1, {"blue": blue, "green": GREEN}, canary="green", weight=50)))
    assert (stack.project / "slots" / "green" / "mode").read_text() == "canary\n"
    green_before = container_id("app-green")
    forward = {"generation": generation + 2, "mode": "stable", "weight": 0, "stable": "green", "canary": None,
               "slots": {"green": dict(GREEN, mode="stable")}}
    with Traffic(PORT) as traffic:
        time.sleep(0.5)
        result = ok(stack.converge(forward))
        time.sleep(0.5)
    assert traffic.failures == [], traffic.statuses
    assert traffic.versions == {blue["version"], GREEN["version"]}
    assert result["steps"] == [{"step": 1, "changed": True, "slots_started": [], "slots_switched": ["green"],
                                "slots_removed": ["app-blue"], "nginx": "reloaded", "edge": "unchanged",
                                "files_changed": ["docker-compose.yml", "nginx/nginx.conf", "slots/green/mode",
                                                  "state.json"]}]
    order = actions(result)
    assert "start slots" not in order and "compose up" not in order
    assert order.index("write") < order.index("switch mode") < order.index("reload nginx") < order.index("drain") \
        < order.index("remove slots")
    (switch,) = [a for a in result["actions"] if a["action"] == "switch mode"]
    assert switch["detail"] == "green to stable, confirmed by /healthz"
    assert container_id("app-green") == green_before
    assert containers() == ["%s-app-green-1" % STACK, "%s-nginx-1" % STACK]
    status, body = get(PORT, "/")
    assert status == 200 and json.loads(body)["mode"] == "stable" and json.loads(body)["version"] == GREEN["version"]
    assert json.loads(get(ADMIN_PORT, "/slots/green/healthz")[1])["mode"] == "stable"
    assert stack.state() == forward
    # Back to a stable blue slot for the tests that follow (a slot swap: blue starts, green goes).
    ok(stack.converge(live(generation + 3, {"blue": blue})))
    assert containers() == ["%s-app-blue-1" % STACK, "%s-nginx-1" % STACK]


def test_without_a_drain_a_leaving_slot_outlives_nginx_s_old_workers(stack):
    """The role's default drain_seconds is 0: nginx's master tells its old workers to stop
    accepting only about 100 ms after the new ones answer, so the slot that left is stopped no
    sooner than 0.5 s after the reload, and no request routed by an old worker finds it gone."""
    before = stack.state()
    generation, blue = before["generation"], before["slots"]["blue"]
    ok(stack.converge(live(generation + 1, {"blue": blue, "green": GREEN}, canary="green", weight=50)))
    with Traffic(PORT) as traffic:
        time.sleep(0.5)
        result = ok(stack.converge(live(generation + 2, {"blue": blue}), drain=0))
        time.sleep(0.5)
    assert traffic.failures == [], traffic.statuses
    assert traffic.total > 20
    order = actions(result)
    assert "drain" not in order
    assert order.index("reload nginx") < order.index("wait generation") < order.index("retire old workers") \
        < order.index("remove slots")
    reload_at = next(a for a in result["actions"] if a["action"] == "reload nginx")
    waits = sum(a["seconds"] for a in result["actions"]
                if a["action"] in ("wait generation", "retire old workers") and a.get("step") == reload_at.get("step"))
    assert waits >= 0.45, result["actions"]
    assert containers() == ["%s-app-blue-1" % STACK, "%s-nginx-1" % STACK]


def test_a_failed_mode_switch_is_named_and_the_next_run_repairs_it(stack):
    """A mode file the app refuses: the switch fails naming the slot and the mode it still
    reports, after state.json already names the new mode. The next run checks what the running
    slots report, not only what state.json says, and switches it; nginx is down for that run, so
    the slot is asked at its container address and nginx then starts on the new routing."""
    before = stack.state()
    generation, blue = before["generation"], before["slots"]["blue"]
    ok(stack.converge(live(generation + 1, {"blue": blue, "green": GREEN}, canary="green", weight=50)))
    forward = {"generation": generation + 2, "mode": "stable", "weight": 0, "stable": "green", "canary": None,
               "slots": {"green": dict(GREEN, mode="stable")}}
    failed = stack.converge(forward, files={"slots/green/mode": {"content": "purple\n", "mode": "0644"}})
    assert failed.get("failed") is True
    assert ("step 1: green did not switch mode within 10 s (its /healthz says green: canary); the app must read the "
            "file named by its MODE_FILE again on SIGHUP") in failed["msg"]
    green = containers("app-green")[0]
    assert "must hold 'stable' or 'canary', got 'purple\\n'; still in canary mode" in docker("logs", green).stderr
    assert stack.state() == forward
    assert json.loads(get(ADMIN_PORT, "/slots/green/healthz")[1])["mode"] == "canary"

    assert docker("stop", "%s-nginx-1" % STACK).returncode == 0
    repaired = ok(stack.converge(forward))
    (step,) = repaired["steps"]
    assert (step["slots_switched"], step["slots_started"], step["slots_removed"], step["nginx"]) == \
        (["green"], [], ["app-blue"], "started")
    assert step["files_changed"] == ["slots/green/mode"]
    order = actions(repaired)
    assert order.index("switch mode") < order.index("compose up") < order.index("remove slots")
    assert containers("app-green") == [green]
    assert json.loads(get(ADMIN_PORT, "/slots/green/healthz")[1])["mode"] == "stable"
    assert containers() == ["%s-app-green-1" % STACK, "%s-nginx-1" % STACK]
    ok(stack.converge(live(generation + 3, {"blue": blue})))
    assert containers() == ["%s-app-blue-1" % STACK, "%s-nginx-1" % STACK]


def test_one_container_tests_several_files_and_names_the_refused_one(stack, tmp_path):
    """The argv the module runs for a multi-step converge, run for real: the second of two files
    is refused and the shell names it, which the module turns into that step's number."""
    good = (stack.project / "nginx" / "nginx.conf").read_text()
    files = [tmp_path / "good.conf", tmp_path / "bad.conf"]
    files[0].write_text(good)
    files[1].write_text(good.replace("server_tokens off;", "server_tokens off;\n    bogus_directive on;", 1))
    for path in files:
        path.chmod(0o644)
    argv = nginx_test_argv("docker", NGINX_IMAGE, "/etc/nginx/swiftdeploy", "app-", {"blue": {}, "green": {}},
                           [str(path) for path in files])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert 'unknown directive "bogus_directive"' in proc.stderr and "refused: test-2.conf" in proc.stderr
    assert "refused: test-1.conf" not in proc.stderr
    proc = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_running_nginx_tests_several_texts_and_names_the_refused_one(stack):
    """nginx_exec_test_argv run for real in the stack's nginx: a slot that is not running (purple)
    resolves (pointed at 127.0.0.1), the second of two texts is refused and named, and the test
    files are gone afterwards."""
    good = (stack.project / "nginx" / "nginx.conf").read_text()
    assert "server app-blue:" in good
    with_purple = good.replace("server app-blue:", "server app-purple:", 1)
    bad = good.replace("server_tokens off;", "server_tokens off;\n    bogus_directive on;", 1)
    container = "%s-nginx-1" % STACK
    argv = nginx_exec_test_argv("docker", container, "app-", {"blue": {}, "purple": {}}, [with_purple, bad])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert 'unknown directive "bogus_directive"' in proc.stderr and "refused: test-2.conf" in proc.stderr
    assert "refused: test-1.conf" not in proc.stderr
    proc = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    # The same script on the text as rendered: nginx does not know the slot that is not running.
    proc = subprocess.run(argv[:7] + [with_purple], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "host not found in upstream" in proc.stderr, proc.stderr
    leftovers = docker("exec", container, "sh", "-c", "ls -d /tmp/swiftdeploy-test.* 2>/dev/null || true").stdout
    assert leftovers.strip() == ""


def with_generation(conf, generation):
    """nginx.conf with another generation in its /_swiftdeploy/generation answer."""
    changed, count = re.subn(r"return 200 '\d+';", "return 200 '%d';" % generation, conf)
    assert count == 1, "the generation answer is not in nginx.conf"
    return changed


def test_a_reload_nginx_does_not_confirm_fails_naming_both_generations(stack):
    conf = (stack.project / "nginx" / "nginx.conf").read_text()
    # The file serves 77 while the state says 78: the reload can never be confirmed.
    state = dict(stack.state(), generation=78)
    result = stack.converge(state, files={"nginx/nginx.conf": {"content": with_generation(conf, 77), "mode": "0644"}},
                            health=False)
    assert result["failed"] is True
    assert ("step 1: nginx did not serve generation 78 within 10 s after the reload (it still serves generation 77)"
            in result["msg"]), result["msg"]
    assert result["changed"] is True and result["files_changed"] == ["nginx/nginx.conf", "state.json"]


def test_a_reload_an_interrupted_run_never_made_is_made_by_the_next(stack):
    # A run wrote nginx.conf and state.json for generation 79, then died before its reload:
    # nginx still serves the routing before it. The files match, yet the next run reloads.
    state = dict(stack.state(), generation=79)
    conf_path = stack.project / "nginx" / "nginx.conf"
    conf_path.write_text(with_generation(conf_path.read_text(), 79))
    (stack.project / "state.json").write_text(json.dumps(state, indent=4, sort_keys=True, separators=(",", ": ")) + "\n")
    served = get(ADMIN_PORT, "/_swiftdeploy/generation")[1]
    assert served != "79"

    result = ok(stack.converge(state))
    assert result["files_changed"] == []
    assert result["changed"] is True
    assert result["steps"][0]["nginx"] == "reloaded"
    reload = next(a for a in result["actions"] if a["action"] == "reload nginx")
    assert reload["detail"].startswith("nginx serves generation %s, not 79: SIGHUP to " % served)
    assert get(ADMIN_PORT, "/_swiftdeploy/generation") == (200, "79")
    assert ok(stack.converge(state))["changed"] is False


def take_lock(stack):
    path = stack.tmp_path / ".swiftdeploy.lock"
    return path, acquire(str(path), {"user": "tester"}, host="test", pid=1)["token"]


def history_of(stack, events, lock=None):
    spec = {"path": str(stack.tmp_path / "history.jsonl"), "stack": STACK, "version": "1.0.0", "mode": "stable",
            "actor": {"user": "tester", "playbook": "converge test"}, "events": events}
    if lock:
        spec["release_lock"] = {"path": str(lock[0]), "token": lock[1]}
    return spec


def recorded(stack):
    path = stack.tmp_path / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_events_and_the_lock_release_ride_along_with_the_converge(stack):
    """One round trip: events before and after the converge, the changed-only one skipped for a
    converge that changed nothing, then the lock released."""
    lock = take_lock(stack)
    before = len(recorded(stack))
    result = ok(stack.converge(stack.state(), history=history_of(stack, [
        {"event": "lock_wait", "when": "before", "details": {"waited_seconds": 0}},
        {"event": "deploy", "details": {"port": PORT}},
        {"event": "promote", "when": "changed", "mode": "canary"}], lock)))
    assert result["changed"] is False
    events = recorded(stack)[before:]
    assert [(e["event"], e["mode"]) for e in events] == [("lock_wait", "stable"), ("deploy", "stable")]
    assert events[0]["details"] == {"waited_seconds": 0}
    # After the converge, with the slots it left running (and their image IDs when recorded).
    assert events[1]["details"] == {"port": PORT, "changed": False, "slots": result["state"]["slots"]}
    assert events[1]["actor"] == {"user": "tester", "playbook": "converge test"}
    assert [r["seq"] for r in result["records"]] == [e["seq"] for e in events]
    assert (result["seq"], result["hash"]) == (events[-1]["seq"], events[-1]["hash"])
    assert result["lock_released"] is True and not lock[0].exists()


def test_a_changed_converge_records_the_changed_only_event(stack):
    canary = dict(stack.state(), generation=stack.state()["generation"] + 1, canary="green", weight=50, mode="canary",
                  slots={"blue": stack.state()["slots"][stack.state()["stable"]], "green": GREEN})
    before = len(recorded(stack))
    result = ok(stack.converge(canary, history=history_of(stack, [{"event": "promote", "when": "changed",
                                                                   "mode": "canary"}])))
    assert result["changed"] is True
    (event,) = recorded(stack)[before:]
    # The details: changed, and the slots the converge left running (which image ran when).
    assert (event["event"], event["mode"], sorted(event["details"])) == ("promote", "canary", ["changed", "slots"])
    assert event["details"]["changed"] is True
    assert event["details"]["slots"] == stack.state()["slots"]
    assert "lock_released" not in result
    # The canary slot's metrics, through nginx's admin listener, answer ?ago= as the app does:
    # the query reaches the app (a fresh slot has no snapshot 300 s old).
    status, body = get(ADMIN_PORT, "/slots/green/metrics?ago=300")
    assert status == 404 and "no snapshot 300 s old yet" in body


def test_a_failed_converge_records_only_what_came_before_and_keeps_the_lock(stack):
    lock = take_lock(stack)
    before = len(recorded(stack))
    bad = {"nginx/nginx.conf": {"content": "events {}\nhttp {\n    bogus_directive on;\n}\n", "mode": "0644"}}
    target = dict(stack.state(), generation=stack.state()["generation"] + 1, weight=20)
    result = stack.converge(target, files=bad, history=history_of(stack, [
        {"event": "promote_blocked", "when": "before"}, {"event": "rollback"}], lock))
    assert result["failed"] is True and "refused by nginx -t" in result["msg"]
    assert [e["event"] for e in recorded(stack)[before:]] == ["promote_blocked"]
    assert [r["event"] for r in result["records"]] == ["promote_blocked"]
    assert lock[0].exists(), "the playbook releases the lock after a failed converge"
    lock[0].unlink()


def test_a_changed_nginx_service_is_recreated_not_reloaded(stack):
    # Keep this test last: it leaves nginx on another tag of the same image.
    alias = "%s-nginx:alias" % STACK
    assert docker("tag", NGINX_IMAGE, alias).returncode == 0
    try:
        state = dict(stack.state(), generation=stack.state()["generation"] + 1)
        compose_text = (stack.project / "docker-compose.yml").read_text()
        assert compose_text.count("image: %s\n" % NGINX_IMAGE) == 1
        files = {"docker-compose.yml": {"content": compose_text.replace("image: %s\n" % NGINX_IMAGE,
                                                                        "image: %s\n" % alias), "mode": "0640"}}
        nginx_before = container_id("nginx")
        result = ok(stack.converge(state, files=files))
        assert result["steps"][0]["nginx"] == "started"
        order = actions(result)
        assert "compose up" in order and "reload nginx" not in order
        assert order.index("compose up") < order.index("wait generation")
        assert container_id("nginx") != nginx_before
        assert get(ADMIN_PORT, "/_swiftdeploy/generation") == (200, str(state["generation"]))
    finally:
        stack.down()
        docker("rmi", alias)
