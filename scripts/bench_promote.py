"""Promotion under load: does a canary release switch without a failed request? (`make bench-promote`)

Deploys the throw-away stack `sdbench` (public port 18980, admin port 18982, the same one
scripts/bench_app.py uses) with a 20 % canary and a 5 s canary window, starts constant load
through nginx (CLIENTS threads, each with its own keep-alive connection sending GET /, by
default 50 a second each: --rate; --rate 0 sends them back to back), and while the load runs,
in order:

1. promote.yml -e mode=canary                     canary 1.0.0 takes 20 % of requests
2. POST /chaos {"mode": "error", "rate": 1.0}      (admin port: goes to the canary), then hold
3. promote.yml -e mode=stable                      the canary policy must deny: rolled back
4. POST /chaos {"mode": "recover"}                 now reaches the stable slot, which answers 403
5. promote.yml -e mode=canary, canary.version 1.1.0, then hold
6. promote.yml -e mode=stable                      must roll forward: 1.1.0 stable at 100 %

Every response is counted by status and by X-Mode (absent: stable). 500s whose body says
"chaos: injected error" are the chaos the benchmark asked for and are counted apart; every other
non-200 (including connection errors and timeouts) is a request lost to switching, and is
attributed to the phase (a step, or the load between steps) in which it was answered. Prints
each promote's wall time, the failures, the longest gap between two successful responses over
all clients, and a "figure | value | target | PASS/FAIL" table. The stack is always torn down.

`--rounds N` (default 3) runs the whole sequence N times, each on a freshly deployed stack under
its own load, and ends with a table over all rounds: each promote's median and slowest wall time
(the verdict is on the median: on a shared 2-CPU VM one round can run on a host a third slower
than the next, which the "host speed" line at the start and end of every round shows), and the
failed requests and the longest gap of all rounds together (the verdict is on every round).

`--app thirdparty` (`make bench-promote-thirdparty`) runs the same sequence with the
third-party-style test image (tests/fixtures/thirdparty_app: port 8000, uid 20000, health on
/ready, no /metrics, no /chaos, no mode file: services.mode_switch none). It has no /chaos, so the
failing canary is a failing image: thirdparty-app:1 (1.0.0), thirdparty-app:2 (2.0.0) and
thirdparty-app:2-bad (thirdparty-app:2 with FAIL_PERCENT=100: every GET / a 500) are built first
(tests/fixtures/thirdparty_app/thirdparty_images.py, as the integration tests build them; skipped
when present from the same sources). Step 1 is the canary of the bad image (2.0.0-bad), held as
long as step 2's chaos; steps 2 and 4 have no counterpart, so the promotes keep the numbers 1, 3,
5 and 6 and the tables line up with the example app's. 5 and 6 are 2.0.0 (thirdparty-app:2). The
bad image's own 500s ({"error": "injected failure"}) are counted apart as the chaos errors are;
responses are counted by their version (there is no X-Mode). Either app's canary is judged from
nginx's edge log (canary.metrics: edge, the default): every table says how many
judgements came from it.

It is a benchmark, not a test: exit status 0 whatever the figures; 2 when the stack cannot be
deployed or a step does something other than expected (a promote that fails, no rollback, no
roll forward); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import (  # noqa: E402  pylint: disable=wrong-import-position
    ADMIN_PORT, PUBLIC_PORT, STACK, DeployError, _interrupt, connect, final_teardown, get_json, print_table,
    run_playbook, tail, verdict, write_manifest,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "thirdparty_app"))
import thirdparty_images  # noqa: E402  pylint: disable=wrong-import-position

CLIENTS = 8
CLIENT_TIMEOUT = 10.0          # a request unanswered this long is a failure (timeout)
CLIENT_PAUSE = 0.001           # with --rate 0, between two requests of one client
# --rate: requests per second of each client (0: as fast as they can). 8 x 50 = 400 requests a
# second, a steady load. As fast as they can, the clients, nginx and the app take most of the 2
# CPUs the controller also needs, and the figures measure the box rather than the promotion.
DEFAULT_RATE = 50.0
WARMUP_SECONDS = 3.0           # load before the first step
CANARY_HOLD_SECONDS = 6.0      # load on a canary before judging it (its window is 5 s)
SETTLE_SECONDS = 2.0           # load after the other steps
MIN_LOAD_SECONDS = 30.0        # the final hold lasts until the load has run this long
MONITOR_TICK = 0.005           # the client process's own scheduling-delay monitor
MONITOR_STALL = 0.05           # a wake-up this late is logged as a stall of the client process

CANARY_WEIGHT = 20
CANARY_WINDOW = 5
NEW_VERSION = "1.1.0"
CHAOS_ERROR = "chaos: injected error"
EDGE_JUDGED = "measured by nginx"  # in a promote's report of the canary's figures when nginx's edge log judged it


class App:
    """What the sequence needs to know about the app under load (--app)."""

    def __init__(self, name, title, injected_error, new_version, bad_version=None, images=None):
        self.name = name
        self.title = title                    # in the banner and the tables' headers
        self.injected_error = injected_error  # the "error" of the JSON body of a 500 the bench asked for
        self.new_version = new_version        # the release rolled forward
        self.bad_version = bad_version        # the failing canary's release, when it is an image (no /chaos)
        self.images = images or {}            # tag -> (version, FAIL_PERCENT or None), built before the rounds

    @property
    def has_chaos(self):
        return self.bad_version is None

    @property
    def mode_name(self):
        """What a response is counted by: the example app's X-Mode header, the other's version."""
        return "X-Mode" if self.has_chaos else "version"

    @property
    def share_of(self):
        """The value of mode_name the phase table shows the share of."""
        return "canary" if self.has_chaos else self.new_version

    @property
    def injected_name(self):
        return "chaos-injected 500s" if self.has_chaos else "bad image's own 500s"


TP_TAGS = {key: f"thirdparty-app:{key}" for key in thirdparty_images.VERSIONS}
TP_BAD_TAG = "thirdparty-app:2-bad"
APPS = {
    "example": App("example", "example app", CHAOS_ERROR, NEW_VERSION),
    "thirdparty": App("thirdparty", "third-party app (tests/fixtures/thirdparty_app)", thirdparty_images.INJECTED_FAILURE,
                      thirdparty_images.VERSIONS["2"], bad_version=thirdparty_images.VERSIONS["2"] + "-bad",
                      images={TP_TAGS["1"]: (thirdparty_images.VERSIONS["1"], None),
                              TP_TAGS["2"]: (thirdparty_images.VERSIONS["2"], None),
                              TP_BAD_TAG: (thirdparty_images.VERSIONS["2"], 100)}),
}

TARGET_FAILED = 0
TARGET_GAP_MS = 200.0
TARGET_PROMOTE_S = 6.0
DEFAULT_ROUNDS = 3
HOST_SPEED_LOOP = 5_000_000    # iterations of host_speed()'s loop


class StepFailed(Exception):
    """A step did not do what the sequence needs (as opposed to a slow or lossy one)."""


# ---------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------

def write_manifests(work_dir):
    """manifest.yml (canary = services release) and manifest-<NEW_VERSION>.yml (canary = NEW_VERSION).

    bench_app.teardown reads manifest.yml, so the base manifest keeps that name."""
    base = write_manifest(work_dir, "stable")
    manifest = yaml.safe_load(base.read_text())
    manifest["canary"] = {"weight": CANARY_WEIGHT, "window_seconds": CANARY_WINDOW}
    manifest["policy"] = {"thresholds": {"min_requests": 20}}
    base.write_text(yaml.safe_dump(manifest, sort_keys=False))
    manifest["canary"]["version"] = NEW_VERSION
    newer = Path(work_dir) / f"manifest-{NEW_VERSION}.yml"
    newer.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return base, newer


def write_thirdparty_manifests(work_dir, app):
    """manifest.yml (thirdparty-app:1), manifest-<bad>.yml (canary = the bad image) and
    manifest-<new>.yml (canary = thirdparty-app:2): the bench stack's names and ports, the app's
    port, uid and health path, no mode switch (the app has no mode file)."""
    base = write_manifest(work_dir, "stable")
    manifest = yaml.safe_load(base.read_text())
    manifest["services"].update(thirdparty_images.services(TP_TAGS["1"], thirdparty_images.VERSIONS["1"]),
                                mode_switch="none")
    manifest["canary"] = {"weight": CANARY_WEIGHT, "window_seconds": CANARY_WINDOW}
    manifest["policy"] = {"thresholds": {"min_requests": 20}}
    base.write_text(yaml.safe_dump(manifest, sort_keys=False))
    paths = []
    for image, version in ((TP_BAD_TAG, app.bad_version), (TP_TAGS["2"], app.new_version)):
        manifest["canary"].update(image=image, version=version)
        path = Path(work_dir) / f"manifest-{version}.yml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        paths.append(path)
    return base, paths[0], paths[1]


def build_images(app):
    """The app's images (thirdparty_images: built when missing or built from other sources)."""
    for tag, (version, fail_percent) in app.images.items():
        started = time.monotonic()
        if fail_percent is None:
            built = thirdparty_images.build(tag, version)
        else:
            built = thirdparty_images.build_failing(tag, TP_TAGS["2"], fail_percent)
        what = f"FAIL_PERCENT={fail_percent}" if fail_percent is not None else f"version {version}"
        print(f"  image {tag} ({what}): " + (f"built ({time.monotonic() - started:.1f} s)" if built else "up to date"))


def stack_in_use():
    """Another run's sdbench stack (bench_app, bench_deploy): never touch it, say so and stop."""
    argv = ["docker", "ps", "-aq", "--filter", f"label=org.swiftdeploy.stack={STACK}"]
    ids = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    argv = ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={STACK}"]
    ids += subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    return sorted(set(ids))


def deploy_stable(manifest, project_dir, app):
    started = time.monotonic()
    status, output = run_playbook("deploy.yml", manifest, project_dir)
    if status != 0:
        raise DeployError(f"deploy.yml failed with exit status {status}:\n{tail(output)}")
    if app.has_chaos:
        health = get_json(ADMIN_PORT, "/healthz")
        if health.get("mode") != "stable":
            raise DeployError(f"deploy.yml succeeded but the app reports mode {health.get('mode')!r}, not 'stable'")
    else:  # /healthz is the app's /ready ("ready"): its version is in GET /
        root = get_json(PUBLIC_PORT, "/")
        if root.get("version") != thirdparty_images.VERSIONS["1"]:
            raise DeployError(f"deploy.yml succeeded but GET / reports version {root.get('version')!r}, "
                              f"not {thirdparty_images.VERSIONS['1']!r}")
    print(f"  deployed {STACK} ({time.monotonic() - started:.1f} s)")


def live_state(project_dir):
    return json.loads((Path(project_dir) / "state.json").read_text())


def describe_state(state):
    slots = ", ".join(f"{name}={spec.get('version')}/{spec.get('mode')}" for name, spec in sorted(state["slots"].items()))
    return (f"generation {state.get('generation')}, stable {state.get('stable')}, canary {state.get('canary')}, "
            f"weight {state.get('weight')}, slots {slots}")


def post_chaos(spec):
    """POST /chaos on the admin port; (status, body text). Any status is returned, not raised."""
    conn = connect(ADMIN_PORT)
    try:
        conn.request("POST", "/chaos", body=json.dumps(spec), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def canary_lines(output):
    """The promote's own report lines (the canary's window figures, the verdict): a debug msg,
    `"msg": "..."`, or a line of a msg list, `"...",`."""
    keep = ("Canary ", "rolled back", "Rolled back", "passed and is now stable", "gets ")
    lines = []
    for line in output.splitlines():
        text = line.strip()
        if text.startswith('"msg": "'):
            text = text[len('"msg": '):]
        elif not text.startswith('"'):
            continue
        if any(word in text for word in keep):
            lines.append(text.strip(',').strip('"'))
    return lines


# ---------------------------------------------------------------------------
# The load
# ---------------------------------------------------------------------------

class RawConnection:
    """One client's HTTP/1.1 connection on a plain socket: GET / and its answer, nothing more.

    http.client parses every response head with the email package, about a quarter of a
    millisecond of CPU a request; on a host whose CPUs the controller, Docker, nginx and the app
    share, the load generator must take as little as it can. The answer is framed by its
    Content-Length or chunked encoding; `Connection: close` (nginx's answer while
    nginx.keepalive_timeout is 0) closes the socket, and the next request opens a new one."""

    REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: swiftdeploy-bench-promote\r\n\r\n"

    def __init__(self, port, timeout):
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.buffer = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buffer = b""

    def _fill(self, what):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError(f"the server closed the connection before {what}")
        self.buffer += chunk

    def _take(self, count):
        while len(self.buffer) < count:
            self._fill("the end of the body")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _line(self):
        end = self.buffer.find(b"\r\n")
        while end < 0:
            self._fill("the end of a chunk size")
            end = self.buffer.find(b"\r\n")
        line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        return line

    def get(self):
        """(status, X-Mode or None, body). OSError or ValueError for a broken exchange."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.sendall(self.REQUEST)
        end = self.buffer.find(b"\r\n\r\n")
        while end < 0:
            self._fill("a response head")
            end = self.buffer.find(b"\r\n\r\n")
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        self.buffer = self.buffer[end + 4:]
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _sep, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers, up to the empty line
                        pass
                    break
                parts.append(self._take(size))
                self._take(2)
            body = b"".join(parts)
        else:
            body = self._take(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers.get("x-mode"), body


class Load:
    """CLIENTS threads sending GET /, each on its own keep-alive connection (RawConnection).

    Each response is recorded as (start, end, status, mode, version, kind, reused, detail):
    status is the HTTP status or "error <ExceptionName>"; mode is X-Mode (absent: stable), or
    the answer's version for an app without X-Mode; kind is "ok" (200), "chaos" (a 500 the
    canary injected on request, or the bad image's own) or "fail"; reused says whether the request went out on a
    connection that had already carried a request (a keep-alive connection the server may have
    closed meanwhile) rather than a fresh one."""

    def __init__(self, clients, rate=0.0, app=APPS["example"]):
        self.clients = clients
        self.app = app
        self.rate = rate  # requests per second of each client; 0: as fast as it can (CLIENT_PAUSE apart)
        self.records = [[] for _index in range(clients)]
        self.connections_opened = [0] * clients
        self.max_delay = 0.0
        self.max_delay_at = None
        self.stalls = []  # (start, end) of the client process's own stalls
        self.started = None
        self.stopped = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(index,), daemon=True) for index in range(clients)]
        self._threads.append(threading.Thread(target=self._monitor, daemon=True))

    def _client(self, index):
        records = self.records[index]
        conn = RawConnection(PUBLIC_PORT, CLIENT_TIMEOUT)
        interval = 1.0 / self.rate if self.rate else 0.0
        next_at = time.monotonic() + interval * index / self.clients  # the clients spread over an interval
        while not self._stop.is_set():
            if interval:
                # Paced: a fixed schedule, so a slow answer is not made up for by a burst after it.
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                next_at = max(next_at + interval, time.monotonic())
            reused = conn.sock is not None  # the socket is opened on demand
            if not reused:
                self.connections_opened[index] += 1
            started = time.monotonic()
            try:
                status, mode, body = conn.get()
            except (OSError, ValueError, IndexError) as exc:
                records.append((started, time.monotonic(), f"error {type(exc).__name__}", "-", None, "fail", reused,
                                str(exc)[:200]))
                conn.close()  # the next request opens a fresh connection
                continue
            ended = time.monotonic()
            records.append(self._classify(started, ended, status, mode, body, reused))
            if CLIENT_PAUSE and not interval:
                time.sleep(CLIENT_PAUSE)
        conn.close()

    def _classify(self, started, ended, status, mode, body, reused):
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        mode = (mode or "stable") if self.app.has_chaos else str(payload.get("version", "-"))
        if status == 200:
            return (started, ended, status, mode, payload.get("version"), "ok", reused, "")
        if status == 500 and payload.get("error") == self.app.injected_error:
            return (started, ended, status, mode, payload.get("version"), "chaos", reused, "")
        return (started, ended, status, mode, payload.get("version"), "fail", reused,
                body[:200].decode(errors="replace"))

    def _monitor(self):
        # How late a short sleep wakes up: a stalled client process makes gaps that nginx and the
        # app did not cause, and this tells them apart.
        while not self._stop.is_set():
            before = time.monotonic()
            time.sleep(MONITOR_TICK)
            after = time.monotonic()
            late = after - before - MONITOR_TICK
            if late > self.max_delay:
                self.max_delay, self.max_delay_at = late, before
            if late > MONITOR_STALL:
                self.stalls.append((before + MONITOR_TICK, after))

    def start(self):
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)
        self.stopped = time.monotonic()

    def stalled(self, start, end):
        """Seconds of [start, end] during which the client process itself was stalled."""
        return sum(max(0.0, min(end, stall_end) - max(start, stall_start)) for stall_start, stall_end in self.stalls)

    def responses(self):
        """All records of all clients, in the order they were answered."""
        return sorted((record for records in self.records for record in records), key=lambda record: record[1])


# ---------------------------------------------------------------------------
# The sequence
# ---------------------------------------------------------------------------

class Sequence:
    """Runs the steps and keeps the phases: contiguous (label, start) marks over the load."""

    def __init__(self, load, base, newer, project_dir, bad=None):
        self.load = load
        self.app = load.app
        self.base = base
        self.newer = newer
        self.bad = bad  # the manifest whose canary is the bad image (an app without /chaos)
        self.project_dir = project_dir
        self.phases = []
        self.steps = []   # dicts: label, kind (promote/chaos), seconds, status, ok, note
        self.checks = {}  # figure -> bool
        self.judgements = []  # per promote to stable: judged from nginx's edge log

    def mark(self, label):
        self.phases.append((label, time.monotonic()))

    def at(self, seconds):
        return f"t={seconds - self.load.started:6.1f} s"

    def hold(self, label, seconds):
        self.mark(label)
        time.sleep(seconds)

    def promote(self, label, manifest, mode):
        self.mark(label)
        started = time.monotonic()
        print(f"  {self.at(started)}  {label} ...")
        status, output = run_playbook("promote.yml", manifest, self.project_dir, f"mode={mode}")
        seconds = time.monotonic() - started
        for line in canary_lines(output):
            print(f"      | {line}")
        step = {"label": label, "kind": "promote", "mode": mode, "seconds": seconds, "status": status, "output": output}
        self.steps.append(step)
        print(f"      exit {status}, {seconds:.1f} s")
        return step

    def chaos(self, label, spec):
        self.mark(label)
        started = time.monotonic()
        status, body = post_chaos(spec)
        seconds = time.monotonic() - started
        print(f"  {self.at(started)}  {label}: POST /chaos {json.dumps(spec)} -> {status} {body.strip()[:160]}")
        step = {"label": label, "kind": "chaos", "seconds": seconds, "status": status, "body": body}
        self.steps.append(step)
        return step

    def judged(self, step):
        """Whether nginx's edge log judged the canary (canary.metrics: edge), over every judgement so far."""
        self.judgements.append(EDGE_JUDGED in step["output"])
        print(f"      judged from {'nginx' if self.judgements[-1] else 'the app (not nginx)'}")

    def state(self):
        state = live_state(self.project_dir)
        print(f"      state: {describe_state(state)}")
        return state

    def run(self):
        app = self.app
        new_version = app.new_version
        self.hold("0 warm-up", WARMUP_SECONDS)

        if app.has_chaos:
            step = self.promote("1 promote canary 1.0.0", self.base, "canary")
        else:  # the failing canary is an image (no /chaos): steps 2 and 4 have no counterpart
            step = self.promote(f"1 promote canary {app.bad_version}", self.bad, "canary")
        state = self.state()
        if step["status"] != 0:
            raise StepFailed(f"promote canary failed ({step['status']}):\n{tail(step['output'])}")
        if not state.get("canary") or int(state.get("weight") or 0) != CANARY_WEIGHT:
            raise StepFailed(f"promote canary succeeded but the live state has no {CANARY_WEIGHT}% canary")
        if app.has_chaos:
            self.hold("1+ canary 1.0.0 serving", SETTLE_SECONDS)
            step = self.chaos("2 chaos error on canary", {"mode": "error", "rate": 1.0})
            if step["status"] != 200:
                raise StepFailed(f"POST /chaos error answered {step['status']}: {step['body'][:300]}")
            self.hold("2+ canary failing (chaos)", CANARY_HOLD_SECONDS)
        else:
            self.hold(f"1+ canary {app.bad_version} failing", CANARY_HOLD_SECONDS)

        step = self.promote("3 promote stable (roll back)", self.base if app.has_chaos else self.bad, "stable")
        self.judged(step)
        state = self.state()
        rolled_back = ("rolled back" in step["output"].lower() and step["status"] != 0
                       and state.get("canary") is None and len(state["slots"]) == 1)
        self.checks["rolled back"] = rolled_back
        if not rolled_back:
            raise StepFailed(f"promote stable did not roll back (exit {step['status']}, "
                             f"'rolled back' {'in' if 'rolled back' in step['output'].lower() else 'not in'} "
                             f"the output, state {describe_state(state)}):\n{tail(step['output'])}")
        self.hold("3+ stable again", SETTLE_SECONDS)

        if app.has_chaos:
            step = self.chaos("4 recover", {"mode": "recover"})
            self.hold("4+ stable", SETTLE_SECONDS)

        step = self.promote(f"5 promote canary {new_version}", self.newer, "canary")
        state = self.state()
        if step["status"] != 0:
            raise StepFailed(f"promote canary {new_version} failed ({step['status']}):\n{tail(step['output'])}")
        canary = state["slots"].get(state.get("canary") or "", {})
        if canary.get("version") != new_version:
            raise StepFailed(f"promote canary {new_version} succeeded but the live state is {describe_state(state)}")
        self.hold(f"5+ canary {new_version} serving", CANARY_HOLD_SECONDS)

        step = self.promote("6 promote stable (roll forward)", self.newer, "stable")
        self.judged(step)
        state = self.state()
        root = get_json(PUBLIC_PORT, "/")
        print(f"      GET / -> version {root.get('version')}, mode {root.get('mode')}")
        rolled_forward = (step["status"] == 0 and state.get("canary") is None and len(state["slots"]) == 1
                          and root.get("version") == new_version and (root.get("mode") == "stable" or not app.has_chaos))
        self.checks["rolled forward"] = rolled_forward
        if not rolled_forward:
            raise StepFailed(f"promote stable did not roll forward (exit {step['status']}, GET / {root}, "
                             f"state {describe_state(state)}):\n{tail(step['output'])}")
        self.mark(f"6+ stable {new_version} (final hold)")
        time.sleep(max(SETTLE_SECONDS + 1, MIN_LOAD_SECONDS - (time.monotonic() - self.load.started)))


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def load_average():
    return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])


def host_speed():
    """Seconds a fixed pure-Python loop takes in this process's interpreter: the same figure
    across rounds means the host ran at the same speed (a busy neighbour on a shared VM shows)."""
    started = time.process_time()
    total = 0
    for number in range(HOST_SPEED_LOOP):
        total += number
    return time.process_time() - started


def waited_window(step):
    """Whether a promote waited the canary window (it does not when the canary is older than its
    window: the play says which)."""
    return step["mode"] == "stable" and "waited for)" in step["output"]


def phase_of(phases, when):
    label = phases[0][0] if phases else "-"
    for name, start in phases:
        if when >= start:
            label = name
        else:
            break
    return label


def fmt_counter(counter):
    return ", ".join(f"{key}: {value}" for key, value in sorted(counter.items(), key=lambda item: (-item[1], str(item[0]))))


def report_phases(seq, responses):
    load = seq.load
    bounds = [(label, start, seq.phases[index + 1][1] if index + 1 < len(seq.phases) else load.stopped)
              for index, (label, start) in enumerate(seq.phases)]
    if bounds and bounds[0][1] > load.started:
        bounds[0] = (bounds[0][0], load.started, bounds[0][2])
    per = {label: {"status": Counter(), "mode": Counter(), "fail": 0, "chaos": 0} for label, _start, _end in bounds}
    for record in responses:
        entry = per[phase_of(seq.phases, record[1])]
        entry["status"][record[2]] += 1
        entry["mode"][record[3]] += 1
        entry[record[5]] = entry.get(record[5], 0) + 1
    print("\n== Phases (responses attributed by the time they were answered) ==")
    share = f"{seq.app.share_of} %"
    print(f"  {'phase':<34} | {'from s':>6} | {'dur s':>6} | {'req/s':>6} | {share:>8} | {'chaos':>5} | "
          f"{'failed':>6} | statuses")
    for label, start, end in bounds:
        entry = per[label]
        total = sum(entry["status"].values())
        duration = max(end - start, 1e-9)
        canary = 100.0 * entry["mode"].get(seq.app.share_of, 0) / total if total else 0.0
        print(f"  {label:<34} | {start - load.started:6.1f} | {duration:6.1f} | {total / duration:6.0f} | "
              f"{canary:8.1f} | {entry['chaos']:5} | {entry['fail']:6} | {fmt_counter(entry['status'])}")
    return per


def longest_gaps(responses, count=3):
    """The longest intervals between two consecutive 200s of the merged, time-ordered stream."""
    ends = [record[1] for record in responses if record[5] == "ok"]
    gaps = sorted(((ends[index + 1] - ends[index], ends[index], ends[index + 1]) for index in range(len(ends) - 1)),
                  reverse=True)
    return gaps[:count]


def report(seq, aborted, title="Summary"):
    load = seq.load
    responses = load.responses()
    duration = load.stopped - load.started
    statuses = Counter(record[2] for record in responses)
    modes = Counter(record[3] for record in responses)
    versions = Counter(f"{record[3]} {record[4]}" if seq.app.has_chaos else record[4]
                       for record in responses if record[5] == "ok")
    chaos = [record for record in responses if record[5] == "chaos"]
    failed = [record for record in responses if record[5] == "fail"]

    print(f"\n== Load: {load.clients} clients, {duration:.1f} s, {len(responses)} responses, "
          f"{len(responses) / duration:.0f} req/s ==")
    print(f"  by status: {fmt_counter(statuses)}")
    print(f"  by {seq.app.mode_name}: {fmt_counter(modes)}")
    print(f"  200s by {'X-Mode and version' if seq.app.has_chaos else 'version'}: {fmt_counter(versions)}")
    print(f"  {seq.app.injected_name} (counted apart): {len(chaos)}")
    print(f"  TCP connections opened: {sum(load.connections_opened)} ({load.clients} at start)")
    print(f"  client process: longest scheduling delay {load.max_delay * 1000:.1f} ms "
          f"(at t={(load.max_delay_at or load.started) - load.started:.1f} s); "
          f"{len(load.stalls)} stalls over {MONITOR_STALL * 1000:.0f} ms, "
          f"{sum(end - start for start, end in load.stalls):.1f} s in all; load average {load_average()}")
    report_phases(seq, responses)

    print(f"\n== Failed requests caused by switching (every non-200 except {seq.app.injected_name}): {len(failed)} ==")
    by_phase = Counter((phase_of(seq.phases, record[1]), record[2]) for record in failed)
    for (phase, status), number in sorted(by_phase.items(), key=str):
        print(f"  {phase:<34} {status}: {number}")
    for record in failed[:25]:
        started, ended, status, mode, _version, _kind, reused, detail = record
        print(f"  t={ended - load.started:7.3f} s [{phase_of(seq.phases, ended)}] {status} {seq.app.mode_name} {mode}, "
              f"{(ended - started) * 1000:.1f} ms, {'reused' if reused else 'new'} connection: {detail.strip()[:160]}")
    if len(failed) > 25:
        print(f"  ... and {len(failed) - 25} more")
    unanswered = [record for record in failed if record[6] and str(record[2]).startswith("error ")]
    if unanswered:
        print(f"  {len(unanswered)} of them failed without any response on a connection that had already carried a "
              f"request: the pattern of a keep-alive connection the server closed while idle (nginx closes them when a "
              f"reload retires its old workers). A client that retries idempotent requests on a reused "
              f"connection (RFC 9112 section 9.3.1) would not see these.")

    gaps = longest_gaps(responses)
    print("\n== Longest gaps between two successful responses (all clients merged) ==")
    for gap, start, end in gaps:
        between = Counter(record[2] for record in responses if start < record[1] < end)
        print(f"  {gap * 1000:7.1f} ms from t={start - load.started:.3f} s to t={end - load.started:.3f} s "
              f"[{phase_of(seq.phases, start)}]; answered in between: {fmt_counter(between) or 'nothing'}; "
              f"client process stalled {load.stalled(start, end) * 1000:.0f} ms of it")

    print("\n== Steps ==")
    for step in seq.steps:
        if step["kind"] == "promote":
            extra = (f" ({step['seconds'] - CANARY_WINDOW:.1f} s without the {CANARY_WINDOW} s canary window)"
                     if waited_window(step) else "")
            if step["mode"] == "stable" and not waited_window(step):
                source = "nginx's edge log" if "measured by nginx" in step["output"] else "the app's own snapshot"
                extra = " (its last window from %s: no wait)" % source
            print(f"  {step['label']:<34} {step['seconds']:6.1f} s{extra}, exit {step['status']}")
        else:
            print(f"  {step['label']:<34} {step['seconds'] * 1000:6.1f} ms, HTTP {step['status']}")

    rows = []
    for step in seq.steps:
        if step["kind"] != "promote":
            continue
        value = f"{step['seconds']:.1f} s"
        if waited_window(step):
            value += f" ({step['seconds'] - CANARY_WINDOW:.1f} s + {CANARY_WINDOW} s window)"
        rows.append((f"{step['label']}: wall time", value, f"<= {TARGET_PROMOTE_S:.0f} s",
                     verdict(step["seconds"] <= TARGET_PROMOTE_S)))
    for name, passed in seq.checks.items():
        rows.append((f"canary {name}", "yes" if passed else "no", "yes", verdict(passed)))
    edge = sum(seq.judgements)
    rows.append(("canary judged from nginx's edge log", f"{edge} of {len(seq.judgements)} judgements", "all",
                 verdict(seq.judgements and edge == len(seq.judgements))))
    if aborted:
        rows.append(("sequence completed", f"no: {aborted}", "yes", "FAIL"))
    rows.append(("failed requests caused by switching", str(len(failed)), str(TARGET_FAILED),
                 verdict(len(failed) <= TARGET_FAILED)))
    rows.append((f"{seq.app.injected_name} (counted apart)", str(len(chaos)), "-", "-"))
    longest = gaps[0][0] * 1000 if gaps else float("inf")
    rows.append(("longest gap between 200s", f"{longest:.1f} ms", f"<= {TARGET_GAP_MS:.0f} ms",
                 verdict(longest <= TARGET_GAP_MS)))
    rows.append(("load: clients, duration, rate", f"{load.clients}, {duration:.1f} s, {len(responses) / duration:.0f} req/s",
                 f">= {CLIENTS}, >= {MIN_LOAD_SECONDS:.0f} s", verdict(load.clients >= CLIENTS and duration >= MIN_LOAD_SECONDS)))
    print_table(rows, title=title)
    return {
        "promotes": [(step["label"], step["seconds"]) for step in seq.steps if step["kind"] == "promote"],
        "checks": dict(seq.checks),
        "judgements": list(seq.judgements),
        "aborted": aborted,
        "failed": len(failed),
        "chaos": len(chaos),
        "gap_ms": longest,
        "clients": load.clients,
        "duration": duration,
        "rate": len(responses) / duration,
    }


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report_rounds(results, app=None):
    """The table over all rounds: each promote's median and slowest wall time, the rest summed
    or at their worst. The header names `app` (an App) when given."""
    injected = (app or APPS["example"]).injected_name
    rows = []
    labels = [label for label, _seconds in results[0]["promotes"]]
    for label in labels:
        times = [seconds for result in results for name, seconds in result["promotes"] if name == label]
        if len(times) < len(results):
            continue
        rows.append((f"{label}: wall time, median (slowest)",
                     f"{median(times):.1f} s ({max(times):.1f} s); " + " / ".join(f"{t:.1f}" for t in times),
                     f"<= {TARGET_PROMOTE_S:.0f} s", verdict(median(times) <= TARGET_PROMOTE_S)))
    for name in results[0]["checks"]:
        passed = all(result["checks"].get(name) for result in results)
        rows.append((f"canary {name}, every round", "yes" if passed else "no", "yes", verdict(passed)))
    judgements = [judged for result in results for judged in result.get("judgements", ())]
    if judgements:
        rows.append(("canary judged from nginx's edge log, all rounds", f"{sum(judgements)} of {len(judgements)} judgements",
                     "all", verdict(all(judgements))))
    failed = sum(result["failed"] for result in results)
    rows.append(("failed requests caused by switching, all rounds", str(failed), str(TARGET_FAILED),
                 verdict(failed <= TARGET_FAILED)))
    rows.append((f"{injected} (counted apart)", str(sum(result["chaos"] for result in results)), "-", "-"))
    gap = max(result["gap_ms"] for result in results)
    rows.append(("longest gap between 200s, all rounds", f"{gap:.1f} ms", f"<= {TARGET_GAP_MS:.0f} ms",
                 verdict(gap <= TARGET_GAP_MS)))
    rows.append(("load per round: clients, shortest duration, rate",
                 f"{min(r['clients'] for r in results)}, {min(r['duration'] for r in results):.1f} s, "
                 f"{median([r['rate'] for r in results]):.0f} req/s",
                 f">= {CLIENTS}, >= {MIN_LOAD_SECONDS:.0f} s",
                 verdict(all(r["clients"] >= CLIENTS and r["duration"] >= MIN_LOAD_SECONDS for r in results))))
    print_table(rows, title=f"All {len(results)} rounds" + (f": {app.title}" if app else ""))


# ---------------------------------------------------------------------------

def run_under_load(seq, load):
    """The sequence under the load (started here, stopped whatever happens): None when it ran
    through, else the first line of the failure that stopped it, for the report."""
    load.start()
    try:
        seq.run()
    except (StepFailed, OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        print(f"\nSTEP FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return str(exc).splitlines()[0][:80]
    finally:
        load.stop()
    return None


def run_round(args, title):
    """Deploy, load, the sequence, the report, the teardown: (exit status, figures or None)."""
    print(f"  host speed: {host_speed():.2f} s for a {HOST_SPEED_LOOP:,}-step Python loop; load average {load_average()}")
    work_dir = tempfile.mkdtemp(prefix="swiftdeploy-bench-promote-")
    project_dir = Path(work_dir) / "project"
    status = 0
    load = None
    result = None
    try:
        app = APPS[args.app]
        bad = None
        if app.has_chaos:
            base, newer = write_manifests(work_dir)
        else:
            base, bad, newer = write_thirdparty_manifests(work_dir, app)
        deploy_stable(base, project_dir, app)
        load = Load(CLIENTS, args.rate, app)
        seq = Sequence(load, base, newer, project_dir, bad)
        aborted = run_under_load(seq, load)
        if aborted is not None:
            status = 2
        result = report(seq, aborted, title)
    except DeployError as exc:
        print(f"\nERROR: the stack could not be deployed: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("\ninterrupted; tearing down", file=sys.stderr)
        status = 130
    finally:
        if load is not None and load.stopped is None:
            load.stop()
        final_teardown(work_dir, project_dir)
    print(f"  host speed: {host_speed():.2f} s for the same loop after the round")
    return status, result


def parse_args():
    parser = argparse.ArgumentParser(description="Promotion under constant load (make bench-promote).")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="requests per second of each of the %d clients; 0 sends as fast as they can "
                             "(default %g)" % (CLIENTS, DEFAULT_RATE))
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="times to run the whole sequence, each on a fresh stack (default %d)" % DEFAULT_ROUNDS)
    parser.add_argument("--app", choices=sorted(APPS), default="example",
                        help="the app under load: the example app (chaos through its /chaos endpoint), or the "
                             "third-party-style test image (a bad image as the failing canary; default example)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds: %d is not a number of rounds; give 1 or more" % args.rounds)
    if args.rate < 0:
        parser.error("--rate: %g is negative; give requests per second per client, or 0 for as fast as they can"
                     % args.rate)
    return args


def main():
    args = parse_args()
    started = time.monotonic()
    sys.stdout.reconfigure(line_buffering=True)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _interrupt)
    print(f"SwiftDeploy promotion under load: stack {STACK}, public :{PUBLIC_PORT}, admin 127.0.0.1:{ADMIN_PORT}, "
          f"{CLIENTS} clients ({f'{args.rate:g} req/s each' if args.rate else 'as fast as they can'}), "
          f"canary {CANARY_WEIGHT}% / {CANARY_WINDOW} s window; {APPS[args.app].title}")
    busy = stack_in_use()
    if busy:
        print(f"ERROR: stack {STACK} already has containers ({', '.join(busy)}): another benchmark is running; "
              f"not touching it", file=sys.stderr)
        return 2
    app = APPS[args.app]
    try:
        build_images(app)
    except (thirdparty_images.BuildError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: the images of the {app.title} could not be built: {exc}", file=sys.stderr)
        return 2
    results = []
    status = 0
    for number in range(1, args.rounds + 1):
        title = ("Summary" if args.rounds == 1 else f"Round {number} of {args.rounds}") + f": {app.title}"
        if args.rounds > 1:
            print(f"\n==== {title} ====")
        status, result = run_round(args, title)
        if result is not None:
            results.append(result)
        if status != 0:
            break
    if len(results) > 1:
        report_rounds(results, app)
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
