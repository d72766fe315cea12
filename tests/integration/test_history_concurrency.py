"""Many writers on one history: no line lost, torn or duplicated, and verify still exact.

First the pure append_event from 8 processes at once, then the real audit_event module through
parallel ad-hoc `ansible` runs, then tampered copies that verify must pin to the right line.
"""

import importlib.util
import json
import multiprocessing
import pathlib
import re
import shutil
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKERS = 8
APPENDS = 500

pytestmark = pytest.mark.slow


def _load_history():
    spec = importlib.util.spec_from_file_location(
        "swiftdeploy_history", ROOT / "plugins" / "module_utils" / "_history.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


history = _load_history()


def _writer(path, worker, barrier):
    barrier.wait()  # all writers start together, to collide as much as possible
    for index in range(APPENDS):
        history.append_event(path, {"event": "status_scrape", "stack": "shop", "host": "web1",
                                    "actor": {"user": "writer%d" % worker},
                                    "details": {"worker": worker, "index": index}})


@pytest.fixture(scope="module")
def crowded_history(tmp_path_factory):
    """A history written by 8 processes x 500 appends at once, and how long that took."""
    path = tmp_path_factory.mktemp("history") / "history.jsonl"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WORKERS + 1)
    workers = [context.Process(target=_writer, args=(str(path), worker, barrier))
               for worker in range(WORKERS)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.monotonic()
    for worker in workers:
        worker.join(timeout=600)
    elapsed = time.monotonic() - started
    assert [worker.exitcode for worker in workers] == [0] * WORKERS
    print("\n%d concurrent appends took %.2f s" % (WORKERS * APPENDS, elapsed))
    return path


def test_every_append_lands_once_and_in_order(crowded_history):
    raw = crowded_history.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == WORKERS * APPENDS
    records = [json.loads(line) for line in lines]
    assert [record["seq"] for record in records] == list(range(1, WORKERS * APPENDS + 1))
    # Each writer's own appends keep their order, and none is missing or doubled.
    by_worker = {}
    for record in records:
        by_worker.setdefault(record["details"]["worker"], []).append(record["details"]["index"])
    assert by_worker == {worker: list(range(APPENDS)) for worker in range(WORKERS)}
    timestamps = [record["timestamp"] for record in records]
    assert timestamps == sorted(timestamps), "records are stamped under the lock"
    assert history.verify(str(crowded_history)) == {
        "ok": True, "lines": 4000, "first_problem": None, "last_seq": 4000,
        "last_hash": records[-1]["hash"]}


def _tampered_copy(source, target, change):
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text("".join(change(lines)), encoding="utf-8")
    return history.verify(str(target))


def test_tampering_with_the_crowded_history_is_pinned(crowded_history, tmp_path):
    records = [json.loads(line) for line in crowded_history.read_text().splitlines()]

    def edit(lines):
        lines[1233] = lines[1233].replace('"index":', '"index":1', 1)
        return lines

    def delete(lines):
        del lines[1999]
        return lines

    def swap(lines):
        lines[2999], lines[3000] = lines[3000], lines[2999]
        return lines

    def header(line):
        return "line %d (seq %d, event status_scrape)" % (line, records[line - 1]["seq"])

    result = _tampered_copy(crowded_history, tmp_path / "edited.jsonl", edit)
    assert result["first_problem"]["message"] == (
        "%s: its hash does not match its content: the line was edited" % header(1234))
    result = _tampered_copy(crowded_history, tmp_path / "deleted.jsonl", delete)
    assert result["lines"] == 3999
    assert result["first_problem"]["message"] == (
        "line 2000 (seq 2001, event status_scrape): seq 2000 is missing before it: 1 line was "
        "removed")
    result = _tampered_copy(crowded_history, tmp_path / "swapped.jsonl", swap)
    assert result["first_problem"]["message"] == (
        "line 3000 (seq 3001, event status_scrape): expected seq 3000 here, which appears later at "
        "line 3001: lines were reordered")


# --------------------------------------------------------------------------------------------
# The same through the module
# --------------------------------------------------------------------------------------------

_ADHOC_RESULT = re.compile(r"^localhost \| (?P<status>[A-Z!]+) => (?P<json>\{.*\})\s*$", re.S | re.M)


def _adhoc(env, module, args, check=False):
    command = ["ansible", "localhost", "-m", "swiftdeploy.stack.%s" % module, "-a", json.dumps(args)]
    if check:
        command.append("--check")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    stdout, stderr = proc.communicate(timeout=300)
    match = _ADHOC_RESULT.search(stdout)
    assert match, "no result in:\n%s\n%s" % (stdout, stderr)
    return proc.returncode, match["status"], json.loads(match["json"])


def test_parallel_module_runs_keep_the_chain(ansible_env, tmp_path):
    path = tmp_path / "project" / "history.jsonl"  # the directory does not exist yet
    runs = [_adhoc(ansible_env, "audit_event",
                   {"path": str(path), "event": "deploy", "stack": "shop", "version": "1.%d.0" % n,
                    "actor": {"user": "ci", "awx_job_id": str(100 + n)}, "details": {"run": n}})
            for n in range(6)]
    results = [_finish(proc) for proc in runs]
    assert [(rc, status) for rc, status, result in results] == [(0, "CHANGED")] * 6
    assert sorted(result["seq"] for rc, status, result in results) == list(range(1, 7))
    assert oct(path.parent.stat().st_mode & 0o777) == "0o750"
    assert oct(path.stat().st_mode & 0o777) == "0o640"

    records = list(history.iter_events(str(path)))
    assert sorted(record["details"]["run"] for record in records) == list(range(6))
    assert all(record["actor"]["awx_job_id"] == "1%02d" % record["details"]["run"]
               for record in records)
    last = max(results, key=lambda item: item[2]["seq"])[2]

    rc, status, checked = _finish(_adhoc(ansible_env, "audit_verify_info",
                                         {"path": str(path),
                                          "anchor": {"seq": last["seq"], "hash": last["hash"]}}))
    assert (rc, status, checked["verified"], checked["lines"], checked["events"]) == (0, "SUCCESS", True, 6, 6)

    before = path.read_bytes()
    rc, status, preview = _finish(_adhoc(ansible_env, "audit_event",
                                         {"path": str(path), "event": "teardown"}, check=True))
    assert (rc, status, preview["seq"], preview["record"]["prev"]) == (0, "CHANGED", 7, last["hash"])
    assert path.read_bytes() == before, "check mode wrote to the history"

    shutil.copy(path, tmp_path / "kept.jsonl")
    lines = before.decode().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]))
    rc, status, failed = _finish(_adhoc(ansible_env, "audit_verify_info", {"path": str(path)}))
    assert (rc, status, failed["verified"], failed["problem"]["kind"]) == (2, "FAILED!", False, "removed")
    assert failed["msg"] == "history %s is not intact: %s" % (path, failed["problem"]["reason"])
    assert failed["problem"]["reason"].startswith("line 3 (seq 4, event deploy): seq 3 is missing")

    rc, status, reported = _finish(_adhoc(ansible_env, "audit_verify_info",
                                          {"path": str(path), "fail_on_tamper": False}))
    assert (rc, status, reported["verified"]) == (0, "SUCCESS", False)
