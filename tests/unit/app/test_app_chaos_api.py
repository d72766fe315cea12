"""POST /chaos over HTTP: permissions, validation, body limits and the effect of each mode."""

import json
import socket
import threading
import time

import pytest


def timed(call, *args, **kwargs):
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


# -- permissions --------------------------------------------------------------

def test_a_canary_switched_to_stable_ends_its_chaos_and_refuses_more(canary):
    """set_mode is what SIGHUP with MODE_FILE does (test_app_lifecycle runs that for real)."""
    assert canary.post_chaos({"mode": "error", "rate": 1}).status == 200
    assert canary.request("GET", "/").status == 500
    assert canary.server.set_mode("stable") is True
    reply = canary.request("GET", "/")
    assert reply.status == 200 and reply.json()["mode"] == "stable" and "X-Mode" not in reply.headers
    assert canary.value("chaos_active") == 0
    assert canary.value("app_mode") == 0
    assert canary.post_chaos({"mode": "error", "rate": 1}).status == 403
    assert canary.server.set_mode("stable") is False
    assert canary.server.set_mode("canary") is True
    assert canary.request("GET", "/").headers["X-Mode"] == "canary"


@pytest.mark.parametrize("payload", [{"mode": "slow", "duration": 1}, {"mode": "error", "rate": 1},
                                     {"mode": "recover"}, b"not json"])
def test_stable_refuses_chaos_with_403(stable, payload):
    reply = stable.post_chaos(payload)
    assert reply.status == 403
    assert reply.headers["X-Deployed-By"] == "swiftdeploy"
    data = reply.json()
    assert data["mode"] == "stable"
    assert "stable mode" in data["error"] and "canary mode accepts" in data["error"]
    assert stable.request("GET", "/").status == 200
    assert stable.value("chaos_active") == 0


# -- validation ---------------------------------------------------------------

@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"mode": "explode"}',
        b'{"duration": 1}',
        b'{"mode": "slow", "duration": true}',
        b'{"mode": "slow", "duration": 31}',
        b'{"mode": "error", "rate": 1.01}',
        b'{"mode": "error", "rate": NaN}',
        b'{"mode": "error", "rate": "1"}',
        b"",
    ],
)
def test_invalid_bodies_get_400_with_the_parse_chaos_message(canary, appmod, body):
    with pytest.raises(ValueError) as expected:
        appmod.parse_chaos(body)
    reply = canary.post_chaos(body)
    assert reply.status == 400
    assert reply.headers["X-Mode"] == "canary"
    assert reply.json() == {"error": str(expected.value)}
    assert canary.value("chaos_active") == 0


def test_400_message_names_field_value_and_range(canary):
    reply = canary.post_chaos({"mode": "error", "rate": 7})
    assert reply.json()["error"] == "field 'rate' must be a fraction from 0 to 1; got 7 (out of range)"


def post_raw(server, headers, body=b""):
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return server.raw(f"POST /chaos HTTP/1.1\r\nHost: t\r\n{head}\r\n".encode() + body, method="POST")


def test_missing_content_length_is_411(canary):
    reply = post_raw(canary, [("Connection", "close")])
    assert reply.status == 411
    assert reply.json() == {"error": "Content-Length header is required for POST /chaos"}


def test_chunked_body_is_411(canary):
    reply = post_raw(canary, [("Transfer-Encoding", "chunked")], b'13\r\n{"mode": "recover"}\r\n0\r\n\r\n')
    assert reply.status == 411
    assert "Content-Length" in reply.json()["error"]
    assert reply.headers["Connection"] == "close"


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "12.0", "0x10", "+7"])
def test_non_integer_content_length_is_400(canary, value):
    reply = post_raw(canary, [("Content-Length", value)], b'{"mode": "recover"}')
    assert reply.status == 400
    assert reply.json() == {"error": f"Content-Length header must be a non-negative integer, got '{value}'"}
    assert reply.headers["Connection"] == "close"


def test_conflicting_content_lengths_are_400(canary):
    reply = post_raw(canary, [("Content-Length", "19"), ("Content-Length", "5")], b'{"mode": "recover"}')
    assert reply.status == 400
    assert reply.json()["error"] == "Content-Length header must be a non-negative integer, got '19, 5'"


def test_huge_content_length_is_refused_without_reading_the_body(canary):
    # Only the headers are sent: an answer proves the server did not wait for 10 MB.
    reply, seconds = timed(post_raw, canary, [("Content-Length", str(10 * 1024 * 1024))])
    assert seconds < 1
    assert reply.status == 413
    assert reply.json() == {"error": "request body too large: Content-Length 10485760 exceeds the limit of "
                                     "4096 bytes"}
    assert reply.headers["Connection"] == "close"


def test_body_of_exactly_the_limit_is_read(canary):
    body = b'{"mode": "recover"}'.ljust(4096)
    reply = canary.post_chaos(body)
    assert reply.status == 200
    assert canary.post_chaos(body + b" ").status == 413


def test_stalled_body_does_not_block_others_and_times_out(start_server):
    server = start_server(mode="canary", socket_timeout=1.0)
    stalled = socket.create_connection((server.host, server.port), timeout=10)
    try:
        stalled.sendall(b"POST /chaos HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n{\"mode\":")
        time.sleep(0.1)
        for path in ("/healthz", "/metrics", "/"):
            reply, seconds = timed(server.request, "GET", path)
            assert reply.status == 200
            assert seconds < 0.3, f"{path} took {seconds:.3f}s"
        response = stalled.makefile("rb")
        started = time.monotonic()
        status_line = response.readline()
        waited = time.monotonic() - started
        assert status_line.startswith(b"HTTP/1.1 408 "), status_line
        assert waited < 3
        raw = response.read()
        assert b"timed out after 1 s waiting for the 50-byte request body" in raw
        assert b"X-Deployed-By: swiftdeploy" in raw
    finally:
        stalled.close()
    assert server.value("chaos_active") == 0


def test_client_closing_mid_body_gets_400(canary):
    with socket.create_connection((canary.host, canary.port), timeout=10) as sock:
        sock.sendall(b"POST /chaos HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n{\"mode\":")
        sock.shutdown(socket.SHUT_WR)
        data = sock.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"request body ended after 8 of 50 bytes" in data


# -- effects --------------------------------------------------------------------

def test_slow_chaos_delays_application_requests_only(canary):
    reply = canary.post_chaos({"mode": "slow", "duration": 1})
    assert reply.status == 200
    assert reply.json() == {"chaos": {"mode": "slow", "duration": 1}}

    slow = {}

    def fetch_root():
        slow["reply"], slow["seconds"] = timed(canary.request, "GET", "/")

    thread = threading.Thread(target=fetch_root)
    thread.start()
    time.sleep(0.05)
    for path in ("/healthz", "/metrics"):
        other, seconds = timed(canary.request, "GET", path)
        assert other.status == 200
        assert seconds < 0.3, f"{path} took {seconds:.3f}s while a slow request was in flight"
    thread.join(timeout=5)
    assert slow["reply"].status == 200
    assert slow["seconds"] >= 1.0
    assert canary.value("chaos_active") == 1

    _reply, seconds = timed(canary.request, "GET", "/unknown")
    assert seconds >= 1.0

    recovered, seconds = timed(canary.post_chaos, {"mode": "recover"})
    assert seconds < 0.3
    assert recovered.json() == {"chaos": {"mode": "none"}}
    reply, seconds = timed(canary.request, "GET", "/")
    assert reply.status == 200 and seconds < 0.3


def test_error_chaos_rate_1_fails_application_routes_only(canary):
    assert canary.post_chaos({"mode": "error", "rate": 1}).json() == {"chaos": {"mode": "error", "rate": 1}}
    for _attempt in range(5):
        reply = canary.request("GET", "/")
        assert reply.status == 500
        assert reply.headers["X-Deployed-By"] == "swiftdeploy"
        assert reply.headers["X-Mode"] == "canary"
        data = reply.json()
        assert data["error"] == "chaos: injected error"
    assert canary.request("GET", "/missing").status == 500
    assert canary.request("GET", "/healthz").status == 200
    assert canary.request("GET", "/metrics").status == 200
    assert canary.value("chaos_active") == 2
    assert canary.value("http_requests_total", method="GET", path="/", status_code="500") == 5

    assert canary.post_chaos({"mode": "recover"}).status == 200
    assert canary.request("GET", "/").status == 200
    assert canary.value("chaos_active") == 0


def test_error_chaos_rate_0_fails_nothing(canary):
    canary.post_chaos({"mode": "error", "rate": 0})
    assert [canary.request("GET", "/").status for _attempt in range(20)] == [200] * 20
    assert canary.value("chaos_active") == 2


def test_error_chaos_partial_rate_fails_some(canary):
    canary.post_chaos({"mode": "error", "rate": 0.5})
    statuses = [canary.request("GET", "/").status for _attempt in range(200)]
    assert set(statuses) == {200, 500}
    assert 50 <= statuses.count(500) <= 150


def test_later_chaos_replaces_earlier_chaos(canary):
    canary.post_chaos({"mode": "error", "rate": 1})
    reply = canary.post_chaos({"mode": "slow", "duration": 0})
    assert reply.json() == {"chaos": {"mode": "slow", "duration": 0}}
    assert canary.request("GET", "/").status == 200
    assert canary.value("chaos_active") == 1


def test_chaos_endpoint_itself_is_never_failed(canary):
    canary.post_chaos({"mode": "error", "rate": 1})
    for _attempt in range(10):
        reply = canary.post_chaos({"mode": "error", "rate": 1})
        assert reply.status == 200
        assert json.loads(reply.body) == {"chaos": {"mode": "error", "rate": 1}}


def test_oversized_body_that_is_sent_anyway_still_gets_the_413(canary):
    # The server answers without reading, then discards what keeps arriving instead of closing
    # with unread input (which resets the connection), so a client that goes on sending the body
    # before it reads the answer, as nginx does, still gets the 413.
    chunk = b" " * (64 * 1024)
    with socket.create_connection((canary.host, canary.port), timeout=10) as sock:
        sock.sendall(b"POST /chaos HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (8 * len(chunk)))
        sock.sendall(chunk)
        time.sleep(0.3)
        for _chunk in range(7):
            sock.sendall(chunk)
        data = sock.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 413 "), data[:80]
    assert b"exceeds the limit of 4096 bytes" in data
