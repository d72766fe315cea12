"""swiftdeploy.stack.metrics_scrape against the real app, through ad-hoc `ansible` runs.

The app runs as a subprocess (MODE=canary) on a free port. A known mix of requests goes in
between two scrapes, and the module must count exactly the application requests: 60 answered
200 and 20 answered 500 by injected chaos, while the /healthz, /metrics and /chaos calls made in
the same window never count. Then the app restarts (its counters start again at 0) and the
window must be the new process's requests, flagged as a counter reset, with nothing negative.
Finally window_seconds > 0: the module scrapes twice while a thread sends traffic in between.

The main scenario runs the module twice over: under the controller's venv Python, where
prometheus_client parses, and under the system Python, which lacks it, so the module's
standard-library fallback parser is what runs, as on a bare managed host.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "swiftdeploy_app.py"
SYSTEM_PYTHON = "/usr/bin/python3"
WINDOW_KEYS = {"requests", "req_per_s", "errors", "error_rate_percent", "p99_latency_ms", "window_seconds",
               "counter_reset", "latency_buckets"}

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _system_python_problem():
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return "%s is missing" % SYSTEM_PYTHON
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import prometheus_client"], capture_output=True, check=False)
    if probe.returncode == 0:
        return "%s has prometheus_client, so it would not run the fallback parser" % SYSTEM_PYTHON
    return None


class App:
    """The app as a subprocess on one port; restart() starts a fresh process on the same port."""

    def __init__(self, workdir, mode="canary", version="2.0.0-rc1"):
        self.port = _free_port()
        self.workdir = workdir
        self.env = dict(os.environ, MODE=mode, APP_VERSION=version, APP_PORT=str(self.port),
                        LOG_DIR=str(workdir / "logs"))
        self.proc = None
        self.starts = 0

    @property
    def metrics_url(self):
        return "http://127.0.0.1:%d/metrics" % self.port

    def start(self):
        self.starts += 1
        log = (self.workdir / ("app%d.out" % self.starts)).open("wb")
        self.proc = subprocess.Popen([sys.executable, str(APP)], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the app exited: %s" % self.log()
            try:
                if self.request("GET", "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("the app did not answer /healthz within 15 s: %s" % self.log())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self):
        self.stop()
        self.start()

    def log(self):
        return (self.workdir / ("app%d.out" % self.starts)).read_text(errors="replace")

    def request(self, method, path, body=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def hit(self, count, path="/", expect=200):
        for _index in range(count):
            status, body = self.request("GET", path)
            assert status == expect, (path, status, body)

    def chaos(self, **spec):
        status, body = self.request("POST", "/chaos", json.dumps(spec).encode())
        assert status == 200, body

    def metrics_requests_seen(self):
        """GET /metrics requests the app has recorded (not counting this one)."""
        status, body = self.request("GET", "/metrics")
        assert status == 200
        return sum(sample.value for family in text_string_to_metric_families(body.decode())
                   for sample in family.samples
                   if sample.name == "http_requests_total" and sample.labels["path"] == "/metrics")


@pytest.fixture
def app(tmp_path):
    running = App(tmp_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def scrape_env():
    env = dict(os.environ)
    env.update({
        "PATH": "%s%s%s" % (ROOT / ".venv" / "bin", os.pathsep, env.get("PATH", "")),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_NOCOLOR": "1",
    })
    for name in ("ANSIBLE_VERBOSITY", "ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_INVENTORY"):
        env.pop(name, None)
    return env


class Scraper:
    """Runs the module with `ansible localhost -m` and returns its result dict."""

    def __init__(self, env, python=None):
        self.env = env
        self.python = python

    def command(self, args, check=False):
        command = ["ansible", "localhost", "-m", "swiftdeploy.stack.metrics_scrape", "-a", json.dumps(args)]
        if self.python:
            command += ["-e", "ansible_python_interpreter=%s" % self.python]
        if check:
            command.append("--check")
        return command

    def start(self, args, check=False):
        return subprocess.Popen(self.command(args, check), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def finish(proc):
        stdout, stderr = proc.communicate(timeout=300)
        try:
            output = json.loads(stdout)
        except ValueError:
            pytest.fail("no JSON from ansible (rc=%s):\n%s\n%s" % (proc.returncode, stdout, stderr))
        result = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
        assert (proc.returncode == 0) is not result.get("failed", False), (proc.returncode, result, stderr)
        return result

    def __call__(self, check=False, **args):
        return self.finish(self.start(args, check))


@pytest.fixture(params=["controller-python", "system-python"])
def scrape(request, scrape_env):
    if request.param == "system-python":
        problem = _system_python_problem()
        if problem:
            pytest.skip(problem)
        return Scraper(scrape_env, SYSTEM_PYTHON)
    return Scraper(scrape_env)


def assert_never_negative(figures):
    assert set(figures) == WINDOW_KEYS
    for name in ("requests", "errors", "req_per_s", "error_rate_percent", "p99_latency_ms", "window_seconds"):
        assert figures[name] is None or figures[name] >= 0, (name, figures)
    assert all(count >= 0 for _bound, count in figures["latency_buckets"]), figures


def test_window_counts_the_known_mix_and_survives_a_restart(app, scrape, tmp_path):
    state = tmp_path / "state" / "canary.json"  # its directory does not exist yet
    url = app.metrics_url

    first = scrape(url=url, state_path=str(state))
    assert first["changed"] is False
    assert first["previous_found"] is False
    assert first["window"]["requests"] == 0
    assert first["window"]["req_per_s"] is None
    assert first["window"]["error_rate_percent"] is None
    assert first["window"]["p99_latency_ms"] is None
    assert first["message"].startswith("no previous sample in %s" % state), first["message"]
    assert first["sample"]["mode"] == "canary"
    assert first["sample"]["chaos"] == "none"
    assert first["sample"]["version"] == "2.0.0-rc1"
    kept = state.read_bytes()

    app.hit(60)
    app.chaos(mode="error", rate=1.0)
    app.hit(20, expect=500)
    app.chaos(mode="recover")
    app.hit(7, "/healthz")
    app.hit(4, "/metrics")

    dry = scrape(check=True, url=url, state_path=str(state))
    assert dry["previous_found"] is True
    assert (dry["window"]["requests"], dry["window"]["errors"]) == (80, 20)
    assert state.read_bytes() == kept, "check mode wrote the state file"

    second = scrape(url=url, state_path=str(state))
    figures = second["window"]
    assert_never_negative(figures)
    assert second["previous_found"] is True
    assert figures["requests"] == 80  # no probe and no chaos call counts
    assert figures["errors"] == 20
    assert figures["error_rate_percent"] == 25.0
    assert figures["p99_latency_ms"] is not None
    assert figures["counter_reset"] is False
    assert figures["window_seconds"] > 0
    assert figures["req_per_s"] == pytest.approx(80 / figures["window_seconds"])
    assert second["sample"]["taken_at"] > first["sample"]["taken_at"]
    assert second["message"].startswith("80 requests in "), second["message"]
    assert state.read_bytes() != kept

    app.hit(3, "/no-such-page", expect=404)  # unrouted requests are traffic; a 404 is no error
    app.hit(1)
    unrouted = scrape(url=url, state_path=str(state))["window"]
    assert (unrouted["requests"], unrouted["errors"], unrouted["error_rate_percent"]) == (4, 0, 0.0)

    app.restart()
    app.hit(5)
    app.hit(2, "/healthz")
    after = scrape(url=url, state_path=str(state))
    figures = after["window"]
    assert_never_negative(figures)
    assert figures["counter_reset"] is True
    assert (figures["requests"], figures["errors"]) == (5, 0)
    assert figures["error_rate_percent"] == 0.0
    assert "restarted" in after["message"]

    calm = scrape(url=url, state_path=str(state))["window"]
    assert (calm["counter_reset"], calm["requests"], calm["error_rate_percent"]) == (False, 0, None)


def test_window_seconds_scrapes_twice_around_live_traffic(app, scrape_env):
    """window_seconds=3 without the app's history: a thread waits for the module's first scrape, then sends 30 requests
    (and probes); the module's second scrape, 3 s later, must count exactly those 30."""
    started = threading.Event()
    done = threading.Event()
    problems = []

    def traffic():
        try:
            baseline = app.metrics_requests_seen()
            started.set()
            polls = 1
            deadline = time.monotonic() + 60
            while app.metrics_requests_seen() - baseline - polls < 1:  # the module has not scraped yet
                polls += 1
                assert time.monotonic() < deadline, "the module never scraped"
                time.sleep(0.02)
            app.hit(30)
            app.hit(10, "/healthz")
            done.set()
        except Exception as exc:  # reported by the test thread
            problems.append(exc)
            started.set()

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    assert started.wait(30)
    # use_history=false: the app's own snapshot would start the window at once (tested below).
    result = Scraper(scrape_env)(url=app.metrics_url, window_seconds=3, use_history=False)
    thread.join(timeout=30)
    assert not problems, problems
    assert done.is_set()
    figures = result["window"]
    assert_never_negative(figures)
    assert result["previous_found"] is True
    assert (figures["requests"], figures["errors"], figures["error_rate_percent"]) == (30, 0, 0.0)
    assert figures["p99_latency_ms"] is not None
    assert figures["window_seconds"] >= 3
    assert figures["counter_reset"] is False


def test_window_seconds_keeps_the_newer_sample_for_later_runs(app, scrape_env, tmp_path):
    scrape = Scraper(scrape_env)
    state = tmp_path / "slot.json"
    scrape(url=app.metrics_url, window_seconds=0.2, state_path=str(state))
    app.hit(4)
    later = scrape(url=app.metrics_url, state_path=str(state))
    assert later["previous_found"] is True
    assert later["window"]["requests"] == 4


def test_the_apps_own_snapshot_starts_the_window_without_waiting(app, scrape_env):
    """The app keeps a snapshot of its counters every second: window_seconds=4 asks for the one
    of 4 s ago and scrapes once. The window is the last 4-5 s: requests made 6 s before are not
    in it, requests made just before the module started are (ansible takes about a second)."""
    time.sleep(1.5)
    app.hit(5)
    time.sleep(6)
    app.hit(7)
    started = time.monotonic()
    result = Scraper(scrape_env)(url=app.metrics_url, window_seconds=4)
    took = time.monotonic() - started
    assert result["window_source"] == "history" and result["previous_found"] is True
    assert result["window"]["requests"] == 7
    assert 4 <= result["window"]["window_seconds"] < 5.5
    assert result["window"]["counter_reset"] is False
    # The waited way costs the window on top: compared in the same minute.
    started = time.monotonic()
    waited = Scraper(scrape_env)(url=app.metrics_url, window_seconds=4, use_history=False)
    assert waited["window_source"] == "waited"
    assert time.monotonic() - started - took > 3


def test_the_stack_lock_measures_slots_while_it_is_taken(app, scrape_env, tmp_path):
    """promote.yml -e mode=stable asks stack_lock for both slots' windows in the round trip that
    takes the lock: the app's window, and an error (not a failure) for a slot that is not there.
    The app is older than the window, and the requests are younger than it by as long as ansible
    takes to start the module (a second or two, under 4)."""
    time.sleep(5)
    app.hit(4)
    missing = "http://127.0.0.1:%d/metrics" % _free_port()
    command = ["ansible", "localhost", "-m", "swiftdeploy.stack.stack_lock", "-a", json.dumps({
        "path": str(tmp_path / ".swiftdeploy.lock"),
        "host": {"metrics_urls": [app.metrics_url, missing], "window_seconds": 4}})]
    proc = subprocess.run(command, cwd=ROOT, env=scrape_env, capture_output=True, text=True, timeout=120, check=False)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert proc.returncode == 0, result
    measured = result["host"]["metrics"]
    assert measured[app.metrics_url]["window_source"] == "history"
    assert measured[app.metrics_url]["window"]["requests"] == 4
    assert "current" not in measured[app.metrics_url]
    assert measured[missing] == {"error": "cannot connect to %s: connection refused; is the SwiftDeploy app running?"
                                 % missing}
    assert (tmp_path / ".swiftdeploy.lock").exists()


def test_a_canary_younger_than_its_window_is_waited_for(app, scrape_env):
    """A freshly started app has no snapshot window_seconds old (404 to ?ago=): the module
    scrapes, waits and scrapes again, and counts only what came in between."""
    app.hit(3)
    result = Scraper(scrape_env)(url=app.metrics_url, window_seconds=3)
    assert result["window_source"] == "waited"
    assert result["window"]["requests"] == 0, "the requests before the waited window must not count"
    assert 3 <= result["window"]["window_seconds"] < 4


def test_state_of_another_slot_or_damaged_is_replaced(app, scrape_env, tmp_path):
    scrape = Scraper(scrape_env)
    state = tmp_path / "slot.json"
    state.write_text(json.dumps({"format": 1, "url": "http://127.0.0.1:1/other/metrics", "sample": {}}))
    other = scrape(url=app.metrics_url, state_path=str(state))
    assert other["previous_found"] is False
    assert "holds a sample of http://127.0.0.1:1/other/metrics" in other["message"]
    assert json.loads(state.read_text())["url"] == app.metrics_url

    state.write_text("{not json")
    damaged = scrape(url=app.metrics_url, state_path=str(state))
    assert damaged["previous_found"] is False
    assert "is not a sample file this module wrote" in damaged["message"]
    assert scrape(url=app.metrics_url, state_path=str(state))["previous_found"] is True


@pytest.mark.parametrize("args, message", [
    pytest.param({"url": "http://127.0.0.1:{closed}/metrics", "window_seconds": 1},
                 "cannot connect to http://127.0.0.1:{closed}/metrics: connection refused; "
                 "is the SwiftDeploy app running?", id="app-down"),
    pytest.param({"url": "http://127.0.0.1:{port}/", "window_seconds": 1},
                 "http://127.0.0.1:{port}/ did not answer with Prometheus metrics (", id="not-metrics"),
    pytest.param({"url": "http://127.0.0.1:{port}/nope", "window_seconds": 1},
                 "http://127.0.0.1:{port}/nope answered HTTP 404 Not Found", id="http-404"),
    pytest.param({"url": "ftp://127.0.0.1:{port}/metrics", "window_seconds": 1},
                 "'ftp://127.0.0.1:{port}/metrics' is not an http(s) URL", id="bad-url"),
    pytest.param({"url": "http://127.0.0.1:{port}/metrics"},
                 "state_path is required when window_seconds is 0", id="no-state-path"),
    pytest.param({"url": "http://127.0.0.1:{port}/metrics", "window_seconds": -1},
                 "window_seconds must be 0 (compare with the sample kept in state_path) or a positive", id="negative"),
])
def test_failures_say_what_to_do(app, scrape_env, args, message):
    closed = _free_port()
    args = {key: value.format(port=app.port, closed=closed) if isinstance(value, str) else value
            for key, value in args.items()}
    result = Scraper(scrape_env)(**args)
    assert result["failed"] is True
    assert result["msg"].startswith(message.format(port=app.port, closed=closed)), result["msg"]
