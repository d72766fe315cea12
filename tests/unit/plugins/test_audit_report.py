"""The audit report's data: one pass that verifies the chain as verify does and sums the
history up, section by section (read back from the role's template), in one go or in parts, and
the fast path that proves lines by their bytes."""

import datetime
import hashlib
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _audit_proof as proof
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _audit_scan as scan
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_proof import (
    LineProver,
    prove_line,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import ReportError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import (
    GENESIS,
    ChainVerifier,
    build_record,
    record_hash,
    serialize,
    verify,
)

from audit_histories import (
    HOSTILE,
    T0,
    History,
    fields,
    lifecycle,
    report,
    section,
    slow_verdict,
    table_rows_in,
    tables,
)


@pytest.fixture
def hist(tmp_path):
    return History(tmp_path / "history.jsonl")


# --------------------------------------------------------------------------------------------
# The sections
# --------------------------------------------------------------------------------------------


def test_a_history_is_summed_up_section_by_section(hist):
    lifecycle(hist)
    result = report(str(hist.path))
    markdown = result["markdown"]
    assert markdown.startswith("# Audit report: stack shop on web1\n\nAs of the last event in "
                               "the history, 2026-05-05T20:52:00.000Z ")
    assert result["verified"] is True and result["problem"] is None
    assert result["events"] == result["lines"] == 14
    assert result["last_hash"] == verify(str(hist.path))["last_hash"]
    assert "**Verified**: the hash chain holds for all 14 lines (14 events); the last record is " \
           "seq 14 with hash `%s`." % result["last_hash"] in markdown

    summary = result["summary"]
    assert {key: summary[key] for key in ("deploys", "promotions", "rollbacks", "blocked",
                                          "lock_waits", "status_scrapes", "teardowns",
                                          "scrape_policy_failures", "chaos_transitions")} == {
        "deploys": 1, "promotions": 3, "rollbacks": 1, "blocked": 2, "lock_waits": 1,
        "status_scrapes": 5, "teardowns": 1, "scrape_policy_failures": 2, "chaos_transitions": 3}
    # canary from 20:03 to the roll-back at 20:07, then from 20:20 to the roll-forward at 20:51
    assert (summary["canary_seconds"], summary["canary_periods"], summary["in_canary"]) == \
        (4 * 60 + 31 * 60, 2, False)
    figures = dict(table_rows_in(markdown, "Summary")[1:])
    assert figures["Time in canary"] == "35 min over 2 periods"
    assert figures["Blocked operations"] == "2 (deploys 1, promotions 1)"

    timeline = table_rows_in(markdown, "Timeline")
    assert timeline[0] == ["When (UTC)", "Seq", "Event", "Mode", "Version", "Who", "Details"]
    assert [row[2] for row in timeline[1:]] == ["deploy", "promote", "promote_blocked", "rollback",
                                                "lock_wait", "deploy_blocked", "promote", "promote",
                                                "teardown"]

    changes = table_rows_in(markdown, "Mode changes")
    assert [row[1:5] for row in changes[1:]] == [
        ["deploy", "-", "stable", "1.0.0"], ["promote", "stable", "canary", "1.0.0"],
        ["rollback", "canary", "stable", "1.0.0"], ["promote", "stable", "canary", "1.0.0"],
        ["promote", "canary", "stable", "1.0.0"], ["teardown", "stable", "down", "1.0.0"]]
    assert changes[2][6] == "awx (AWX job 42, template Promote)"
    assert changes[5][5] == "rolled forward 1.0.0 -> 1.2.0"

    blocked = table_rows_in(markdown, "Blocked operations")
    assert blocked[1][1:5] == ["promote_blocked", "stable", "canary", "\n".join(HOSTILE)]
    assert blocked[2][1:5] == ["deploy_blocked", "deploy", "infrastructure", "disk full"]

    failures = table_rows_in(markdown, "Policy failures seen by status scrapes")
    assert failures[1:] == [["canary", "error rate 2.00% exceeds 1%", "2",
                             "2026-05-05T20:04:00.000Z", "2026-05-05T20:05:00.000Z"]]

    states, transitions = tables(section(markdown, "Chaos"))
    assert states[1:] == [["error", "2", "2026-05-05T20:04:00.000Z", "2026-05-05T20:05:00.000Z"],
                          ["slow", "1", "2026-05-05T20:50:00.000Z", "2026-05-05T20:50:00.000Z"]]
    assert transitions[1:] == [["2026-05-05T20:04:00.000Z", "none", "error"],
                               ["2026-05-05T20:10:00.000Z", "error", "none"],
                               ["2026-05-05T20:50:00.000Z", "none", "slow"]]

    locks = table_rows_in(markdown, "Lock waits")
    assert locks[1][1:3] == ["12.5", "deploy"]
    assert "1 lock wait, 12 s in all, the longest 12 s." in section(markdown, "Lock waits")


def test_the_chain_section_names_the_first_broken_line(hist):
    lifecycle(hist)
    lines = hist.lines()
    lines[5] = lines[5].replace('"policy":"canary"', '"policy":"none"')
    hist.path.write_text("".join(lines), encoding="utf-8")
    result = report(str(hist.path))
    reason = ("line 6 (seq 6, event promote_blocked): its hash does not match its content: the "
              "line was edited")
    assert result["problem"] == {"line": 6, "seq": 6, "event": "promote_blocked", "kind": "edited",
                                 "reason": reason}
    chain = section(result["markdown"], "Chain verification")
    assert chain.startswith("\n**BROKEN**: the hash chain breaks at line 6 (edited).\n")
    assert tables(chain)[0][1] == ["6", "6", "promote_blocked", "edited", reason]
    assert "The last sound record before it is seq 5 with hash `%s`." \
           % json.loads(lines[4])["hash"] in chain
    # Records after the break are still summed up
    assert result["events"] == 14 and result["summary"]["teardowns"] == 1


def test_the_timeline_is_bounded_and_says_what_it_leaves_out(hist):
    for number in range(30):
        hist.add("lock_wait", details={"waited_seconds": number})
    result = report(str(hist.path), timeline_limit=5)
    timeline = section(result["markdown"], "Timeline")
    assert "The last 5 of 30 events other than status scrapes; 25 earlier ones are omitted." \
           in timeline
    assert [row[1] for row in tables(timeline)[0][1:]] == ["26", "27", "28", "29", "30"]
    assert result["summary"]["lock_wait_seconds"] == sum(range(30))
    with pytest.raises(ReportError, match="timeline_limit must be a whole number of events"):
        report(str(hist.path), timeline_limit=-1)


def test_unknown_events_and_odd_details_do_not_break_the_report(hist):
    hist.add("deploy", details={"generation": {"nested": [1, None]}})
    hist.add("promote", details={"target_mode": ["not", "a", "mode"], "weight": "heavy"})
    hist.add("promote_blocked", details={"reasons": "one reason, not a list"})
    hist.add("lock_wait", details={"waited_seconds": "soon"})
    hist.add("lock_wait", details={"waited_seconds": "7.5"})
    hist.add("status_scrape", details={"error_rate_percent": "high", "p99_latency_ms": True,
                                       "chaos": {"mode": "error", "rate": 0.5},
                                       "policy_canary_pass": False, "policy_reasons": [{"r": 1}]})
    hist.add("rollback", details={})
    hist.add("teardown", details={"clean": "maybe"})
    hist.add("from_the_future", details={"x": [1, 2, {"y": "caf\u00e9"}]})
    result = report(str(hist.path))
    assert result["verified"] and result["events"] == 9
    assert result["summary"]["lock_wait_seconds"] == 7.5
    assert result["chart_points"] == 0
    markdown = result["markdown"]
    assert "No status scrape recorded an error rate or a P99, so there is no chart." in markdown
    assert table_rows_in(markdown, "Chaos")[1][0] == '{"mode":"error","rate":0.5}'
    assert table_rows_in(markdown, "Blocked operations")[1][4] == "one reason, not a list"
    assert table_rows_in(markdown, "Timeline")[-1][6] == '{"x":[1,2,{"y":"caf\u00e9"}]}'


def test_a_rollback_to_a_release_is_a_mode_change_naming_both_releases(hist):
    hist.add("deploy", details={"generation": 1})
    hist.add("rollback_release", details={"from": {"version": "1.1.0", "image": "app:1.1.0"},
                                          "to": {"version": "1.0.0", "image": "app:1.0.0"}})
    hist.add("rollback_release", details={"from": "odd", "to": None})
    result = report(str(hist.path))
    assert result["summary"]["rollbacks"] == 2
    changes = table_rows_in(result["markdown"], "Mode changes")
    assert [row[1] for row in changes[1:]] == ["deploy", "rollback_release", "rollback_release"]
    assert changes[2][3] == "stable" and changes[2][5] == "release 1.1.0 -> 1.0.0"
    assert changes[3][5] == "release ? -> ?"


def test_an_empty_history_and_a_missing_one(tmp_path):
    empty = tmp_path / "history.jsonl"
    empty.write_bytes(b"")
    result = report(str(empty))
    assert (result["verified"], result["events"], result["last_hash"]) == (True, 0, GENESIS)
    assert "The history holds no event yet." in result["markdown"]
    assert "**Verified**: the history is empty." in result["markdown"]
    with pytest.raises(ReportError) as info:
        report(str(tmp_path / "absent.jsonl"))
    assert str(info.value) == ("no history at %s: nothing has been recorded for this stack on "
                               "this host yet" % (tmp_path / "absent.jsonl"))
    with pytest.raises(ReportError, match=r"^cannot read the history .*: Is a directory"):
        report(str(tmp_path))


def range_lines(handle, start, end):
    return [line for block in scan._range_blocks(handle, start, end) for line in block]


def test_lines_appended_after_the_start_are_left_for_the_next_report(hist):
    lifecycle(hist)
    lines = hist.path.read_bytes().splitlines(keepends=True)
    with open(hist.path, "rb") as handle:
        size = len(lines[0]) + len(lines[1])
        assert range_lines(handle, 0, size) == lines[:2]
        assert range_lines(handle, size, size) == []
        assert range_lines(handle, size, size + len(lines[2])) == [lines[2]]


@pytest.mark.parametrize("block", [7, 100, 1 << 20])
def test_a_range_is_read_in_blocks_as_lines_of_the_file(tmp_path, monkeypatch, block):
    """Blocks cut lines anywhere; the lines come out whole, as iterating the file gives them."""
    monkeypatch.setattr(scan, "BLOCK_BYTES", block)
    lines = [b"first line\n", b"\n", b"a" * 250 + b"\n", b"x\n", b"last, cut short"]
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"".join(lines))
    size = path.stat().st_size
    with open(path, "rb") as handle:
        assert range_lines(handle, 0, size) == lines
        assert range_lines(handle, len(lines[0]), size) == lines[1:]
        # An end inside a line (one being written when the report started): read up to its
        # newline, or to the end of the file.
        assert range_lines(handle, 0, len(lines[0]) + 1) == lines[:2]
        assert range_lines(handle, 0, len(lines[0]) + 5 + 100) == lines[:3]
        assert range_lines(handle, size - 3, size) == [b"cut short"[-3:]]
        assert range_lines(handle, size - len(lines[-1]) - 2, size - 3) == lines[-2:]


def test_the_report_depends_on_the_history_only(hist):
    lifecycle(hist)
    first = report(str(hist.path))["markdown"]
    assert report(str(hist.path))["markdown"] == first
    assert report(str(hist.path), stack="other", host="web9")["markdown"].startswith(
        "# Audit report: stack other on web9\n")


# --------------------------------------------------------------------------------------------
# Tampering: the same first broken line as verify
# --------------------------------------------------------------------------------------------


def _edit(lines):
    lines[3] = lines[3].replace('"errors":1', '"errors":2')


def _delete(lines):
    del lines[4]


def _insert_copy(lines):
    lines.insert(7, lines[2])


def _swap(lines):
    lines[5], lines[6] = lines[6], lines[5]


def _forge(record, **changes):
    forged = dict(record, **changes)
    forged["hash"] = record_hash(forged)
    return serialize(forged).decode("utf-8")


def _forge_insert(lines):
    lines.insert(4, _forge(json.loads(lines[4]), details={"forged": True}))


def _forge_edit(lines):
    lines[6] = _forge(json.loads(lines[6]), event="deploy")


def _garbage(lines):
    lines.insert(9, "{not json\n")


def _respace(lines):
    """Re-spaced with the hash recomputed over the new bytes: verify says edited."""
    record = json.loads(lines[3])
    body = {key: value for key, value in record.items() if key != "hash"}
    text = json.dumps(body, sort_keys=True)
    record["hash"] = hashlib.sha256(text.encode()).hexdigest()
    lines[3] = json.dumps(record, sort_keys=True) + "\n"


def _torn_end(lines):
    lines[-1] = lines[-1][:40]


TAMPERINGS = [_edit, _delete, _insert_copy, _swap, _forge_insert, _forge_edit, _garbage, _respace,
              _torn_end]


@pytest.fixture(params=[1, 3], ids=["one_part", "three_parts"])
def parts(request, monkeypatch):
    """Read the history in one go, or in three parts by forked workers."""
    if request.param > 1:
        monkeypatch.setattr(scan, "PART_BYTES", 256)
    return request.param


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda tamper: tamper.__name__)
def test_tampering_is_reported_at_the_line_verify_names(hist, parts, tamper):
    lifecycle(hist)
    lines = hist.lines()
    tamper(lines)
    hist.path.write_text("".join(lines), encoding="utf-8")
    expected = verify(str(hist.path))
    assert expected["ok"] is False
    result = report(str(hist.path), workers=parts)
    problem = expected["first_problem"]
    assert result["problem"] == {"line": problem["line"], "seq": problem["seq"],
                                 "event": problem["event"], "kind": problem["problem"],
                                 "reason": problem["message"]}
    assert (result["verified"], result["lines"], result["last_seq"], result["last_hash"]) == \
        (False, expected["lines"], expected["last_seq"], expected["last_hash"])
    assert "**BROKEN**: the hash chain breaks at line %d" % problem["line"] in result["markdown"]


def test_an_anchor_catches_a_cut_tail(hist, parts):
    lifecycle(hist)
    lines = hist.lines()
    anchor = {"seq": 14, "hash": json.loads(lines[-1])["hash"]}
    assert report(str(hist.path), anchor=anchor, workers=parts)["verified"]
    hist.path.write_text("".join(lines[:10]), encoding="utf-8")
    result = report(str(hist.path), anchor=anchor, workers=parts)
    expected = verify(str(hist.path), anchor=anchor)["first_problem"]
    assert result["problem"]["kind"] == "truncated"
    assert result["problem"]["reason"] == expected["message"]
    anchor = {"seq": 5, "hash": "f" * 64}
    assert report(str(hist.path), anchor=anchor, workers=parts)["problem"]["reason"] == \
        verify(str(hist.path), anchor=anchor)["first_problem"]["message"]


EVENTS = ["deploy", "promote", "status_scrape", "status_scrape", "rollback", "lock_wait",
          "teardown", "promote_blocked"]


@st.composite
def tampered_lines(draw):
    count = draw(st.integers(min_value=2, max_value=14))
    events = draw(st.lists(st.sampled_from(EVENTS), min_size=count, max_size=count))
    kind = draw(st.sampled_from(["edit", "delete", "swap", "copy", "forge", "garbage", "none"]))
    index = draw(st.integers(0, count - 1))
    other = draw(st.integers(0, count - 1))
    return events, kind, index, other


@settings(max_examples=60, deadline=None)
@given(tampered_lines(), st.sampled_from([1, 2, 4]))
def test_any_tampering_gives_the_verdict_of_verify(tmp_path_factory, case, workers):
    events, kind, index, other = case
    lines, prev = [], GENESIS
    for seq, event in enumerate(events, 1):
        details = {"n": seq, "error_rate_percent": 0.5, "chaos": "none"}
        record = build_record(fields(event, details=details), seq, prev,
                              now=T0 + datetime.timedelta(minutes=seq))
        lines.append(serialize(record).decode())
        prev = record["hash"]
    if kind == "edit":
        lines[index] = lines[index].replace('"n":', '"n":1')
    elif kind == "delete":
        del lines[index]
    elif kind == "swap":
        lines[index], lines[other] = lines[other], lines[index]
    elif kind == "copy":
        lines.insert(index, lines[other])
    elif kind == "forge":
        lines.insert(index, _forge(json.loads(lines[other]), details={"forged": index}))
    elif kind == "garbage":
        lines.insert(index, "garbage\n")
    path = tmp_path_factory.mktemp("history") / "history.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    original, scan.PART_BYTES = scan.PART_BYTES, 200
    try:
        result = report(str(path), workers=workers)
    finally:
        scan.PART_BYTES = original
    expected = verify(str(path))
    problem = expected["first_problem"]
    assert result["verified"] is expected["ok"]
    assert result["problem"] == (None if problem is None else {
        "line": problem["line"], "seq": problem["seq"], "event": problem["event"],
        "kind": problem["problem"], "reason": problem["message"]})
    assert (result["lines"], result["last_seq"], result["last_hash"]) == \
        (expected["lines"], expected["last_seq"], expected["last_hash"])


@settings(max_examples=100, deadline=None)
@given(tampered_lines(), st.lists(st.integers(1, 4), min_size=1, max_size=20), st.booleans())
def test_runs_of_proven_lines_give_the_verdict_of_verify(tmp_path_factory, case, cuts, anchored):
    """ChainVerifier.add_proven_run over any cutting of the sound lines into runs."""
    events, kind, index, other = case
    lines, hashes, prev = [], [], GENESIS
    for seq, event in enumerate(events, 1):
        record = build_record(fields(event, details={"n": seq}), seq, prev, now=T0)
        lines.append(serialize(record))
        prev = record["hash"]
        hashes.append(prev)
    if kind == "delete":
        del lines[index]
    elif kind == "swap":
        lines[index], lines[other] = lines[other], lines[index]
    elif kind == "copy":
        lines.insert(index, lines[other])
    elif kind == "forge":
        lines.insert(index, _forge(json.loads(lines[other]), details={"f": 1}).encode())
    elif kind in ("edit", "garbage"):
        lines.insert(index, b"garbage\n")
    anchor = {"seq": len(events) // 2 + 1, "hash": hashes[len(events) // 2]} if anchored else None
    path = tmp_path_factory.mktemp("runs") / "history.jsonl"
    path.write_bytes(b"".join(lines))
    chain = ChainVerifier(anchor)
    run, cuts = [], list(cuts)

    def push():
        if run:
            chain.add_proven_run(len(run), run[0], run[-1])
            run.clear()
    for line in lines:
        record = slow_verdict(line)
        if record is None:
            push()
            chain.add(line)
            continue
        fields_ = (record["seq"], record["event"], record["prev"], record["hash"])
        if run and (fields_[0] != run[-1][0] + 1 or fields_[2] != run[-1][3]
                    or len(run) >= cuts[0]):
            push()
            cuts.append(cuts.pop(0))
        if fields_[0] == chain.anchor_seq:
            push()
            chain.add_proven_run(1, fields_, fields_)
        else:
            run.append(fields_)
    push()
    assert chain.result() == verify(str(path), anchor=anchor)


# --------------------------------------------------------------------------------------------
# Reading in parts gives the report of reading in one go
# --------------------------------------------------------------------------------------------


def test_parts_give_the_same_report_as_one_pass(hist, monkeypatch):
    lifecycle(hist)
    for number in range(40):  # canary, chaos and policy states that cross part boundaries
        if number % 9 == 0:
            hist.add("promote", "canary", {"target_mode": "canary", "weight": number})
        hist.scrape(number / 10, 50.0 + number,
                    chaos=["none", "error", "slow", "error"][number % 4],
                    canary=number % 5 != 0, reasons=["r%d" % (number % 3)], mode="canary",
                    minutes=number % 4 * 30)
        if number % 11 == 0:
            hist.add("rollback")
        if number % 13 == 0:
            hist.add("deploy", "canary" if number % 2 else "stable")
    whole = report(str(hist.path), workers=1)
    size = hist.path.stat().st_size
    for workers in (2, 3, 4):
        for part in (size // 5, size // 4 + 77, size // 3 + 555):
            monkeypatch.setattr(scan, "PART_BYTES", part)
            assert report(str(hist.path), workers=workers) == whole, (workers, part)


def test_a_worker_that_fails_at_once_has_its_part_read_here(hist, monkeypatch):
    lifecycle(hist)
    whole = report(str(hist.path), workers=1)

    def failing(*_args):
        raise RuntimeError("no memory left")
    monkeypatch.setattr(scan, "PART_BYTES", 300)
    monkeypatch.setattr(scan, "_work", failing)  # in the forked workers too
    assert report(str(hist.path), workers=3) == whole


def test_a_worker_that_fails_midway_fails_the_report(hist, monkeypatch):
    lifecycle(hist)

    def failing_midway(_path, _start, _end, _anchor_seq, _limit, fd):
        scan._send(fd, ("items", [(0, b"{}\n", None)]))
        raise RuntimeError("no memory left")
    monkeypatch.setattr(scan, "PART_BYTES", 300)
    monkeypatch.setattr(scan, "_work", failing_midway)
    with pytest.raises(ReportError, match=r"^the process reading bytes \d+ to \d+ of the history "
                                          r"failed midway \(RuntimeError: no memory left\)"):
        report(str(hist.path), workers=2)


# --------------------------------------------------------------------------------------------
# The fast path proves exactly what the slow path accepts
# --------------------------------------------------------------------------------------------


def rehashed(record, text):
    """A forger's line: the given bytes of the body (without hash), with a hash computed over
    exactly those bytes put where the writer puts it, before the top-level host."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    at = text.rfind('"host"')
    return (text[:at] + '"hash":"%s",' % digest + text[at:] + "\n").encode("utf-8")


def body_of(record):
    return {key: value for key, value in record.items() if key != "hash"}


def test_writer_lines_are_proven_and_give_the_record(hist):
    lifecycle(hist)
    prover = LineProver()
    for line in hist.path.read_bytes().splitlines(keepends=True):
        record = slow_verdict(line)
        assert record is not None
        assert prove_line(line) == record
        assert prove_line(line.rstrip(b"\n")) == record
        if record["event"] == "status_scrape":
            claimed, tokens = prover.scrape(line)
            assert claimed == record["hash"]
            assert json.loads(tokens[2]) == record["details"]["error_rate_percent"]
            assert tokens[9] == str(record["seq"]).encode()


def test_lines_the_fast_path_cannot_prove_go_the_slow_way(hist):
    record = hist.add("status_scrape", details={"chaos": "caf\u00e9", "error_rate_percent": 1.5})
    line = serialize(record)
    assert b"\xc3\xa9" in line and slow_verdict(line) == record
    assert prove_line(line) is None and LineProver().scrape(line) is None
    respaced = (json.dumps(record, sort_keys=True) + "\n").encode()  # spaces, original hash
    assert slow_verdict(respaced) == record and prove_line(respaced) is None
    escaped = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    assert b"\\u00e9" in escaped and prove_line(escaped) == record  # ASCII, canonical: proven


def test_escaped_top_level_strings_are_proven_and_decoded(hist):
    """Strings after details with escapes (ASCII, canonical) are decoded as json reads them."""
    record = hist.add("deploy", mode="caf\u00e9", version='1"0\\x', stack="tab\there")
    escaped = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    assert b'\\u00e9' in escaped and b'1\\"0\\\\x' in escaped and b"tab\\there" in escaped
    assert slow_verdict(escaped) == record and prove_line(escaped) == record
    plain = hist.add("deploy", mode=None, version=None, stack=None)
    assert prove_line(serialize(plain)) == plain == slow_verdict(serialize(plain))


def test_the_prover_remembers_short_details_and_what_it_refused(hist):
    prover = LineProver()
    details = {"policy": "infrastructure", "reasons": ["disk full"], "checked": {"cpu": 0.5}}
    first, second = (serialize(hist.add("deploy_blocked", details=details)) for _attempt in range(2))
    records = [prover.record(first), prover.record(second), prover.record(first)]
    assert records == [slow_verdict(first), slow_verdict(second), slow_verdict(first)]
    assert records[0]["details"] == records[1]["details"] == details
    assert records[0]["details"] is not records[1]["details"]  # each record has its own dict
    assert len(prover._details) == 1  # pylint: disable=protected-access
    # Details that are not canonical (here: unsorted) are refused, and refused again when seen
    # again; the slow path still reads the line.
    record = json.loads(first)
    unsorted = canonical_text(body_of(record)).replace(
        '"checked":{"cpu":0.5},"policy":"infrastructure","reasons":["disk full"]',
        '"policy":"infrastructure","checked":{"cpu":0.5},"reasons":["disk full"]')
    forged = rehashed(record, unsorted)
    assert slow_verdict(forged) is None
    assert prover.record(forged) is None and prover.record(forged) is None
    assert len(prover._details) == 2  # pylint: disable=protected-access
    # Long details are proven every time, not remembered.
    long_details = {"notes": ["n%d" % number for number in range(300)]}
    line = serialize(hist.add("deploy", details=long_details))
    assert prover.record(line) == prover.record(line) == slow_verdict(line)
    assert len(prover._details) == 2  # pylint: disable=protected-access


def canonical_text(body):
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def rewriting(old, new):
    return lambda body: canonical_text(body).replace(old, new, 1)


NON_CANONICAL = [
    ("spaces", lambda body: json.dumps(body, sort_keys=True)),
    ("unsorted keys", lambda body: json.dumps(dict(reversed(list(body.items()))),
                                              separators=(",", ":"))),
    ("trailing zero", rewriting('"error_rate_percent":1.5', '"error_rate_percent":1.50')),
    ("exponent", rewriting('"error_rate_percent":1.5', '"error_rate_percent":15e-1')),
    ("escaped letter", rewriting('"stack":"shop"', '"stack":"\\u0073hop"')),
    ("escaped slash", rewriting('"version":"1.0.0"', '"version":"1\\/0"')),
    ("duplicate key", rewriting('{"chaos":', '{"chaos":"x","chaos":')),
    ("minus zero", rewriting('"errors":0', '"errors":-0')),
    ("spaced actor", rewriting('{"playbook":"Deploy",', '{"playbook": "Deploy",')),
    ("unsorted actor", rewriting('{"playbook":"Deploy","user":"deploy"}',
                                 '{"user":"deploy","playbook":"Deploy"}')),
]
# A status_scrape as the role writes it, all plain ASCII: the scrape layout of the fast path.
SCRAPE_DETAILS = {"chaos": "none", "error_rate_percent": 1.5, "errors": 0, "mode": "stable",
                  "p99_latency_ms": 80.0, "policy_canary_pass": True, "policy_infra_pass": True,
                  "policy_reasons": [], "req_s": 2.5, "requests": 10, "weight": 0}


@pytest.mark.parametrize("name, rewrite", NON_CANONICAL,
                         ids=[name for name, _rewrite in NON_CANONICAL])
def test_a_forged_scrape_hashed_over_other_bytes_is_not_proven(name, rewrite):
    record = build_record(fields("status_scrape", details=SCRAPE_DETAILS), 1, GENESIS, now=T0)
    assert LineProver().scrape(serialize(record)) is not None  # the layout of the fast path
    text = rewrite(body_of(record))
    assert text != canonical_text(body_of(record))
    line = rehashed(record, text)
    assert slow_verdict(line) is None, name  # verify: the hash does not match the content
    assert LineProver().scrape(line) is None
    assert prove_line(line) is None


@pytest.mark.parametrize("name, rewrite", NON_CANONICAL + [
    ("upper-case escape", rewriting('"note":"\\u00e9"', '"note":"\\u00E9"'))],
    ids=[name for name, _rewrite in NON_CANONICAL] + ["upper-case escape"])
def test_a_forged_record_hashed_over_other_bytes_is_not_proven(name, rewrite):
    details = dict(SCRAPE_DETAILS, note="\u00e9")
    record = build_record(fields("deploy", details=details), 1, GENESIS, now=T0)
    assert prove_line(rehashed(record, canonical_text(body_of(record)))) == record
    text = rewrite(body_of(record))
    assert text != canonical_text(body_of(record))
    line = rehashed(record, text)
    assert slow_verdict(line) is None, name
    assert prove_line(line) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=4), children, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=4), st.integers(0, 5),
       st.sampled_from(["status_scrape", "deploy", "x_y"]))
def test_the_fast_path_never_proves_what_the_slow_path_refuses(details, mutation, event):
    record = build_record(fields(event, details=details), 3, "a" * 64, now=T0)
    line = serialize(record)
    canonical = json.dumps(body_of(record), sort_keys=True, separators=(",", ":"))
    variants = [line,
                rehashed(record, json.dumps(body_of(record), sort_keys=True)),
                rehashed(record, json.dumps(body_of(record), sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False)),
                rehashed(record, canonical.replace(".0,", ".00,").replace("e+", "E+")),
                rehashed(record, canonical.replace(":", ": ", mutation)),
                rehashed(record, canonical),
                (canonical[:-1] + ',"hash":"%s"}\n' % record["hash"]).encode()]
    for variant in variants:
        slow = slow_verdict(variant)
        fast = prove_line(variant)
        if fast is not None:
            assert fast == slow, variant
        if LineProver().scrape(variant) is not None:
            assert slow is not None, variant
    # The canonical serialisation (the writer's bytes whenever they are printable ASCII) is
    # always proven; any other bytes only when the slow path agrees.
    assert rehashed(record, canonical).decode() == json.dumps(record, sort_keys=True,
                                                              separators=(",", ":")) + "\n"
    assert prove_line(rehashed(record, canonical)) == record


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?\Z"))
def test_numbers_the_pattern_accepts_are_what_json_dumps_writes(value):
    token = repr(value) if isinstance(value, float) else value
    pattern = re.compile(proof._OPT_NUM + rb"[,}\]]")
    if pattern.fullmatch(token.encode() + b","):
        assert json.dumps(json.loads(token)) == token


# --------------------------------------------------------------------------------------------
# Which image ran when
# --------------------------------------------------------------------------------------------

ID_A, ID_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def _slots(**slots):
    return {slot: dict(zip(("mode", "image", "image_id", "version"), spec)) for slot, spec in slots.items()}


def test_the_images_table_has_a_row_per_slot_each_time_what_runs_changes(hist, parts):
    hist.add("deploy", details={"changed": True, "slots": _slots(blue=("stable", "shop:latest", ID_A, "1.0.0"))})
    hist.add("deploy", details={"changed": False, "slots": _slots(blue=("stable", "shop:latest", ID_A, "1.0.0"))})
    hist.scrape()
    hist.add("promote", "canary", {"slots": _slots(blue=("stable", "shop:latest", ID_A, "1.0.0"),
                                                   green=("canary", "shop:latest", ID_B, "1.0.0"))})
    hist.add("lock_wait", details={"waited_seconds": 2})
    hist.add("promote", "stable", {"slots": _slots(green=("stable", "shop:latest", ID_B, "1.0.0"))})
    # An event written before image IDs were recorded, and a teardown.
    hist.add("deploy", details={"slots": {"blue": {"mode": "stable", "image": "shop:old", "version": "0.9"}}})
    hist.add("teardown", details={"clean": True})
    rows = report(str(hist.path), workers=parts)["images"]["rows"]
    assert [(row["seq"], row["event"], row["slot"], row["mode"], row["image"], row["image_id"], row["version"])
            for row in rows] == [
        (1, "deploy", "blue", "stable", "shop:latest", ID_A, "1.0.0"),
        (4, "promote", "blue", "stable", "shop:latest", ID_A, "1.0.0"),
        (4, "promote", "green", "canary", "shop:latest", ID_B, "1.0.0"),
        (6, "promote", "green", "stable", "shop:latest", ID_B, "1.0.0"),
        (7, "deploy", "blue", "stable", "shop:old", "(not recorded)", "0.9"),
        (8, "teardown", "-", "-", "(nothing runs)", "-", "-"),
    ]
    assert rows[0]["timestamp"] == "2026-05-05T20:01:00.000Z"
    assert report(str(hist.path), workers=parts)["images"]["kept"] == 6


def test_hostile_slots_in_the_history_do_not_break_the_images_table(hist):
    hist.add("deploy", details={"slots": {"blue": "not a spec", "x|y": {"image": ["a"], "image_id": 5}}})
    hist.add("deploy", details={"slots": "nonsense"})
    rows = report(str(hist.path))["images"]["rows"]
    assert [(row["slot"], row["image"], row["image_id"]) for row in rows] == [
        ("blue", "", "(not recorded)"), ("x|y", '["a"]', "5")]


# --------------------------------------------------------------------------------------------
# Automated rollouts' looks (canary_judged, promote.yml -e mode=auto)
# --------------------------------------------------------------------------------------------


def _look(verdict, step, weight, canary, baseline, errors_e, latency_e, reasons):
    """A canary_judged event's details, in the shape _auto.decide records them."""
    def side(requests, rate, p99):
        return {"requests": requests, "errors": 0, "error_rate_percent": rate, "p99_latency_ms": p99,
                "window_seconds": 5.0}
    return {"verdict": verdict, "reasons": reasons, "canary_version": "1.1.0", "step": step, "steps": 3, "weight": weight,
            "elapsed_seconds": 10.0, "looks": 2, "windows": {"canary": side(*canary), "baseline": side(*baseline)},
            "analysis": {"verdict": "pass", "rejected": False, "latency_bound_seconds": 0.1, "alpha": 0.01,
                         "errors": {"e_value": errors_e, "threshold": 200.0},
                         "latency": {"e_value": latency_e, "threshold": 200.0}},
            "policy": {"allow": True, "hold": False, "reasons": []}, "restarted": []}


def test_the_looks_of_automated_rollouts_have_their_section(hist):
    hist.add("deploy", details={"stable_slot": "blue", "generation": 1})
    hist.add("canary_judged", "canary", _look("hold", 1, 5, (98, 0.0, 41.0), (1900, 0.1, 40.0), 0.5, 1.2,
                                              ["comparison with the baseline: errors: 98 of 1000 needed"]),
             version="1.1.0")
    hist.add("canary_judged", "canary", _look("advance", 1, 5, (1010, 0.1, 42.5), (19000, 0.1, 40.0), 0.31, 0.9,
                                              ["canary policy: allowed"]), version="1.1.0")
    hist.add("canary_judged", "canary", _look("rollback", 2, 25, (500, 20.4, 45.0), (1500, 0.0, 40.0), 1.5e9, 2.0,
                                              ["comparison with the baseline: errors | worse"]), version="1.1.0")
    markdown = report(str(hist.path))["markdown"]
    text = section(markdown, "Automated rollouts' judgements")
    assert "3 looks judged a canary: advance 1, hold 1, rollback 1." in text
    rows = table_rows_in(markdown, "Automated rollouts' judgements")
    assert rows[0] == ["When (UTC)", "Canary version", "Step", "Weight", "Canary", "Baseline", "Errors evidence",
                       "Latency evidence", "Verdict", "Reasons"]
    assert rows[1][1:9] == ["1.1.0", "1/3", "5 %", "98 req, 0.00 %, P99 41.0 ms", "1900 req, 0.10 %, P99 40.0 ms",
                            "0.5 / 200", "1.2 / 200", "hold"]
    assert rows[3][1:9] == ["1.1.0", "2/3", "25 %", "500 req, 20.40 %, P99 45.0 ms", "1500 req, 0.00 %, P99 40.0 ms",
                            "1.5e+09 / 200", "2 / 200", "rollback"]
    # A reason's '|' cannot break the table.
    assert rows[3][9] == "comparison with the baseline: errors | worse"


def test_odd_look_details_and_no_looks_do_not_break_the_section(hist):
    hist.add("deploy", details={"stable_slot": "blue", "generation": 1})
    markdown = report(str(hist.path))["markdown"]
    assert "No automated rollout (promote.yml -e mode=auto) judged a canary." in \
        section(markdown, "Automated rollouts' judgements")
    hist.add("canary_judged", "canary", {"verdict": ["x"], "windows": "nope", "analysis": {"errors": 3},
                                         "step": "two", "reasons": "not a list"})
    rows = table_rows_in(report(str(hist.path))["markdown"], "Automated rollouts' judgements")
    assert rows[1][2:10] == ["-", "-", "- req, -, P99 -", "- req, -, P99 -", "-", "-", "?", "not a list"]
