"""Routes, headers and connection handling of a real server on an ephemeral port."""

import re
import threading
import time
from datetime import datetime, timezone

import pytest

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def assert_common_headers(reply, mode):
    assert reply.headers["X-Deployed-By"] == "swiftdeploy"
    if mode == "canary":
        assert reply.headers["X-Mode"] == "canary"
    else:
        assert reply.headers["X-Mode"] is None
    assert int(reply.headers["Content-Length"]) == len(reply.body)


@pytest.mark.parametrize("mode", ["stable", "canary"])
def test_root_reports_mode_version_and_time(start_server, mode):
    server = start_server(mode=mode, version=f"9.9.9-{mode}")
    reply = server.request("GET", "/")
    assert reply.status == 200
    assert_common_headers(reply, mode)
    data = reply.json()
    assert set(data) == {"message", "mode", "version", "timestamp"}
    assert data["mode"] == mode
    assert data["version"] == f"9.9.9-{mode}"
    assert isinstance(data["message"], str) and data["message"]
    assert RFC3339_UTC.match(data["timestamp"]), data["timestamp"]
    stamp = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 5


@pytest.mark.parametrize("mode", ["stable", "canary"])
def test_healthz(start_server, mode):
    server = start_server(mode=mode, version="3.1.4")
    time.sleep(0.05)
    reply = server.request("GET", "/healthz")
    assert reply.status == 200
    assert_common_headers(reply, mode)
    data = reply.json()
    assert set(data) == {"status", "mode", "version", "uptime_seconds"}
    assert (data["status"], data["mode"], data["version"]) == ("ok", mode, "3.1.4")
    assert isinstance(data["uptime_seconds"], float)
    assert 0.05 <= data["uptime_seconds"] < 60


def test_uptime_grows(stable):
    first = stable.request("GET", "/healthz").json()["uptime_seconds"]
    time.sleep(0.1)
    second = stable.request("GET", "/healthz").json()["uptime_seconds"]
    assert second - first >= 0.09


@pytest.mark.parametrize("mode", ["stable", "canary"])
def test_metrics_content_type_and_headers(start_server, mode):
    server = start_server(mode=mode)
    reply = server.request("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert_common_headers(reply, mode)
    assert b"# TYPE http_requests_total counter" in reply.body


@pytest.mark.parametrize("path", ["/nope", "/healthz/", "/metrics.json", "/chaos/x", "/a/b?c=d", "/%2e%2e/etc"])
def test_unknown_paths_are_json_404(canary, path):
    reply = canary.request("GET", path)
    assert reply.status == 404
    assert_common_headers(reply, "canary")
    assert reply.json() == {"error": "Not Found", "path": path}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "POST"])
def test_any_method_on_an_unknown_path_is_404(stable, method):
    reply = stable.request(method, "/teapot", body=b"")
    assert reply.status == 404
    assert_common_headers(reply, "stable")
    assert reply.json() == {"error": "Not Found", "path": "/teapot"}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("GET", "/chaos", "POST"),
        ("BREW", "/chaos", "POST"),
    ],
)
def test_wrong_method_on_a_known_path_is_json_405(canary, method, path, allowed):
    reply = canary.request(method, path, body=b"")
    assert reply.status == 405
    assert_common_headers(reply, "canary")
    assert reply.headers["Allow"] == allowed
    assert reply.json() == {"error": "Method Not Allowed", "path": path, "allowed": allowed.split(", ")}


def test_query_string_does_not_change_the_route(stable):
    assert stable.request("GET", "/?from=test").status == 200
    assert stable.request("GET", "/healthz?probe=1").json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/", "/healthz", "/metrics"])
def test_head_sends_headers_without_body(stable, path):
    conn = stable.connection()
    try:
        conn.request("HEAD", path)
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) > 0
        assert resp.headers["X-Deployed-By"] == "swiftdeploy"
        assert resp.read() == b""
        # The connection must still be usable: no stray body bytes were sent.
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_keep_alive_serves_many_requests_on_one_connection(canary):
    conn = canary.connection()
    try:
        conn.request("GET", "/")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        for path in ("/healthz", "/metrics", "/missing", "/"):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.headers["Connection"] is None
            assert conn.sock is sock, f"connection was reopened before {path}"
        assert first.version == 11
    finally:
        conn.close()


def test_unread_request_body_closes_the_connection(stable):
    # The body of a request that is refused unread must not be parsed as the next request.
    reply = stable.raw(b"GET /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n"
                       b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    assert reply.status == 404
    assert reply.headers["Connection"] == "close"


def test_malformed_request_gets_json_error_with_headers(canary):
    reply = canary.raw(b"GET / HTTP/9.9\r\nHost: t\r\n\r\n")
    assert reply.status == 505
    assert_common_headers(reply, "canary")
    assert reply.json() == {"error": "Invalid HTTP version (9.9)"}


def test_server_header_hides_the_python_version(stable):
    reply = stable.request("GET", "/")
    assert reply.headers["Server"] == "swiftdeploy-app"


def test_access_log_is_written_to_log_dir(start_server, tmp_path):
    server = start_server(mode="stable", log_dir=str(tmp_path / "deep" / "logs"))
    server.request("GET", "/?hello=1")
    server.request("GET", "/absent")
    lines = (tmp_path / "deep" / "logs" / "app.log").read_text().splitlines()
    access = [line for line in lines if " GET " in line]
    assert len(access) == 2
    assert re.search(r"Z INFO 127\.0\.0\.1 GET /\?hello=1 200 \d+B \d+\.\dms$", access[0]), access[0]
    assert " GET /absent 404 " in access[1]


def test_log_lines_escape_control_characters(start_server, tmp_path):
    server = start_server(mode="stable", log_dir=str(tmp_path))
    server.raw(b"GET /a%0a\x1b[31mred HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    text = (tmp_path / "app.log").read_text()
    assert "\x1b" not in text
    assert "\\x1b[31mred 404" in text


def test_unwritable_log_dir_falls_back_to_stderr(start_server, tmp_path, capsys):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    server = start_server(mode="canary", log_dir=str(blocker / "logs"))
    assert server.request("GET", "/").status == 200
    err = capsys.readouterr().err
    assert "logging to stderr only" in err
    assert " GET / 200 " in err


def test_concurrent_requests_are_served_in_parallel(canary):
    canary.post_chaos({"mode": "slow", "duration": 0.5})
    durations = []

    def fetch():
        started = time.monotonic()
        assert canary.request("GET", "/").status == 200
        durations.append(time.monotonic() - started)

    threads = [threading.Thread(target=fetch) for _thread in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(durations) == 10
    assert min(durations) >= 0.5
    assert time.monotonic() - started < 2.0
