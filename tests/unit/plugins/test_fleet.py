"""Table tests of a fleet's merged figures and outliers (module_utils/_fleet.py)."""

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _fleet
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import combine


def figures(requests, errors, buckets, seconds=60.0):
    """Window figures as _metrics.window gives them (cumulative buckets [[le, count]])."""
    return combine([{"requests": requests, "errors": errors, "latency_buckets": buckets,
                     "window_seconds": seconds, "req_per_s": requests / seconds, "counter_reset": False}])


FAST = [["0.005", 90], ["0.01", 100], ["+Inf", 100]]      # P99 under 10 ms
SLOW = [["0.005", 0], ["0.5", 10], ["1", 100], ["+Inf", 100]]  # P99 near 1 s
FAST_73 = [["0.005", 60], ["0.05", 73], ["0.25", 73], ["+Inf", 73]]      # P99 under 50 ms
ONE_SLOW = [["0.005", 60], ["0.05", 72], ["0.25", 73], ["+Inf", 73]]     # P99 ~ 140 ms from one request
EIGHT_SLOW = [["0.005", 50], ["0.05", 65], ["0.25", 73], ["+Inf", 73]]   # 8 requests over 50 ms


def test_counts_are_summed_and_rates_computed_once_from_the_sums():
    merged = _fleet.merge({"h1": figures(1000, 10, [["0.01", 1000], ["+Inf", 1000]]),
                           "h2": figures(10, 5, [["0.01", 10], ["+Inf", 10]])})["fleet"]
    assert (merged["requests"], merged["errors"]) == (1010, 15)
    # 15/1010, not the mean of 1 % and 50 %.
    assert merged["error_rate_percent"] == pytest.approx(100 * 15 / 1010)
    assert merged["latency_buckets"] == [["0.01", 1010], ["+Inf", 1010]]
    assert merged["req_per_s"] == pytest.approx(1010 / 60.0)


def test_the_p99_comes_from_the_merged_histogram_not_a_mean_of_p99s():
    fast = [["0.01", 99], ["1", 100], ["+Inf", 100]]
    merged = _fleet.merge({"h1": figures(100, 0, fast), "h2": figures(100, 0, fast),
                           "h3": figures(100, 0, [["0.01", 0], ["1", 100], ["+Inf", 100]])})
    p99s = [host["p99_latency_ms"] for host in merged["hosts"].values()]
    # 103 of 300 requests are over 10 ms: the merged P99 is near 1 s, not the mean of the three.
    assert merged["fleet"]["p99_latency_ms"] > sum(p99s) / 3


@pytest.mark.parametrize("hosts, named", [
    # one host, or none: nobody to compare with
    ({"h1": figures(1000, 500, FAST)}, []),
    ({}, []),
    # all equally bad: nobody stands out
    ({"h1": figures(100, 30, FAST), "h2": figures(100, 30, FAST), "h3": figures(100, 30, FAST)}, []),
    # one host's error rate far over the others'
    ({"h1": figures(100, 0, FAST), "h2": figures(100, 40, FAST), "h3": figures(100, 1, FAST)}, ["h2"]),
    # twice the others' but within 5 points: not named
    ({"h1": figures(100, 2, FAST), "h2": figures(100, 5, FAST), "h3": figures(100, 2, FAST)}, []),
    # too few requests on the bad host to say
    ({"h1": figures(100, 0, FAST), "h2": figures(19, 19, FAST), "h3": figures(100, 0, FAST)}, []),
    # too few requests on the others to compare with
    ({"h1": figures(5, 0, FAST), "h2": figures(100, 50, FAST), "h3": figures(5, 0, FAST)}, []),
    # latency: one slow host
    ({"h1": figures(100, 0, FAST), "h2": figures(100, 0, SLOW), "h3": figures(100, 0, FAST)}, ["h2"]),
    # one slow request (a busy moment) makes a short window's P99 high, not the host slow:
    # 1 of 73 requests above the others' P99 is not a tail (what CI saw on two healthy hosts)
    ({"h1": figures(73, 0, ONE_SLOW), "h2": figures(73, 0, FAST_73), "h3": figures(73, 0, FAST_73)}, []),
    # 8 of 73 slower than the others' P99 (11 %): named
    ({"h1": figures(73, 0, EIGHT_SLOW), "h2": figures(73, 0, FAST_73), "h3": figures(73, 0, FAST_73)}, ["h1"]),
    # 4 of 30 (13 %) but fewer than 5 requests: not named
    ({"h1": figures(30, 0, [["0.005", 26], ["0.01", 26], ["0.5", 26], ["+Inf", 30]]), "h2": figures(73, 0, FAST_73),
      "h3": figures(73, 0, FAST_73)}, []),
])
def test_outliers(hosts, named):
    assert [entry["host"] for entry in _fleet.merge(hosts)["outliers"]] == named


def test_an_outlier_says_why():
    merged = _fleet.merge({"h1": figures(100, 0, FAST), "h2": figures(100, 40, SLOW), "h3": figures(100, 0, FAST)})
    (entry,) = merged["outliers"]
    assert entry["reasons"][0] == "error rate 40.00% against 0.00% on the other hosts"
    assert entry["reasons"][1].startswith("P99 ") and "ms against" in entry["reasons"][1]


@pytest.mark.parametrize("buckets, seconds, slower", [
    ([["0.005", 60], ["0.05", 72], ["0.25", 73], ["+Inf", 73]], 0.0499, 1),   # above the 0.05 bound
    ([["0.005", 60], ["0.05", 72], ["0.25", 73], ["+Inf", 73]], 0.05, 1),
    ([["0.005", 60], ["0.05", 72], ["0.25", 73], ["+Inf", 80]], 0.3, 0),     # past the last bound: +Inf
    ([["0.005", 60], ["+Inf", 73]], 0.001, 13),
    ([], 0.1, 0),
])
def test_slower_than_counts_only_requests_surely_slower(buckets, seconds, slower):
    assert _fleet.slower_than(buckets, seconds) == slower


def test_no_hosts_is_an_empty_window():
    assert _fleet.merge({})["fleet"]["requests"] == 0 and _fleet.merge({})["fleet"]["error_rate_percent"] is None


@pytest.mark.parametrize("per_host, message", [
    ({"h1": None}, "host h1: its window figures are NoneType, not a mapping"),
    ({"h2": {"requests": 1}}, "host h2: its window figures have no errors, latency_buckets, window_seconds"),
])
def test_figures_that_cannot_be_merged_name_the_host(per_host, message):
    with pytest.raises(_fleet.FleetError, match=message):
        _fleet.merge(per_host)


# --------------------------------------------------------------------------------------------
# A fleet canary: its hosts (canary.hosts) and its one judgement
# --------------------------------------------------------------------------------------------

HOSTS = ["h1", "h2", "h3"]


@pytest.mark.parametrize("hosts, setting, chosen", [
    (HOSTS, None, HOSTS),                  # default: every host
    (HOSTS, 1, ["h1"]),                    # the first N in the play's (inventory) order
    (HOSTS, 2, ["h1", "h2"]),
    (HOSTS, 5, HOSTS),                     # more than the fleet: every host
    (HOSTS, "100%", HOSTS),
    (HOSTS, "50%", ["h1", "h2"]),          # 1.5 hosts, rounded up
    (HOSTS, "34%", ["h1", "h2"]),          # 1.02 hosts, rounded up
    (HOSTS, "33%", ["h1"]),                # 0.99 hosts, rounded up
    (HOSTS, "1%", ["h1"]),                 # at least one
    (["b", "a"], 1, ["b"]),                # the order given, not sorted
    ([], 2, []),
    (["h%d" % n for n in range(1, 11)], "25%", ["h1", "h2", "h3"]),
])
def test_canary_hosts(hosts, setting, chosen):
    assert _fleet.canary_hosts(hosts, setting) == chosen


BAD = figures(100, 50, FAST)
GOOD = figures(100, 0, FAST)


@pytest.mark.parametrize("windows, active, refused", [
    # every host measured: judged
    ({"h1": GOOD, "h2": BAD, "h3": GOOD}, HOSTS, None),
    # a host without a canary (outside canary.hosts) is still in the play: judged on the others
    ({"h1": GOOD}, HOSTS, None),
    # a host that could not be measured, or failed before, left the play: refused, naming it
    ({"h1": GOOD, "h3": GOOD}, ["h1", "h3"], "not judged on part of the fleet: h2 could not be measured or failed "
                                             "before the judgement (see its error above). Nothing was changed on any host. "
                                             "Fix it and run"),
    ({"h1": GOOD}, ["h1"], "h2, h3 could not be measured or failed before the judgement (see their error above)"),
    # figures that cannot be merged
    ({"h1": GOOD, "h2": {"requests": 3}}, HOSTS, "cannot be judged: host h2: its window figures have no errors"),
])
def test_judgement_refuses_part_of_the_fleet(windows, active, refused):
    result = _fleet.judgement(windows, HOSTS, active)
    if refused is None:
        assert result["refused"] is None
    else:
        assert refused in result["refused"]
        assert result["policy"] is None


def test_judgement_merges_once_and_names_the_outlier():
    result = _fleet.judgement({"h3": GOOD, "h2": BAD, "h1": GOOD}, HOSTS, HOSTS)
    assert result["hosts"] == HOSTS  # the play's order
    assert result["fleet"] == {"requests": 300, "errors": 50, "error_rate_percent": pytest.approx(100 * 50 / 300),
                               "p99_latency_ms": result["fleet"]["p99_latency_ms"], "window_seconds": 60.0}
    assert result["per_host"]["h2"]["error_rate_percent"] == 50.0
    assert [entry["host"] for entry in result["outliers"]] == ["h2"]
    assert result["policy"] == {"size": 3, "hosts": result["per_host"], "outliers": result["outliers"]}
    assert "latency_buckets" not in result["policy"]["hosts"]["h1"]
    assert result["lines"][0].startswith("Fleet canary on 3 hosts (h1, h2, h3), figures merged: 300 requests, "
                                         "error rate 16.67%, P99 ")
    assert result["lines"][2] == ("  h2: 100 requests, error rate 50.00%%, P99 %.1f ms over 60.0 s; OUTLIER: error "
                                  "rate 50.00%% against 0.00%% on the other hosts"
                                  % result["per_host"]["h2"]["p99_latency_ms"])
    assert "OUTLIER" not in result["lines"][1] + result["lines"][3]
    assert result["outlier_lines"] == ["Outlier host h2: error rate 50.00% against 0.00% on the other hosts"]


def test_a_fleet_of_one_is_judged_on_its_own_figures():
    result = _fleet.judgement({"h1": BAD}, ["h1"], ["h1"])
    own = _fleet.summary(BAD)
    assert result["fleet"] == own and result["per_host"] == {"h1": own} and result["outliers"] == []


def test_no_requests_show_as_not_available():
    empty = figures(0, 0, [])
    result = _fleet.judgement({"h1": empty, "h2": empty}, ["h1", "h2"], ["h1", "h2"])
    assert result["lines"][0].endswith("0 requests, error rate n/a, P99 n/a over 60.0 s")
