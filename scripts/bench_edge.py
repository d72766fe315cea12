"""How long judging a canary from the edge log takes (`python scripts/bench_edge.py`).

Writes an edge log as nginx would (roles/swiftdeploy/templates/nginx.conf.j2, log_format
swiftdeploy_edge: a file per 100 s) holding --seconds of traffic at --rate requests per second
(default 600 s at 1000/s: the longest window at a busy service), split 90/10 between the stable
and the canary slot, with 1 % of the canary's answers 500 and a few probes of internal paths, then
times plugins/module_utils/_edge.py's read_window() over the whole window, --runs times (the
page cache warm after the first), and prints the figures: lines and bytes read, seconds per read
(best, median), lines per second, the Python heap's peak during a read (tracemalloc), and the
disk the log takes. Exit status 1 when the figures are wrong (a reader that lost lines).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _edge as edge  # noqa: E402

LATENCIES = ["0.001", "0.002", "0.003", "0.004", "0.006", "0.012", "0.030", "0.120"]


def write_log(directory, now, seconds, rate, seed=7):
    """The edge log of `seconds` of traffic before `now`; (canary requests, canary 5xx, lines)."""
    generator = random.Random(seed)
    canary = errors = lines = 0
    handles = {}
    total = int(seconds * rate)
    start = now - seconds
    for number in range(total):
        at = start + (number + 0.5) / rate
        bucket = edge.bucket_of(at)
        if bucket not in handles:
            handles[bucket] = open(os.path.join(directory, "edge-%d.log" % bucket), "w")
        slot = "green" if generator.random() < 0.1 else "blue"
        status = "200"
        uri = "/"
        if number % 500 == 0:
            uri = "/healthz"
        elif slot == "green":
            canary += 1
            if generator.random() < 0.01:
                status = "500"
                errors += 1
        latency = generator.choice(LATENCIES)
        handles[bucket].write("%.3f\t%s\t%s\t%s\t%s\t%s\t%s\n" % (at, slot, status, latency, latency, status, uri))
        lines += 1
    for handle in handles.values():
        handle.close()
    return canary, errors, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="window and traffic length (default 600)")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second (default 1000)")
    parser.add_argument("--runs", type=int, default=5, help="reads to time (default 5)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-edge.")
    try:
        now = time.time()
        began = time.monotonic()
        canary, errors, lines = write_log(directory, now, args.seconds, args.rate)
        written = time.monotonic() - began
        size = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
        timings = []
        for _run in range(args.runs):
            began = time.monotonic()
            result = edge.read_window(directory, args.seconds + 1, now + 1)
            timings.append(time.monotonic() - began)
        tracemalloc.start()
        edge.read_window(directory, args.seconds + 1, now + 1)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        green = result["slots"]["green"]
        best, median = min(timings), statistics.median(timings)
        print("edge log: %d lines (%.0f s at %.0f req/s), %d files, %.1f MB on disk (written in %.1f s)"
              % (lines, args.seconds, args.rate, result["files"], size / 1e6, written))
        print("read_window over %.0f s: best %.3f s, median %.3f s of %d runs; %.0f lines/s; heap peak %.1f MB"
              % (args.seconds, best, median, args.runs, lines / best, peak / 1e6))
        print("canary: %d requests, %d errors (%.2f%%), p99 %s ms; stable: %d requests, p99 %s ms; excluded %d"
              % (green["requests"], green["errors"], green["error_rate_percent"] or 0, green["p99_latency_ms"],
                 result["slots"]["blue"]["requests"], result["slots"]["blue"]["p99_latency_ms"], result["excluded"]))
        counted = green["requests"] + result["slots"]["blue"]["requests"] + result["excluded"]
        if (green["requests"], green["errors"], counted) != (canary, errors, lines):
            print("WRONG: expected canary %d requests, %d errors, %d lines in all" % (canary, errors, lines))
            return 1
        return 0
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    sys.exit(main())
