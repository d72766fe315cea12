"""audit.yml end to end: a history written by the real writer, the real playbook, the report
fetched to the controller, a tampered line failing the play (and accepted when asked).

No Docker: audit reads only the history, so the history here is written with the collection's
own append_event, as audit_event writes it on a host.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import build_report  # noqa: E402
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import append_event  # noqa: E402


def _unit_renderer():
    """render_report from the unit tests: the template rendered by plain Jinja with the
    template module's settings, to compare with what ansible.builtin.template wrote."""
    spec = importlib.util.spec_from_file_location("audit_render",
                                                  ROOT / "tests" / "unit" / "plugins" / "audit_render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.render_report


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

    def run(*extra, check=False, diff=None):
        return run_playbook("audit", "-e", "swiftdeploy_manifest=%s" % manifest, "-e",
                            "swiftdeploy_project_dir=%s" % project, "-e", "report_dir=%s" % reports,
                            *extra, check=check, diff=diff)

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
    # The report on the host and the one fetched are the template's rendering of the data,
    # byte for byte as plain Jinja renders it in the unit tests.
    assert (audit.project / "audit_report.md").read_text() == text
    data = build_report(str(audit.project / "history.jsonl"), stack="sdaudit", host="localhost")
    assert _unit_renderer()(data) == text
    assert oct((audit.project / "audit_report.md").stat().st_mode & 0o777) == "0o640"
    again = audit(diff=True)
    assert again.rc == 0, again.describe()
    assert parse_recap(again.stdout)["localhost"]["changed"] == 0
    assert report.read_text() == text


def test_a_new_event_shows_as_a_diff_in_check_mode(audit, parse_recap):
    path = write_history(audit.project)
    assert audit().rc == 0
    append_event(str(path), {"event": "teardown", "stack": "sdaudit", "host": "web1",
                             "actor": {"user": "bob"}, "details": {"clean": True}})
    before = (audit.project / "audit_report.md").read_text()
    fleet_before = (audit.reports / "fleet_audit_report.md").read_text()
    run = audit(check=True)  # with --diff
    assert run.rc == 0, run.describe()
    # The host's report and the fleet report (its timeline gains the teardown), neither written.
    assert parse_recap(run.stdout)["localhost"]["changed"] == 2
    assert "+| Teardowns | 1 |" in run.stdout and "-| Teardowns | 0 |" in run.stdout, run.describe()
    assert re.search(r"^\+\| [0-9T:.\-]+Z \| localhost \| \d+ \| teardown \|", run.stdout, re.M), run.describe()
    assert (audit.project / "audit_report.md").read_text() == before
    assert (audit.reports / "fleet_audit_report.md").read_text() == fleet_before


def test_an_overridden_template_is_used(audit, tmp_path):
    write_history(audit.project)
    template = tmp_path / "my_report.md.j2"
    template.write_text("# {{ swiftdeploy_audit.title.stack | swiftdeploy.stack.md_text }}: "
                        "{{ swiftdeploy_audit.events }} events, verified "
                        "{{ swiftdeploy_audit.verified }}\n"
                        "{% for row in swiftdeploy_audit.blocked.rows %}"
                        "| {{ row.reasons | swiftdeploy.stack.md_cell }} |\n{% endfor %}")
    run = audit("-e", "swiftdeploy_audit_report_template=%s" % template)
    assert run.rc == 0, run.describe()
    text = (audit.reports / "localhost" / "audit_report.md").read_text()
    assert text == ("# sdaudit: 5 events, verified True\n"
                    "| error rate 40.00% exceeds \\| the maximum \\`1.00%\\` |\n")


def test_values_from_the_history_are_not_templated(audit):
    """A history is untrusted: a value that looks like Jinja is shown, never evaluated."""
    path = write_history(audit.project)
    append_event(str(path), {"event": "deploy_blocked", "stack": "sdaudit", "host": "web1",
                             "actor": {"user": "{{ lookup('env', 'HOME') }}"},
                             "details": {"policy": "{% raw %}x", "reasons": ["{{ 7 * 7 }}"]}})
    run = audit()
    assert run.rc == 0, run.describe()
    text = (audit.reports / "localhost" / "audit_report.md").read_text()
    assert "| {{ 7 \\* 7 }} |" in text
    assert "{{ lookup('env', 'HOME') }}" in text and "{% raw %}x" in text


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
