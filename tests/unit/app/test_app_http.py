"""The HTTP/1.1 layer over real sockets: request parsing, limits, keep-alive, pipelining, timeouts.

The server parses requests itself (parse_head), so what it accepts and refuses is pinned here,
byte for byte, with raw sockets; a few cases also call parse_head directly.
"""

import json
import socket
import threading
import time

import pytest


class RawConnection:
    """A client socket that sends bytes verbatim and reads responses one by one (pipelining-safe)."""

    def __init__(self, server, timeout=5):
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def response(self, method="GET"):
        """Read one response: (status, {lower-case header: value}, body)."""
        status_line = self.file.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = self.file.readline()
            assert line.endswith(b"\r\n"), line
            if line == b"\r\n":
                break
            name, _colon, value = line.decode("latin-1").partition(":")
            headers[name.lower()] = value.strip()
        length = 0 if method == "HEAD" or status in (100, 204, 304) else int(headers["content-length"])
        return status, headers, self.file.read(length)

    def closed_by_server(self, wait=5):
        """Whether the server closes the connection (EOF) within `wait` seconds, all responses read.
        Leaves the connection unusable when it is not closed."""
        self.sock.settimeout(wait)
        try:
            return self.file.read(1) == b""
        except TimeoutError:
            return False

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw_connection():
    opened = []

    def connect(server, timeout=5):
        connection = RawConnection(server, timeout)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.close()


def exchange(server, connect, data, method="GET"):
    """Send `data` on a new connection and read one response: (status, headers, body, connection)."""
    connection = connect(server)
    connection.send(data)
    status, headers, body = connection.response(method)
    return status, headers, body, connection


def closed(connection):
    return connection.closed_by_server()


def kept_open(connection):
    """The connection is still open and serves another request."""
    connection.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    return connection.response()[0] == 200


def error_of(body):
    return json.loads(body)["error"]


# -- malformed requests: JSON error with the usual headers, then the connection is closed ----------

@pytest.mark.parametrize(
    ("request_line", "status", "message"),
    [
        (b"GET /", 400, "malformed request line 'GET /': expected METHOD SP target SP HTTP/1.1"),
        (b"GET  / HTTP/1.1", 400, "malformed request line 'GET  / HTTP/1.1': expected METHOD SP target SP HTTP/1.1"),
        (b"GET / HTTP/1.1 x", 400, "malformed request line 'GET / HTTP/1.1 x': expected METHOD SP target SP HTTP/1.1"),
        (b"GET / http/1.1", 400, "malformed HTTP version 'http/1.1'"),
        (b"GET / HTTP/1", 400, "malformed HTTP version 'HTTP/1'"),
        (b"GET / HTTP/2.0", 505, "Invalid HTTP version (2.0)"),
        (b"GET / HTTP/0.9", 505, "Invalid HTTP version (0.9)"),
        (b"G(T / HTTP/1.1", 400, "malformed method 'G(T'"),
        (b"GET nope HTTP/1.1", 400, "malformed request target 'nope': expected a path beginning with '/'"),
        (b"GET /a\tb HTTP/1.1", 400, "request target contains a control character"),
        (b"GET /a\nb HTTP/1.1", 400, "request target contains a control character"),
        (b"GET /a\x00b HTTP/1.1", 400, "request target contains a control character"),
    ],
)
def test_malformed_request_lines_are_refused(canary, raw_connection, request_line, status, message):
    status_, headers, body, connection = exchange(canary, raw_connection, request_line + b"\r\nHost: t\r\n\r\n")
    assert (status_, error_of(body)) == (status, message)
    assert headers["x-deployed-by"] == "swiftdeploy"
    assert headers["x-mode"] == "canary"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert closed(connection)
    assert canary.request("GET", "/healthz").status == 200


@pytest.mark.parametrize(
    ("header_line", "message"),
    [
        (b"Host t", "header line without a colon: 'Host t'"),
        (b"X-A : 1", "malformed header line: 'X-A : 1'"),
        (b": 1", "malformed header line: ': 1'"),
        (b"X(A): 1", "malformed header line: 'X(A): 1'"),
        (b" folded", "obsolete line folding (a header line beginning with whitespace): ' folded'"),
        (b"X-A: a\x00b", "malformed header line: 'X-A: a\\x00b'"),
        (b"X-A: a\nb", "malformed header line: 'X-A: a\\nb'"),
        (b"X-A: a\rb", "malformed header line: 'X-A: a\\rb'"),
    ],
)
def test_malformed_header_lines_are_400(stable, raw_connection, header_line, message):
    status, headers, body, connection = exchange(stable, raw_connection, b"GET / HTTP/1.1\r\nHost: t\r\n" + header_line
                                                 + b"\r\n\r\n")
    assert (status, error_of(body)) == (400, message)
    assert headers["connection"] == "close" and closed(connection)


def test_header_values_may_hold_tabs_and_latin_1(stable, raw_connection):
    status, _headers, _body, connection = exchange(stable, raw_connection,
                                                   b"GET / HTTP/1.1\r\nHost: t\r\nX-A: \ta\tb \xe9\t \r\n\r\n")
    assert status == 200 and kept_open(connection)


@pytest.mark.parametrize(("host_lines", "version"), [(b"", b"1.1"), (b"Host: a\r\nHost: b\r\n", b"1.1"),
                                                     (b"Host: a\r\nhost: a\r\n", b"1.0")])
def test_http_1_1_needs_exactly_one_host(stable, raw_connection, host_lines, version):
    status, _headers, body, connection = exchange(
        stable, raw_connection, b"GET / HTTP/" + version + b"\r\n" + host_lines + b"\r\n")
    assert (status, error_of(body)) == (400, "an HTTP/1.1 request needs exactly one Host header")
    assert closed(connection)


def test_http_1_0_without_host_is_served(stable, raw_connection):
    status, headers, body, connection = exchange(stable, raw_connection, b"GET / HTTP/1.0\r\n\r\n")
    assert status == 200
    assert json.loads(body)["mode"] == "stable"
    assert headers["connection"] == "close" and closed(connection)


def test_parse_errors_are_counted_under_bounded_labels(stable, raw_connection):
    exchange(stable, raw_connection, b"BAD\r\n\r\n")
    assert stable.value("http_requests_total", method="other", path="other", status_code="400") == 1


# -- limits ---------------------------------------------------------------------------------------

def test_too_many_headers_is_431(appmod, stable, raw_connection):
    lines = b"".join(b"X-%d: v\r\n" % index for index in range(appmod.MAX_HEADERS))
    status, _headers, _body, _connection = exchange(stable, raw_connection, b"GET / HTTP/1.1\r\nHost: t\r\n" + lines
                                                    + b"\r\n")
    assert status == 431
    status, _headers, body, connection = exchange(stable, raw_connection, b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert status == 400, "exactly MAX_HEADERS header lines are accepted (then Host is missing)"


def test_oversized_header_block_is_431_and_closes(appmod, stable, raw_connection):
    big = b"X-Big: " + b"a" * appmod.MAX_HEAD_BYTES + b"\r\n"
    status, headers, body, connection = exchange(
        stable, raw_connection, b"GET / HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n")
    assert (status, error_of(body)) == (431, f"request header block longer than {appmod.MAX_HEAD_BYTES} bytes")
    assert headers["connection"] == "close" and closed(connection)
    assert stable.request("GET", "/").status == 200


def test_oversized_request_line_is_414(appmod, stable, raw_connection):
    status, _headers, body, connection = exchange(
        stable, raw_connection, b"GET /" + b"a" * appmod.MAX_HEAD_BYTES + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, error_of(body)) == (414, f"request line longer than {appmod.MAX_HEAD_BYTES} bytes")
    assert closed(connection)


def test_head_just_under_the_limit_is_served(appmod, stable, raw_connection):
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: \r\n\r\n"
    pad = b"a" * (appmod.MAX_HEAD_BYTES - len(head))
    status, _headers, _body, connection = exchange(stable, raw_connection, head.replace(b"X-Pad: ", b"X-Pad: " + pad))
    assert status == 200 and kept_open(connection)


# -- keep-alive and Connection --------------------------------------------------------------------

def test_connection_close_is_honoured(stable, raw_connection):
    status, headers, _body, connection = exchange(stable, raw_connection,
                                                  b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 200
    assert headers["connection"] == "close"
    assert closed(connection)


def test_connection_tokens_are_a_case_insensitive_list(stable, raw_connection):
    status, headers, _body, connection = exchange(stable, raw_connection,
                                                  b"GET / HTTP/1.1\r\nHost: t\r\nConnection: TE, Close\r\n\r\n")
    assert status == 200 and headers["connection"] == "close" and closed(connection)


def test_http_1_0_keep_alive_is_honoured(stable, raw_connection):
    connection = raw_connection(stable)
    for _attempt in range(3):
        connection.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _body = connection.response()
        assert status == 200
        assert headers["connection"] == "keep-alive"
    connection.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    status, headers, _body = connection.response()
    assert headers["connection"] == "close"
    assert connection.closed_by_server()


def test_http_1_1_keeps_the_connection_without_a_connection_header(stable, raw_connection):
    connection = raw_connection(stable)
    for path in (b"/", b"/healthz", b"/metrics", b"/nope"):
        connection.send(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        _status, headers, _body = connection.response()
        assert "connection" not in headers


def test_empty_lines_before_a_request_are_ignored(stable, raw_connection):
    connection = raw_connection(stable)
    connection.send(b"\r\n\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert connection.response()[0] == 200


def test_absolute_form_target_is_routed_by_its_path(stable, raw_connection):
    status, _headers, body, _connection = exchange(stable, raw_connection,
                                                   b"GET http://app:3000/healthz?x=1 HTTP/1.1\r\nHost: app\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"


# -- pipelining -----------------------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order(canary, raw_connection):
    chaos = b'{"mode": "error", "rate": 0}'
    connection = raw_connection(canary)
    connection.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                    b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
                    b"POST /chaos HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(chaos), chaos)
                    + b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n"
                    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _headers, body = connection.response()
    assert (status, json.loads(body)["status"]) == (200, "ok")
    status, headers, body = connection.response("HEAD")
    assert (status, body) == (200, b"") and int(headers["content-length"]) > 0
    status, _headers, body = connection.response()
    assert (status, json.loads(body)) == (200, {"chaos": {"mode": "error", "rate": 0}})
    status, _headers, body = connection.response()
    assert (status, json.loads(body)["path"]) == (404, "/missing")
    status, headers, body = connection.response()
    assert status == 200 and headers["connection"] == "close"
    assert connection.closed_by_server(), "nothing after the Connection: close request is answered"


def test_pipelined_requests_split_across_packets(stable, raw_connection):
    connection = raw_connection(stable)
    data = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" * 3
    for index in range(0, len(data), 7):
        connection.send(data[index:index + 7])
        time.sleep(0.005)
    assert [connection.response()[0] for _index in range(3)] == [200, 200, 200]


def test_many_pipelined_requests_from_a_client_that_reads_late(stable, raw_connection):
    connection = raw_connection(stable)
    connection.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" * 500)
    time.sleep(0.2)
    assert [connection.response()[0] for _index in range(500)] == [200] * 500


# -- request bodies -------------------------------------------------------------------------------

def test_chunked_body_on_an_application_route_is_not_taken_for_a_request(stable, raw_connection):
    # The chunk would look like a request line if it were parsed as one.
    status, headers, _body, connection = exchange(stable, raw_connection,
                                                  b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                  b"1c\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n\r\n0\r\n\r\n")
    assert status == 200
    assert headers["connection"] == "close" and closed(connection)


def test_chunked_body_with_a_content_length_is_400(canary, raw_connection):
    status, _headers, body, connection = exchange(
        canary, raw_connection, b"POST /chaos HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                b"Content-Length: 5\r\n\r\n0\r\n\r\n", "POST")
    assert status == 400 and "Transfer-Encoding is not supported" in error_of(body)
    assert closed(connection)


@pytest.mark.parametrize("value", ["\u00b2", "\u0661"])
def test_non_ascii_digits_in_content_length_are_400(canary, raw_connection, value):
    status, _headers, body, _connection = exchange(
        canary, raw_connection, b"POST /chaos HTTP/1.1\r\nHost: t\r\nContent-Length: " + value.encode("utf-8")
        + b"\r\n\r\n", "POST")
    assert status == 400
    assert error_of(body).startswith("Content-Length header must be a non-negative integer")


def test_absurdly_long_content_length_is_413_not_a_crash(canary, raw_connection):
    status, _headers, body, connection = exchange(
        canary, raw_connection, b"POST /chaos HTTP/1.1\r\nHost: t\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        "POST")
    assert status == 413
    assert error_of(body) == ("request body too large: Content-Length 99999999999999999999... exceeds the limit "
                              "of 4096 bytes")
    assert closed(connection)


def test_content_length_with_leading_zeros(canary, raw_connection):
    body = b'{"mode": "recover"}'
    request = b"POST /chaos HTTP/1.1\r\nHost: t\r\nContent-Length: 00%d\r\n\r\n%s" % (len(body), body)
    status, _headers, reply, connection = exchange(canary, raw_connection, request, "POST")
    assert (status, json.loads(reply)) == (200, {"chaos": {"mode": "none"}})
    assert kept_open(connection)


def test_expect_100_continue_gets_an_interim_response(canary, raw_connection):
    body = b'{"mode": "recover"}'
    connection = raw_connection(canary)
    connection.send(b"POST /chaos HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                    % len(body))
    assert connection.response() == (100, {}, b"")
    connection.send(body)
    status, _headers, reply = connection.response()
    assert (status, json.loads(reply)) == (200, {"chaos": {"mode": "none"}})


# -- timeouts and concurrency ---------------------------------------------------------------------

def test_idle_keep_alive_connection_is_closed_after_the_timeout(start_server, raw_connection):
    server = start_server(mode="stable", socket_timeout=0.5)
    connection = raw_connection(server)
    connection.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert connection.response()[0] == 200
    started = time.monotonic()
    assert connection.closed_by_server()
    assert 0.45 <= time.monotonic() - started < 1.5


def test_a_client_stalled_in_a_request_head_is_dropped_without_blocking_others(start_server, raw_connection):
    server = start_server(mode="stable", socket_timeout=0.5)
    stalled = raw_connection(server)
    stalled.send(b"GET / HTTP/1.1\r\nHost:")
    started = time.monotonic()
    for _attempt in range(3):
        assert server.request("GET", "/healthz").status == 200
    assert time.monotonic() - started < 0.3
    assert stalled.closed_by_server()
    assert time.monotonic() - started < 1.5


def test_a_client_that_never_reads_its_responses_is_dropped(start_server):
    # Pipelined requests whose responses are never read: once the kernel buffers are full the
    # server waits socket_timeout for the client to read, then drops the connection.
    server = start_server(mode="stable", socket_timeout=0.5)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    request = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
    sent = 0
    try:
        with sock:
            try:
                for _batch in range(100):
                    sock.sendall(request * 100)
                    sent += 100
            except OSError:
                pass  # dropped while we were still sending
            time.sleep(1.5)
            try:
                while sock.recv(65536):
                    pass  # what the server had sent before it gave up, then EOF
            except ConnectionResetError:
                pass  # or a reset: either way the connection is gone (a hang fails with TimeoutError)
    finally:
        assert server.request("GET", "/healthz").status == 200
    answered = server.value("http_requests_total", method="GET", path="/metrics", status_code="200")
    assert answered < sent, f"all {sent} requests were answered: the server never stopped reading"


def test_hundreds_of_concurrent_connections(stable):
    statuses = []
    lock = threading.Lock()

    def fetch():
        conn = stable.connection()
        try:
            for _attempt in range(5):
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                with lock:
                    statuses.append(response.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=fetch) for _thread in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 1000


# -- parse_head, without sockets ------------------------------------------------------------------

def test_parse_head_fields(appmod):
    request = appmod.parse_head(b"POST /chaos?x=1 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nx-a:  2 \r\n"
                                b"Content-Length: 3\r\n\r\n")
    assert (request.method, request.target, request.path, request.version) == ("POST", "/chaos?x=1", "/chaos", (1, 1))
    assert request.headers == {"host": ["t"], "x-a": ["1", "2"], "content-length": ["3"]}
    assert request.header("x-a") == "1, 2" and request.header("absent") is None
    assert request.keep_alive and request.has_body


@pytest.mark.parametrize(
    ("head", "keep_alive", "has_body"),
    [
        (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", True, False),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", True, False),
        (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, close\r\n\r\n", False, False),
        (b"GET / HTTP/1.0\r\n\r\n", False, False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True, False),
        (b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", True, False),
        (b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", True, True),
    ],
)
def test_parse_head_connection_and_body(appmod, head, keep_alive, has_body):
    request = appmod.parse_head(head)
    assert (request.keep_alive, request.has_body) == (keep_alive, has_body)


def test_parse_head_of_blank_lines_is_none(appmod):
    assert appmod.parse_head(b"\r\n\r\n") is None
