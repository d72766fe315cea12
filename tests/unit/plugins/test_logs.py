"""The pure rules of logs.yml (module_utils/_logs.py): since, lines, merging a container's two
streams, and a container's role from its labels."""

from __future__ import annotations

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._logs import (
    LogsError,
    check_lines,
    container_role,
    log_order,
    merge_streams,
    since_timestamp,
)

NOW = 1796637600  # 2026-12-07T10:00:00Z


@pytest.mark.parametrize("text, expected", [
    ("", None),
    ("   ", None),
    (None, None),
    ("30s", NOW - 30),
    ("10m", NOW - 600),
    ("2h", NOW - 7200),
    ("7d", NOW - 7 * 86400),
    ("2026-12-07T10:00Z", NOW),
    ("2026-12-07T09:59:30Z", NOW - 30),
])
def test_since_names_a_unix_time(text, expected):
    assert since_timestamp(text, now=NOW) == expected


@pytest.mark.parametrize("text, problem", [
    ("yesterday", "is neither an age nor a UTC time"),
    ("0s", "is neither an age nor a UTC time"),
    ("-5m", "is neither an age nor a UTC time"),
    ("10 m", "is neither an age nor a UTC time"),
    ("10w", "is neither an age nor a UTC time"),
    ("2026-12-07 10:00Z", "is neither an age nor a UTC time"),
    ("2026-12-07T10:00+01:00", "is neither an age nor a UTC time"),
    ("2026-13-07T10:00Z", "is not a real time"),
    ("2026-12-07T25:00Z", "is not a real time"),
    ("１０m", "is neither an age nor a UTC time"),
    ("10m; rm -rf /", "is neither an age nor a UTC time"),
])
def test_a_bad_since_names_the_value_and_the_forms(text, problem):
    with pytest.raises(LogsError) as caught:
        since_timestamp(text, now=NOW)
    assert str(caught.value).startswith("since: %r %s; use an age such as 30s" % (text, problem))


def test_a_long_bad_since_is_shown_shortened():
    with pytest.raises(LogsError) as caught:
        since_timestamp("x" * 500, now=NOW)
    assert "x" * 37 + "..." in str(caught.value) and "x" * 41 not in str(caught.value)


@pytest.mark.parametrize("lines, ok", [
    (1, True), (50, True), (10000, True), (0, False), (10001, False), (-1, False), (True, False), ("5", False),
])
def test_lines_must_be_a_whole_number_in_range(lines, ok):
    if ok:
        assert check_lines(lines) == lines
    else:
        with pytest.raises(LogsError, match=r"^lines: .* is out of range; use a whole number of lines from 1 to 10000"):
            check_lines(lines)


def test_streams_merge_in_time_order_and_keep_the_last_lines():
    out = ("2026-12-07T10:00:01.000000001Z started\n"
           "2026-12-07T10:00:03.000000000Z served /\n")
    err = ("2026-12-07T10:00:02.500000000Z warning: slow\n"
           "2026-12-07T10:00:04.000000000Z stopping\n")
    merged = merge_streams(out, err, 10)
    assert [(entry["stream"], entry["text"]) for entry in merged] == [
        ("stdout", "started"), ("stderr", "warning: slow"), ("stdout", "served /"), ("stderr", "stopping")]
    assert merged[0]["time"] == "2026-12-07T10:00:01.000000001Z"
    assert [entry["text"] for entry in merge_streams(out, err, 2)] == ["served /", "stopping"]


def test_a_line_without_a_timestamp_continues_the_line_before_it():
    out = "2026-12-07T10:00:01.000000000Z Traceback:\n  File x\n2026-12-07T10:00:02.000000000Z next\n"
    merged = merge_streams(out, "", 10)
    assert [entry["text"] for entry in merged] == ["Traceback:\n  File x", "next"]


def test_empty_streams_give_no_lines():
    assert merge_streams("", "", 5) == []


@pytest.mark.parametrize("labels, expected", [
    ("org.swiftdeploy.role=app,org.swiftdeploy.slot=blue,org.swiftdeploy.stack=s", ("app", "blue")),
    ("com.docker.compose.project=s,org.swiftdeploy.role=nginx", ("nginx", "")),
    ("", ("", "")),
    (None, ("", "")),
])
def test_a_containers_role_and_slot_come_from_its_labels(labels, expected):
    assert container_role({"Labels": labels}) == expected


def test_containers_are_shown_app_slots_then_edge_routing_nginx_opa_then_unlabelled():
    found = [{"role": role, "slot": slot, "name": name} for role, slot, name in [
        ("", "", "s-zz-1"), ("opa", "", "s-opa-1"), ("nginx", "", "s-nginx-1"), ("edge", "", "s-edge-1"),
        ("app", "green", "s-app-green-1"), ("", "", "s-aa-1"), ("app", "blue", "s-app-blue-1"),
        ("app", "baseline", "s-app-baseline-1")]]
    assert [item["name"] for item in sorted(found, key=log_order)] == [
        "s-app-baseline-1", "s-app-blue-1", "s-app-green-1", "s-edge-1", "s-nginx-1", "s-opa-1", "s-aa-1", "s-zz-1"]
