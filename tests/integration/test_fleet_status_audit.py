"""status.yml and audit.yml on a fleet of 3 real Docker hosts, reached over SSH.

One stack (fleetobs, port 18480) is deployed to the 3 hosts, its images shipped from the
controller. Known traffic goes to each host's own address (a different count each), then
status.yml prints one table with a row per host and the fleet's row, whose figures are the
hosts' windows merged (checked against _metrics.combine of the per-host windows it publishes,
not an average); set_stats holds the 3 hosts' reports keyed by inventory_hostname and the
fleet's summary. A fourth inventory host that cannot be reached is a row that says so.
audit.yml writes the per-host reports and one fleet report (at a path chosen here) naming the
three hosts, with one timeline; a history edited on one host makes that host's row BROKEN in the
fleet report and fails the play naming it, while the other hosts stay verified.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import combine  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.ssh, pytest.mark.slow]

STACK, PORT, ADMIN_PORT = "fleetobs", 18480, 18482
PROJECT = f"/root/.swiftdeploy/{STACK}"
SENT = {"h1": 12, "h2": 30, "h3": 51}  # requests sent to each host between two status runs


def send(address, count):
    conn = http.client.HTTPConnection(address, PORT, timeout=10)
    try:
        for _request in range(count):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()


def custom_stats(stdout):
    """The set_stats data the default callback prints with ANSIBLE_SHOW_CUSTOM_STATS=1."""
    (line,) = [line for line in stdout.splitlines() if line.startswith("\tRUN: ")]
    return json.loads(line[len("\tRUN: "):])


class FleetObs:
    def __init__(self, hosts, inventory, manifest, workdir, ansible_env, repo_root):
        self.hosts = hosts
        self.inventory = inventory
        self.manifest = manifest
        self.workdir = workdir
        self.env = dict(ansible_env, ANSIBLE_SHOW_CUSTOM_STATS="1")
        self.repo_root = repo_root

    def run(self, playbook, *args, inventory=None):
        command = ["ansible-playbook", str(self.repo_root / "playbooks" / f"{playbook}.yml"),
                   "-i", str(inventory or self.inventory), "-e", f"swiftdeploy_manifest={self.manifest}",
                   "-e", f"swiftdeploy_image_cache_dir={self.workdir / 'cache'}",
                   "-e", f"swiftdeploy_anchor_dir={self.workdir / 'anchors'}", *args]
        proc = subprocess.run(command, cwd=self.repo_root, env=self.env, capture_output=True, text=True,
                              timeout=600, check=False)
        proc.describe = lambda: "$ %s\nrc=%s\n%s\n%s" % (" ".join(command), proc.returncode, proc.stdout, proc.stderr)
        return proc


@pytest.fixture(scope="module")
def obs(fleet, write_manifest, tmp_path_factory, ansible_env, repo_root):
    workdir = tmp_path_factory.mktemp("fleetobs")
    hosts = fleet.hosts(3)
    manifest = write_manifest(workdir / "manifest.yml", {
        "stack": STACK, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT, "network.name": f"{STACK}-net",
        "services.log_volume": f"{STACK}-logs"})
    inventory = fleet.inventory(workdir / "inventory.yml", hosts)
    stack = FleetObs(hosts, inventory, manifest, workdir, ansible_env, repo_root)
    try:
        deploy = stack.run("deploy", "-e", "swiftdeploy_image_source=controller")
        assert deploy.returncode == 0, deploy.describe()
        yield stack
    finally:
        stack.run("teardown", "-e", "clean=true", "-e", "purge_history=true")
        for host in hosts:
            left = host.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={STACK}").stdout.split()
            assert left == [], f"teardown left containers of {STACK} on {host.name}: {left}"


@pytest.fixture(scope="module")
def status_run(obs):
    first = obs.run("status")  # each host's first refresh keeps the sample the next one starts from
    assert first.returncode == 0, first.describe()
    for host in obs.hosts:
        send(host.address, SENT[host.name])
    return obs.run("status")


def test_status_prints_one_table_with_a_row_per_host_and_the_fleets(obs, status_run):
    assert status_run.returncode == 0, status_run.describe()
    out = status_run.stdout
    assert f"SwiftDeploy fleet status: stack {STACK}, 3 hosts (refresh 1 of 1)" in out, out
    rows = {match[0]: match for match in re.findall(
        r'"(h[123]) +(1\.0\.0) +(stable) +(blue|green) +([0-9.]+) +([0-9.]+%) +([0-9.]+ ms) +(PASS|FAIL) +(PASS|FAIL)"', out)}
    assert sorted(rows) == ["h1", "h2", "h3"], out
    assert re.search(r'"fleet \(3 of 3 measured\) +1 release +- +- +[0-9.]+ +0\.00% +[0-9.]+ ms +[0-3]/3 PASS +[0-3]/3 PASS"', out), out


def test_the_fleet_figures_are_the_merge_of_the_hosts_figures(obs, status_run):
    assert status_run.returncode == 0, status_run.describe()
    stats = custom_stats(status_run.stdout)
    hosts = stats["swiftdeploy_status_hosts"]
    assert sorted(hosts) == ["h1", "h2", "h3"]
    assert "swiftdeploy_status" not in stats  # one host's report is not the fleet's status
    windows = {}
    for name, entry in hosts.items():
        assert entry["measured"] is True, entry
        report = entry["report"]
        assert report["mode"] == "stable" and report["tracks"]["stable"]["version"] == "1.0.0"
        windows[name] = report["window"]
        # Exactly the requests sent to that host's own address since the previous refresh.
        assert windows[name]["requests"] == SENT[name], (name, windows[name])
    fleet = stats["swiftdeploy_status_fleet"]
    merged = combine(list(windows.values()))
    figures = fleet["figures"]
    assert figures["requests"] == sum(SENT.values()) == merged["requests"]
    assert figures["errors"] == merged["errors"] == 0
    assert figures["latency_buckets"] == merged["latency_buckets"]
    assert figures["p99_latency_ms"] == pytest.approx(merged["p99_latency_ms"])
    # Rates add up over hosts: the fleet's req/s is the sum, not the mean.
    assert figures["req_per_s"] == pytest.approx(sum(w["req_per_s"] for w in windows.values()))
    assert fleet["hosts"] == 3 and fleet["measured"] == 3 and fleet["not_measured"] == []
    assert fleet["releases"] == {"1.0.0": ["h1", "h2", "h3"]}
    # The fleet row shows those figures.
    shown = r'"fleet \(3 of 3 measured\) +1 release +- +- +' + re.escape("%.2f" % figures["req_per_s"]) \
        + r" +0\.00% +" + re.escape("%.1f ms" % figures["p99_latency_ms"])
    assert re.search(shown, status_run.stdout), status_run.stdout


def test_a_host_that_cannot_be_reached_is_a_row_not_a_crash(obs, status_run, fleet, tmp_path):
    assert status_run.returncode == 0, status_run.describe()
    inventory = fleet.inventory(tmp_path / "four.yml", obs.hosts)
    data = yaml.safe_load(inventory.read_text())
    data["swiftdeploy"]["hosts"]["ghost"] = dict(data["swiftdeploy"]["hosts"]["h1"], ansible_host="127.0.0.1",
                                                 ansible_port=1)
    inventory.write_text(json.dumps(data))
    run = obs.run("status", inventory=inventory)
    assert run.returncode == 4, run.describe()  # unreachable
    out = run.stdout
    assert re.search(r'"ghost +- +NOT REACHED +-', out), out
    assert "ghost: not reached: unreachable, or failed before its status was taken" in out
    assert re.search(r'"fleet \(3 of 4 measured\)', out), out
    fleet_stats = custom_stats(out)["swiftdeploy_status_fleet"]
    assert fleet_stats["not_measured"] == ["ghost"] and fleet_stats["measured"] == 3


def test_audit_writes_one_fleet_report_naming_every_host(obs, status_run, tmp_path):
    report_dir, fleet_report = tmp_path / "reports", tmp_path / "chosen" / "fleet.md"  # a new directory
    run = obs.run("audit", "-e", f"report_dir={report_dir}", "-e", f"fleet_report={fleet_report}")
    assert run.returncode == 0, run.describe()
    for host in obs.hosts:
        assert (report_dir / host.name / "audit_report.md").is_file()
    text = fleet_report.read_text()
    assert text.startswith(f"# Fleet audit report: stack {STACK} on 3 hosts"), text
    assert "**Verified**: the hash chain of every host's history holds" in text
    hosts_table = text.split("## Hosts", 1)[1].split("## Timeline", 1)[0]
    for host in obs.hosts:
        assert re.search(rf"^\| {host.name} \| verified \| \d+ \|", hosts_table, re.M), hosts_table
    timeline = text.split("## Timeline", 1)[1]
    deploys = re.findall(r"^\| 20[0-9T:.\-]+Z \| (h[123]) \| \d+ \| deploy \|", timeline, re.M)
    assert sorted(deploys) == ["h1", "h2", "h3"], timeline
    stats = custom_stats(run.stdout)
    assert sorted(stats["swiftdeploy_audit_hosts"]) == ["h1", "h2", "h3"]
    assert all(entry["verified"] for entry in stats["swiftdeploy_audit_hosts"].values())
    assert stats["swiftdeploy_audit_fleet"]["verified"] is True
    assert stats["swiftdeploy_audit_fleet"]["report"] == str(fleet_report)
    assert "swiftdeploy_audit" not in stats


def test_a_tampered_host_fails_the_fleet_audit_naming_it(obs, status_run, tmp_path):
    h2 = obs.hosts[1]
    history = h2.run("cat", f"{PROJECT}/history.jsonl").stdout
    lines = history.splitlines(keepends=True)
    record = json.loads(lines[0])
    record["mode"] = "canary" if record.get("mode") != "canary" else "stable"
    lines[0] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    assert h2.run("sh", "-c", f"cat > {PROJECT}/history.jsonl", input="".join(lines)).returncode == 0
    try:
        report_dir = tmp_path / "reports"
        run = obs.run("audit", "-e", f"report_dir={report_dir}")
        assert run.returncode != 0, run.describe()
        assert "history.jsonl on h2 fails verification at line 1" in " ".join(run.stdout.split()), run.describe()
        assert "h2: BROKEN: line 1" in run.stdout, run.stdout
        text = (report_dir / "fleet_audit_report.md").read_text()  # the default path
        assert "**NOT VERIFIED**: 1 host with a broken hash chain (h2)" in text, text
        hosts_table = text.split("## Hosts", 1)[1].split("## Timeline", 1)[0]
        assert re.search(r"^\| h2 \| BROKEN at line 1 \(edited\) \|", hosts_table, re.M), hosts_table
        assert re.search(r"^\| h1 \| verified \|", hosts_table, re.M)
        assert re.search(r"^\| h3 \| verified \|", hosts_table, re.M)
        recap = {m[0]: int(m[1]) for m in re.findall(r"^(h[123]) +: .*failed=(\d+)", run.stdout, re.M)}
        assert recap == {"h1": 0, "h2": 1, "h3": 0}, run.stdout
    finally:
        h2.run("sh", "-c", f"cat > {PROJECT}/history.jsonl", input=history)
