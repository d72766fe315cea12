"""The history's anchor on the controller: every run that records keeps it, and the audit checks
the history on the host against it. A history rewritten and re-hashed, cut at the end, or deleted
verifies on its own; against the anchor each is reported with what was expected.

No Docker: events are recorded with the collection's audit_event module (its action plugin keeps
the anchor), as the lifecycle playbooks record them, and audit.yml reads only the history.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import (  # noqa: E402
    GENESIS, record_hash, serialize,
)

RECORD = """\
- name: Record events as the lifecycle playbooks do
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Record
      swiftdeploy.stack.audit_event:
        path: "{{ history }}"
        event: "{{ item }}"
        stack: sdanchor
        actor: {user: tester}
      loop: [deploy, promote, rollback]
"""


@pytest.fixture
def recorded(tmp_path, write_manifest, run_playbook):
    project = tmp_path / "project"
    project.mkdir()
    anchors = tmp_path / "anchors"
    manifest = write_manifest(tmp_path / "manifest.yml", {"stack": "sdanchor"})
    playbook = tmp_path / "record.yml"
    playbook.write_text(RECORD)
    run = run_playbook(str(playbook), "-e", "history=%s" % (project / "history.jsonl"),
                       "-e", "swiftdeploy_anchor_dir=%s" % anchors)
    assert run.rc == 0, run.describe()

    def audit(*extra):
        return run_playbook("audit", "-e", "swiftdeploy_manifest=%s" % manifest, "-e",
                            "swiftdeploy_project_dir=%s" % project, "-e", "swiftdeploy_anchor_dir=%s" % anchors,
                            "-e", "report_dir=%s" % (tmp_path / "reports"), *extra)
    (anchor,) = (anchors / "sdanchor").glob("localhost.*.json")
    return project / "history.jsonl", anchor, audit


def test_every_recording_run_keeps_the_anchor_on_the_controller(recorded):
    history, anchor_file, audit = recorded
    anchor = json.loads(anchor_file.read_text())
    last = json.loads(history.read_text().splitlines()[-1])
    assert (anchor["seq"], anchor["hash"], anchor["stack"]) == (3, last["hash"], "sdanchor")
    run = audit()
    assert run.rc == 0 and "3 events, chain verified" in run.stdout, run.describe()


def test_a_history_cut_at_the_end_is_reported_against_the_anchor(recorded):
    history, _anchor, audit = recorded
    history.write_text("".join(history.read_text().splitlines(True)[:2]))
    run = audit()
    assert run.rc != 0, run.describe()
    assert "truncated: line 3: the anchor seq 3 (hash" in run.stdout and "the history ends at seq 2" in run.stdout


def test_a_history_rewritten_and_re_hashed_is_reported_against_the_anchor(recorded):
    history, _anchor, audit = recorded
    records, prev, out = [json.loads(line) for line in history.read_text().splitlines()], GENESIS, b""
    for record in records:
        record["details"] = {"reason": "nothing happened"}
        record["prev"] = prev
        record["hash"] = prev = record_hash(record)
        out += serialize(record)
    history.write_bytes(out)
    run = audit()
    assert run.rc != 0, run.describe()
    assert "edited: line 3 (seq 3, event rollback): the anchor says seq 3 has hash" in run.stdout, run.describe()


def test_a_deleted_history_is_reported_against_the_anchor(recorded):
    history, anchor_file, audit = recorded
    expected = json.loads(anchor_file.read_text())["hash"]
    history.unlink()
    run = audit()
    assert run.rc != 0, run.describe()
    assert "was deleted: the controller's anchor says it held seq 3 (hash %s)" % expected in run.stdout


def test_a_history_that_restarts_keeps_the_anchor_and_fails_the_audit(recorded, run_playbook, tmp_path):
    history, anchor_file, audit = recorded
    history.unlink()
    playbook = tmp_path / "record.yml"
    run = run_playbook(str(playbook), "-e", "history=%s" % history,
                       "-e", "swiftdeploy_anchor_dir=%s" % anchor_file.parent.parent)
    assert run.rc == 0, run.describe()
    anchor = json.loads(anchor_file.read_text())
    assert anchor["seq"] == 3 and anchor["regressed"]["seq"] == 3
    run = audit()
    assert run.rc != 0, run.describe()
    assert "the anchor says seq 3 has hash" in run.stdout, run.describe()


# The same events, recorded with the history key.
KEYED = RECORD.replace("        actor: {user: tester}\n",
                       "        actor: {user: tester}\n        history_key: \"{{ swiftdeploy_history_key }}\"\n")
SECRET = "s3cr3t-history-key-never-in-a-log"


def test_with_the_history_key_lines_rewritten_without_it_are_found_even_without_an_anchor(
        tmp_path, write_manifest, run_playbook):
    project = tmp_path / "project"
    project.mkdir()
    history = project / "history.jsonl"
    manifest = write_manifest(tmp_path / "manifest.yml", {"stack": "sdanchor"})
    playbook = tmp_path / "keyed.yml"
    playbook.write_text(KEYED)
    recorded = run_playbook(str(playbook), "-vvv", "-e", "history=%s" % history, "-e",
                            "swiftdeploy_anchor_dir=%s" % (tmp_path / "anchors"), "-e", "swiftdeploy_history_key=%s" % SECRET)
    assert recorded.rc == 0, recorded.describe()
    assert SECRET not in recorded.output and SECRET not in history.read_text()
    assert all("mac" in json.loads(line) for line in history.read_text().splitlines())

    records, prev, out = [json.loads(line) for line in history.read_text().splitlines()], GENESIS, b""
    for record in records:
        record["details"] = {"reason": "nothing happened"}
        record.pop("mac")
        record["prev"] = prev
        record["hash"] = prev = record_hash(record)
        out += serialize(record)
    history.write_bytes(out)

    def audit(*extra):
        return run_playbook("audit", "-e", "swiftdeploy_manifest=%s" % manifest, "-e", "swiftdeploy_project_dir=%s"
                            % project, "-e", "swiftdeploy_anchor_dir=%s" % (tmp_path / "no-anchors"),
                            "-e", "report_dir=%s" % (tmp_path / "reports"), *extra)
    unkeyed = audit()
    assert unkeyed.rc == 0, "without the key or an anchor, a re-hashed history verifies: " + unkeyed.describe()
    keyed = audit("-e", "swiftdeploy_history_key=%s" % SECRET)
    assert keyed.rc != 0, keyed.describe()
    assert "edited: line 1 (seq 1, event deploy): it has no mac although the history is keyed" in keyed.stdout
    assert SECRET not in keyed.output
