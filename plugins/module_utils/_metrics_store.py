# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Scraping an app slot's /metrics and keeping the sample on the host for the next window.

Used by the metrics_scrape module and by stack_converge (the baseline sample of a new canary).
This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

import json
import os
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as progress
from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError, get_text
from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import fsync_directory, write_atomic
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import (
    STATE_FORMAT,
    MetricsError,
    Sample,
    parse,
    window,
)

SERVICE = "the SwiftDeploy app"


def scrape(url, timeout):
    """One Sample of the app at `url`; raises HttpError or MetricsError."""
    text = get_text(url, timeout, service=SERVICE)
    taken_at = time.time()
    try:
        sample = parse(text, taken_at)
    except MetricsError as exc:
        raise MetricsError("%s did not answer with Prometheus metrics (%s); give a slot's /metrics URL"
                           % (url, exc))
    if sample.uptime is None:
        raise MetricsError("%s answered with metrics, but not the SwiftDeploy app's (no app_uptime_seconds); "
                           "give a slot's /metrics URL" % url)
    return sample


def scrape_ago(url, seconds, timeout):
    """The app's Sample of `seconds` ago, from its own snapshots (GET <url>?ago=<seconds>), or
    None when it has none that old (404) or does not keep any (another server, an older app).

    Its taken_at is now minus the snapshot's age (app_snapshot_age_seconds), so the window to a
    scrape taken now is the snapshot's real age, at least `seconds`.
    """
    asked = "%s%sago=%s" % (url, "&" if "?" in url else "?", format(seconds, "g"))
    try:
        text = get_text(asked, timeout, service=SERVICE)
    except HttpError:
        # 404/400: no snapshot that old, or a server that keeps none. Anything else (down, not
        # http) the plain scrape that follows reports with the URL as given.
        return None
    answered = time.time()
    try:
        sample = parse(text, answered)
    except MetricsError:
        return None
    if sample.uptime is None or sample.snapshot_age is None or sample.snapshot_age < seconds:
        return None
    sample.taken_at = answered - sample.snapshot_age
    return sample


def read_state(path, url):
    """(the Sample kept in `path` for `url` or None, why there is none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return None, "no previous sample in %s" % path
    except ValueError as exc:
        return None, "%s is not a sample file this module wrote (%s); it is replaced" % (path, exc)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return None, "%s is not a sample file this module wrote; it is replaced" % path
    if state.get("url") != url:
        return None, ("%s holds a sample of %s, not of %s; keep one state file per slot"
                      % (path, state.get("url"), url))
    try:
        return Sample.from_dict(state.get("sample")), None
    except MetricsError as exc:
        return None, "%s holds a damaged sample (%s); it is replaced" % (path, exc)


def write_state(path, url, sample, move=os.replace):
    """Keep sample in path (mode 0640), replaced atomically: a reader sees the old file or the new
    one. move(temporary, path) puts it in place: a module passes its atomic_move."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    data = json.dumps({"format": STATE_FORMAT, "url": url, "sample": sample.to_dict()}, sort_keys=True) + "\n"
    write_atomic(path, data.encode("utf-8"), 0o640, move=move)
    # The rename is durable only once the directory is.
    fsync_directory(directory)


def describe(figures):
    if figures["counter_reset"]:
        restart = "; the app restarted within the window, so the figures count from its restart"
    else:
        restart = ""
    if figures["requests"] == 0:
        return "no requests in %.1f s%s" % (figures["window_seconds"], restart)
    rate = " (%.2f/s)" % figures["req_per_s"] if figures["req_per_s"] is not None else ""
    p99 = "%.1f ms" % figures["p99_latency_ms"] if figures["p99_latency_ms"] is not None else "unknown"
    return ("%d requests in %.1f s%s, %d errors (%.2f%%), p99 %s%s"
            % (figures["requests"], figures["window_seconds"], rate, figures["errors"],
               figures["error_rate_percent"], p99, restart))


def measure_windows(urls, seconds, use_history=True, timeout=5.0):
    """The traffic of each app slot at urls over its last `seconds`, waiting at most once.

    With use_history, each app is asked for its counters of `seconds` ago (scrape_ago); the
    slots that have none that old are scraped now, then, after one wait of `seconds` for all of
    them, every slot is scraped again. Returns {url: {window, window_source ("history" or
    "waited"), message, current (the newer Sample)}} or {url: {error}} for a slot that cannot be
    measured, so one slot's failure does not hide the others' figures.
    """
    results, previous = {}, {}
    for url in urls:
        older = scrape_ago(url, seconds, timeout) if use_history else None
        if older is None:
            try:
                older = scrape(url, timeout)
            except (HttpError, MetricsError) as exc:
                results[url] = {"error": str(exc)}
                continue
            previous[url] = (older, "waited")
        else:
            previous[url] = (older, "history")
    if any(source == "waited" for _older, source in previous.values()):
        with progress.waiting("a %g s window of the app slots' metrics" % seconds, seconds):
            time.sleep(seconds)
    for url, (older, source) in previous.items():
        try:
            current = scrape(url, timeout)
        except (HttpError, MetricsError) as exc:
            results[url] = {"error": str(exc)}
            continue
        figures = window(older, current)
        results[url] = {"window": figures, "window_source": source, "message": describe(figures),
                        "current": current}
    return results
