"""Fixtures for the app tests: the module loaded from app/ and real servers on ephemeral ports."""

import http.client
import importlib.util
import json
import pathlib
import socket
import sys
import threading
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

APP_PATH = pathlib.Path(__file__).resolve().parents[3] / "app" / "swiftdeploy_app.py"


def load_app_module():
    if "swiftdeploy_app" in sys.modules:
        return sys.modules["swiftdeploy_app"]
    spec = importlib.util.spec_from_file_location("swiftdeploy_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        assert self.headers["Content-Type"] == "application/json", self.headers["Content-Type"]
        return json.loads(self.body)


class RunningServer:
    """An AppServer serving from a background thread, plus small HTTP helpers."""

    def __init__(self, appmod, config):
        self.config = config
        self.server = appmod.AppServer(config)
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def connection(self, timeout=10):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def post_chaos(self, payload):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/chaos", body=body, headers={"Content-Type": "application/json"})

    def raw(self, data, method="GET", timeout=10):
        """Send bytes verbatim (for requests http.client refuses to produce) and read one reply."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            resp = http.client.HTTPResponse(sock, method=method)
            resp.begin()
            return Reply(resp.status, resp.headers, resp.read())

    def samples(self):
        reply = self.request("GET", "/metrics")
        assert reply.status == 200
        families = list(text_string_to_metric_families(reply.body.decode("utf-8")))
        return [sample for family in families for sample in family.samples]

    def value(self, name, **labels):
        """The value of one sample, or None when the series does not exist."""
        found = [s.value for s in self.samples() if s.name == name and s.labels == labels]
        assert len(found) <= 1
        return found[0] if found else None


@pytest.fixture(scope="session")
def appmod():
    return load_app_module()


class FakeClock:
    """A monotonic clock the test moves by hand (clock.now += seconds)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def start_server(appmod, tmp_path):
    running = []

    def start(**overrides):
        settings = {"host": "127.0.0.1", "port": 0, "log_dir": str(tmp_path / f"logs{len(running)}")}
        settings.update(overrides)
        server = RunningServer(appmod, appmod.Config(**settings))
        running.append(server)
        return server

    yield start
    for server in running:
        server.close()


@pytest.fixture
def stable(start_server):
    return start_server(mode="stable", version="1.0.0")


@pytest.fixture
def canary(start_server):
    return start_server(mode="canary", version="2.0.0-rc1")


@pytest.fixture
def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_path():
    return APP_PATH
