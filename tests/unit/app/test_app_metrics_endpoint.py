"""GET /metrics against real traffic: exact counts, histogram consistency, bounded cardinality."""

import random
import string
import time
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families


def families(server):
    reply = server.request("GET", "/metrics")
    assert reply.status == 200
    return {family.name: family for family in text_string_to_metric_families(reply.body.decode())}


def http_series(server):
    found = families(server)
    return {(s.name, tuple(sorted(s.labels.items())))
            for name in ("http_requests", "http_request_duration_seconds") for s in found[name].samples}


def test_counts_match_the_requests_made(canary):
    for _attempt in range(7):
        assert canary.request("GET", "/").status == 200
    for path in ("/x", "/y", "/z?q=1"):
        assert canary.request("GET", path).status == 404
    assert canary.post_chaos(b"{}").status == 400
    assert canary.post_chaos({"mode": "recover"}).status == 200
    assert canary.request("HEAD", "/").status == 200
    assert canary.request("DELETE", "/healthz").status == 405
    assert canary.request("GET", "/healthz").status == 200

    counters = {tuple(sorted(s.labels.items())): s.value
                for s in families(canary)["http_requests"].samples if s.name == "http_requests_total"}
    assert counters == {
        (("method", "GET"), ("path", "/"), ("status_code", "200")): 7,
        (("method", "GET"), ("path", "other"), ("status_code", "404")): 3,
        (("method", "POST"), ("path", "/chaos"), ("status_code", "400")): 1,
        (("method", "POST"), ("path", "/chaos"), ("status_code", "200")): 1,
        (("method", "HEAD"), ("path", "/"), ("status_code", "200")): 1,
        (("method", "other"), ("path", "/healthz"), ("status_code", "405")): 1,
        (("method", "GET"), ("path", "/healthz"), ("status_code", "200")): 1,
    }


def test_metrics_scrapes_are_counted_after_they_are_served(stable):
    assert stable.value("http_requests_total", method="GET", path="/metrics", status_code="200") is None
    assert stable.value("http_requests_total", method="GET", path="/metrics", status_code="200") == 1
    assert stable.value("http_requests_total", method="GET", path="/metrics", status_code="200") == 2


def test_histogram_is_cumulative_and_consistent_with_the_counter(canary):
    canary.post_chaos({"mode": "slow", "duration": 0.3})
    for _attempt in range(3):
        canary.request("GET", "/")
    canary.post_chaos({"mode": "recover"})
    for _attempt in range(5):
        canary.request("GET", "/")
        canary.request("GET", "/healthz")
    canary.request("GET", "/nope")

    found = families(canary)
    requests_by_route = defaultdict(float)
    for sample in found["http_requests"].samples:
        if sample.name == "http_requests_total":
            requests_by_route[(sample.labels["method"], sample.labels["path"])] += sample.value

    buckets = defaultdict(list)
    counts, sums = {}, {}
    for sample in found["http_request_duration_seconds"].samples:
        route = (sample.labels["method"], sample.labels["path"])
        if sample.name.endswith("_bucket"):
            buckets[route].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            counts[route] = sample.value
        elif sample.name.endswith("_sum"):
            sums[route] = sample.value

    assert set(buckets) == set(counts) == set(sums) == set(requests_by_route)
    for route, series in buckets.items():
        bounds = [bound for bound, _value in series]
        values = [value for _bound, value in series]
        assert bounds == sorted(bounds) and bounds[-1] == float("inf")
        assert values == sorted(values), f"{route} buckets are not cumulative: {values}"
        assert values[-1] == counts[route] == requests_by_route[route]

    root = dict(buckets[("GET", "/")])
    assert counts[("GET", "/")] == 8
    assert root[0.25] == 5, "the five fast requests fall below 0.25 s"
    assert root[0.5] == 8, "the three slowed requests (0.3 s) fall below 0.5 s"
    assert 0.9 <= sums[("GET", "/")] < 2.0


def test_gauges_follow_mode_and_chaos(canary, stable):
    assert canary.value("app_mode") == 1
    assert stable.value("app_mode") == 0
    assert canary.value("app_info", version="2.0.0-rc1", mode="canary") == 1
    assert stable.value("app_info", version="1.0.0", mode="stable") == 1
    assert canary.value("chaos_active") == 0
    canary.post_chaos({"mode": "slow", "duration": 0})
    assert canary.value("chaos_active") == 1
    canary.post_chaos({"mode": "error", "rate": 0})
    assert canary.value("chaos_active") == 2
    canary.post_chaos({"mode": "recover"})
    assert canary.value("chaos_active") == 0
    assert stable.value("chaos_active") == 0


def test_uptime_gauge_increases(stable):
    first = stable.value("app_uptime_seconds")
    assert first >= 0
    time.sleep(0.05)
    assert stable.value("app_uptime_seconds") >= first + 0.04


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_random_paths_do_not_add_series(stable, method):
    stable.request(method, "/warm-up")
    before = http_series(stable)
    rng = random.Random(7)
    conn = stable.connection()
    try:
        for _attempt in range(500):
            path = "/r" + "".join(rng.choices(string.ascii_letters + string.digits + "/-._~%", k=rng.randint(1, 40)))
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            assert response.status == 404
    finally:
        conn.close()
    after = http_series(stable)
    # The scrape that produced `before` adds the /metrics series; nothing else may appear.
    new = {series for series in after - before if ("path", "/metrics") not in series[1]}
    assert new == set()
    assert stable.value("http_requests_total", method=method if method == "GET" else "other",
                        path="other", status_code="404") == 501


def test_snapshots_give_the_counters_as_they_were(appmod, clock):
    """A Metrics with a clock we move: the newest snapshot at least N s old is the one served,
    with its own uptime and its age, and snapshots older than the history are dropped."""
    metrics = appmod.Metrics("canary", "2.0.0", clock=clock)
    metrics.observe("GET", "/", 200, 0.003)
    metrics.take_snapshot()                      # t=1000: 1 request
    clock.now += 1
    metrics.observe("GET", "/", 500, 0.2)
    metrics.take_snapshot()                      # t=1001: 2 requests
    clock.now += 5.5                             # t=1006.5
    assert metrics.snapshot_ago(7) is None
    age, requests, _latency = metrics.snapshot_ago(5)
    assert age == 5.5 and sum(requests.values()) == 2
    age, requests, _latency = metrics.snapshot_ago(6)
    assert age == 6.5 and sum(requests.values()) == 1

    text = metrics.render(0, metrics.snapshot_ago(6))
    found = {family.name: family for family in text_string_to_metric_families(text)}
    (uptime,) = found["app_uptime_seconds"].samples
    assert uptime.value == pytest.approx(0.0)    # the process started at t=1000
    (sample_age,) = found["app_snapshot_age_seconds"].samples
    assert sample_age.value == 6.5
    counts = {s.labels["status_code"]: s.value for s in found["http_requests"].samples
              if s.name == "http_requests_total"}
    assert counts == {"200": 1}
    assert "app_snapshot_age_seconds" not in metrics.render(0)

    clock.now += appmod.HISTORY_SECONDS
    metrics.take_snapshot()
    assert [round(clock.now - taken, 1) for taken, _r, _l in metrics._snapshots] == [0.0]


def test_metrics_ago_over_http(stable):
    """The running app snapshots its counters every second: ?ago=1 after a second and a half
    serves the earlier counts; bad queries and a history too short are refused, not guessed."""
    stable.request("GET", "/")
    time.sleep(1.5)
    for _attempt in range(4):
        stable.request("GET", "/")
    then = stable.request("GET", "/metrics?ago=1")
    now = stable.request("GET", "/metrics")
    assert then.status == 200 and now.status == 200

    def root_count(reply):
        return sum(s.value for family in text_string_to_metric_families(reply.body.decode())
                   for s in family.samples
                   if s.name == "http_requests_total" and s.labels["path"] == "/")

    assert root_count(then) in (0, 1) and root_count(now) == 5
    assert b"app_snapshot_age_seconds" in then.body and b"app_snapshot_age_seconds" not in now.body

    too_old = stable.request("GET", "/metrics?ago=500")
    assert too_old.status == 404 and b"no snapshot 500 s old yet" in too_old.body
    for query in ("ago=0", "ago=-1", "ago=601", "ago=x", "since=5", "ago=nan"):
        bad = stable.request("GET", "/metrics?" + query)
        assert bad.status == 400, (query, bad.status)
        assert b"give ago=SECONDS" in bad.body
