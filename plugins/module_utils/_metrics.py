# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The SwiftDeploy app's /metrics: parsing, windowed request figures and histogram_quantile.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports and needs only the standard library, so it runs on any managed host.

parse() reads the Prometheus text format (0.0.4) with prometheus_client when that library is
importable, and with parse_samples_fallback() otherwise; the unit tests prove that both give
the same samples for the app's output and for tricky input (escaped label values, NaN, +Inf,
comments, timestamps). On a managed host without prometheus_client the fallback is what runs.

window() turns two samples of one process into figures over the interval between them, with
the counter-reset rule of Prometheus' increase(); histogram_quantile() is Prometheus' classic
histogram_quantile(), special cases included. docs/metrics.md describes both.
"""

from __future__ import annotations

import math
import re

# prometheus_client's parser, imported on the first parse rather than when a module starts: the
# import costs 10 to 20 ms of CPU, and most module calls that load this file (the lock, the
# converge) parse no metrics. "parser" is None when it is not importable.
_CLIENT = {}


def _client_families():
    if "parser" not in _CLIENT:
        try:
            from prometheus_client.parser import text_string_to_metric_families as parser
        except ImportError:  # the managed host need not have it: the fallback parser stands in
            parser = None
        _CLIENT["parser"] = parser
    return _CLIENT["parser"]


REQUESTS = "http_requests_total"
DURATION = "http_request_duration_seconds"
UPTIME = "app_uptime_seconds"
SNAPSHOT_AGE = "app_snapshot_age_seconds"
MODE = "app_mode"
CHAOS = "chaos_active"
INFO = "app_info"

MODE_NAMES = {0: "stable", 1: "canary"}
CHAOS_NAMES = {0: "none", 1: "slow", 2: "error"}

# Probes and scrapes are not traffic; /chaos is the operator's control endpoint, not traffic
# either. Only "/" and "other" (unrouted paths) go through the app's request handling.
EXCLUDED_PATHS = ("/metrics", "/healthz", "/chaos")
P99 = 0.99
STATE_FORMAT = 1

INF = float("inf")
NAN = float("nan")
# Prometheus treats adjacent bucket counts this close (relative) as equal: float sums of rates
# can differ in the last bits where the true counts are the same.
PRECISION_TOLERANCE = 1e-12

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_FAMILY_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "summary": ("_count", "_sum", ""),
    "histogram": ("_count", "_sum", "_bucket"),
}
_FAMILY_TYPES = ("counter", "gauge", "summary", "histogram", "untyped",
                 "gaugehistogram", "unknown", "info", "stateset")
_ESCAPES = {"\\": "\\", "n": "\n", '"': '"'}


class MetricsError(ValueError):
    """The text is not the Prometheus text format, or a stored sample is not one we wrote."""


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def parse_samples(text):
    """Every sample in `text` as (name, labels, value, timestamp), in order of appearance.

    Uses prometheus_client when importable, parse_samples_fallback() otherwise; the two agree
    on valid input. Raises MetricsError when the text is not the Prometheus text format.
    """
    if _client_families() is None:
        return parse_samples_fallback(text)
    return parse_samples_client(text)


def parse_samples_client(text):
    """parse_samples() with prometheus_client; callers must check that it is importable."""
    try:
        return [(sample.name, dict(sample.labels), sample.value, sample.timestamp)
                for family in _client_families()(text) for sample in family.samples]
    except (ValueError, IndexError, KeyError, TypeError) as exc:  # its parser raises all four
        raise MetricsError(str(exc) or type(exc).__name__)


def parse_samples_fallback(text):
    """parse_samples() in the standard library, agreeing with prometheus_client on valid input.

    Like prometheus_client: lines split on "\\n" only; HELP and TYPE comments group samples
    into families and other comments are ignored; a counter family whose name lacks "_total"
    has "_total" appended to its samples' names; label values unescape \\\\, \\" and \\n and
    keep any other backslash; a value is an int when int() accepts it, else a float (NaN,
    +Inf); a timestamp (the last field after the value) is returned in seconds.
    It is stricter on malformed input: unquoted label and metric names only.
    """
    samples = []
    family, family_type, allowed = "", "untyped", ()
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            if line.startswith("#"):
                parts = line.split(None, 3)
                # prometheus_client splits a comment on whitespace outside quotes: with a quote
                # in its first fields it may read HELP or TYPE where this split sees neither.
                if any('"' in part for part in parts[:3]):
                    raise MetricsError("a comment with a quote in its first three fields")
                if len(parts) < 2 or (len(parts) > 2 and parts[1] not in ("HELP", "TYPE")):
                    continue
                name = parts[2] if len(parts) > 2 else ""
                if len(parts) > 2 and not _METRIC_NAME.fullmatch(name):
                    raise MetricsError("invalid metric name %r" % name)
                if parts[1] == "HELP":
                    if name != family:
                        family, family_type, allowed = name, "untyped", (name,)
                elif parts[1] == "TYPE":
                    if len(parts) < 4:
                        raise MetricsError("TYPE comment without a type")
                    if parts[3] not in _FAMILY_TYPES:
                        raise MetricsError("invalid metric type %r" % parts[3])
                    family, family_type = name, parts[3]
                    allowed = tuple(name + suffix for suffix in _FAMILY_SUFFIXES.get(family_type, ("",)))
                continue
            name, labels, value, timestamp = _parse_sample_line(line)
        except ValueError as exc:  # MetricsError, or int()/float() refusing a number
            raise MetricsError("line %d: %s: %r" % (number, exc, _shorten(line)))
        if name not in allowed:
            family, family_type, allowed = "", "untyped", ()
        elif family_type == "counter" and not family.endswith("_total"):
            name += "_total"
        samples.append((name, labels, value, timestamp))
    return samples


def _shorten(line, limit=120):
    return line if len(line) <= limit else line[:limit] + "..."


def _parse_sample_line(line):
    match = _METRIC_NAME.match(line)
    name = match.group(0) if match else ""
    pos = _skip_spaces(line, len(name))
    labels = {}
    if pos < len(line) and line[pos] == "{":
        labels, pos = _parse_labels(line, pos + 1)
        if not name:
            if "__name__" not in labels:
                raise MetricsError("no metric name")
            name = labels.pop("__name__")
        elif "__name__" in labels:
            raise MetricsError("metric name given twice")
    elif not name:
        raise MetricsError("no metric name")
    elif pos == len(name):
        raise MetricsError("invalid metric name")
    value, timestamp = _parse_value_and_timestamp(line[pos:])
    return name, labels, value, timestamp


def _skip_spaces(text, pos):
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _parse_labels(line, pos):
    """Parse `name="value", ...}` from line[pos:]; return (labels, position after the brace)."""
    labels = {}
    while True:
        pos = _skip_spaces(line, pos)
        if pos < len(line) and line[pos] == "}":
            return labels, pos + 1
        match = _METRIC_NAME.match(line, pos)
        if not match:
            raise MetricsError("invalid label name at column %d" % (pos + 1))
        label = match.group(0)
        if label.startswith("__") and label != "__name__":
            raise MetricsError("reserved label name %r" % label)
        if label in labels:
            raise MetricsError("duplicate label %r" % label)
        pos = _skip_spaces(line, match.end())
        if line[pos:pos + 1] != "=":
            raise MetricsError("expected = after label %r" % label)
        pos = _skip_spaces(line, pos + 1)
        if line[pos:pos + 1] != '"':
            raise MetricsError("label %r has no quoted value" % label)
        labels[label], pos = _parse_label_value(line, pos + 1)
        pos = _skip_spaces(line, pos)
        if line[pos:pos + 1] == ",":
            pos += 1
        elif line[pos:pos + 1] != "}":
            raise MetricsError("expected , or } after label %r" % label)


def _parse_label_value(line, pos):
    chars = []
    while pos < len(line):
        char = line[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\" and pos + 1 < len(line) and line[pos + 1] in _ESCAPES:
            chars.append(_ESCAPES[line[pos + 1]])
            pos += 2
            continue
        chars.append(char)
        pos += 1
    raise MetricsError("unterminated label value")


def _parse_value_and_timestamp(text):
    # prometheus_client splits on spaces, or on tabs when there is no space, and takes the
    # first field as the value and the last (if any other) as the timestamp in milliseconds.
    text = text.lstrip()
    separator = " " if " " in text else "\t"
    fields = [field.strip() for field in text.split(separator) if field.strip()]
    if not fields:
        raise MetricsError("no value")
    value = _parse_number(fields[0])
    timestamp = _parse_number(fields[-1]) / 1000 if len(fields) > 1 else None
    return value, timestamp


def _parse_number(text):
    if "_" in text:
        raise MetricsError("invalid value %r" % text)
    try:
        return int(text)
    except ValueError:
        return float(text)


class Sample(object):
    """What one scrape of the app's /metrics says, taken at `taken_at` (epoch seconds).

    requests  {(path, status_code): count} summed over methods
    buckets   {path: {upper_bound: cumulative count}} summed over methods, +Inf included
    sums      {path: seconds} and counts {path: observations} of the latency histogram
    uptime    app_uptime_seconds; mode, chaos: the gauges' names ("canary", "error", ...);
    version   app_info's version label. Each is None when the text lacks it.
    snapshot_age  app_snapshot_age_seconds: set when the app answered /metrics?ago=N with its
              counters as they were that many seconds ago; not kept by to_dict().
    """

    def __init__(self, taken_at, requests=None, buckets=None, sums=None, counts=None,
                 uptime=None, mode=None, chaos=None, version=None, snapshot_age=None):
        self.taken_at = float(taken_at)
        self.requests = dict(requests or {})
        self.buckets = {path: dict(bounds) for path, bounds in (buckets or {}).items()}
        self.sums = dict(sums or {})
        self.counts = dict(counts or {})
        self.uptime = uptime
        self.mode = mode
        self.chaos = chaos
        self.version = version
        self.snapshot_age = snapshot_age

    def summary(self):
        return {"taken_at": self.taken_at, "uptime": self.uptime, "mode": self.mode,
                "chaos": self.chaos, "version": self.version}

    def to_dict(self):
        """A JSON-safe form (bounds as Prometheus writes them), read back by from_dict()."""
        state = self.summary()
        state["requests"] = [[path, status, count] for (path, status), count in sorted(self.requests.items())]
        state["histograms"] = {
            path: {"buckets": [[format_bound(bound), count] for bound, count in sorted(bounds.items())],
                   "sum": self.sums.get(path, 0), "count": self.counts.get(path, 0)}
            for path, bounds in sorted(self.buckets.items())}
        return state

    @classmethod
    def from_dict(cls, state):
        try:
            histograms = state["histograms"]
            return cls(
                taken_at=state["taken_at"],
                requests={(str(path), str(status)): _count(count) for path, status, count in state["requests"]},
                buckets={str(path): {float(bound): _count(count) for bound, count in histogram["buckets"]}
                         for path, histogram in histograms.items()},
                sums={str(path): float(histogram["sum"]) for path, histogram in histograms.items()},
                counts={str(path): _count(histogram["count"]) for path, histogram in histograms.items()},
                uptime=_optional_float(state["uptime"]),
                mode=state["mode"], chaos=state["chaos"], version=state["version"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MetricsError("not a stored sample (%s: %s)" % (type(exc).__name__, exc))


def _count(value):
    value = float(value)
    return int(value) if value.is_integer() else value


def _optional_float(value):
    return None if value is None else float(value)


def parse(text, taken_at):
    """The Sample that the app's /metrics `text` describes, taken at `taken_at`."""
    requests, buckets, sums, counts = {}, {}, {}, {}
    gauges, version = {}, None
    for name, labels, value, _timestamp in parse_samples(text):
        path = labels.get("path", "")
        if name == REQUESTS:
            key = (path, labels.get("status_code", ""))
            requests[key] = requests.get(key, 0) + value
        elif name == DURATION + "_bucket":
            try:
                bound = float(labels.get("le", ""))
            except ValueError:
                raise MetricsError("%s has an le label that is not a number: %r" % (name, labels.get("le")))
            bounds = buckets.setdefault(path, {})
            bounds[bound] = bounds.get(bound, 0) + value
        elif name == DURATION + "_sum":
            sums[path] = sums.get(path, 0) + value
        elif name == DURATION + "_count":
            counts[path] = counts.get(path, 0) + value
        elif name in (UPTIME, MODE, CHAOS, SNAPSHOT_AGE) and not labels:
            gauges[name] = value
        elif name == INFO:
            version = labels.get("version", version)
    return Sample(taken_at, requests, buckets, sums, counts, uptime=gauges.get(UPTIME),
                  mode=_gauge_name(gauges.get(MODE), MODE_NAMES),
                  chaos=_gauge_name(gauges.get(CHAOS), CHAOS_NAMES), version=version,
                  snapshot_age=gauges.get(SNAPSHOT_AGE))


def _gauge_name(value, names):
    if value is None:
        return None
    if value in names:
        return names[value]
    return "unknown (%s)" % format_bound(value)


def format_bound(value):
    """A number as Prometheus writes it: +Inf, -Inf, NaN, else Python's shortest repr."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


def _counters(sample):
    """Every counter of a sample under one flat key, to compare two samples series by series."""
    flat = {}
    for (path, status), value in sample.requests.items():
        flat[("requests", path, status)] = value
    for path, bounds in sample.buckets.items():
        for bound, value in bounds.items():
            flat[("bucket", path, bound)] = value
    for path, value in sample.sums.items():
        flat[("sum", path)] = value
    for path, value in sample.counts.items():
        flat[("count", path)] = value
    return flat


def is_counter_reset(older, newer):
    """True when the process restarted between the samples: uptime or any counter went down
    (a series that vanished went down to 0)."""
    if older.uptime is not None and newer.uptime is not None and newer.uptime < older.uptime:
        return True
    current = _counters(newer)
    return any(value > current.get(key, 0) for key, value in _counters(older).items())


def window(older, newer, exclude_paths=EXCLUDED_PATHS):
    """Request figures for the interval between two samples of one app process (one track).

    Never totals since start: each counter's increase from `older` to `newer`. After a counter
    reset (see is_counter_reset) the newer sample's values are the increase, as Prometheus'
    increase() takes them, so no figure is ever negative. Requests to `exclude_paths` are not
    counted. Returns the dict that empty_window() describes.
    """
    reset = is_counter_reset(older, newer)
    before = {} if reset else _counters(older)
    requests = errors = 0
    latency = {}
    for key, value in _counters(newer).items():
        kind, path = key[0], key[1]
        if path in exclude_paths:
            continue
        increase = value - before.get(key, 0)
        if kind == "requests":
            requests += increase
            errors += increase if _is_server_error(key[2]) else 0
        elif kind == "bucket":
            latency[key[2]] = latency.get(key[2], 0) + increase
    seconds = max(0.0, newer.taken_at - older.taken_at)
    rate = requests / seconds if seconds > 0 else None
    return _figures(requests, errors, latency, seconds, rate, reset)


def empty_window():
    """The window when there is nothing to compare with: no requests, every rate None.

    requests            application requests in the window
    req_per_s           requests per second, None for a window of 0 s
    errors              requests answered 5xx
    error_rate_percent  100 * errors / requests, None without requests
    p99_latency_ms      histogram_quantile(0.99) of the window's latency buckets in ms, None
                        without observations
    window_seconds      newer.taken_at - older.taken_at (0 when the clock went backwards)
    counter_reset       whether the app restarted within the window
    latency_buckets     the window's cumulative latency buckets, [[le, count], ...], for
                        combine()
    """
    return _figures(0, 0, {}, 0.0, None, False)


def combine(windows):
    """Sum the windows of several tracks (stable and canary) into one for the whole service:
    requests, errors and rates add up, and the p99 comes from the merged latency buckets."""
    requests = errors = 0
    latency = {}
    rates = []
    seconds = 0.0
    reset = False
    for figures in windows:
        requests += figures["requests"]
        errors += figures["errors"]
        for bound, count in figures["latency_buckets"]:
            latency[float(bound)] = latency.get(float(bound), 0) + count
        if figures["req_per_s"] is not None:
            rates.append(figures["req_per_s"])
        seconds = max(seconds, figures["window_seconds"])
        reset = reset or figures["counter_reset"]
    return _figures(requests, errors, latency, seconds, sum(rates) if rates else None, reset)


def _milliseconds(seconds):
    # NaN (no +Inf bucket) cannot be sent to a policy as JSON, and means "unknown" as None does.
    # Rounded to the nanosecond: the float noise of interpolation (4.949999999999999) goes,
    # and no bucket bound the app could have is finer.
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds * 1000, 6)


def _is_server_error(status):
    return len(status) == 3 and status.startswith("5") and status.isdigit()


def _figures(requests, errors, latency, seconds, rate, reset):
    requests, errors = _count(requests), _count(errors)
    ordered = sorted(latency.items())
    p99 = histogram_quantile(P99, ordered) if ordered else None
    return {
        "requests": requests,
        "req_per_s": rate,
        "errors": errors,
        "error_rate_percent": errors * 100.0 / requests if requests > 0 else None,
        "p99_latency_ms": _milliseconds(p99),
        "window_seconds": seconds,
        "counter_reset": reset,
        "latency_buckets": [[format_bound(bound), _count(count)] for bound, count in ordered],
    }


# ---------------------------------------------------------------------------------------------
# histogram_quantile
# ---------------------------------------------------------------------------------------------


def histogram_quantile(q, buckets):
    """Prometheus' histogram_quantile(q, ...) for one classic histogram.

    `buckets` is a list of (upper_bound, cumulative_count) and must hold the +Inf bucket.
    Returns None when the histogram has no observations (Prometheus: NaN), and otherwise what
    Prometheus returns: NaN for a NaN q, a missing +Inf bucket or fewer than two buckets; -Inf
    for q < 0 and +Inf for q > 1; the upper bound of the second-highest bucket when the
    quantile falls into the +Inf bucket; the lowest bucket's bound when the quantile falls into
    it and that bound is <= 0; else linear interpolation inside the bucket, from 0 for the
    lowest bucket. Counts are first merged per bound, nearly-equal neighbours made equal and
    decreases lifted to the running maximum, as Prometheus does.
    """
    if math.isnan(q):
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    ordered = sorted(((float(bound), float(count)) for bound, count in buckets), key=lambda bucket: bucket[0])
    if not ordered or ordered[-1][0] != INF:
        return NAN
    ordered = _ensure_monotonic(_correct_precision(_coalesce(ordered)))
    if len(ordered) < 2:
        return NAN
    observations = ordered[-1][1]
    if observations == 0:
        return None
    rank = q * observations
    last = len(ordered) - 1
    index = next((i for i in range(last) if ordered[i][1] >= rank), last)
    if index == last:
        return ordered[-2][0]
    if index == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start, end, count = 0.0, ordered[index][0], ordered[index][1]
    if index > 0:
        start = ordered[index - 1][0]
        count -= ordered[index - 1][1]
        rank -= ordered[index - 1][1]
    return start + (end - start) * _divide(rank, count)


def _coalesce(ordered):
    merged = []
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1] = (bound, merged[-1][1] + count)
        else:
            merged.append((bound, count))
    return merged


def _correct_precision(ordered):
    corrected = [ordered[0]]
    previous = ordered[0][1]
    for bound, count in ordered[1:]:
        delta = abs(count - previous)
        if delta != 0 and _divide(delta, count) <= PRECISION_TOLERANCE:
            count = previous
        elif delta != 0:
            previous = count
        corrected.append((bound, count))
    return corrected


def _ensure_monotonic(ordered):
    lifted = [ordered[0]]
    highest = ordered[0][1]
    for bound, count in ordered[1:]:
        if count > highest:
            highest = count
        elif count < highest:
            count = highest
        lifted.append((bound, count))
    return lifted


def _divide(numerator, denominator):
    """IEEE 754 division, as Go does it: x/0 is +-Inf and 0/0 is NaN instead of an exception."""
    if denominator != 0:
        return numerator / denominator
    if numerator == 0 or math.isnan(numerator):
        return NAN
    return math.copysign(INF, numerator) * math.copysign(1.0, denominator)
