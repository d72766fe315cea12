"""The audit report's Markdown: the role's template rendered from audit_report_info's data, with
the collection's md_cell, md_text and md_mermaid filters. Every section is there, values from
the history cannot change the document's structure, and an overridden template is used."""

import re

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.filter.markdown import (
    md_cell,
    md_mermaid,
    md_text,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _audit_digest as digest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_proof import LineProver
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import build_report
from ansible_collections.swiftdeploy.stack.plugins.module_utils._markdown import CELL_LIMIT

from audit_histories import (
    HOSTILE,
    MARKDOWN,
    History,
    cell_text,
    lifecycle,
    mermaid,
    report,
    section,
    table_rows_in,
    tables,
)
from audit_render import AUDIT_TEMPLATE, ROOT, render_report

FIXTURES = ROOT / "tests" / "fixtures" / "audit_report"
SECTIONS = ["Chain verification", "Summary", "Timeline", "Mode changes", "Images that ran", "Blocked operations",
            "Automated rollouts' judgements", "Policy failures seen by status scrapes", "Chaos", "Lock waits",
            "Error rate and P99 over time"]


@pytest.fixture
def hist(tmp_path):
    return History(tmp_path / "history.jsonl")


def anonymous(hist, **kwargs):
    """The report of hist with its path replaced by the one in the fixtures."""
    return report(str(hist.path), **kwargs)["markdown"].replace(md_text(str(hist.path)),
                                                                "/srv/shop/history.jsonl")


# --------------------------------------------------------------------------------------------
# The same report as before the template: byte for byte
# --------------------------------------------------------------------------------------------


def test_the_template_renders_the_report_the_module_used_to_write(hist):
    """The fixtures were written by the Python renderer the template replaced."""
    lifecycle(hist)
    anchor = {"seq": 3, "hash": json_hash(hist.lines()[2])}
    assert anonymous(hist, anchor=anchor) == (FIXTURES / "lifecycle.md").read_text()
    lines = hist.lines()
    lines[5] = lines[5].replace('"policy":"canary"', '"policy":"none"')
    lines.insert(9, "not a record\n")
    hist.path.write_text("".join(lines), encoding="utf-8")
    assert anonymous(hist) == (FIXTURES / "broken.md").read_text()


def json_hash(line):
    return yaml.safe_load(line)["hash"]


def test_every_section_is_there_in_order(hist):
    lifecycle(hist)
    markdown = report(str(hist.path))["markdown"]
    assert re.findall(r"^## (.*)$", markdown, re.M) == SECTIONS
    assert re.findall(r"^### (.*)$", markdown, re.M) == ["Events by type", "Chaos transitions"]
    assert markdown.startswith("# Audit report: stack shop on web1\n")
    assert markdown.endswith("```\n") and not markdown.endswith("\n\n")


def test_an_empty_history_has_every_section_with_a_sentence(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"")
    markdown = report(str(path))["markdown"]
    assert re.findall(r"^## (.*)$", markdown, re.M) == SECTIONS
    for sentence in ("The history holds no event yet.", "**Verified**: the history is empty.",
                     "No events other than status scrapes.", "No mode changes.",
                     "No operation was blocked.",
                     "No automated rollout (promote.yml -e mode=auto) judged a canary.",
                     "No status scrape saw a failing policy.",
                     "No status scrape saw chaos injected.",
                     "No run had to wait for the stack lock.",
                     "No status scrape recorded an error rate or a P99, so there is no chart.\n"):
        assert sentence in markdown, sentence
    assert markdown.endswith("so there is no chart.\n")


def test_an_overridden_template_gets_the_same_data(hist, tmp_path):
    lifecycle(hist)
    template = tmp_path / "short.md.j2"
    template.write_text("{{ swiftdeploy_audit.title.stack }}: {{ swiftdeploy_audit.events }} "
                        "events\n{% for row in swiftdeploy_audit.blocked.rows %}"
                        "{{ row.reasons | swiftdeploy.stack.md_cell }}\n{% endfor %}")
    text = render_report(build_report(str(hist.path)), template=template)
    assert text.splitlines() == ["shop: 14 events", "a\\|b<br>x\\`y<br>line1<br>line2<br>&lt;script&gt;"
                                 "<br>  padded  <br>back\\\\slash\\|<br>\\*em\\* \\_u\\_ "
                                 "\\[l\\](x)<br>&amp;amp; \\~\\~s\\~\\~", "disk full"]


def test_the_role_uses_its_template_unless_told_otherwise():
    role = ROOT / "roles" / "swiftdeploy"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    assert defaults["swiftdeploy_audit_report_template"] == AUDIT_TEMPLATE.name
    assert (role / "templates" / defaults["swiftdeploy_audit_report_template"]).is_file()
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    option = specs["argument_specs"]["audit"]["options"]["swiftdeploy_audit_report_template"]
    assert (option["type"], option["default"]) == ("str", AUDIT_TEMPLATE.name)
    tasks = yaml.safe_load((role / "tasks" / "audit.yml").read_text())
    every = [task for top in tasks for task in [top] + top.get("block", []) + top.get("rescue", [])]
    renders = [task["ansible.builtin.template"] for task in every if "ansible.builtin.template" in task]
    # Each host's report, then the fleet report on the controller, each from its own template.
    assert [render["src"] for render in renders] == ["{{ swiftdeploy_audit_report_template }}",
                                                     "{{ swiftdeploy_audit_fleet_report_template }}"]
    assert defaults["swiftdeploy_audit_fleet_report_template"] == "audit_fleet_report.md.j2"
    assert (role / "templates" / defaults["swiftdeploy_audit_fleet_report_template"]).is_file()


@pytest.mark.parametrize("limit", [0, -1, True, "10"])
def test_a_filter_refuses_a_limit_that_is_not_a_count(limit):
    with pytest.raises(AnsibleFilterError, match="limit must be a whole number of characters"):
        md_cell("x", limit=limit)
    with pytest.raises(AnsibleFilterError, match="limit must be a whole number of characters"):
        md_mermaid("x", limit=limit)


# --------------------------------------------------------------------------------------------
# Escaping: tables, text, the chart
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE + ["", " ", "\\", "|", "`", "trailing\\", "\t tab",
                                             "ctrl\x01\x7f", "a\r\nb", "&lt;", "**", "[x]"])
def test_a_cell_shows_its_value_as_it_reads(value):
    markdown = "| value | after |\n| --- | --- |\n| %s | end |\n" % md_cell(value)
    [rows] = tables(markdown)
    assert len(rows) == 2 and all(len(row) == 2 for row in rows)
    expected = value.replace("\r\n", "\n").replace("\x01", "\u2401").replace("\x7f", "\u2421")
    assert rows[1] == [expected, "end"]


def test_long_and_structured_values_are_cut_and_shown_as_json():
    assert md_cell("x" * 500) == "x" * (CELL_LIMIT - 1) + "\u2026"
    assert md_cell("<" * 500).count("&lt;") == CELL_LIMIT - 1  # cut before escaping
    assert md_cell("x" * 500, limit=10) == "x" * 9 + "\u2026"
    assert md_text("<" * 500) == "&lt;" * 500  # paragraph text is never cut
    assert md_cell({"b": [1, None], "a": "|"}) == '{"a":"\\|","b":\\[1,null\\]}'
    markdown = "| v |\n| --- |\n| %s |\n" % md_cell({"b": [1, None], "a": "|"})
    assert tables(markdown) == [[["v"], ['{"a":"|","b":[1,null]}']]]


def test_every_table_of_a_hostile_report_keeps_its_columns(hist):
    hostile_actor = {"user": "a|b `c`\n<i>", "awx_job_id": "1|2", "awx_job_template": "<t>"}
    hist.add("deploy", details={"generation": 1}, actor=hostile_actor, stack="s|t`<x>")
    for value in HOSTILE:
        hist.add("promote_blocked", details={"target_mode": value, "policy": value,
                                             "reasons": [value]}, actor=hostile_actor)
        hist.add("lock_wait", details={"waited_seconds": 1, "broken_stale": value},
                 actor=hostile_actor)
        hist.scrape(chaos=value, canary=False, reasons=[value, value.upper()])
    markdown = report(str(hist.path), stack="s|t`<x>")["markdown"]
    found = tables(markdown)
    assert len(found) == 9  # summary, events by type, timeline, modes, blocked, policy, chaos x2,
    for rows in found:      # lock waits
        assert all(len(row) == len(rows[0]) for row in rows), rows
    blocked = table_rows_in(markdown, "Blocked operations")
    assert [row[2] for row in blocked[1:]] == HOSTILE
    assert [row[4] for row in blocked[1:]] == HOSTILE
    assert {row[5] for row in blocked[1:]} == {"a|b `c`\n<i> (AWX job 1|2, template <t>)"}
    failures = table_rows_in(markdown, "Policy failures seen by status scrapes")
    assert sorted(row[1] for row in failures[1:]) == sorted(
        "%s\n%s" % (value, value.upper()) for value in HOSTILE)
    states, _transitions = tables(section(markdown, "Chaos"))
    assert [row[:2] for row in states[1:]] == [[value, "1"] for value in HOSTILE]
    stale = table_rows_in(markdown, "Lock waits")
    assert [row[3] for row in stale[1:]] == HOSTILE
    title = MARKDOWN.parse(markdown)[1]
    assert cell_text(title) == "Audit report: stack s|t`<x> on web1"


def test_scrapes_summed_inline_and_the_slow_way_share_buckets_and_chaos_state(hist):
    """Plain scrapes are summed up inline; one the fast path cannot prove (a P99 in exponent
    form) goes through record(). Both kinds in one chart bucket and one chaos period, with other
    events between, add up as one."""
    hist.scrape(1.0, 10.0, minutes=0)
    hist.add("lock_wait", details={"waited_seconds": 1}, minutes=0)
    hist.scrape(2.0, 20.0, minutes=0)
    hist.scrape(3.0, 1e-05, chaos="error", canary=False, reasons=["slow"], minutes=0)
    hist.scrape(4.0, 40.0, chaos="error", minutes=0)
    hist.add("deploy", minutes=0)
    hist.scrape(5.0, 50.0, minutes=0)
    hist.scrape(6.0, 60.0, minutes=2)
    lines = hist.path.read_bytes().splitlines(keepends=True)
    inline = [LineProver().scrape(line) is not None for line in lines]
    assert inline == [True, False, True, False, True, False, True, True]
    result = report(str(hist.path))
    assert result["verified"] and result["summary"]["status_scrapes"] == 6
    assert result["summary"]["chaos_transitions"] == 2
    assert result["summary"]["scrape_policy_failures"] == 1
    chart = mermaid(result["markdown"])
    assert chart[4:6] == ["    line [3, 6]", "    line [24, 60]"]  # (10+20+0.00001+40+50)/5
    states, transitions = tables(section(result["markdown"], "Chaos"))
    assert states[1][:2] == ["error", "2"]
    assert [row[1:] for row in transitions[1:]] == [["none", "error"], ["error", "none"]]


def test_the_chart_is_a_well_formed_mermaid_xychart(hist):
    for number in range(200):  # 200 scrapes over 200 hours: more buckets than the chart keeps
        hist.scrape(error_rate=number % 7, p99=None if number % 10 == 0 else 100.0 + number,
                    minutes=60)
    result = report(str(hist.path))
    lines = mermaid(result["markdown"])
    assert lines[0] == "xychart-beta"
    assert re.fullmatch(r'    title "[^"\n]*"', lines[1])
    labels = re.fullmatch(r"    x-axis \[(.*)\]", lines[2]).group(1)
    labels = re.findall(r'"([^"]*)"', labels)
    assert re.fullmatch(r'    y-axis "[^"]*"', lines[3])
    series = [re.fullmatch(r"    line \[(.*)\]", line).group(1).split(", ") for line in lines[4:6]]
    assert len(lines) == 6
    assert 30 < len(labels) == result["chart_points"] <= digest.CHART_POINTS
    assert all(len(points) == len(labels) for points in series)
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", point) for points in series for point in points)
    assert len(set(labels)) == len(labels)
    errors = [float(point) for point in series[0]]
    assert min(errors) >= 0 and max(errors) <= 6
    assert "Mean per 4 h 16 min of the error rate" in result["markdown"]  # 2^8 minutes


def test_chart_buckets_stay_bounded_and_merge_exactly():
    whole, first, second = digest._Chart(), digest._Chart(), digest._Chart()
    start = 1.8e9
    for number in range(20000):  # one every 26 minutes for a year
        when = start + number * 1560.0
        whole.add(when, number % 5, 100.0)
        (first if number < 7000 else second).add(when, number % 5, 100.0)
    assert len(whole.buckets) <= digest.CHART_POINTS
    assert sum(bucket[1] for bucket in whole.buckets.values()) == 20000
    assert sum(bucket[0] for bucket in whole.buckets.values()) == sum(n % 5 for n in range(20000))
    first.merge(second)
    assert (first.width, first.buckets) == (whole.width, whole.buckets)


def test_mermaid_labels_cannot_break_the_block():
    assert md_mermaid('a "quoted"\nlabel]`') == "a _quoted_ label__"
    assert '"' not in md_mermaid("\"" * 10) and "\n" not in md_mermaid("a\nb")
    assert md_mermaid("y" * 100) == "y" * 80 and md_mermaid("y" * 100, limit=5) == "yyyyy"
