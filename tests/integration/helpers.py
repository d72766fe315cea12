"""Small helpers several integration test files share (import them: `from helpers import ...`).

  http_get(port, path="/", host="127.0.0.1")
      one GET on a fresh connection: (status, headers as a dict, body bytes)
  version_served(port, host="127.0.0.1")
      (status, the "version" of the JSON body of /): which release a stack serves
  failing_image(parent, tag, percent)
      a context manager: `parent` (a third-party-style app image) with FAIL_PERCENT=`percent`
      baked in, as `tag`, built when missing or stale (thirdparty_images.build_failing) and
      removed at the end
  own_stack(name, ports, more=None)
      write_manifest overrides for a stack of its own: its name, (public, admin) ports, network,
      log volume and contact, and `more` (dotted keys)
  LocalStack(tmp_path, write_manifest, run_playbook, name, ports, overrides=None)
      a stack of its own on this machine's engine, its project directory under tmp_path: manifest
      (own_stack with `overrides`), manifest_with(label, changes) (another manifest of it), args,
      run(playbook, *args, manifest=None), teardown(*args), deployed(*teardown_args) (a context:
      deployed for the block, torn down after it), state, history
  Background()
      a context manager that runs the subclass's _run() in a daemon thread from `with` to its
      end; _run loops until self._stop is set
  AutoStack(tmp_path, fixtures, name, ports, steps, baseline="stable")
      a stack for promote.yml -e mode=auto: manifest_for(version, max_duration, **analysis), run,
      command (the promote's argv, to run it as a process of one's own), state, history,
      chaos_when_the_canary_starts(rate, deadline, chaos): errors (or `chaos`) in the canary once it runs,
      chaos_in_the_background(rate, chaos): the same from a thread, while the `with` block runs,
      killed_after_looks(manifest, since, looks): a promote -e mode=auto run as a process of its own,
      killed (SIGKILL, its whole process group) once the history has `looks` judgements after `since`
  judged(history, since)
      the canary_judged events of a history from index `since`
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "thirdparty_app"))
import thirdparty_images  # noqa: E402  pylint: disable=wrong-import-position


def http_get(port, path="/", host="127.0.0.1"):
    """One GET on a fresh connection: (status, headers as a dict, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def version_served(port, host="127.0.0.1"):
    """(status, version) of the release that answers / on host:port."""
    status, _headers, body = http_get(port, host=host)
    return status, json.loads(body)["version"]


@contextlib.contextmanager
def failing_image(parent, tag, percent):
    """`parent` answering `percent` of every 100 requests to / with a 500, as `tag`, for the
    `with` block; removed after it."""
    try:
        thirdparty_images.build_failing(tag, parent, percent)
    except thirdparty_images.BuildError as exc:
        pytest.fail(str(exc))
    try:
        yield tag
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)


def own_stack(name, ports, more=None):
    """write_manifest overrides for a stack of its own: name, (public, admin) ports, network,
    log volume and contact apart from every other test's, and `more` ({dotted key: value})."""
    port, admin_port = ports
    return dict({"stack": name, "nginx.port": port, "nginx.admin_port": admin_port,
                 "network.name": "%s-net" % name, "services.log_volume": "%s-logs" % name,
                 "contact": "oncall@%s.example" % name}, **(more or {}))


class LocalStack:
    """A stack of its own on this machine's engine, its project directory under tmp_path."""

    def __init__(self, tmp_path, write_manifest, run_playbook, name, ports, overrides=None):
        self.tmp_path = tmp_path
        self.project = tmp_path / "project"
        self._write, self._run = write_manifest, run_playbook
        self.name, (self.port, self.admin_port) = name, ports
        self.overrides = own_stack(name, ports, overrides)
        self.manifest = self._write(tmp_path / "manifest.yml", self.overrides)

    def manifest_with(self, label, changes):
        """Another manifest of the stack: its overrides with `changes` ({dotted key: value})."""
        return self._write(self.tmp_path / ("manifest-%s.yml" % label), dict(self.overrides, **changes))

    def args(self, manifest=None):
        return ("-e", "swiftdeploy_manifest=%s" % (manifest or self.manifest),
                "-e", "swiftdeploy_project_dir=%s" % self.project)

    def run(self, playbook, *args, manifest=None):
        return self._run(playbook, *self.args(manifest), *args)

    def teardown(self, *args):
        return self._run("teardown", *self.args(), *args)

    @contextlib.contextmanager
    def deployed(self, *teardown_args):
        """The stack deployed (deploy.yml must succeed) while the block runs, torn down after it
        (teardown.yml with teardown_args), whatever happens."""
        try:
            run = self.run("deploy")
            assert run.rc == 0, run.describe()
            yield self
        finally:
            self.teardown(*teardown_args)

    def state(self):
        return json.loads((self.project / "state.json").read_text())

    def history(self):
        path = self.project / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Background:
    """Runs the subclass's _run() in a daemon thread while the `with` block runs; _run loops
    until self._stop is set (and may wait on it)."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=30)


class AutoStack(LocalStack):
    """A stack of its own for promote.yml -e mode=auto tests (test_auto_rollout, test_fresh_baseline).

    fixtures: (write_manifest, run_playbook, ansible_env, repo_root), the conftest fixtures;
    ports: (public, admin); steps: canary.steps; a 2 s interval, so a rollout takes seconds."""

    INTERVAL = 2

    def __init__(self, tmp_path, fixtures, name, ports, steps, baseline="stable"):
        write_manifest, run_playbook, self.env, self.repo_root = fixtures
        self.steps, self.baseline = steps, baseline
        super().__init__(tmp_path, write_manifest, run_playbook, name, ports, self.rollout("1.0.0"))

    def rollout(self, version, max_duration=60, **analysis):
        """The overrides of a rollout to `version`."""
        return {
            "canary": {"weight": 10, "version": version, "steps": self.steps, "interval_seconds": self.INTERVAL,
                       "max_duration_seconds": max_duration},
            # A fixed latency bound (an objective) well above this shared machine's scheduling
            # noise: the tests are about errors and failed requests; the bound chosen from the
            # baseline is tested on its own (test_auto.py, test_auto_rollout.py).
            "analysis": dict({"baseline": self.baseline, "min_canary_requests": 40, "latency_bound_seconds": 0.25},
                             **analysis),
            # Other test suites load this machine: the host gate's load limit is not under test.
            "policy": {"thresholds": {"min_requests": 10, "max_cpu_load": 1000}}}

    def manifest_for(self, version, max_duration=60, **analysis):
        return self.manifest_with(version, self.rollout(version, max_duration, **analysis))

    def command(self, manifest):
        return ["ansible-playbook", str(self.repo_root / "playbooks" / "promote.yml"), *self.args(manifest),
                "-e", "mode=auto"]

    def killed_after_looks(self, manifest, since, looks, deadline=120):
        """promote.yml -e mode=auto with `manifest`, run as a process of its own and killed
        (SIGKILL, its whole process group: no cleanup runs) once the history holds `looks`
        judgements after index `since`; the judgements it made (at least `looks`)."""
        killed = subprocess.Popen(self.command(manifest), cwd=self.repo_root, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        started = time.monotonic()
        while time.monotonic() - started < deadline and len(judged(self.history(), since)) < looks:
            time.sleep(0.1)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        made = judged(self.history(), since)
        assert len(made) >= looks, killed.stdout.read().decode()
        return made

    @contextlib.contextmanager
    def chaos_in_the_background(self, rate, chaos=None):
        """chaos_when_the_canary_starts(rate, chaos=chaos) in a thread while the block runs,
        joined at its end: yields {"at": the time the canary took it, or None}."""
        injected = {}
        watcher = threading.Thread(target=lambda: injected.update(
            at=self.chaos_when_the_canary_starts(rate, chaos=chaos)))
        watcher.start()
        try:
            yield injected
        finally:
            watcher.join()

    def chaos_when_the_canary_starts(self, rate, deadline=60, chaos=None):
        """Watch state.json; once a canary runs, make it fail `rate` of its requests (or apply
        `chaos`, a /chaos body) through the admin port. The time, or None after `deadline` s."""
        started = time.monotonic()
        while time.monotonic() - started < deadline:
            try:
                state = self.state()
            except (OSError, ValueError):
                state = {}
            if state.get("canary"):
                # state.json may name the canary a moment before nginx routes /chaos to it (the
                # stable slot answers 403 until then): try again until the canary takes it.
                conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
                conn.request("POST", "/chaos", body=json.dumps(chaos or {"mode": "error", "rate": rate}),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    return time.time()
            time.sleep(0.05)
        return None


def judged(history, since):
    return [entry for entry in history[since:] if entry["event"] == "canary_judged"]
