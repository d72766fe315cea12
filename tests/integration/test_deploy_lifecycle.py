"""deploy.yml and teardown.yml against the real Docker engine, real nginx and real HTTP.

Each test stack has its own name, ports, network and volume, so the tests do not collide with
the example stack of `make demo` or with each other.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import subprocess
import time

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def docker(*args, timeout=60):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def get(port, path="/", host="127.0.0.1", method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def header(headers, name):
    values = [value for key, value in headers if key.lower() == name.lower()]
    return values


def stack_objects(stack, network, volume):
    """Containers of the compose project, and whether its network and volume exist."""
    containers = docker("ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % stack).stdout.split()
    has_network = docker("network", "inspect", network).returncode == 0
    has_volume = docker("volume", "inspect", volume).returncode == 0
    return containers, has_network, has_volume


def history(project):
    path = pathlib.Path(project) / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Stack:
    """A uniquely named stack: its manifest, project directory and the playbook runs on it."""

    def __init__(self, tmp_path, write_manifest, run_playbook, name, port, overrides=None):
        self.name = name
        self.port = port
        self.admin_port = port + 2
        self.network = "%s-net" % name
        self.volume = "%s-logs" % name
        self.project = tmp_path / ("project-" + name)
        values = {"stack": name, "nginx.port": port, "nginx.admin_port": self.admin_port,
                  "network.name": self.network, "services.log_volume": self.volume,
                  "contact": "oncall@%s.example" % name}
        values.update(overrides or {})
        self.manifest = write_manifest(tmp_path / ("%s.yml" % name), values)
        self._run = run_playbook

    def run(self, playbook, *args, **kwargs):
        return self._run(playbook, "-e", "swiftdeploy_manifest=%s" % self.manifest,
                         "-e", "swiftdeploy_project_dir=%s" % self.project, *args, **kwargs)

    def teardown(self):
        return self.run("teardown", "-e", "clean=true")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, write_manifest, run_playbook, parse_recap, app_image):
    stack = Stack(tmp_path_factory.mktemp("deploy"), write_manifest, run_playbook, "sdit", 18180)
    started = time.monotonic()
    run = stack.run("deploy")
    stack.cold_seconds = time.monotonic() - started
    assert run.rc == 0, run.describe()
    stack.first_run = run
    yield stack
    stack.teardown()


def test_deploy_prints_host_stats_decision_and_url(deployed):
    out = deployed.first_run.stdout
    assert "disk free" in out and "1-minute load" in out and "memory free" in out
    assert "Infrastructure policy (embedded): ALLOW" in out
    assert "is healthy at http://" in out and ":%d/" % deployed.port in out


def test_app_answers_through_nginx_with_one_deployed_by_header(deployed):
    status, headers, body = get(deployed.port, "/")
    assert status == 200
    assert header(headers, "X-Deployed-By") == ["swiftdeploy"]
    data = json.loads(body)
    assert data["mode"] == "stable" and data["version"] == "1.0.0"
    status, _headers, body = get(deployed.port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, body = get(deployed.port, "/no/such/page")
    assert status == 404 and header(headers, "X-Deployed-By") == ["swiftdeploy"]


def test_internal_endpoints_only_on_the_admin_port(deployed):
    status, headers, body = get(deployed.port, "/metrics")
    assert status == 403
    assert json.loads(body)["contact"] == "oncall@sdit.example"
    status = get(deployed.port, "/chaos", method="POST", body=b'{"mode": "recover"}',
                 headers={"Content-Type": "application/json"})[0]
    assert status == 403
    status, headers, body = get(deployed.admin_port, "/metrics")
    assert status == 200
    assert b"http_requests_total" in body
    # The routing nginx publishes the admin port only; the edge (nginx.edge, on by default) the public one.
    published = docker("port", "%s-nginx-1" % deployed.name).stdout
    assert "8081/tcp -> 127.0.0.1:%d" % deployed.admin_port in published and "0.0.0.0" not in published
    assert "8080/tcp -> 0.0.0.0:%d" % deployed.port in docker("port", "%s-edge-1" % deployed.name).stdout


def test_containers_are_hardened(deployed):
    for service, user in (("app-blue", "10001:10001"), ("nginx", "101:101"), ("edge", "101:101")):
        info = json.loads(docker("inspect", "%s-%s-1" % (deployed.name, service)).stdout)[0]
        assert info["Config"]["User"] == user
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        assert info["HostConfig"]["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"]
        assert info["HostConfig"]["Init"] is True


def test_redeploy_changes_nothing(deployed, parse_recap):
    started = time.monotonic()
    run = deployed.run("deploy")
    noop_seconds = time.monotonic() - started
    assert run.rc == 0, run.describe()
    assert parse_recap(run.stdout)["localhost"]["changed"] == 0, run.stdout
    print("cold deploy %.1f s, no-op redeploy %.1f s" % (deployed.cold_seconds, noop_seconds))


def test_check_mode_changes_nothing(deployed, parse_recap):
    before = (deployed.project / "nginx" / "nginx.conf").read_text()
    events = len(history(deployed.project))
    run = deployed.run("deploy", check=True)
    assert run.rc == 0, run.describe()
    assert parse_recap(run.stdout)["localhost"]["changed"] == 0, run.stdout
    assert (deployed.project / "nginx" / "nginx.conf").read_text() == before
    assert len(history(deployed.project)) == events


def test_history_records_deploys_with_a_valid_chain(deployed, repo_root):
    events = history(deployed.project)
    assert [e["event"] for e in events][:1] == ["deploy"]
    first = events[0]
    assert first["stack"] == "sdit" and first["mode"] == "stable" and first["version"] == "1.0.0"
    assert first["actor"]["user"]
    verify = subprocess.run(
        [str(repo_root / ".venv" / "bin" / "python"), "-c",
         "import json, sys; sys.path.insert(0, %r); "
         "from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import verify; "
         "print(json.dumps(verify(sys.argv[1])))" % str(repo_root / ".collections"),
         str(deployed.project / "history.jsonl")], capture_output=True, text=True, check=True)
    assert json.loads(verify.stdout)["ok"] is True


def test_nginx_answers_json_when_the_app_is_down(deployed):
    """A stopped slot's address swallows connection attempts, so nginx gives up after the 5 s
    connect cap with a 504, or at once with a 502 when the connection is refused: both carry the
    seed's JSON body with the contact."""
    assert docker("stop", "-t", "2", "%s-app-blue-1" % deployed.name).returncode == 0
    try:
        status, headers, body = get(deployed.port, "/")
        assert status in (502, 504)
        assert header(headers, "X-Deployed-By") == ["swiftdeploy"]
        assert json.loads(body) == {"error": {502: "Bad Gateway", 504: "Gateway Timeout"}[status], "code": status,
                                    "service": "app", "contact": "oncall@sdit.example"}
    finally:
        docker("start", "%s-app-blue-1" % deployed.name)


def test_impossible_thresholds_block_the_deploy_and_start_nothing(tmp_path, write_manifest, run_playbook, app_image):
    stack = Stack(tmp_path, write_manifest, run_playbook, "sdblock", 18280,
                  {"policy": {"thresholds": {"min_disk_free_gb": 1000000, "min_mem_free_percent": 100}}})
    run = stack.run("deploy")
    assert run.rc != 0
    assert "Deploy blocked by the infrastructure policy; nothing was started" in run.output
    assert "disk free" in run.output and "below the minimum 1000000.00 GB" in run.output
    assert stack_objects(stack.name, stack.network, stack.volume) == ([], False, False)
    (blocked,) = [e for e in history(stack.project) if e["event"] == "deploy_blocked"]
    assert any("disk free" in reason for reason in blocked["details"]["reasons"])
    assert any("memory free" in reason for reason in blocked["details"]["reasons"])
    assert blocked["details"]["checked"]
    assert not pathlib.Path("/run/lock/swiftdeploy/%s.lock" % stack.name).exists()


def test_external_opa_down_denies_and_fail_open_proceeds_with_the_bypass_recorded(tmp_path, write_manifest,
                                                                                  run_playbook, app_image):
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    stack = Stack(tmp_path, write_manifest, run_playbook, "sdopadown", 18380,
                  {"opa": {"mode": "external", "url": closed, "timeout": 2, "allow_http": True}})
    run = stack.run("deploy")
    assert run.rc != 0
    assert "Deploy blocked" in run.output and "cannot connect" in run.output
    assert stack_objects(stack.name, stack.network, stack.volume)[0] == []

    stack_open = Stack(tmp_path, write_manifest, run_playbook, "sdfailopen", 18480,
                       {"opa": {"mode": "external", "url": closed, "timeout": 2, "allow_http": True},
                        "policy": {"fail_open": True}})
    try:
        run = stack_open.run("deploy")
        assert run.rc == 0, run.describe()
        assert "BYPASSED" in run.output
        events = [e["event"] for e in history(stack_open.project)]
        assert events == ["policy_bypass", "deploy"]
        assert get(stack_open.port, "/")[0] == 200
    finally:
        stack_open.teardown()


def test_two_deploys_at_once_one_fails_naming_the_holder(tmp_path, write_manifest, run_playbook, ansible_env,
                                                         repo_root, app_image):
    stack = Stack(tmp_path, write_manifest, run_playbook, "sdlock", 18580)
    command = ["ansible-playbook", str(repo_root / "playbooks" / "deploy.yml"),
               "-e", "swiftdeploy_manifest=%s" % stack.manifest, "-e", "swiftdeploy_project_dir=%s" % stack.project]
    try:
        procs = [subprocess.Popen(command, cwd=repo_root, env=ansible_env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _run in range(2)]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes[0] == 0, outputs
        if codes[1] != 0:
            (loser,) = [o for p, o in zip(procs, outputs) if p.returncode != 0]
            assert "stack is locked by" in loser and "deploy" in loser
        assert get(stack.port, "/")[0] == 200
        containers, has_network, _has_volume = stack_objects(stack.name, stack.network, stack.volume)
        assert len(containers) == 3 and has_network  # app-blue, edge, nginx
    finally:
        stack.teardown()


def test_teardown_removes_everything_but_the_history(tmp_path, write_manifest, run_playbook, app_image):
    stack = Stack(tmp_path, write_manifest, run_playbook, "sddown", 18680)
    assert stack.run("deploy").rc == 0
    before = (stack_objects(stack.name, stack.network, stack.volume), sorted(os.listdir(stack.project)),
              history(stack.project))
    assert (stack.project / "slots" / "blue" / "mode").read_text() == "stable\n"
    check = stack.run("teardown", "-e", "clean=true", "--check")
    assert check.rc == 0, check.describe()
    assert "containers, network and volumes would be removed (check mode)" in check.stdout, "check mode must say what it would remove"
    assert (stack_objects(stack.name, stack.network, stack.volume), sorted(os.listdir(stack.project)),
            history(stack.project)) == before, "check mode changed something"
    started = time.monotonic()
    run = stack.teardown()
    seconds = time.monotonic() - started
    assert run.rc == 0, run.describe()
    assert stack_objects(stack.name, stack.network, stack.volume) == ([], False, False)
    assert not (stack.project / "nginx" / "nginx.conf").exists()
    assert not (stack.project / "docker-compose.yml").exists()
    assert not (stack.project / "slots").exists()
    assert [e["event"] for e in history(stack.project)] == ["deploy", "teardown"]
    print("teardown %.1f s" % seconds)


def test_the_seed_manifest_deploys_without_edits(tmp_path, run_playbook, repo_root, example_manifest, app_image):
    """The example manifest is the seed's, byte for byte in content; it deploys as it is."""
    project = tmp_path / "seed"
    run = run_playbook("deploy", "-e", "swiftdeploy_manifest=%s" % example_manifest,
                       "-e", "swiftdeploy_project_dir=%s" % project)
    try:
        assert run.rc == 0, run.describe()
        status, headers, _body = get(8080, "/")
        assert status == 200 and header(headers, "X-Deployed-By") == ["swiftdeploy"]
    finally:
        run_playbook("teardown", "-e", "swiftdeploy_manifest=%s" % example_manifest,
                     "-e", "swiftdeploy_project_dir=%s" % project, "-e", "clean=true")


def test_logs_shows_each_containers_last_lines(deployed):
    """logs.yml: each container of the stack with its last lines, the app's own start-up line
    among them, and the line counts published for AWX."""
    run = deployed.run("logs", "-e", "lines=3", "-e", "since=1h")
    assert run.rc == 0, run.describe()
    out = run.stdout
    assert "app-blue (running, slot blue): " in out and "nginx (running): " in out, out
    # docs/logs.md's order: the slots, the edge (on by default), the routing nginx.
    assert out.index('"app-blue (running') < out.index('"edge (running): ') < out.index('"nginx (running): '), out
    shown = re.findall(r'"app-blue \(running, slot blue\): (\d+) lines"', out)
    assert shown and 1 <= int(shown[0]) <= 3, out
    assert re.search(r'"\d{4}-\d{2}-\d{2}T[0-9:.]+Z (stdout|stderr) ', out), out
    assert "changed=0" in out.rsplit("PLAY RECAP", 1)[-1]


def test_logs_refuses_a_bad_since_naming_the_forms(deployed):
    run = deployed.run("logs", "-e", "since=yesterday")
    assert run.rc != 0
    assert "since: 'yesterday' is neither an age nor a UTC time; use an age such as 30s" in run.stdout, run.describe()
