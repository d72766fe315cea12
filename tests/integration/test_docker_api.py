"""The Engine API calls stack_converge makes through the local socket, on the real Docker engine:
inspect, kill with a signal, stop (twice), remove, the engine's own error for a container
that does not exist, and the lock's survey of images and the data root."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils._docker_api import (  # noqa: E402
    DockerApi, DockerApiError, local_socket,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import ApiEngine, CliEngine  # noqa: E402

pytestmark = [pytest.mark.docker]

NAME = "swiftdeploy-docker-api-test"
IMAGE = "swift-deploy-1-node:latest"  # the app: it logs the SIGHUP it gets


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def api():
    path = local_socket()
    if path is None:
        pytest.skip("the docker CLI here does not use a local unix socket")
    return DockerApi(path)


@pytest.fixture
def container(app_image):
    docker("rm", "-f", NAME)
    run = docker("run", "-d", "--name", NAME, "--network", "none", IMAGE)
    assert run.returncode == 0, run.stderr
    yield run.stdout.strip()
    docker("rm", "-f", NAME)


def test_inspect_kill_stop_and_remove_a_real_container(api, container):
    data = api.inspect(NAME)
    assert data["Id"] == container and data["State"]["Running"] is True
    assert "none" in data["NetworkSettings"]["Networks"]

    # Without MODE_FILE the app logs the SIGHUP it got and goes on serving.
    deadline = time.monotonic() + 10
    while "listening on" not in docker("logs", NAME).stderr:
        assert time.monotonic() < deadline, docker("logs", NAME).stderr[-2000:]
        time.sleep(0.1)
    api.kill(NAME, "HUP")
    while "SIGHUP ignored: no MODE_FILE" not in docker("logs", NAME).stderr:
        assert time.monotonic() < deadline, docker("logs", NAME).stderr[-2000:]
        time.sleep(0.1)
    assert api.inspect(container)["State"]["Running"] is True

    api.stop(NAME, 5)
    assert api.inspect(NAME)["State"]["Running"] is False
    api.stop(NAME, 5)  # already stopped: fine, as docker stop
    api.remove(NAME)
    assert docker("inspect", NAME).returncode != 0


def test_a_missing_container_is_the_engines_own_message(api):
    with pytest.raises(DockerApiError) as raised:
        api.inspect("swiftdeploy-no-such-container")
    assert raised.value.status == 404
    assert "No such container: swiftdeploy-no-such-container" in str(raised.value)
    with pytest.raises(DockerApiError) as raised:
        api.kill("swiftdeploy-no-such-container", "HUP")
    assert raised.value.status == 404


def test_an_engine_that_is_not_there_is_named(tmp_path):
    missing = DockerApi(str(tmp_path / "docker.sock"), timeout=2)
    with pytest.raises(DockerApiError) as raised:
        missing.inspect(NAME)
    assert raised.value.status is None
    assert "the Docker engine at %s did not answer GET /containers/%s/json" % (tmp_path / "docker.sock", NAME) \
        in str(raised.value)


@pytest.mark.parametrize("images", [
    pytest.param([IMAGE, "swiftdeploy-no-such-image:1"], id="present and absent"),
    pytest.param([IMAGE.split(":", maxsplit=1)[0]], id="a name without its tag"),
])
def test_the_survey_through_the_socket_says_what_the_cli_says(api, app_image, images):
    """The lock's survey (image IDs, the data root) asks the socket instead of starting the CLI
    once per image: the answers must be the CLI's own."""
    through_api = ApiEngine("docker", api.path).survey(images, root_dir=True)
    through_cli = CliEngine("docker").survey(images, root_dir=True)
    assert through_api == through_cli
    assert through_api["images"][images[0]].startswith("sha256:")
