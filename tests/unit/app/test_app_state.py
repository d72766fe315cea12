"""Config, ChaosState and Metrics without sockets."""

import random
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families


# -- Config -------------------------------------------------------------------

def test_config_defaults_from_an_empty_environment(appmod):
    config = appmod.Config.from_env({})
    assert (config.mode, config.version, config.port, config.log_dir) == ("stable", "1.0.0", 3000, "/app/logs")
    assert config.host == "0.0.0.0"
    assert config.socket_timeout == 5.0


def test_config_reads_the_environment(appmod):
    config = appmod.Config.from_env({"MODE": "Canary", "APP_VERSION": "2.3.4", "APP_PORT": "8081",
                                     "LOG_DIR": "/tmp/x"})
    assert (config.mode, config.version, config.port, config.log_dir) == ("canary", "2.3.4", 8081, "/tmp/x")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODE": "blue"}, "MODE must be 'stable' or 'canary', got 'blue'"),
        ({"APP_PORT": "http"}, "APP_PORT must be an integer from 0 to 65535, got 'http'"),
        ({"APP_PORT": "70000"}, "APP_PORT must be an integer from 0 to 65535, got '70000'"),
        ({"APP_PORT": "-1"}, "APP_PORT must be an integer from 0 to 65535, got '-1'"),
    ],
)
def test_config_rejects_bad_environment(appmod, env, message):
    with pytest.raises(ValueError) as excinfo:
        appmod.Config.from_env(env)
    assert str(excinfo.value) == message


# -- ChaosState ---------------------------------------------------------------

def test_chaos_state_starts_inactive(appmod):
    state = appmod.ChaosState()
    assert state.snapshot() == {"mode": "none"}
    assert state.code == 0
    assert state.draw() == (0.0, False)


def test_chaos_slow_delays_every_draw(appmod):
    state = appmod.ChaosState()
    assert state.apply({"mode": "slow", "duration": 2}) == {"mode": "slow", "duration": 2}
    assert state.code == 1
    assert [state.draw() for _draw in range(5)] == [(2.0, False)] * 5


@pytest.mark.parametrize(("rate", "failures"), [(0, 0), (1, 1000)])
def test_chaos_error_rate_bounds_are_exact(appmod, rate, failures):
    state = appmod.ChaosState()
    state.apply({"mode": "error", "rate": rate})
    assert state.code == 2
    assert sum(state.draw()[1] for _draw in range(1000)) == failures


def test_chaos_error_rate_is_the_failing_fraction(appmod):
    state = appmod.ChaosState(rng=random.Random(1234))
    state.apply({"mode": "error", "rate": 0.3})
    draws = [state.draw() for _draw in range(10000)]
    assert all(delay == 0.0 for delay, _fail in draws)
    assert 2800 <= sum(fail for _delay, fail in draws) <= 3200


def test_chaos_recover_returns_to_none(appmod):
    state = appmod.ChaosState()
    state.apply({"mode": "error", "rate": 1})
    assert state.apply({"mode": "recover"}) == {"mode": "none"}
    assert state.code == 0
    assert state.draw() == (0.0, False)


def test_chaos_snapshot_is_a_copy(appmod):
    state = appmod.ChaosState()
    spec = {"mode": "slow", "duration": 1}
    state.apply(spec)
    spec["duration"] = 30
    state.snapshot()["duration"] = 30
    assert state.snapshot() == {"mode": "slow", "duration": 1}


# -- Metrics ------------------------------------------------------------------

def parse(text):
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    return families, samples


@pytest.mark.parametrize(
    ("method", "path", "method_label", "path_label"),
    [
        ("GET", "/", "GET", "/"),
        ("GET", "/?utm=1", "GET", "/"),
        ("HEAD", "/healthz", "HEAD", "/healthz"),
        ("GET", "/metrics", "GET", "/metrics"),
        ("POST", "/chaos", "POST", "/chaos"),
        ("GET", "/healthz/", "GET", "other"),
        ("GET", "/wp-login.php", "GET", "other"),
        ("GET", "", "GET", "other"),
        ("DELETE", "/", "other", "/"),
        ("get", "/", "other", "/"),
        ("-", "", "other", "other"),
    ],
)
def test_labels_are_bounded(appmod, method, path, method_label, path_label):
    metrics = appmod.Metrics("stable", "1.0.0")
    metrics.observe(method, path, 200, 0.001)
    _families, samples = parse(metrics.render())
    key = ("http_requests_total", (("method", method_label), ("path", path_label), ("status_code", "200")))
    assert samples[key] == 1


def test_render_families_types_and_gauges(appmod, clock):
    metrics = appmod.Metrics("canary", "2.0.0", clock=clock)
    clock.now += 12.5
    families, samples = parse(metrics.render(chaos_code=2))
    assert {name: f.type for name, f in families.items()} == {
        "http_requests": "counter",
        "http_request_duration_seconds": "histogram",
        "app_uptime_seconds": "gauge",
        "app_mode": "gauge",
        "chaos_active": "gauge",
        "app_info": "gauge",
    }
    assert samples[("app_uptime_seconds", ())] == 12.5
    assert samples[("app_mode", ())] == 1
    assert samples[("chaos_active", ())] == 2
    assert samples[("app_info", (("mode", "canary"), ("version", "2.0.0")))] == 1
    assert not families["http_requests"].samples


def test_app_mode_is_zero_for_stable(appmod):
    _families, samples = parse(appmod.Metrics("stable", "1.0.0").render())
    assert samples[("app_mode", ())] == 0
    assert samples[("chaos_active", ())] == 0


def test_every_family_has_help_and_type_lines(appmod):
    text = appmod.Metrics("stable", "1").render()
    for name in ("http_requests_total", "http_request_duration_seconds", "app_uptime_seconds", "app_mode",
                 "chaos_active", "app_info"):
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} " in text
    assert text.endswith("\n")


def test_histogram_buckets_boundaries_sum_and_count(appmod):
    metrics = appmod.Metrics("stable", "1.0.0")
    observations = [0.001, 0.005, 0.0051, 0.3, 1.0, 7.0, 42.0]
    for seconds in observations:
        metrics.observe("GET", "/", 200, seconds)
    _families, samples = parse(metrics.render())
    labels = (("method", "GET"), ("path", "/"))
    bucket = {le: samples[("http_request_duration_seconds_bucket", tuple(sorted(labels + (("le", le),))))]
              for le in ("0.005", "0.01", "0.25", "0.5", "1.0", "5.0", "10.0", "+Inf")}
    assert bucket == {"0.005": 2, "0.01": 3, "0.25": 3, "0.5": 4, "1.0": 5, "5.0": 5, "10.0": 6, "+Inf": 7}
    assert samples[("http_request_duration_seconds_count", labels)] == 7
    assert samples[("http_request_duration_seconds_sum", labels)] == pytest.approx(sum(observations))


def test_histogram_exposes_exactly_the_contract_buckets(appmod):
    metrics = appmod.Metrics("stable", "1.0.0")
    metrics.observe("GET", "/", 200, 0.01)
    families, _samples = parse(metrics.render())
    bounds = [s.labels["le"] for s in families["http_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert [float(b) for b in bounds] == [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")]


def test_status_codes_are_separate_series_and_histogram_is_per_method_and_path(appmod):
    metrics = appmod.Metrics("stable", "1.0.0")
    for status in (200, 200, 500, 404):
        metrics.observe("GET", "/", status, 0.01)
    _families, samples = parse(metrics.render())
    counters = {dict(k[1])["status_code"]: v for k, v in samples.items() if k[0] == "http_requests_total"}
    assert counters == {"200": 2, "500": 1, "404": 1}
    counts = [v for k, v in samples.items() if k[0] == "http_request_duration_seconds_count"]
    assert counts == [4]


def test_label_values_are_escaped(appmod):
    version = 'v1 "quoted" \\ back\nslash'
    _families, samples = parse(appmod.Metrics("stable", version).render())
    assert samples[("app_info", (("mode", "stable"), ("version", version)))] == 1


def test_observe_is_thread_safe(appmod):
    metrics = appmod.Metrics("stable", "1.0.0")

    def hammer():
        for _observation in range(2000):
            metrics.observe("GET", "/", 200, 0.002)

    threads = [threading.Thread(target=hammer) for _thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _families, samples = parse(metrics.render())
    labels = (("method", "GET"), ("path", "/"))
    assert samples[("http_requests_total", labels + (("status_code", "200"),))] == 16000
    assert samples[("http_request_duration_seconds_count", labels)] == 16000
    assert samples[("http_request_duration_seconds_bucket", (("le", "0.005"),) + labels)] == 16000
