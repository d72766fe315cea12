"""The three policy engines agree: embedded (regopy in-process) and OPA's REST API as the
sidecar and external engines call it, served by the OPA test fixture
(tests/fixtures/opa_server/, a stand-in for OPA, which cannot be obtained on this machine).

1. The fixture runs on the host; for every boundary of both policies, decide() over REST must
   equal decide("embedded") in allow, reasons, checked and domain.
2. A playbook calls swiftdeploy.stack.opa_decision_info with the embedded and external engines (in
   the action plugin) and asserts they agree, and that the sidecar engine (the module on the
   managed host) fails closed without its OPA, in normal and in check mode; the sidecar on a
   real stack is in test_opa_gate_attacks.py.
3. The fixture's image, built by build.sh, answers /health and a decision as the compose
   file's OPA service would run it (uid 65532, read-only, policies bind-mounted).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICY_DIR = REPO_ROOT / "policies"
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "opa_server"
FIXTURE_SERVER = FIXTURE_DIR / "opa_fixture_server.py"
FIXTURE_IMAGE = os.environ.get("SWIFTDEPLOY_OPA_FIXTURE_IMAGE", "swiftdeploy/opa-fixture:test")

if str(REPO_ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / ".collections"))

from ansible_collections.swiftdeploy.stack.plugins.module_utils._policy import decide  # noqa: E402

THRESHOLDS = {
    "min_disk_free_gb": 5.0, "max_cpu_load": 8.0, "min_mem_free_percent": 10.0,
    "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0, "min_requests": 20,
}
HOST = {"disk_free_gb": 50.0, "cpu_load_1m": 0.5, "mem_free_percent": 60.0}
METRICS = {"requests": 100, "error_rate_percent": 0.5, "p99_latency_ms": 120.0, "window_seconds": 30}


def _host(**changes):
    return {"host": {key: value for key, value in dict(HOST, **changes).items() if value != "DROP"},
            "thresholds": THRESHOLDS}


def _metrics(**changes):
    return {"metrics": {key: value for key, value in dict(METRICS, **changes).items() if value != "DROP"},
            "thresholds": THRESHOLDS}


CASES = [
    ("infrastructure", "healthy", _host()),
    ("infrastructure", "disk-at-min", _host(disk_free_gb=5.0)),
    ("infrastructure", "disk-above-min", _host(disk_free_gb=5.01)),
    ("infrastructure", "disk-below-min", _host(disk_free_gb=4.99)),
    ("infrastructure", "disk-integer", _host(disk_free_gb=3)),
    ("infrastructure", "load-at-max", _host(cpu_load_1m=8.0)),
    ("infrastructure", "load-below-max", _host(cpu_load_1m=7.99)),
    ("infrastructure", "load-above-max", _host(cpu_load_1m=8.01)),
    ("infrastructure", "mem-at-min", _host(mem_free_percent=10.0)),
    ("infrastructure", "mem-above-min", _host(mem_free_percent=10.01)),
    ("infrastructure", "mem-below-min", _host(mem_free_percent=9.99)),
    ("infrastructure", "everything-fails", _host(disk_free_gb=3.2, cpu_load_1m=9.5, mem_free_percent=4.1)),
    ("infrastructure", "disk-missing", _host(disk_free_gb="DROP")),
    ("infrastructure", "load-text", _host(cpu_load_1m="high")),
    ("infrastructure", "mem-null", _host(mem_free_percent=None)),
    ("infrastructure", "host-empty", {"host": {}, "thresholds": THRESHOLDS}),
    ("infrastructure", "input-empty", {}),
    ("infrastructure", "defaults-from-data-json", {"host": dict(HOST, disk_free_gb=4.99)}),
    ("infrastructure", "partial-thresholds", {"host": HOST, "thresholds": {"max_cpu_load": 0.25}}),
    ("infrastructure", "threshold-not-a-number", {"host": HOST, "thresholds": dict(THRESHOLDS, max_cpu_load="8")}),
    ("canary", "healthy", _metrics()),
    ("canary", "requests-at-min", _metrics(requests=20)),
    ("canary", "requests-above-min", _metrics(requests=21)),
    ("canary", "requests-below-min", _metrics(requests=19)),
    ("canary", "no-traffic", _metrics(requests=0, error_rate_percent=None, p99_latency_ms=None)),
    ("canary", "errors-at-max", _metrics(error_rate_percent=1.0)),
    ("canary", "errors-below-max", _metrics(error_rate_percent=0.99)),
    ("canary", "errors-above-max", _metrics(error_rate_percent=1.01)),
    ("canary", "errors-integer", _metrics(error_rate_percent=3)),
    ("canary", "p99-at-max", _metrics(p99_latency_ms=500.0)),
    ("canary", "p99-below-max", _metrics(p99_latency_ms=499.99)),
    ("canary", "p99-above-max", _metrics(p99_latency_ms=500.01)),
    ("canary", "p99-null-with-requests", _metrics(p99_latency_ms=None)),
    ("canary", "errors-null-with-requests", _metrics(error_rate_percent=None)),
    ("canary", "everything-fails", _metrics(requests=7, error_rate_percent=2.5, p99_latency_ms=612.5)),
    ("canary", "requests-missing", _metrics(requests="DROP")),
    ("canary", "window-missing", _metrics(window_seconds="DROP", requests=7)),
    ("canary", "p99-missing", _metrics(p99_latency_ms="DROP")),
    ("canary", "errors-text", _metrics(error_rate_percent="0.5")),
    ("canary", "metrics-empty", {"metrics": {}, "thresholds": THRESHOLDS}),
    ("canary", "input-empty", {}),
    ("canary", "defaults-from-data-json", {"metrics": dict(METRICS, requests=19)}),
    ("canary", "partial-thresholds", {"metrics": METRICS, "thresholds": {"max_p99_latency_ms": 100}}),
]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(base_url, is_running, deadline_s=30.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not is_running():
            return False
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                if response.status == 200 and json.loads(response.read()) == {}:
                    return True
        except (OSError, ValueError):
            time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def fixture_url(tmp_path_factory):
    """The OPA test fixture on the host, as a user would start it."""
    log = tmp_path_factory.mktemp("opa-fixture") / "server.log"
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        with log.open("ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, str(FIXTURE_SERVER), "run", "--server", "--addr=127.0.0.1:%d" % port,
                 "--log-level=error", "policies/"],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        url = "http://127.0.0.1:%d" % port
        if _wait_healthy(url, lambda: proc.poll() is None):
            break
        proc.kill()
        proc.wait(timeout=10)
    else:
        pytest.fail("the OPA test fixture did not start; its log:\n%s" % log.read_text())
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _comparable(result):
    return {key: result[key] for key in ("allow", "reasons", "checked", "domain", "error", "bypassed")}


@pytest.mark.parametrize("domain, input_dict", [pytest.param(domain, input_dict, id="%s-%s" % (domain, name))
                                                for domain, name, input_dict in CASES])
@pytest.mark.parametrize("engine", ["sidecar", "external"])
def test_rest_engines_equal_embedded(fixture_url, engine, domain, input_dict):
    embedded = decide("embedded", domain, input_dict, policy_dir=str(POLICY_DIR))
    over_rest = decide(engine, domain, input_dict, url=fixture_url, timeout=10)
    assert embedded["error"] is None, embedded["error"]
    assert _comparable(over_rest) == _comparable(embedded)
    assert (embedded["engine"], over_rest["engine"]) == ("embedded", engine)


def test_cases_cover_allow_and_deny_in_both_domains():
    outcomes = {(domain, decide("embedded", domain, input_dict, policy_dir=str(POLICY_DIR))["allow"])
                for domain, _name, input_dict in CASES}
    assert outcomes == {("infrastructure", True), ("infrastructure", False), ("canary", True), ("canary", False)}


def test_fixture_answers_undefined_as_opa_does(fixture_url):
    request = urllib.request.Request(fixture_url + "/v1/data/swiftdeploy/nothing/decision",
                                     data=b'{"input": {}}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert (response.status, json.loads(response.read())) == (200, {})
    result = decide("external", "canary", {}, url=fixture_url + "/v1/data/swiftdeploy/nothing", timeout=10)
    assert result["error"]["kind"] == "undefined"


# ------------------------------------------------------------------------------------------
# The module through Ansible: every engine wired as a playbook uses it
# ------------------------------------------------------------------------------------------

PLAYBOOK = textwrap.dedent("""\
    - name: The three engines of swiftdeploy.stack.opa_decision_info agree
      hosts: localhost
      connection: local
      gather_facts: false
      vars:
        gate_input:
          metrics: {requests: 7, error_rate_percent: 2.5, p99_latency_ms: null, window_seconds: 30}
          thresholds: {min_requests: 20, max_error_rate_percent: 1.0, max_p99_latency_ms: 500.0}
      tasks:
        - name: Embedded, in the action plugin
          swiftdeploy.stack.opa_decision_info:
            domain: canary
            engine: embedded
            input: "{{ gate_input }}"
          register: gate_embedded

        - name: External, from the controller, over plain HTTP as the manifest may allow
          swiftdeploy.stack.opa_decision_info:
            domain: canary
            engine: external
            url: "{{ opa_url }}"
            allow_http: true
            input: "{{ gate_input }}"
          register: gate_external

        # The sidecar engine on a real stack: tests/integration/test_opa_gate_attacks.py. Here
        # the module on the host finds no sidecar (no token, no container): fail closed.
        - name: Sidecar without its OPA, fail closed
          swiftdeploy.stack.opa_decision_info:
            domain: canary
            engine: sidecar
            project_dir: "{{ empty_project }}"
            stack: opatestnone
            network: opatestnone_opa
            input: "{{ gate_input }}"
          register: gate_down

        - name: Sidecar without its OPA, fail open
          swiftdeploy.stack.opa_decision_info:
            domain: canary
            engine: sidecar
            project_dir: "{{ empty_project }}"
            stack: opatestnone
            network: opatestnone_opa
            fail_open: true
            input: "{{ gate_input }}"
          register: gate_bypassed

        - name: External over plain HTTP without allow_http fails the task
          block:
            - name: External over http
              swiftdeploy.stack.opa_decision_info:
                domain: canary
                engine: external
                url: "{{ opa_url }}"
                input: "{{ gate_input }}"
          rescue:
            - name: Remember the refusal
              ansible.builtin.set_fact:
                gate_http_msg: "{{ ansible_failed_result.msg }}"

        - name: Bad arguments fail the task
          block:
            - name: Sidecar without its project
              swiftdeploy.stack.opa_decision_info:
                domain: canary
                engine: sidecar
                input: "{{ gate_input }}"
              register: gate_bad
          rescue:
            - name: Remember the failure
              ansible.builtin.set_fact:
                gate_bad_msg: "{{ ansible_failed_result.msg }}"

        - name: The engines agree and nothing failed on a deny
          ansible.builtin.assert:
            that:
              - gate_embedded is not changed and gate_embedded is not failed
              - not gate_embedded.allow
              - gate_embedded.reasons | length == 3
              - gate_external.reasons == gate_embedded.reasons
              - gate_external.decision.checked == gate_embedded.decision.checked
              - not gate_down.allow and not gate_down.bypassed
              - gate_down.decision.engine == 'sidecar'
              - gate_down.decision.error.kind == 'sidecar_unavailable'
              - gate_down.reasons[0] is search("token file .* does not exist")
              - gate_bypassed.allow and gate_bypassed.bypassed
              - gate_bypassed.reasons[0] is search('^policy bypassed because of an error')
              - gate_http_msg is search('is plain HTTP')
              - gate_bad_msg is search('engine is sidecar but all of the following are missing. project_dir, stack, network')
            fail_msg: "engines disagree: {{ [gate_embedded, gate_external, gate_down] }}"
    """)


@pytest.mark.parametrize("check", [False, True], ids=["apply", "check-mode"])
def test_playbook_engines_agree(fixture_url, tmp_path, run_playbook, parse_recap, check):
    playbook = tmp_path / "engines.yml"
    playbook.write_text(PLAYBOOK)
    empty_project = tmp_path / "no-stack"
    empty_project.mkdir()
    run = run_playbook(playbook, "-e", "opa_url=%s" % fixture_url, "-e", "empty_project=%s" % empty_project,
                       check=check, diff=False, timeout=300)
    assert run.rc == 0, run.describe()
    recap = parse_recap(run.stdout)["localhost"]
    assert (recap["failed"], recap["changed"], recap["rescued"]) == (0, 0, 2), run.describe()


# ------------------------------------------------------------------------------------------
# The fixture's image, run as the compose file runs OPA
# ------------------------------------------------------------------------------------------


def _run(command, timeout):
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def _docker_or_skip():
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip("docker CLI unusable: %s" % exc)
    if info.returncode != 0:
        pytest.skip("the Docker engine does not answer: %s" % info.stderr.strip())


@pytest.mark.docker
@pytest.mark.slow
def test_fixture_image_serves_decisions_like_opa():
    _docker_or_skip()
    build = _run(["bash", str(FIXTURE_DIR / "build.sh"), FIXTURE_IMAGE], timeout=900)
    assert build.returncode == 0, "build.sh failed:\n%s\n%s" % (build.stdout, build.stderr)
    again = _run(["bash", str(FIXTURE_DIR / "build.sh"), FIXTURE_IMAGE], timeout=120)
    assert again.returncode == 0 and "present and up to date" in again.stdout, (
        "a second build.sh run must be a no-op:\n%s%s" % (again.stdout, again.stderr))

    port = _free_port()
    name = "swiftdeploy-opa-fixture-test-%d" % os.getpid()
    # As the rendered compose file runs OPA: uid 65532, read-only, no capabilities, policies
    # bind-mounted read-only, published on loopback only.
    started = _run(
        ["docker", "run", "-d", "--name", name, "--init", "--user", "65532:65532", "--read-only",
         "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--tmpfs", "/tmp:size=16m",
         "--mount", "type=bind,source=%s,target=/policies,readonly" % POLICY_DIR,
         "-p", "127.0.0.1:%d:8181" % port, FIXTURE_IMAGE,
         "run", "--server", "--addr=0.0.0.0:8181", "--log-level=error", "/policies"],
        timeout=120)
    assert started.returncode == 0, started.stderr
    url = "http://127.0.0.1:%d" % port
    try:
        def running():
            return _run(["docker", "inspect", "-f", "{{.State.Running}}", name], timeout=30).stdout.strip() == "true"

        assert _wait_healthy(url, running), _run(["docker", "logs", name], timeout=30).stderr
        assert _run(["docker", "exec", name, "id", "-u"], timeout=30).stdout.strip() == "65532"
        for domain, _name, input_dict in CASES[::4]:
            embedded = decide("embedded", domain, input_dict, policy_dir=str(POLICY_DIR))
            assert _comparable(decide("sidecar", domain, input_dict, url=url, timeout=10)) == _comparable(embedded)
    finally:
        _run(["docker", "rm", "-f", name], timeout=60)
