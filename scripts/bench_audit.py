"""Benchmark the audit report on a long history (`make bench-audit`).

1. Writes a valid history of EVENTS records (1,000,000 by default) into a temporary directory:
   about 90 % status_scrape with full details, and deploys, promotions to canary and roll
   forwards, blocked deploys and promotions followed by roll-backs, lock waits, policy bypasses
   and teardowns, with periods of chaos while in canary. The lines are written directly, in
   the writer's exact serialisation (checked against plugins/module_utils/_history.py on a
   sample of every event type), not through one million fsynced append_event calls.
2. Runs the report in a child process that does nothing else: the data
   (_audit_scan.build_report, what swiftdeploy.stack.audit_report_info returns), then the
   Markdown from the role's template (roles/swiftdeploy/templates/audit_report.md.j2, with the
   template module's Jinja settings and the collection's md_* filters), and prints the wall time
   of each and the peak RSS (the child's ru_maxrss, which covers the workers it forks, as wait4
   returns it).
3. Runs the real module once end to end, `ansible localhost -m
   swiftdeploy.stack.audit_report_info`, and prints its wall time.

Ends with a "figure | value | target | PASS/FAIL" table: the report must take at most 10 s and
150 MB, verify the chain and count every event. Exit status 0 when everything passes, 1 when a
figure fails, 2 when a step cannot run (the ansible run fails, the history is not as written).

  --events N        records to write (default 1,000,000)
  --keep            keep the temporary directory (its path is printed)
  --skip-ansible    do not run the module through ansible

Standard library only; run it with the project's venv (make setup), whose ansible it calls.
"""

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / ".collections"
TARGET_SECONDS = 10.0
TARGET_RSS_MB = 150.0
STACK, HOST = "shop", "web1"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
SCRAPE_EVERY = 30.0      # seconds between two status scrapes
SAMPLE = 200             # lines of each event type checked against the real writer

sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _history  # noqa: E402  pylint: disable=wrong-import-position

CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                             allow_nan=False)
ACTORS = [
    {"user": "awx", "playbook": "Status", "awx_job_id": "1%04d" % n, "awx_job_template": "status"}
    for n in range(50)
] + [{"user": "deploy", "playbook": "Deploy"}, {"user": "alice", "playbook": "Promote"}]


def fail(message):
    """A step that cannot run: say why and exit with status 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def stamp(seconds):
    moment = START + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


class Writer:
    """Writes records as append_event would, without the lock and the fsync of every line."""

    def __init__(self, handle):
        self.handle = handle
        self.seq = 0
        self.prev = _history.GENESIS
        self.buffer = []
        self.checked = {}
        self.actor_json = {id(actor): CANONICAL.encode(actor) for actor in ACTORS}

    def _emit(self, body, event):
        digest = hashlib.sha256(body).hexdigest()
        cut = body.rindex(b',"host":"')  # the top-level host follows event; insert hash there
        line = body[:cut] + b',"hash":"' + digest.encode("ascii") + b'"' + body[cut:] + b"\n"
        if self.checked.get(event, 0) < SAMPLE:  # the shortcut must be the writer's own bytes
            self.checked[event] = self.checked.get(event, 0) + 1
            record = json.loads(line)
            if _history.serialize(record) != line or _history.record_hash(record) != digest:
                fail("bench_audit: the generator's line differs from the writer's:\n%s"
                     % line.decode())
        self.buffer.append(line)
        if len(self.buffer) >= 10000:
            self.flush()
        self.prev = digest

    def flush(self):
        self.handle.write(b"".join(self.buffer))
        self.buffer.clear()

    def record(self, when, event, actor, mode, version, details):
        self.seq += 1
        body = {"seq": self.seq, "timestamp": stamp(when), "event": event, "stack": STACK,
                "host": HOST, "actor": actor, "mode": mode, "version": version,
                "details": details, "prev": self.prev}
        self._emit(CANONICAL.encode(body).encode("ascii"), event)

    def scrape(self, when, actor, mode, version, chaos, error_rate, p99, weight, canary_pass,
               reasons):
        """The most frequent line, formatted directly: the same bytes as the encoder's."""
        self.seq += 1
        requests = 3000 + self.seq % 997
        body = ('{"actor":%s,"details":{"chaos":%s,"error_rate_percent":%r,"errors":%d,'
                '"mode":"%s","p99_latency_ms":%s,"policy_canary_pass":%s,'
                '"policy_infra_pass":true,"policy_reasons":%s,"req_s":%r,"requests":%d,'
                '"weight":%d},"event":"status_scrape","host":"%s","mode":"%s","prev":"%s",'
                '"seq":%d,"stack":"%s","timestamp":"%s","version":"%s"}'
                % (self.actor_json[id(actor)], '"%s"' % chaos if chaos else "null", error_rate,
                   int(requests * error_rate / 100), mode, "null" if p99 is None else repr(p99),
                   "true" if canary_pass else "false", CANONICAL.encode(reasons),
                   round(requests / SCRAPE_EVERY, 2), requests, weight, HOST, mode, self.prev,
                   self.seq, STACK, stamp(when), version))
        self._emit(body.encode("ascii"), "status_scrape")


def generate(path, events, seed=7):
    """Write a history of `events` records; return the count of each event type."""
    rng = random.Random(seed)
    counts = {}
    when = 0.0
    mode, weight, chaos = "stable", 0, None
    stable, canary = "1.0.0", None
    release = 0
    with open(path, "wb") as handle:
        writer = Writer(handle)

        def record(event, actor, event_mode, details):
            counts[event] = counts.get(event, 0) + 1
            writer.record(when, event, actor, event_mode, stable, details)

        operator = ACTORS[-2]
        while writer.seq < events:
            when += SCRAPE_EVERY * (0.8 + 0.4 * rng.random())
            if mode == "down" and writer.seq < events:
                record("deploy", operator, "stable", deploy_details(rng, release))
                mode = "stable"
                continue
            if rng.random() < 0.9:
                if mode == "canary" and rng.random() < 0.01:
                    chaos = None if chaos else rng.choice(["error", "slow"])
                error_rate = round(rng.uniform(0.0, 0.8), 2)
                p99 = round(rng.uniform(40.0, 120.0), 1)
                if chaos == "error":
                    error_rate = round(rng.uniform(20.0, 60.0), 2)
                elif chaos == "slow":
                    p99 = round(rng.uniform(900.0, 1500.0), 1)
                if rng.random() < 0.01:
                    p99 = None
                failing = mode == "canary" and chaos is not None
                reasons = []
                if failing:
                    reasons = (["error rate %.2f %% is above 1 %%" % error_rate] if chaos == "error"
                               else ["p99 latency %.0f ms is above 500 ms" % (p99 or 0)])
                writer.scrape(when, rng.choice(ACTORS[:50]), mode, canary or stable,
                              chaos or "none", error_rate, p99, weight, not failing, reasons)
                counts["status_scrape"] = counts.get("status_scrape", 0) + 1
                continue
            roll = rng.random()
            if roll < 0.2:
                record("lock_wait", operator, mode, {"waited_seconds": round(rng.uniform(1, 90), 1),
                                                     "broken_stale": None})
            elif mode == "stable":
                if roll < 0.45:
                    release += 1
                    canary, weight, mode = "1.%d.0" % release, rng.choice([10, 20, 50]), "canary"
                    record("promote", ACTORS[-1], "canary", {
                        "from_mode": "stable", "target_mode": "canary", "weight": weight,
                        "canary_version": canary, "canary_image": "shop:%s" % canary,
                        "slot": rng.choice(["blue", "green"])})
                elif roll < 0.6:
                    record("deploy", operator, "stable", deploy_details(rng, release))
                elif roll < 0.7:
                    record("deploy_blocked", operator, "stable", {
                        "policy": "infrastructure", "engine": "sidecar",
                        "reasons": ["disk free %.1f GB is below 10 GB" % rng.uniform(1, 9)],
                        "checked": {"disk_free_gb": 4.2, "cpu_load": 0.4}})
                elif roll < 0.8:
                    record("promote_blocked", ACTORS[-1], "stable", {
                        "target_mode": "canary", "policy": "infrastructure",
                        "reasons": ["cpu load 3.9 is above 2"], "checked": {"cpu_load": 3.9}})
                elif roll < 0.9:
                    record("policy_bypass", operator, "stable", {
                        "operation": "deploy", "policy": "infrastructure",
                        "reasons": ["disk free 8.0 GB is below 10 GB"], "checked": {}})
                else:
                    record("teardown", operator, "stable", {"clean": False, "removed": True})
                    mode = "down"
            else:  # canary
                window = {"requests": 900, "errors": 3, "error_rate_percent": 0.33,
                          "p99_latency_ms": 88.0, "window_seconds": 60}
                if chaos is not None or roll < 0.45:
                    reasons = ["canary error rate is above 1 %"]
                    record("promote_blocked", ACTORS[-1], "canary", {
                        "target_mode": "stable", "policy": "canary", "reasons": reasons,
                        "checked": window, "window": window})
                    record("rollback", ACTORS[-1], "stable", {
                        "reason": "canary policy denied the promotion", "reasons": reasons,
                        "canary_version": canary, "stable_version": stable})
                elif roll < 0.6:
                    weight = rng.choice([20, 50, 80])
                    record("promote", ACTORS[-1], "canary", {
                        "from_mode": "canary", "target_mode": "canary", "weight": weight,
                        "canary_version": canary, "canary_image": "shop:%s" % canary,
                        "slot": "green"})
                    continue
                else:
                    record("promote", ACTORS[-1], "stable", {
                        "from_mode": "canary", "target_mode": "stable", "result": "rolled_forward",
                        "from_version": stable, "version": canary, "window": window,
                        "reasons": []})
                    stable = canary
                mode, weight, chaos, canary = "stable", 0, None, None
        writer.flush()
    return counts


def deploy_details(rng, release):
    return {"changed": True, "port": 8080, "engine": "sidecar",
            "host_resources": {"disk_free_gb": round(rng.uniform(20, 80), 1),
                               "cpu_load": round(rng.uniform(0.1, 1.5), 2), "mem_free_mb": 2048},
            "bypassed": False, "stable_slot": rng.choice(["blue", "green"]),
            "generation": release + 1}


CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
started = time.monotonic()
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import build_report
result = build_report(sys.argv[2])
data_done = time.monotonic()
import jinja2
from ansible_collections.swiftdeploy.stack.plugins.filter.markdown import FilterModule
env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True,
                         undefined=jinja2.StrictUndefined)
env.filters.update({"swiftdeploy.stack." + name: function
                    for name, function in FilterModule().filters().items()})
with open(sys.argv[4], encoding="utf-8") as handle:
    template = env.from_string(handle.read())
markdown = template.render(swiftdeploy_audit=json.loads(json.dumps(result)))
with open(sys.argv[3], "w", encoding="utf-8") as handle:
    handle.write(markdown)
result["data_seconds"] = data_done - started
result["render_seconds"] = time.monotonic() - data_done
print(json.dumps(result))
"""
TEMPLATE = ROOT / "roles" / "swiftdeploy" / "templates" / "audit_report.md.j2"


def write_history(history, events):
    """Write the history in a child process, so that this process stays small: ru_maxrss
    survives exec, so a child started later inherits our RSS as its starting peak."""
    child = subprocess.run([sys.executable, __file__, "--write-history", str(history),
                            "--events", str(events)], capture_output=True, text=True, check=False)
    if child.returncode != 0:
        fail("bench_audit: writing the history failed:\n%s" % child.stderr)
    return json.loads(child.stdout)


def run_report(history, dest):
    """Run the report in a child that does nothing else: (result, wall seconds, peak RSS MB).

    The peak is the child's ru_maxrss as wait4 returns it: the largest RSS of the child and of
    the workers it forked and waited for (getrusage(RUSAGE_CHILDREN) would also count the child
    that wrote the history)."""
    with tempfile.TemporaryFile() as errors:
        started = time.monotonic()
        child = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-c", CHILD, str(COLLECTIONS), str(history), str(dest),
             str(TEMPLATE)],
            stdout=subprocess.PIPE, stderr=errors)
        output = child.stdout.read()
        child.stdout.close()
        _pid, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            fail("bench_audit: the report failed:\n%s" % errors.read().decode())
    return json.loads(output), wall, usage.ru_maxrss / 1024.0  # KiB on Linux


def run_module(history):
    """The module end to end through ansible on localhost: (wall seconds, module result)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    ansible = Path(sys.executable).parent / "ansible"
    args = json.dumps({"path": str(history), "stack": STACK, "host": HOST})
    started = time.monotonic()
    run = subprocess.run([str(ansible) if ansible.exists() else "ansible", "localhost",
                          "-m", "swiftdeploy.stack.audit_report_info", "-a", args],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.monotonic() - started
    if run.returncode != 0:
        fail("bench_audit: ansible failed (%d):\n%s\n%s"
             % (run.returncode, run.stdout[-3000:], run.stderr[-3000:]))
    output = json.loads(run.stdout)
    result = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return wall, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-ansible", action="store_true")
    parser.add_argument("--write-history", metavar="PATH", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.write_history:
        print(json.dumps(generate(Path(options.write_history), options.events)))
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="swiftdeploy-bench-audit-"))
    try:
        history = scratch / "history.jsonl"
        started = time.monotonic()
        counts = write_history(history, options.events)
        size_mb = history.stat().st_size / 1e6
        print("history: %d events, %.0f MB, written in %.1f s (%s)"
              % (options.events, size_mb, time.monotonic() - started,
                 ", ".join("%s %d" % item for item in sorted(counts.items()))))

        result, wall, peak_mb = run_report(history, scratch / "audit_report.md")
        # Only now: bench_app imports PyYAML, and the report child's ru_maxrss would start from
        # this process's RSS had it been imported before the child ran (see write_history).
        from bench_app import print_table, verdict  # pylint: disable=import-outside-toplevel
        report_kb = (scratch / "audit_report.md").stat().st_size / 1024
        print("report: %.2f s wall (data %.2f s, template %.2f s), %.1f MB peak RSS, %.0f KiB of "
              "Markdown, %d chart points, verified %s"
              % (wall, result["data_seconds"], result["render_seconds"], peak_mb, report_kb,
                 result["chart_points"], result["verified"]))
        rows = [
            ("report wall time (data + template), %d events" % options.events, "%.2f s" % wall,
             "<= %.0f s" % TARGET_SECONDS, verdict(wall <= TARGET_SECONDS)),
            ("report peak RSS", "%.1f MB" % peak_mb, "<= %.0f MB" % TARGET_RSS_MB,
             verdict(peak_mb <= TARGET_RSS_MB)),
            ("chain verified, every event counted",
             "%s, %d events" % (result["verified"], result["events"]),
             "True, %d" % options.events,
             verdict(result["verified"] and result["events"] == options.events)),
        ]
        if not options.skip_ansible:
            module_wall, module_result = run_module(history)
            print("audit_report_info through ansible: %.2f s wall, changed %s, verified %s"
                  % (module_wall, module_result.get("changed"), module_result.get("verified")))
            rows.append(("audit_report_info end to end (ansible localhost)",
                         "%.2f s" % module_wall, "-",
                         verdict(module_result.get("verified") is True
                                 and module_result.get("events") == options.events)))
        print_table(rows)
        return 0 if all(row[3] == "PASS" for row in rows) else 1
    finally:
        if options.keep:
            print("kept %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
