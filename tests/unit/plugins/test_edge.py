"""The edge log reader (_edge.py): which lines of which files count in a window, per slot.

Lines are written here in exactly nginx's format (roles/swiftdeploy/templates/nginx.conf.j2,
log_format swiftdeploy_edge); test_nginx_format_is_what_the_reader_reads checks the template
still says so.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import time

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _edge as edge
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import histogram_quantile

ROOT = pathlib.Path(__file__).resolve().parents[3]
NOW = 1765100000.0  # a bucket boundary: 17651000 * 100


def line(at, slot="blue", status=200, seconds=0.002, uri="/", upstream="200"):
    return "%.3f\t%s\t%s\t%.3f\t%.3f\t%s\t%s\n" % (at, slot, status, seconds, seconds, upstream, uri)


def write(directory, lines, partial=""):
    """Put each line in the file of its own bucket, as nginx does; `partial` ends the newest."""
    by_bucket = {}
    for text in lines:
        by_bucket.setdefault(edge.bucket_of(float(text.split("\t", 1)[0])), []).append(text)
    for bucket, texts in by_bucket.items():
        (directory / ("edge-%d.log" % bucket)).write_text("".join(texts))
    if partial:
        newest = max(by_bucket) if by_bucket else edge.bucket_of(NOW)
        with open(directory / ("edge-%d.log" % newest), "a") as handle:
            handle.write(partial)


def requests_of(result):
    return dict((slot, figures["requests"]) for slot, figures in result["slots"].items())


# (name, lines, window, life_starts, expected requests per slot, expected errors per slot)
WINDOWS = [
    ("empty log", [], 30, None, {"blue": 0, "green": 0}, {"blue": 0, "green": 0}),
    ("inside the window", [line(NOW - 10), line(NOW - 1, "green")], 30, None,
     {"blue": 1, "green": 1}, {"blue": 0, "green": 0}),
    ("before the window", [line(NOW - 31), line(NOW - 30)], 30, None, {"blue": 0, "green": 0}, {"blue": 0, "green": 0}),
    ("the window's end is in it", [line(NOW)], 30, None, {"blue": 1, "green": 0}, {"blue": 0, "green": 0}),
    ("after now (a clock stepped back)", [line(NOW + 5)], 30, None, {"blue": 0, "green": 0}, {"blue": 0, "green": 0}),
    ("across buckets and the 600 s maximum", [line(NOW - 599.5), line(NOW - 350), line(NOW - 150), line(NOW - 50)],
     600, None, {"blue": 4, "green": 0}, {"blue": 0, "green": 0}),
    ("only 5xx are errors", [line(NOW - 5, status=s) for s in (200, 404, 499, 500, 502, 504, 599)], 30, None,
     {"blue": 7, "green": 0}, {"blue": 4, "green": 0}),
    ("internal paths are not traffic",
     [line(NOW - 5, uri=u) for u in ("/", "/healthz", "/metrics", "/chaos", "/chaos?mode=error", "/metrics/x",
                                     "/healthzz", "/?a=/metrics")],
     30, None, {"blue": 4, "green": 0}, {"blue": 0, "green": 0}),
    ("a younger slot counts from its start", [line(NOW - 20, "green"), line(NOW - 5, "green"), line(NOW - 20)],
     30, {"green": NOW - 10}, {"blue": 1, "green": 1}, {"blue": 0, "green": 0}),
    ("an older start changes nothing", [line(NOW - 20, "green")], 30, {"green": NOW - 100},
     {"blue": 0, "green": 1}, {"blue": 0, "green": 0}),
    ("a fresh baseline is a slot of its own", [line(NOW - 5, "baseline"), line(NOW - 4, "baseline", status=503),
                                               line(NOW - 3, "green")],
     30, None, {"blue": 0, "green": 1, "baseline": 2}, {"blue": 0, "green": 0, "baseline": 1}),
]


@pytest.mark.parametrize("name, lines, window, starts, requests, errors", WINDOWS, ids=[row[0] for row in WINDOWS])
def test_windows(tmp_path, name, lines, window, starts, requests, errors):
    write(tmp_path, lines)
    result = edge.read_window(str(tmp_path), window, NOW, starts)
    # The fresh baseline's slot (analysis.baseline: fresh) is always read; a stack without one has none of it.
    assert requests_of(result) == dict({"baseline": 0}, **requests)
    assert dict((slot, figures["errors"]) for slot, figures in result["slots"].items()) == dict({"baseline": 0}, **errors)


def test_figures_and_window_seconds(tmp_path):
    write(tmp_path, [line(NOW - 20, seconds=0.003)] * 90 + [line(NOW - 20, seconds=0.2)] * 8
          + [line(NOW - 20, status=502, seconds=0.4)] * 2 + [line(NOW - 3, "green")])
    result = edge.read_window(str(tmp_path), 30, NOW, {"green": NOW - 10})
    blue, green = result["slots"]["blue"], result["slots"]["green"]
    assert result["window_seconds"] == 30
    assert (blue["requests"], blue["errors"], blue["error_rate_percent"]) == (100, 2, 2.0)
    assert blue["window_seconds"] == 30 and blue["req_per_s"] == pytest.approx(100 / 30)
    # The app's bounds: 90 in (0, 0.005], 8 in (0.1, 0.25], 2 in (0.25, 0.5]: p99 375 ms as in docs/metrics.md.
    assert blue["p99_latency_ms"] == 375.0
    assert blue["latency_buckets"][0] == ["0.005", 90] and blue["latency_buckets"][-1] == ["+Inf", 100]
    assert histogram_quantile(0.99, [(float(b), n) for b, n in blue["latency_buckets"]]) == 0.375
    assert green["window_seconds"] == 10 and green["requests"] == 1
    assert blue["counter_reset"] is False


def test_no_requests_means_no_rates():
    result = edge.read_window("/nonexistent/edge", 30, NOW)
    assert result["slots"]["blue"] == dict(result["slots"]["blue"], requests=0, error_rate_percent=None,
                                           p99_latency_ms=None, req_per_s=0.0, latency_buckets=[])
    assert result["files"] == 0


@pytest.mark.parametrize("garbage", [
    "", "\n", "not a line\n", "x" * 5000 + "\n", "1765099990.000\tred\t200\t0.001\t0.001\t200\t/\n",
    "abc\tblue\t200\t0.001\t0.001\t200\t/\n", "1765099990.000\tblue\t200\t0.001\n",
    "1765099990.000\tblue\t200\t0.001\t0.001\t200\t/\textra\n", "\x00\xff\tblue\n",
])
def test_garbage_lines_are_skipped_not_counted(tmp_path, garbage):
    write(tmp_path, [line(NOW - 10)])
    with open(tmp_path / ("edge-%d.log" % edge.bucket_of(NOW - 10)), "a", encoding="latin-1") as handle:
        handle.write(garbage)
        handle.write(line(NOW - 9))
    result = edge.read_window(str(tmp_path), 30, NOW)
    assert requests_of(result)["blue"] == 2
    assert result["skipped"] == (1 if garbage.strip() else 0)


def test_an_unreadable_latency_counts_as_a_request_without_a_bucket(tmp_path):
    write(tmp_path, [line(NOW - 5)] + ["%.3f\tblue\t502\t-\t-\t-\t/\n" % (NOW - 4)])
    blue = edge.read_window(str(tmp_path), 30, NOW)["slots"]["blue"]
    assert (blue["requests"], blue["errors"], blue["latency_buckets"][-1]) == (2, 1, ["+Inf", 1])


def test_upstream_time_of_retries_takes_the_first_and_falls_back_to_request_time(tmp_path):
    write(tmp_path, ["%.3f\tblue\t200\t0.300\t0.002, 0.001\t502, 200\t/\n" % (NOW - 5),
                     "%.3f\tblue\t504\t0.300\t-\t-\t/\n" % (NOW - 5)])
    buckets = dict(edge.read_window(str(tmp_path), 30, NOW)["slots"]["blue"]["latency_buckets"])
    assert buckets["0.005"] == 1 and buckets["0.25"] == 1 and buckets["0.5"] == 2


def test_a_partial_last_line_is_left_for_the_next_read(tmp_path):
    write(tmp_path, [line(NOW - 10)], partial=line(NOW - 2)[:20])
    result = edge.read_window(str(tmp_path), 30, NOW)
    assert requests_of(result)["blue"] == 1 and result["partial"] == 1
    with open(tmp_path / ("edge-%d.log" % edge.bucket_of(NOW - 10)), "a") as handle:
        handle.write(line(NOW - 2)[20:])
    assert requests_of(edge.read_window(str(tmp_path), 30, NOW))["blue"] == 2


def test_lines_longer_than_a_chunk_and_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "CHUNK", 7)
    write(tmp_path, [line(NOW - 10 + i * 0.001) for i in range(50)] + [line(NOW - 1, uri="/" + "a" * 100)])
    assert requests_of(edge.read_window(str(tmp_path), 30, NOW))["blue"] == 51


def test_the_rotation_boundary_is_read_from_both_files(tmp_path):
    boundary = NOW - 300  # a bucket boundary
    write(tmp_path, [line(boundary - 0.001), line(boundary), line(boundary + 0.001)])
    assert len(os.listdir(tmp_path)) == 2
    assert requests_of(edge.read_window(str(tmp_path), 300.0005, NOW))["blue"] == 2
    assert requests_of(edge.read_window(str(tmp_path), 301, NOW))["blue"] == 3


def test_files_outside_the_window_are_not_opened(tmp_path):
    write(tmp_path, [line(NOW - 1000), line(NOW - 10)])
    (tmp_path / "edge-1.log").write_text(line(NOW - 10))  # a bucket of 1970: never read
    (tmp_path / "notes.txt").write_text(line(NOW - 10))
    result = edge.read_window(str(tmp_path), 30, NOW)
    assert result["files"] == 1 and requests_of(result)["blue"] == 1


def test_a_bucket_in_the_future_counts_nothing(tmp_path):
    # nginx's clock ran ahead (or this one went back): those lines are not in the window.
    write(tmp_path, [line(NOW + 500), line(NOW - 5)])
    result = edge.read_window(str(tmp_path), 30, NOW)
    assert requests_of(result)["blue"] == 1 and result["future"] == 1


def test_prune_keeps_what_the_longest_window_needs(tmp_path):
    write(tmp_path, [line(NOW - age) for age in (5, 150, 650, 750, 801, 950, 1000, 5000)])
    gone = edge.prune(str(tmp_path), NOW)
    # A file goes once its bucket ended more than KEEP_SECONDS (800 s) ago.
    assert gone == ["edge-%d.log" % edge.bucket_of(NOW - age) for age in (5000, 950)]
    left = sorted(int(re.search(r"[0-9]+", name).group()) for name in os.listdir(tmp_path))
    assert left == sorted(edge.bucket_of(NOW - age) for age in (5, 150, 650, 750, 801))
    assert requests_of(edge.read_window(str(tmp_path), 600, NOW))["blue"] == 2
    assert requests_of(edge.read_window(str(tmp_path), 600, NOW - 200))["blue"] == 2  # 650 and 750 s ago


def test_prune_leaves_a_file_it_may_not_delete(tmp_path):
    write(tmp_path, [line(NOW - 5000)])

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    assert edge.prune(str(tmp_path), NOW, remove=refuse) == []
    assert len(os.listdir(tmp_path)) == 1


def test_an_unreadable_directory_names_it(tmp_path, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(edge.os, "listdir", refuse)
    with pytest.raises(edge.EdgeError, match="cannot read the edge log directory %s: Permission denied; " % tmp_path):
        edge.read_window(str(tmp_path), 30, NOW)


class Clock(object):
    def __init__(self, now):
        self.now, self.slept = now, []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


# (name, canary started seconds ago or None, window, expected waits, source, its window, its requests)
WAITS = [
    ("an old canary: no wait", 100, 30, [], "edge", 30, 1),
    ("exactly a window old: no wait", 30, 30, [], "edge", 30, 1),
    ("a young canary is waited for", 12, 30, [18], "edge-waited", 30, 2),
    ("just started: its life only", 0, 30, [30], "edge-waited", 30, 1),
    ("start unknown: no wait", None, 30, [], "edge", 30, 1),
    ("a start in the future waits one window at most", -50, 30, [30], "edge-waited", 0, 0),
]


@pytest.mark.parametrize("name, age, window, slept, source, seconds, requests", WAITS, ids=[row[0] for row in WAITS])
def test_a_young_canary_is_waited_for_and_measured_over_its_life(tmp_path, name, age, window, slept, source,
                                                                 seconds, requests):
    clock = Clock(NOW)
    starts = {} if age is None else {"green": NOW - age}
    # One request before the judge starts, one during its wait (in the future until then).
    write(tmp_path, [line(NOW - 1, "green"), line(NOW + 10, "green")])
    result = edge.measure(str(tmp_path), window, starts, ["green"], clock=clock.time, sleep=clock.sleep)
    assert clock.slept == pytest.approx(slept)
    assert (result["window_source"], result["waited_seconds"]) == (source, round(sum(slept), 3))
    green = result["slots"]["green"]
    assert (green["window_seconds"], green["requests"]) == (pytest.approx(seconds), requests)
    assert set(result["messages"]) == {"blue", "green", "baseline"}


def test_the_stable_slot_is_not_waited_for(tmp_path):
    clock = Clock(NOW)
    result = edge.measure(str(tmp_path), 30, {"blue": NOW - 1, "green": NOW - 100}, ["green"],
                          clock=clock.time, sleep=clock.sleep)
    assert clock.slept == [] and result["slots"]["blue"]["window_seconds"] == 1


@pytest.mark.parametrize("text, expected", [
    ("2025-12-07T09:33:20Z", 1765100000.0),
    ("2025-12-07T09:33:20.123456789Z", 1765100000.123456789),
    ("2025-12-07T11:33:20.5+02:00", 1765100000.5),
    ("2025-12-07T04:33:20-05:00", 1765100000.0),
    ("0001-01-01T00:00:00Z", None),
    ("", None),
    (None, None),
    ("yesterday", None),
])
def test_docker_start_times(text, expected):
    assert edge.parse_started_at(text) == (pytest.approx(expected) if expected else None)


class Engine(object):
    def __init__(self, entries, started):
        self.entries, self.started = entries, started

    def ps(self, project):
        return self.entries

    def inspect(self, container):
        return {"State": {"StartedAt": self.started[container]}}


def test_life_starts_of_running_slot_containers_only():
    engine = Engine([{"Service": "app-blue", "ID": "b", "State": "running"},
                     {"Service": "app-green", "ID": "g", "State": "exited"},
                     {"Service": "nginx", "ID": "n", "State": "running"}],
                    {"b": "2025-12-07T09:33:20Z", "g": "2025-12-07T09:33:20Z", "n": "2025-12-07T09:33:20Z"})
    assert edge.life_starts(engine, "/p", {"blue": "app-blue", "green": "app-green"}) == {"blue": 1765100000.0}


@pytest.mark.parametrize("owner, mode", [(None, None), (0, 0o700), (101, 0o755)])
def test_the_directory_is_made_for_nginx(tmp_path, monkeypatch, owner, mode):
    given = []
    monkeypatch.setattr(edge.os, "chown", lambda path, uid, gid: given.append((uid, gid)))
    if owner is not None:
        (tmp_path / "edge").mkdir(mode=mode)
    assert edge.ensure_directory(str(tmp_path)) is None
    assert (tmp_path / "edge").stat().st_mode & 0o7777 == 0o755
    assert given == ([] if os.getuid() == 101 else [(101, 101)])


def test_a_directory_the_user_cannot_give_to_nginx_is_said(tmp_path, monkeypatch):
    def refuse(path, uid, gid):
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(edge.os, "chown", refuse)
    problem = edge.ensure_directory(str(tmp_path))
    assert problem == ("%s/edge is not owned by nginx's uid 101 and the remote user cannot give it (run as root, or "
                       "`chown 101:101 %s/edge`); nginx cannot write the edge log" % (tmp_path, tmp_path))


def test_a_symbolic_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "edge").symlink_to(tmp_path / "elsewhere")
    assert "is a symbolic link" in edge.ensure_directory(str(tmp_path))


def test_the_bounds_are_the_apps():
    spec = importlib.util.spec_from_file_location("swiftdeploy_app", ROOT / "app" / "swiftdeploy_app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert edge.BUCKETS == app.BUCKETS
    assert set(app.KNOWN_PATHS) - {"/"} == set(path.decode() for path in edge.EXCLUDED_PATHS)


def test_nginx_format_is_what_the_reader_reads():
    template = (ROOT / "roles" / "swiftdeploy" / "templates" / "nginx.conf.j2").read_text()
    fields = re.search(r"log_format swiftdeploy_edge '([^']*)';", template).group(1).split("\\t")
    assert fields == ["$msec", "$swiftdeploy_slot", "$status", "$request_time", "$upstream_response_time",
                      "$upstream_status", "$request_uri"]
    assert len(fields) == edge.FIELDS
    assert "edge-$swiftdeploy_edge_bucket.log swiftdeploy_edge;" in template


def test_check_mode_deletes_nothing(tmp_path):
    now = time.time()  # measure_option reads the real clock
    write(tmp_path, [line(now - 5000), line(now - 5)])
    options = {"path": str(tmp_path), "window_seconds": 30.0, "project": None, "services": {}, "wait_for_canary": False}
    checked = edge.measure_option(options, None, check_mode=True)
    assert checked["pruned"] == 0 and len(os.listdir(tmp_path)) == 2
    assert edge.measure_option(options, None)["pruned"] == 1 and len(os.listdir(tmp_path)) == 1


@pytest.mark.parametrize("options, error", [
    ({"window_seconds": 0.0}, "edge.window_seconds: 0.0; give more than 0 and at most 600 seconds (canary.window_seconds)"),
    ({"window_seconds": 601.0}, "edge.window_seconds: 601.0; give more than 0 and at most 600 seconds (canary.window_seconds)"),
    ({"services": {"blue": "app-blue"}}, "edge.project: give the compose project directory with edge.services"),
])
def test_option_errors_name_the_field(tmp_path, options, error):
    given = dict({"path": str(tmp_path), "window_seconds": 30.0, "project": None, "services": {},
                  "wait_for_canary": False}, **options)
    assert edge.measure_option(given, None) == {"error": error}


def test_an_engine_that_fails_is_an_error_not_a_traceback(tmp_path):
    class Broken(object):
        def ps(self, project):
            raise edge.EngineError("docker compose ps failed (rc=1): no such project")

    options = {"path": str(tmp_path), "window_seconds": 30.0, "project": "/p", "services": {"blue": "app-blue"},
               "wait_for_canary": True}
    assert edge.measure_option(options, Broken, canary="blue") == {"error": "docker compose ps failed (rc=1): no such project"}


def test_the_option_waits_for_the_canary_only(tmp_path, monkeypatch):
    waited = []
    monkeypatch.setattr(edge, "measure", lambda path, window, starts, wait_for, prune_files: waited.append(wait_for) or {})
    options = {"path": str(tmp_path), "window_seconds": 30.0, "project": None, "services": {}, "wait_for_canary": True}
    edge.measure_option(options, None, canary="green")
    edge.measure_option(dict(options, wait_for_canary=False), None, canary="green")
    edge.measure_option(options, None, canary=None)
    assert waited == [["green"], [], []]
