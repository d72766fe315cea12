"""The policy gate's hardening (issue #13), each control tried by the attack it defends against.

Real HTTP servers on 127.0.0.1 and the real file system; the OPA sidecar's Docker side is a fake
engine here (tests/integration/test_opa_gate_attacks.py runs it on the real engine). The real
OPA binary cannot be installed on this machine: the access policy is evaluated with regopy, as
the OPA test fixture (tests/fixtures/opa_server/) evaluates it.
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import stat
import threading

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._opa_sidecar import (
    SidecarError,
    check_running,
    ensure_token,
    find_sidecar,
    read_token,
    token_path,
    wait_healthy,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._policy import decide, evaluate_embedded
from ansible_collections.swiftdeploy.stack.plugins.modules.opa_decision_info import check_engine_options

REPO = pathlib.Path(__file__).resolve().parents[3]
POLICY_DIR = str(REPO / "policies")
AUTHZ_REGO = REPO / "roles" / "swiftdeploy" / "files" / "opa_system_authz.rego"
HOST_INPUT = {"host": {"disk_free_gb": 40.0, "cpu_load_1m": 0.5, "mem_free_percent": 50.0}}
TOKEN = "s3cr3t-" + "x" * 40


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass

    def _send(self, status, body, headers=()):
        data = body.encode("utf-8")
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        if self.server.behaviour == "redirect":
            # An OPA that sends the client elsewhere: a forged or hijacked decision endpoint.
            self._send(307, "{}", [("Location", self.server.target + self.path)])
        elif self.server.behaviour == "allow_everything":
            self._send(200, json.dumps({"result": {"allow": True, "reasons": []}}))
        else:
            domain = self.path.split("/")[-2]
            self._send(200, json.dumps({"result": evaluate_embedded(POLICY_DIR, domain, body["input"])}))


@pytest.fixture()
def serve():
    servers = []

    def start(behaviour, target=""):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.behaviour, server.target, server.seen = behaviour, target, []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, "http://127.0.0.1:%d" % server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------
# External OPA
# ------------------------------------------------------------------------------------------


def test_plain_http_is_refused_unless_allowed(serve):
    """Attack: an http:// OPA, where the token and the decision cross the network in clear."""
    server, url = serve("opa")
    with pytest.raises(ValueError) as raised:
        decide("external", "infrastructure", HOST_INPUT, url=url, token=TOKEN, require_https=True)
    assert str(raised.value).startswith("url %r is plain HTTP: the decision and the token would travel unencrypted" % url)
    assert "opa.allow_http: true" in str(raised.value)
    assert server.seen == [], "nothing may be sent before the refusal"
    allowed = decide("external", "infrastructure", HOST_INPUT, url=url, token=TOKEN, require_https=False)
    assert allowed["allow"] is True
    assert server.seen == [("/v1/data/swiftdeploy/infrastructure/decision", "Bearer " + TOKEN)]


def test_a_redirecting_opa_is_a_deny_and_the_redirect_is_not_followed(serve):
    """Attack: OPA answers 307 to a server that allows everything. The redirect is never
    followed, so the forged allow is never read and the token never reaches it."""
    forger, forger_url = serve("allow_everything")
    redirector, url = serve("redirect", target=forger_url)
    result = decide("external", "infrastructure", HOST_INPUT, url=url, token=TOKEN, timeout=5)
    assert result["allow"] is False
    assert result["error"]["kind"] == "http_status"
    assert result["reasons"][0].startswith("%s/v1/data/swiftdeploy/infrastructure/decision answered HTTP 307" % url)
    assert len(redirector.seen) == 1 and forger.seen == []


def test_a_redirect_is_a_deny_even_under_fail_open_it_is_marked_bypassed(serve):
    forger, forger_url = serve("allow_everything")
    _redirector, url = serve("redirect", target=forger_url)
    result = decide("external", "infrastructure", HOST_INPUT, url=url, fail_open=True)
    assert (result["bypassed"], result["error"]["kind"], forger.seen) == (True, "http_status", [])


def test_https_certificate_is_verified(serve):
    """Attack: a server that is not the OPA of the certificate. Here: https to a plain HTTP port,
    which fails the TLS handshake; the decision is a deny naming TLS."""
    _server, url = serve("allow_everything")
    result = decide("external", "infrastructure", HOST_INPUT, url=url.replace("http://", "https://"),
                    require_https=True, timeout=5)
    assert result["allow"] is False and result["error"]["kind"] == "unreachable"
    assert "TLS" in result["reasons"][0]


@pytest.mark.parametrize("options, message", [
    ({"url": "http://127.0.0.1:8181"}, "url: not for the sidecar engine"),
    ({"token": TOKEN}, "token: not for the sidecar engine"),
])
def test_the_sidecar_engine_takes_no_url_and_no_token(options, message):
    """Attack: point the sidecar engine at a squatted port, or hand it a token through a task
    argument (where it could be logged). Both are refused before anything is sent."""
    params = dict({"engine": "sidecar", "url": None, "token": None, "ca_path": None}, **options)
    with pytest.raises(ValueError) as raised:
        check_engine_options(params)
    assert str(raised.value).startswith(message)


# ------------------------------------------------------------------------------------------
# The sidecar's token, on the host
# ------------------------------------------------------------------------------------------


def test_the_token_is_generated_once_mode_0600_owned_by_opa(tmp_path):
    uid = os.getuid() if os.getuid() != 0 else 65532
    assert ensure_token(str(tmp_path), uid=uid) is True
    path = pathlib.Path(token_path(str(tmp_path)))
    info = path.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, uid)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = read_token(str(tmp_path))
    assert len(token) >= 32
    assert ensure_token(str(tmp_path), uid=uid) is False
    assert read_token(str(tmp_path)) == token


def test_a_loosened_token_file_is_tightened(tmp_path):
    uid = os.getuid() if os.getuid() != 0 else 65532
    ensure_token(str(tmp_path), uid=uid)
    path = pathlib.Path(token_path(str(tmp_path)))
    os.chmod(path, 0o644)
    os.chmod(path.parent, 0o755)
    token = read_token(str(tmp_path))
    assert ensure_token(str(tmp_path), uid=uid) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_token(str(tmp_path)) == token


def test_check_mode_writes_no_token(tmp_path):
    assert ensure_token(str(tmp_path), check_mode=True) is True
    assert not (tmp_path / "opa").exists()


def test_a_token_file_replaced_by_a_link_is_refused(tmp_path):
    """Attack: a local user swaps the token file for a link to a file they wrote (or read)."""
    (tmp_path / "opa").mkdir(mode=0o700)
    decoy = tmp_path / "decoy.json"
    decoy.write_text(json.dumps({"swiftdeploy_sidecar": {"token": "y" * 40}}))
    os.symlink(decoy, tmp_path / "opa" / "token.json")
    with pytest.raises(SidecarError) as raised:
        read_token(str(tmp_path))
    assert "is not a regular file" in str(raised.value)


# ------------------------------------------------------------------------------------------
# Finding the stack's own OPA container: the token goes to nothing else
# ------------------------------------------------------------------------------------------


def _container(labels=None, networks=None, running=True):
    return {
        "Id": "c0ffee", "Name": "/opatest-opa-1",
        "Config": {"Labels": labels if labels is not None else {
            "com.docker.compose.project": "opatest", "com.docker.compose.service": "opa",
            "org.swiftdeploy.stack": "opatest", "org.swiftdeploy.role": "opa"}},
        "State": {"Running": running},
        "NetworkSettings": {"Networks": networks if networks is not None else {"opatest_opa": {"IPAddress": "172.30.0.2"}}},
    }


class FakeEngine(object):
    def __init__(self, entries, details):
        self.entries, self.details = entries, details

    def ps(self, project):
        if isinstance(self.entries, Exception):
            raise self.entries
        return self.entries

    def inspect(self, container):
        return self.details


RUNNING = [{"ID": "c0ffee", "Service": "opa", "State": "running"}]


def test_the_stacks_own_container_is_found_at_its_network_address():
    sidecar = find_sidecar(FakeEngine(RUNNING, _container()), "/p", "opatest", "opatest_opa")
    assert sidecar == {"id": "c0ffee", "address": "172.30.0.2", "url": "http://172.30.0.2:8181"}


@pytest.mark.parametrize("entries, details, message", [
    ([], _container(), "the OPA sidecar of stack opatest is not running (0 running opa containers in /p)"),
    ([dict(RUNNING[0], State="exited")], _container(), "is not running (0 running"),
    (RUNNING, _container(labels={"com.docker.compose.service": "opa"}),
     "container opatest-opa-1 is not stack opatest's OPA sidecar (labels com.docker.compose.project, "
     "org.swiftdeploy.role, org.swiftdeploy.stack differ); the token is not sent to it"),
    (RUNNING, _container(networks={"opatest_opa": {"IPAddress": "172.30.0.2"}, "swiftdeploy-net": {"IPAddress": "1"}}),
     "the OPA sidecar of stack opatest is on the networks opatest_opa, swiftdeploy-net, not on opatest_opa alone"),
    (RUNNING, _container(networks={"opatest_opa": {"IPAddress": ""}}), "has no address on the network opatest_opa"),
    (EngineError("docker compose ps failed"), _container(), "cannot list stack opatest's containers to find its OPA sidecar"),
])
def test_anything_but_the_stacks_own_opa_container_gets_no_token(entries, details, message):
    with pytest.raises(SidecarError) as raised:
        find_sidecar(FakeEngine(entries, details), "/p", "opatest", "opatest_opa")
    assert message in str(raised.value)


# ------------------------------------------------------------------------------------------
# The sidecar's access policy (system.authz), evaluated as OPA evaluates it
# ------------------------------------------------------------------------------------------


def _authz_allows(authz_input, token=TOKEN):
    from regopy import Input, Interpreter  # pylint: disable=import-outside-toplevel
    interpreter = Interpreter()
    interpreter.add_module("opa_system_authz.rego", AUTHZ_REGO.read_text())
    interpreter.add_data_json(json.dumps({"swiftdeploy_sidecar": {"token": token}}))
    interpreter.set_input(Input(authz_input))
    output = interpreter.query("data.system.authz.allow")
    return bool(output.results and output.results[0].expressions and output.results[0].expressions[0] is True)


DECISION = ["v1", "data", "swiftdeploy", "infrastructure", "decision"]


@pytest.mark.parametrize("authz_input, allowed", [
    ({"method": "POST", "path": DECISION, "identity": TOKEN}, True),
    ({"method": "POST", "path": ["v1", "data", "swiftdeploy", "canary", "decision"], "identity": TOKEN}, True),
    ({"method": "GET", "path": ["health"]}, True),
    ({"method": "POST", "path": DECISION}, False),
    ({"method": "POST", "path": DECISION, "identity": "wrong"}, False),
    ({"method": "POST", "path": DECISION, "identity": TOKEN[:-1]}, False),
    ({"method": "PUT", "path": ["v1", "policies", "swiftdeploy"], "identity": TOKEN}, False),
    ({"method": "PUT", "path": ["v1", "data", "swiftdeploy", "thresholds"], "identity": TOKEN}, False),
    ({"method": "GET", "path": ["v1", "data", "swiftdeploy_sidecar", "token"], "identity": TOKEN}, False),
    ({"method": "POST", "path": ["v1", "query"], "identity": TOKEN}, False),
    ({"method": "GET", "path": ["v1", "data", "swiftdeploy", "infrastructure", "decision"], "identity": TOKEN}, False),
], ids=["infrastructure", "canary", "health", "no-token", "wrong-token", "short-token", "put-policy", "put-data",
        "read-token", "ad-hoc-query", "get-decision"])
def test_the_access_policy_allows_only_the_two_decisions_with_the_token(authz_input, allowed):
    assert _authz_allows(authz_input) is allowed


def test_an_empty_token_never_matches():
    assert _authz_allows({"method": "POST", "path": DECISION, "identity": ""}, token="") is False


# ------------------------------------------------------------------------------------------
# Waiting for the sidecar: a crash is not waited out
# ------------------------------------------------------------------------------------------


class StoppedEngine(object):
    def __init__(self, state):
        self.state = state

    def inspect(self, container):
        return {"State": self.state}


@pytest.mark.parametrize("state, detail", [
    ({"Running": False, "ExitCode": 127, "Error": ""}, "(exit code 127)"),
    ({"Running": True, "Restarting": True, "ExitCode": 127}, "(exit code 127)"),
])
def test_a_sidecar_that_exits_is_not_waited_for(state, detail):
    calls = []
    with pytest.raises(SidecarError) as raised:
        wait_healthy("http://127.0.0.1:9", 30, still_running=lambda: check_running(StoppedEngine(state), "c0ffee" * 4,
                                                                                   "opatest"),
                     sleep=calls.append)
    assert str(raised.value) == ("the OPA sidecar of stack opatest stopped before it became healthy %s; see docker "
                                 "logs c0ffeec0ffee" % detail)
    assert calls == []


def test_a_sidecar_that_never_answers_times_out():
    now = [0.0]
    with pytest.raises(SidecarError) as raised:
        wait_healthy("http://127.0.0.1:9", 2, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert str(raised.value).startswith("the OPA sidecar did not become healthy within 2 s: cannot connect to "
                                        "http://127.0.0.1:9/health")
