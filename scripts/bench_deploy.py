"""Deploy lifecycle benchmark: cold deploy, no-op redeploy and teardown wall times.

Runs the real playbooks against this machine's Docker engine for a dedicated stack (the same
one scripts/bench_app.py uses, never the demo stack), --rounds times (default 5: this 2-CPU VM's
timings move by half a second between runs, and a median of five sets one slow round aside
where a median of two is the mean of both), and prints each figure's median with its target.
As a yardstick it also times an ansible-playbook run that does nothing, since Ansible's own
start-up is part of every figure. Exit status 0 whatever the figures (it is a
benchmark, not a test); 2 when a playbook fails.

    make bench-deploy      (or: .venv/bin/python scripts/bench_deploy.py [--rounds N])
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import REPO, STACK, ansible_env, run_playbook, tail, write_manifest  # noqa: E402  pylint: disable=wrong-import-position

ROUNDS = 5
TARGETS = {"cold deploy": 12.0, "no-op redeploy": 5.0, "teardown": 3.0}


def timed(playbook, manifest, project, *extra):
    started = time.monotonic()
    status, output = run_playbook(playbook, manifest, project, *extra)
    seconds = time.monotonic() - started
    if status != 0:
        print(f"{playbook} failed ({status}):\n{tail(output)}")
        sys.exit(2)
    changed = re.search(r"changed=(\d+)", output.rsplit("PLAY RECAP", 1)[-1])
    return seconds, int(changed.group(1)) if changed else None


def ansible_floor():
    """Seconds for ansible-playbook to run one no-op task on localhost."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        handle.write("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                     "    - ansible.builtin.debug: {msg: noop}\n")
    started = time.monotonic()
    subprocess.run(["ansible-playbook", handle.name], cwd=REPO, env=ansible_env(), capture_output=True, check=True)
    Path(handle.name).unlink()
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of cold deploy, no-op redeploy and "
                        "teardown (default %(default)s)")
    rounds = parser.parse_args().rounds
    if rounds < 1:
        parser.error("--rounds: %d is not a number of rounds; give 1 or more" % rounds)
    figures = {name: [] for name in TARGETS}
    noop_changed = []
    with tempfile.TemporaryDirectory(prefix="swiftdeploy-bench-deploy-") as work:
        manifest = write_manifest(work, "stable")
        project = Path(work) / "project"
        run_playbook("teardown.yml", manifest, project, "clean=true")  # start from nothing
        try:
            for round_number in range(1, rounds + 1):
                cold, _changed = timed("deploy.yml", manifest, project)
                noop, changed = timed("deploy.yml", manifest, project)
                down, _changed = timed("teardown.yml", manifest, project, "clean=true")
                figures["cold deploy"].append(cold)
                figures["no-op redeploy"].append(noop)
                figures["teardown"].append(down)
                noop_changed.append(changed)
                print(f"round {round_number}: cold {cold:.1f} s, no-op {noop:.1f} s (changed={changed}), "
                      f"teardown {down:.1f} s")
        finally:
            run_playbook("teardown.yml", manifest, project, "clean=true")
    floor = ansible_floor()
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"\nStack {STACK}, {rounds} rounds, load average {load}; ansible-playbook with one no-op task: {floor:.1f} s")
    print(f"{'figure':<16} | {'median s':>8} | {'runs':<28} | {'target':>7} | verdict")
    for name, values in figures.items():
        median = statistics.median(values)
        verdict = "PASS" if median <= TARGETS[name] else "FAIL"
        if name == "no-op redeploy" and any(c != 0 for c in noop_changed):
            verdict = "FAIL (changed=%s)" % noop_changed
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<16} | {median:8.1f} | {runs:<28} | <= {TARGETS[name]:4.0f} | {verdict}")


if __name__ == "__main__":
    main()
