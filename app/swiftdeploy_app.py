"""SwiftDeploy demo service.

A small HTTP API that runs as the stable or the canary release behind nginx. It reports
its mode and version, exposes Prometheus metrics, and in canary mode accepts chaos
instructions (slow down or fail application requests) so a rollout's safety checks can
be exercised.

Standard library only (Python 3.11+): the image must build and run without a package registry.

Environment: MODE (stable|canary), APP_VERSION, APP_PORT, LOG_DIR, and MODE_FILE: when set, the
mode is read from that file (its first word) instead of MODE, and read again on SIGHUP, so a
canary that passed its judgement becomes the stable release in place, without a restart.
Routes: GET /, GET /healthz, GET /metrics, POST /chaos (canary only).

Design
------
One process, one thread, one asyncio event loop, and a small strict HTTP/1.1 parser written
for this service (parse_head). Each connection is a coroutine (Connection.serve) that reads a
request head, answers it, and loops while the connection is kept alive. Slow chaos is an
asyncio.sleep, so a slowed request holds nothing but its own connection; every other step is
short and waits only on the network, so requests are served in arrival order, each in well under
a tenth of a millisecond of CPU.

Why not http.server's ThreadingHTTPServer, which this service used before: it runs a thread per
connection, and nginx keeps up to 128 upstream connections open to the app. Under load, dozens
of threads take turns on the GIL, which a running thread hands over only every 5 ms
(sys.getswitchinterval()), so a ready request waits behind a convoy of others; and
BaseHTTPRequestHandler parses every header block with the email package. Through nginx on a
2-core host (`make bench-app`), GET / at 64 connections had a p99 of 80-190 ms and cost the app
about 270 us of CPU per request; the event loop costs about 90 us, doubles the throughput and
brings p99 under 50 ms. Measured and rejected: threads with a 0.5 ms switch interval and a
light header parser (p99 60-110 ms, 200 us a request); two event-loop workers sharing the port
with SO_REUSEPORT (no better through nginx, whose path then costs more CPU than the app, and the
workers would need merged metrics and a shared chaos state).

Per request, the hot path avoids what the profile showed: no timer per request (one sweep closes
connections idle for socket_timeout), access lines written directly rather than through logging
(AppLog), times formatted once a second, the whole response in one write.

The parser accepts what nginx, curl and Python's clients send and refuses the rest with a JSON
error and a closed connection: a request line `METHOD SP target SP HTTP/1.x` (505 for other
versions), header lines `name: value` (no whitespace before the colon, no line folding, no
control characters), at most MAX_HEADERS headers in MAX_HEAD_BYTES bytes (431, or 414 for the
request line), and exactly one Host on HTTP/1.1. Lines end in CRLF. Keep-alive follows HTTP/1.1
(on unless `Connection: close`) and HTTP/1.0 (off unless `Connection: keep-alive`). Only POST
/chaos reads a body, and only with a Content-Length; any other request that announces a body
is answered and its connection closed, so the body is never taken for the next request.
Pipelined requests are answered in order; a client that stops reading its answers is dropped
after socket_timeout.
"""

import asyncio
import bisect
import collections
import dataclasses
import json
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

MODES = ("stable", "canary")
CHAOS_MODES = ("slow", "error", "recover")
CHAOS_CODES = {"none": 0, "slow": 1, "error": 2}
MAX_SLOW_SECONDS = 30
MAX_BODY_BYTES = 4096
SOCKET_TIMEOUT_SECONDS = 5.0
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024
MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 100
LISTEN_BACKLOG = 128
STOP_GRACE_SECONDS = 0.5  # for requests in flight at SIGTERM to finish
CANCEL_GRACE_SECONDS = 0.2  # for the cancelled rest to close

# /metrics?ago=N answers with the counters as they were at least N seconds ago, from a snapshot
# the app takes every SNAPSHOT_SECONDS and keeps for HISTORY_SECONDS: a canary judge then gets a
# window of the last N seconds at once instead of scraping, waiting N seconds and scraping again.
SNAPSHOT_SECONDS = 1.0
HISTORY_SECONDS = 600

KNOWN_PATHS = ("/", "/healthz", "/metrics", "/chaos")
KNOWN_METHODS = ("GET", "POST", "HEAD")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SERVER_NAME = "swiftdeploy-app"


def read_mode_file(path):
    """The mode a MODE_FILE names (its first word), or ValueError naming the file and the fix."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(256)
    except OSError as exc:
        raise ValueError(f"MODE_FILE {path!r} cannot be read ({exc.strerror or exc}); write 'stable' or "
                         f"'canary' in it, or unset MODE_FILE to take MODE") from None
    words = text.split()
    mode = words[0].lower() if words else ""
    if mode not in MODES:
        raise ValueError(f"MODE_FILE {path!r} must hold 'stable' or 'canary', got {text[:40]!r}")
    return mode


@dataclass(frozen=True)
class Config:
    mode: str = "stable"
    version: str = "1.0.0"
    port: int = 3000
    host: str = "0.0.0.0"
    log_dir: str = "/app/logs"
    socket_timeout: float = SOCKET_TIMEOUT_SECONDS
    mode_file: str = ""

    @classmethod
    def from_env(cls, env):
        mode_file = env.get("MODE_FILE", "").strip()
        if mode_file:
            mode = read_mode_file(mode_file)
        else:
            mode = env.get("MODE", "stable").strip().lower() or "stable"
            if mode not in MODES:
                raise ValueError(f"MODE must be 'stable' or 'canary', got {mode!r}")
        raw_port = env.get("APP_PORT", "3000").strip() or "3000"
        try:
            port = int(raw_port)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ValueError(f"APP_PORT must be an integer from 0 to 65535, got {raw_port!r}")
        return cls(
            mode=mode,
            version=env.get("APP_VERSION", "1.0.0").strip() or "1.0.0",
            port=port,
            log_dir=env.get("LOG_DIR", "/app/logs"),
            mode_file=mode_file,
        )


# ---------------------------------------------------------------------------
# Chaos input validation and state
# ---------------------------------------------------------------------------

def _type_name(value):
    # bool is checked first because it is a subclass of int in Python but not a number in JSON.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number_field(data, field, mode, high, meaning):
    allowed = f"{meaning} from 0 to {high}"
    if field not in data:
        raise ValueError(f"field '{field}' is required when mode is {mode}: {allowed}")
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"field '{field}' must be {allowed}; got {_show(value)} ({_type_name(value)})")
    if not math.isfinite(value):
        raise ValueError(f"field '{field}' must be {allowed}; got {_show(value)} (not a finite number)")
    if not 0 <= value <= high:
        raise ValueError(f"field '{field}' must be {allowed}; got {_show(value)} (out of range)")
    return value


def parse_chaos(body):
    """Validate a POST /chaos body and return {"mode": ..., plus its one parameter}.

    Raises ValueError with a message meant for the API client.
    """
    if not body.strip():
        raise ValueError('request body is empty; expected a JSON object such as {"mode": "recover"}')
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("request body is not valid UTF-8; expected a JSON object") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "expected a JSON object"
        ) from None
    except RecursionError:
        raise ValueError("request body is not valid JSON (nested too deeply); expected a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError(f"request body must be a JSON object, got {_type_name(data)}")

    allowed_modes = ", ".join(CHAOS_MODES)
    if "mode" not in data:
        raise ValueError(f"field 'mode' is required; allowed values: {allowed_modes}")
    mode = data["mode"]
    if not isinstance(mode, str) or mode not in CHAOS_MODES:
        raise ValueError(f"field 'mode' must be one of {allowed_modes}; got {_show(mode)}")

    param = {"slow": "duration", "error": "rate", "recover": None}[mode]
    allowed_fields = ["mode"] + ([param] if param else [])
    unknown = sorted(key for key in data if key not in allowed_fields)
    if unknown:
        names = ", ".join(f"'{key}'" for key in unknown)
        noun = "field" if len(unknown) == 1 else "fields"
        raise ValueError(
            f"unknown {noun} {names} for mode {mode}; allowed fields: {', '.join(allowed_fields)}"
        )

    if mode == "slow":
        return {"mode": "slow", "duration": _number_field(data, "duration", mode, MAX_SLOW_SECONDS,
                                                          "a number of seconds")}
    if mode == "error":
        return {"mode": "error", "rate": _number_field(data, "rate", mode, 1, "a fraction")}
    return {"mode": "recover"}


class ChaosState:
    """The chaos currently injected into application requests.

    The server only touches it from its event loop; the lock keeps it safe for other callers.
    """

    def __init__(self, rng=None):
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self._spec = {"mode": "none"}

    def apply(self, spec):
        with self._lock:
            self._spec = {"mode": "none"} if spec["mode"] == "recover" else dict(spec)
            return dict(self._spec)

    def snapshot(self):
        with self._lock:
            return dict(self._spec)

    @property
    def code(self):
        return CHAOS_CODES[self.snapshot()["mode"]]

    def draw(self):
        """Decide the fate of one application request: (seconds to sleep, whether to fail)."""
        spec = self._spec  # replaced whole by apply(), never mutated: no copy needed to read it
        if spec["mode"] == "slow":
            return float(spec["duration"]), False
        if spec["mode"] == "error":
            return 0.0, self._rng.random() < spec["rate"]
        return 0.0, False


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

def label_path(path):
    path = path.split("?", 1)[0]
    # Anything not routed is folded into one series so scanners cannot explode cardinality.
    return path if path in KNOWN_PATHS else "other"


def label_method(method):
    return method if method in KNOWN_METHODS else "other"


def _escape(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels):
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items()) + "}"


def _number(value):
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Metrics:
    """Request counters and latency histograms, rendered in Prometheus text format 0.0.4."""

    def __init__(self, mode, version, clock=time.monotonic):
        self.mode = mode
        self.version = version
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._requests = {}
        # (method, path) -> [count per bucket, not cumulative (the last one is +Inf), sum]
        self._latency = {}
        # (monotonic time, requests, latency) every SNAPSHOT_SECONDS, oldest first
        self._snapshots = collections.deque()

    def uptime(self):
        return max(0.0, self._clock() - self._started)

    def take_snapshot(self):
        """Keep the counters as they are now (the app calls this every SNAPSHOT_SECONDS)."""
        now = self._clock()
        with self._lock:
            requests = dict(self._requests)
            latency = {route: (list(counts), total) for route, (counts, total) in self._latency.items()}
        self._snapshots.append((now, requests, latency))
        while self._snapshots and now - self._snapshots[0][0] > HISTORY_SECONDS + SNAPSHOT_SECONDS:
            self._snapshots.popleft()

    def snapshot_ago(self, seconds):
        """(age, requests, latency) of the newest snapshot at least `seconds` old, or None."""
        now = self._clock()
        for taken, requests, latency in reversed(self._snapshots):
            if now - taken >= seconds:
                return now - taken, requests, latency
        return None

    def observe(self, method, path, status, seconds):
        method, path = label_method(method), label_path(path)
        key = (method, path, str(status))
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            series = self._latency.get((method, path))
            if series is None:
                series = self._latency[(method, path)] = [[0] * (len(BUCKETS) + 1), 0.0]
            # bisect_left finds the first bound >= seconds: bucket `le` counts seconds <= le.
            series[0][bisect.bisect_left(BUCKETS, seconds)] += 1
            series[1] += seconds

    def render(self, chaos_code=0, ago=None):
        """The metrics now, or with `ago` (a snapshot_ago() result) as they were then: the
        counters and app_uptime_seconds of that moment, and app_snapshot_age_seconds."""
        if ago is None:
            with self._lock:
                requests = sorted(self._requests.items())
                latency = sorted((route, (list(counts), total)) for route, (counts, total) in self._latency.items())
            uptime = self.uptime()
        else:
            age, requests, latency = ago
            requests, latency = sorted(requests.items()), sorted(latency.items())
            uptime = max(0.0, self.uptime() - age)
        lines = [
            "# HELP http_requests_total Total HTTP requests by method, path and status code.",
            "# TYPE http_requests_total counter",
        ]
        for (method, path, status), count in requests:
            lines.append(f"http_requests_total{_labels(method=method, path=path, status_code=status)} {count}")
        lines += [
            "# HELP http_request_duration_seconds HTTP request latency in seconds.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for (method, path), (counts, total) in latency:
            name = "http_request_duration_seconds"
            cumulative = 0
            for bound, count in zip(BUCKETS, counts):
                cumulative += count
                lines.append(f"{name}_bucket{_labels(method=method, path=path, le=_number(bound))} {cumulative}")
            count = sum(counts)
            lines.append(f'{name}_bucket{_labels(method=method, path=path, le="+Inf")} {count}')
            lines.append(f"{name}_sum{_labels(method=method, path=path)} {_number(total)}")
            lines.append(f"{name}_count{_labels(method=method, path=path)} {count}")
        lines += [
            "# HELP app_uptime_seconds Seconds since the process started.",
            "# TYPE app_uptime_seconds gauge",
            f"app_uptime_seconds {_number(round(uptime, 3))}",
            "# HELP app_mode Deployment mode: 0 stable, 1 canary.",
            "# TYPE app_mode gauge",
            f"app_mode {1 if self.mode == 'canary' else 0}",
            "# HELP chaos_active Injected chaos: 0 none, 1 slow, 2 error.",
            "# TYPE chaos_active gauge",
            f"chaos_active {chaos_code}",
            "# HELP app_info Build information of the running service.",
            "# TYPE app_info gauge",
            f"app_info{_labels(version=self.version, mode=self.mode)} 1",
        ]
        if ago is not None:
            lines += [
                "# HELP app_snapshot_age_seconds How old these counters are (/metrics?ago=N).",
                "# TYPE app_snapshot_age_seconds gauge",
                f"app_snapshot_age_seconds {_number(round(ago[0], 3))}",
            ]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# HTTP/1.1 request parsing
# ---------------------------------------------------------------------------

class HTTPError(Exception):
    """A request that cannot be served: answered with `status` and {"error": message}, then the
    connection is closed."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_METHOD = re.compile(_TOKEN)
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
# Any byte but NUL, HTAB, CR, LF and space (the separator): control characters such as ESC are
# let through to a 404 and escaped in the access log.
_TARGET = re.compile(r"[^\x00\t\r\n ]+")
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
# name ":" OWS value OWS, where the value holds no control character but HTAB (no CR, no LF).
_HEADER = re.compile(rf"({_TOKEN}):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")


@dataclass
class Request:
    method: str
    target: str  # as sent: for the access log and error bodies
    path: str  # what is routed: the target without its query (absolute-form: its path)
    version: tuple  # (1, 0) or (1, 1)
    headers: dict  # lower-case name -> [values in the order received]
    keep_alive: bool  # what the client asked for; the server may still close
    has_body: bool  # Content-Length other than 0, or any Transfer-Encoding

    def header(self, name):
        """The value of a header as one string (repeated headers joined with ", "), or None."""
        values = self.headers.get(name)
        return None if values is None else ", ".join(values)


def _printable(text, limit=200):
    # Request data is attacker-controlled; keep log lines and messages single-line and bounded.
    text = text[:limit]
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def parse_head(head):
    """Parse a request head (bytes ending with the CRLF CRLF that ends the headers) into a Request.

    Returns None when the head is only empty lines (RFC 9112 2.2: ignored before a request line).
    Raises HTTPError for anything this server does not accept.
    """
    text = head.decode("latin-1").lstrip("\r\n")
    if not text:
        return None
    lines = text.split("\r\n")
    # A head is `request-line CRLF *(header CRLF) CRLF`, so the split ends with two empty strings.
    request_line, header_lines = lines[0], lines[1:-2]

    parts = request_line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise HTTPError(400, f"malformed request line {request_line[:100]!r}: "
                             "expected METHOD SP target SP HTTP/1.1")
    method, target, version_text = parts
    version = _VERSION.fullmatch(version_text)
    if version is None:
        raise HTTPError(400, f"malformed HTTP version {version_text[:20]!r}")
    major, minor = int(version[1]), int(version[2])
    if major != 1:
        raise HTTPError(505, f"Invalid HTTP version ({major}.{minor})")
    if not _METHOD.fullmatch(method):
        raise HTTPError(400, f"malformed method {method[:20]!r}")
    if not _TARGET.fullmatch(target):
        raise HTTPError(400, "request target contains a control character")
    if target.startswith("/") or target == "*":
        path = target.split("?", 1)[0]
    else:
        authority = _ABSOLUTE_FORM.match(target)
        if authority is None:
            raise HTTPError(400, f"malformed request target {target[:60]!r}: expected a path "
                                 "beginning with '/'")
        path = "/" + target[authority.end():].lstrip("/").split("?", 1)[0]

    if len(header_lines) > MAX_HEADERS:
        raise HTTPError(431, f"too many header lines: {len(header_lines)} (limit {MAX_HEADERS})")
    headers = {}
    for line in header_lines:
        match = _HEADER.fullmatch(line)
        if match is None:
            if line[:1] in (" ", "\t"):
                problem = "obsolete line folding (a header line beginning with whitespace)"
            elif ":" not in line:
                problem = "header line without a colon"
            else:
                problem = "malformed header line"
            raise HTTPError(400, f"{problem}: {line[:60]!r}")
        name, value = match.groups()
        headers.setdefault(name.lower(), []).append(value)

    hosts = headers.get("host", ())
    if len(hosts) > 1 or (minor >= 1 and not hosts):
        raise HTTPError(400, "an HTTP/1.1 request needs exactly one Host header")
    tokens = {token.strip().lower() for value in headers.get("connection", ()) for token in value.split(",")}
    keep_alive = "close" not in tokens and (minor >= 1 or "keep-alive" in tokens)
    has_body = "transfer-encoding" in headers or any(value != "0" for value in headers.get("content-length", ()))
    return Request(method, target, path, (1, min(minor, 1)), headers, keep_alive, has_body)


# ---------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------

class _PerSecond:
    """format(second) for a whole number of seconds since the epoch, computed once per second."""

    def __init__(self, format):
        self._format = format
        self._last = (None, "")  # one tuple, so that threads never see a second with another's text

    def __call__(self, second):
        last = self._last
        if last[0] != second:
            last = self._last = (second, self._format(second))
        return last[1]


_iso_second = _PerSecond(lambda second: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
_http_date = _PerSecond(lambda second: formatdate(second, usegmt=True))


def utc_now(now=None):
    """UTC time in RFC 3339 with milliseconds, as in 2024-05-01T12:00:00.123Z."""
    now = time.time() if now is None else now
    second = int(now)
    return f"{_iso_second(second)}.{int((now - second) * 1000):03d}Z"


def http_date():
    return _http_date(int(time.time()))


_REASONS = {status.value: status.phrase for status in HTTPStatus}


class Exchange:
    """One request on a connection and the answer to it."""

    def __init__(self, connection, request, started):
        self.connection = connection
        self.server = connection.server
        self.request = request
        self.started = started
        self.body_pending = request.has_body if request else False
        # A stopping server answers what it has and closes, whatever the client asked.
        self.close = (not request.keep_alive or connection.server.stopping) if request else True

    # -- dispatch ---------------------------------------------------------

    # path -> {method: name of the handler}; any other path is the application's (see application()).
    ROUTES = {
        "/healthz": {"GET": "healthz", "HEAD": "healthz"},
        "/metrics": {"GET": "metrics", "HEAD": "metrics"},
        "/chaos": {"POST": "chaos"},
    }

    async def handle(self):
        methods = self.ROUTES.get(self.request.path)
        if methods is None:
            await self.application()
        elif self.request.method in methods:
            await getattr(self, methods[self.request.method])()
        else:
            self.method_not_allowed(sorted(methods))

    async def application(self):
        server, request = self.server, self.request
        delay, fail = server.chaos.draw()
        if delay > 0:
            await asyncio.sleep(delay)
        if fail:
            self.send_json(500, {"error": "chaos: injected error", "mode": server.config.mode,
                                 "version": server.config.version})
        elif request.path != "/":
            self.send_json(404, {"error": "Not Found", "path": request.target})
        elif request.method in ("GET", "HEAD"):
            config = server.config
            self.send_json(200, {
                "message": f"Welcome to SwiftDeploy ({config.mode})",
                "mode": config.mode,
                "version": config.version,
                "timestamp": utc_now(),
            })
        else:
            self.method_not_allowed(["GET", "HEAD"])

    def method_not_allowed(self, allowed):
        self.send_json(405, {"error": "Method Not Allowed", "path": self.request.target, "allowed": allowed},
                       {"Allow": ", ".join(allowed)})

    async def healthz(self):
        config = self.server.config
        self.send_json(200, {
            "status": "ok",
            "mode": config.mode,
            "version": config.version,
            "uptime_seconds": round(self.server.metrics.uptime(), 3),
        })

    async def metrics(self):
        metrics, target = self.server.metrics, self.request.target
        query = target.split("?", 1)[1] if "?" in target else ""
        ago = None
        if query:
            name, _sep, value = query.partition("=")
            try:
                seconds = float(value) if name == "ago" else math.nan
            except ValueError:
                seconds = math.nan
            if not 0 < seconds <= HISTORY_SECONDS:
                self.send_json(400, {"error": f"query {_printable(query, 60)!r}: give ago=SECONDS, more than 0 and at "
                                              f"most {HISTORY_SECONDS}, or no query for the metrics now"})
                return
            ago = metrics.snapshot_ago(seconds)
            if ago is None:
                self.send_json(404, {"error": f"no snapshot {seconds:g} s old yet: this app has run "
                                              f"{metrics.uptime():.1f} s", "uptime_seconds": round(metrics.uptime(), 3)})
                return
        self.send(200, metrics.render(self.server.chaos.code, ago).encode("utf-8"), METRICS_TYPE)

    async def chaos(self):
        server = self.server
        if server.config.mode != "canary":
            self.send_json(403, {
                "error": "chaos injection is disabled in stable mode; only a service in canary mode "
                         "accepts POST /chaos",
                "mode": server.config.mode,
            })
            return
        body = await self.read_body()
        if body is None:
            return
        try:
            spec = parse_chaos(body)
        except ValueError as exc:
            self.send_json(400, {"error": str(exc)})
            return
        state = server.chaos.apply(spec)
        server.logger.warning("chaos set to %s by %s", json.dumps(state), self.connection.client)
        self.send_json(200, {"chaos": state})

    async def read_body(self):
        """Read the request body, or answer the error and return None."""
        headers, timeout = self.request.headers, self.server.config.socket_timeout
        if "transfer-encoding" in headers:
            status = 400 if "content-length" in headers else 411
            self.send_json(status, {"error": "Transfer-Encoding is not supported; send the JSON body "
                                             "with a Content-Length header"})
            return None
        lengths = headers.get("content-length", [])
        if not lengths:
            self.send_json(411, {"error": "Content-Length header is required for POST /chaos"})
            return None
        # isascii() too: str.isdigit() accepts digits such as '²' that int() refuses.
        if len(set(lengths)) != 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
            shown = ", ".join(lengths)[:60]
            self.send_json(400, {"error": f"Content-Length header must be a non-negative integer, got {shown!r}"})
            return None
        digits = lengths[0].lstrip("0") or "0"
        if len(digits) > len(str(MAX_BODY_BYTES)) or int(digits) > MAX_BODY_BYTES:
            # Refused before reading: the connection is closed instead of draining the body.
            shown = digits if len(digits) <= 20 else digits[:20] + "..."
            self.send_json(413, {"error": f"request body too large: Content-Length {shown} exceeds "
                                          f"the limit of {MAX_BODY_BYTES} bytes"})
            return None
        length = int(digits)
        reader, writer = self.connection.reader, self.connection.writer
        if self.request.version >= (1, 1) and "100-continue" in (self.request.header("expect") or "").lower():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(timeout):
                body = await reader.readexactly(length)
        except TimeoutError:
            self.send_json(408, {"error": f"timed out after {timeout:g} s waiting for the "
                                          f"{length}-byte request body"})
            return None
        except asyncio.IncompleteReadError as exc:
            self.send_json(400, {"error": f"request body ended after {len(exc.partial)} of {length} bytes"})
            return None
        self.body_pending = False
        return body

    # -- response ---------------------------------------------------------

    def send_json(self, status, payload, headers=None):
        self.send(status, json.dumps(payload).encode("utf-8"), JSON_TYPE, headers)

    def send(self, status, body, content_type, headers=None):
        """Queue the whole response on the connection (one write), after recording it."""
        if self.body_pending:
            # Unread body bytes would be parsed as the next request on this connection.
            self.close = True
        # Recorded before writing so that a client which has its answer always finds the
        # request in /metrics and in the log; the latency therefore excludes the socket write.
        self.record(status, len(body))
        server = self.server
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nDate: {http_date()}\r\n{server.fixed_headers}"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n")
        if server.stopping:
            self.close = True  # a stop began while this request was being answered
        if self.close:
            head.append("Connection: close\r\n")
        elif self.request.version < (1, 1):
            head.append("Connection: keep-alive\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if self.request is None or self.request.method != "HEAD":
            data += body
        self.connection.writer.write(data)

    def record(self, status, size):
        seconds = time.perf_counter() - self.started
        request = self.request
        method, target = (request.method, request.target) if request else ("-", "")
        self.server.metrics.observe(method, request.path if request else "", int(status), seconds)
        self.server.log.access(self.connection.client, method, target, status, size, seconds)


class Connection:
    """One client connection: reads requests, answers them in order, closes when done."""

    def __init__(self, server, reader, writer):
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client = peer[0] if peer else "-"
        self.task = asyncio.current_task()
        self.waiting_since = None  # loop time since when a request head is awaited, else None

    async def serve(self):
        transport, timeout = self.writer.transport, self.server.config.socket_timeout
        try:
            while True:
                exchange = await self.next_exchange()
                if exchange is None:
                    break
                if exchange.request is not None:
                    await exchange.handle()
                if transport.is_closing():
                    break  # the client has gone: answer nothing more of what it pipelined
                if transport.get_write_buffer_size():
                    # The socket did not take the whole response: the client reads slowly, or
                    # not at all (pipelining and never reading). Wait for it, but not forever.
                    async with asyncio.timeout(timeout):
                        await self.writer.drain()
                if exchange.close:
                    await self.linger()
                    break
        except (ConnectionError, TimeoutError):
            pass
        except Exception:
            self.server.logger.exception("%s internal error; closing the connection", self.client)
        finally:
            self.writer.close()
            if transport.get_write_buffer_size():
                # close() waits until the buffered responses are sent; bound that wait too.
                try:
                    async with asyncio.timeout(timeout):
                        await self.writer.wait_closed()
                except (OSError, TimeoutError):
                    transport.abort()

    async def next_exchange(self):
        """Read the next request head; None when the connection is to be closed without an answer."""
        # AppServer._close_idle_connections() closes the connection if no whole head has come
        # after socket_timeout: an idle keep-alive connection, or a client stalled in a head.
        self.waiting_since = asyncio.get_running_loop().time()
        try:
            while True:
                try:
                    head = await self.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return None  # closed by the client (or for being idle), between requests or in a head
                except asyncio.LimitOverrunError:
                    # Read what is buffered to tell a huge request line from a huge header block.
                    data = await self.reader.read(MAX_HEAD_BYTES)
                    status, what = (431, "request header block") if b"\r\n" in data else (414, "request line")
                    return self.error(HTTPError(status, f"{what} longer than {MAX_HEAD_BYTES} bytes"))
                started = time.perf_counter()
                try:
                    request = parse_head(head)
                except HTTPError as exc:
                    return self.error(exc, started)
                if request is not None:
                    return Exchange(self, request, started)
        finally:
            self.waiting_since = None

    def error(self, exc, started=None):
        exchange = Exchange(self, None, started or time.perf_counter())
        exchange.send_json(exc.status, {"error": exc.message})
        return exchange

    async def linger(self):
        # Closing a socket that still has unread input makes the kernel send a reset, which
        # can destroy the response just sent before the client (or nginx) has read it. Half-close,
        # then discard what the client still sends, for a bounded time and amount.
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            discarded = 0
            async with asyncio.timeout(LINGER_SECONDS):
                while discarded < LINGER_MAX_BYTES:
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        break
                    discarded += len(chunk)
        except (OSError, TimeoutError):
            pass


class AppServer:
    """The HTTP server. Bound on creation; serve_forever() runs its event loop in the calling thread.

    Same life cycle as a socketserver server: serve_forever(), shutdown() from another thread (or
    a signal given to serve_forever), server_close().
    """

    def __init__(self, config):
        self.config = config
        self.log = AppLog(config.log_dir)
        self.logger = self.log.logger
        self.chaos = ChaosState()
        self.metrics = Metrics(config.mode, config.version)
        self.socket = socket.create_server((config.host, config.port), backlog=LISTEN_BACKLOG)
        self.server_address = self.socket.getsockname()
        self.server_port = self.server_address[1]
        self.fixed_headers = self._fixed_headers(config.mode)
        self.stop_reason = None
        self._loop = asyncio.new_event_loop()
        self._stop = None  # an asyncio.Event, made in the loop by _serve()
        self._connections = set()
        self.stopping = False  # set once a stop began: answers then close their connection
        self._serving = False
        self._done = threading.Event()

    @staticmethod
    def _fixed_headers(mode):
        return (f"Server: {SERVER_NAME}\r\nCache-Control: no-store\r\nX-Deployed-By: swiftdeploy\r\n"
                + ("X-Mode: canary\r\n" if mode == "canary" else ""))

    def set_mode(self, mode):
        """Serve from now on in `mode`. Leaving canary mode ends any chaos: a stable release
        refuses chaos, so none may outlive the canary that accepted it."""
        if mode not in MODES:
            raise ValueError(f"mode must be 'stable' or 'canary', got {mode!r}")
        before = self.config.mode
        if mode == before:
            return False
        # SIGHUP runs this in the event loop, between two requests' steps: none sees half a switch.
        self.metrics.mode = mode
        self.fixed_headers = self._fixed_headers(mode)
        self.config = dataclasses.replace(self.config, mode=mode)
        if mode != "canary" and self.chaos.snapshot()["mode"] != "none":
            self.chaos.apply({"mode": "recover"})
            self.logger.warning("chaos ended: the service left canary mode")
        self.logger.info("mode %s -> %s", before, mode)
        return True

    def reload_mode(self):
        """SIGHUP: read MODE_FILE again. A file that names no mode changes nothing (and says so)."""
        if not self.config.mode_file:
            self.logger.warning("SIGHUP ignored: no MODE_FILE to read the mode from")
            return
        try:
            self.set_mode(read_mode_file(self.config.mode_file))
        except ValueError as exc:
            self.logger.error("SIGHUP: %s; still in %s mode", exc, self.config.mode)

    def serve_forever(self, poll_interval=None, stop_signals=()):
        """Serve until shutdown() is called or one of `stop_signals` arrives (main thread only).

        poll_interval is accepted for compatibility with socketserver and ignored: nothing polls.
        """
        self._serving = True
        try:
            self._loop.run_until_complete(self._serve(stop_signals))
        finally:
            self._done.set()

    def shutdown(self):
        """Stop serve_forever() and wait until it has returned. Call it from another thread."""
        self._loop.call_soon_threadsafe(self._request_stop, "shutdown")
        if self._serving:
            self._done.wait()

    def server_close(self):
        self.socket.close()
        if not self._loop.is_running():
            self._loop.close()
        self.log.close()

    def _request_stop(self, reason):
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._stop is not None:
            self._stop.set()

    async def _serve(self, stop_signals):
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.stop_reason is not None:  # shutdown() came before the loop ran
            self._stop.set()
        for signum in stop_signals:
            loop.add_signal_handler(signum, self._request_stop, signal.Signals(signum).name)
        if stop_signals:  # signals are the main thread's: then SIGHUP reads MODE_FILE again
            loop.add_signal_handler(signal.SIGHUP, self.reload_mode)
        # backlog again: start_server() calls listen() on the socket, by default with 100.
        listener = await asyncio.start_server(self._on_connection, sock=self.socket, limit=MAX_HEAD_BYTES,
                                              backlog=LISTEN_BACKLOG)
        sweeper = asyncio.create_task(self._close_idle_connections())
        snapshots = asyncio.create_task(self._take_snapshots())
        try:
            await self._stop.wait()
        finally:
            listener.close()  # stop accepting; the connections are ours to end
            sweeper.cancel()
            snapshots.cancel()
            # Graceful: idle connections close now; a request being answered gets up to
            # STOP_GRACE_SECONDS to finish (its answer says Connection: close), so stopping a
            # slot that nginx just stopped routing to does not cut the requests still in flight.
            # What is still running after that (slow chaos) is cancelled: stop within a second.
            self.stopping = True
            busy = []
            for connection in list(self._connections):
                if connection.waiting_since is not None:
                    connection.writer.close()  # readuntil() then ends with IncompleteReadError
                else:
                    busy.append(connection.task)
            if busy:
                await asyncio.wait(busy, timeout=STOP_GRACE_SECONDS)
            tasks = [connection.task for connection in self._connections]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=CANCEL_GRACE_SECONDS)
            await asyncio.sleep(0)  # let the transports just closed release their sockets
            for signum in stop_signals:
                loop.remove_signal_handler(signum)
            if stop_signals:
                loop.remove_signal_handler(signal.SIGHUP)

    async def _take_snapshots(self):
        while True:
            self.metrics.take_snapshot()
            await asyncio.sleep(SNAPSHOT_SECONDS)

    async def _close_idle_connections(self):
        # Closes connections that have waited socket_timeout for a request head. nginx gives up
        # idle upstream connections sooner (keepalive_timeout 4 s against 5 s), so it never sends
        # a request on one the app is closing. One sweep every quarter of the timeout (at most 1 s)
        # instead of a timer per request: a waiting connection is closed within 1.25 timeouts
        # (1 timeout + 1 s for timeouts over 4 s).
        timeout = self.config.socket_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = loop.time()
            for connection in self._connections:
                if connection.waiting_since is not None and now - connection.waiting_since >= timeout:
                    connection.writer.close()  # readuntil() then ends with IncompleteReadError

    async def _on_connection(self, reader, writer):
        connection = Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.serve()
        except asyncio.CancelledError:
            # Only _serve() cancels connections, to stop. End the task normally: asyncio's streams
            # (3.11) log a traceback for a connection task that ends cancelled.
            pass
        finally:
            self._connections.discard(connection)


class AppLog:
    """The service's log: LOG_DIR/app.log, or stderr alone when that file cannot be written.

    Events (start, stop, chaos changes, errors) go through `logger`, a logging.Logger, which also
    writes them to stderr (so to `docker logs`). The access log, one line per request, is written
    by access() straight to the log's stream, in the same format: logging's per-record machinery
    (a LogRecord, a caller lookup, a filter and a formatter per handler) cost a fifth of the time
    spent on a request.
    """

    def __init__(self, log_dir):
        self.logger = logging.getLogger(f"swiftdeploy_app.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handlers = [logging.StreamHandler(sys.stderr)]
        problem = None
        if log_dir:
            path = os.path.join(log_dir, "app.log")
            try:
                os.makedirs(log_dir, exist_ok=True)
                handlers.append(logging.FileHandler(path, encoding="utf-8"))
            except OSError as exc:
                problem = f"cannot write {path} ({exc.strerror or exc}); logging to stderr only"
        # Access lines go to the file only when there is one: writing each to the container's
        # stdout too would cost a syscall here and a JSON encode in dockerd per request.
        self._access_handler = handlers[-1]
        for handler in handlers:
            handler.setFormatter(formatter)
            self.logger.addHandler(handler)
        if problem:
            self.logger.warning(problem)

    def access(self, client, method, target, status, size, seconds):
        """Log one request: client, method, target, status, response size and duration."""
        line = (f"{utc_now()} INFO {client} {_printable(method, 20)} {_printable(target or '-')} "
                f"{status} {size}B {seconds * 1000:.1f}ms\n")
        handler = self._access_handler
        with handler.lock:
            try:
                handler.stream.write(line)
                handler.stream.flush()
            except (OSError, ValueError):
                pass  # a full disk or a closed stream must not fail the request (as with logging)

    def close(self):
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)


def main():
    try:
        config = Config.from_env(os.environ)
    except ValueError as exc:
        print(f"swiftdeploy-app: configuration error: {exc}", file=sys.stderr)
        return 2
    server = AppServer(config)
    server.logger.info("listening on %s:%d mode=%s version=%s", config.host, server.server_port,
                       config.mode, config.version)
    try:
        server.serve_forever(stop_signals=(signal.SIGTERM, signal.SIGINT))
    finally:
        server.logger.info("stopping (%s)", server.stop_reason or "serve loop ended")
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
