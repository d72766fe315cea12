"""Table tests of audit.yml on a fleet (module_utils/_fleet_audit.py): each host's verification,
the merged timeline with host names, and where it starts when a host's timeline was cut."""

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _fleet_audit


def ev(minute, seq, event="deploy"):
    return {"timestamp": "2026-12-07T10:%02d:00.000Z" % minute, "seq": seq, "event": event, "mode": "stable",
            "version": "1.0.0", "who": "alice", "details": "{}"}


def audit(rows, total=None, verified=True, problem=None, events=None):
    return {"verified": verified, "problem": problem, "events": events if events is not None else len(rows),
            "timeline": {"rows": rows, "total": len(rows) if total is None else total},
            "title": {"history": "/srv/shop/history.jsonl"},
            "summary": {"first_timestamp": rows[0]["timestamp"] if rows else None,
                        "last_timestamp": rows[-1]["timestamp"] if rows else None}}


@pytest.mark.parametrize("timelines, hosts_seqs, since, left_out", [
    # Interleaved by time; a tie is broken by host name, then seq.
    ({"h2": {"rows": [ev(1, 1), ev(3, 2)], "total": 2}, "h1": {"rows": [ev(1, 1), ev(2, 2)], "total": 2}},
     [("h1", 1), ("h2", 1), ("h1", 2), ("h2", 2)], None, 0),
    # h1's timeline was cut (it kept its last 2 of 10, from minute 5): the merged one starts there,
    # so h2's older events (minutes 1, 2) are left out rather than shown as if h1 had been idle.
    ({"h1": {"rows": [ev(5, 9), ev(6, 10)], "total": 10}, "h2": {"rows": [ev(1, 1), ev(2, 2), ev(7, 3)], "total": 3}},
     [("h1", 9), ("h1", 10), ("h2", 3)], "2026-12-07T10:05:00.000Z", 10),
    # A host with no events adds nothing.
    ({"h1": {"rows": [], "total": 0}, "h2": {"rows": [ev(1, 1)], "total": 1}}, [("h2", 1)], None, 0),
    # Timestamps with another offset sort by instant.
    ({"h1": {"rows": [dict(ev(0, 1), timestamp="2026-12-07T11:30:00+01:00")], "total": 1},
      "h2": {"rows": [ev(20, 1)], "total": 1}}, [("h2", 1), ("h1", 1)], None, 0),
])
def test_timelines_merge_by_time_with_host_names(timelines, hosts_seqs, since, left_out):
    merged = _fleet_audit.merge_timelines(timelines)
    assert [(row["host"], row["seq"]) for row in merged["rows"]] == hosts_seqs
    assert merged["since"] == since
    assert merged["left_out"] == left_out
    assert merged["shown"] == len(hosts_seqs)


def test_the_merged_timeline_keeps_the_latest_rows_up_to_the_limit():
    merged = _fleet_audit.merge_timelines({"h1": {"rows": [ev(m, m) for m in range(10)], "total": 10}}, limit=3)
    assert [row["seq"] for row in merged["rows"]] == [7, 8, 9]
    assert (merged["total"], merged["shown"], merged["left_out"]) == (10, 3, 7)


BROKEN = {"line": 3, "seq": 3, "event": "promote", "kind": "edited",
          "reason": "line 3 (seq 3, event promote): its hash does not match its content: the line was edited"}


def test_each_host_has_its_verification_and_a_broken_chain_names_its_host():
    outcomes = {"h1": {"audit": audit([ev(1, 1)]), "report": "/r/h1/audit_report.md"},
                "h2": {"audit": audit([ev(2, 1), ev(3, 2)], verified=False, problem=BROKEN), "report": "/r/h2.md"},
                "h3": None,
                "h4": {"error": "Permission denied:\n  /srv/shop/history.jsonl"}}
    fleet = _fleet_audit.fleet_audit(outcomes, ["h1", "h2", "h3", "h4"], "shop")
    assert fleet["verified"] is False
    assert fleet["failed"] == ["h2"] and fleet["not_audited"] == ["h3", "h4"]
    assert fleet["events"] == 3
    assert [(e["host"], e["audited"], e["verified"]) for e in fleet["hosts"]] == [
        ("h1", True, True), ("h2", True, False), ("h3", False, False), ("h4", False, False)]
    assert fleet["lines"] == ["h1: verified, 1 events", "h2: BROKEN: " + BROKEN["reason"],
                              "h3: NOT AUDITED: " + _fleet_audit.NOT_REACHED,
                              "h4: NOT AUDITED: Permission denied: /srv/shop/history.jsonl"]
    assert [(row["host"], row["seq"]) for row in fleet["timeline"]["rows"]] == [("h1", 1), ("h2", 1), ("h2", 2)]
    # The single-host keys for set_stats, per host.
    assert fleet["stats"]["h1"] == {"verified": True, "events": 1, "report": "/r/h1/audit_report.md", "problem": None,
                                    "summary": outcomes["h1"]["audit"]["summary"]}
    assert fleet["stats"]["h3"] == {"audited": False, "verified": False, "reason": _fleet_audit.NOT_REACHED}


@pytest.mark.parametrize("outcomes, verified", [
    ({"h1": {"audit": audit([ev(1, 1)])}, "h2": {"audit": audit([])}}, True),
    ({}, False),  # no host audited is not a verified fleet
])
def test_the_fleet_is_verified_only_when_every_host_is(outcomes, verified):
    assert _fleet_audit.fleet_audit(outcomes, sorted(outcomes) or ["h1"])["verified"] is verified


@pytest.mark.parametrize("outcome, message", [
    ([1], "host h1: its audit outcome is list, not a mapping"),
    ({"audit": {"events": 1}}, "host h1: its audit outcome has no audit result with `verified`"),
])
def test_an_outcome_of_another_version_names_the_host(outcome, message):
    with pytest.raises(_fleet_audit.FleetAuditError, match=message):
        _fleet_audit.fleet_audit({"h1": outcome}, ["h1"])


def render_fleet_report(data):
    """The role's fleet report template, rendered as the template module does (trim_blocks, the
    collection's filters under their full names)."""
    import pathlib

    import jinja2

    from ansible_collections.swiftdeploy.stack.plugins.filter.markdown import FilterModule

    template = pathlib.Path(__file__).resolve().parents[3] / "roles" / "swiftdeploy" / "templates" / \
        "audit_fleet_report.md.j2"
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update({"swiftdeploy.stack." + name: function for name, function in FilterModule().filters().items()})
    return env.from_string(template.read_text()).render(swiftdeploy_fleet_report=data)


def test_the_fleet_report_names_each_host_its_verdict_and_the_merged_timeline():
    hostile = dict(ev(2, 1), details="| {{ 7 * 7 }} <b>")
    outcomes = {"h1": {"audit": audit([ev(1, 1)]), "report": "/r/h1/audit_report.md"},
                "h2": {"audit": audit([hostile, ev(3, 2)], verified=False, problem=BROKEN), "report": "/r/h2.md"},
                "h3": None}
    text = render_fleet_report(_fleet_audit.fleet_audit(outcomes, ["h1", "h2", "h3"], "shop"))
    lines = text.splitlines()
    assert lines[0] == "# Fleet audit report: stack shop on 3 hosts"
    assert "**NOT VERIFIED**: 1 host with a broken hash chain (h2); 1 host not audited (h3)." in text
    assert ("| h1 | verified | 1 | 2026-12-07T10:01:00.000Z | 2026-12-07T10:01:00.000Z | - | "
            "/r/h1/audit\\_report.md |") in lines
    assert any(line.startswith("| h2 | BROKEN at line 3 (edited) | 2 |") for line in lines), text
    assert "| h3 | NOT AUDITED | - | - | - | " + _fleet_audit.NOT_REACHED + " | - |" in lines
    timeline = text.split("## Timeline", 1)[1]
    rows = [line for line in timeline.splitlines() if line.startswith("| 2026")]
    assert [row.split(" | ")[1] for row in rows] == ["h1", "h2", "h2"]
    # A value from a history is escaped: no table break, no HTML, no template evaluated.
    assert "\\| {{ 7 \\* 7 }} &lt;b&gt;" in rows[1], rows[1]


def test_a_verified_fleet_says_so():
    text = render_fleet_report(_fleet_audit.fleet_audit({"h1": {"audit": audit([])}}, ["h1"], "shop"))
    assert "**Verified**: the hash chain of every host's history holds (0 events in all)." in text
    assert "No events other than status scrapes on any host." in text
