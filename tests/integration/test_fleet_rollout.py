"""Rolling deploys over a fleet of three real Docker hosts, reached over SSH (docs/fleet-rollout.md).

The stack `rollout` (ports 18480/18482) runs on h1, h2 and h3 of the fleet (tests/integration/fleet.py),
its images shipped from this machine (`swiftdeploy_image_source: controller`). Each host's
manifest is an inventory host variable, so that one release can be broken on one host only: the
release 3.0.0 is `roll:3` on h1 and h3 and `rollbad:3` on h2, an image whose server answers
every request, its health path included, with 503. The images are loaded on the hosts first (one
archive, side by side), so each deploy finds them by ID and ships nothing. The tests run in order:
  every host on 1.0.0 (no batches: every host at once, as before);
  a rolling deploy of 2.0.0 in batches of 1 while each host's own address takes continuous
  traffic: batch after batch, every host on 2.0.0, no failed request anywhere, each host's
  history names the one rollout id and its batch;
  a rolling deploy of 3.0.0 in batches of 1: h1 is moved, h2 fails its health check, the rollout
  halts, h1 is reverted through its idle slot, h3 is untouched (no new event, same containers),
  every host serves 2.0.0 again, no failed request on any host, the play fails naming the halt,
  and the stats say which host serves which release.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import subprocess

import pytest
import yaml

from helpers import version_served
from traffic import Traffic

pytestmark = [pytest.mark.docker, pytest.mark.ssh, pytest.mark.slow]

STACK = "rollout"
PORT = 18480
PROJECT = f"/root/.swiftdeploy/{STACK}"
IMAGES = {"1": "swiftdeploy-test/roll:1", "2": "swiftdeploy-test/roll:2", "3": "swiftdeploy-test/roll:3",
          "bad": "swiftdeploy-test/rollbad:3"}


def docker(*args, timeout=300, **kwargs):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


@contextlib.contextmanager
def traffic_on(hosts):
    """Continuous traffic to each host's own address while the block runs: the loads, in order."""
    loads = [Traffic(PORT, host=host.address) for host in hosts]
    with contextlib.ExitStack() as stack:
        for load in loads:
            stack.enter_context(load)
        yield loads


def served(host):
    return version_served(PORT, host=host.address)


def assert_no_failed_request(hosts, loads):
    """Each host's own load (traffic_on): it kept being answered, and never with a failure."""
    for host, load in zip(hosts, loads):
        assert load.successes > 50, (host.name, load.successes)
        assert not load.failures(), (host.name, load.failures())


def assert_halted_at_h2(run, failure):
    """The play failed naming the halt: h2 failed (its message starts with failure, a regular
    expression), h1 went back to 2.0.0, h3 was not reached. The play's text, on one line."""
    assert run.rc != 0, run.describe()
    text = " ".join(run.stdout.split())
    assert re.search(r"Rollout \S+ halted at batch 2: h2 failed \(h2: " + failure, text), run.describe()
    assert "Reverted to the release they had before: h1 (2.0.0)." in text, run.describe()
    assert "Not reached (untouched): h3." in text, run.describe()
    return text


def host_results(stats):
    """{host name: its result} from the rollout's custom stats."""
    return {name: part["result"] for name, part in stats["hosts"].items()}


class Rollout:
    """The stack on three fleet hosts: one manifest per host (an inventory host variable)."""

    def __init__(self, hosts, workdir, write_manifest, ansible_env, repo_root, fleet):
        self.hosts = hosts
        self.workdir = workdir
        self.write_manifest = write_manifest
        self.env = dict(ansible_env, ANSIBLE_SHOW_CUSTOM_STATS="true")
        self.repo_root = repo_root
        self.fleet = fleet

    def manifest(self, name, image, version):
        return self.write_manifest(self.workdir / f"{name}.yml", {
            "stack": STACK, "services.image": image, "services.version": version, "nginx.port": PORT,
            "nginx.admin_port": PORT + 2, "network.name": f"{STACK}-net", "services.log_volume": f"{STACK}-logs",
            # The fleet's hosts share this machine's kernel and load average, which other test
            # suites raise: the host gate's load limit is not under test here (its failures are).
            "policy.thresholds.max_cpu_load": 1000})

    def inventory(self, manifests):
        """An inventory of the three hosts, each with its own manifest ({host name: path})."""
        path = self.fleet.inventory(self.workdir / "inventory.yml", self.hosts,
                                    swiftdeploy_image_source="controller",
                                    swiftdeploy_image_cache_dir=str(self.workdir / "cache"),
                                    swiftdeploy_anchor_dir=str(self.workdir / "anchors"))
        data = yaml.safe_load(path.read_text())
        for name, manifest in manifests.items():
            data["swiftdeploy"]["hosts"][name]["swiftdeploy_manifest"] = str(manifest)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def run(self, playbook, manifests, *args, timeout=600):
        command = ["ansible-playbook", str(self.repo_root / "playbooks" / f"{playbook}.yml"), "-i",
                   str(self.inventory(manifests)), *args]
        proc = subprocess.run(command, cwd=self.repo_root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr, command)

    def history(self, host):
        text = host.run("cat", f"{PROJECT}/history.jsonl").stdout
        return [json.loads(line) for line in text.splitlines()]

    def history_lengths(self):
        """{host name: how many records its history holds}, for records_since."""
        return {host.name: len(self.history(host)) for host in self.hosts}

    def records_since(self, lengths):
        """{host name: the records its history gained since history_lengths() gave lengths}."""
        return {host.name: self.history(host)[lengths[host.name]:] for host in self.hosts}

    def containers(self, host):
        return sorted(host.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={STACK}").stdout.split())


class Run:
    def __init__(self, rc, stdout, stderr, command):
        self.rc, self.stdout, self.stderr, self.command = rc, stdout, stderr, command

    def describe(self):
        return f"$ {' '.join(self.command)}\nrc={self.rc}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def stats(self):
        """The custom stats the play published (ANSIBLE_SHOW_CUSTOM_STATS)."""
        text = self.stdout.split("CUSTOM STATS:", 1)[1]
        start = text.index("{")
        return json.JSONDecoder().raw_decode(text[start:])[0]


# The broken release: it starts, listens on the app's port and answers every request, /healthz
# included, with 503, so both the stack's probe and the image's Docker HEALTHCHECK fail.
BROKEN_APP = """\
import http.server, os, signal
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
class Broken(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"broken release")
http.server.HTTPServer(("", int(os.environ.get("APP_PORT") or 3000)), Broken).serve_forever()
"""


@pytest.fixture(scope="module")
def images(app_image, tmp_path_factory):
    """Four images made from the example app: three releases and one whose health check fails."""
    context = tmp_path_factory.mktemp("rollout-images")
    (context / "broken.py").write_text(BROKEN_APP)
    for key, image in IMAGES.items():
        extra = 'COPY broken.py /app/broken.py\nCMD ["python3", "-u", "/app/broken.py"]\n' if key == "bad" else ""
        (context / "Dockerfile").write_text(f"FROM {app_image}\nLABEL org.swiftdeploy.test.rollout={key}\n{extra}")
        built = docker("build", "-q", "-t", image, str(context))
        assert built.returncode == 0, built.stderr
    yield IMAGES
    docker("rmi", *IMAGES.values())


def preload(hosts, images, workdir):
    """Every image in one archive (their shared layers once), loaded on the hosts side by side,
    so that the deploys find each image's ID there and ship nothing (the controller source's
    "already on hN with the same image ID")."""
    archive = workdir / "images.tar"
    saved = docker("save", "-o", str(archive), "nginx:latest", *images.values())
    assert saved.returncode == 0, saved.stderr

    def load(host):
        with archive.open("rb") as handle:
            return subprocess.run(host.ssh_command("docker", "load", "-q"), stdin=handle, capture_output=True,
                                  timeout=300, check=False)

    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        for host, done in zip(hosts, pool.map(load, hosts)):
            assert done.returncode == 0, (host.name, done.stderr)
    archive.unlink()


@pytest.fixture(scope="module")
def rollout(fleet, images, write_manifest, ansible_env, repo_root, tmp_path_factory):
    hosts = fleet.hosts(3)
    workdir = tmp_path_factory.mktemp("rollout")
    preload(hosts, images, workdir)
    stack = Rollout(hosts, workdir, write_manifest, ansible_env, repo_root, fleet)
    yield stack
    v1 = stack.manifest("v1", images["1"], "1.0.0")
    stack.run("teardown", {host.name: v1 for host in hosts}, "-e", "clean=true")


@pytest.fixture(scope="module")
def on_v1(rollout, images):
    manifest = rollout.manifest("v1", images["1"], "1.0.0")
    run = rollout.run("deploy", {host.name: manifest for host in rollout.hosts})
    assert run.rc == 0, run.describe()
    # No batch setting: one play over every host at once, as before.
    assert "SwiftDeploy rolling deploy" in run.stdout and "CUSTOM STATS" in run.stdout
    assert "swiftdeploy_rollout" not in run.stdout.split("CUSTOM STATS:", 1)[1], run.describe()
    return run


def test_a_rolling_deploy_in_batches_of_one_keeps_every_host_serving(rollout, on_v1, images):
    hosts = rollout.hosts
    assert [served(host) for host in hosts] == [(200, "1.0.0")] * 3
    before = rollout.history_lengths()
    manifest = rollout.manifest("v2", images["2"], "2.0.0")
    with traffic_on(hosts) as loads:
        run = rollout.run("deploy", {host.name: manifest for host in hosts}, "-e", "swiftdeploy_batch=1")
    assert run.rc == 0, run.describe()
    assert_no_failed_request(hosts, loads)
    assert [served(host) for host in hosts] == [(200, "2.0.0")] * 3

    # One play run per batch, in inventory order.
    batches = re.findall(r"^PLAY \[SwiftDeploy rolling deploy, batch after batch\]", run.stdout, re.M)
    assert len(batches) == 3, run.describe()
    # Each host's history: its deploy, then the rollout's id and its batch; one id for the run.
    records = rollout.records_since(before)
    ids = set()
    for number, host in enumerate(hosts, 1):
        events = [record["event"] for record in records[host.name]]
        assert events[-2:] == ["deploy", "rollout_batch"], events
        details = records[host.name][-1]["details"]
        assert details["batch"] == number and details["batches"] == [1] and details["result"] == "deployed"
        assert details["from"]["version"] == "1.0.0" and details["version"] == "2.0.0"
        ids.add(details["id"])
    assert len(ids) == 1, ids
    # Batch after batch: a host's deploy starts after the previous batch recorded its end.
    for earlier, later in zip(hosts, hosts[1:]):
        deploy_later = [r for r in records[later.name] if r["event"] == "deploy"][-1]
        assert records[earlier.name][-1]["timestamp"] <= deploy_later["timestamp"]

    stats = run.stats()["swiftdeploy_rollout"]
    assert stats["summary"]["result"] == "completed" and stats["summary"]["id"] in ids
    assert stats["summary"]["releases"] == {"2.0.0": [host.name for host in hosts]}
    assert host_results(stats) == {h.name: "deployed" for h in hosts}


def test_a_release_failing_on_the_second_host_halts_and_reverts_the_first(rollout, on_v1, images):
    hosts = rollout.hosts
    h1, h2, h3 = hosts
    assert [served(host) for host in hosts] == [(200, "2.0.0")] * 3, "the previous test must have run"
    before = rollout.history_lengths()
    h3_containers = rollout.containers(h3)
    good = rollout.manifest("v3", images["3"], "3.0.0")
    bad = rollout.manifest("v3-bad", images["bad"], "3.0.0")
    with traffic_on(hosts) as loads:
        run = rollout.run("deploy", {h1.name: good, h2.name: bad, h3.name: good}, "-e", "swiftdeploy_batch=1",
                          "-e", "swiftdeploy_deploy_health_timeout=20")
    text = assert_halted_at_h2(run, "")
    # Zero failed requests on every host, each probed on its own address.
    assert_no_failed_request(hosts, loads)
    # Every host serves the release it had; h2 never routed to the broken one.
    assert [served(host) for host in hosts] == [(200, "2.0.0")] * 3
    # h2's failed step was undone: its state names the release it serves, its files do not name
    # the broken slot, and no container of it is left (a restarted nginx routes as before).
    h2_state = json.loads(h2.run("cat", f"{PROJECT}/state.json").stdout)
    assert h2_state["canary"] is None and h2_state["slots"][h2_state["stable"]]["version"] == "2.0.0", h2_state
    assert list(h2_state["slots"]) == [h2_state["stable"]], h2_state
    idle = ({"blue", "green"} - {h2_state["stable"]}).pop()
    assert f"app-{idle}" not in h2.run("cat", f"{PROJECT}/docker-compose.yml").stdout
    assert f"{STACK}-app-{idle}-1" not in h2.docker("ps", "-a", "--format", "{{.Names}}").stdout
    assert "the step was undone (removed app-" in text, run.describe()

    records = rollout.records_since(before)
    h1_events = [record["event"] for record in records[h1.name]]
    assert h1_events[:2] == ["deploy", "rollout_batch"], h1_events
    assert "rollback_release" in h1_events and h1_events[-1] == "rollout_revert", h1_events
    rollout_id = records[h1.name][1]["details"]["id"]
    revert = records[h1.name][-1]["details"]
    assert revert["id"] == rollout_id and revert["batch"] == 1 and revert["result"] == "reverted"
    assert revert["reverted_from"]["version"] == "3.0.0" and revert["version"] == "2.0.0"
    rollback = [r for r in records[h1.name] if r["event"] == "rollback_release"][0]["details"]
    assert rollout_id in rollback["reason"] and rollback["to"]["version"] == "2.0.0"
    halted = [r for r in records[h2.name] if r["event"] == "rollout_halted"]
    assert len(halted) == 1, records[h2.name]
    assert halted[0]["details"]["id"] == rollout_id and halted[0]["details"]["batch"] == 2
    assert halted[0]["details"]["version"] == "2.0.0" and halted[0]["details"]["release"]["version"] == "3.0.0"
    assert halted[0]["details"]["failure"], halted[0]
    # h3: not even locked, no event, the same containers.
    assert records[h3.name] == []
    assert rollout.containers(h3) == h3_containers

    stats = run.stats()["swiftdeploy_rollout"]
    summary = stats["summary"]
    assert (summary["result"], summary["halted_batch"], summary["failed"], summary["reverted"],
            summary["not_reached"]) == ("halted", 2, ["h2"], ["h1"], ["h3"]), summary
    assert summary["releases"] == {"2.0.0": ["h1", "h2"], "unchanged (not reached)": ["h3"]}, summary
    assert host_results(stats) == {"h1": "reverted", "h2": "failed", "h3": "not_reached"}


def test_a_host_that_does_not_answer_halts_the_rollout_and_the_first_is_reverted(rollout, on_v1, images):
    """h2's sshd is down when its batch starts (its stack still serves): Ansible would take it out
    of the play and, its batch being all of it, end the playbook before any revert. The rollout
    counts it as the batch's failure instead: halted at batch 2, h1 reverted, h3 untouched."""
    hosts = rollout.hosts
    h1, h2, h3 = hosts
    assert [served(host) for host in hosts] == [(200, "2.0.0")] * 3, "the previous tests must have run"
    before = rollout.history_lengths()
    h3_containers = rollout.containers(h3)
    good = rollout.manifest("v3", images["3"], "3.0.0")
    with traffic_on(hosts) as loads:
        # Every sshd process, so no SSH master of an earlier run can still reach h2 either.
        stopped = docker("exec", h2.container, "pkill", "-x", "sshd")
        assert stopped.returncode == 0, stopped.stderr
        try:
            run = rollout.run("deploy", {host.name: good for host in hosts}, "-e", "swiftdeploy_batch=1")
        finally:
            docker("exec", h2.container, "/usr/sbin/sshd")
    assert_halted_at_h2(run, r"unreachable when its batch started \(")
    assert_no_failed_request(hosts, loads)
    assert [served(host) for host in hosts] == [(200, "2.0.0")] * 3
    records = rollout.records_since(before)
    h1_events = [record["event"] for record in records[h1.name]]
    assert h1_events[:2] == ["deploy", "rollout_batch"] and h1_events[-1] == "rollout_revert", h1_events
    assert records[h2.name] == [] and records[h3.name] == []
    assert rollout.containers(h3) == h3_containers
    stats = run.stats()["swiftdeploy_rollout"]
    assert host_results(stats) == {"h1": "reverted", "h2": "failed", "h3": "not_reached"}
    releases = {"2.0.0": ["h1"], "unknown (unreachable)": ["h2"], "unchanged (not reached)": ["h3"]}
    assert stats["summary"]["releases"] == releases, stats["summary"]


@pytest.mark.parametrize("value, message", [
    ("0", "-e swiftdeploy_batch: 0 is out of range; use a number of hosts (1 or more)"),
    ("[1,half]", "-e swiftdeploy_batch[1]: half is not a batch size; use a number of hosts (1 or more)"),
])
def test_a_bad_batch_setting_stops_the_run_before_any_host(run_playbook, value, message):
    """Read while the plays' keywords are templated: nothing runs, no traceback."""
    run = run_playbook("deploy", "-e", f"swiftdeploy_batch={value}")
    assert run.rc != 0, run.describe()
    text = " ".join(run.output.split())
    assert message in text and "Nothing was deployed." in text, run.describe()
    assert "Traceback" not in run.output and "TASK [" not in run.stdout, run.describe()
