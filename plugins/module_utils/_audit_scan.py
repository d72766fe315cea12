# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit's reading: one pass over a stack's history that checks its hash chain and sums up
what happened, in parallel parts for a long history; `build_report` returns the report's data.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports (only the collection's own module_utils) so that the unit tests and the benchmark drive
it directly.

One pass. The history is read once, line by line, and the chain is checked by
`_history.ChainVerifier`, which applies verify's rules, so the report names the same first
broken line as audit_verify_info; after a break the report keeps summing up (and says from
where on the lines cannot be trusted). Lines are proven genuine the fast way
(`_audit_proof.LineProver`) or the slow way; proven lines that follow each other reach the
verifier as runs.

Parts. A long history is split at line starts into parts read at the same time by forked
workers; each sends back a digest of its part (`_audit_digest._Digest`) and, for the chain, its
runs and broken lines, which are replayed in file order through the one verifier. Digests merge
into the digest of reading the file in one go.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_digest import (
    TIMELINE_LIMIT,
    _chaos_state,
    _Digest,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_proof import (
    SCRAPE,
    LineProver,
    _FLAGS,
    _HEX64,
    _MINUTE_OF_DAY,
    _SCRAPE_LINE_NL,
    _hash_matches,
    _parse,
    _run_end,
    _sha256,
    _string,
    chain_verdict,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_view import report_data
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import (
    ChainVerifier,
    verify,
    verify_macs,
)

PART_BYTES = 16 * 1024 * 1024   # a history is read in parallel parts of at least this size
BLOCK_BYTES = 1024 * 1024       # and read in blocks of this size


class ReportError(Exception):
    """The history cannot be read; the message says why."""


# --------------------------------------------------------------------------------------------
# One part: every line to the chain, every record to the digest
# --------------------------------------------------------------------------------------------


def scan(digest, blocks, chain):
    """Push every line to the chain and sum up every record.

    blocks yields lists of lines (with their newline) as _range_blocks reads them.
    Lines are proven the fast way (plain status_scrape lines, then any line in the writer's
    layout) or by re-serialising them (parse_line and record_hash); proven lines that follow
    each other go to the chain as runs. Lines that are not sound records go to chain.add,
    which names what is wrong with them. Plain status_scrape lines (nine in ten) are proven
    and summed up here, inline, from their raw tokens (LineProver.scrape makes the same
    checks, for one line); other records go through record(), and after a status_scrape
    that went that way the locals that mirror the digest's state for the inline path are
    reset.
    """
    prover = LineProver()
    prove_record, known_actor, check_actor = prover.record, prover.known_actor, prover.actor
    scrape_line = _SCRAPE_LINE_NL.fullmatch
    add_run, anchor_seq = chain.add_proven_run, chain.anchor_seq
    chart, day_seconds = digest.chart, digest.clock.day_seconds
    scrapes = 0
    need_first = digest.first_stamp is None
    last_inline = None                  # the last line when it was summed up inline
    run = 0                             # lines in the run of proven lines not yet pushed
    first = None                        # (seq, event, prev, hash) of its first line
    last_seq = last_event = last_prev = last_hash = None    # of its last line, hashes in bytes
    day_key = day = None                # b"YYYY-MM-DD" and its seconds since 1970
    low = high = 0.0                    # the chart bucket now filled inline: [low, high)
    bucket = None
    # The bucket's counters while it is filled inline, written back before anything else
    # reads the chart: the same additions in the same order as on the bucket itdigest.
    error_sum = p99_sum = 0.0
    error_count = p99_count = 0
    chaos_token = seen = None
    for lines in blocks:
        for raw in lines:
            match = scrape_line(raw)
            if match is not None:
                (actor, chaos, error_rate, p99, canary_pass, infra_pass, reasons, token, prev,
                 seq, stamp) = match.groups()
                start = match.start(8)  # of the hash: 64 characters, then `",`
                if ((known_actor(actor) or check_actor(actor))
                        and _sha256(raw[:start - 8] + raw[start + 66:-1]).hexdigest()
                        == token.decode("ascii")
                        and (prev == last_hash or _HEX64(prev))):
                    seq = int(seq)
                    if run and seq == last_seq + 1 and prev == last_hash and seq != anchor_seq:
                        run += 1
                    else:
                        if run:
                            add_run(run, first, _run_end(last_seq, last_event, last_prev,
                                                         last_hash))
                        run, first = 1, (seq, SCRAPE, prev.decode("ascii"),
                                         token.decode("ascii"))
                        if seq == anchor_seq:
                            add_run(1, first, first)
                            run = 0
                    last_seq, last_event, last_prev, last_hash = seq, SCRAPE, prev, token
                    scrapes += 1
                    last_inline = raw
                    if need_first:
                        digest.first_stamp = stamp.decode("ascii")
                        need_first = False
                    if error_rate != b"null" or p99 != b"null":
                        if stamp[:10] != day_key:
                            day_key = stamp[:10]
                            day = day_seconds(day_key)
                        if day is not None:
                            minute = day + _MINUTE_OF_DAY[stamp[11:16]]
                            if not low <= minute < high:
                                if bucket is not None:
                                    bucket[:] = error_sum, error_count, p99_sum, p99_count
                                chart.add(minute, None, None)
                                bucket, low, high = chart.current()
                                error_sum, error_count, p99_sum, p99_count = bucket
                            if error_rate != b"null":
                                error_sum += float(error_rate)
                                error_count += 1
                            if p99 != b"null":
                                p99_sum += float(p99)
                                p99_count += 1
                    if infra_pass == b"false" or canary_pass == b"false":
                        digest.policy_failure(stamp.decode("ascii"), _FLAGS[infra_pass],
                                              _FLAGS[canary_pass],
                                              tuple(json.loads(b"[" + reasons + b"]")))
                    if chaos != chaos_token:
                        chaos_token = chaos
                        seen = digest.chaos_now(_chaos_state(_string(chaos)),
                                                stamp.decode("ascii"))
                    elif seen is not None:
                        seen[0] += 1
                        seen[2] = stamp.decode("ascii")
                    continue
            # Any other line
            record = prove_record(raw)
            sound = record is not None
            if not sound:
                record, error = _parse(raw)
                sound = error is None and _hash_matches(record)
                if not sound:
                    if run:
                        add_run(run, first, _run_end(last_seq, last_event, last_prev,
                                                     last_hash))
                        run = 0
                    chain.add(raw)
                    if error is not None:
                        digest.not_records += 1
                        continue
            if sound:
                seq, prev = record["seq"], record["prev"].encode("ascii")
                if run and seq == last_seq + 1 and prev == last_hash and seq != anchor_seq:
                    run += 1
                else:
                    if run:
                        add_run(run, first, _run_end(last_seq, last_event, last_prev,
                                                     last_hash))
                    run, first = 1, (seq, record["event"], record["prev"], record["hash"])
                    if seq == anchor_seq:
                        add_run(1, first, first)
                        run = 0
                last_seq, last_event, last_prev, last_hash = (
                    seq, record["event"], prev, record["hash"].encode("ascii"))
            last_inline = None  # record() notes the last stamp and names itself
            if record["event"] == SCRAPE:
                # A scrape the inline path could not take: record() adds it to the chart and
                # to the chaos state, so the inline path writes its bucket back first and
                # starts over after it. Other events touch neither.
                if bucket is not None:
                    bucket[:] = error_sum, error_count, p99_sum, p99_count
                bucket = chaos_token = None
                low = high = 0.0
            digest.record(record)
            need_first = False
    if bucket is not None:
        bucket[:] = error_sum, error_count, p99_sum, p99_count
    if run:
        add_run(run, first, _run_end(last_seq, last_event, last_prev, last_hash))
    if last_inline is not None:
        _inline_last(digest, last_inline)
    digest.events += scrapes
    digest.scrapes += scrapes
    digest.by_event[SCRAPE] += scrapes


def _inline_last(digest, raw):
    """The last stamp and names, from the last line when it was summed up inline."""
    record = LineProver().record(raw)
    digest.last_stamp = record["timestamp"]
    digest.last_names = (record["stack"], record["host"])


# --------------------------------------------------------------------------------------------
# Reading the history once, in parts
# --------------------------------------------------------------------------------------------


class _ChainLog:
    """Stands in for the ChainVerifier in a worker that reads one part of the history: keeps,
    in order, what the verifier needs (runs of proven lines, and the raw bytes of lines that
    are not sound records) for the process that checks the whole chain. Items go to `sink` in
    batches, so that a part full of broken lines does not fill the memory."""

    BATCH = 1024

    def __init__(self, anchor_seq, sink):
        self.anchor_seq = anchor_seq
        self.items = []
        self._sink = sink

    def add_proven_run(self, count, first, last):
        self._keep((count, first, last))

    def add(self, raw):
        self._keep((0, raw, None))

    def _keep(self, item):
        self.items.append(item)
        if len(self.items) >= self.BATCH:
            self.flush()

    def flush(self):
        if self.items:
            self._sink(self.items)
            self.items = []


def _replay(items, chain):
    """Push a worker's chain items to the real verifier."""
    for count, first, last in items:
        if count:
            chain.add_proven_run(count, first, last)
        else:
            chain.add(first)


def _range_blocks(handle, start, end):
    """The lines of the file between two line starts, as iterating the file gives them (with
    their newline), in lists read BLOCK_BYTES at a time. Lines appended after `end` was taken are
    left for the next reader; a line that `end` cuts (one still being written when the report
    started) is read whole, up to its newline, as reading the file line by line would."""
    if start >= end:
        return
    handle.seek(start)
    position, carry = start, b""
    while position < end:
        data = handle.read(min(BLOCK_BYTES, end - position))
        if not data:  # the file shrank meanwhile
            break
        position += len(data)
        # BytesIO finds newlines with memchr: several times faster than bytes.split here.
        lines = io.BytesIO(carry + data).readlines()
        carry = b"" if lines[-1].endswith(b"\n") else lines.pop()
        if lines:
            yield lines
    if carry:
        yield [carry + handle.readline()]


def _line_ranges(handle, size, parts):
    """Split the file into `parts` byte ranges of about the same size, each starting a line."""
    bounds = [0]
    for part in range(1, parts):
        handle.seek(size * part // parts)
        handle.readline()  # to the start of the next line
        start = handle.tell()
        if bounds[-1] < start < size:
            bounds.append(start)
    bounds.append(size)
    return list(zip(bounds[:-1], bounds[1:]))


def _parallel_parts(size, workers):
    """How many parts to read at once: one per CPU (up to 4), each of PART_BYTES or more."""
    if workers is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        workers = min(cpus, 4)
    return max(1, min(workers, size // PART_BYTES))


def _send(fd, message):
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = struct.pack("!Q", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _receive(handle):
    header = handle.read(8)
    if len(header) < 8:
        return None
    (length,) = struct.unpack("!Q", header)
    data = handle.read(length)
    if len(data) < length:
        return None
    return pickle.loads(data)  # from our own worker, never from the history


def _work(path, start, end, anchor_seq, timeline_limit, fd):
    """A worker: sum up one part of the history and log its chain for the parent."""
    digest = _Digest(timeline_limit, continued=True)
    chain = _ChainLog(anchor_seq, lambda items: _send(fd, ("items", items)))
    with open(path, "rb") as handle:
        scan(digest, _range_blocks(handle, start, end), chain)
    chain.flush()
    _send(fd, ("digest", digest))


class _Worker:
    """A forked process reading one part of the history; its results are read in file order."""

    def __init__(self, path, start, end, anchor_seq, timeline_limit):
        self.range = (start, end)
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            status = 0
            try:
                os.close(read_fd)
                _work(path, start, end, anchor_seq, timeline_limit, write_fd)
            except BaseException as exc:  # pylint: disable=broad-except
                status = 1
                try:
                    _send(write_fd, ("error", "%s: %s" % (type(exc).__name__, exc)))
                except BaseException:  # pylint: disable=broad-except
                    pass
            os._exit(status)
        os.close(write_fd)
        self.pipe = os.fdopen(read_fd, "rb")

    def results(self, chain):
        """Replay the worker's chain items into chain and return its digest, or None when the
        worker failed before sending any (the caller then reads the part itself)."""
        replayed = False
        try:
            while True:
                message = _receive(self.pipe)
                if message is not None and message[0] == "digest":
                    return message[1]
                if message is None or message[0] == "error":
                    if not replayed:
                        return None
                    raise ReportError("the process reading bytes %d to %d of the history failed "
                                      "midway (%s); run the report again"
                                      % (self.range + ("it exited" if message is None
                                                       else message[1],)))
                _replay(message[1], chain)
                replayed = True
        finally:
            self.pipe.close()
            os.waitpid(self.pid, 0)


def read_history(path, anchor=None, timeline_limit=TIMELINE_LIMIT, workers=None):
    """Read the history at path once: (what ChainVerifier.result says, the finished digest).

    The history is read up to the size it has when the reading starts: events appended
    meanwhile are left for the next reader. A long history is read in parts by up to `workers`
    forked processes (by default one per CPU, at most 4); the result is the same as reading it
    in one go. Raises FileNotFoundError for a missing history, ReportError when it cannot be
    read, HistoryError for a bad anchor.
    """
    if isinstance(timeline_limit, bool) or not isinstance(timeline_limit, int) \
            or timeline_limit < 0:
        raise ReportError("timeline_limit must be a whole number of events, 0 or more, not %r."
                          % (timeline_limit,))
    chain = ChainVerifier(anchor)
    digest = _Digest(timeline_limit)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            ranges = _line_ranges(handle, size, _parallel_parts(size, workers))
            _read_parts(path, handle, ranges, chain, digest, timeline_limit)
    except FileNotFoundError:  # the caller says what a missing history means
        raise
    except OSError as exc:
        raise ReportError("cannot read the history %s: %s" % (path, exc.strerror or exc))
    digest.finish()
    return chain.result(), digest


def build_report(path, anchor=None, timeline_limit=TIMELINE_LIMIT, stack=None, host=None, key=None,
                 workers=None):
    """Read the history at path once and return the report's data: the verdict (as
    chain_verdict), "summary" and one entry per section of the report (see _audit_view).

    anchor is {"seq", "hash"} as for _history.verify. stack and host name the title; by
    default those of the last record. Raises ReportError when the history is missing or
    unreadable, HistoryError for a bad anchor.
    """
    try:
        result, digest = read_history(path, anchor, timeline_limit, workers)
    except FileNotFoundError:
        raise ReportError("no history at %s: nothing has been recorded for this stack on this "
                          "host yet" % path)
    data = with_macs(chain_verdict(result, digest.events), path, key)
    data.update(report_data(path, data, digest, stack, host, anchor))
    return data


def with_macs(verdict, path, key):
    """The verdict, failed at the first record without a valid MAC when the history is keyed
    (a second pass, only with a key: keyed lines never take the fast way)."""
    if not key or not verdict["verified"]:
        return verdict
    found = verify_macs(path, key)
    if found is None:
        return verdict
    return dict(verdict, verified=False, problem={"line": found["line"], "seq": found["seq"], "event": found["event"],
                                                  "kind": found["problem"], "reason": found["message"]})


def verify_history(path, anchor=None, workers=None, key=None):
    """Check the chain of the history at path as build_report does and return the verdict
    (chain_verdict); a missing history is an empty, valid one, as for _history.verify."""
    try:
        result, digest = read_history(path, anchor, 0, workers)
    except FileNotFoundError:
        return chain_verdict(verify(path, anchor), 0)
    return with_macs(chain_verdict(result, digest.events), path, key)


def _read_parts(path, handle, ranges, chain, digest, timeline_limit):
    """The first part here, the others in forked workers; results are taken in file order."""
    workers = []
    try:
        for start, end in ranges[1:]:
            try:
                workers.append(_Worker(path, start, end, chain.anchor_seq, timeline_limit))
            except OSError:  # cannot fork: read what is left here
                workers.append(None)
        scan(digest, _range_blocks(handle, *ranges[0]), chain)
        for (start, end), worker in zip(ranges[1:], workers):
            part = worker.results(chain) if worker is not None else None
            if part is None:  # the worker failed before sending anything: read its part here
                part = _Digest(timeline_limit, continued=True)
                scan(part, _range_blocks(handle, start, end), chain)
            digest.merge(part)
    finally:  # after a failure: stop the workers whose results are no longer wanted
        for worker in workers:
            if worker is not None and not worker.pipe.closed:
                worker.pipe.close()
                os.kill(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)
