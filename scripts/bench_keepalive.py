"""Client keep-alive across switches (`make bench-keepalive`, docs/keepalive.md).

Two stacks, one after the other, in the same run (the throw-away stack `sdbench`, ports
18980/18982, as bench-app and bench-promote use):

1. The old default: nginx.edge false, nginx.keepalive_timeout 0 (nginx closes every connection
   after its response). GET / at 64 connections for THROUGHPUT_SECONDS (wrk).
2. The edge (the default now): nginx.edge true, nginx.keepalive_timeout 60. The same wrk run, then
   bench-promote's whole sequence under its load (8 keep-alive clients, 50 requests a second
   each): a canary start, a rollback by the canary policy, a second canary start and a roll
   forward; every failed request and every connection the clients had to open again counted.

Ends with one table: both throughputs and their ratio, the failed requests and the reconnects
through the switches. Like the other benchmarks: exit status 0 whatever the figures, 2 when a
stack cannot be deployed or a step does not do what the sequence needs, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import (  # noqa: E402  pylint: disable=wrong-import-position
    TW_REUSE, DeployError, _interrupt, final_teardown, print_table, reuse_time_wait, run_wrk, verdict,
)
from bench_promote import (  # noqa: E402  pylint: disable=wrong-import-position
    APPS, CLIENTS, DEFAULT_RATE, Load, Sequence, deploy_stable, report, run_under_load, write_manifests,
)

CONNECTIONS = 64
THROUGHPUT_SECONDS = 8
WARMUP_SECONDS = 2
KEEPALIVE_TIMEOUT = 60


def set_listener(manifest, edge):
    data = yaml.safe_load(manifest.read_text())
    data["nginx"]["edge"] = edge
    data["nginx"]["keepalive_timeout"] = KEEPALIVE_TIMEOUT if edge else 0
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))


def throughput(label):
    run_wrk(16, WARMUP_SECONDS)
    result = run_wrk(CONNECTIONS, THROUGHPUT_SECONDS)
    print(f"  {label}: {result['rps']:.0f} req/s at {CONNECTIONS} connections, p99 {result['p99_ms']:.1f} ms, "
          f"{result['non2xx']} non-2xx, {result['socket_errors']} socket errors")
    return result


def run_stack(edge, rate):
    """Deploy, measure, (with the edge) the promotion sequence, tear down: the figures."""
    app = APPS["example"]
    work_dir = tempfile.mkdtemp(prefix="swiftdeploy-bench-keepalive-")
    project_dir = Path(work_dir) / "project"
    figures = {}
    try:
        base, newer = write_manifests(work_dir)
        for manifest in (base, newer):
            set_listener(manifest, edge)
        deploy_stable(base, project_dir, app)
        figures["wrk"] = throughput("keep-alive through the edge" if edge else "close per request (nginx.edge false, the old default)")
        if edge:
            load = Load(CLIENTS, rate, app)
            seq = Sequence(load, base, newer, project_dir)
            aborted = run_under_load(seq, load)
            figures["sequence"] = report(seq, aborted, "Promotion sequence, keep-alive clients through the edge")
            figures["opened"] = sum(load.connections_opened)
            figures["clients"] = load.clients
            figures["aborted"] = aborted
    finally:
        final_teardown(work_dir, project_dir)
    return figures


def main():
    parser = argparse.ArgumentParser(description="Client keep-alive across switches (make bench-keepalive).")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="requests per second of each of the %d sequence clients (default %g)" % (CLIENTS, DEFAULT_RATE))
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _interrupt)
    restore = reuse_time_wait(False)
    try:
        print("== 1. The old default: no edge, nginx.keepalive_timeout 0 ==")
        close = run_stack(False, args.rate)
        print(f"\n== 2. nginx.edge true, nginx.keepalive_timeout {KEEPALIVE_TIMEOUT} ==")
        keep = run_stack(True, args.rate)
    except DeployError as exc:
        print(f"\nERROR: the stack could not be deployed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if restore is not None:
            TW_REUSE.write_text(restore + "\n")
    sequence = keep["sequence"]
    ratio = keep["wrk"]["rps"] / close["wrk"]["rps"] if close["wrk"]["rps"] else float("inf")
    reconnects = keep["opened"] - keep["clients"]
    promotes = f"{len(sequence['promotes'])} of 4 run, " + " / ".join(f"{seconds:.1f}" for _label, seconds in sequence["promotes"]) + " s"
    rows = [
        (f"GET / at {CONNECTIONS} connections, close per request", f"{close['wrk']['rps']:.0f} req/s", "-", "-"),
        (f"GET / at {CONNECTIONS} connections, keep-alive via edge", f"{keep['wrk']['rps']:.0f} req/s", "-", "-"),
        ("keep-alive / close per request", f"{ratio:.2f}x", ">= 1.00x", verdict(ratio >= 1.0)),
        ("wrk errors (non-2xx + socket), both runs",
         str(sum(r["wrk"]["non2xx"] + r["wrk"]["socket_errors"] for r in (close, keep))), "0",
         verdict(all(r["wrk"]["non2xx"] + r["wrk"]["socket_errors"] == 0 for r in (close, keep)))),
        ("promotes (2 canary starts, rollback, roll forward)", promotes, "completed",
         verdict(not keep["aborted"])),
        ("failed requests through the switches", str(sequence["failed"]), "0", verdict(sequence["failed"] == 0)),
        ("reconnects of the keep-alive clients", f"{reconnects} ({keep['opened']} connections for {keep['clients']} clients)",
         "0", verdict(reconnects == 0)),
        ("longest gap between 200s", f"{sequence['gap_ms']:.1f} ms", "-", "-"),
    ]
    print_table(rows, title="Keep-alive across switches")
    return 2 if keep["aborted"] else 0


if __name__ == "__main__":
    sys.exit(main())
