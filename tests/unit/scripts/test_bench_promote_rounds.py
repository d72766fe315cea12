"""bench-promote's table over several rounds: a promote's verdict is on its median wall time, the
failed requests are summed and the gap is the worst of all rounds."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "scripts"))
from bench_promote import APPS, TARGET_PROMOTE_S, median, report_rounds  # noqa: E402  pylint: disable=wrong-import-position


def result(canary, stable, failed=0, gap_ms=20.0, rolled_back=True):
    return {
        "promotes": [("1 promote canary", canary), ("3 promote stable", stable)],
        "checks": {"rolled back": rolled_back},
        "aborted": None,
        "failed": failed,
        "chaos": 100,
        "gap_ms": gap_ms,
        "clients": 8,
        "duration": 45.0,
        "rate": 400.0,
    }


def table(capsys, results):
    report_rounds(results)
    out = capsys.readouterr().out
    assert f"== All {len(results)} rounds ==" in out
    return {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]]
            for line in out.splitlines() if line.count("|") == 3}


@pytest.mark.parametrize(("values", "expected"), [([3.0], 3.0), ([5.0, 1.0, 3.0], 3.0), ([4.0, 1.0, 3.0, 2.0], 2.5)])
def test_median(values, expected):
    assert median(values) == expected


def test_one_slow_round_does_not_decide_but_is_shown(capsys):
    slow = TARGET_PROMOTE_S + 2.5
    rows = table(capsys, [result(5.0, 5.5), result(slow, 5.4), result(5.2, 5.3)])
    value, target, verdict = rows["1 promote canary: wall time, median (slowest)"]
    assert value == f"5.2 s ({slow:.1f} s); 5.0 / {slow:.1f} / 5.2"
    assert (target, verdict) == (f"<= {TARGET_PROMOTE_S:.0f} s", "PASS")


def test_a_slow_median_fails(capsys):
    rows = table(capsys, [result(6.5, 5.0), result(6.2, 5.0), result(5.0, 5.0)])
    assert rows["1 promote canary: wall time, median (slowest)"][2] == "FAIL"
    assert rows["3 promote stable: wall time, median (slowest)"][2] == "PASS"


def test_failures_add_up_and_the_worst_gap_counts(capsys):
    rows = table(capsys, [result(5.0, 5.0, failed=0, gap_ms=30.0), result(5.0, 5.0, failed=2, gap_ms=250.0)])
    assert rows["failed requests caused by switching, all rounds"][0] == "2"
    assert rows["failed requests caused by switching, all rounds"][2] == "FAIL"
    assert rows["longest gap between 200s, all rounds"][0] == "250.0 ms"
    assert rows["longest gap between 200s, all rounds"][2] == "FAIL"


def test_a_check_must_hold_in_every_round(capsys):
    rows = table(capsys, [result(5.0, 5.0), result(5.0, 5.0, rolled_back=False)])
    assert rows["canary rolled back, every round"][1:] == ["yes", "FAIL"]
    assert rows["canary rolled back, every round"][0] == "no"


def test_the_header_names_the_app_and_every_judgement_must_come_from_the_edge(capsys):
    edge, other = result(5.0, 5.0), result(5.0, 5.0)
    edge["judgements"], other["judgements"] = [True, True], [True, False]
    for results, value, expected in (([edge, edge], "4 of 4 judgements", "PASS"), ([edge, other], "3 of 4 judgements", "FAIL")):
        report_rounds(results, APPS["thirdparty"])
        out = capsys.readouterr().out
        assert "== All 2 rounds: third-party app" in out
        rows = {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]]
                for line in out.splitlines() if line.count("|") == 3}
        assert rows["bad image's own 500s (counted apart)"][0] == "200"
        assert rows["canary judged from nginx's edge log, all rounds"] == [value, "all", expected]
