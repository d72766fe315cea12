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
OUTLIER_P99_MS above it *and* its tail is really slower: at least OUTLIER_SLOW_SHARE of its
requests (and OUTLIER_SLOW_MIN of them) were slower than the other hosts' P99, which about 1 % of
theirs exceed. A P99 over a short window rests on its one or two slowest requests, so one request
held up by a busy moment would otherwise name a healthy host. A host with fewer than
OUTLIER_MIN_REQUESTS requests in the window is never named (too little data to say); nor is any
host of a fleet of one.

A fleet canary (docs/fleet-canary.md) starts on the first hosts of the play (`canary_hosts`,
from the manifest's canary.hosts) and is judged once for all of them (`judgement`): never on
part of the fleet, so a host of the play that dropped out before the judgement refuses it.
"""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import combine, empty_window

OUTLIER_MIN_REQUESTS = 20
OUTLIER_ERROR_FACTOR = 2.0
OUTLIER_ERROR_POINTS = 5.0
OUTLIER_P99_FACTOR = 2.0
OUTLIER_P99_MS = 50.0
OUTLIER_SLOW_SHARE = 0.10
OUTLIER_SLOW_MIN = 5

FIGURE_KEYS = ("requests", "errors", "latency_buckets", "window_seconds")
# The figures a policy and a history event get for each host and for the fleet (no histogram).
SUMMARY_KEYS = ("requests", "errors", "error_rate_percent", "p99_latency_ms", "window_seconds")


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
            slow = slower_than(mine_all["latency_buckets"], theirs / 1000.0)
            if slow >= OUTLIER_SLOW_MIN and slow >= OUTLIER_SLOW_SHARE * mine_all["requests"]:
                reasons.append("P99 %.1f ms against %.1f ms on the other hosts (%d of its %d requests slower than "
                               "their P99)" % (mine, theirs, slow, mine_all["requests"]))
    return reasons


def slower_than(buckets, seconds):
    """How many requests of cumulative `buckets` ([[bound, count], ..., ["+Inf", total]]) were
    surely slower than `seconds`: those above the smallest bucket bound at or above it."""
    counts = sorted((float(bound), count) for bound, count in buckets)
    if not counts:
        return 0
    total = counts[-1][1]
    within = next((count for bound, count in counts if bound >= seconds), total)
    return max(0, total - within)


def canary_hosts(hosts, setting):
    """The hosts a new fleet canary starts on: the first ones of `hosts` (the play's, in inventory
    order) for canary.hosts `setting`, as the manifest gives it validated.

    None: every host. A whole number N: the first N (every host when the fleet has fewer). "P%":
    the first P percent of the hosts, rounded up, so at least one.
    """
    hosts = list(hosts)
    if setting is None:
        return hosts
    if isinstance(setting, str):
        percent = int(setting.rstrip("%"))
        count = max(1, -(-len(hosts) * percent // 100))
    else:
        count = int(setting)
    return hosts[:count]


def summary(figures):
    """The figures shown and recorded for a host or the fleet: counts, rates, no histogram."""
    return dict((key, figures.get(key)) for key in SUMMARY_KEYS)


def judgement(windows, play_hosts, active_hosts):
    """What one decision for a fleet canary rests on, or why there can be none.

    windows       {host: its canary's window figures} of every host with a canary still in the play
    play_hosts    every host of the play (ansible_play_hosts_all), in inventory order
    active_hosts  the hosts still in the play (ansible_play_hosts): a host that could not be
                  measured, or failed earlier, is not among them

    Returns {refused, hosts, fleet, per_host, outliers, policy, lines}:
    refused   None, or the message every canary host fails with (nothing is changed anywhere):
              the fleet is never judged on part of its hosts
    hosts     the judged hosts in play order
    fleet     the merged figures (summary keys), per_host {host: summary}, outliers as merge()
    policy    the canary policy's input.fleet: {size, hosts, outliers}
    lines     what the play shows: the merged figures, then each host's, outliers marked
    outlier_lines  one line per outlier: "Outlier host h2: <reasons>"
    """
    play_hosts = [str(host) for host in play_hosts]
    active = set(str(host) for host in active_hosts)
    dropped = [host for host in play_hosts if host not in active]
    hosts = [host for host in play_hosts if host in windows]
    result = {"refused": None, "hosts": hosts, "fleet": None, "per_host": {}, "outliers": [], "policy": None,
              "lines": [], "outlier_lines": []}
    if dropped:
        result["refused"] = (
            "The fleet canary is not judged on part of the fleet: %s could not be measured or failed before the "
            "judgement (see %s error above). Nothing was changed on any host. Fix %s and run promote.yml -e "
            "mode=stable again, or end the canary on every host with rollback.yml."
            % (", ".join(dropped), "its" if len(dropped) == 1 else "their",
               "it" if len(dropped) == 1 else "them"))
        return result
    try:
        merged = merge(dict((host, windows[host]) for host in hosts))
    except FleetError as exc:
        result["refused"] = ("The fleet canary cannot be judged: %s. Nothing was changed on any host." % exc)
        return result
    named = dict((entry["host"], entry["reasons"]) for entry in merged["outliers"])
    per_host = dict((host, summary(merged["hosts"][host])) for host in hosts)
    result.update(fleet=summary(merged["fleet"]), per_host=per_host, outliers=merged["outliers"],
                  policy={"size": len(hosts), "hosts": per_host, "outliers": merged["outliers"]})
    result["lines"] = ["Fleet canary on %d host%s (%s), figures merged: %s" % (
        len(hosts), "" if len(hosts) == 1 else "s", ", ".join(hosts), _describe(merged["fleet"]))]
    for host in hosts:
        line = "  %s: %s" % (host, _describe(per_host[host]))
        if host in named:
            line += "; OUTLIER: %s" % "; ".join(named[host])
            result["outlier_lines"].append("Outlier host %s: %s" % (host, "; ".join(named[host])))
        result["lines"].append(line)
    return result


def _describe(figures):
    rate, p99 = figures["error_rate_percent"], figures["p99_latency_ms"]
    return "%d requests, error rate %s, P99 %s over %.1f s" % (
        figures["requests"], "n/a" if rate is None else "%.2f%%" % rate,
        "n/a" if p99 is None else "%.1f ms" % p99, figures["window_seconds"])
