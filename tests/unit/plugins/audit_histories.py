"""Histories written with the real writer and Markdown read back, for the audit tests."""

import datetime
import re

from markdown_it import MarkdownIt

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import build_report
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import (
    append_event,
    parse_line,
    record_hash,
)

from audit_render import render_report

T0 = datetime.datetime(2026, 5, 5, 20, 0, 0, tzinfo=datetime.timezone.utc)
HOSTILE = ["a|b", "x`y", "line1\nline2", "<script>", "  padded  ", "back\\slash|",
           "*em* _u_ [l](x)", "&amp; ~~s~~"]
MARKDOWN = MarkdownIt("commonmark").enable("table")


def fields(event, mode="stable", details=None, actor=None, version="1.0.0", stack="shop"):
    return {"event": event, "stack": stack, "host": "web1", "mode": mode, "version": version,
            "actor": actor or {"user": "deploy", "playbook": "Deploy"}, "details": details or {}}


class History:
    """A history written with the real writer, one event a minute unless told otherwise."""

    def __init__(self, path):
        self.path = path
        self.minutes = 0

    def add(self, event, mode="stable", details=None, actor=None, minutes=1, **extra):
        self.minutes += minutes
        return append_event(str(self.path), fields(event, mode, details, actor, **extra),
                            now=T0 + datetime.timedelta(minutes=self.minutes))

    def scrape(self, error_rate=0.5, p99=80.0, chaos="none", infra=True, canary=True, reasons=(),
               mode="stable", minutes=1):
        return self.add("status_scrape", mode, {
            "req_s": 12.5, "error_rate_percent": error_rate, "p99_latency_ms": p99,
            "requests": 100, "errors": 1, "mode": mode, "weight": 0, "chaos": chaos,
            "policy_infra_pass": infra, "policy_canary_pass": canary,
            "policy_reasons": list(reasons)}, actor={"user": "awx", "awx_job_id": "7"},
            minutes=minutes)

    def lines(self):
        return self.path.read_text(encoding="utf-8").splitlines(keepends=True)


def lifecycle(hist):
    """deploy, scrapes, a canary with chaos that is blocked and rolled back, a lock wait, a
    blocked deploy, a second canary rolled forward, a teardown."""
    hist.add("deploy", details={"changed": True, "port": 8080, "engine": "sidecar",
                                "host_resources": {"disk_free_gb": 40.0}, "bypassed": False,
                                "stable_slot": "blue", "generation": 1})
    hist.scrape()
    hist.add("promote", "canary", {"from_mode": "stable", "target_mode": "canary", "weight": 20,
                                   "canary_version": "1.1.0", "canary_image": "shop:1.1.0",
                                   "slot": "green"},
             actor={"user": "awx", "awx_job_id": "42", "awx_job_template": "Promote"})
    hist.scrape(2.0, 120.0, chaos="error", canary=False, reasons=["error rate 2.00% exceeds 1%"],
                mode="canary")
    hist.scrape(3.0, 130.0, chaos="error", canary=False, reasons=["error rate 2.00% exceeds 1%"],
                mode="canary")
    hist.add("promote_blocked", "canary", {"target_mode": "stable", "policy": "canary",
                                           "reasons": HOSTILE, "checked": {}, "window": {}})
    hist.add("rollback", "stable", {"reason": "canary policy denied the promotion",
                                    "reasons": ["x"], "canary_version": "1.1.0",
                                    "stable_version": "1.0.0"})
    hist.add("lock_wait", details={"waited_seconds": 12.5, "broken_stale": None})
    hist.add("deploy_blocked", details={"policy": "infrastructure", "reasons": ["disk full"],
                                        "checked": {}})
    hist.scrape(0.1, None)
    hist.add("promote", "canary", {"from_mode": "stable", "target_mode": "canary", "weight": 50,
                                   "canary_version": "1.2.0", "canary_image": "shop:1.2.0",
                                   "slot": "green"}, minutes=10)
    hist.scrape(0.2, 70.0, chaos="slow", mode="canary", minutes=30)
    hist.add("promote", "stable", {"from_mode": "canary", "target_mode": "stable",
                                   "result": "rolled_forward", "from_version": "1.0.0",
                                   "version": "1.2.0", "window": {}, "reasons": []})
    hist.add("teardown", details={"clean": True, "removed": True})


def report(path, **kwargs):
    """build_report's data with the Markdown the role's template renders from it."""
    data = build_report(path, **kwargs)
    data["markdown"] = render_report(data)
    return data


def cell_text(inline):
    """What a reader sees in a cell: text, with <br> as a newline."""
    parts = []
    for child in inline.children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "html_inline" and child.content == "<br>":
            parts.append("\n")
        elif child.type == "softbreak":
            parts.append("\n")
        else:
            raise AssertionError("unexpected markup %s in cell %r" % (child.type, inline.content))
    return "".join(parts)


def tables(markdown):
    """Every table as its rows of cell texts, header row first."""
    found, rows, row = [], None, None
    for token in MARKDOWN.parse(markdown):
        if token.type == "table_open":
            rows = []
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(cell_text(token))
        elif token.type == "tr_close":
            rows.append(row)
            row = None
        elif token.type == "table_close":
            found.append(rows)
    return found


def section(markdown, title):
    match = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), markdown, re.M | re.S)
    assert match, "no section %s" % title
    return match.group(1)


def table_rows_in(markdown, title):
    """The first table of a section."""
    return tables(section(markdown, title))[0]


def mermaid(markdown):
    match = re.search(r"^```mermaid\n(.*?)^```$", markdown, re.M | re.S)
    return match.group(1).splitlines() if match else None


def slow_verdict(line):
    """What verify decides about one line's content: its record when the hash matches."""
    record, error = parse_line(line.rstrip(b"\n"))
    if error is not None:
        return None
    try:
        return record if record_hash(record) == record["hash"] else None
    except ValueError:
        return None
