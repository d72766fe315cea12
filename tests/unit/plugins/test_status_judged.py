"""The figures a status refresh's canary policy judges (module_utils/_status.py judged_window):
which track, from which source, and a message naming both sources when neither could be read."""

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._status import judged_window

APP_WINDOW = {"requests": 10, "error_rate_percent": 0.0, "p99_latency_ms": 5.0, "window_seconds": 30}
EDGE_WINDOW = {"requests": 12, "error_rate_percent": 8.3, "p99_latency_ms": 9.0, "window_seconds": 60}


def scrape(track, slot, window=None, msg=None):
    result = {"item": {"track": track, "slot": slot}}
    if window is not None:
        result["window"] = window
    else:
        result.update(failed=True, msg=msg or "HTTP Error 404: Not Found")
    return result


@pytest.mark.parametrize("scrapes, metrics, edge, track, window", [
    # The canary track is judged when there is one, the stable track otherwise.
    ([scrape("stable", "blue", APP_WINDOW), scrape("canary", "green", dict(APP_WINDOW, requests=3))], "app", None,
     "canary", dict(APP_WINDOW, requests=3)),
    ([scrape("stable", "blue", APP_WINDOW)], "app", None, "stable", APP_WINDOW),
    # canary.metrics edge: the edge's figures of the slot win over the app's.
    ([scrape("stable", "blue", APP_WINDOW)], "edge", {"slots": {"blue": EDGE_WINDOW}}, "stable", EDGE_WINDOW),
    # An app without /metrics, measured at the edge.
    ([scrape("stable", "blue"), scrape("canary", "green")], "edge", {"slots": {"green": EDGE_WINDOW}}, "canary", EDGE_WINDOW),
    # The edge unreadable: the app's own window is used.
    ([scrape("stable", "blue", APP_WINDOW)], "edge", {"error": "no edge log"}, "stable", APP_WINDOW),
    # canary.metrics app never reads the edge.
    ([scrape("stable", "blue", APP_WINDOW)], "app", {"slots": {"blue": EDGE_WINDOW}}, "stable", APP_WINDOW),
])
def test_the_judged_track_and_its_figures(scrapes, metrics, edge, track, window):
    judged = judged_window(scrapes, metrics, edge)
    assert judged == {"track": track, "slot": scrapes[-1]["item"]["slot"], "window": window}


@pytest.mark.parametrize("edge, expected", [
    ({"error": "edge.path: /srv/x/edge does not exist"}, "nginx's edge log: edge.path: /srv/x/edge does not exist"),
    ({"slots": {"blue": EDGE_WINDOW}}, "nginx's edge log: no figures of slot green in it"),
    (None, "nginx's edge log: no figures of slot green in it"),
])
def test_neither_source_readable_names_both(edge, expected):
    judged = judged_window([scrape("stable", "blue"), scrape("canary", "green", msg="connection refused")], "edge", edge)
    assert "window" not in judged
    assert judged["track"] == "canary" and judged["slot"] == "green"
    assert expected in judged["error"]
    assert "the app's /metrics: connection refused" in judged["error"]
    assert judged["error"].startswith("The canary track (slot green) could not be measured")


def test_an_app_scrape_that_failed_without_edge_names_the_app_only():
    judged = judged_window([scrape("stable", "blue", msg="timed out")], "app")
    assert judged["error"] == (
        "The stable track (slot blue) could not be measured: the app's /metrics: timed out. Check that the slot "
        "runs and nginx serves it (status of the containers: logs.yml); nothing was changed.")
