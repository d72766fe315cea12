"""The module run as a program: start-up, configuration errors and signal handling."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest


def launch(app_path, tmp_path, port, **env):
    full_env = {**os.environ, "APP_PORT": str(port), "LOG_DIR": str(tmp_path / "logs"), **env}
    stderr = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-u", str(app_path)], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    stderr.close()
    return proc


def wait_healthy(proc, port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited early with {proc.returncode}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("server did not become healthy")


@pytest.fixture
def run_app(app_path, tmp_path, free_port):
    procs = []

    def run(**env):
        proc = launch(app_path, tmp_path, free_port, **env)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_and_time(proc, signum):
    started = time.monotonic()
    proc.send_signal(signum)
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not exit within 5 s of {signum.name}")
    return code, time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_within_one_second(run_app, free_port, tmp_path, signum):
    proc = run_app(MODE="stable")
    wait_healthy(proc, free_port)
    code, seconds = stop_and_time(proc, signum)
    assert code == 0
    assert seconds < 1.0, f"took {seconds:.2f}s"
    log = (tmp_path / "logs" / "app.log").read_text()
    assert f"stopping ({signum.name})" in log


def test_sigterm_is_fast_with_a_slow_request_and_an_idle_keepalive_connection(run_app, free_port):
    proc = run_app(MODE="canary")
    wait_healthy(proc, free_port)
    conn = http.client.HTTPConnection("127.0.0.1", free_port, timeout=10)
    conn.request("POST", "/chaos", body=json.dumps({"mode": "slow", "duration": 30}))
    assert conn.getresponse().read()
    idle = http.client.HTTPConnection("127.0.0.1", free_port, timeout=10)
    idle.request("GET", "/healthz")
    idle.getresponse().read()

    def slow_request():
        try:
            http.client.HTTPConnection("127.0.0.1", free_port, timeout=10).request("GET", "/")
        except OSError:
            pass

    threading.Thread(target=slow_request, daemon=True).start()
    time.sleep(0.2)
    code, seconds = stop_and_time(proc, signal.SIGTERM)
    assert code == 0
    assert seconds < 1.0, f"took {seconds:.2f}s"
    conn.close()
    idle.close()


def test_sigterm_lets_a_request_in_flight_finish(run_app, free_port):
    """A slot nginx stopped routing to is stopped with SIGTERM: a request already in flight
    (here slowed to 0.3 s) is still answered, with Connection: close, and the server stops."""
    proc = run_app(MODE="canary")
    wait_healthy(proc, free_port)
    conn = http.client.HTTPConnection("127.0.0.1", free_port, timeout=10)
    conn.request("POST", "/chaos", body=json.dumps({"mode": "slow", "duration": 0.3}))
    assert conn.getresponse().read()
    answers = []

    def slow_request():
        client = http.client.HTTPConnection("127.0.0.1", free_port, timeout=10)
        client.request("GET", "/")
        response = client.getresponse()
        answers.append((response.status, response.headers["Connection"], json.loads(response.read())))

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.1)
    code, seconds = stop_and_time(proc, signal.SIGTERM)
    worker.join(timeout=5)
    assert code == 0 and seconds < 1.0, f"exit {code} after {seconds:.2f}s"
    assert len(answers) == 1, "the request in flight got no answer"
    status, connection, body = answers[0]
    assert status == 200 and connection == "close" and body["mode"] == "canary"
    conn.close()


def test_environment_configures_the_program(run_app, free_port, tmp_path):
    proc = run_app(MODE="canary", APP_VERSION="4.5.6")
    wait_healthy(proc, free_port)
    conn = http.client.HTTPConnection("127.0.0.1", free_port, timeout=5)
    conn.request("GET", "/")
    resp = conn.getresponse()
    data = json.loads(resp.read())
    assert (data["mode"], data["version"]) == ("canary", "4.5.6")
    assert resp.headers["X-Mode"] == "canary"
    conn.close()
    assert stop_and_time(proc, signal.SIGTERM)[0] == 0
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "listening on 0.0.0.0:%d mode=canary version=4.5.6" % free_port in stderr
    assert " GET / 200 " in (tmp_path / "logs" / "app.log").read_text()


def test_unwritable_log_dir_does_not_stop_the_program(run_app, free_port, tmp_path):
    (tmp_path / "file").write_text("")
    proc = run_app(LOG_DIR=str(tmp_path / "file" / "logs"))
    wait_healthy(proc, free_port)
    assert stop_and_time(proc, signal.SIGTERM)[0] == 0
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "logging to stderr only" in stderr
    assert " GET /healthz 200 " in stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODE": "purple"}, "MODE must be 'stable' or 'canary', got 'purple'"),
        ({"APP_PORT": "eighty"}, "APP_PORT must be an integer from 0 to 65535, got 'eighty'"),
        ({"MODE_FILE": "/nonexistent/mode", "MODE": "canary"},
         "MODE_FILE '/nonexistent/mode' cannot be read (No such file or directory); write 'stable' or 'canary'"),
    ],
)
def test_bad_configuration_exits_2_with_a_message(run_app, tmp_path, env, message):
    proc = run_app(**env)
    assert proc.wait(timeout=10) == 2
    assert f"configuration error: {message}" in (tmp_path / "stderr.txt").read_text()


def get_json(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, json.loads(resp.read())
    finally:
        conn.close()


def wait_mode(port, mode, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get_json(port, "/healthz")[2]["mode"] == mode:
            return
        time.sleep(0.02)
    pytest.fail(f"/healthz did not report mode {mode} within {timeout} s")


def test_sighup_reads_the_mode_file_again_without_a_restart(run_app, free_port, tmp_path):
    """What a roll forward does: the canary's process becomes the stable release in place.
    MODE_FILE wins over MODE; a file that names no mode changes nothing."""
    mode_file = tmp_path / "mode"
    mode_file.write_text("canary\n")
    proc = run_app(MODE_FILE=str(mode_file), MODE="stable")
    wait_healthy(proc, free_port)
    status, headers, body = get_json(free_port)
    assert (status, headers["X-Mode"], body["mode"]) == (200, "canary", "canary")
    uptime = get_json(free_port, "/healthz")[2]["uptime_seconds"]

    mode_file.write_text("stable\n")
    proc.send_signal(signal.SIGHUP)
    wait_mode(free_port, "stable")
    status, headers, body = get_json(free_port)
    assert (status, headers["X-Mode"], body["mode"]) == (200, None, "stable")
    assert get_json(free_port, "/healthz")[2]["uptime_seconds"] >= uptime  # the same process

    mode_file.write_text("purple\n")
    proc.send_signal(signal.SIGHUP)
    refused = "SIGHUP: MODE_FILE %r must hold 'stable' or 'canary', got 'purple\\n'; still in stable mode" % str(mode_file)
    deadline = time.monotonic() + 5
    while refused not in (tmp_path / "stderr.txt").read_text():
        assert time.monotonic() < deadline, "the refused mode file was not logged"
        time.sleep(0.02)
    assert get_json(free_port, "/healthz")[2]["mode"] == "stable"
    mode_file.write_text("canary\n")
    proc.send_signal(signal.SIGHUP)
    wait_mode(free_port, "canary")
    assert proc.poll() is None
    assert stop_and_time(proc, signal.SIGTERM)[0] == 0
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "mode canary -> stable" in stderr and "mode stable -> canary" in stderr
