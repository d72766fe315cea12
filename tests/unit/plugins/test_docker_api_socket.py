"""When stack_converge talks to the Docker engine's socket itself: only when the docker CLI would
use that very socket (tests/integration/test_docker_api.py runs the calls on the real engine)."""

from __future__ import annotations

import json
import socket

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._docker_api import local_socket


@pytest.fixture
def engine_socket(tmp_path):
    """A real unix socket file, as the engine's is."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    yield str(path)
    sock.close()


@pytest.fixture
def default_socket(tmp_path, monkeypatch):
    """/var/run/docker.sock as the module sees it, pointed at a real socket of the test's own."""
    path = str(tmp_path / "default.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    monkeypatch.setattr("ansible_collections.swiftdeploy.stack.plugins.module_utils._docker_api.DEFAULT_SOCKET", path)
    yield path
    sock.close()


def cli_config(tmp_path, content):
    config_dir = tmp_path / "cli"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return str(config_dir)


def test_a_unix_docker_host_is_used(engine_socket):
    assert local_socket({"DOCKER_HOST": "unix://" + engine_socket}) == engine_socket


@pytest.mark.parametrize("environ", [
    pytest.param({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, id="tcp engine"),
    pytest.param({"DOCKER_HOST": "ssh://deploy@web1"}, id="ssh engine"),
    pytest.param({"DOCKER_CONTEXT": "web1"}, id="a named context"),
])
def test_another_engine_keeps_the_cli(environ, engine_socket):
    assert local_socket(dict(environ)) is None
    # A context wins over a unix DOCKER_HOST in this check: the CLI would warn and pick one.
    if "DOCKER_CONTEXT" in environ:
        assert local_socket(dict(environ, DOCKER_HOST="unix://" + engine_socket)) is None


def test_a_path_that_is_not_a_socket_keeps_the_cli(tmp_path):
    regular = tmp_path / "docker.sock"
    regular.write_text("")
    assert local_socket({"DOCKER_HOST": "unix://%s" % regular}) is None
    assert local_socket({"DOCKER_HOST": "unix://%s" % (tmp_path / "missing.sock")}) is None


@pytest.mark.parametrize("config, local", [
    pytest.param({"currentContext": "web1"}, False, id="current context in the CLI config"),
    pytest.param({"currentContext": "default"}, True, id="the default context"),
    pytest.param({"auths": {}}, True, id="no current context"),
    pytest.param("{not json", True, id="unreadable config: the CLI would not use it either"),
    pytest.param([1, 2], False, id="a config that is not an object: cannot tell"),
])
def test_the_cli_config_decides_without_docker_host(tmp_path, default_socket, config, local):
    """Without DOCKER_HOST the CLI uses /var/run/docker.sock unless its config names another
    context."""
    result = local_socket({"DOCKER_CONFIG": cli_config(tmp_path, config)})
    assert result == (default_socket if local else None)


def test_the_cli_config_is_found_in_the_home_directory(tmp_path, default_socket):
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"currentContext": "remote"}))
    assert local_socket({}, home=str(tmp_path)) is None
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({}))
    assert local_socket({}, home=str(tmp_path)) == default_socket
