"""Benchmark the SwiftDeploy app through nginx on this machine (`make bench-app`).

Deploys a throw-away stack named `sdbench` (public port 18980, admin port 18982) with
playbooks/deploy.yml, measures it, and always tears it down with playbooks/teardown.yml:

1. Throughput and latency of GET / at 1, 16 and 64 connections (wrk), with non-2xx counts.
2. Isolation from slow chaos: the stack is redeployed in canary mode, slow chaos (1 s) is
   switched on, 4 GET / are kept in flight, and meanwhile GET /healthz (not subject to chaos)
   is timed through the public port and compared with its latency on an idle stack.
3. /metrics size and the app process's RSS before and after 20,000 requests to distinct
   random paths (metrics labels must not grow with the number of distinct paths).

It ends with a "figure | value | target | PASS/FAIL" table. It is a benchmark, not a test:
the exit status is 0 whatever the figures, 2 when the stack cannot be deployed or a required
tool is missing, 130 when interrupted.

The app image is the manifest's services.image, which `make bench-app` rebuilds first when app/
has changed (scripts/build-images.sh). Run directly, the script says when that image was not built
from the current app/ sources. Options, for comparing app variants:

  --only throughput   run part 1 only (one deploy, no canary redeploy), then the table
  --image NAME        deploy NAME as the app image instead of the manifest's
  --keepalive-timeout SECONDS
                      set nginx.keepalive_timeout (client keep-alive on the public port) instead
                      of the manifest's. With 0, the default, nginx closes every connection after
                      its response, so each wrk request is a new TCP connection through Docker's
                      userland proxy (127.0.0.1): at thousands of requests a second, connection
                      set-up and TIME_WAIT, not the app, then set the latency.

One load generator on the stack's own host is not what a server meets in production: with a new
connection per request, wrk and Docker's userland proxy open ~5,000 connections a second from
one address, and the proxy's connections to the container (not loopback, so Linux's default
tcp_tw_reuse=2 does not apply) run the ephemeral port range out of TIME_WAIT slots within
seconds. Many real clients never do. So, run as root, the bench sets net.ipv4.tcp_tw_reuse=1 for
its duration (safe for outgoing connections, RFC 7323 timestamps) and restores it afterwards;
--keep-sysctl leaves the host's setting alone, to see the effect.

Standard library only, plus PyYAML from the project's venv (Ansible already needs it).
"""

import argparse
import hashlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
STACK = "sdbench"
HOST = "127.0.0.1"
PUBLIC_PORT = 18980
ADMIN_PORT = 18982

WRK_CONNECTIONS = (1, 16, 64)
WRK_SECONDS = 10
WARMUP_SECONDS = 2

SLOW_IN_FLIGHT = 4
SLOW_SECONDS = 1
PROBES = 30
PROBE_INTERVAL = 0.05

FLOOD_REQUESTS = 20_000
FLOOD_WORKERS = 32

TARGET_P99_MS = 50.0
TARGET_NORMAL_MS = 50.0
TARGET_METRICS_BYTES = 20 * 1024
TARGET_RSS_GROWTH_KB = 5 * 1024


class DeployError(Exception):
    """The stack could not be brought up; the benchmark cannot run."""


# ---------------------------------------------------------------------------
# The stack: a temporary manifest and project directory, deployed with Ansible
# ---------------------------------------------------------------------------

def ansible_env(tree=None):
    # Same environment as the Makefile, so the script also works when run directly. tree: another
    # checkout's playbooks and collection (bench_deploy.py --compare), with this checkout's venv.
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(Path(tree or REPO) / "ansible.cfg")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(Path(tree or REPO) / ".collections")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def write_manifest(work_dir, mode, image=None, keepalive_timeout=None, tree=None):
    """Copy the example manifest (tree's, by default this checkout's), renamed and re-ported so it
    cannot collide with the demo stack."""
    manifest = yaml.safe_load((Path(tree or REPO) / "manifest.yml").read_text())
    if image:
        manifest["services"]["image"] = image
    if keepalive_timeout is not None:
        manifest["nginx"]["keepalive_timeout"] = keepalive_timeout
    manifest["stack"] = STACK
    manifest["nginx"]["port"] = PUBLIC_PORT
    manifest["nginx"]["admin_port"] = ADMIN_PORT
    manifest["network"]["name"] = f"{STACK}-net"
    manifest["services"]["log_volume"] = f"{STACK}-logs"
    manifest["services"]["mode"] = mode
    path = Path(work_dir) / "manifest.yml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def run_playbook(playbook, manifest, project_dir, *extra_vars, tree=None):
    """Run one playbook; return (exit status, output).

    ansible-playbook runs in its own session so a Ctrl-C meant for the benchmark does not kill it
    half-way: a killed run leaves the stack lock held and the stack half-changed, and the
    teardown that follows would then be refused. On Ctrl-C we let it finish, then re-raise.
    """
    argv = ["ansible-playbook", f"playbooks/{playbook}",
            "-e", f"swiftdeploy_manifest={manifest}", "-e", f"swiftdeploy_project_dir={project_dir}"]
    for extra in extra_vars:
        argv += ["-e", extra]
    proc = subprocess.Popen(argv, cwd=tree or REPO, env=ansible_env(tree), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _stderr = proc.communicate()
    except KeyboardInterrupt:
        print(f"\n  interrupted: letting {playbook} finish first (Ctrl-C again to kill it)", file=sys.stderr)
        try:
            proc.communicate()
        except KeyboardInterrupt:
            kill_session(proc)
        raise
    return proc.returncode, output


def kill_session(proc):
    # The playbook's own session: its forked workers and docker compose go too.
    for signum, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, signum)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text, lines=25):
    """The error lines of an Ansible run when it has them, else its last lines."""
    # fatal: lines carry the module's whole JSON result; the start says what went wrong.
    errors = [line[:400] + (" ..." if len(line) > 400 else "")
              for line in text.splitlines() if line.startswith(("[ERROR]", "fatal:", "ERROR!"))]
    return "\n".join(errors or text.rstrip().splitlines()[-lines:])


def deploy(work_dir, project_dir, mode, image=None, keepalive_timeout=None):
    started = time.monotonic()
    manifest = write_manifest(work_dir, mode, image, keepalive_timeout)
    status, output = run_playbook("deploy.yml", manifest, project_dir)
    if status != 0:
        raise DeployError(f"deploy.yml ({mode}) failed with exit status {status}:\n{tail(output)}")
    health = get_json(ADMIN_PORT, "/healthz")
    if health.get("mode") != mode:
        raise DeployError(f"deploy.yml succeeded but the app reports mode {health.get('mode')!r}, not {mode!r}")
    print(f"  deployed {STACK} in {mode} mode ({time.monotonic() - started:.1f} s)")


def app_sources_hash():
    """The hash scripts/build-images.sh records in the app image's org.swiftdeploy.source-hash label:
    sha256 over `sha256sum` lines of app/'s files (no bytecode), sorted by path."""
    app = REPO / "app"
    files = sorted(p for p in app.rglob("*")
                   if p.is_file() and p.suffix != ".pyc" and "__pycache__" not in p.parts)
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(app).as_posix()}\n"
                    for p in sorted(files, key=lambda p: f"./{p.relative_to(app).as_posix()}"))
    return hashlib.sha256(lines.encode()).hexdigest()


def describe_image(image):
    """Print which app image is measured, and warn when it is not built from the current app/."""
    argv = ["docker", "image", "inspect", "-f",
            '{{.Id}} {{index .Config.Labels "org.swiftdeploy.source-hash"}}', image]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"  app image {image}: not on this host (the deploy will build it from app/)")
        return
    image_id, _sep, built_hash = result.stdout.strip().partition(" ")
    current = app_sources_hash()
    if built_hash == current:
        state = "built from the current app/"
    elif built_hash in ("", "<no value>"):
        state = "no source-hash label: cannot tell whether it matches app/"
    else:
        state = "WARNING: built from other app/ sources (run scripts/build-images.sh, or make bench-app)"
    print(f"  app image {image} {image_id[7:19]}: {state}")


def teardown(work_dir, project_dir):
    """Remove the bench stack; return whether it is gone. Never raises on failure: it runs in a
    finally block and must not hide the exception that got us there."""
    started = time.monotonic()
    manifest = Path(work_dir) / "manifest.yml"
    if not manifest.exists():
        return True  # nothing was ever deployed
    status, output = run_playbook("teardown.yml", manifest, project_dir, "clean=true")
    if status != 0:
        # The usual cause is a stack lock left by a deploy killed with a second Ctrl-C. The
        # project directory is private to this run, so any lock in it is ours and dead:
        # let teardown break it (ttl=1 s) instead of leaving the stack running.
        print(f"  teardown.yml failed ({status}); retrying with swiftdeploy_lock_ttl=1:\n{tail(output)}")
        status, output = run_playbook("teardown.yml", manifest, project_dir, "clean=true",
                                      "swiftdeploy_lock_ttl=1")
    if status != 0:
        print(f"  WARNING: teardown.yml failed again ({status}); falling back to docker compose down:\n"
              f"{tail(output)}")
        down = subprocess.run(["docker", "compose", "-p", STACK, "--project-directory", str(project_dir),
                               "down", "-v", "--remove-orphans"], capture_output=True, text=True, check=False)
        if down.returncode != 0:
            print(f"  WARNING: could not remove stack {STACK}; files kept in {work_dir}:\n{down.stderr}")
            return False
    print(f"  tore down {STACK} ({time.monotonic() - started:.1f} s)")
    return True


# ---------------------------------------------------------------------------
# Small HTTP helpers (http.client keeps the connection alive, so we time requests, not handshakes)
# ---------------------------------------------------------------------------

def connect(port, timeout=15):
    return http.client.HTTPConnection(HOST, port, timeout=timeout)


def timed_request(conn, method, path, body=None):
    """Send one request on `conn` and return (status, seconds); the body is read and dropped."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - started


def get_json(port, path):
    conn = connect(port)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def get_bytes(port, path):
    conn = connect(port)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def set_chaos(spec):
    conn = connect(ADMIN_PORT)
    try:
        status, _elapsed = timed_request(conn, "POST", "/chaos", json.dumps(spec))
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"POST /chaos {spec} answered {status}")


def percentile(values, pct):
    """Nearest-rank percentile: with 30 samples p99 is the maximum, which is what we want to see."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


# ---------------------------------------------------------------------------
# 1. wrk: throughput and latency of GET /
# ---------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _to_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output):
    """Pull the figures out of wrk's human-readable report (wrk has no machine format)."""
    def number(pattern, default=0):
        match = re.search(pattern, output, re.MULTILINE)
        return match.group(1) if match else default

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rps": float(number(r"^Requests/sec:\s+([\d.]+)")),
        "p50_ms": _to_ms(number(r"^\s+50%\s+(\S+)", "0ms")),
        "p99_ms": _to_ms(number(r"^\s+99%\s+(\S+)", "0ms")),
        "requests": int(number(r"^\s+(\d+) requests in")),
        "non2xx": int(number(r"Non-2xx or 3xx responses:\s+(\d+)")),
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def run_wrk(connections, seconds):
    # wrk needs at least one connection per thread.
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            f"http://{HOST}:{PUBLIC_PORT}/"]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    return parse_wrk(result.stdout)


def bench_throughput():
    print("\n== 1. GET / through nginx (wrk) ==")
    # Warm-up fills nginx's upstream keep-alive pool and the app's thread churn; not reported.
    run_wrk(16, WARMUP_SECONDS)
    print(f"  {'conns':>5} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'requests':>8} | non-2xx | sock err")
    results = {}
    for connections in WRK_CONNECTIONS:
        r = run_wrk(connections, WRK_SECONDS)
        results[connections] = r
        print(f"  {connections:>5} | {r['rps']:>8.0f} | {r['p50_ms']:>7.2f} | {r['p99_ms']:>7.2f} | "
              f"{r['requests']:>8} | {r['non2xx']:>7} | {r['socket_errors']:>8}")
    return results


# ---------------------------------------------------------------------------
# 2. Slow chaos must not slow down requests that chaos does not apply to
# ---------------------------------------------------------------------------

def probe_healthz(count, interval, valid=lambda: True):
    """Time GET /healthz on the public port `count` times; keep only samples where valid() held
    both before and after the request. Returns (latencies in ms, number discarded)."""
    conn = connect(PUBLIC_PORT)
    timed_request(conn, "GET", "/healthz")  # open the connection outside the measurement
    latencies, discarded = [], 0
    try:
        while len(latencies) < count:
            before = valid()
            status, seconds = timed_request(conn, "GET", "/healthz")
            if status != 200:
                raise RuntimeError(f"GET /healthz answered {status}")
            if before and valid():
                latencies.append(seconds * 1000)
            else:
                discarded += 1
            time.sleep(interval)
    finally:
        conn.close()
    return latencies, discarded


class SlowLoad:
    """Keeps `n` GET / in flight: each thread re-issues its request as soon as the last one answers."""

    def __init__(self, n):
        self.n = n
        self.in_flight = 0
        self.durations = []
        self.statuses = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _index in range(n)]

    def _loop(self):
        conn = connect(PUBLIC_PORT, timeout=SLOW_SECONDS + 15)
        try:
            while not self._stop.is_set():
                with self._lock:
                    self.in_flight += 1
                try:
                    status, seconds = timed_request(conn, "GET", "/")
                finally:
                    with self._lock:
                        self.in_flight -= 1
                with self._lock:
                    self.durations.append(seconds)
                    self.statuses[status] += 1
        except (OSError, http.client.HTTPException) as exc:
            with self._lock:
                self.statuses[f"error {type(exc).__name__}"] += 1
        finally:
            conn.close()

    def all_in_flight(self):
        with self._lock:
            return self.in_flight == self.n

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        # Wait until all requests are sent; a little longer so they have reached the app's sleep.
        deadline = time.monotonic() + 5
        while not self.all_in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=SLOW_SECONDS + 20)


def summarize_ms(latencies):
    return {"p50": statistics.median(latencies), "p99": percentile(latencies, 99), "max": max(latencies)}


def bench_isolation():
    print(f"\n== 2. GET /healthz while {SLOW_IN_FLIGHT} slow-chaos GET / ({SLOW_SECONDS} s each) are in flight ==")
    baseline, _discarded = probe_healthz(PROBES, PROBE_INTERVAL)
    set_chaos({"mode": "slow", "duration": SLOW_SECONDS})
    try:
        with SlowLoad(SLOW_IN_FLIGHT) as load:
            loaded, discarded = probe_healthz(PROBES, PROBE_INTERVAL, valid=load.all_in_flight)
    finally:
        # Recover even when the measurement failed, so nothing else sees a slow app.
        set_chaos({"mode": "recover"})
    base, busy = summarize_ms(baseline), summarize_ms(loaded)
    slow_p50 = statistics.median(load.durations) if load.durations else float("nan")
    print(f"  idle:   /healthz p50 {base['p50']:.2f} ms, p99 {base['p99']:.2f} ms, max {base['max']:.2f} ms "
          f"({len(baseline)} samples)")
    print(f"  loaded: /healthz p50 {busy['p50']:.2f} ms, p99 {busy['p99']:.2f} ms, max {busy['max']:.2f} ms "
          f"({len(loaded)} samples with all {SLOW_IN_FLIGHT} slow requests in flight, {discarded} discarded)")
    print(f"  slow GET /: {len(load.durations)} completed, median {slow_p50:.2f} s, "
          f"statuses {dict(load.statuses)}")
    # A sub-millisecond baseline makes a bare 2x test flap on scheduler noise; allow 1 ms slack.
    unaffected = busy["p50"] <= 2 * base["p50"] + 1.0 and busy["p50"] < TARGET_NORMAL_MS
    print(f"  normal request {'UNAFFECTED' if unaffected else 'AFFECTED'} by the slow ones "
          f"(loaded p50 {busy['p50'] / base['p50']:.1f}x idle)")
    chaos_worked = slow_p50 >= SLOW_SECONDS * 0.9
    if not chaos_worked:
        print("  WARNING: the slow requests were not slow; chaos did not take effect")
    return {"base": base, "busy": busy, "unaffected": unaffected and chaos_worked}


# ---------------------------------------------------------------------------
# 3. /metrics size and RSS under a flood of distinct paths
# ---------------------------------------------------------------------------

def app_container():
    argv = ["docker", "ps", "-q", "--filter", f"label=org.swiftdeploy.stack={STACK}",
            "--filter", "label=org.swiftdeploy.role=app"]
    ids = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    if len(ids) != 1:
        raise RuntimeError(f"expected one app container of stack {STACK}, found {len(ids)}")
    return ids[0]


# PID 1 in the container is tini (init: true) and its command line also names the app, so
# match on argv[0] being python and skip this very exec (whose -c text names it too).
_RSS_SCRIPT = r"""
import os
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
        if (int(pid) != os.getpid() and os.path.basename(argv[0]).startswith(b'python')
                and any(arg.endswith(b'swiftdeploy_app.py') for arg in argv)):
            for line in open(f'/proc/{pid}/status'):
                if line.startswith('VmRSS:'):
                    print(line.split()[1])
                    raise SystemExit
    except OSError:
        pass
raise SystemExit('swiftdeploy_app process not found')
"""


def app_rss_kb(container):
    argv = ["docker", "exec", container, "python3", "-c", _RSS_SCRIPT]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip())


def metrics_size():
    status, body = get_bytes(ADMIN_PORT, "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics on the admin port answered {status}")
    return len(body)


def flood(total, workers):
    """Send `total` GETs to distinct /r/<uuid4> paths from `workers` keep-alive connections."""
    tickets = itertools.count()  # next() on a count is atomic under the GIL
    stop = threading.Event()  # set on Ctrl-C, so teardown does not wait for the whole flood

    def worker():
        statuses = Counter()
        conn = connect(PUBLIC_PORT)
        while not stop.is_set() and next(tickets) < total:
            path = f"/r/{uuid.uuid4()}"
            try:
                status, _elapsed = timed_request(conn, "GET", path)
                statuses[status] += 1
            except (OSError, http.client.HTTPException) as exc:
                # A keep-alive connection closed by nginx; count it and open a fresh one.
                statuses[f"error {type(exc).__name__}"] += 1
                conn.close()
                conn = connect(PUBLIC_PORT)
        conn.close()
        return statuses

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(worker) for _index in range(workers)]
        try:
            totals = sum((future.result() for future in futures), Counter())
        except BaseException:
            stop.set()
            raise
    return totals, time.monotonic() - started


def bench_memory():
    print(f"\n== 3. /metrics size and app RSS around {FLOOD_REQUESTS:,} requests to distinct paths ==")
    container = app_container()
    size_before, rss_before = metrics_size(), app_rss_kb(container)
    statuses, seconds = flood(FLOOD_REQUESTS, FLOOD_WORKERS)
    size_after, rss_after = metrics_size(), app_rss_kb(container)
    print(f"  flood: {sum(statuses.values())} requests in {seconds:.1f} s "
          f"({sum(statuses.values()) / seconds:.0f} req/s), statuses {dict(sorted(statuses.items(), key=str))}")
    print(f"  /metrics: {size_before} B before, {size_after} B after")
    print(f"  app RSS:  {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after "
          f"({(rss_after - rss_before) / 1024:+.2f} MiB)")
    return {"metrics_before": size_before, "metrics_after": size_after,
            "rss_before_kb": rss_before, "rss_after_kb": rss_after, "statuses": statuses}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def verdict(ok):
    return "PASS" if ok else "FAIL"


def summary_rows(wrk, isolation=None, memory=None):
    rows = []
    for connections, r in wrk.items():
        rows.append((f"GET / c={connections}: req/s, p50, p99",
                     f"{r['rps']:.0f} req/s, {r['p50_ms']:.2f} ms, {r['p99_ms']:.2f} ms", "-", "-"))
    p99 = wrk[64]["p99_ms"]
    rows.append(("GET / p99 at 64 connections", f"{p99:.2f} ms", f"<= {TARGET_P99_MS:.0f} ms",
                 verdict(p99 <= TARGET_P99_MS)))
    bad = sum(r["non2xx"] + r["socket_errors"] for r in wrk.values())
    rows.append(("GET / non-2xx + socket errors (wrk)", str(bad), "0", verdict(bad == 0)))
    if isolation is None or memory is None:
        return rows
    base, busy = isolation["base"], isolation["busy"]
    rows.append(("/healthz p50 idle -> with 4 slow in flight", f"{base['p50']:.2f} -> {busy['p50']:.2f} ms",
                 f"<= 2x (+1 ms), < {TARGET_NORMAL_MS:.0f} ms", verdict(isolation["unaffected"])))
    size = memory["metrics_after"]
    rows.append(("/metrics size after flood", f"{size} B ({memory['metrics_before']} B before)",
                 f"<= {TARGET_METRICS_BYTES} B", verdict(size <= TARGET_METRICS_BYTES)))
    growth = memory["rss_after_kb"] - memory["rss_before_kb"]
    rows.append(("app RSS growth after flood", f"{growth / 1024:+.2f} MiB",
                 f"<= {TARGET_RSS_GROWTH_KB // 1024} MiB", verdict(growth <= TARGET_RSS_GROWTH_KB)))
    return rows


def print_table(rows, title="Summary"):
    header = ("figure", "value", "target", "PASS/FAIL")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(4)]

    def line(row):
        return " | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
    print(f"\n== {title} ==")
    print(line(header))
    print("-+-".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


# ---------------------------------------------------------------------------

def _interrupt(signum, frame):
    # SIGTERM/SIGHUP take the same path as Ctrl-C, so the finally block still tears down.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def check_tools():
    missing = [tool for tool in ("wrk", "docker", "ansible-playbook")
               if not shutil.which(tool, path=ansible_env()["PATH"])]
    if missing:
        raise DeployError(f"required tools not found: {', '.join(missing)} (wrk: apt-get install wrk)")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--only", choices=("throughput",),
                        help="run only this part (for comparing app variants); default: all three")
    parser.add_argument("--image", help="app image to deploy instead of the manifest's services.image")
    parser.add_argument("--keep-sysctl", action="store_true",
                        help="leave net.ipv4.tcp_tw_reuse as it is (see above)")
    parser.add_argument("--keepalive-timeout", type=int, metavar="SECONDS",
                        help="nginx.keepalive_timeout for the bench stack instead of the manifest's")
    return parser.parse_args(argv)


def final_teardown(work_dir, project_dir):
    """The benchmarks' last step, from their finally blocks: tear the stack down and remove the
    work directory once it is gone (kept, with the manifest, when the stack could not be removed)."""
    print("\n  tearing down")
    try:
        gone = teardown(work_dir, project_dir)
    except KeyboardInterrupt:
        print(f"  teardown interrupted; remove the stack by hand (docker compose -p {STACK} down -v)")
        gone = False
    if gone:
        shutil.rmtree(work_dir, ignore_errors=True)


TW_REUSE = Path("/proc/sys/net/ipv4/tcp_tw_reuse")


def reuse_time_wait(keep):
    """Set tcp_tw_reuse=1 for the bench (see the module docstring); return the value to restore,
    or None when nothing was changed."""
    try:
        before = TW_REUSE.read_text().strip()
    except OSError:
        return None
    if keep or before == "1":
        print(f"  net.ipv4.tcp_tw_reuse {before} (left as it is)")
        return None
    try:
        TW_REUSE.write_text("1\n")
    except OSError as exc:
        print(f"  net.ipv4.tcp_tw_reuse {before}: cannot set it to 1 ({exc.strerror}); run as root, or expect "
              "connection set-up to dominate when keep-alive is off")
        return None
    print(f"  net.ipv4.tcp_tw_reuse 1 for the bench (was {before}; restored at the end)")
    return before


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens under make or a pipe
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # respect nohup
            signal.signal(signum, _interrupt)
    work_dir = tempfile.mkdtemp(prefix="swiftdeploy-bench-")
    project_dir = Path(work_dir) / "project"
    print(f"SwiftDeploy app benchmark: stack {STACK}, public :{PUBLIC_PORT}, admin 127.0.0.1:{ADMIN_PORT}")
    restore_tw_reuse = reuse_time_wait(args.keep_sysctl)
    try:
        check_tools()
        manifest = yaml.safe_load((REPO / "manifest.yml").read_text())
        describe_image(args.image or manifest["services"]["image"])
        keepalive = (args.keepalive_timeout if args.keepalive_timeout is not None
                     else manifest["nginx"].get("keepalive_timeout", 0))
        print(f"  nginx.keepalive_timeout {keepalive} s: "
              + ("client connections are kept alive" if keepalive else "a new client connection per request"))
        deploy(work_dir, project_dir, "stable", args.image, args.keepalive_timeout)
        wrk = bench_throughput()
        isolation = memory = None
        if args.only != "throughput":
            memory = bench_memory()
            # POST /chaos only works on an app in canary mode. services.mode applies to a stack's
            # first deploy only (a redeploy keeps the live mode), so the stack is deployed anew.
            print("\n  deploying anew in canary mode for the chaos measurement")
            teardown(work_dir, project_dir)
            deploy(work_dir, project_dir, "canary", args.image, args.keepalive_timeout)
            isolation = bench_isolation()
        print_table(summary_rows(wrk, isolation, memory))
        status = 0
    except DeployError as exc:
        print(f"\nERROR: the stack could not be deployed: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("\ninterrupted; tearing down", file=sys.stderr)
        status = 130
    finally:
        # Never leave the bench stack behind, whatever happened above.
        final_teardown(work_dir, project_dir)
        if restore_tw_reuse is not None:
            TW_REUSE.write_text(restore_tw_reuse + "\n")
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
