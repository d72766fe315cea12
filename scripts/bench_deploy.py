"""Deploy lifecycle benchmark: cold deploy, no-op redeploy and teardown wall times.

Runs the real playbooks against this machine's Docker engine for a dedicated stack (the same
one scripts/bench_app.py uses, never the demo stack), --rounds times (default 5: this 2-CPU VM's
timings move by half a second between runs, and a median of five sets one slow round aside
where a median of two is the mean of both), and prints each figure's median with its target.
As a yardstick it also times an ansible-playbook run that does nothing, since Ansible's own
start-up is part of every figure. Exit status 0 whatever the figures (it is a
benchmark, not a test); 2 when a playbook fails.

    make bench-deploy      (or: .venv/bin/python scripts/bench_deploy.py [--rounds N])

--compare REV times another revision against this checkout, interleaved on the same machine: it
checks REV out into a temporary git worktree (with its own .collections pointing at it, and this
checkout's venv), then each round runs a cold deploy, a no-op redeploy and a teardown with one
tree and then the other (the order alternates between rounds, so a load that drifts over the run
weighs on both). It prints each round's figures, the medians and the ratio new/old; the worktree
is removed at the end.

    make bench-deploy COMPARE=ae9c3ef      (or: scripts/bench_deploy.py --compare ae9c3ef [--rounds N])
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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


def timed(playbook, manifest, project, *extra, tree=None):
    started = time.monotonic()
    status, output = run_playbook(playbook, manifest, project, *extra, tree=tree)
    seconds = time.monotonic() - started
    if status != 0:
        print(f"{playbook} failed ({status}){' in ' + str(tree) if tree else ''}:\n{tail(output)}")
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


def worktree(rev, work):
    """A detached git worktree of rev in work, with a .collections like this checkout's whose
    swiftdeploy.stack is that worktree."""
    tree = Path(work) / "tree"
    added = subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO,
                           capture_output=True, text=True, check=False)
    if added.returncode != 0:
        raise SystemExit(f"--compare: git cannot check out {rev!r} ({added.stderr.strip()}); "
                         "give a commit, tag or branch of this repository")
    ours = REPO / ".collections" / "ansible_collections"
    theirs = tree / ".collections" / "ansible_collections"
    (theirs / "swiftdeploy").mkdir(parents=True)
    for collection in ours.iterdir():
        if collection.name != "swiftdeploy":
            os.symlink(collection.resolve(), theirs / collection.name)
    os.symlink(tree, theirs / "swiftdeploy" / "stack")
    return tree


def remove_worktree(tree):
    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True, check=False)
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True, check=False)


def one_round(work, tree, name):
    """(cold, no-op, changed, teardown) of one tree, from nothing back to nothing."""
    manifest = write_manifest(Path(work) / name, "stable", tree=tree)
    project = Path(work) / name / "project"
    cold, _changed = timed("deploy.yml", manifest, project, tree=tree)
    noop, changed = timed("deploy.yml", manifest, project, tree=tree)
    down, _changed = timed("teardown.yml", manifest, project, "clean=true", tree=tree)
    return cold, noop, changed, down


def compare(rev, rounds):
    """Old (rev) and new (this checkout) interleaved: each round's figures, medians, new/old."""
    figures = {(side, name): [] for side in ("old", "new") for name in ("cold deploy", "no-op redeploy")}
    changes = []
    with tempfile.TemporaryDirectory(prefix="swiftdeploy-bench-compare-") as work:
        trees = {"old": worktree(rev, work), "new": None}
        for side in trees:
            (Path(work) / side).mkdir()
        start = write_manifest(Path(work) / "new", "stable")
        run_playbook("teardown.yml", start, Path(work) / "new" / "project", "clean=true")  # start from nothing
        try:
            for round_number in range(1, rounds + 1):
                order = ("old", "new") if round_number % 2 else ("new", "old")
                line = []
                for side in order:
                    cold, noop, changed, _down = one_round(work, trees[side], side)
                    figures[(side, "cold deploy")].append(cold)
                    figures[(side, "no-op redeploy")].append(noop)
                    changes.append(changed)
                    line.append(f"{side} cold {cold:.2f} s, no-op {noop:.2f} s (changed={changed})")
                print(f"round {round_number}: " + "; ".join(line), flush=True)
        finally:
            for side in ("old", "new"):
                manifest = Path(work) / side / "manifest.yml"
                if manifest.exists():
                    run_playbook("teardown.yml", manifest, Path(work) / side / "project", "clean=true", tree=trees[side])
            remove_worktree(trees["old"])
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"\nStack {STACK}, {rounds} interleaved rounds, old = {rev}, new = this checkout; load average {load}")
    print(f"{'figure':<16} | {'old median s':>12} | {'new median s':>12} | {'new/old':>7}")
    for name in ("cold deploy", "no-op redeploy"):
        old, new = statistics.median(figures[("old", name)]), statistics.median(figures[("new", name)])
        print(f"{name:<16} | {old:12.2f} | {new:12.2f} | {new / old:7.2f}")
    if any(changed != 0 for changed in changes):
        print(f"a no-op redeploy changed something: changed={changes}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of cold deploy, no-op redeploy and "
                        "teardown (default %(default)s)")
    parser.add_argument("--compare", metavar="REV", help="also time revision REV (a commit, tag or branch), "
                        "interleaved with this checkout, and print the ratio new/old")
    args = parser.parse_args()
    rounds = args.rounds
    if rounds < 1:
        parser.error("--rounds: %d is not a number of rounds; give 1 or more" % rounds)
    if args.compare:
        compare(args.compare, rounds)
        return
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
