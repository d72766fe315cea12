"""The sidecar engine and the internal endpoints, seen from the host and from another host.

The real OPA image cannot be pulled on this machine, so the sidecar here is the OPA-REST test
fixture (tests/fixtures/opa_server/: regopy behind OPA's API and command line), named in the
manifest as any other OPA image would be. The "other host" is a network namespace this test
creates, joined to the machine by a veth pair: its requests arrive from its own address, as a
client on the network would.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FIXTURE_IMAGE = "swiftdeploy/opa-fixture:test"
NETNS = "opatest-client"
HOST_IF, NS_IF = "opat-host", "opat-ns"
HOST_IP, NS_IP = "10.213.0.1", "10.213.0.2"
PORT, OPA_PORT, ADMIN_PORT = 21780, 21781, 21782


def run(*command, check=True):
    return subprocess.run(list(command), capture_output=True, text=True, timeout=120, check=check)


def get(port, path, method="GET", body=None, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


CLIENT = """
import http.client, json, sys
host, port, method, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    conn = http.client.HTTPConnection(host, port, timeout=3)
    conn.request(method, path, body=b'{"mode": "recover"}' if method == "POST" else None,
                 headers={"Content-Type": "application/json"})
    print(json.dumps({"status": conn.getresponse().status}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


def from_namespace(port, path, method="GET"):
    """A request from the client namespace to the machine's veth address."""
    out = run("ip", "netns", "exec", NETNS, "python3", "-c", CLIENT, HOST_IP, str(port), method, path).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def client_namespace():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is missing (scripts/setup-host.sh installs it)")
    run("ip", "netns", "del", NETNS, check=False)
    run("ip", "link", "del", HOST_IF, check=False)
    run("ip", "netns", "add", NETNS)
    try:
        run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        run("ip", "link", "set", NS_IF, "netns", NETNS)
        run("ip", "addr", "add", HOST_IP + "/24", "dev", HOST_IF)
        run("ip", "link", "set", HOST_IF, "up")
        run("ip", "netns", "exec", NETNS, "ip", "addr", "add", NS_IP + "/24", "dev", NS_IF)
        run("ip", "netns", "exec", NETNS, "ip", "link", "set", NS_IF, "up")
        run("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
        yield NETNS
    finally:
        run("ip", "link", "del", HOST_IF, check=False)
        run("ip", "netns", "del", NETNS, check=False)


@pytest.fixture(scope="module")
def fixture_image(repo_root, docker_engine):
    build = subprocess.run(["bash", str(repo_root / "tests" / "fixtures" / "opa_server" / "build.sh"), FIXTURE_IMAGE],
                           capture_output=True, text=True, timeout=900, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    return FIXTURE_IMAGE


@pytest.fixture(scope="module")
def sidecar_stack(tmp_path_factory, write_manifest, run_playbook, app_image, fixture_image):
    tmp = tmp_path_factory.mktemp("sidecar")
    project = tmp / "project"
    manifest = write_manifest(tmp / "manifest.yml", {
        "stack": "opatestside", "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT, "opa.port": OPA_PORT,
        "opa.image": fixture_image, "opa.mode": "sidecar", "network.name": "opatestside-net",
        "services.log_volume": "opatestside-logs"})
    args = ("-e", "swiftdeploy_manifest=%s" % manifest, "-e", "swiftdeploy_project_dir=%s" % project)
    deploy = run_playbook("deploy", *args)
    assert deploy.rc == 0, deploy.describe()
    yield {"project": project, "deploy": deploy, "args": args}
    run_playbook("teardown", *args, "-e", "clean=true")


def test_sidecar_made_the_decision(sidecar_stack):
    assert "Infrastructure policy (sidecar): ALLOW" in sidecar_stack["deploy"].stdout
    opa = json.loads(run("docker", "inspect", "opatestside-opa-1").stdout)[0]
    assert opa["Config"]["User"] == "65532:65532"
    assert opa["HostConfig"]["ReadonlyRootfs"] is True
    # No port on the host (nothing to squat), and alone on its internal network.
    assert not opa["HostConfig"]["PortBindings"]
    assert sorted(opa["NetworkSettings"]["Networks"]) == ["opatestside_opa"]
    assert "--authentication=token" in opa["Config"]["Cmd"] and "--authorization=basic" in opa["Config"]["Cmd"]


def test_opa_is_not_on_the_hosts_loopback(sidecar_stack):
    with pytest.raises(OSError):
        get(OPA_PORT, "/health")


def test_opa_is_not_proxied_by_nginx(sidecar_stack):
    for path in ("/v1/data/swiftdeploy/infrastructure/decision", "/health", "/v1/policies"):
        status, body = get(PORT, path)
        assert status == 404, path
        assert b"result" not in body


def test_internal_endpoints_refused_from_another_host(sidecar_stack, client_namespace):
    # The public port works from the other host, so a refusal below is isolation, not a broken
    # network.
    assert from_namespace(PORT, "/") == {"status": 200}
    # OPA and the admin port are published on the machine's 127.0.0.1 only: nothing answers on
    # the address the other host can reach.
    assert "error" in from_namespace(OPA_PORT, "/health")
    assert "error" in from_namespace(ADMIN_PORT, "/metrics")
    assert "error" in from_namespace(ADMIN_PORT, "/chaos", method="POST")
    # On the public port nginx refuses the internal paths.
    assert from_namespace(PORT, "/metrics") == {"status": 403}
    assert from_namespace(PORT, "/chaos", method="POST") == {"status": 403}


def test_internal_endpoints_answer_the_host_itself(sidecar_stack):
    assert get(ADMIN_PORT, "/metrics")[0] == 200
    assert get(ADMIN_PORT, "/healthz")[0] == 200


def test_sidecar_that_cannot_start_denies_the_deploy(tmp_path, write_manifest, run_playbook, app_image):
    """An OPA image that is not OPA: the sidecar never answers, so the deploy is denied."""
    project = tmp_path / "project"
    manifest = write_manifest(tmp_path / "manifest.yml", {
        "stack": "opatestsidedown", "nginx.port": 21880, "nginx.admin_port": 21882, "opa.port": 21881,
        "opa.image": "swiftdeploy/debian-base:bookworm", "opa.mode": "sidecar", "opa.timeout": 2,
        "network.name": "opatestsidedown-net", "services.log_volume": "opatestsidedown-logs"})
    args = ("-e", "swiftdeploy_manifest=%s" % manifest, "-e", "swiftdeploy_project_dir=%s" % project)
    try:
        deploy = run_playbook("deploy", *args)
        assert deploy.rc != 0
        assert "Deploy blocked by the infrastructure policy" in deploy.output
        # Which of these depends on how far the container gets before its command fails.
        # (a container caught while it stops can still show as running, without its address yet)
        assert re.search(r"OPA sidecar did not start|the OPA sidecar of stack opatestsidedown (stopped before it "
                         r"became healthy|is not running|has no address on the network)", deploy.output), \
            deploy.describe()
        running = run("docker", "ps", "-q", "--filter", "label=com.docker.compose.project=opatestsidedown").stdout.split()
        assert running == []
        events = [json.loads(line)["event"] for line in (pathlib.Path(project) / "history.jsonl").read_text().splitlines()]
        assert events == ["deploy_blocked"]
    finally:
        run_playbook("teardown", *args, "-e", "clean=true")
