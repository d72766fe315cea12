"""Canary analysis in simulation: false rollbacks and time to detect (`make bench-analysis`).

Replays synthetic traffic, window by window, through three judges of a canary against its
baseline, on the same simulated counts:

- ours:     plugins/module_utils/_analysis.py, the anytime-valid test (errors and latency,
            alpha / 2 each), rolling back when the judge says "rollback";
- flagger:  a Flagger-like absolute check per interval (canary 5xx rate above 1 %, or more than
            10 % of canary requests slower than the latency bound, i.e. p90 above it), rolling
            back after 1 failed check;
- kayenta:  a Kayenta-like fixed-horizon test repeated at every interval on the cumulative
            counts: a one-sided two-proportion z-test per question at nominal alpha / 2.

Scenario defaults (docs/analysis.md): 400 requests/s in total, 5 s interval, 3-minute rollout
(36 looks), 0.5 % base error rate, lognormal latencies (median 40 ms, sigma 0.5), latency bound
chosen before the canary starts from the baseline model (the smallest bucket bound of the app
that at most 5 % of baseline requests exceed: 0.1 s), alpha 1 %. The test reads only the
bucket at the bound, so the simulation draws, per window and side, the requests and the bad
requests of each question (exact binomial draws).

Prints, as markdown: the A/A false rollback rate of each method at a 10 % canary weight
(--rollouts, default 10,000), the same under stress (weights stepping 5 -> 25 -> 50 % while
the base rates change, bursts of traffic, windows with zero requests, a canary slot that
restarts and resets its counters), and, at canary rates 1, 10, 40 and 100 requests/s, the
false rollback rate of identical releases and the median time to detect +1, +2, +5 and +20
points of errors and +50 % latency (--detect-rollouts each, default 1,000), with the share of
rollouts in which each method detected the regression within the rollout.

Scenarios run in --jobs worker processes (default up to 2); each has its own seeded generator,
so the figures are the same for any number of processes.

Exit status 0, or 1 when any A/A false rollback rate of ours exceeds alpha by more than three
binomial standard deviations (the guarantee failed).
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import functools
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _collections_root():
    """.collections when `make setup` linked the checkout there, else a temporary link: the
    simulation needs nothing that setup installs."""
    linked = ROOT / ".collections"
    if (linked / "ansible_collections" / "swiftdeploy" / "stack").is_dir():
        return linked
    scratch = Path(tempfile.mkdtemp(prefix="swiftdeploy-bench-analysis-"))
    (scratch / "ansible_collections" / "swiftdeploy").mkdir(parents=True)
    (scratch / "ansible_collections" / "swiftdeploy" / "stack").symlink_to(ROOT)
    return scratch


sys.path.insert(0, str(_collections_root()))
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _analysis  # noqa: E402  pylint: disable=wrong-import-position

ALPHA = 0.01
TOTAL_RPS = 400
INTERVAL_S = 5
LOOKS = 36
BASE_ERROR = 0.005
LATENCY_MEDIAN_S = 0.040
LATENCY_SIGMA = 0.5
APP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLAGGER_ERROR_RATE = 0.01
FLAGGER_SLOW_SHARE = 0.10
DEFAULT_WEIGHT = 0.10
CANARY_RATES = (1, 10, 40, 100)
EFFECTS = (("A/A", 0.0, 1.0), ("+1 pt errors", 0.01, 1.0), ("+2 pt errors", 0.02, 1.0),
           ("+5 pt errors", 0.05, 1.0), ("+20 pt errors", 0.20, 1.0), ("+50 % latency", 0.0, 1.5))
METHODS = ("ours", "flagger", "kayenta")


def slow_share(factor):
    """Share of requests slower than the bound when every latency is multiplied by factor."""
    z = math.log(BOUND / (LATENCY_MEDIAN_S * factor)) / LATENCY_SIGMA
    return 0.5 * math.erfc(z / math.sqrt(2))


def choose_bound():
    """The latency bound, from the baseline model alone (never from canary data)."""
    for bound in APP_BUCKETS:
        z = math.log(bound / LATENCY_MEDIAN_S) / LATENCY_SIGMA
        if 0.5 * math.erfc(z / math.sqrt(2)) <= 0.05:
            return bound
    return APP_BUCKETS[-1]


BOUND = choose_bound()


@functools.lru_cache(maxsize=None)
def _binomial_table(n, p):
    """(lowest value, cumulative weights) of Binomial(n, p), cut 12 standard deviations out."""
    if n == 0 or p <= 0.0:
        return 0, (1.0,)
    if p >= 1.0:
        return n, (1.0,)
    mean, spread = n * p, math.sqrt(n * p * (1 - p))
    low, high = max(0, int(mean - 12 * spread - 10)), min(n, int(mean + 12 * spread + 10))
    log_norm = math.lgamma(n + 1)
    cumulative, total = [], 0.0
    for k in range(low, high + 1):
        total += math.exp(log_norm - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                          + k * math.log(p) + (n - k) * math.log1p(-p))
        cumulative.append(total)
    return low, tuple(cumulative)


def binomial(rng, n, p):
    low, cumulative = _binomial_table(n, p)
    index = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
    return low + min(index, len(cumulative) - 1)


class Scenario:
    """How one rollout's windows are drawn; `effect` is (added error points, latency factor)."""

    def __init__(self, name, canary_rps=TOTAL_RPS * DEFAULT_WEIGHT, effect=(0.0, 1.0), stress=None):
        self.name, self.canary_rps, self.effect, self.stress = name, canary_rps, effect, stress

    def windows(self, rng):
        """Per look: (canary requests, errors, slow), (baseline requests, errors, slow), as the
        judges see them (window deltas, after counter resets)."""
        added_errors, factor = self.effect
        slow_base, slow_canary = slow_share(1.0), slow_share(factor)
        counters, start_time = {"requests": 0, "errors": 0, "slow": 0}, 0
        for look in range(LOOKS):
            canary_rps, multiplier = self.canary_rps, 1.0
            if self.stress == "weights":
                canary_rps = TOTAL_RPS * (0.05, 0.25, 0.50)[look * 3 // LOOKS]
                multiplier = (1.0, 4.0, 2.0)[look * 3 // LOOKS]
            n_canary = int(canary_rps * INTERVAL_S)
            n_baseline = int((TOTAL_RPS - canary_rps) * INTERVAL_S)
            if self.stress == "bursts" and rng.random() < 0.1:
                n_canary, n_baseline, multiplier = 10 * n_canary, 10 * n_baseline, 4.0
            if self.stress == "zero":
                draw = rng.random()
                if draw < 0.2:
                    n_canary = n_baseline = 0
                elif draw < 0.3:
                    n_canary = 0
            error_base = min(1.0, BASE_ERROR * multiplier)
            baseline = (n_baseline, binomial(rng, n_baseline, error_base),
                        binomial(rng, n_baseline, min(1.0, slow_base * multiplier)))
            restart_lost = 0
            if self.stress == "resets" and rng.random() < 0.05:
                restart_lost = int(rng.random() * n_canary)
            seen = n_canary - restart_lost
            window = {"requests": seen, "errors": binomial(rng, seen, min(1.0, error_base + added_errors)),
                      "slow": binomial(rng, seen, min(1.0, slow_canary * multiplier))}
            previous = dict(counters, start_time=start_time)
            if restart_lost:
                start_time += 1
                counters = dict(window)
            else:
                counters = {name: counters[name] + window[name] for name in counters}
            deltas, _restarted = _analysis.slot_window_delta(previous, dict(counters, start_time=start_time))
            yield (deltas["requests"], deltas["errors"], deltas["slow"]), baseline


def z_rejects(canary_n, canary_x, baseline_n, baseline_x, critical):
    if canary_n == 0 or baseline_n == 0:
        return False
    pooled = (canary_x + baseline_x) / float(canary_n + baseline_n)
    if pooled <= 0.0 or pooled >= 1.0:
        return False
    spread = math.sqrt(pooled * (1 - pooled) * (1.0 / canary_n + 1.0 / baseline_n))
    return (canary_x / float(canary_n) - baseline_x / float(baseline_n)) / spread > critical


def z_critical(level):
    """The one-sided standard normal quantile 1 - level, by bisection on erfc."""
    low, high = 0.0, 10.0
    for _step in range(80):
        middle = (low + high) / 2
        if 0.5 * math.erfc(middle / math.sqrt(2)) > level:
            low = middle
        else:
            high = middle
    return high


CRITICAL = z_critical(ALPHA / 2)


def rollout(scenario, rng, stop_when_all_detected):
    """The look (1-based) at which each method rolled back, None if it never did, and ours' verdict at the end."""
    analysis = _analysis.new_analysis(ALPHA)
    detected = {method: None for method in METHODS}
    totals = [0, 0, 0, 0, 0, 0]
    verdict = None
    for look, (canary, baseline) in enumerate(scenario.windows(rng), start=1):
        if detected["ours"] is None:
            analysis = _analysis.update_analysis(analysis, (canary[0], canary[1], baseline[0], baseline[1]),
                                                 (canary[0], canary[2], baseline[0], baseline[2]))
            if analysis["errors"]["rejected"] or analysis["latency"]["rejected"]:
                verdict = _analysis.judge(analysis, {"alpha": ALPHA})["verdict"]
                if verdict != "rollback":
                    raise AssertionError("a rejected test must make the judge roll back, not %s" % verdict)
                detected["ours"] = look
        if detected["flagger"] is None and canary[0] > 0 and (
                canary[1] > FLAGGER_ERROR_RATE * canary[0] or canary[2] > FLAGGER_SLOW_SHARE * canary[0]):
            detected["flagger"] = look
        for index, value in enumerate(canary + baseline):
            totals[index] += value
        if detected["kayenta"] is None and (
                z_rejects(totals[0], totals[1], totals[3], totals[4], CRITICAL)
                or z_rejects(totals[0], totals[2], totals[3], totals[5], CRITICAL)):
            detected["kayenta"] = look
        if stop_when_all_detected and all(value is not None for value in detected.values()):
            break
    if detected["ours"] is None:
        verdict = _analysis.judge(analysis, {"alpha": ALPHA}, at_max_duration=True)["verdict"]
    return detected, verdict


def run(scenario, rollouts, seed, stop_early):
    rng = random.Random("%s|%s|%s" % (seed, scenario.name, scenario.canary_rps))
    looks = {method: [] for method in METHODS}
    passes = 0
    for _index in range(rollouts):
        detected, verdict = rollout(scenario, rng, stop_early)
        passes += verdict == "pass"
        for method in METHODS:
            looks[method].append(detected[method])
    return looks, passes


def rate(values):
    return sum(value is not None for value in values) / float(len(values))


def median_time(values):
    """Median seconds to detect over all rollouts; undetected ones count as never."""
    ordered = sorted(math.inf if value is None else value * INTERVAL_S for value in values)
    middle = ordered[(len(ordered) - 1) // 2]
    return "> %d s" % (LOOKS * INTERVAL_S) if middle == math.inf else "%d s" % middle


def margin(rollouts):
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / rollouts)


STRESSES = (("10 % canary, constant", None), ("weights 5 -> 25 -> 50 %, base rates x1 -> x4 -> x2", "weights"),
            ("bursts (10 % of windows: 10x traffic, 4x bad rates)", "bursts"),
            ("zero windows (20 % none, 10 % no canary)", "zero"),
            ("counter resets (canary restarts in 5 % of windows)", "resets"))


def _run_job(job):
    """One scenario in a worker process: its rng is seeded from the scenario, so the figures do
    not depend on how scenarios are spread over processes."""
    scenario, rollouts, seed, stop_early = job
    return run(scenario, rollouts, seed, stop_early)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=10000, help="A/A rollouts per false-rollback scenario")
    parser.add_argument("--detect-rollouts", type=int, default=1000, help="rollouts per detection scenario")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: up to 2); the figures are the same for any number")
    args = parser.parse_args(argv)
    started = time.monotonic()
    failed = []
    jobs = [(Scenario(name, stress=stress), args.rollouts, args.seed, False) for name, stress in STRESSES]
    for canary_rps in CANARY_RATES:
        for label, added, factor in EFFECTS:
            aa = added == 0.0 and factor == 1.0
            jobs.append((Scenario("%s at %d" % (label, canary_rps), canary_rps, (added, factor)),
                         args.detect_rollouts, args.seed, not aa))
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            results = pool.map(_run_job, jobs, chunksize=1)
    else:
        results = [_run_job(job) for job in jobs]
    print("# Canary analysis simulation, %s, seed %d" % (datetime.date.today().isoformat(), args.seed))
    print()
    print("%d req/s in total, %d s interval, %d looks (%d s), base error rate %.1f %%, latency lognormal "
          "(median %d ms, sigma %.1f), bound %g s (baseline slow share %.2f %%, +50 %%: %.2f %%), alpha %g."
          % (TOTAL_RPS, INTERVAL_S, LOOKS, LOOKS * INTERVAL_S, BASE_ERROR * 100, LATENCY_MEDIAN_S * 1000,
             LATENCY_SIGMA, BOUND, slow_share(1.0) * 100, slow_share(1.5) * 100, ALPHA))
    print()
    print("## False rollbacks of identical releases (A/A), %d rollouts each" % args.rollouts)
    print()
    print("| scenario | ours | flagger | kayenta | ours: pass at the end |")
    print("|---|---|---|---|---|")
    for (name, _stress), (looks, passes) in zip(STRESSES, results):
        cells = ["%.2f %%" % (100 * rate(looks[method])) for method in METHODS]
        print("| %s | %s | %.1f %% |" % (name, " | ".join(cells), 100.0 * passes / args.rollouts))
        if rate(looks["ours"]) > margin(args.rollouts):
            failed.append(name)
    print()
    print("## Median time to detect (detected within %d s), %d rollouts each" % (LOOKS * INTERVAL_S,
                                                                                 args.detect_rollouts))
    print()
    print("A/A rows: false rollback rate. Canary at N req/s, baseline at %d - N req/s." % TOTAL_RPS)
    print()
    print("| canary req/s | change | ours | flagger | kayenta |")
    print("|---|---|---|---|---|")
    for (scenario, _rollouts, _seed, stop_early), (looks, _passes) in zip(jobs[len(STRESSES):],
                                                                          results[len(STRESSES):]):
        label = scenario.name.rsplit(" at ", 1)[0]
        if not stop_early:
            cells = ["%.2f %%" % (100 * rate(looks[method])) for method in METHODS]
            if rate(looks["ours"]) > margin(args.detect_rollouts):
                failed.append(scenario.name)
        else:
            cells = ["%s (%.0f %%)" % (median_time(looks[method]), 100 * rate(looks[method])) for method in METHODS]
        print("| %d | %s | %s |" % (scenario.canary_rps, label, " | ".join(cells)))
    print()
    print("%.0f s with %d process(es). %s" % (
        time.monotonic() - started, args.jobs, "Ours kept every A/A rate within alpha + 3 binomial sd."
        if not failed else "Ours exceeded alpha + 3 binomial sd in: " + "; ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
