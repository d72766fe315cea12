"""The metrics core: the text parser (fallback against prometheus_client), window(), combine()
and histogram_quantile() against Prometheus' own test cases and a brute-force reference.

Samples come from the app's own Metrics class (loaded from app/swiftdeploy_app.py), rendered
and parsed, so the figures are checked on exactly the text the app serves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys

import pytest
from hypothesis import example, given, settings, strategies as st

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _metrics as metrics
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import (
    MetricsError,
    Sample,
    combine,
    empty_window,
    histogram_quantile,
    parse,
    parse_samples_client,
    parse_samples_fallback,
    window,
)

APP_PATH = pathlib.Path(__file__).resolve().parents[3] / "app" / "swiftdeploy_app.py"
INF = float("inf")
NAN = float("nan")
WINDOW_KEYS = {"requests", "req_per_s", "errors", "error_rate_percent", "p99_latency_ms", "window_seconds",
               "counter_reset", "latency_buckets"}


def load_app():
    if "swiftdeploy_app" in sys.modules:
        return sys.modules["swiftdeploy_app"]
    spec = importlib.util.spec_from_file_location("swiftdeploy_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


APP = load_app()
BOUNDS = APP.BUCKETS  # the app's finite bucket bounds, +Inf excluded


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Track:
    """One app process's Metrics, fed directly (no HTTP), sampled as the app renders it."""

    def __init__(self, mode="canary", version="2.0.0"):
        self.clock = Clock()
        self.app = APP.Metrics(mode, version, clock=self.clock)

    def hit(self, count, path="/", status=200, seconds=0.003, method="GET"):
        for _index in range(count):
            self.app.observe(method, path, status, seconds)
        return self

    def sample(self, taken_at, chaos=0):
        self.clock.now += 1.0  # uptime moves on between samples
        return parse(self.app.render(chaos), taken_at)


def is_nan(value):
    return isinstance(value, float) and math.isnan(value)


def same(actual, expected):
    """Equal, where NaN equals NaN and None only None."""
    if expected is None or actual is None:
        return actual is expected
    if is_nan(expected):
        return is_nan(actual)
    return actual == expected


# ---------------------------------------------------------------------------------------------
# histogram_quantile: tables
# ---------------------------------------------------------------------------------------------

REFERENCE = [(0.1, 90), (0.25, 98), (0.5, 100), (INF, 100)]


@pytest.mark.parametrize("q, buckets, expected", [
    pytest.param(0.99, REFERENCE, 0.375, id="reference-case"),
    pytest.param(0.5, REFERENCE, 0.1 * (50 / 90), id="first-bucket-interpolates-from-zero"),
    pytest.param(0.95, REFERENCE, 0.1 + (0.25 - 0.1) * ((0.95 * 100 - 90) / 8), id="middle-bucket"),
    pytest.param(1.0, REFERENCE, 0.5, id="q1-top-of-last-finite-bucket"),
    pytest.param(0.9, REFERENCE, 0.1, id="rank-on-a-bucket-boundary"),
    pytest.param(0.0, REFERENCE, 0.0, id="q0-is-the-natural-lower-bound"),
    pytest.param(0.0, [(0.1, 0), (0.5, 3), (INF, 3)], NAN, id="q0-first-bucket-empty-is-nan"),
    pytest.param(0.99, [(0.1, 1), (0.5, 2), (INF, 10)], 0.5, id="in-inf-bucket-gives-second-highest-bound"),
    pytest.param(1.0, [(0.1, 0), (INF, 5)], 0.1, id="all-in-inf-bucket"),
    pytest.param(0.99, [(0.1, 0), (0.5, 0), (INF, 0)], None, id="no-observations-is-none"),
    pytest.param(0.5, [(INF, 0)], NAN, id="only-inf-bucket-empty-is-nan"),
    pytest.param(0.5, [(INF, 7)], NAN, id="only-inf-bucket-is-nan"),
    pytest.param(0.5, [(0.1, 1), (0.5, 2)], NAN, id="no-inf-bucket-is-nan"),
    pytest.param(0.5, [], NAN, id="no-buckets-is-nan"),
    pytest.param(-0.1, REFERENCE, -INF, id="q-below-0"),
    pytest.param(1.01, REFERENCE, INF, id="q-above-1"),
    pytest.param(NAN, REFERENCE, NAN, id="q-nan"),
    pytest.param(-0.1, [(0.1, 0), (INF, 0)], -INF, id="q-below-0-wins-over-no-observations"),
    pytest.param(2.0, [], INF, id="q-above-1-wins-over-no-buckets"),
    pytest.param(NAN, [(0.1, 0), (INF, 0)], NAN, id="q-nan-wins-over-no-observations"),
    pytest.param(0.99, [(INF, 100), (0.5, 100), (0.1, 90), (0.25, 98)], 0.375, id="unsorted-input-is-sorted"),
    pytest.param(0.5, [(0.1, 2), (0.1, 3), (INF, 5)], 0.05, id="equal-bounds-are-merged"),
    # 0.35 up to rounding; without the fix it would be 0.25 + 0.25 * (2.8 / 4) = 0.425
    pytest.param(0.9, [(0.1, 10), (0.25, 8), (0.5, 12), (INF, 12)], 0.25 + 0.25 * ((0.9 * 12 - 10) / 2),
                 id="decrease-lifted-to-running-maximum"),
    pytest.param(0.5, [(0.1, 5), (INF, 3)], 0.05, id="inf-count-below-a-bucket-is-lifted"),
    pytest.param(0.5, [(0.1, 4), (INF, 0)], 0.05, id="inf-count-0-below-a-bucket-is-lifted"),
    pytest.param(1.0, [(0.1, 1e13), (0.2, 1e13 + 1), (INF, 1e13 + 1)], 0.1, id="near-equal-counts-made-equal"),
    pytest.param(0.25, [(-1.0, 2), (0.0, 4), (INF, 4)], -1.0, id="lowest-bound-negative-is-returned"),
    pytest.param(0.2, [(0.0, 5), (1.0, 10), (INF, 10)], 0.0, id="lowest-bound-zero-is-returned"),
    pytest.param(0.5, [(0.5, 10), (INF, 10)], 0.25, id="single-finite-bucket"),
])
def test_histogram_quantile_table(q, buckets, expected):
    assert same(histogram_quantile(q, buckets), expected)


def test_reference_case_is_exact():
    assert histogram_quantile(0.99, REFERENCE) == 0.375
    assert window_from_buckets(REFERENCE)["p99_latency_ms"] == 375.0


def _at_50m(per_step):
    """Prometheus' histograms.test loads `0+Nx10` series every 5m: at 50m a bucket holds 10 N."""
    return [(float(bound), 10 * step) for bound, step in per_step]


TESTHISTOGRAM_POSITIVE = _at_50m([("0.1", 5), (".2", 7), ("1e0", 11), ("+Inf", 12)])
TESTHISTOGRAM_NEGATIVE = _at_50m([("-.2", 1), ("-0.1", 2), ("0.3", 2), ("+Inf", 3)])
TESTHISTOGRAM3_POSITIVE = _at_50m([("0", 0), ("0.1", 5), (".2", 7), ("1e0", 11), ("+Inf", 11)])
TESTHISTOGRAM3_NEGATIVE = _at_50m([("-.25", 0), ("-.2", 1), ("-0.1", 2), ("0.3", 2), ("+Inf", 2)])
TESTHISTOGRAM2 = [(0.0, 0), (2.0, 1), (4.0, 2), (6.0, 3), (INF, 3)]
NONMONOTONIC = _at_50m([("0.1", 2), ("1", 1), ("10", 5), ("100", 4), ("1000", 9), ("+Inf", 8)])
# sum(rate(request_duration_seconds_bucket[10m])) by (le) at 50m: increases of 2 steps / 600 s.
AGGREGATED = [(0.1, 20 / 600), (0.2, 38 / 600), (INF, 50 / 600)]
# mixed_bucket{instance="ins1"}: le 0.2, 2e-1 and 2.0e-1 are one bound; rate over 10m.
MIXED = [(0.1, 2 / 600), (0.2, 2 / 600), (float("2e-1"), 2 / 600), (float("2.0e-1"), 2 / 600), (INF, 8 / 600)]


@pytest.mark.parametrize("q, buckets, expected", [
    (0, TESTHISTOGRAM_POSITIVE, 0), (0, TESTHISTOGRAM_NEGATIVE, -0.2),
    (1, TESTHISTOGRAM_POSITIVE, 1), (1, TESTHISTOGRAM_NEGATIVE, 0.3),
    (0.2, TESTHISTOGRAM_POSITIVE, 0.048), (0.2, TESTHISTOGRAM_NEGATIVE, -0.2),
    (0.5, TESTHISTOGRAM_POSITIVE, 0.15), (0.5, TESTHISTOGRAM_NEGATIVE, -0.15),
    (0.8, TESTHISTOGRAM_POSITIVE, 0.72), (0.8, TESTHISTOGRAM_NEGATIVE, 0.3),
    (0, TESTHISTOGRAM3_POSITIVE, 0), (0, TESTHISTOGRAM3_NEGATIVE, -0.25),
    (0.25, TESTHISTOGRAM3_POSITIVE, 0.055), (0.25, TESTHISTOGRAM3_NEGATIVE, -0.225),
    (0.5, TESTHISTOGRAM3_POSITIVE, 0.125), (0.5, TESTHISTOGRAM3_NEGATIVE, -0.2),
    (0.75, TESTHISTOGRAM3_POSITIVE, 0.45), (0.75, TESTHISTOGRAM3_NEGATIVE, -0.15),
    (1, TESTHISTOGRAM3_POSITIVE, 1), (1, TESTHISTOGRAM3_NEGATIVE, -0.1),
    (1. / 6., TESTHISTOGRAM2, 1), (0.5, TESTHISTOGRAM2, 3), (5. / 6., TESTHISTOGRAM2, 5),
    (0.01, NONMONOTONIC, 0.0045), (0.5, NONMONOTONIC, 8.5), (0.99, NONMONOTONIC, 979.75),
    (0.3, AGGREGATED, 0.075), (0.5, AGGREGATED, 0.1277777777777778),
    (0.5, MIXED, 0.15), (0.75, MIXED, 0.2), (1, MIXED, 0.2),
])
def test_histogram_quantile_matches_prometheus_testdata(q, buckets, expected):
    """The classic-histogram cases of prometheus/promql/promqltest/testdata/histograms.test,
    with the values Prometheus' test suite expects (compared as it does, to ~1e-12)."""
    assert histogram_quantile(q, buckets) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("buckets, expected", [
    pytest.param([(float("+inf"), 0), (INF, 0)], NAN, id="mixed-ins2-inf-spellings-are-one-bucket"),
    pytest.param([(0.1, 0), (0.2, 0), (INF, 0)], None, id="empty-bucket"),
    pytest.param([(0.0, 0), (1.0, 0), (2.0, 0), (INF, 0)], None, id="const-histogram-rate-0"),
])
def test_prometheus_nan_cases(buckets, expected):
    """Prometheus answers NaN to each: None here means the histogram is empty, NaN that it is
    malformed (a single bucket)."""
    assert same(histogram_quantile(0.5, buckets), expected)


# ---------------------------------------------------------------------------------------------
# histogram_quantile: properties against a brute-force reference
# ---------------------------------------------------------------------------------------------


def app_buckets(observations):
    """Cumulative buckets exactly as the app's Metrics.observe builds them."""
    counts = [0] * len(BOUNDS)
    for seconds in observations:
        counts = [n + (seconds <= bound) for n, bound in zip(counts, BOUNDS)]
    return list(zip(BOUNDS, counts)) + [(INF, len(observations))]


def reference_quantile(q, observations):
    """Prometheus' interpolation by walking the sorted observations into the app's buckets.

    Written from the definition, independently of the module: count how many observations
    fall into each bucket (lower, upper], find the bucket where the rank q * n is reached, and
    place the quantile linearly inside it; beyond the last finite bound, that bound."""
    ordered = sorted(observations)
    inside = []
    position = 0
    for bound in BOUNDS:
        first = position
        while position < len(ordered) and ordered[position] <= bound:
            position += 1
        inside.append(position - first)
    if not ordered:
        return None
    rank = q * len(ordered)
    below = 0
    for index, count in enumerate(inside):
        if below + count >= rank:
            lower = BOUNDS[index - 1] if index else 0.0
            return lower + (BOUNDS[index] - lower) * ((rank - below) / count)
        below += count
    return BOUNDS[-1]


def bucket_of(value):
    """(lower, upper] of the app's bucket holding value; upper is INF beyond the last bound."""
    lower = 0.0
    for bound in BOUNDS:
        if value <= bound:
            return lower, bound
        lower = bound
    return lower, INF


latency = st.one_of(
    st.floats(min_value=0, max_value=12, allow_nan=False),
    st.sampled_from(BOUNDS),  # exactly on a bound: the app counts it in that bucket (le)
    st.floats(min_value=0, max_value=0.02, allow_nan=False),
)
quantile = st.one_of(st.floats(min_value=0, max_value=1, exclude_min=True), st.sampled_from([0.5, 0.9, 0.99, 1.0]))


@settings(max_examples=300, deadline=None)
@given(observations=st.lists(latency, min_size=1, max_size=300), q=quantile)
def test_quantile_equals_brute_force_reference(observations, q):
    assert histogram_quantile(q, app_buckets(observations)) == reference_quantile(q, observations)


@settings(max_examples=300, deadline=None)
@given(observations=st.lists(latency, min_size=1, max_size=300), q=quantile)
def test_quantile_lies_in_the_bucket_of_the_empirical_quantile(observations, q):
    rank = q * len(observations)
    empirical = sorted(observations)[math.ceil(rank) - 1]  # the observation at rank q * n
    lower, upper = bucket_of(empirical)
    result = histogram_quantile(q, app_buckets(observations))
    if upper == INF:
        assert result == BOUNDS[-1]
    else:
        # lower + (upper - lower) * 1 may round one ulp past upper
        assert lower - 1e-12 <= result <= upper + 1e-12


@settings(max_examples=200, deadline=None)
@given(observations=st.lists(latency, min_size=1, max_size=200),
       qs=st.lists(st.floats(min_value=0, max_value=1, exclude_min=True), min_size=2, max_size=10))
def test_quantile_is_monotonic_in_q(observations, qs):
    buckets = app_buckets(observations)
    results = [histogram_quantile(q, buckets) for q in sorted(qs)]
    for smaller, larger in zip(results, results[1:]):
        assert smaller <= larger + 1e-12


@settings(max_examples=200, deadline=None)
@given(requests=st.lists(st.tuples(st.sampled_from([200, 201, 404, 499, 500, 502, 503, 599]), latency),
                         min_size=1, max_size=200),
       probes=st.integers(min_value=0, max_value=5))
def test_window_through_the_app_renderer(requests, probes):
    """Requests fed to the app's Metrics, rendered and parsed: the window counts exactly the
    application requests and 5xx, and its p99 is the reference's."""
    track = Track()
    before = track.sample(0.0)
    for status, seconds in requests:
        track.hit(1, "/", status, seconds)
    track.hit(probes, "/healthz", 200, 5.0).hit(probes, "/metrics", 500, 7.0).hit(probes, "/chaos", 200, 9.0)
    figures = window(before, track.sample(10.0))
    errors = sum(1 for status, _seconds in requests if status >= 500)
    assert figures["requests"] == len(requests)
    assert figures["errors"] == errors
    assert figures["error_rate_percent"] == errors * 100.0 / len(requests)
    assert figures["req_per_s"] == len(requests) / 10.0
    expected = reference_quantile(0.99, [seconds for _status, seconds in requests])
    assert figures["p99_latency_ms"] == round(expected * 1000, 6)


# ---------------------------------------------------------------------------------------------
# window() and combine()
# ---------------------------------------------------------------------------------------------


def window_from_buckets(buckets):
    """A window whose latency increase is exactly `buckets` (one request per count)."""
    older = Sample(0.0, uptime=1.0)
    newer = Sample(10.0, requests={("/", "200"): buckets[-1][1]}, buckets={"/": dict(buckets)}, uptime=2.0)
    return window(older, newer)


def test_window_counts_only_the_interval():
    track = Track().hit(10, seconds=4.0).hit(3, status=500, seconds=4.0)  # before the window
    older = track.sample(100.0)
    track.hit(60, seconds=0.003).hit(20, status=500, seconds=0.003)
    track.hit(5, "/healthz").hit(3, "/metrics").hit(2, "/chaos", method="POST")
    figures = window(older, track.sample(130.0))
    assert set(figures) == WINDOW_KEYS
    assert figures["requests"] == 80
    assert figures["errors"] == 20
    assert figures["error_rate_percent"] == 25.0
    assert figures["window_seconds"] == 30.0
    assert figures["req_per_s"] == 80 / 30.0
    assert figures["counter_reset"] is False
    # the slow requests before the window do not count: every request in it took 3 ms
    assert figures["p99_latency_ms"] == round(reference_quantile(0.99, [0.003] * 80) * 1000, 6)
    assert figures["p99_latency_ms"] == 4.95


def test_window_sums_methods_and_counts_unrouted_paths():
    track = Track()
    older = track.sample(0.0)
    track.hit(4, "/", 200, method="HEAD").hit(3, "/", 405, method="POST").hit(2, "/nope", 404)
    track.hit(1, "/wp-login.php", 503, method="PUT")
    figures = window(older, track.sample(5.0))
    assert figures["requests"] == 10  # "/" and "other"; 404 and 405 are not errors
    assert figures["errors"] == 1


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/chaos"])
def test_window_never_counts_probes_and_control_calls(path):
    track = Track()
    older = track.sample(0.0)
    track.hit(50, path, 500, 3.0)
    figures = window(older, track.sample(10.0))
    assert figures["requests"] == 0
    assert figures["errors"] == 0
    assert figures["error_rate_percent"] is None
    assert figures["p99_latency_ms"] is None
    assert figures["latency_buckets"] == []


def test_window_exclusions_can_be_changed():
    track = Track()
    older = track.sample(0.0)
    track.hit(5, "/healthz").hit(5, "/")
    assert window(older, track.sample(1.0), exclude_paths=())["requests"] == 10
    assert window(older, track.sample(1.0), exclude_paths=("/",))["requests"] == 5


def test_window_without_requests():
    track = Track().hit(10)
    older = track.sample(0.0)
    figures = window(older, track.sample(10.0))
    # the histogram's series exist, with no increase
    assert [count for _bound, count in figures["latency_buckets"]] == [0] * (len(BOUNDS) + 1)
    assert dict(figures, latency_buckets=[]) == dict(empty_window(), window_seconds=10.0, req_per_s=0.0)


def test_window_of_zero_or_negative_seconds_has_no_rate():
    track = Track()
    older = track.sample(50.0)
    track.hit(3)
    assert window(older, track.sample(50.0))["req_per_s"] is None
    figures = window(older, track.sample(40.0))  # the wall clock stepped back
    assert figures["window_seconds"] == 0.0
    assert figures["req_per_s"] is None
    assert figures["requests"] == 3


def test_counter_reset_by_restart_takes_the_new_process_values():
    old = Track().hit(500).hit(100, status=500)
    old.clock.now += 3600
    older = old.sample(0.0)
    new = Track().hit(700, seconds=0.2).hit(7, status=502, seconds=0.2)  # more requests, but a restart
    newer = new.sample(60.0)
    assert newer.uptime < older.uptime
    figures = window(older, newer)
    assert figures["counter_reset"] is True
    assert figures["requests"] == 707
    assert figures["errors"] == 7
    assert figures["p99_latency_ms"] == round(reference_quantile(0.99, [0.2] * 707) * 1000, 6)


def test_counter_reset_by_a_decreasing_counter_without_uptime():
    older = Sample(0.0, requests={("/", "200"): 100, ("/", "500"): 10})
    newer = Sample(10.0, requests={("/", "200"): 120, ("/", "500"): 4})
    figures = window(older, newer)
    assert figures["counter_reset"] is True
    assert (figures["requests"], figures["errors"]) == (124, 4)


def test_counter_reset_by_a_vanished_series():
    older = Sample(0.0, requests={("/", "200"): 100, ("/", "500"): 10}, uptime=50.0)
    newer = Sample(10.0, requests={("/", "200"): 101}, uptime=60.0)
    figures = window(older, newer)
    assert figures["counter_reset"] is True
    assert figures["requests"] == 101


def test_counter_reset_in_an_excluded_series_still_counts():
    older = Sample(0.0, requests={("/", "200"): 10, ("/healthz", "200"): 500}, uptime=50.0)
    newer = Sample(10.0, requests={("/", "200"): 12, ("/healthz", "200"): 3}, uptime=60.0)
    figures = window(older, newer)
    assert figures["counter_reset"] is True
    assert figures["requests"] == 12


def test_new_series_count_from_zero():
    older = Sample(0.0, requests={("/", "200"): 10}, uptime=50.0)
    newer = Sample(10.0, requests={("/", "200"): 12, ("/", "503"): 2}, uptime=60.0)
    figures = window(older, newer)
    assert (figures["counter_reset"], figures["requests"], figures["errors"]) == (False, 4, 2)


counters = st.dictionaries(st.tuples(st.sampled_from(["/", "other", "/healthz"]), st.sampled_from(["200", "500"])),
                           st.integers(min_value=0, max_value=1000), max_size=6)


@settings(max_examples=300, deadline=None)
@given(older=counters, newer=counters, uptimes=st.tuples(st.floats(0, 100), st.floats(0, 100)),
       times=st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)))
def test_window_is_never_negative(older, newer, uptimes, times):
    first = Sample(times[0], requests=older, uptime=uptimes[0])
    second = Sample(times[1], requests=newer, uptime=uptimes[1])
    figures = window(first, second)
    for name in ("requests", "errors", "window_seconds", "req_per_s", "error_rate_percent"):
        assert figures[name] is None or figures[name] >= 0, name
    expected_reset = uptimes[1] < uptimes[0] or any(value > newer.get(key, 0) for key, value in older.items())
    assert figures["counter_reset"] is expected_reset
    assert figures["errors"] <= figures["requests"]


def test_empty_window_has_the_window_shape():
    figures = empty_window()
    assert set(figures) == WINDOW_KEYS
    assert figures == {"requests": 0, "req_per_s": None, "errors": 0, "error_rate_percent": None,
                       "p99_latency_ms": None, "window_seconds": 0.0, "counter_reset": False,
                       "latency_buckets": []}


def test_combine_two_tracks():
    stable, canary = Track("stable", "1.0.0"), Track("canary", "2.0.0")
    stable_before, canary_before = stable.sample(0.0), canary.sample(1.0)
    stable.hit(90, seconds=0.003).hit(10, seconds=0.04)
    canary.hit(45, seconds=0.3).hit(5, status=500, seconds=0.3)
    stable_window = window(stable_before, stable.sample(30.0))
    canary_window = window(canary_before, canary.sample(31.0))
    total = combine([stable_window, canary_window])
    assert set(total) == WINDOW_KEYS
    assert (total["requests"], total["errors"]) == (150, 5)
    assert total["error_rate_percent"] == 5 * 100.0 / 150
    assert total["req_per_s"] == 100 / 30.0 + 50 / 30.0
    assert total["window_seconds"] == 30.0
    assert total["counter_reset"] is False
    merged = app_buckets([0.003] * 90 + [0.04] * 10 + [0.3] * 50)
    assert total["p99_latency_ms"] == round(histogram_quantile(0.99, merged) * 1000, 6)
    assert total["latency_buckets"] == [[metrics.format_bound(bound), count] for bound, count in merged]


def test_combine_edge_cases():
    assert combine([]) == empty_window()
    track = Track()
    older = track.sample(0.0)
    track.hit(7, status=503)
    only = window(older, track.sample(2.0))
    assert combine([only]) == only
    assert combine([only, empty_window()])["req_per_s"] == only["req_per_s"]
    assert combine([only, dict(empty_window(), counter_reset=True)])["counter_reset"] is True


def test_combine_accepts_module_output():
    """combine() reads windows as the module returns them: through JSON."""
    track = Track()
    older = track.sample(0.0)
    track.hit(20, seconds=0.07)
    figures = window(older, track.sample(4.0))
    assert combine([json.loads(json.dumps(figures))]) == figures


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


def test_parse_reads_the_app_gauges():
    track = Track("canary", "2.0.0-rc1").hit(3)
    sample = track.sample(123.5, chaos=2)
    assert sample.summary() == {"taken_at": 123.5, "uptime": 1.0, "mode": "canary", "chaos": "error",
                                "version": "2.0.0-rc1"}
    assert sample.requests == {("/", "200"): 3}
    assert sample.buckets["/"][INF] == 3
    assert sample.counts == {"/": 3}
    stable = Track("stable", "1.0.0").sample(0.0, chaos=1)
    assert (stable.mode, stable.chaos) == ("stable", "slow")


def test_parse_names_unknown_gauge_values_and_missing_ones():
    sample = parse("app_mode 7\nchaos_active NaN\n", 0.0)
    assert (sample.mode, sample.chaos, sample.uptime, sample.version) == ("unknown (7.0)", "unknown (NaN)", None, None)


def test_parse_rejects_a_bad_le_label():
    with pytest.raises(MetricsError, match="le label that is not a number"):
        parse('http_request_duration_seconds_bucket{path="/",le="fast"} 1\n', 0.0)


def test_sample_survives_the_state_file():
    track = Track().hit(4, seconds=12.0).hit(2, "/healthz").hit(1, status=500)
    older = track.sample(10.0)
    restored = Sample.from_dict(json.loads(json.dumps(older.to_dict())))
    assert restored.to_dict() == older.to_dict()
    track.hit(9)
    newer = track.sample(20.0)
    assert window(restored, newer) == window(older, newer)


@pytest.mark.parametrize("state", [None, {}, {"taken_at": "x"}, {"taken_at": 1, "requests": [["/"]], "histograms": {}},
                                   [], "sample"])
def test_damaged_state_is_a_metrics_error(state):
    with pytest.raises(MetricsError, match="^not a stored sample"):
        Sample.from_dict(state)


# ---------------------------------------------------------------------------------------------
# The fallback parser against prometheus_client
# ---------------------------------------------------------------------------------------------


def comparable(samples):
    # repr keeps 1 apart from 1.0 and makes NaN equal to NaN
    return [(name, labels, repr(value), repr(timestamp)) for name, labels, value, timestamp in samples]


def assert_parsers_agree(text):
    fallback = parse_samples_fallback(text)
    assert comparable(fallback) == comparable(parse_samples_client(text))
    return fallback


def app_output():
    track = Track("canary", 'v2 "quoted" \\ back\nslash')
    for method in APP.KNOWN_METHODS + ("other",):
        for path in APP.KNOWN_PATHS + ("/unknown",):
            track.app.observe(method, path, 200, 0.0)
    track.hit(30, status=500, seconds=0.07).hit(3, status=503, seconds=11.0).hit(1, seconds=0.005)
    return track.app.render(2)


def test_fallback_equals_client_on_the_app_output():
    samples = assert_parsers_agree(app_output())
    names = {name for name, _labels, _value, _timestamp in samples}
    assert names == {"http_requests_total", "http_request_duration_seconds_bucket", "http_request_duration_seconds_sum",
                     "http_request_duration_seconds_count", "app_uptime_seconds", "app_mode", "chaos_active", "app_info"}
    info = [labels for name, labels, _value, _timestamp in samples if name == "app_info"]
    assert info == [{"version": 'v2 "quoted" \\ back\nslash', "mode": "canary"}]


def test_parse_is_the_same_with_either_parser(monkeypatch):
    text = app_output()
    with_client = parse(text, 1.0).to_dict()
    monkeypatch.setitem(metrics._CLIENT, "parser", None)
    assert parse(text, 1.0).to_dict() == with_client


TRICKY = {
    "escaped-label-values": 'm{a="q\\"uote",b="back\\\\slash",c="new\\nline",d="keep\\tthis",e="\\\\\\""} 1\n',
    "braces-commas-equals-in-values": 'm{a="}",b="{",c=",",d="=",e="a # b"} 2\n',
    "nan-and-infinities": "a NaN\nb +Inf\nc -Inf\nd nan\ne inf\n",
    "numbers": "a 1\nb 1.0\nc -0\nd 1e3\ne 1.5E-3\nf +7\ng 1e400\n",
    "timestamps": "a 1 1700000000000\nb{x=\"y\"} 2.5 -5\nc 3 1.5\n",
    "comments-help-type": ("# just a comment\n#no space\n# HELP m Some \\\\ help \\n text\n# TYPE m gauge\nm 1\n"
                           "# HELP other_total x\n# TYPE other_total counter\nother_total{k=\"v\"} 4\n"),
    "blank-lines-and-indentation": "\n\n   a 1   \n\t\nb{x=\"1\"}\t2\n\n",
    "spaces-inside-braces": 'm{ a = "1" , b="2", } 3\nn {a="1"} 4\no{} 5\n',
    "counter-without-total-suffix": "# TYPE requests counter\nrequests 7\nrequests_total 8\n",
    "histogram-and-summary": ("# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n"
                              "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n"),
    "sample-outside-its-family": "# TYPE g gauge\ng 1\nstray 2\ng 3\n",
    "help-without-text": "# HELP\nm 1\n# HELP m\nm 2\n",
    "name-in-labels": '{__name__="m",a="b"} 1\n',
    "value-then-tab-timestamp": "m 1\t2\n",
    "several-fields-take-first-and-last": "m 1 2 3\n",
    "unicode-label-values": 'm{a="żółć ☃ 日本",b="\u2028\x85\r"} 1\n',
    "empty": "",
}


@pytest.mark.parametrize("text", list(TRICKY.values()), ids=list(TRICKY))
def test_fallback_equals_client_on_tricky_input(text):
    assert_parsers_agree(text)


def test_tricky_values_are_read_right():
    samples = parse_samples_fallback(TRICKY["escaped-label-values"])
    assert samples[0][1] == {"a": 'q"uote', "b": "back\\slash", "c": "new\nline", "d": "keep\\tthis", "e": '\\"'}
    values = [value for _name, _labels, value, _timestamp in parse_samples_fallback(TRICKY["nan-and-infinities"])]
    assert is_nan(values[0]) and values[1:3] == [INF, -INF]
    stamps = [stamp for _name, _labels, _value, stamp in parse_samples_fallback(TRICKY["timestamps"])]
    assert stamps == [1700000000.0, -0.005, 0.0015]
    names = [name for name, _labels, _value, _timestamp in parse_samples_fallback(TRICKY["counter-without-total-suffix"])]
    assert names == ["requests_total", "requests_total"]


@pytest.mark.parametrize("text", [
    "m\n", 'm{a="b"}\n', 'm{a="b} 1\n', 'm{a=b} 1\n', 'm{a="1",a="2"} 1\n', 'm{__reserved="1"} 1\n',
    "m 1_000\n", "m one\n", "# TYPE m\n", "# TYPE m nonsense\nm 1\n", '{"message": "Welcome"}\n',
    "<html><body>502 Bad Gateway</body></html>\n", 'm{a="1"} 2 x\n', '{a="1"} 2\n',
])
def test_both_parsers_reject_malformed_input(text):
    with pytest.raises(MetricsError):
        parse_samples_fallback(text)
    with pytest.raises(MetricsError):
        parse_samples_client(text)


def test_fallback_error_names_the_line():
    with pytest.raises(MetricsError, match=r"^line 3: .*'m\{a=b\} 1'$"):
        parse_samples_fallback("a 1\n\nm{a=b} 1\n")


def escape(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


label_values = st.text(max_size=40)


@settings(max_examples=500, deadline=None)
@given(values=st.lists(label_values, min_size=1, max_size=4),
       value=st.one_of(st.integers(min_value=-2 ** 63, max_value=2 ** 63), st.floats()),
       timestamp=st.one_of(st.none(), st.integers(min_value=-2 ** 45, max_value=2 ** 45)),
       spaced=st.booleans())
def test_fallback_equals_client_on_generated_label_values(values, value, timestamp, spaced):
    labels = ",".join('l%d="%s"' % (index, escape(text)) for index, text in enumerate(values))
    rendered = str(value) if isinstance(value, int) else metrics.format_bound(value)
    line = "m%s{%s} %s%s" % (" " if spaced else "", labels, rendered, "" if timestamp is None else " %d" % timestamp)
    samples = assert_parsers_agree("# TYPE m gauge\n" + line + "\n")
    assert samples[0][1] == {"l%d" % index: text for index, text in enumerate(values)}


@settings(max_examples=200, deadline=None)
@given(text=st.lists(st.sampled_from(list('m{}="\\, #\n\t1.aeE+-_N') + ["Inf", "NaN", "le", "# TYPE ", "# HELP "]),
                     max_size=30).map("".join))
# prometheus_client reads TYPE as the second field (the first is '#"\t"#', quotes and all).
@example(text='#"\t"# TYPE ')
def test_fallback_never_accepts_what_the_client_rejects_differently(text):
    """On arbitrary junk either both parsers fail, or the fallback fails (it is the stricter),
    or both succeed with the same samples."""
    try:
        client = parse_samples_client(text)
    except MetricsError:
        client = None
    try:
        fallback = parse_samples_fallback(text)
    except MetricsError:
        fallback = None
    if fallback is None:
        return
    assert client is not None, "the fallback accepted text prometheus_client rejects: %r" % text
    assert comparable(fallback) == comparable(client)
