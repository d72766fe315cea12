"""Attacks on the policy gate (issue #13), each tried for real and shown to fail safely.

The real engine, real playbooks and real HTTP. The real OPA binary and image cannot be installed
on this machine (no registry, no package ships the server), so OPA here is the OPA REST test
fixture (tests/fixtures/opa_server/), which enforces --authentication=token
--authorization=basic by evaluating the same system.authz policy as OPA would, and answers a
refused request with OPA's 401.

The attacker has a shell in an app slot container, or on the Docker host without access to the
Docker socket, or writes the manifest, or sits between the controller and a central OPA.
"""

from __future__ import annotations

import http.server
import json
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE_IMAGE = "swiftdeploy/opa-fixture:test"
FIXTURE_SERVER = REPO_ROOT / "tests" / "fixtures" / "opa_server" / "opa_fixture_server.py"
AUTHZ_REGO = REPO_ROOT / "roles" / "swiftdeploy" / "files" / "opa_system_authz.rego"
STACK, PORT, OPA_PORT, ADMIN_PORT = "opatestgate", 21180, 21181, 21182
DECISION_PATH = "/v1/data/swiftdeploy/infrastructure/decision"
HEALTHY_INPUT = {"input": {"host": {"disk_free_gb": 50, "cpu_load_1m": 0, "mem_free_percent": 50}, "thresholds": {}}}


def run(*command, check=True, timeout=120):
    return subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=check)


# A client run inside a container: prints {"status": ...} or {"error": ...}.
CLIENT = """
import http.client, json, sys
host, method, path, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
headers = {"Content-Type": "application/json"}
if token:
    headers["Authorization"] = "Bearer " + token
body = b'package swiftdeploy.infrastructure\\ndecision := {"allow": true, "reasons": []}\\n' if method == "PUT" else b'{}'
try:
    conn = http.client.HTTPConnection(host, 8181, timeout=3)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    print(json.dumps({"status": response.status, "body": response.read().decode()}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


def request(host, method, path, token="", body=None, port=8181):
    """The same client, from the host."""
    import http.client  # pylint: disable=import-outside-toplevel
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, body=json.dumps(body if body is not None else {}).encode(), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


class Squatter(object):
    """A server on the sidecar's old host port that answers every decision with allow and
    keeps every Authorization header it is sent."""

    def __init__(self, port):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _allow(self):
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"result": {"allow": True, "reasons": [], "domain": "infrastructure"}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _allow

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fixture_image(docker_engine):
    build = run("bash", str(REPO_ROOT / "tests" / "fixtures" / "opa_server" / "build.sh"), FIXTURE_IMAGE,
                check=False, timeout=900)
    assert build.returncode == 0, build.stdout + build.stderr
    return FIXTURE_IMAGE


def _args(manifest, project, *extra):
    return ("-e", "swiftdeploy_manifest=%s" % manifest, "-e", "swiftdeploy_project_dir=%s" % project) + extra


def _token(project):
    return json.loads((pathlib.Path(project) / "opa" / "token.json").read_text())["swiftdeploy_sidecar"]["token"]


def _events(project):
    path = pathlib.Path(project) / "history.jsonl"
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []


def _running(stack):
    return run("docker", "ps", "-q", "--filter", "label=com.docker.compose.project=%s" % stack).stdout.split()


@pytest.fixture(scope="module")
def gate_stack(tmp_path_factory, write_manifest, run_playbook, app_image, fixture_image):
    """A stack deployed with the sidecar at -vvv, while a squatter holds the sidecar's old port."""
    tmp = tmp_path_factory.mktemp("opagate")
    project = tmp / "project"
    manifest = write_manifest(tmp / "manifest.yml", {
        "stack": STACK, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT, "opa.port": OPA_PORT,
        "opa.image": fixture_image, "opa.mode": "sidecar", "network.name": STACK + "-net",
        "services.log_volume": STACK + "-logs"})
    squatter = Squatter(OPA_PORT)
    try:
        deploy = run_playbook("deploy", *_args(manifest, project, "-vvv"))
        assert deploy.rc == 0, deploy.describe()
        opa = json.loads(run("docker", "inspect", STACK + "-opa-1").stdout)[0]
        yield {"project": project, "deploy": deploy, "manifest": manifest, "squatter": squatter,
               "opa": opa, "opa_ip": opa["NetworkSettings"]["Networks"][STACK + "_opa"]["IPAddress"]}
    finally:
        squatter.close()
        run_playbook("teardown", *_args(manifest, project, "-e", "clean=true"))


def test_the_sidecar_decided_and_the_squatter_got_nothing(gate_stack):
    """Attack: a local user listens on the sidecar's old 127.0.0.1 port before the deploy, to
    receive the token and answer allow. The gate never asks it."""
    assert "Infrastructure policy (sidecar): ALLOW" in gate_stack["deploy"].stdout
    assert gate_stack["squatter"].seen == []
    assert not gate_stack["opa"]["HostConfig"]["PortBindings"]


def test_put_policy_from_an_app_slot_cannot_even_reach_opa(gate_stack):
    """Attack: a shell in an app slot replaces the policy. The slot is not on OPA's network."""
    for target in (gate_stack["opa_ip"], "opa"):
        out = run("docker", "exec", STACK + "-app-blue-1", "python3", "-c", CLIENT, target, "PUT",
                  "/v1/policies/swiftdeploy", "").stdout
        assert "error" in json.loads(out), (target, out)
    assert sorted(gate_stack["opa"]["NetworkSettings"]["Networks"]) == [STACK + "_opa"]
    app = json.loads(run("docker", "inspect", STACK + "-app-blue-1").stdout)[0]
    assert STACK + "_opa" not in app["NetworkSettings"]["Networks"]


def test_on_opas_network_every_request_without_the_token_is_refused(gate_stack):
    """Attack: a container that did get onto OPA's network (an attacker with the Docker socket
    could do that, and is out of scope, but the token must still be needed): no token, a wrong
    token, PUT /v1/policies, all answered 401 by the access policy."""
    for method, path, token in (("PUT", "/v1/policies/swiftdeploy", ""), ("POST", DECISION_PATH, ""),
                                ("POST", DECISION_PATH, "not-the-token-" + "x" * 30),
                                ("GET", "/v1/data/swiftdeploy_sidecar", "")):
        out = run("docker", "run", "--rm", "--network", STACK + "_opa", "--entrypoint", "python3", FIXTURE_IMAGE,
                  "-c", CLIENT, gate_stack["opa_ip"], method, path, token).stdout
        answer = json.loads(out)
        assert answer["status"] == 401, (method, path, answer)
        assert json.loads(answer["body"])["code"] == "unauthorized"


def test_from_the_host_no_token_or_a_wrong_token_is_refused(gate_stack):
    """Attack: a local user reaches the container's address from the host."""
    ip = gate_stack["opa_ip"]
    assert request(ip, "PUT", "/v1/policies/swiftdeploy")[0] == 401
    assert request(ip, "POST", DECISION_PATH, body=HEALTHY_INPUT)[0] == 401
    assert request(ip, "POST", DECISION_PATH, token="wrong" * 10, body=HEALTHY_INPUT)[0] == 401
    # Even the token buys nothing but the two decisions: no writes, no reading the token back.
    token = _token(gate_stack["project"])
    assert request(ip, "PUT", "/v1/policies/swiftdeploy", token=token)[0] == 401
    assert request(ip, "GET", "/v1/data/swiftdeploy_sidecar", token=token)[0] == 401
    status, answer = request(ip, "POST", DECISION_PATH, token=token, body=HEALTHY_INPUT)
    assert status == 200 and answer["result"]["allow"] is True


def test_the_token_is_kept_on_the_host_for_opa_alone(gate_stack):
    path = pathlib.Path(gate_stack["project"]) / "opa" / "token.json"
    info = path.stat()
    assert (oct(info.st_mode & 0o777), info.st_uid, info.st_gid) == ("0o600", 65532, 65532)
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    # The app slots run as uid 10001 and mount nothing of opa/.
    app = json.loads(run("docker", "inspect", STACK + "-app-blue-1").stdout)[0]
    assert not [m for m in app["Mounts"] if m["Source"].startswith(str(path.parent))]


def test_the_token_appears_nowhere_but_its_file(gate_stack):
    """The -vvv output of the deploy, the history, state.json, the compose file and the
    container's configuration never hold the token."""
    token = _token(gate_stack["project"])
    project = pathlib.Path(gate_stack["project"])
    places = {"deploy output at -vvv": gate_stack["deploy"].output,
              "container configuration": json.dumps(gate_stack["opa"])}
    for name in ("history.jsonl", "state.json", "docker-compose.yml"):
        places[name] = (project / name).read_text()
    grep = run("grep", "-rlF", token, str(project), check=False).stdout.split()
    assert grep == [str(project / "opa" / "token.json")]
    for name, text in places.items():
        assert token not in text, name
    assert "Bearer" not in gate_stack["deploy"].output


def test_check_mode_and_a_second_deploy_keep_the_token_and_ask_the_sidecar(gate_stack, run_playbook):
    token = _token(gate_stack["project"])
    args = _args(gate_stack["manifest"], gate_stack["project"])
    check = run_playbook("deploy", *args, check=True)
    assert check.rc == 0, check.describe()
    assert "Infrastructure policy (sidecar): ALLOW" in check.stdout
    again = run_playbook("deploy", *args)
    assert again.rc == 0, again.describe()
    assert "Infrastructure policy (sidecar): ALLOW" in again.stdout
    assert _token(gate_stack["project"]) == token
    assert gate_stack["squatter"].seen == []


def test_a_squatter_that_answers_allow_cannot_turn_a_deny(tmp_path, write_manifest, run_playbook, app_image,
                                                          fixture_image):
    """Attack: the squatter answers allow; the policy denies (a disk threshold no host meets).
    The deploy is blocked by the real policy's reason, and the squatter was never asked."""
    project = tmp_path / "project"
    manifest = write_manifest(tmp_path / "manifest.yml", {
        "stack": "opatestsquat", "nginx.port": 21280, "nginx.admin_port": 21282, "opa.port": 21281,
        "opa.image": fixture_image, "opa.mode": "sidecar", "network.name": "opatestsquat-net",
        "services.log_volume": "opatestsquat-logs", "policy.thresholds.min_disk_free_gb": 999999})
    squatter = Squatter(21281)
    try:
        deploy = run_playbook("deploy", *_args(manifest, project))
        assert deploy.rc != 0
        assert "Deploy blocked by the infrastructure policy" in deploy.output
        assert re.search(r"disk free [0-9.]+ GB is below the minimum 999999.00 GB", deploy.output)
        assert squatter.seen == []
        assert _events(project) == ["deploy_blocked"]
        assert _running("opatestsquat") == []
    finally:
        squatter.close()
        run_playbook("teardown", *_args(manifest, project, "-e", "clean=true"))


# ------------------------------------------------------------------------------------------
# External OPA
# ------------------------------------------------------------------------------------------


def test_external_opa_over_plain_http_is_refused_and_nothing_starts(tmp_path, write_manifest, run_playbook):
    """Attack: a manifest writer sends the gate (and its token) to an http:// OPA."""
    project = tmp_path / "project"
    manifest = write_manifest(tmp_path / "manifest.yml", {
        "stack": "opatestplain", "nginx.port": 21380, "nginx.admin_port": 21382, "opa.mode": "external",
        "opa.url": "http://127.0.0.1:21381", "network.name": "opatestplain-net",
        "services.log_volume": "opatestplain-logs"})
    deploy = run_playbook("deploy", *_args(manifest, project))
    assert deploy.rc != 0
    assert "manifest field 'opa.url': 'http://127.0.0.1:21381' is plain HTTP" in deploy.output
    assert "set opa.allow_http: true" in deploy.output
    assert not project.exists() or not list(project.iterdir())
    assert _running("opatestplain") == []


@pytest.fixture()
def external_opa(tmp_path):
    """The OPA fixture on the host with the sidecar's access policy and a known token."""
    token = "external-token-" + "k" * 40
    authz = tmp_path / "authz"
    authz.mkdir()
    shutil.copy(AUTHZ_REGO, authz / "system_authz.rego")
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"swiftdeploy_sidecar": {"token": token}}))
    proc = subprocess.Popen([sys.executable, str(FIXTURE_SERVER), "run", "--server", "--addr=127.0.0.1:21481",
                             "--log-level=error", "--authentication=token", "--authorization=basic",
                             str(REPO_ROOT / "policies"), str(authz), str(token_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if request("127.0.0.1", "GET", "/health", port=21481)[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    try:
        yield {"url": "http://127.0.0.1:21481", "token": token}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _external_manifest(write_manifest, tmp_path, stack, url, port):
    return write_manifest(tmp_path / "manifest.yml", {
        "stack": stack, "nginx.port": port, "nginx.admin_port": port + 2, "opa.mode": "external",
        "opa.url": url, "opa.allow_http": True, "network.name": stack + "-net",
        "services.log_volume": stack + "-logs", "policy.thresholds.min_disk_free_gb": 999999})


def test_external_opa_with_a_wrong_token_denies_and_the_token_is_never_shown(tmp_path, write_manifest,
                                                                             run_playbook, external_opa):
    """The token from a variable reaches OPA (its reason is the policy's, not a 401), a wrong
    one is a deny naming the 401, and neither shows in the -vvv output."""
    project = tmp_path / "project"
    manifest = _external_manifest(write_manifest, tmp_path, "opatestext", external_opa["url"], 21580)
    try:
        right = run_playbook("deploy", *_args(manifest, project, "-vvv", "-e",
                                              "swiftdeploy_opa_token=%s" % external_opa["token"]))
        assert right.rc != 0
        assert re.search(r"disk free [0-9.]+ GB is below the minimum 999999.00 GB", right.output)
        assert external_opa["token"] not in right.output
        wrong = run_playbook("deploy", *_args(manifest, project, "-vvv", "-e",
                                              "swiftdeploy_opa_token=wrong-token-" + "w" * 30))
        assert wrong.rc != 0
        assert "answered HTTP 401 Unauthorized" in wrong.output
        assert "request rejected by administrative policy" in wrong.output
        assert "wrong-token-" + "w" * 30 not in wrong.output
        assert _events(project) == ["deploy_blocked", "deploy_blocked"]
        history = (project / "history.jsonl").read_text()
        assert external_opa["token"] not in history and "wrong-token" not in history
        assert _running("opatestext") == []
    finally:
        run_playbook("teardown", *_args(manifest, project, "-e", "clean=true"))


def test_a_redirecting_external_opa_is_a_deny(tmp_path, write_manifest, run_playbook, external_opa):
    """Attack: the OPA address answers with a redirect to a server that allows everything. The
    redirect is not followed: the deploy is blocked, and the forger is never asked."""
    forger = Squatter(21681)

    class Redirect(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:21681" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 21682), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    project = tmp_path / "project"
    manifest = _external_manifest(write_manifest, tmp_path, "opatestredir", "http://127.0.0.1:21682", 21980)
    try:
        deploy = run_playbook("deploy", *_args(manifest, project, "-e", "swiftdeploy_opa_token=%s" % external_opa["token"]))
        assert deploy.rc != 0
        assert "answered HTTP 307" in deploy.output
        assert forger.seen == []
        assert _events(project) == ["deploy_blocked"]
        assert _running("opatestredir") == []
    finally:
        redirector.shutdown()
        redirector.server_close()
        forger.close()
        run_playbook("teardown", *_args(manifest, project, "-e", "clean=true"))
