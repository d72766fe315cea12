"""Rolling deploy benchmark over a fleet of three real Docker hosts (docs/fleet-rollout.md).

Starts its own three fleet hosts (tests/integration/fleet.py: each a container with its own
dockerd and sshd, reached over SSH at its own address), ships two releases of the example app to
them (a warm-up: every later deploy finds its images there), then times, switching the release
each time, with continuous HTTP traffic on every host's own address:

  - a rolling deploy over the 3 hosts with batch 1 (one host after the other),
  - a rolling deploy over the 3 hosts with batch 100% (all three side by side),
  - a deploy of one host alone (deploy.yml without a batch, an inventory of one host),

(each client paced to RATE requests a second, two per host) and prints each wall time
(the median of --rounds), the failed requests per host (target 0) and the ratio batch 100% /
one host (target <= 1.5), with how busy the machine's CPUs were meanwhile (the fleet hosts are
containers on this machine: three hosts deploying side by side share its CPUs) and the CPU
seconds each part spent: the controller (ansible-playbook and every process it started, ssh
included), the fleet hosts (each host container's own processes: sshd, the modules' Python,
docker compose, its dockerd; not the stack's containers, which serve the load) and the load
generator (this process). Everything it started is removed at the end.
Exit status 0 whatever the figures (a benchmark, not a test); 2 when a playbook fails.

    make bench-fleet      (or: .venv/bin/python scripts/bench_fleet.py [--rounds N])
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
from fleet import Fleet  # noqa: E402  pylint: disable=wrong-import-position
from traffic import Traffic  # noqa: E402  pylint: disable=wrong-import-position

STACK = "benchfleet"
PORT = 18580
APP_IMAGE = "swift-deploy-1-node:latest"
RELEASES = {"1.0.0": "swiftdeploy-bench/fleet:1", "2.0.0": "swiftdeploy-bench/fleet:2"}
TARGET_RATIO = 1.5


# Requests per second each client sends (two clients per host). Paced: unpaced clients (about
# 500 requests a second per host) would take this 2-CPU machine's time from the deploys they
# measure, and more so when three hosts deploy side by side.
RATE = 50
CLIENTS_PER_HOST = 2
TIMEOUT = 10.0


class HostTraffic(Traffic):
    """What a fleet host's clients were answered (Traffic's responses, failures, successes); the
    clients themselves are PacedLoad's."""

    def __init__(self, address, port):
        super().__init__(port, threads=0, host=address)
        self.address = address


def parse_response(buffer, closed=False):
    """(status, keep-alive) once `buffer` holds a whole HTTP/1.1 response, else None. closed:
    the server closed the connection (the end of a body without a length)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buffer[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _sep, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    keep = lines[0].startswith("HTTP/1.1") and headers.get("connection") != "close"
    body = buffer[end + 4:]
    if "content-length" in headers:
        complete = len(body) >= int(headers["content-length"])
    elif headers.get("transfer-encoding") == "chunked":
        complete = body.endswith(b"0\r\n\r\n")
    else:
        complete = closed or status in (204, 304) or 100 <= status < 200
    return (status, keep) if complete else None


class _Client:
    """One keep-alive connection of PacedLoad: one request in flight, the next due RATE times a
    second."""

    def __init__(self, traffic, start):
        self.traffic = traffic
        self.request = ("GET / HTTP/1.1\r\nHost: %s:%d\r\nAccept-Encoding: identity\r\n\r\n"
                        % (traffic.address, traffic.port)).encode("ascii")
        self.sock = None
        self.closed_by_server = False
        self.buffer = b""
        self.sent_at = None
        self.next_at = start


class PacedLoad(threading.Thread):
    """CLIENTS_PER_HOST keep-alive clients per host, each sending GET / RATE times a second, as
    http.client clients in threads did, in one thread over a selector: that load cost this
    process 0.1 s of CPU a second (http.client's header parsing, six threads waking 300 times a
    second), a third of what a fleet host's deploy costs it, on the CPUs the deploys share.
    A request is sent when the one before it was answered, at its due time or at once when
    late; a failure (a refused connection, a connection closed under the request: the server's
    close of an idle keep-alive connection is seen by the next request, as by http.client; no
    answer within TIMEOUT) is recorded by the exception's name and the client reconnects."""

    def __init__(self, traffics):
        super().__init__(daemon=True)
        start = time.monotonic()
        self.clients = [_Client(traffic, start) for traffic in traffics for _index in range(CLIENTS_PER_HOST)]
        self.selector = selectors.DefaultSelector()
        self.stopping = threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.join(timeout=30)

    def run(self):
        interval = 1.0 / RATE
        while not self.stopping.is_set():
            now = time.monotonic()
            for client in self.clients:
                if client.sent_at is None and client.next_at <= now:
                    self._send(client, now, interval)
                elif client.sent_at is not None and now - client.sent_at > TIMEOUT:
                    self._finish(client, "TimeoutError", interval, close=True)
            idle = [client.next_at for client in self.clients if client.sent_at is None]
            wait = min(idle) - time.monotonic() if idle else 0.05
            for key, _events in self.selector.select(min(0.05, max(0.0, wait))):
                self._receive(key.data, interval)
        for client in self.clients:
            self._close(client)
        self.selector.close()

    def _send(self, client, now, interval):
        if client.closed_by_server:
            # What http.client meets on a connection the server closed while it was idle.
            self._finish(client, "RemoteDisconnected", interval, close=True)
            return
        try:
            if client.sock is None:
                client.sock = socket.create_connection((client.traffic.address, client.traffic.port), timeout=TIMEOUT)
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.selector.register(client.sock, selectors.EVENT_READ, client)
            client.sock.sendall(client.request)
        except OSError as exc:
            self._finish(client, type(exc).__name__, interval, close=True)
            return
        client.buffer, client.sent_at = b"", now

    def _receive(self, client, interval):
        try:
            data = client.sock.recv(65536)
        except OSError as exc:
            if client.sent_at is not None:
                self._finish(client, type(exc).__name__, interval, close=True)
            else:
                self._close(client)
            return
        if client.sent_at is None:
            if not data:  # closed while idle: the next request finds out
                self.selector.unregister(client.sock)
                client.closed_by_server = True
            return
        client.buffer += data
        try:
            answer = parse_response(client.buffer, closed=not data)
        except (ValueError, IndexError):
            answer = ("BadStatusLine", False)
        if answer is None:
            if not data:
                self._finish(client, "RemoteDisconnected" if not client.buffer else "IncompleteRead", interval,
                             close=True)
            return
        status, keep = answer
        self._finish(client, status, interval, close=not keep or not data)

    def _finish(self, client, outcome, interval, close):
        with client.traffic._lock:  # pylint: disable=protected-access
            client.traffic.responses.append((time.monotonic(), outcome, False))
        client.sent_at = None
        client.next_at += interval
        if close:
            self._close(client)

    def _close(self, client):
        if client.sock is not None:
            if not client.closed_by_server:
                self.selector.unregister(client.sock)
            client.sock.close()
        client.sock, client.closed_by_server, client.buffer = None, False, b""


def cpu_times():
    """(busy, total) jiffies of the whole machine (/proc/stat): the fleet hosts are containers on
    it, so their work, Ansible's and the load's all count."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def children_cpu():
    """CPU seconds of this process's waited-for children: ansible-playbook and what it started."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu():
    """CPU seconds of this process: the load generator's client threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def container_cpu(container_id):
    """CPU seconds a container's cgroup has used (cgroup v1 cpuacct or v2 cpu.stat); None when
    neither is readable here."""
    candidates = [(Path("/sys/fs/cgroup/cpuacct/docker") / container_id / "cpuacct.usage", 1e-9),
                  (Path("/sys/fs/cgroup/system.slice") / f"docker-{container_id}.scope" / "cpu.stat", 1e-6),
                  (Path("/sys/fs/cgroup/docker") / container_id / "cpu.stat", 1e-6)]
    for path, unit in candidates:
        try:
            text = path.read_text(encoding="ascii")
        except OSError:
            continue
        if path.name == "cpu.stat":
            fields = dict(line.split() for line in text.splitlines() if line.strip())
            return int(fields["usage_usec"]) * unit
        return int(text.strip()) * unit
    return None


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=600)


def ansible_env():
    env = dict(os.environ)
    env["PATH"] = "%s%s%s" % (REPO / ".venv" / "bin", os.pathsep, env.get("PATH", ""))
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return env


class Bench:
    def __init__(self, fleet, hosts, workdir):
        self.fleet, self.hosts, self.workdir = fleet, hosts, workdir
        self.example = yaml.safe_load((REPO / "manifest.yml").read_text())
        self.cpu_busy = 0.0
        self.cpu_seconds = {}
        self.container_ids = [docker("inspect", "--format", "{{.Id}}", host.container).stdout.strip()
                              for host in hosts]

    def hosts_cpu(self):
        figures = [container_cpu(container_id) for container_id in self.container_ids]
        return None if None in figures else sum(figures)

    def manifest(self, version):
        data = dict(self.example, stack=STACK)
        data["services"] = dict(data["services"], image=RELEASES[version], version=version,
                                log_volume=f"{STACK}-logs")
        data["nginx"] = dict(data["nginx"], port=PORT, admin_port=PORT + 2)
        data["network"] = dict(data.get("network", {}), name=f"{STACK}-net")
        path = self.workdir / f"manifest-{version}.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def run(self, hosts, version, *args):
        inventory = self.fleet.inventory(self.workdir / f"inventory-{len(hosts)}.yml", hosts,
                                         swiftdeploy_image_source="controller",
                                         swiftdeploy_image_cache_dir=str(self.workdir / "cache"),
                                         swiftdeploy_anchor_dir=str(self.workdir / "anchors"))
        command = ["ansible-playbook", str(REPO / "playbooks" / "deploy.yml"), "-i", str(inventory),
                   "-e", f"swiftdeploy_manifest={self.manifest(version)}", *args]
        started = time.monotonic()
        proc = subprocess.run(command, cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False,
                              timeout=900)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            print("deploy.yml failed (%d):\n%s\n%s" % (proc.returncode, proc.stdout[-4000:], proc.stderr[-2000:]))
            sys.exit(2)
        return seconds

    def timed(self, hosts, version, *args):
        """Wall time of a deploy, and the failed requests on each host meanwhile."""
        loads = [HostTraffic(host.address, PORT) for host in self.hosts]
        clients = PacedLoad(loads).__enter__()
        busy_before, total_before = cpu_times()
        before = (children_cpu(), self.hosts_cpu(), own_cpu())
        try:
            seconds = self.run(hosts, version, *args)
        finally:
            after = (children_cpu(), self.hosts_cpu(), own_cpu())
            busy_after, total_after = cpu_times()
            clients.__exit__(None, None, None)
        self.cpu_busy = (busy_after - busy_before) / max(1, total_after - total_before)
        self.cpu_seconds = {part: (end - start if None not in (start, end) else None)
                            for part, start, end in zip(("controller", "hosts", "load"), before, after)}
        failed = {host.name: sum(load.failures().values()) for host, load in zip(self.hosts, loads)}
        served = {host.name: load.successes for host, load in zip(self.hosts, loads)}
        return seconds, failed, served

    def teardown(self):
        inventory = self.fleet.inventory(self.workdir / "inventory-all.yml", self.hosts)
        subprocess.run(["ansible-playbook", str(REPO / "playbooks" / "teardown.yml"), "-i", str(inventory),
                        "-e", f"swiftdeploy_manifest={self.manifest('1.0.0')}", "-e", "clean=true"],
                       cwd=REPO, env=ansible_env(), capture_output=True, check=False, timeout=600)


def cpu_line(seconds):
    return ", ".join("%s %.1f" % (part, value) for part, value in seconds.items() if value is not None) or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three deploys (default %(default)s)")
    rounds = parser.parse_args().rounds
    if rounds < 1:
        parser.error("--rounds: %d is not a number of rounds; give 1 or more" % rounds)
    if docker("image", "inspect", APP_IMAGE).returncode != 0:
        sys.exit(f"{APP_IMAGE} is missing: run scripts/build-images.sh (make setup does)")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(tmp)
        for key, image in RELEASES.items():
            (workdir / "Dockerfile").write_text(f"FROM {APP_IMAGE}\nLABEL org.swiftdeploy.bench.fleet={key}\n")
            if docker("build", "-q", "-t", image, str(workdir)).returncode != 0:
                sys.exit(f"building {image} failed")
        fleet = Fleet(workdir)
        try:
            hosts = fleet.hosts(3)
            bench = Bench(fleet, hosts, workdir)
            print("fleet: %s" % ", ".join(f"{host.name} {host.address}" for host in hosts))
            # Warm-up: every host gets both releases' images (shipped from here), so the timed
            # deploys measure the deploy itself.
            bench.run(hosts, "2.0.0")
            bench.run(hosts, "1.0.0")
            figures = collections.defaultdict(list)
            failures = collections.defaultdict(collections.Counter)
            answered = collections.Counter()
            busy = collections.defaultdict(list)
            cpu = collections.defaultdict(lambda: collections.defaultdict(list))
            version = "1.0.0"
            cases = [("rolling, 3 hosts, batch 1", hosts, ("-e", "swiftdeploy_batch=1")),
                     ("rolling, 3 hosts, batch 100%", hosts, ("-e", "swiftdeploy_batch=100%")),
                     ("one host alone", hosts[:1], ())]
            for round_number in range(1, rounds + 1):
                for name, targets, args in cases:
                    version = "2.0.0" if version == "1.0.0" else "1.0.0"
                    seconds, failed, served = bench.timed(targets, version, *args)
                    figures[name].append(seconds)
                    failures[name].update(failed)
                    answered.update(served)
                    busy[name].append(bench.cpu_busy)
                    for part, value in bench.cpu_seconds.items():
                        if value is not None:
                            cpu[name][part].append(value)
                    print("round %d: %-30s %6.1f s  CPUs busy %3.0f%%  failed requests %s  CPU s %s" % (
                        round_number, name, seconds, 100 * bench.cpu_busy, dict(failed), cpu_line(bench.cpu_seconds)))
                    if len(targets) == 1:
                        # Bring every host to the same release for the next round (untimed).
                        bench.run(hosts, version)
            print()
            print("%-32s %10s  %10s  %s" % ("median wall time", "seconds", "CPUs busy",
                                            "failed requests per host (target 0)"))
            for name, _targets, _args in cases:
                print("%-32s %10.1f  %9.0f%%  %s" % (
                    name, statistics.median(figures[name]), 100 * statistics.median(busy[name]), dict(failures[name])))
            print()
            print("%-32s %s" % ("median CPU seconds", "controller, fleet hosts, load generator"))
            for name, _targets, _args in cases:
                print("%-32s %s" % (name, cpu_line({part: statistics.median(values)
                                                   for part, values in cpu[name].items()})))
            ratio = statistics.median(figures[cases[1][0]]) / statistics.median(figures[cases[2][0]])
            print("ratio batch 100%% / one host: %.2f (target <= %.1f) %s" % (
                ratio, TARGET_RATIO, "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"))
            print("ratio batch 1 / one host: %.2f" % (
                statistics.median(figures[cases[0][0]]) / statistics.median(figures[cases[2][0]])))
            print("requests answered per host: %s" % dict(answered))
            bench.teardown()
        finally:
            fleet.close()
            for image in RELEASES.values():
                docker("rmi", image)


if __name__ == "__main__":
    main()
