"""bench-promote's load client (RawConnection) against a real HTTP server on a free port: it
counts every answer the benchmark reports, so it must frame them as any HTTP/1.1 client does."""

from __future__ import annotations

import http.server
import pathlib
import socket
import sys
import threading

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "scripts"))
from bench_promote import RawConnection  # noqa: E402  pylint: disable=wrong-import-position


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    style = "length"  # the test sets it: length, chunked, close or drop

    def do_GET(self):  # noqa: N802 (http.server's name)
        style = type(self).style
        if style == "drop":
            self.close_connection = True
            return
        body = b'{"version": "1.1.0"}'
        self.send_response(200 if style != "close" else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Mode", "canary")
        if style == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:5], body[5:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        if style == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    Handler.style = "length"


def test_content_length_answers_on_one_kept_connection(server):
    conn = RawConnection(server.server_address[1], 5)
    assert conn.get() == (200, "canary", b'{"version": "1.1.0"}')
    first = conn.sock
    assert first is not None
    assert conn.get() == (200, "canary", b'{"version": "1.1.0"}')
    assert conn.sock is first  # kept alive: the second request went out on the same socket
    conn.close()


def test_a_chunked_answer_is_reassembled(server):
    Handler.style = "chunked"
    conn = RawConnection(server.server_address[1], 5)
    assert conn.get() == (200, "canary", b'{"version": "1.1.0"}')
    assert conn.get()[2] == b'{"version": "1.1.0"}'
    conn.close()


def test_connection_close_ends_the_socket_and_the_next_request_opens_one(server):
    Handler.style = "close"
    conn = RawConnection(server.server_address[1], 5)
    assert conn.get() == (500, "canary", b'{"version": "1.1.0"}')
    assert conn.sock is None
    assert conn.get()[0] == 500


def test_a_connection_closed_without_an_answer_is_an_error(server):
    Handler.style = "drop"
    conn = RawConnection(server.server_address[1], 5)
    with pytest.raises(ConnectionResetError, match="before a response head"):
        conn.get()


def test_nothing_listening_is_an_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        RawConnection(port, 2).get()
