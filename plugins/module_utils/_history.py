# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The stack's history: an append-only JSON Lines file whose records form a hash chain.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports so that the unit tests can exercise every rule directly.

Each record carries `prev`, the hash of the record before it (64 zeros for the first), and
`hash`, the SHA-256 of its own canonical JSON without `hash`. Editing, removing, inserting or
reordering lines therefore breaks the chain, and `verify` names the first line where it breaks.
`ChainVerifier` applies the same rules to lines pushed to it one at a time, for readers that go
through the file anyway (the audit report), so that the file is read once.
Removing lines from the end cannot be seen from the file alone: compare with a hash kept
elsewhere (an anchor), which every append returns.

Writers serialise on an exclusive `flock` of a sidecar file `<history>.lock`, read only the
tail of the history to find the previous record, and add one line with one `write` on an
`O_APPEND` descriptor followed by `fsync`.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import hmac
import json
import os
import re

GENESIS = "0" * 64
EVENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# Every record has these keys; `stack`, `mode` and `version` may be null.
RECORD_FIELDS = ("seq", "timestamp", "event", "stack", "host", "actor", "mode", "version",
                 "details", "prev", "hash")
# What a caller of append_event provides; the rest is computed under the lock.
CALLER_FIELDS = ("event", "stack", "host", "actor", "mode", "version", "details")
PROBLEMS = ("edited", "removed", "inserted", "reordered", "malformed", "truncated")

HISTORY_MODE = 0o640
LOCK_MODE = 0o600
_TAIL_CHUNK = 64 * 1024


class HistoryError(ValueError):
    """A record that cannot be written, or a history that cannot be appended to."""


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def utc_timestamp(now=None):
    """RFC 3339 UTC with milliseconds, e.g. 2026-05-05T20:34:51.123Z."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    now = now.astimezone(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def canonical_json(record):
    """The bytes that are hashed: sorted keys, no spaces, ASCII only."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def record_hash(record):
    """SHA-256 hex of the record's canonical JSON, `hash` and `mac` excluded."""
    body = {key: value for key, value in record.items() if key not in ("hash", "mac")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def record_mac(key, hash_):
    """The keyed MAC of a record: HMAC-SHA256 of its hash under the history key. Whoever rewrites
    and re-hashes lines without the key cannot give them valid MACs."""
    return hmac.new(key.encode("utf-8"), hash_.encode("ascii"), hashlib.sha256).hexdigest()


def serialize(record):
    """One line of the history file: compact sorted JSON in UTF-8 with its newline."""
    return (json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                       allow_nan=False) + "\n").encode("utf-8")


def _optional_str(fields, name):
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise HistoryError("%s must be a string or null, not %r." % (name, value))
    return value


def build_record(fields, seq, prev, now=None, key=None):
    """Return the complete record (with `hash`) for caller fields at position seq after prev.

    The record goes through a JSON round trip before hashing, so what verify later parses
    from the file hashes to exactly the same value (tuples, non-string keys and the like are
    normalised here, not discovered later as a false "edited").
    """
    unknown = sorted(set(fields) - set(CALLER_FIELDS))
    if unknown:
        raise HistoryError("unknown record field(s) %s; the fields are %s."
                           % (", ".join(unknown), ", ".join(CALLER_FIELDS)))
    event = fields.get("event")
    if not isinstance(event, str) or not EVENT_RE.match(event):
        raise HistoryError("event %r is not an event name; use lower-case letters, digits and _, "
                           "starting with a letter, at most 64 characters (e.g. deploy)." % (event,))
    host = fields.get("host")
    if not isinstance(host, str) or not host:
        raise HistoryError("host must be a non-empty string, not %r." % (host,))
    actor = fields.get("actor")
    if not isinstance(actor, dict):
        raise HistoryError("actor must be a dict with at least user, not %r." % (actor,))
    actor = {key: value for key, value in actor.items() if value is not None}
    if not isinstance(actor.get("user"), str) or not actor["user"]:
        raise HistoryError("actor.user must be a non-empty string, not %r." % (actor.get("user"),))
    details = fields.get("details")
    if details is None:
        details = {}
    if not isinstance(details, dict):
        raise HistoryError("details must be a dict, not %s." % type(details).__name__)
    record = {
        "seq": seq,
        "timestamp": utc_timestamp(now),
        "event": event,
        "stack": _optional_str(fields, "stack"),
        "host": host,
        "actor": actor,
        "mode": _optional_str(fields, "mode"),
        "version": _optional_str(fields, "version"),
        "details": details,
        "prev": prev,
    }
    try:
        record = json.loads(json.dumps(record, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise HistoryError("the record cannot be stored as JSON (%s); keep details to strings, "
                           "numbers, booleans, null, lists and dicts." % exc)
    record["hash"] = record_hash(record)
    if key:
        record["mac"] = record_mac(key, record["hash"])
    return record


# --------------------------------------------------------------------------------------------
# Parsing one line
# --------------------------------------------------------------------------------------------


def _no_duplicate_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("it repeats the key %r" % key)
        result[key] = value
    return result


def _no_constants(name):
    raise ValueError("it contains %s, which JSON does not allow" % name)


def _shape_problem(record):
    """Return why a parsed JSON object is not a history record, or None."""
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        return "it lacks the field%s %s" % ("s" if len(missing) > 1 else "", ", ".join(missing))
    seq = record["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "its seq %r is not a positive integer" % (seq,)
    if not isinstance(record["event"], str) or not EVENT_RE.match(record["event"]):
        return "its event %r is not an event name" % (record["event"],)
    for name in ("prev", "hash", "mac"):
        if name in record and (not isinstance(record[name], str) or not HASH_RE.match(record[name])):
            return "its %s %r is not 64 lower-case hex digits" % (name, record[name])
    for name in ("timestamp", "host"):
        if not isinstance(record[name], str):
            return "its %s %r is not a string" % (name, record[name])
    for name in ("actor", "details"):
        if not isinstance(record[name], dict):
            return "its %s is not an object" % name
    return None


def parse_line(raw):
    """Return (record, error) for one line's bytes without its newline; exactly one is None."""
    if not raw.strip():
        return None, "it is empty"
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                           parse_constant=_no_constants)
    except UnicodeDecodeError:
        return None, "it is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, "it is not valid JSON (%s, column %d)" % (exc.msg, exc.colno)
    except ValueError as exc:
        return None, str(exc)
    except RecursionError:
        return None, "it nests too deeply"
    if not isinstance(value, dict):
        return None, "it is a JSON %s, not a record object" % type(value).__name__
    problem = _shape_problem(value)
    if problem:
        return value, problem
    return value, None


# --------------------------------------------------------------------------------------------
# Appending
# --------------------------------------------------------------------------------------------


def _backwards(fd, size):
    """Yield the file's lines from last to first, without newlines.

    The first item is what follows the last newline: b"" when the file ends with a newline,
    otherwise a torn line. Reads fixed-size blocks from the end, so appending to a long history
    costs the same as to a short one.
    """
    pos, carry = size, b""
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        block = os.pread(fd, pos - start, start) + carry
        pos = start
        pieces = block.split(b"\n")
        carry = pieces[0]
        yield from reversed(pieces[1:])
    if size:
        yield carry


def _tail(fd, path):
    """Return (seq, hash, torn) of the last record; (0, GENESIS, False) for an empty file.

    Lines that are not records (a torn write, garbage) are stepped over: they stay in the file
    for verify to report, and the new record chains to the last real one.
    """
    size = os.fstat(fd).st_size
    lines = _backwards(fd, size)
    torn = next(lines, b"") != b""
    for raw in lines:
        record, error = parse_line(raw)
        if error is None:
            return record["seq"], record["hash"], torn
    if size:
        raise HistoryError("%s holds no history record; it is not a SwiftDeploy history. Move it "
                           "aside to start a new history." % path)
    return 0, GENESIS, False


def _fsync_dir(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_event(path, record_fields, now=None, key=None):
    """Append one event to the history at path and return the record written.

    record_fields holds event, host, actor and optionally stack, mode, version and details;
    seq, timestamp, prev and hash are computed here, under the lock. The directory must exist.
    """
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        created = False
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         HISTORY_MODE)
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            if created:
                os.fchmod(fd, HISTORY_MODE)  # the umask must not decide who reads the history
            seq, prev, torn = _tail(fd, path)
            record = build_record(record_fields, seq + 1, prev, now, key)
            # A torn line is closed first, so it stays one malformed line and ours stays whole.
            data = (b"\n" if torn else b"") + serialize(record)
            written = os.write(fd, data)
            if written != len(data):
                raise HistoryError("only %d of %d bytes reached %s (is the disk full?); run "
                                   "audit_verify_info: the line is torn." % (written, len(data), path))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path)
        return record
    finally:
        os.close(lock_fd)  # closing releases the flock


def preview_event(path, record_fields, now=None, key=None):
    """Return the record append_event would write now, writing nothing (for check mode).

    Takes the writers' lock shared when its file exists, never creating it.
    """
    lock_fd = None
    try:
        lock_fd = os.open(path + ".lock", os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(lock_fd, fcntl.LOCK_SH)
    except FileNotFoundError:
        pass
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return build_record(record_fields, 1, GENESIS, now, key)
        try:
            seq, prev, _torn = _tail(fd, path)
        finally:
            os.close(fd)
        return build_record(record_fields, seq + 1, prev, now, key)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


# --------------------------------------------------------------------------------------------
# Reading and verifying
# --------------------------------------------------------------------------------------------


def record_event(path, record_fields, check_mode=False, key=None):
    """Append one event (in check mode: preview it) for a module, creating the history's
    directory (mode 0750) when missing. Raises HistoryError with a message that names the file
    and what to do, whatever went wrong."""
    try:
        if check_mode:
            return preview_event(path, record_fields, key=key)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o750, exist_ok=True)
            os.chmod(directory, 0o750)
        return append_event(path, record_fields, key=key)
    except HistoryError as exc:
        raise HistoryError("history %s: %s" % (path, exc))
    except OSError as exc:
        raise HistoryError("cannot append to the history %s: %s; check that the directory is writable by "
                           "the remote user" % (path, exc.strerror or exc))


def iter_events(path):
    """Yield every record of the history in file order; a missing file yields nothing.

    Lines that are not records are skipped: deciding whether the history can be trusted is
    verify's job, this is for readers such as the audit report.
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            record, error = parse_line(raw.rstrip(b"\n"))
            if error is None:
                yield record


class _Line:
    __slots__ = ("number", "record", "error", "complete")

    def __init__(self, number, raw):
        self.number = number
        self.complete = raw.endswith(b"\n")
        self.record, self.error = parse_line(raw[:-1] if self.complete else raw)

    @classmethod
    def proven(cls, number, seq, event, prev, hash_):
        """A complete record line whose hash is already known to match its content."""
        line = cls.__new__(cls)
        line.number, line.complete, line.error = number, True, None
        line.record = {"seq": seq, "event": event, "prev": prev, "hash": hash_}
        return line

    # A malformed line still names its seq and event when they can be read, to help find it.
    @property
    def seq(self):
        seq = self.record.get("seq") if isinstance(self.record, dict) else None
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    @property
    def event(self):
        event = self.record.get("event") if isinstance(self.record, dict) else None
        return event if isinstance(event, str) and EVENT_RE.match(event) else None


class _Start:
    """The virtual line 0 the first record chains to."""

    number = 0
    seq = 0
    event = None
    record = {"seq": 0, "hash": GENESIS, "prev": None}


def _header(line):
    known = []
    if line.seq is not None:
        known.append("seq %d" % line.seq)
    if line.event is not None:
        known.append("event %s" % line.event)
    if known:
        return "line %d (%s)" % (line.number, ", ".join(known))
    return "line %d" % line.number


def _problem(line, kind, reason):
    return {"line": line.number, "seq": line.seq, "event": line.event, "problem": kind,
            "message": "%s: %s" % (_header(line), reason)}


def _seq_range(first, last):
    if first == last:
        return "seq %d is" % first
    return "seq %d to %d are" % (first, last)


def _previous(last):
    return "the start of the history" if last is _Start else "line %d" % last.number


def _check_anchor(anchor):
    if anchor is not None:
        if (not isinstance(anchor, dict) or isinstance(anchor.get("seq"), bool)
                or not isinstance(anchor.get("seq"), int) or anchor["seq"] < 1
                or not isinstance(anchor.get("hash"), str) or not HASH_RE.match(anchor["hash"])):
            raise HistoryError("anchor must be {seq: positive integer, hash: 64 lower-case hex "
                               "digits} as returned by audit_event, not %r." % (anchor,))


def _content_problem(line):
    """Why the line is not a record whose hash matches its content, or None."""
    if line.error is not None:
        if not line.complete:  # only the last line of a file can lack its newline
            return _problem(line, "malformed", "%s and it has no newline at the end of the "
                            "file: a write was interrupted" % line.error)
        return _problem(line, "malformed", "%s: the line is malformed" % line.error)
    try:
        actual = record_hash(line.record)
    except ValueError:
        return _problem(line, "malformed", "it cannot be hashed: the line is malformed")
    if actual != line.record["hash"]:
        return _problem(line, "edited", "its hash does not match its content: the line was "
                                        "edited")
    return None


def _link_problem(line, last):
    """How a sound record fails to follow the last good line: a problem, None, or an undecided
    problem that later lines settle (_Twins, _Gap)."""
    record = line.record
    expected = last.seq + 1
    linked = record["prev"] == last.record["hash"]
    if record["seq"] == expected and linked:
        return None
    if linked:
        return _problem(line, "inserted", "it chains to %s but carries seq %d instead of %d: "
                        "the line was inserted" % (_previous(last), record["seq"], expected))
    if record["seq"] == expected:
        if last is _Start:
            return _problem(line, "edited", "its prev is not 64 zeros although it is the "
                            "first record: the line was edited and its hash recomputed")
        return _problem(last, "edited", "line %d (seq %d) was chained to different content: "
                        "the line was edited and its hash recomputed" % (line.number, line.seq))
    if record["seq"] == last.seq and record["prev"] == last.record["prev"]:
        if record["hash"] == last.record["hash"]:
            return _problem(line, "inserted", "it repeats line %d exactly: the line was inserted"
                            % last.number)
        return _Twins(line, last)
    if record["seq"] < expected:
        return _problem(line, "inserted", "seq %d already appeared before it, expected seq %d: "
                        "the line was inserted" % (record["seq"], expected))
    return _Gap(line, expected)


class _Twins:
    """Two neighbouring records claim the same seq after the same predecessor: the line after
    them tells which one the history continues from."""

    def __init__(self, line, last):
        self.line, self.last = line, last

    def see(self, following):
        line, last = self.line, self.last
        if following.error is None and following.record["prev"] == line.record["hash"]:
            return _problem(last, "inserted", "line %d carries the same seq and prev, and the "
                            "history continues from line %d: the line was inserted"
                            % (line.number, line.number))
        return _problem(line, "inserted", "line %d already carries seq %d after the same line: "
                        "the line was inserted" % (last.number, line.seq))

    def decide(self):
        return _problem(self.line, "inserted", "line %d carries the same seq and prev and nothing "
                        "follows to tell which is genuine: one of the two lines was inserted"
                        % self.last.number)


class _Gap:
    """seq jumps forward and prev does not link: lines removed, moved, or one put early. Only
    the rest of the file tells which."""

    def __init__(self, line, expected):
        self.line, self.expected = line, expected
        self.found_expected = self.repeated = None

    def see(self, later):
        if later.error is None:
            if later.seq == self.line.seq and self.repeated is None:
                self.repeated = later.number
            if later.seq == self.expected and self.found_expected is None:
                self.found_expected = later.number
        return None

    def see_run(self, number, seq, count):
        """`count` sound lines from line `number` on, carrying seq, seq + 1, ..."""
        if self.repeated is None and seq <= self.line.seq < seq + count:
            self.repeated = number + self.line.seq - seq
        if self.found_expected is None and seq <= self.expected < seq + count:
            self.found_expected = number + self.expected - seq

    def decide(self):
        line, expected = self.line, self.expected
        if self.repeated is not None:
            return _problem(line, "inserted", "expected seq %d; seq %d appears again at line %d: "
                            "the line was inserted" % (expected, line.seq, self.repeated))
        if self.found_expected is not None:
            return _problem(line, "reordered", "expected seq %d here, which appears later at line "
                            "%d: lines were reordered" % (expected, self.found_expected))
        missing = line.seq - expected
        return _problem(line, "removed", "%s missing before it: %d line%s removed"
                        % (_seq_range(expected, line.seq - 1), missing,
                           " was" if missing == 1 else "s were"))


class ChainVerifier:
    """verify's rules applied to lines pushed one at a time, in file order.

    For readers that go through the whole history anyway, such as the audit report, so that the
    file is read once. Push every line with add (or add_proven, add_proven_run), then ask for
    result, which is what verify returns. After the first break some verdicts still need later
    lines (a removed line is told from a moved one by what follows); once `settled` is true they
    cannot change, and later lines are only counted. Memory is constant however long the history
    is. `anchor_seq` is the anchored seq, 0 without an anchor.
    """

    def __init__(self, anchor=None):
        _check_anchor(anchor)
        self._anchor = anchor
        self.anchor_seq = anchor["seq"] if anchor is not None else 0
        self._anchor_seen = anchor is None
        self.lines = 0
        self._problem = None
        self._undecided = None
        # The last good line as plain values, so that add_proven's usual case makes no object.
        self._number, self._seq, self._event, self._prev, self._hash = 0, 0, None, None, GENESIS
        self._last_line = _Start

    @property
    def settled(self):
        """True once the first problem is known for certain."""
        return self._problem is not None

    def add(self, raw):
        """Check the next line, given as its bytes with the newline (without it only at the end
        of a torn file). Returns (record, error) as parse_line does."""
        self.lines += 1
        line = _Line(self.lines, raw)
        self._add(line, proven=False)
        return line.record, line.error

    def add_proven(self, seq, event, prev, hash_):
        """The next line, which the caller has proven to be a complete record whose `hash`
        matches its content (for instance: its bytes are exactly its canonical serialisation and
        hash to it). Only its place in the chain is checked."""
        self.lines += 1
        if (self._undecided is None and self._problem is None and seq == self._seq + 1
                and prev == self._hash and seq != self.anchor_seq):
            self._number, self._seq, self._event, self._prev, self._hash = (
                self.lines, seq, event, prev, hash_)
            self._last_line = None
            return
        self._add(_Line.proven(self.lines, seq, event, prev, hash_), proven=True)

    def add_proven_run(self, count, first, last):
        """The next `count` lines, each proven as for add_proven and each following the one
        before it (seq one higher, prev the hash of the one before), given by the (seq, event,
        prev, hash) of the first and of the last. A run that follows the last good line costs
        no more than one line. The anchored seq, when there is one, must be a run of its own.
        """
        if count == 1:
            self.add_proven(*first)
            return
        if first[0] < self.anchor_seq <= last[0] or first[0] <= self.anchor_seq < last[0]:
            raise ValueError("the anchored seq %d must be a run of its own" % self.anchor_seq)
        number = self.lines + 1
        self.add_proven(*first)
        rest = count - 1
        if self._problem is None and self._undecided is None and self._number == number:
            # The first line followed the last good line, so the whole run does.
            self.lines += rest
            self._number, self._seq, self._event, self._prev, self._hash = (
                self.lines, last[0], last[1], last[2], last[3])
            self._last_line = None
            return
        if isinstance(self._undecided, _Twins):  # the second line of the run settles it
            self.add_proven(first[0] + 1, None, first[3], None)
            rest -= 1
        if isinstance(self._undecided, _Gap):
            self._undecided.see_run(self.lines + 1, first[0] + count - rest, rest)
        self.lines += rest

    def skip(self):
        """Count the next line without reading it; only once the verdict is settled."""
        if not self.settled:
            raise ValueError("a line can only be skipped once the first problem is settled")
        self.lines += 1

    def _last(self):
        if self._last_line is None:
            self._last_line = _Line.proven(self._number, self._seq, self._event, self._prev,
                                           self._hash)
        return self._last_line

    def _add(self, line, proven):
        if self._problem is not None:
            return
        if self._undecided is not None:
            self._problem = self._undecided.see(line)
            if self._problem is not None:
                self._undecided = None
            return
        last = self._last()
        problem = None if proven else _content_problem(line)
        if problem is None:
            problem = _link_problem(line, last)
        if isinstance(problem, (_Twins, _Gap)):
            self._undecided = problem
            return
        if problem is None and line.seq == self.anchor_seq:
            if line.record["hash"] != self._anchor["hash"]:
                problem = _problem(line, "edited", "the anchor says seq %d has hash %s..., this "
                                   "line has %s...: the history was rewritten from here or "
                                   "before" % (self.anchor_seq, self._anchor["hash"][:12],
                                               line.record["hash"][:12]))
            else:
                self._anchor_seen = True
        if problem is not None:
            self._problem = problem
            return
        record = line.record
        self._number, self._seq, self._event, self._prev, self._hash = (
            line.number, record["seq"], record["event"], record["prev"], record["hash"])
        self._last_line = line

    def result(self):
        """{"ok", "lines", "first_problem", "last_seq", "last_hash"}, as verify returns."""
        problem = self._problem
        if problem is None and self._undecided is not None:
            problem = self._undecided.decide()  # nothing more follows
        if problem is None and not self._anchor_seen:
            problem = {"line": self.lines + 1, "seq": self.anchor_seq, "event": None,
                       "problem": "truncated",
                       "message": "line %d: the anchor seq %d (hash %s...) is missing; the "
                                  "history ends at seq %d: lines were removed from the end"
                                  % (self.lines + 1, self.anchor_seq,
                                     self._anchor["hash"][:12], self._seq)}
        return {
            "ok": problem is None,
            "lines": self.lines,
            "first_problem": problem,
            "last_seq": self._seq,
            "last_hash": self._hash,
        }


def verify(path, anchor=None):
    """Check the hash chain of the history at path, reading it once, line by line.

    Returns {"ok", "lines", "first_problem", "last_seq", "last_hash"}. first_problem is None or
    {"line", "seq", "event", "problem", "message"} for the first line where the chain breaks;
    problem is one of edited, removed, inserted, reordered, malformed, and truncated (only with
    an anchor). last_seq and last_hash describe the last record before any problem: keep them
    elsewhere and pass them back as anchor={"seq": ..., "hash": ...} to detect a cut tail.
    A missing file is an empty history.
    """
    _check_anchor(anchor)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        handle = None
    if handle is None:
        problem = None
        if anchor is not None:
            problem = {"line": 1, "seq": anchor["seq"], "event": None, "problem": "truncated",
                       "message": "line 1: the anchor seq %d (hash %s...) is missing; the history "
                                  "is empty: lines were removed from the end"
                                  % (anchor["seq"], anchor["hash"][:12])}
        return {"ok": problem is None, "lines": 0, "first_problem": problem, "last_seq": 0,
                "last_hash": GENESIS}
    chain = ChainVerifier(anchor)
    with handle:
        for raw in handle:
            if chain.settled:
                chain.skip()
            else:
                chain.add(raw)
    return chain.result()


def verify_macs(path, key, size=None):
    """The first record of the history (up to `size` bytes) without a valid MAC under `key`, as
    a problem in verify's form, or None. With a history key every record must carry one: a line
    rewritten and re-hashed by someone without the key cannot. Lines that are not records are
    the chain's to report, not this check's."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None
    with handle:
        read = 0
        for number, raw in enumerate(handle, 1):
            read += len(raw)
            if size is not None and read > size:
                break
            line = _Line(number, raw)
            if line.error is not None:
                continue
            mac = line.record.get("mac")
            if mac is None:
                return _problem(line, "edited", "it has no mac although the history is keyed: the line was "
                                                "written or rewritten without the history key")
            if not hmac.compare_digest(mac, record_mac(key, line.record["hash"])):
                return _problem(line, "edited", "its mac does not match its hash under the history key: the "
                                                "line was rewritten by someone without the key")
    return None
