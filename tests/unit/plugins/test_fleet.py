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
])
def test_outliers(hosts, named):
    assert [entry["host"] for entry in _fleet.merge(hosts)["outliers"]] == named


def test_an_outlier_says_why():
    merged = _fleet.merge({"h1": figures(100, 0, FAST), "h2": figures(100, 40, SLOW), "h3": figures(100, 0, FAST)})
    (entry,) = merged["outliers"]
    assert entry["reasons"][0] == "error rate 40.00% against 0.00% on the other hosts"
    assert entry["reasons"][1].startswith("P99 ") and "ms against" in entry["reasons"][1]


def test_no_hosts_is_an_empty_window():
    assert _fleet.merge({})["fleet"]["requests"] == 0 and _fleet.merge({})["fleet"]["error_rate_percent"] is None


@pytest.mark.parametrize("per_host, message", [
    ({"h1": None}, "host h1: its window figures are NoneType, not a mapping"),
    ({"h2": {"requests": 1}}, "host h2: its window figures have no errors, latency_buckets, window_seconds"),
])
def test_figures_that_cannot_be_merged_name_the_host(per_host, message):
    with pytest.raises(_fleet.FleetError, match=message):
        _fleet.merge(per_host)
