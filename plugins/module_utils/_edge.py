# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Each slot's traffic as nginx saw it: the edge log, read over a window.

This is a private module_utils file: its API may change without notice. No Ansible imports;
only the standard library, so it runs on any managed host.

nginx (the role's nginx.conf) writes one line per request of its public listener into the
project's `edge/` directory, in a file per 100 s of the clock (`edge-<epoch // 100>.log`, the
bucket taken from the same `$msec` the line starts with), so the files rotate by themselves:
nothing renames a file or signals nginx. Old files are deleted by a loop in the nginx container
(the compose file) and by every reader (prune()), so the disk holds about KEEP_SECONDS of
traffic. A line is tab-separated:

    $msec  $swiftdeploy_slot  $status  $request_time  $upstream_response_time  $upstream_status  $request_uri

read_window() returns each slot's requests, 5xx answers, error rate and latency histogram (the
app's bucket bounds, so the p99 is the same histogram_quantile() as for the app's metrics) over
exactly the last `window_seconds`, or over a slot's life when it started later. docs/metrics.md
("At the edge") describes the figures.
"""

from __future__ import annotations

import calendar
import os
import re
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import _figures
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as progress

DIRECTORY = "edge"
# nginx's user in the official image and in images/nginx-debian; the compose file runs it so.
NGINX_UID = 101
BUCKET_SECONDS = 100
FILE_RE = re.compile(r"edge-([0-9]{1,12})\.log")
# The longest window (the manifest's canary.window_seconds maximum), one bucket that straddles
# its start, and a margin for the pruning loop's period: what the disk keeps at most.
MAX_WINDOW_SECONDS = 600
KEEP_SECONDS = MAX_WINDOW_SECONDS + 2 * BUCKET_SECONDS
# The app's histogram bounds (app/swiftdeploy_app.py BUCKETS), so edge and app p99 compare.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOTS = (b"blue", b"green", b"baseline")  # baseline: analysis.baseline fresh (_state.BASELINE_SLOT)
# What the app leaves out of its figures too: probes, scrapes and the operator's control
# endpoint are not traffic, whatever their answer.
EXCLUDED_PATHS = (b"/metrics", b"/healthz", b"/chaos")
FIELDS = 7
CHUNK = 1024 * 1024
# A line from this far in the future (a clock stepped back since) is not counted.
CLOCK_TOLERANCE = 1.0


_STARTED_AT = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})")


class EdgeError(ValueError):
    """The edge log directory cannot be read; the message names it and the fix."""


def ensure_directory(project, uid=NGINX_UID):
    """Make <project>/edge, writable by nginx's uid only (mode 0755: the remote user reads it).
    Returns None, or a sentence saying why nginx cannot write there (the remote user may not
    give a directory to another uid): its figures are then empty and a canary judged on them is
    denied, never allowed."""
    path = os.path.join(project, DIRECTORY)
    if os.path.islink(path):
        return "%s is a symbolic link; remove it, the edge log needs a directory of its own" % path
    if not os.path.isdir(path):
        os.mkdir(path, 0o755)
    found = os.stat(path)
    if found.st_uid != uid:
        try:
            os.chown(path, uid, uid)
        except PermissionError:
            return ("%s is not owned by nginx's uid %d and the remote user cannot give it (run as root, or "
                    "`chown %d:%d %s`); nginx cannot write the edge log" % (path, uid, uid, uid, path))
    if found.st_mode & 0o7777 != 0o755:
        os.chmod(path, 0o755)
    return None


def bucket_of(seconds):
    return int(seconds // BUCKET_SECONDS)


def _bucket_index(text, cache):
    """Index in BUCKETS (len(BUCKETS) for +Inf) of a latency as nginx writes it, or None."""
    index = cache.get(text)
    if index is None and text not in cache:
        try:
            value = float(text.split(b",", 1)[0])
        except ValueError:
            value = None
        if value is not None and value >= 0:
            index = next((number for number, bound in enumerate(BUCKETS) if value <= bound), len(BUCKETS))
        cache[text] = index
    return index


def _excluded(uri):
    path = uri.split(b"?", 1)[0]
    return path in EXCLUDED_PATHS


def _log_files(directory):
    """{bucket: path} of the edge log files in directory; EdgeError when it cannot be listed."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EdgeError("cannot read the edge log directory %s: %s; it must be readable by the remote user"
                        % (directory, exc.strerror or exc))
    files = {}
    for name in names:
        match = FILE_RE.fullmatch(name)
        if match:
            files[int(match.group(1))] = os.path.join(directory, name)
    return files


def _lines(path):
    """The complete lines of a file, read in chunks (bounded memory); a last line without its
    newline (nginx may be writing it) is left out. Yields (line, partial_count)."""
    rest = b""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:  # pruned between listing and opening: nothing in it counts
        return
    with handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
    if rest:
        yield None


class _Tally(object):
    """Counts per (slot, 5xx, latency text); figures are made once at the end."""

    def __init__(self):
        self.counts = {}
        self.skipped = 0
        self.partial = 0
        self.excluded = 0
        self.future = 0

    def add_file(self, path, since, until, check_time):
        counts = self.counts
        for line in _lines(path):
            if line is None:
                self.partial += 1
                continue
            parts = line.split(b"\t")
            if len(parts) != FIELDS or parts[1] not in SLOTS:
                self.skipped += bool(line)
                continue
            if check_time:
                try:
                    at = float(parts[0])
                except ValueError:
                    self.skipped += 1
                    continue
                if at > until + CLOCK_TOLERANCE:
                    self.future += 1
                    continue
                if at <= since.get(parts[1], since[None]) or at > until:
                    continue
            if _excluded(parts[6]):
                self.excluded += 1
                continue
            key = (parts[1], parts[2][:1] == b"5" and len(parts[2]) == 3, parts[4] if parts[4] != b"-" else parts[3])
            counts[key] = counts.get(key, 0) + 1

    def figures(self, slot, seconds):
        requests = errors = 0
        per_bucket = [0] * (len(BUCKETS) + 1)
        cache = {}
        for (name, server_error, latency), count in self.counts.items():
            if name != slot:
                continue
            requests += count
            errors += count if server_error else 0
            index = _bucket_index(latency, cache)
            if index is not None:
                per_bucket[index] += count
        latency, running = {}, 0
        for bound, count in zip(BUCKETS + (float("inf"),), per_bucket):
            running += count
            latency[bound] = running
        rate = requests / seconds if seconds > 0 else None
        return _figures(requests, errors, latency if requests else {}, seconds, rate, False)


def read_window(directory, window_seconds, now=None, life_starts=None):
    """Each slot's traffic over the last window_seconds before `now`, from the edge log.

    life_starts: {slot: epoch seconds} of slots that started later than the window's start; their
    window begins then (a younger canary is measured over its life, never before it). Returns
    {slots: {slot: figures as _metrics.window() gives them}, window_seconds, since, until, files,
    skipped (lines that are not edge lines), partial, excluded (internal paths), future (lines
    after `now`: the clock went back)}. A missing directory is an empty log, not an error.
    """
    now = time.time() if now is None else now
    start = now - window_seconds
    since = {None: start}
    for slot, started in (life_starts or {}).items():
        if started is not None and started > start:
            since[slot.encode("ascii")] = min(started, now)
    earliest = min(since.values())
    tally = _Tally()
    files = _log_files(directory)
    chosen = sorted(bucket for bucket in files if bucket_of(earliest) <= bucket)
    for bucket in chosen:
        # A file wholly inside every slot's window needs no clock on its lines.
        inside = bucket * BUCKET_SECONDS > max(since.values()) and (bucket + 1) * BUCKET_SECONDS <= now
        tally.add_file(files[bucket], since, now, not inside)
    slots = {}
    for slot in SLOTS:
        seconds = max(0.0, now - since.get(slot, start))
        slots[slot.decode("ascii")] = tally.figures(slot, seconds)
    return {"slots": slots, "window_seconds": max(0.0, now - start), "since": start, "until": now,
            "files": len(chosen), "skipped": tally.skipped, "partial": tally.partial,
            "excluded": tally.excluded, "future": tally.future}


def prune(directory, now=None, keep_seconds=KEEP_SECONDS, remove=os.unlink):
    """Delete the edge log files wholly older than keep_seconds; the names deleted. A file that
    cannot be deleted (owned by nginx, the remote user is not root) is left to nginx's own loop."""
    now = time.time() if now is None else now
    gone = []
    for bucket, path in sorted(_log_files(directory).items()):
        if (bucket + 1) * BUCKET_SECONDS < now - keep_seconds:
            try:
                remove(path)
            except OSError:
                continue
            gone.append(os.path.basename(path))
    return gone


def parse_started_at(text):
    """Epoch seconds of a Docker timestamp (State.StartedAt: RFC 3339, nanoseconds, Z or an
    offset), or None for Docker's zero time and anything else."""
    match = _STARTED_AT.fullmatch(text or "")
    if not match or match.group(1).startswith("0001-"):
        return None
    seconds = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    fraction = float("0" + match.group(2)) if match.group(2) else 0.0
    offset = 0
    if match.group(3) != "Z":
        sign = -1 if match.group(3)[0] == "-" else 1
        offset = sign * (int(match.group(3)[1:3]) * 3600 + int(match.group(3)[4:6]) * 60)
    return seconds + fraction - offset


def life_starts(engine, project, services):
    """{slot: when its running container started} for {slot: compose service} of the project,
    from the engine; a slot without a running container is left out. EngineError passes up."""
    wanted = dict((service, slot) for slot, service in services.items())
    starts = {}
    for entry in engine.ps(project):
        slot = wanted.get(entry.get("Service"))
        if slot is None or entry.get("State") != "running":
            continue
        started = parse_started_at((engine.inspect(entry.get("ID") or entry.get("Name")).get("State") or {}).get("StartedAt"))
        if started is not None:
            starts[slot] = started
    return starts


def describe(figures):
    """One line for a slot's figures."""
    if figures["requests"] == 0:
        return "no requests in %.1f s" % figures["window_seconds"]
    p99 = "%.1f ms" % figures["p99_latency_ms"] if figures["p99_latency_ms"] is not None else "unknown"
    return ("%d requests in %.1f s (%.2f/s), %d errors (%.2f%%), p99 %s"
            % (figures["requests"], figures["window_seconds"], figures["req_per_s"] or 0.0, figures["errors"],
               figures["error_rate_percent"], p99))


def measure(directory, window_seconds, life_starts=None, wait_for=(), clock=time.time, sleep=time.sleep,
            prune_files=True):
    """read_window() over the last window_seconds, waiting first when a slot of wait_for (the
    canary) started less than the window ago (life_starts), as a canary judged on the app's
    metrics is waited for, so that its window is never shorter than asked: it is then its whole
    life. Adds window_source ("edge", or "edge-waited") and waited_seconds, and a message per
    slot; prunes old files unless told not to (check mode)."""
    now = clock()
    life_starts = life_starts or {}
    youngest = max([life_starts[slot] for slot in wait_for if life_starts.get(slot) is not None]
                   or [now - window_seconds])
    wait = min(window_seconds, youngest + window_seconds - now)
    if wait > 0:
        with progress.waiting("the canary (slot %s) to be a %g s window old" % (", ".join(wait_for), window_seconds),
                              wait):
            sleep(wait)
        now = clock()
    result = read_window(directory, window_seconds, now, life_starts)
    result["window_source"] = "edge-waited" if wait > 0 else "edge"
    result["waited_seconds"] = round(max(0.0, wait), 3)
    result["messages"] = dict((slot, describe(figures)) for slot, figures in result["slots"].items())
    result["pruned"] = len(prune(directory, now)) if prune_files else 0
    return result


# The `edge` option of host_resources_info and stack_lock (host.edge).
ARGUMENT_SPEC = {
    "path": {"type": "path", "required": True},
    "window_seconds": {"type": "float", "required": True},
    "project": {"type": "path"},
    "services": {"type": "dict", "default": {}},
    "wait_for_canary": {"type": "bool", "default": False},
}


def measure_option(options, open_engine, canary=None, check_mode=False):
    """What the modules' `edge` option returns: measure() over options (ARGUMENT_SPEC), the
    slots' life starts found through open_engine() when options name their services, waiting
    for `canary` only with wait_for_canary, deleting no file in check mode; or {error} naming
    what could not be read."""
    if not 0 < options["window_seconds"] <= MAX_WINDOW_SECONDS:
        return {"error": "edge.window_seconds: %s; give more than 0 and at most %d seconds (canary.window_seconds)"
                         % (options["window_seconds"], MAX_WINDOW_SECONDS)}
    starts = {}
    try:
        if options["services"]:
            if not options["project"]:
                return {"error": "edge.project: give the compose project directory with edge.services"}
            starts = life_starts(open_engine(), options["project"], options["services"])
        wait_for = [canary] if canary and options["wait_for_canary"] else []
        result = measure(options["path"], options["window_seconds"], starts, wait_for, prune_files=not check_mode)
    except (EdgeError, EngineError, OSError, ValueError) as exc:
        return {"error": str(exc)}
    result["life_starts"] = starts
    return result
