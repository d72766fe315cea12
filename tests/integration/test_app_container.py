"""The app image: built from app/ on the air-gapped base, run hardened, probed through Docker."""

import http.client
import json
import pathlib
import subprocess
import time
import uuid

import pytest

APP_DIR = pathlib.Path(__file__).resolve().parents[2] / "app"
BASE_IMAGE = "swiftdeploy/debian-base:bookworm"
HARDENING = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def docker(*args, check=True, timeout=120):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def skip_reason():
    try:
        if docker("info", check=False, timeout=20).returncode != 0:
            return "docker info failed: no usable Docker engine"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker CLI unusable: {exc}"
    if docker("image", "inspect", BASE_IMAGE, check=False, timeout=20).returncode != 0:
        return f"base image {BASE_IMAGE} is missing; build it with scripts/build-images.sh"
    return None


SKIP_REASON = skip_reason()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


@pytest.fixture(scope="module")
def image():
    tag = f"swiftdeploy-app-test:{uuid.uuid4().hex[:12]}"
    docker("build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", tag, str(APP_DIR), timeout=600)
    try:
        yield tag
    finally:
        docker("image", "rm", "-f", tag, check=False)


def run_container(image, *extra):
    name = f"swiftdeploy-app-test-{uuid.uuid4().hex[:12]}"
    docker("run", "-d", "--name", name, *HARDENING, "-e", "MODE=canary", "-p", "127.0.0.1::3000",
           *extra, image)
    port = int(docker("port", name, "3000/tcp").stdout.split()[0].rsplit(":", 1)[1])
    return name, port


@pytest.fixture
def container(image):
    names = []

    def start(*extra):
        name, port = run_container(image, *extra)
        names.append(name)
        return name, port

    try:
        yield start
    finally:
        for name in names:
            docker("rm", "-f", "-v", name, check=False)


def get(port, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def wait_until_serving(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(port, "/healthz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail("container did not serve /healthz")


def health(name):
    return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()


def test_image_metadata(image):
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)
    assert config["User"] == "10001:10001"
    assert "3000/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Cmd"] == ["python3", "-u", "/app/swiftdeploy_app.py"]
    assert {"MODE=stable", "APP_VERSION=1.0.0", "APP_PORT=3000", "PYTHONDONTWRITEBYTECODE=1"} <= set(config["Env"])
    check = config["Healthcheck"]
    assert (check["Interval"], check["Timeout"], check["StartPeriod"], check["Retries"]) == (
        5_000_000_000, 2_000_000_000, 2_000_000_000, 3)


def test_hardened_container_serves_and_becomes_healthy(container):
    name, port = container()
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    assert docker("exec", name, "id", "-g").stdout.strip() == "10001"
    logs_mode = docker("exec", name, "stat", "-c", "%a", "/app/logs").stdout.strip()
    assert logs_mode == "1777"

    deadline = time.monotonic() + 20
    status = health(name)
    while status != "healthy" and time.monotonic() < deadline:
        assert status in ("starting", ""), f"health is {status!r}"
        time.sleep(0.5)
        status = health(name)
    assert status == "healthy", "not healthy within 20 s"

    status, headers, body = get(port, "/")
    assert status == 200
    assert headers["X-Deployed-By"] == "swiftdeploy"
    assert headers["X-Mode"] == "canary"
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert (data["mode"], data["version"]) == ("canary", "1.0.0")

    # The read-only root leaves /app/logs unwritable here: the app must say so and keep going.
    logs = docker("logs", name).stderr
    assert "logging to stderr only" in logs
    assert " GET / 200 " in logs


def test_writes_app_log_to_a_writable_logs_volume(container):
    name, port = container("--tmpfs", "/app/logs:mode=1777")
    wait_until_serving(port)
    get(port, "/")
    log = docker("exec", name, "cat", "/app/logs/app.log").stdout
    assert " GET / 200 " in log


def test_docker_stop_is_fast_and_clean(container):
    name, port = container()
    wait_until_serving(port)
    started = time.monotonic()
    docker("stop", "-t", "10", name, timeout=30)
    seconds = time.monotonic() - started
    assert seconds < 2, f"docker stop took {seconds:.2f}s"
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
