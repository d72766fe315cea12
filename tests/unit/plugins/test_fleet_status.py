"""Table tests of status.yml on a fleet (module_utils/_fleet_status.py): the rows, the fleet row,
the merged figures, the hosts not measured, and the published results."""

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _fleet_status
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import combine


def window(requests, errors, buckets, seconds=10.0):
    return combine([{"requests": requests, "errors": errors, "latency_buckets": buckets,
                     "window_seconds": seconds, "req_per_s": requests / seconds, "counter_reset": False}])


def policy(allow, error=None, reasons=()):
    return {"allow": allow, "reasons": list(reasons), "error": error}


def report(version="1.0.0", slot="blue", win=None, canary=None, weight=0, infra=True, canary_ok=True,
           canary_error=None):
    tracks = {"stable": {"slot": slot, "version": version}}
    if canary:
        tracks["canary"] = {"slot": canary[0], "version": canary[1]}
    return {"mode": "canary" if canary else "stable", "weight": weight if canary else 100, "tracks": tracks,
            "policy": {"infrastructure": policy(infra), "canary": policy(canary_ok, canary_error)},
            "window": win or window(0, 0, [])}


FAST = [["0.005", 90], ["0.01", 100], ["+Inf", 100]]
OK = {"round": 1, "report": report(win=window(100, 0, FAST))}


@pytest.mark.parametrize("rep, row", [
    (report(win=window(100, 5, FAST)),
     ["h1", "1.0.0", "stable", "blue", "10.00", "5.00%", "9.5 ms", "PASS", "PASS"]),
    (report(canary=("green", "1.1.0"), weight=20, win=window(50, 0, FAST), canary_ok=False),
     ["h1", "1.0.0 + canary 1.1.0", "canary 20%", "blue + green", "5.00", "0.00%", "9.5 ms", "PASS", "FAIL"]),
    (report(infra=False, canary_ok=False, canary_error="connection refused"),
     ["h1", "1.0.0", "stable", "blue", "0.00", "n/a", "n/a", "FAIL", "OPA unavailable"]),
])
def test_a_measured_host_is_one_row(rep, row):
    assert _fleet_status.host_row("h1", rep) == row


@pytest.mark.parametrize("outcome, label, note", [
    (None, "NOT REACHED", "h2: " + _fleet_status.NOT_REACHED),
    ({"round": 1, "report": OK["report"]}, None, None),
    ({"round": 0, "report": OK["report"]}, "NOT REACHED", "h2: " + _fleet_status.NOT_REACHED),  # stale refresh
    ({"round": 1, "error": "Stack shop is not deployed on h2\n (no state.json);  run deploy.yml first."},
     "NOT MEASURED", "h2: Stack shop is not deployed on h2 (no state.json); run deploy.yml first."),
])
def test_a_host_not_measured_is_a_row_that_says_so(outcome, label, note):
    status = _fleet_status.fleet_status({"h1": OK, "h2": outcome}, ["h1", "h2"], 1)
    assert [row[0] for row in status["rows"]] == ["h1", "h2"]
    if label is None:
        assert status["notes"] == [] and status["fleet"]["measured"] == 2
        return
    assert status["rows"][1] == ["h2", "-", label, "-", "-", "-", "-", "-", "-"]
    assert status["notes"] == [note]
    assert status["hosts"]["h2"] == {"measured": False, "reason": note[len("h2: "):]}
    assert status["fleet"]["measured"] == 1 and status["fleet"]["not_measured"] == ["h2"]
    # The fleet's figures are those of the host that was measured.
    assert status["fleet"]["figures"]["requests"] == 100


def test_the_fleet_figures_are_the_hosts_windows_merged_not_averaged():
    busy, idle = window(1000, 10, [["0.01", 1000], ["+Inf", 1000]]), window(10, 5, [["0.01", 10], ["+Inf", 10]])
    outcomes = {"h1": {"round": 2, "report": report(win=busy)},
                "h2": {"round": 2, "report": report(win=idle, version="1.1.0", slot="green")}}
    status = _fleet_status.fleet_status(outcomes, ["h1", "h2"], 2)
    fleet = status["fleet"]
    assert fleet["figures"] == combine([busy, idle])
    assert fleet["figures"]["error_rate_percent"] == pytest.approx(100 * 15 / 1010)  # not (1 + 50) / 2
    assert fleet["releases"] == {"1.0.0": ["h1"], "1.1.0": ["h2"]}
    assert fleet["modes"] == {"stable": ["h1", "h2"]}
    assert fleet["policy"] == {"infrastructure": {"pass": 2, "fail": 0}, "canary": {"pass": 2, "fail": 0}}
    assert status["fleet_row"] == ["fleet (2 of 2 measured)", "2 releases", "-", "-", "101.00", "1.49%",
                                   "9.9 ms", "2/2 PASS", "2/2 PASS"]
    assert status["hosts"]["h1"] == {"measured": True, "report": outcomes["h1"]["report"]}


def test_a_host_much_worse_than_the_others_is_named_in_the_notes():
    bad = window(100, 50, FAST)
    outcomes = {name: {"round": 1, "report": report(win=bad if name == "h3" else window(100, 0, FAST))}
                for name in ("h1", "h2", "h3")}
    status = _fleet_status.fleet_status(outcomes, ["h1", "h2", "h3"], 1)
    assert [o["host"] for o in status["fleet"]["outliers"]] == ["h3"]
    assert status["notes"] == ["h3 is much worse than the other hosts: error rate 50.00% against 0.00% on "
                               "the other hosts"]


def test_no_host_measured_gives_empty_fleet_figures():
    status = _fleet_status.fleet_status({}, ["h1", "h2"], 1)
    assert status["fleet"]["measured"] == 0 and status["fleet"]["figures"]["requests"] == 0
    assert status["fleet_row"][4:7] == ["n/a", "n/a", "n/a"]
    assert status["fleet_row"][7:] == ["0/0 PASS", "0/0 PASS"]


@pytest.mark.parametrize("outcome, message", [
    ("ok", "host h1: its status outcome is str, not a mapping"),
    ({"round": 1, "report": {"mode": "stable"}}, "host h1: its status outcome has no report with a window"),
])
def test_an_outcome_of_another_version_names_the_host(outcome, message):
    with pytest.raises(_fleet_status.FleetStatusError, match=message):
        _fleet_status.fleet_status({"h1": outcome}, ["h1"], 1)


@pytest.mark.parametrize("columns, rows, footer, lines", [
    (["A", "Bee"], [["x", "1"], ["long", "22"]], None,
     ["A     Bee", "----  ---", "x     1", "long  22"]),
    (["A", "B"], [["x", "1"]], ["total", "9"],
     ["A      B", "-----  -", "x      1", "-----  -", "total  9"]),
    (["A", "B"], [], None, ["A  B", "-  -"]),
])
def test_table_lines_align_each_column_to_its_widest_cell(columns, rows, footer, lines):
    assert _fleet_status.table_lines(columns, rows, footer) == lines
