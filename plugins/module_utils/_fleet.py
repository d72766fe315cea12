# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A fleet's figures, pure: each host's window merged into one, and the hosts much worse than the rest.

One decision for a fleet is taken on merged counts, never on an average of per-host rates: the
requests and 5xx responses are summed and the latency histograms are added bucket by bucket, then
the error rate and the P99 are computed once from the sums (`_metrics.combine`). A host with a few
requests cannot then weigh as much as a busy one, and the P99 is the fleet's, not a mean of P99s.

A host is named an outlier when it is much worse than the other hosts together, over the same
window: its error rate is at least OUTLIER_ERROR_FACTOR times theirs and OUTLIER_ERROR_POINTS
percentage points above it, or its P99 is at least OUTLIER_P99_FACTOR times theirs and
OUTLIER_P99_MS above it. A host with fewer than OUTLIER_MIN_REQUESTS requests in the window is
never named (too little data to say); nor is any host of a fleet of one.
"""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import combine, empty_window

OUTLIER_MIN_REQUESTS = 20
OUTLIER_ERROR_FACTOR = 2.0
OUTLIER_ERROR_POINTS = 5.0
OUTLIER_P99_FACTOR = 2.0
OUTLIER_P99_MS = 50.0

FIGURE_KEYS = ("requests", "errors", "latency_buckets", "window_seconds")


class FleetError(ValueError):
    """Per-host figures that cannot be merged; the message names the host and the field."""


def _checked(host, figures):
    if not isinstance(figures, dict):
        raise FleetError("host %s: its window figures are %s, not a mapping; measure it again (status.yml shows "
                         "each host's figures)" % (host, type(figures).__name__))
    missing = [key for key in FIGURE_KEYS if key not in figures]
    if missing:
        raise FleetError("host %s: its window figures have no %s; every host must run the same version of "
                         "the swiftdeploy.stack collection" % (host, ", ".join(missing)))
    figures = dict(figures)
    figures.setdefault("req_per_s", None)
    figures.setdefault("counter_reset", False)
    return figures


def merge(per_host):
    """{fleet, hosts, outliers} for {host: window figures} (as _metrics.window gives them).

    fleet     the merged figures (_metrics.combine of every host's); empty_window() for no hosts
    hosts     {host: its own figures}, as given
    outliers  [{host, reasons: [text]}] of hosts much worse than the others (module docstring),
              sorted by host name
    """
    checked = {str(host): _checked(host, figures) for host, figures in sorted(per_host.items())}
    fleet = combine(list(checked.values())) if checked else empty_window()
    outliers = []
    for host, figures in checked.items():
        reasons = _outlier_reasons(figures, [other for name, other in checked.items() if name != host])
        if reasons:
            outliers.append({"host": host, "reasons": reasons})
    return {"fleet": fleet, "hosts": checked, "outliers": outliers}


def _outlier_reasons(figures, others):
    if not others or figures["requests"] < OUTLIER_MIN_REQUESTS:
        return []
    mine_all, rest = combine([figures]), combine(others)
    reasons = []
    mine, theirs = mine_all["error_rate_percent"], rest["error_rate_percent"]
    if mine is not None and theirs is not None and rest["requests"] >= OUTLIER_MIN_REQUESTS:
        if mine >= OUTLIER_ERROR_FACTOR * theirs and mine >= theirs + OUTLIER_ERROR_POINTS:
            reasons.append("error rate %.2f%% against %.2f%% on the other hosts" % (mine, theirs))
    mine, theirs = mine_all["p99_latency_ms"], rest["p99_latency_ms"]
    if mine is not None and theirs is not None and rest["requests"] >= OUTLIER_MIN_REQUESTS:
        if mine >= OUTLIER_P99_FACTOR * theirs and mine >= theirs + OUTLIER_P99_MS:
            reasons.append("P99 %.1f ms against %.1f ms on the other hosts" % (mine, theirs))
    return reasons
