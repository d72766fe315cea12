"""audit.yml end to end: a history written by the real writer, the real playbook, the report
fetched to the controller, a tampered line failing the play (and accepted when asked).

No Docker: audit reads only the history, so the history here is written with the collection's
own append_event, as audit_event writes it on a host.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import append_event  # noqa: E402


def write_history(project: pathlib.Path) -> pathlib.Path:
    project.mkdir(parents=True, exist_ok=True)
    path = project / "history.jsonl"
    actor = {"user": "alice", "awx_job_id": "42", "awx_job_template": "SwiftDeploy | promote"}
    events = [
        ("deploy", "stable", {"changed": True, "generation": 1}),
        ("promote", "canary", {"from_mode": "stable", "target_mode": "canary", "weight": 10, "slot": "green"}),
        ("status_scrape", "canary", {"req_s": 12.5, "error_rate_percent": 40.0, "p99_latency_ms": 12.0,
                                     "requests": 250, "errors": 100, "mode": "canary", "weight": 10,
                                     "chaos": "error", "policy_infra_pass": True, "policy_canary_pass": False,
                                     "policy_reasons": ["error rate 40.00% exceeds the maximum 1.00%"]}),
        ("promote_blocked", "canary", {"target_mode": "stable", "policy": "canary",
                                       "reasons": ["error rate 40.00% exceeds | the maximum `1.00%`"]}),
        ("rollback", "stable", {"reason": "canary rejected", "reasons": [], "canary_version": "1.1.0"}),
    ]
    for event, mode, details in events:
        append_event(str(path), {"event": event, "stack": "sdaudit", "host": "web1", "actor": actor,
                                 "mode": mode, "version": "1.0.0", "details": details})
    return path


@pytest.fixture
def audit(tmp_path, write_manifest, run_playbook):
    manifest = write_manifest(tmp_path / "manifest.yml", {"stack": "sdaudit"})
    project = tmp_path / "project"
    reports = tmp_path / "reports"

    def run(*extra, check=False):
        return run_playbook("audit", "-e", "swiftdeploy_manifest=%s" % manifest, "-e",
                            "swiftdeploy_project_dir=%s" % project, "-e", "report_dir=%s" % reports,
                            *extra, check=check)

    run.project, run.reports = project, reports
    return run


def test_audit_fetches_the_report_and_a_second_run_changes_nothing(audit, parse_recap):
    write_history(audit.project)
    first = audit()
    assert first.rc == 0, first.describe()
    report = audit.reports / "localhost" / "audit_report.md"
    text = report.read_text()
    assert "chain verified" in first.stdout and "5 events" in first.stdout
    assert "**Verified**" in text
    assert "| Roll-backs | 1 |" in text
    # The hostile reason renders inside one table cell: its pipe and backticks are escaped.
    assert r"exceeds \| the maximum \`1.00%\`" in text
    # Who: the AWX job and template, the template's pipe escaped too.
    assert r"| alice (AWX job 42, template SwiftDeploy \| promote) |" in text
    assert "xychart-beta" in text
    again = audit()
    assert again.rc == 0, again.describe()
    assert parse_recap(again.stdout)["localhost"]["changed"] == 0
    assert report.read_text() == text


def test_a_tampered_line_fails_the_play_and_names_it(audit):
    path = write_history(audit.project)
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[3])
    record["details"]["reasons"] = ["nothing to see here"]
    lines[3] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))

    run = audit()
    assert run.rc != 0
    assert "fails verification at line 4 (event promote_blocked): edited" in run.stdout, run.describe()
    report = (audit.reports / "localhost" / "audit_report.md").read_text()
    assert "BROKEN" in report and "line 4" in report

    accepted = audit("-e", "allow_tampered=true")
    assert accepted.rc == 0, accepted.describe()
    assert "chain BROKEN" in accepted.stdout


def test_check_mode_writes_no_report(audit):
    write_history(audit.project)
    run = audit(check=True)
    assert run.rc == 0, run.describe()
    assert not (audit.project / "audit_report.md").exists()
    assert not audit.reports.exists()


def test_no_history_fails_with_a_clear_message(audit):
    run = audit()
    assert run.rc != 0
    assert "no history at" in run.stdout and "nothing has been recorded for this stack" in run.stdout, run.describe()
