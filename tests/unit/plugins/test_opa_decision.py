"""decide() and the HTTP helper against real HTTP servers on 127.0.0.1, one per behaviour.

Nothing in urllib is mocked: each server is http.server in a thread, answering as OPA does
(decisions evaluated with regopy over policies/), with HTTP 500, with a body that is not JSON,
with {} (undefined), with a malformed decision, or too slowly; a closed port stands for an OPA
that is not running. Every failure must give a deny whose one reason is a distinct, exact
message, and fail_open must turn it into an allow marked bypassed.
"""

from __future__ import annotations

import http.server
import json
import pathlib
import socket
import sys
import threading
import time

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _http
from ansible_collections.swiftdeploy.stack.plugins.module_utils._policy import (
    PolicyError,
    check_decision,
    decide,
    evaluate_embedded,
)

POLICY_DIR = str(pathlib.Path(__file__).resolve().parents[3] / "policies")
SLOW_SECONDS = 3.0
TIMEOUT = 0.4

CANARY_INPUT = {
    "metrics": {"requests": 7, "error_rate_percent": 2.5, "p99_latency_ms": None, "window_seconds": 30},
    "thresholds": {"min_requests": 20, "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0},
}
CANARY_REASONS = [
    "error rate 2.50% exceeds the maximum 1.00%",
    "only 7 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data",
    "p99 latency is unknown although there were 7 requests: no latency data",
]
HEALTHY_HOST_INPUT = {"host": {"disk_free_gb": 40.0, "cpu_load_1m": 0.5, "mem_free_percent": 50.0}}
INVALID_JSON_BODY = "<html><body>502 Bad Gateway</body></html>"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers per the server's `behaviour`; records every request body it got."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass

    def _send(self, status, body, content_type="application/json"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.server.behaviour == "metrics" and self.path == "/metrics":
            self._send(200, "requests_total 7\n", "text/plain; version=0.0.4")
        else:
            self._send(404, "no such page")

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
        behaviour = self.server.behaviour
        if behaviour == "opa":
            domain = self.path.split("/")[-2]
            try:
                decision = evaluate_embedded(POLICY_DIR, domain, json.loads(body)["input"])
            except PolicyError as exc:
                self._send(500, json.dumps({"code": "internal_error", "message": exc.message}))
                return
            self._send(200, json.dumps({"result": decision}))
        elif behaviour == "http_500":
            self._send(500, json.dumps({"code": "internal_error", "message": "storage read failed"}))
        elif behaviour == "bad_json":
            self._send(200, INVALID_JSON_BODY, "text/html")
        elif behaviour == "not_an_object":
            self._send(200, "[]")
        elif behaviour == "undefined":
            self._send(200, "{}")
        elif behaviour == "malformed":
            self._send(200, json.dumps({"result": {"allow": "yes", "reasons": []}}))
        elif behaviour == "slow":
            self.server.release.wait(SLOW_SECONDS)
            self._send(200, "{}")


def _serve(behaviour):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.behaviour = behaviour
    server.requests = []
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, name="opa-%s" % behaviour, daemon=True)
    thread.start()
    return server


@pytest.fixture(scope="module")
def started():
    running = {name: _serve(name) for name in (
        "opa", "http_500", "bad_json", "not_an_object", "undefined", "malformed", "slow", "metrics")}
    yield running
    for server in running.values():
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def servers(started):
    """Base URL of each server, by behaviour."""
    return {name: "http://127.0.0.1:%d" % server.server_address[1] for name, server in started.items()}


@pytest.fixture()
def closed_port_url():
    """A port nothing listens on: bound to reserve it, never listened on, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return "http://127.0.0.1:%d" % port


def _decision_url(base, domain="canary"):
    return "%s/v1/data/swiftdeploy/%s/decision" % (base, domain)


# ------------------------------------------------------------------------------------------
# Every engine decides alike
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["embedded", "sidecar", "external"])
def test_every_engine_gives_the_policy_decision(servers, engine):
    result = decide(engine, "canary", CANARY_INPUT, policy_dir=POLICY_DIR, url=servers["opa"], timeout=5)
    assert result == {
        "allow": False,
        "reasons": CANARY_REASONS,
        "domain": "canary",
        "checked": {"requests": 7, "error_rate_percent": 2.5, "p99_latency_ms": None, "window_seconds": 30,
                    "min_requests": 20, "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0},
        "engine": engine,
        "error": None,
        "bypassed": False,
    }


@pytest.mark.parametrize("engine", ["embedded", "sidecar", "external"])
def test_every_engine_allows_a_healthy_host(servers, engine):
    result = decide(engine, "infrastructure", HEALTHY_HOST_INPUT, policy_dir=POLICY_DIR, url=servers["opa"])
    assert (result["allow"], result["reasons"], result["error"], result["bypassed"]) == (True, [], None, False)


@pytest.mark.parametrize("fail_open", [False, True])
def test_fail_open_never_changes_a_decision_the_policy_made(servers, fail_open):
    result = decide("external", "canary", CANARY_INPUT, url=servers["opa"], fail_open=fail_open)
    assert (result["allow"], result["reasons"], result["bypassed"]) == (False, CANARY_REASONS, False)


def test_opa_gets_the_input_document_by_post(started, servers):
    decide("external", "canary", CANARY_INPUT, url=servers["undefined"] + "/")
    assert started["undefined"].requests[-1] == (
        "/v1/data/swiftdeploy/canary/decision", "application/json", {"input": CANARY_INPUT})


# ------------------------------------------------------------------------------------------
# Fail closed: every way of not getting a decision is a deny with its own message
# ------------------------------------------------------------------------------------------


def _failure_cases(servers, closed_port_url):
    return {
        "unreachable": (
            closed_port_url,
            "cannot connect to %s: connection refused; is OPA running?" % _decision_url(closed_port_url)),
        "timeout": (
            servers["slow"],
            "no answer from %s within 0.4 s; is OPA overloaded or hung?" % _decision_url(servers["slow"])),
        "http_status": (
            servers["http_500"],
            '%s answered HTTP 500 Internal Server Error: {"code": "internal_error", "message": "storage read failed"}'
            % _decision_url(servers["http_500"])),
        "bad_json": (
            servers["bad_json"],
            "%s answered with invalid JSON (Expecting value: line 1 column 1 (char 0)): %s"
            % (_decision_url(servers["bad_json"]), INVALID_JSON_BODY)),
        "undefined": (
            servers["undefined"],
            "OPA at %s has no decision (data.swiftdeploy.canary.decision is undefined); load the swiftdeploy "
            "policies into that OPA" % _decision_url(servers["undefined"])),
        "malformed": (
            servers["malformed"],
            "the decision from OPA at %s is malformed: 'allow' is text, not a boolean; the policy must return "
            "{allow: boolean, reasons: [text], ...}" % _decision_url(servers["malformed"])),
    }


KINDS = ["unreachable", "timeout", "http_status", "bad_json", "undefined", "malformed"]


@pytest.mark.parametrize("engine", ["sidecar", "external"])
@pytest.mark.parametrize("kind", KINDS)
def test_no_decision_denies_with_the_error(servers, closed_port_url, engine, kind):
    url, message = _failure_cases(servers, closed_port_url)[kind]
    started = time.monotonic()
    result = decide(engine, "canary", CANARY_INPUT, url=url, timeout=TIMEOUT)
    assert time.monotonic() - started < SLOW_SECONDS - 1, "decide() did not honour the timeout"
    assert result == {
        "allow": False,
        "reasons": [message],
        "domain": "canary",
        "checked": {},
        "engine": engine,
        "error": {"kind": kind, "message": message},
        "bypassed": False,
    }


@pytest.mark.parametrize("engine", ["sidecar", "external"])
@pytest.mark.parametrize("kind", KINDS)
def test_fail_open_allows_and_says_it_bypassed(servers, closed_port_url, engine, kind):
    url, message = _failure_cases(servers, closed_port_url)[kind]
    result = decide(engine, "canary", CANARY_INPUT, url=url, timeout=TIMEOUT, fail_open=True)
    assert result == {
        "allow": True,
        "reasons": ["policy bypassed because of an error (fail_open is true): " + message],
        "domain": "canary",
        "checked": {},
        "engine": engine,
        "error": {"kind": kind, "message": message},
        "bypassed": True,
    }


def test_each_failure_has_its_own_message(servers, closed_port_url):
    messages = [decide("external", "canary", CANARY_INPUT, url=url, timeout=TIMEOUT)["reasons"][0]
                for url, _message in _failure_cases(servers, closed_port_url).values()]
    assert len(set(messages)) == len(KINDS)


def test_unknown_host_is_unreachable():
    result = decide("external", "canary", CANARY_INPUT, url="http://opa.invalid:8181", timeout=TIMEOUT)
    assert result["error"]["kind"] == "unreachable"
    assert result["reasons"][0].startswith(
        "cannot connect to http://opa.invalid:8181/v1/data/swiftdeploy/canary/decision: the host name "
        "'opa.invalid' does not resolve (")
    assert result["reasons"][0].endswith("); check the URL")


def _policy_dir(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return str(tmp_path)


_CANARY_PACKAGE = "package swiftdeploy.canary\n\nimport rego.v1\n\n"


@pytest.mark.parametrize("files, kind, message", [
    ({"canary.rego": _CANARY_PACKAGE + "decision := {\n"}, "rego_error",
     "the policies in {dir} do not compile: this is unclosed at canary.rego:5:13"),
    ({"canary.rego": _CANARY_PACKAGE + "other := 1\n"}, "undefined",
     "the policies in {dir} have no decision (data.swiftdeploy.canary.decision is undefined); check the package "
     "name and the decision rule"),
    ({"canary.rego": _CANARY_PACKAGE + 'decision := {"allow": true, "reasons": "none"}\n'}, "malformed",
     "the decision from data.swiftdeploy.canary.decision in {dir} is malformed: 'reasons' is text, not a list; "
     "the policy must return {{allow: boolean, reasons: [text], ...}}"),
    ({"canary.rego": _CANARY_PACKAGE + "decision := 1\n\ndecision := 2 if true\n"}, "rego_error",
     "evaluating data.swiftdeploy.canary.decision over the policies in {dir} failed (regopy gives no detail; a rule "
     "with conflicting values is the usual cause, `opa eval` shows it)"),
    ({"canary.rego": _CANARY_PACKAGE + "decision := no_such_function(1)\n"}, "rego_error",
     "evaluating data.swiftdeploy.canary.decision over the policies in {dir} failed: regopy reports a compile "
     "error without detail, such as a call of an unknown function; `opa check` shows it"),
    ({"canary.rego": _CANARY_PACKAGE + 'decision := {"allow": true, "reasons": []}\n', "data.json": "{oops"},
     "rego_error", "the policy data {dir}/data.json is not valid JSON (Expecting property name enclosed in double "
                   "quotes: line 1 column 2 (char 1))"),
    ({"README.md": "no policies here\n"}, "no_policy",
     "there are no .rego policy files in {dir}; point policy_dir at the collection's policies/ directory"),
], ids=["syntax-error", "undefined", "malformed", "conflict", "unknown-function", "bad-data-json", "no-rego-files"])
def test_embedded_engine_denies_when_the_policies_are_broken(tmp_path, capfd, files, kind, message):
    policy_dir = _policy_dir(tmp_path, files)
    message = message.format(dir=policy_dir)
    result = decide("embedded", "canary", CANARY_INPUT, policy_dir=policy_dir)
    assert (result["allow"], result["reasons"], result["error"]) == (False, [message], {"kind": kind, "message": message})
    assert capfd.readouterr().out == "", "rego-cpp's report must not reach stdout"


def test_embedded_engine_denies_when_the_policy_directory_is_missing(tmp_path):
    missing = str(tmp_path / "nowhere")
    result = decide("embedded", "infrastructure", HEALTHY_HOST_INPUT, policy_dir=missing)
    message = "the policy directory %s does not exist; point policy_dir at the collection's policies/ directory" % missing
    assert (result["allow"], result["reasons"], result["error"]["kind"]) == (False, [message], "no_policy")


def test_embedded_engine_denies_without_regopy(monkeypatch):
    monkeypatch.setitem(sys.modules, "regopy", None)  # what `import regopy` sees when it is not installed
    result = decide("embedded", "canary", CANARY_INPUT, policy_dir=POLICY_DIR, fail_open=True)
    assert result["allow"] is True and result["bypassed"] is True
    assert result["error"]["kind"] == "missing_library"
    assert result["error"]["message"].startswith("the embedded policy engine needs the Python library regopy on the "
                                                 "controller (")
    assert result["error"]["message"].endswith("); install it with `pip install regopy`")


@pytest.mark.parametrize("engine", ["embedded", "external"])
def test_input_json_cannot_carry_denies(servers, engine):
    broken = {"metrics": dict(CANARY_INPUT["metrics"], error_rate_percent=float("nan"))}
    result = decide(engine, "canary", broken, policy_dir=POLICY_DIR, url=servers["opa"])
    message = ("input.metrics.error_rate_percent is nan, which JSON cannot carry; send a number, or null when there "
               "is no data")
    assert (result["allow"], result["reasons"]) == (False, [message])
    assert result["error"] == {"kind": "bad_input", "message": message}


@pytest.mark.parametrize("engine", ["embedded", "external"])
@pytest.mark.parametrize("requests, shown", [
    (2 ** 53 + 1, "9007199254740993"),
    (2 ** 63 + 5, "9223372036854775813"),
    (-(2 ** 63), "-9223372036854775808"),
    (10 ** 5000, "an integer of 16610 bits"),
], ids=["2**53+1", "2**63+5", "-2**63", "huge"])
def test_integers_beyond_2_53_are_refused_before_evaluation(started, servers, engine, requests, shown):
    """regopy wraps 2**63 + 5 to -9223372036854775803: such an input must not reach an engine."""
    asked = len(started["opa"].requests)
    wide = {"metrics": dict(CANARY_INPUT["metrics"], requests=requests), "thresholds": CANARY_INPUT["thresholds"]}
    result = decide(engine, "canary", wide, policy_dir=POLICY_DIR, url=servers["opa"])
    assert len(started["opa"].requests) == asked, "the input reached OPA"
    message = ("input.metrics.requests is %s, beyond +-2**53, where policy engines stop reading integers exactly; "
               "send a smaller number" % shown)
    assert (result["allow"], result["reasons"], result["error"]) == (False, [message], {"kind": "bad_input",
                                                                                        "message": message})


def test_a_huge_integer_key_gets_a_message():
    result = decide("embedded", "canary", {"metrics": {10 ** 5000: 1}}, policy_dir=POLICY_DIR)
    assert result["error"] == {"kind": "bad_input", "message": "input.metrics has the key an integer of 16610 bits, "
                                                               "which is not text; JSON keys must be strings"}


@pytest.mark.parametrize("requests", [2 ** 53, -(2 ** 53)])
def test_integers_up_to_2_53_reach_the_engine(requests):
    wide = {"metrics": dict(CANARY_INPUT["metrics"], requests=requests), "thresholds": CANARY_INPUT["thresholds"]}
    result = decide("embedded", "canary", wide, policy_dir=POLICY_DIR)
    assert result["error"] is None and result["checked"]["requests"] == requests


# ------------------------------------------------------------------------------------------
# Bad arguments are errors, not decisions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"engine": "opa"}, "engine must be one of embedded, sidecar, external, not 'opa'"),
    ({"domain": "network"}, "domain must be one of infrastructure, canary, not 'network'"),
    ({"engine": "sidecar", "url": None}, "the sidecar engine needs url, the base URL of OPA such as http://127.0.0.1:8181"),
    ({"engine": "external", "url": "opa.example.com:8181"},
     "url must be the base URL of OPA such as http://127.0.0.1:8181 or https://opa.example.com, not "
     "'opa.example.com:8181'"),
    ({"engine": "sidecar", "url": "http://127.0.0.1:99999"},
     "url must be the base URL of OPA such as http://127.0.0.1:8181 or https://opa.example.com, not "
     "'http://127.0.0.1:99999'"),
    ({"engine": "embedded", "policy_dir": None}, "the embedded engine needs policy_dir, the directory of the .rego files"),
    ({"timeout": 0}, "timeout must be a number of seconds above 0, not 0"),
    ({"input_dict": ["metrics"]}, "input must be a dict, not list"),
])
def test_bad_arguments_raise(kwargs, message):
    arguments = dict({"engine": "external", "domain": "canary", "input_dict": CANARY_INPUT,
                      "url": "http://127.0.0.1:8181", "policy_dir": POLICY_DIR}, **kwargs)
    engine, domain, input_dict = arguments.pop("engine"), arguments.pop("domain"), arguments.pop("input_dict")
    with pytest.raises(ValueError) as raised:
        decide(engine, domain, input_dict, **arguments)
    assert str(raised.value) == message


def test_check_decision_fills_in_domain_and_checked():
    assert check_decision({"allow": True, "reasons": []}, "test", "canary") == {
        "allow": True, "reasons": [], "domain": "canary", "checked": {}}


# ------------------------------------------------------------------------------------------
# The HTTP helper on its own (also used to scrape metrics)
# ------------------------------------------------------------------------------------------


def test_get_text_returns_the_body(servers):
    assert _http.get_text(servers["metrics"] + "/metrics", 5) == "requests_total 7\n"


def test_get_text_reports_the_status_and_body(servers):
    with pytest.raises(_http.HttpError) as raised:
        _http.get_text(servers["metrics"] + "/nope", 5)
    assert (raised.value.kind, raised.value.status) == ("http_status", 404)
    assert raised.value.message == "%s/nope answered HTTP 404 Not Found: no such page" % servers["metrics"]


def test_post_json_rejects_json_that_is_not_an_object(servers):
    with pytest.raises(_http.HttpError) as raised:
        _http.post_json(servers["not_an_object"] + "/v1/data", {"input": {}}, 5)
    assert raised.value.kind == "bad_json"
    assert raised.value.message == "%s/v1/data answered with JSON that is not an object: []" % servers["not_an_object"]


def test_http_status_body_is_cut_at_200_characters(servers):
    long_body = "x" * 500
    server = _serve("http_500")
    server.RequestHandlerClass = type("LongBody", (_Handler,), {
        "do_POST": lambda self: (self.rfile.read(int(self.headers.get("Content-Length") or 0)),
                                 self._send(503, long_body))})
    url = "http://127.0.0.1:%d/v1/data" % server.server_address[1]
    try:
        with pytest.raises(_http.HttpError) as raised:
            _http.post_json(url, {}, 5)
    finally:
        server.shutdown()
        server.server_close()
    assert raised.value.message == "%s answered HTTP 503 Service Unavailable: %s..." % (url, "x" * 200)


def test_unreachable_names_the_service(closed_port_url):
    with pytest.raises(_http.HttpError) as raised:
        _http.get_text(closed_port_url + "/metrics", 1, service="the app's metrics endpoint")
    assert raised.value.kind == "unreachable"
    assert raised.value.message == ("cannot connect to %s/metrics: connection refused; is the app's metrics endpoint "
                                    "running?" % closed_port_url)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "127.0.0.1:8181", "http:///v1"])
def test_bad_url(url):
    with pytest.raises(_http.HttpError) as raised:
        _http.get_text(url, 1)
    assert raised.value.kind == "bad_url"
    assert raised.value.message == "%r is not an http(s) URL; use one such as http://127.0.0.1:8181" % url


def test_loopback_never_goes_through_a_proxy(servers, closed_port_url, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, closed_port_url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _http.get_text(servers["metrics"] + "/metrics", 5) == "requests_total 7\n"
