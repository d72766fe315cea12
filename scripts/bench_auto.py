"""Automated canary rollouts under load, end to end (`make bench-auto`).

Deploys the throw-away stack `sdbench` (public port 18980, admin port 18982, as the other
benchmarks) with the example app, starts bench-promote's load (8 keep-alive clients, 50 requests
a second each: 400 a second through nginx), and runs `promote.yml -e mode=auto` three times, each
rollout a new canary version of the same image, with steps [5, 25, 50], a 5 s interval and a
3-minute maximum (docs/auto-rollout.md):

1. good     no fault: must reach 100 % (promote) with no failed request;
2. errors20 as soon as the canary serves, POST /chaos {"mode": "error", "rate": 0.2} (the admin
            port's /chaos reaches the canary): must be rolled back within 15 s of the canary's
            step start (its `promote` event);
3. errors2  the same with rate 0.02: must be rolled back before the rollout ends.

The latency bound is left to the rollout (chosen from the baseline before the canary's data is
seen), as a user gets it. Every non-200 that is not an injected chaos 500 is a failed request.
Prints, per rollout: its verdicts, looks, wall time, the time from the canary's step start to the
rollback, the evidence at the decision, failed requests; then a "figure | value | target |
PASS/FAIL" table. It is a benchmark, not a test: exit status 0 whatever the figures, 2 when the
stack cannot be deployed or a rollout does something else than promote or roll back.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import (  # noqa: E402  pylint: disable=wrong-import-position
    ADMIN_PORT, STACK, DeployError, final_teardown, print_table, run_playbook, tail, verdict, write_manifest,
)
from bench_promote import CLIENTS, DEFAULT_RATE, Load, stack_in_use  # noqa: E402  pylint: disable=wrong-import-position

STEPS = [5, 25, 50]
INTERVAL = 5
MAX_DURATION = 180
ROLLBACK_WITHIN_20 = 15.0
ROLLOUTS = (("good", "1.1.0", None), ("errors20", "1.2.0", 0.2), ("errors2", "1.3.0", 0.02))


def stamp(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def manifests(work_dir):
    """manifest.yml (the stable release; bench_app.teardown reads it) and one per rollout."""
    base = write_manifest(work_dir, "stable")
    manifest = yaml.safe_load(base.read_text())
    # The host gate's load limit is not under test: a machine shared with other work (CI, other
    # benchmarks) can be above it, and the canary would not even start.
    manifest["policy"] = {"thresholds": {"min_requests": 20, "max_cpu_load": 1000}}
    base.write_text(yaml.safe_dump(manifest, sort_keys=False))
    paths = {}
    for name, version, _rate in ROLLOUTS:
        manifest["canary"] = {"weight": STEPS[0], "version": version, "steps": STEPS, "interval_seconds": INTERVAL,
                              "max_duration_seconds": MAX_DURATION}
        paths[name] = Path(work_dir) / f"manifest-{name}.yml"
        paths[name].write_text(yaml.safe_dump(manifest, sort_keys=False))
    return base, paths


def history(project_dir):
    path = Path(project_dir) / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def state(project_dir):
    try:
        return json.loads((Path(project_dir) / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def inject(project_dir, rate, done, found):
    """Once state.json names a canary, POST /chaos until the canary (not the stable slot, which
    answers 403 until nginx routes /chaos to the canary) takes it; keeps the time in found."""
    while not done.is_set():
        if state(project_dir).get("canary"):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=5)
                conn.request("POST", "/chaos", body=json.dumps({"mode": "error", "rate": rate}),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    found["injected"] = time.time()
                    return
            except OSError:
                pass
        done.wait(0.05)


def recover():
    """The stable slot refuses /chaos (403): after a rollback there is nothing to recover."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=5)
        conn.request("POST", "/chaos", body=json.dumps({"mode": "recover"}), headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        conn.close()
    except OSError:
        pass


def run_rollout(name, rate, manifest, project_dir, load):
    before = len(history(project_dir))
    done, found = threading.Event(), {}
    injector = threading.Thread(target=inject, args=(project_dir, rate, done, found), daemon=True) if rate else None
    if injector:
        injector.start()
    started = time.monotonic()
    first = len(load.responses())
    status, output = run_playbook("promote.yml", manifest, project_dir, "mode=auto")
    wall = time.monotonic() - started
    done.set()
    if injector:
        injector.join(timeout=10)
    recover()
    events = history(project_dir)[before:]
    looks = [event for event in events if event["event"] == "canary_judged"]
    verdicts = [event["details"]["verdict"] for event in looks]
    # The canary's start is the rollout's first `promote` event (to canary mode at the first step).
    canary_start = next((stamp(event["timestamp"]) for event in events if event["event"] == "promote"), None)
    rolled_back = next((stamp(event["timestamp"]) for event in events if event["event"] == "rollback"), None)
    # The rollback's converge: from the refusal it follows (recorded before it starts; the
    # judgement itself is recorded with the rollback, after it) to its event.
    decided = next((stamp(event["timestamp"]) for event in reversed(events) if event["event"] == "promote_blocked"),
                   None)
    last = looks[-1]["details"] if looks else {}
    answered = load.responses()[first:]
    failed = [record for record in answered if record[5] == "fail"]
    chaos = sum(1 for record in answered if record[5] == "chaos")
    print(f"\n  {name}: exit {status}, {wall:.1f} s, verdicts {' '.join(verdicts) or '-'}")
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("msg: step "):
            text = text[len("msg: "):]
        if text.startswith("step ") and " | " in text:
            print("    " + text)
    outcome = "promote" if verdicts and verdicts[-1] == "promote" else "rollback" if rolled_back else "other"
    if outcome == "other":
        print(tail(output))
    analysis = last.get("analysis") or {}
    return {
        "name": name, "rate": rate, "status": status, "wall": wall, "verdicts": verdicts, "outcome": outcome,
        "rollback_after": (rolled_back - canary_start) if rolled_back and canary_start else None,
        "decided_after": (decided - canary_start) if rolled_back and decided and canary_start else None,
        "injected_after": (found["injected"] - canary_start) if found.get("injected") and canary_start else None,
        "errors_e": (analysis.get("errors") or {}).get("e_value"),
        "latency_e": (analysis.get("latency") or {}).get("e_value"),
        "threshold": (analysis.get("errors") or {}).get("threshold"),
        "answered": len(answered), "failed": len(failed), "chaos": chaos,
        "failed_detail": [record[2] for record in failed[:5]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second of each client")
    args = parser.parse_args()
    if stack_in_use():
        print(f"another benchmark's {STACK} stack is running; stop it first")
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="bench-auto-"))
    project_dir = work_dir / "project"
    base, paths = manifests(work_dir)
    load = Load(CLIENTS, rate=args.rate)
    results = []
    print(f"== bench-auto: {CLIENTS} clients x {args.rate:g} req/s, steps {STEPS}, interval {INTERVAL} s, "
          f"max {MAX_DURATION} s ==")
    try:
        status, output = run_playbook("deploy.yml", base, project_dir)
        if status != 0:
            raise DeployError(f"deploy.yml failed with exit status {status}:\n{tail(output)}")
        load.start()
        time.sleep(3)
        for name, _version, rate in ROLLOUTS:
            results.append(run_rollout(name, rate, paths[name], project_dir, load))
            time.sleep(2)
    except DeployError as exc:
        print(exc)
        return 2
    finally:
        if load.started is not None:
            load.stop()
        final_teardown(work_dir, project_dir)
    rows = []
    by_name = {result["name"]: result for result in results}
    for result in results:
        print(f"  {result['name']}: {result['answered']} answers, {result['chaos']} injected 500s, "
              f"{result['failed']} failed {result['failed_detail']}; rollback decided after "
              f"{result['decided_after'] if result['decided_after'] is None else round(result['decided_after'], 1)} s, "
              f"recorded after "
              f"{result['rollback_after'] if result['rollback_after'] is None else round(result['rollback_after'], 1)} s "
              f"(errors injected {result['injected_after'] if result['injected_after'] is None else round(result['injected_after'], 1)} s "
              f"after the step start); e-values at the decision: errors {result['errors_e']}, "
              f"latency {result['latency_e']} (threshold {result['threshold']})")
    good, bad20, bad2 = by_name.get("good"), by_name.get("errors20"), by_name.get("errors2")
    if good:
        rows.append(("good release: outcome", good["outcome"], "promote", verdict(good["outcome"] == "promote")))
        rows.append(("good release: wall time", f"{good['wall']:.1f} s", "-", "-"))
    if bad20:
        after = bad20["rollback_after"]
        rows.append(("20 % errors: rolled back after the step start", "-" if after is None else f"{after:.1f} s",
                     f"<= {ROLLBACK_WITHIN_20:g} s", verdict(after is not None and after <= ROLLBACK_WITHIN_20)))
    if bad2:
        after = bad2["rollback_after"]
        rows.append(("2 % errors: rolled back after the step start", "-" if after is None else f"{after:.1f} s",
                     f"before the end ({MAX_DURATION} s)", verdict(after is not None and after < MAX_DURATION)))
    failed = sum(result["failed"] for result in results)
    rows.append(("failed requests, all rollouts", str(failed), "0", verdict(failed == 0)))
    print_table(rows)
    if any(result["outcome"] == "other" for result in results):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
