"""bench-promote --app thirdparty: the bad image's own 500s are counted apart like chaos errors,
every other non-200 is a failed request, responses are counted by version, and the summary names
the app and how many judgements came from nginx's edge log."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "scripts"))
from bench_promote import APPS, Load, Sequence, report  # noqa: E402  pylint: disable=wrong-import-position

INJECTED = b'{"error": "injected failure", "version": "2.0.0"}'


def rows_of(out):
    return {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]]
            for line in out.splitlines() if line.count("|") == 3}


def sequence(app, answers):
    """A Sequence whose load answered `answers` [(end time, status, X-Mode, body)], 1 s apart phases."""
    load = Load(1, 0.0, app)
    load.records[0] = [load._classify(end - 0.001, end, status, mode, body, True)  # pylint: disable=protected-access
                       for end, status, mode, body in answers]
    load.started, load.stopped = 0.0, 40.0
    seq = Sequence(load, "base.yml", "newer.yml", "project", "bad.yml")
    seq.phases = [("0 warm-up", 0.0), ("1 promote canary", 1.0), ("3 promote stable (roll back)", 2.0)]
    seq.steps = [{"label": "3 promote stable (roll back)", "kind": "promote", "mode": "stable", "seconds": 4.0,
                  "status": 2, "output": "Canary 2.0.0-bad over 5.0 s (its last window, measured by nginx)"}]
    seq.checks = {"rolled back": True}
    seq.judgements = [True]
    return seq


def test_the_bad_images_500s_are_counted_apart_and_a_lost_request_is_not(capsys):
    app = APPS["thirdparty"]
    answers = [(0.1 * n, 200, None, b'{"version": "1.0.0"}') for n in range(1, 10)]
    answers += [(1.05, 500, None, INJECTED), (1.1, 200, None, b'{"version": "2.0.0"}'),
                (1.2, 502, None, b"<html>bad gateway</html>"), (1.25, 500, None, b'{"error": "other"}')]
    answers += [(2.0 + 0.1 * n, 200, None, b'{"version": "1.0.0"}') for n in range(1, 10)]
    result = report(sequence(app, answers), None, f"Summary: {app.title}")
    out = capsys.readouterr().out
    assert (result["failed"], result["chaos"]) == (2, 1)
    assert "== Summary: third-party app" in out and "by version: 1.0.0: 18, -: 2, 2.0.0: 2" in out
    assert "2.0.0 %" in out  # the phase table shows the new release's share, not X-Mode's
    rows = rows_of(out)
    assert rows["bad image's own 500s (counted apart)"][0] == "1"
    assert rows["failed requests caused by switching"][0] == "2" and rows["failed requests caused by switching"][2] == "FAIL"
    assert rows["canary judged from nginx's edge log"] == ["1 of 1 judgements", "all", "PASS"]


def test_the_example_app_counts_by_x_mode_and_its_chaos_errors_apart(capsys):
    app = APPS["example"]
    answers = [(0.1 * n, 200, None, b'{"version": "1.0.0", "mode": "stable"}') for n in range(1, 10)]
    answers += [(1.05, 500, "canary", b'{"error": "chaos: injected error", "version": "1.0.0"}'),
                (1.1, 500, None, INJECTED)]  # the third-party app's injected failure is a failure here
    result = report(sequence(app, answers), None, "Summary: example app")
    out = capsys.readouterr().out
    assert (result["failed"], result["chaos"]) == (1, 1)
    assert "by X-Mode: stable: 10, canary: 1" in out and "canary %" in out
    assert rows_of(out)["chaos-injected 500s (counted apart)"][0] == "1"
