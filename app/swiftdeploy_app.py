"""SwiftDeploy demo service.

A small HTTP API that runs as the stable or the canary release behind nginx. It reports
its mode and version, exposes Prometheus metrics, and in canary mode accepts chaos
instructions (slow down or fail application requests) so a rollout's safety checks can
be exercised.

Standard library only: the image must build and run without a package registry.

Environment: MODE (stable|canary), APP_VERSION, APP_PORT, LOG_DIR.
Routes: GET /, GET /healthz, GET /metrics, POST /chaos (canary only).
"""

import json
import logging
import math
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("stable", "canary")
CHAOS_MODES = ("slow", "error", "recover")
CHAOS_CODES = {"none": 0, "slow": 1, "error": 2}
MAX_SLOW_SECONDS = 30
MAX_BODY_BYTES = 4096
SOCKET_TIMEOUT_SECONDS = 5.0
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024

KNOWN_PATHS = ("/", "/healthz", "/metrics", "/chaos")
KNOWN_METHODS = ("GET", "POST", "HEAD")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Config:
    mode: str = "stable"
    version: str = "1.0.0"
    port: int = 3000
    host: str = "0.0.0.0"
    log_dir: str = "/app/logs"
    socket_timeout: float = SOCKET_TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, env):
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
    """The chaos currently injected into application requests; shared by all handler threads."""

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
        spec = self.snapshot()
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
        self._latency = {}

    def uptime(self):
        return max(0.0, self._clock() - self._started)

    def observe(self, method, path, status, seconds):
        method, path = label_method(method), label_path(path)
        with self._lock:
            key = (method, path, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            buckets, total, count = self._latency.get((method, path), ([0] * len(BUCKETS), 0.0, 0))
            buckets = [n + (seconds <= bound) for n, bound in zip(buckets, BUCKETS)]
            self._latency[(method, path)] = (buckets, total + seconds, count + 1)

    def render(self, chaos_code=0):
        with self._lock:
            requests = sorted(self._requests.items())
            latency = sorted(self._latency.items())
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
        for (method, path), (buckets, total, count) in latency:
            name = "http_request_duration_seconds"
            for bound, cumulative in zip(BUCKETS, buckets):
                lines.append(f"{name}_bucket{_labels(method=method, path=path, le=_number(bound))} {cumulative}")
            lines.append(f'{name}_bucket{_labels(method=method, path=path, le="+Inf")} {count}')
            lines.append(f"{name}_sum{_labels(method=method, path=path)} {_number(total)}")
            lines.append(f"{name}_count{_labels(method=method, path=path)} {count}")
        lines += [
            "# HELP app_uptime_seconds Seconds since the process started.",
            "# TYPE app_uptime_seconds gauge",
            f"app_uptime_seconds {_number(round(self.uptime(), 3))}",
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
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

def utc_now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _printable(text, limit=200):
    # The request line is attacker-controlled; keep log lines single-line and bounded.
    text = text[:limit]
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


class RequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 with an explicit Content-Length on every response lets nginx keep upstream
    # connections alive.
    protocol_version = "HTTP/1.1"
    server_version = "swiftdeploy-app"
    # Headers and body are written separately; without TCP_NODELAY a keep-alive client can
    # wait for a delayed ACK on every response.
    disable_nagle_algorithm = True

    def __getattr__(self, name):
        # The base class answers 501 (HTML) for any method lacking a do_<METHOD>; routing all
        # of them here gives every method the same JSON 404/405 treatment.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def version_string(self):
        return self.server_version  # no Python version in the Server header

    def setup(self):
        # A client that announces a body and then stalls must only cost its own thread.
        self.timeout = self.server.config.socket_timeout
        self._linger = False
        super().setup()

    def finish(self):
        super().finish()
        if self._linger:
            self._discard_unread_input()

    def _discard_unread_input(self):
        # Closing a socket that still has unread input makes the kernel send a reset, which
        # can destroy the response just sent before the client (or nginx) has read it. Half-close,
        # then discard what the client still sends, for a bounded time and amount.
        deadline = time.monotonic() + LINGER_SECONDS
        discarded = 0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while discarded < LINGER_MAX_BYTES and time.monotonic() < deadline:
                self.connection.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                discarded += len(chunk)
        except OSError:
            pass

    def handle_one_request(self):
        # Keep-alive reuses this object; reset what belongs to the previous request.
        self._started = None
        self._body_pending = False
        self.path = ""
        super().handle_one_request()

    def parse_request(self):
        # Timed from here so the idle wait between keep-alive requests is not counted.
        self._started = time.perf_counter()
        return super().parse_request()

    def log_request(self, code="-", size="-"):
        pass  # _send writes one access line with size and duration instead.

    def log_message(self, format, *args):
        self.server.logger.warning("%s %s", self.client_address[0], _printable(format % args, 500))

    def send_error(self, code, message=None, explain=None):
        # The base class sends an HTML page without our headers; keep errors JSON everywhere.
        # A request line that failed to parse leaves the version at HTTP/0.9, which would
        # suppress the status line and headers; nothing speaks 0.9 any more, so answer in 1.x.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        self._send_json(code, {"error": message or self.responses.get(code, ("Error",))[0]})

    # -- dispatch ---------------------------------------------------------

    def _dispatch(self):
        self._body_pending = ("Transfer-Encoding" in self.headers
                              or self.headers.get("Content-Length", "0").strip() != "0")
        path = self.path.split("?", 1)[0]
        routes = {
            "/healthz": {"GET": self._healthz, "HEAD": self._healthz},
            "/metrics": {"GET": self._metrics, "HEAD": self._metrics},
            "/chaos": {"POST": self._chaos},
        }
        if path not in routes:
            self._application(path)
            return
        action = routes[path].get(self.command)
        if action is None:
            self._method_not_allowed(sorted(routes[path]))
        else:
            action()

    def _application(self, path):
        delay, fail = self.server.chaos.draw()
        if delay > 0:
            time.sleep(delay)
        if fail:
            self._send_json(500, {"error": "chaos: injected error", "mode": self.server.config.mode,
                                  "version": self.server.config.version})
        elif path != "/":
            self._send_json(404, {"error": "Not Found", "path": self.path})
        elif self.command in ("GET", "HEAD"):
            config = self.server.config
            self._send_json(200, {
                "message": f"Welcome to SwiftDeploy ({config.mode})",
                "mode": config.mode,
                "version": config.version,
                "timestamp": utc_now(),
            })
        else:
            self._method_not_allowed(["GET", "HEAD"])

    def _method_not_allowed(self, allowed):
        self._send_json(405, {"error": "Method Not Allowed", "path": self.path, "allowed": allowed},
                        {"Allow": ", ".join(allowed)})

    def _healthz(self):
        config = self.server.config
        self._send_json(200, {
            "status": "ok",
            "mode": config.mode,
            "version": config.version,
            "uptime_seconds": round(self.server.metrics.uptime(), 3),
        })

    def _metrics(self):
        text = self.server.metrics.render(self.server.chaos.code)
        self._send(200, text.encode("utf-8"), METRICS_TYPE)

    def _chaos(self):
        if self.server.config.mode != "canary":
            self._send_json(403, {
                "error": "chaos injection is disabled in stable mode; only a service started with "
                         "MODE=canary accepts POST /chaos",
                "mode": self.server.config.mode,
            })
            return
        body = self._read_body()
        if body is None:
            return
        try:
            spec = parse_chaos(body)
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        state = self.server.chaos.apply(spec)
        self.server.logger.warning("chaos set to %s by %s", json.dumps(state), self.client_address[0])
        self._send_json(200, {"chaos": state})

    def _read_body(self):
        """Read the request body, or answer the error and return None."""
        if "Transfer-Encoding" in self.headers:
            status = 400 if "Content-Length" in self.headers else 411
            self._send_json(status, {"error": "Transfer-Encoding is not supported; send the JSON body "
                                              "with a Content-Length header"})
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self._send_json(411, {"error": "Content-Length header is required for POST /chaos"})
            return None
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            shown = _printable(", ".join(lengths), 60)
            self._send_json(400, {"error": f"Content-Length header must be a non-negative integer, "
                                           f"got {shown!r}"})
            return None
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            # Refused before reading: the connection is closed instead of draining the body.
            self._send_json(413, {"error": f"request body too large: Content-Length {length} exceeds "
                                           f"the limit of {MAX_BODY_BYTES} bytes"})
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self._send_json(408, {"error": f"timed out after {self.timeout:g} s waiting for the "
                                           f"{length}-byte request body"})
            return None
        if len(body) < length:
            self._send_json(400, {"error": f"request body ended after {len(body)} of {length} bytes"})
            return None
        self._body_pending = False
        return body

    # -- response ---------------------------------------------------------

    def _send_json(self, status, payload, headers=None):
        self._send(status, json.dumps(payload).encode("utf-8"), JSON_TYPE, headers)

    def _send(self, status, body, content_type, headers=None):
        if self._body_pending:
            # Unread body bytes would be parsed as the next request on this connection.
            self.close_connection = True
            self._linger = True
        # Recorded before writing so that a client which has its answer always finds the
        # request in /metrics and in the log; the latency therefore excludes the socket write.
        self._record(status, len(body))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Deployed-By", "swiftdeploy")
            if self.server.config.mode == "canary":
                self.send_header("X-Mode", "canary")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as exc:
            self.close_connection = True
            self.server.logger.warning("%s client went away: %s", self.client_address[0], exc)

    def _record(self, status, size):
        seconds = time.perf_counter() - self._started if self._started else 0.0
        method = self.command or "-"
        self.server.metrics.observe(method, self.path, int(status), seconds)
        self.server.logger.info("%s %s %s %d %dB %.1fms", self.client_address[0], _printable(method, 20),
                                _printable(self.path or "-"), status, size, seconds * 1000, extra={"access": True})


class AppServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, config, logger=None):
        self.config = config
        self.logger = logger or build_logger(config.log_dir)
        self.chaos = ChaosState()
        self.metrics = Metrics(config.mode, config.version)
        super().__init__((config.host, config.port), RequestHandler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # start-up for seconds on hosts without a resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def server_close(self):
        super().server_close()
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)


def build_logger(log_dir):
    logger = logging.getLogger(f"swiftdeploy_app.{id(object())}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    stderr = logging.StreamHandler(sys.stderr)
    handlers = [stderr]
    problem = None
    if log_dir:
        path = os.path.join(log_dir, "app.log")
        try:
            os.makedirs(log_dir, exist_ok=True)
            handlers.append(logging.FileHandler(path, encoding="utf-8"))
            # With the log file in place, per-request lines go there only: writing each one to
            # the container's stdout too costs the single app process a syscall and a JSON
            # encode in dockerd per request, which shows at high concurrency.
            stderr.addFilter(lambda record: not getattr(record, "access", False))
        except OSError as exc:
            problem = f"cannot write {path} ({exc.strerror or exc}); logging to stderr only"
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if problem:
        logger.warning(problem)
    return logger


def main():
    try:
        config = Config.from_env(os.environ)
    except ValueError as exc:
        print(f"swiftdeploy-app: configuration error: {exc}", file=sys.stderr)
        return 2
    server = AppServer(config)
    received = []

    def on_signal(signum, frame):
        if not received:
            received.append(signal.Signals(signum).name)
            # shutdown() blocks until serve_forever() returns, and serve_forever() runs in
            # this (the main) thread, so it has to be called from another one.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.logger.info("listening on %s:%d mode=%s version=%s", config.host, server.server_port,
                       config.mode, config.version)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.logger.info("stopping (%s)", received[0] if received else "serve loop ended")
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
