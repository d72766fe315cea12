"""The history's hash chain: what append writes, and verify naming the first broken line."""

import datetime
import json
import os
import re
import stat
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _history as history
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import (
    GENESIS,
    HistoryError,
    append_event,
    build_record,
    iter_events,
    preview_event,
    record_hash,
    record_mac,
    serialize,
    verify,
    verify_macs,
)

T0 = datetime.datetime(2026, 5, 5, 20, 34, 51, 123456, tzinfo=datetime.timezone.utc)
EVENTS = ["deploy", "promote", "status_scrape", "deploy_blocked", "promote", "teardown",
          "rollback", "lock_wait"]


def fields(event="deploy", **extra):
    base = {"event": event, "stack": "shop", "host": "web1", "actor": {"user": "deploy"},
            "mode": "stable", "version": "1.0.0", "details": {}}
    base.update(extra)
    return base


def write_history(path, events=None):
    """Append one record per event (EVENTS by default), one second apart; return the lines."""
    for index, event in enumerate(EVENTS if events is None else events):
        append_event(str(path), fields(event, details={"n": index}),
                     now=T0 + datetime.timedelta(seconds=index))
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def forge(record, **changes):
    """A record changed and given a correct hash, as someone with the format would forge it."""
    forged = dict(record, **changes)
    forged["hash"] = record_hash(forged)
    return serialize(forged).decode("utf-8")


def rewrite(path, lines):
    path.write_text("".join(lines), encoding="utf-8")
    return verify(str(path))


@pytest.fixture
def hist(tmp_path):
    return tmp_path / "history.jsonl"


# --------------------------------------------------------------------------------------------
# Appending
# --------------------------------------------------------------------------------------------


def test_append_writes_one_canonical_line_per_event(hist):
    record = append_event(str(hist), fields("deploy", details={"image": "app:1", "note": "caf\u00e9"}),
                          now=T0)
    assert record == {
        "seq": 1, "timestamp": "2026-05-05T20:34:51.123Z", "event": "deploy", "stack": "shop",
        "host": "web1", "actor": {"user": "deploy"}, "mode": "stable", "version": "1.0.0",
        "details": {"image": "app:1", "note": "caf\u00e9"}, "prev": GENESIS,
        "hash": record["hash"],
    }
    line = hist.read_bytes()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.startswith(b'{"actor":{"user":"deploy"},"details":{"image":"app:1","note":"caf\xc3\xa9"}')
    assert json.loads(line) == record
    body = {key: value for key, value in record.items() if key != "hash"}
    assert record["hash"] == __import__("hashlib").sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()

    second = append_event(str(hist), fields("promote"), now=T0)
    assert (second["seq"], second["prev"]) == (2, record["hash"])


def test_files_get_their_modes_whatever_the_umask(hist):
    old = os.umask(0o077)
    try:
        append_event(str(hist), fields())
    finally:
        os.umask(old)
    assert stat.S_IMODE(hist.stat().st_mode) == 0o640
    assert stat.S_IMODE((hist.parent / "history.jsonl.lock").stat().st_mode) == 0o600


def test_timestamps_are_rfc3339_utc_with_milliseconds(hist):
    record = append_event(str(hist), fields())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    local = datetime.datetime(2026, 5, 5, 22, 34, 51, 5000,
                              tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert history.utc_timestamp(local) == "2026-05-05T20:34:51.005Z"


def test_actor_keeps_awx_fields_and_drops_nulls(hist):
    record = append_event(str(hist), fields(actor={"user": "awx", "awx_job_id": 42,
                                                   "awx_job_template": "deploy", "x": None}))
    assert record["actor"] == {"user": "awx", "awx_job_id": 42, "awx_job_template": "deploy"}


def test_optional_fields_may_be_null(hist):
    record = append_event(str(hist), {"event": "teardown", "host": "web1", "actor": {"user": "u"}})
    assert (record["stack"], record["mode"], record["version"], record["details"]) == (None, None, None, {})
    assert verify(str(hist))["ok"]


def test_values_are_normalised_before_hashing(hist):
    """A tuple or an int key would hash differently once read back; they are stored as JSON."""
    append_event(str(hist), fields(details={"list": (1, 2), 3: "int key", "f": 0.1}))
    assert verify(str(hist))["ok"]
    assert next(iter_events(str(hist)))["details"] == {"list": [1, 2], "3": "int key", "f": 0.1}


@pytest.mark.parametrize("changes, message", [
    ({"event": "Deploy"}, "event 'Deploy' is not an event name; use lower-case letters, digits and "
                          "_, starting with a letter, at most 64 characters (e.g. deploy)."),
    ({"event": "a" * 65}, None),
    ({"event": None}, "event None is not an event name"),
    ({"host": ""}, "host must be a non-empty string, not ''."),
    ({"actor": "root"}, "actor must be a dict with at least user, not 'root'."),
    ({"actor": {"awx_job_id": 1}}, "actor.user must be a non-empty string, not None."),
    ({"details": ["x"]}, "details must be a dict, not list."),
    ({"mode": 3}, "mode must be a string or null, not 3."),
    ({"details": {"bad": {1, 2}}}, "the record cannot be stored as JSON (Object of type set is not "
                                   "JSON serializable); keep details to strings, numbers, booleans, "
                                   "null, lists and dicts."),
    ({"details": {"x": float("nan")}}, "the record cannot be stored as JSON"),
    ({"seq": 4}, "unknown record field(s) seq; the fields are event, stack, host, actor, mode, "
                 "version, details."),
])
def test_bad_fields_are_refused_and_nothing_is_written(hist, changes, message):
    with pytest.raises(HistoryError) as info:
        append_event(str(hist), fields(**changes))
    if message:
        assert str(info.value).startswith(message)
    assert hist.read_bytes() == b""


def test_append_reads_only_the_tail(hist, monkeypatch):
    prev = GENESIS
    with open(hist, "wb") as handle:  # built directly: 3,000 fsyncs would only slow the test
        for seq in range(1, 3001):
            record = build_record(fields("status_scrape", details={"pad": "x" * 150}), seq, prev)
            handle.write(serialize(record))
            prev = record["hash"]
    size = hist.stat().st_size
    read = []
    real_pread = os.pread

    def counting_pread(fd, length, offset):
        read.append(length)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(history.os, "pread", counting_pread)
    record = append_event(str(hist), fields())
    assert record["seq"] == 3001
    assert size > 500_000 and sum(read) <= 64 * 1024


def test_a_torn_last_line_does_not_break_later_appends(hist):
    lines = write_history(hist, EVENTS[:3])
    with open(hist, "ab") as handle:
        handle.write(b'{"actor":{"user":"deploy"},"det')  # a crash in the middle of a write
    assert verify(str(hist))["first_problem"] == {
        "line": 4, "seq": None, "event": None, "problem": "malformed",
        "message": "line 4: it is not valid JSON (Unterminated string starting at, column 28) and "
                   "it has no newline at the end of the file: a write was interrupted"}

    record = append_event(str(hist), fields("promote"))
    assert (record["seq"], record["prev"]) == (4, json.loads(lines[2])["hash"])
    assert hist.read_text().splitlines()[3:] == ['{"actor":{"user":"deploy"},"det',
                                                 serialize(record).decode().rstrip("\n")]
    result = verify(str(hist))
    assert result["lines"] == 5
    assert result["first_problem"]["message"] == (
        "line 4: it is not valid JSON (Unterminated string starting at, column 28): the line is "
        "malformed")


def test_append_steps_over_garbage_at_the_end(hist):
    lines = write_history(hist, EVENTS[:2])
    with open(hist, "a") as handle:
        handle.write("garbage\n\n")
    record = append_event(str(hist), fields())
    assert (record["seq"], record["prev"]) == (3, json.loads(lines[1])["hash"])


def test_a_file_without_records_is_not_appended_to(hist):
    hist.write_text("this is not a history\n")
    with pytest.raises(HistoryError, match=r"history.jsonl holds no history record; it is not a "
                                           r"SwiftDeploy history. Move it aside"):
        append_event(str(hist), fields())
    assert hist.read_text() == "this is not a history\n"


def test_preview_returns_the_next_record_and_writes_nothing(tmp_path, hist):
    assert preview_event(str(hist), fields(), now=T0)["prev"] == GENESIS
    assert list(tmp_path.iterdir()) == []
    write_history(hist, EVENTS[:2])
    before = hist.read_bytes()
    preview = preview_event(str(hist), fields("teardown"), now=T0)
    assert hist.read_bytes() == before
    assert preview == append_event(str(hist), fields("teardown"), now=T0)


def test_iter_events_streams_records_and_skips_broken_lines(hist):
    assert list(iter_events(str(hist))) == []
    lines = write_history(hist, EVENTS[:3])
    hist.write_text(lines[0] + "junk\n" + lines[1] + lines[2], encoding="utf-8")
    assert [record["seq"] for record in iter_events(str(hist))] == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# Verifying: every kind of damage, exact messages
# --------------------------------------------------------------------------------------------


def test_clean_chain(hist):
    lines = write_history(hist)
    assert verify(str(hist)) == {"ok": True, "lines": 8, "first_problem": None, "last_seq": 8,
                                 "last_hash": json.loads(lines[-1])["hash"]}


def test_missing_and_empty_files_are_empty_histories(hist):
    empty = {"ok": True, "lines": 0, "first_problem": None, "last_seq": 0, "last_hash": GENESIS}
    assert verify(str(hist)) == empty
    hist.write_text("")
    assert verify(str(hist)) == empty


def _edit(lines):
    lines[2] = lines[2].replace('"details":{"n":2}', '"details":{"n":20}')
    return lines


def _delete(lines):
    del lines[2]
    return lines


def _delete_two(lines):
    del lines[2:4]
    return lines


def _delete_first(lines):
    del lines[0]
    return lines


def _swap(lines):
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def _move_down(lines):
    lines.insert(6, lines.pop(1))
    return lines


def _copy_back(lines):
    lines.insert(5, lines[1])
    return lines


def _copy_adjacent(lines):
    lines.insert(3, lines[2])
    return lines


def _copy_forward(lines):
    lines.insert(1, lines[5])
    return lines


def _forge_insert(lines):
    third = json.loads(lines[2])
    lines.insert(2, forge(third, details={"n": "forged"}))
    return lines


def _forge_insert_before_last(lines):
    last = json.loads(lines[-1])
    lines.insert(len(lines) - 1, forge(last, details={"n": "forged"}))
    return lines


def _forge_insert_wrong_seq(lines):
    second = json.loads(lines[1])
    lines.insert(2, forge(second, seq=9, prev=second["hash"]))
    return lines


def _forge_edit(lines):
    lines[3] = forge(json.loads(lines[3]), event="rollback")
    return lines


def _forge_edit_first(lines):
    lines[0] = forge(json.loads(lines[0]), prev="1" * 64)
    return lines


def _garbage(lines):
    lines.insert(2, "{not json\n")
    return lines


def _blank(lines):
    lines.insert(2, "\n")
    return lines


def _array(lines):
    lines[2] = "[1, 2]\n"
    return lines


def _missing_fields(lines):
    record = json.loads(lines[2])
    del record["prev"], record["actor"]
    lines[2] = json.dumps(record) + "\n"
    return lines


def _duplicate_key(lines):
    lines[2] = lines[2].replace('{"actor"', '{"event":"deploy","actor"', 1)
    return lines


def _nan(lines):
    lines[2] = lines[2].replace('"details":{"n":2}', '"details":{"n":NaN}')
    return lines


def _bad_seq(lines):
    lines[2] = forge(json.loads(lines[2]), seq="3")
    return lines


@pytest.mark.parametrize("tamper, line, seq, event, problem, message", [
    (_edit, 3, 3, "status_scrape", "edited",
     "line 3 (seq 3, event status_scrape): its hash does not match its content: the line was edited"),
    (_delete, 3, 4, "deploy_blocked", "removed",
     "line 3 (seq 4, event deploy_blocked): seq 3 is missing before it: 1 line was removed"),
    (_delete_two, 3, 5, "promote", "removed",
     "line 3 (seq 5, event promote): seq 3 to 4 are missing before it: 2 lines were removed"),
    (_delete_first, 1, 2, "promote", "removed",
     "line 1 (seq 2, event promote): seq 1 is missing before it: 1 line was removed"),
    (_swap, 3, 4, "deploy_blocked", "reordered",
     "line 3 (seq 4, event deploy_blocked): expected seq 3 here, which appears later at line 4: "
     "lines were reordered"),
    (_move_down, 2, 3, "status_scrape", "reordered",
     "line 2 (seq 3, event status_scrape): expected seq 2 here, which appears later at line 7: "
     "lines were reordered"),
    (_copy_back, 6, 2, "promote", "inserted",
     "line 6 (seq 2, event promote): seq 2 already appeared before it, expected seq 6: the line "
     "was inserted"),
    (_copy_adjacent, 4, 3, "status_scrape", "inserted",
     "line 4 (seq 3, event status_scrape): it repeats line 3 exactly: the line was inserted"),
    (_copy_forward, 2, 6, "teardown", "inserted",
     "line 2 (seq 6, event teardown): expected seq 2; seq 6 appears again at line 7: the line was "
     "inserted"),
    (_forge_insert, 3, 3, "status_scrape", "inserted",
     "line 3 (seq 3, event status_scrape): line 4 carries the same seq and prev, and the history "
     "continues from line 4: the line was inserted"),
    (_forge_insert_before_last, 9, 8, "lock_wait", "inserted",
     "line 9 (seq 8, event lock_wait): line 8 carries the same seq and prev and nothing follows to "
     "tell which is genuine: one of the two lines was inserted"),
    (_forge_insert_wrong_seq, 3, 9, "promote", "inserted",
     "line 3 (seq 9, event promote): it chains to line 2 but carries seq 9 instead of 3: the line "
     "was inserted"),
    (_forge_edit, 4, 4, "rollback", "edited",
     "line 4 (seq 4, event rollback): line 5 (seq 5) was chained to different content: the line "
     "was edited and its hash recomputed"),
    (_forge_edit_first, 1, 1, "deploy", "edited",
     "line 1 (seq 1, event deploy): its prev is not 64 zeros although it is the first record: the "
     "line was edited and its hash recomputed"),
    (_garbage, 3, None, None, "malformed",
     "line 3: it is not valid JSON (Expecting property name enclosed in double quotes, column 2): "
     "the line is malformed"),
    (_blank, 3, None, None, "malformed", "line 3: it is empty: the line is malformed"),
    (_array, 3, None, None, "malformed", "line 3: it is a JSON list, not a record object: the line "
                                         "is malformed"),
    (_missing_fields, 3, 3, "status_scrape", "malformed",
     "line 3 (seq 3, event status_scrape): it lacks the fields actor, prev: the line is malformed"),
    (_duplicate_key, 3, None, None, "malformed",
     "line 3: it repeats the key 'event': the line is malformed"),
    (_nan, 3, None, None, "malformed",
     "line 3: it contains NaN, which JSON does not allow: the line is malformed"),
    (_bad_seq, 3, None, "status_scrape", "malformed",
     "line 3 (event status_scrape): its seq '3' is not a positive integer: the line is malformed"),
])
def test_verify_names_the_first_broken_line(hist, tamper, line, seq, event, problem, message):
    lines = tamper(write_history(hist))
    result = rewrite(hist, lines)
    assert result["ok"] is False
    assert result["lines"] == len(lines)
    assert result["first_problem"] == {"line": line, "seq": seq, "event": event,
                                       "problem": problem, "message": message}


def test_bytes_that_are_not_utf8_are_malformed(hist):
    lines = write_history(hist, EVENTS[:3])
    data = "".join(lines).encode().replace(b'"details":{"n":1}', b'"details":{"n":"\xff"}')
    hist.write_bytes(data)
    assert verify(str(hist))["first_problem"]["message"] == (
        "line 2: it is not UTF-8 text: the line is malformed")


def test_cutting_the_tail_needs_an_anchor(hist):
    lines = write_history(hist)
    anchor = {"seq": 8, "hash": json.loads(lines[-1])["hash"]}
    assert verify(str(hist), anchor=anchor)["ok"]
    result = rewrite(hist, lines[:6])
    assert result["ok"], "without an anchor a shorter history is still a valid history"
    result = verify(str(hist), anchor=anchor)
    assert result["first_problem"] == {
        "line": 7, "seq": 8, "event": None, "problem": "truncated",
        "message": "line 7: the anchor seq 8 (hash %s...) is missing; the history ends at seq 6: "
                   "lines were removed from the end" % anchor["hash"][:12]}
    hist.unlink()
    assert verify(str(hist), anchor=anchor)["first_problem"]["message"] == (
        "line 1: the anchor seq 8 (hash %s...) is missing; the history is empty: lines were "
        "removed from the end" % anchor["hash"][:12])


def test_an_anchor_catches_a_rewritten_tail(hist):
    lines = write_history(hist)
    anchor = {"seq": 7, "hash": json.loads(lines[6])["hash"]}
    lines[6] = forge(json.loads(lines[6]), details={"n": "rewritten"})
    lines[7] = forge(json.loads(lines[7]), prev=json.loads(lines[6])["hash"])
    assert rewrite(hist, lines)["ok"], "a consistently re-chained tail looks intact"
    assert verify(str(hist), anchor=anchor)["first_problem"]["message"] == (
        "line 7 (seq 7, event rollback): the anchor says seq 7 has hash %s..., this line has "
        "%s...: the history was rewritten from here or before"
        % (anchor["hash"][:12], json.loads(lines[6])["hash"][:12]))


@pytest.mark.parametrize("anchor", [{"seq": 0, "hash": GENESIS}, {"seq": 1}, {"seq": True, "hash": GENESIS},
                                    {"seq": 1, "hash": "ABC"}, "deadbeef"])
def test_bad_anchors_are_refused(hist, anchor):
    with pytest.raises(HistoryError, match=r"^anchor must be \{seq: positive integer, hash: 64 "
                                           r"lower-case hex digits\} as returned by audit_event"):
        verify(str(hist), anchor=anchor)


def test_verify_keeps_counting_after_the_first_problem(hist):
    lines = _edit(write_history(hist))
    lines += ["junk\n"] * 5
    result = rewrite(hist, lines)
    assert (result["lines"], result["first_problem"]["line"]) == (13, 3)


# --------------------------------------------------------------------------------------------
# Property: any single tampering is found at the right line
# --------------------------------------------------------------------------------------------

event_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z")
details = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8),
                                                         st.booleans(), st.none()), max_size=3)
EDITABLE = ["event", "details", "timestamp", "actor", "seq", "prev", "hash", "stack"]


def _edited_value(record, field):
    return {"event": record["event"] + "x", "details": {"tampered": True},
            "timestamp": "1999-01-01T00:00:00.000Z", "actor": {"user": "mallory"},
            "seq": record["seq"] + 100, "prev": "f" * 64, "hash": "e" * 64,
            "stack": "other"}[field]


@st.composite
def tampered_histories(draw):
    """(events, tampering, expected line, expected problem or a set of acceptable lines)."""
    count = draw(st.integers(min_value=2, max_value=10))
    events = draw(st.lists(st.tuples(event_names, details), min_size=count, max_size=count))
    kind = draw(st.sampled_from(["edit", "delete", "swap", "copy", "forge_edit", "forge_insert"]))
    if kind == "edit":
        index = draw(st.integers(1, count))
        return events, (kind, index, draw(st.sampled_from(EDITABLE))), index, "edited"
    if kind == "delete":
        index = draw(st.integers(1, count - 1))  # deleting the last line needs an anchor
        return events, (kind, index), index, "removed"
    if kind == "swap":
        index = draw(st.integers(1, count - 1))
        return events, (kind, index), index, "reordered"
    if kind == "copy":
        source = draw(st.integers(1, count))
        position = draw(st.integers(1, count + 1))
        # A copy put right before its original is that original's twin: the second one is reported.
        expected = position + 1 if source == position else position
        return events, (kind, source, position), expected, "inserted"
    if kind == "forge_edit":
        index = draw(st.integers(1, count - 1))  # a re-hashed last line needs an anchor
        return events, (kind, index), index, "edited"
    position = draw(st.integers(1, count))
    # Just before the last line, nothing follows to tell the forgery from the original.
    expected = position if position < count else position + 1
    return events, (kind, position), expected, "inserted"


def apply_tampering(lines, tampering):
    kind, *args = tampering
    lines = list(lines)
    if kind == "edit":
        index, field = args
        record = json.loads(lines[index - 1])
        record[field] = _edited_value(record, field)
        lines[index - 1] = serialize(record).decode()
    elif kind == "delete":
        del lines[args[0] - 1]
    elif kind == "swap":
        index = args[0]
        lines[index - 1], lines[index] = lines[index], lines[index - 1]
    elif kind == "copy":
        source, position = args
        lines.insert(position - 1, lines[source - 1])
    elif kind == "forge_edit":
        index = args[0]
        lines[index - 1] = forge(json.loads(lines[index - 1]), details={"tampered": True})
    else:
        position = args[0]
        lines.insert(position - 1, forge(json.loads(lines[position - 1]), details={"tampered": True}))
    return lines


@settings(max_examples=200, deadline=None)
@given(tampered_histories())
def test_any_single_tampering_is_found_at_its_line(case):
    events, tampering, line, problem = case
    lines, prev = [], GENESIS
    for index, (event, extra) in enumerate(events, 1):  # built like append_event, minus the fsyncs
        record = build_record(fields(event, details=extra), index, prev,
                              now=T0 + datetime.timedelta(seconds=index))
        lines.append(serialize(record).decode("utf-8"))
        prev = record["hash"]
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "history.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        assert verify(path)["ok"]
        tampered = apply_tampering(lines, tampering)
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(tampered)
        result = verify(path)
    assert result["ok"] is False, tampering
    found = result["first_problem"]
    assert (found["line"], found["problem"]) == (line, problem), (tampering, found)
    assert found["message"].startswith("line %d" % line)
    assert result["lines"] == len(tampered)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(event_names, details), min_size=0, max_size=15))
def test_untouched_histories_verify(events):
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "history.jsonl")
        written = [append_event(path, fields(event, details=extra)) for event, extra in events]
        result = verify(path)
    assert result == {"ok": True, "lines": len(events), "first_problem": None,
                      "last_seq": len(events),
                      "last_hash": written[-1]["hash"] if written else GENESIS}


def test_record_event_makes_the_directory_previews_in_check_mode_and_names_the_fix(tmp_path):
    """The one way modules record an event: the directory is made (0750), check mode writes
    nothing, and an OS failure becomes a HistoryError that names the file and the fix."""
    fields = {"event": "deploy", "host": "h", "actor": {"user": "u"}}
    path = tmp_path / "new" / "history.jsonl"
    preview = history.record_event(str(path), fields, check_mode=True)
    assert preview["seq"] == 1 and not (tmp_path / "new").exists()
    written = history.record_event(str(path), fields)
    assert written["seq"] == 1 and stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o750
    assert history.verify(str(path))["ok"] is True
    (tmp_path / "afile").write_text("")
    with pytest.raises(history.HistoryError) as caught:
        history.record_event(str(tmp_path / "afile" / "history.jsonl"), fields)
    assert str(caught.value).startswith("cannot append to the history %s: " % (tmp_path / "afile" / "history.jsonl"))
    assert str(caught.value).endswith("check that the directory is writable by the remote user")


# --------------------------------------------------------------------------------------------
# The history key: a MAC per record that only the key's holder can make
# --------------------------------------------------------------------------------------------

KEY = "controller-only-secret"


def _keyed(tmp_path, count=3, key=KEY):
    path = tmp_path / "keyed.jsonl"
    for number in range(count):
        fields = {"event": "deploy", "host": "web1", "actor": {"user": "ci"}, "details": {"n": number}}
        append_event(str(path), fields, key=key)
    return path


def test_a_keyed_record_carries_the_mac_of_its_hash_and_still_chains(tmp_path):
    path = _keyed(tmp_path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(record["mac"] == record_mac(KEY, record["hash"]) for record in records)
    assert KEY not in path.read_text()
    assert verify(str(path))["ok"] is True  # the chain holds without the key
    assert verify_macs(str(path), KEY) is None


def test_lines_rewritten_without_the_key_are_found_with_it(tmp_path):
    path = _keyed(tmp_path)
    records, prev, out = [json.loads(line) for line in path.read_text().splitlines()], GENESIS, b""
    for record in records:
        record["details"] = {"n": "rewritten"}
        record["prev"] = prev
        record.pop("mac")
        record["hash"] = prev = record_hash(record)
        out += serialize(record)
    path.write_bytes(out)
    assert verify(str(path))["ok"] is True, "re-hashed: the chain alone cannot tell"
    problem = verify_macs(str(path), KEY)
    assert problem["line"] == 1 and problem["problem"] == "edited"
    assert problem["message"] == ("line 1 (seq 1, event deploy): it has no mac although the history is keyed: the "
                                  "line was written or rewritten without the history key")


def test_a_mac_made_with_another_key_is_found(tmp_path):
    path = _keyed(tmp_path, key="not-the-key")
    problem = verify_macs(str(path), KEY)
    assert problem["line"] == 1 and "its mac does not match its hash under the history key" in problem["message"]


def test_an_unkeyed_history_has_nothing_for_the_key_to_check_against(tmp_path):
    path = _keyed(tmp_path, key=None)
    assert "mac" not in path.read_text()
    assert "it has no mac" in verify_macs(str(path), KEY)["message"]
