# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit report: one pass over a stack's history that checks its hash chain and sums up what
happened, rendered as GitHub Flavored Markdown.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports (only the history's own module_utils) so that the unit tests and the benchmark drive it
directly.

One pass. The history is read once, line by line, and the chain is checked by
`_history.ChainVerifier`, which applies verify's rules, so the report names the same first
broken line as audit_verify; after a break the report keeps summing up (and says from where on
the lines cannot be trusted).

The fast path. Re-serialising each record to check its hash costs more than everything else
together, so a line is first matched against the exact byte layout the writer produces:
`LineProver` accepts a line only when (1) a strict pattern shows that every part of it is
already in canonical form (keys sorted, no spaces, the escapes and number forms json.dumps
writes, ASCII only) and (2) the SHA-256 of its bytes without the `"hash":"<64 hex>",` member
equals that hash. (1) makes those bytes exactly `_history.canonical_json` of the record without
`hash`, so (2) is exactly the check `record_hash` makes. Any other line (non-ASCII text, another
spacing, an unknown layout, a wrong hash) goes the slow way, parse_line and record_hash, and
ChainVerifier.add names what is wrong with the lines that fail it: the verdict never depends on
which way a line went. Proven lines that follow each other reach the verifier as runs.

Parts. A long history is split at line starts into parts read at the same time by forked
workers; each sends back a digest of its part and, for the chain, its runs and broken lines,
which are replayed in file order through the one verifier. Digests merge into the digest of
reading the file in one go.

Memory is bounded whatever the length of the history: counters, bounded deques for the tables,
and a chart whose time buckets double in width (merging pairs) instead of growing in number.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import io
import json
import math
import os
import pickle
import re
import signal
import struct
import tempfile

from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import (
    GENESIS,
    ChainVerifier,
    parse_line,
    record_hash,
)

REPORT_MODE = 0o640
TIMELINE_LIMIT = 200
CHART_POINTS = 60           # at most this many time buckets in the chart
CELL_LIMIT = 300            # characters of a value shown in a table cell
MODE_CHANGES_SHOWN = 100
BLOCKED_SHOWN = 100
LOCK_WAITS_SHOWN = 50
CHAOS_TRANSITIONS_SHOWN = 50
POLICY_REASONS_SHOWN = 50
POLICY_REASONS_KEPT = 500   # distinct reason sets counted apart; later new ones are pooled
CHAOS_STATES_KEPT = 100     # distinct chaos states counted apart; later new ones are pooled
PART_BYTES = 16 * 1024 * 1024   # a history is read in parallel parts of at least this size
BLOCK_BYTES = 1024 * 1024       # and read in blocks of this size
SCRAPE = "status_scrape"
BLOCKED_EVENTS = ("deploy_blocked", "promote_blocked")
NO_CHAOS = (None, "", "none", "None")


class ReportError(Exception):
    """The history cannot be read or the report cannot be written; the message says why."""


# --------------------------------------------------------------------------------------------
# The fast path: lines proven canonical by their bytes
# --------------------------------------------------------------------------------------------

# A JSON string exactly as json.dumps(ensure_ascii=True) writes it: printable ASCII except `"`
# and `\` as they are; `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`; every other character below
# 0x20, DEL and everything above ASCII as `\u` with four lower-case hex digits.
_RAW = rb'[ !#-\[\]-~]'
_ESCAPE = (rb'\\(?:["\\bfnrt]|u(?:000[0-7be-f]|001[0-9a-f]|007f|00[89a-f][0-9a-f]'
           rb'|0[1-9a-f][0-9a-f]{2}|[1-9a-f][0-9a-f]{3}))')
_STR = rb'"' + _RAW + rb'*(?:' + _ESCAPE + _RAW + rb'*)*"'
_OPT_STR = rb'(?:null|' + _STR + rb')'
# Numbers exactly as json.dumps writes them, restricted to forms that are provably canonical
# without converting them: integers without a sign on zero, and floats in positional notation
# (repr uses it from 1e-4 to 1e16) with at most 15 significant digits and no trailing zero but
# the one of `.0`. Any decimal of at most 15 significant digits survives the round trip through
# a double, so repr, the shortest string that reads back the same, gives exactly these digits.
# Other forms (exponents, longer mantissas) are valid but go the slow way.
_FLOAT = (rb'-?(?:0\.0|(?=[0-9.]{3,16}[,}\]])(?:[1-9][0-9]*\.(?:0|[0-9]*[1-9])'
          rb'|0\.0{0,3}[1-9](?:[0-9]*[1-9])?))')
_INT = rb'(?:0|-?[1-9][0-9]{0,17})'
_OPT_NUM = rb'(?:null|' + _FLOAT + rb'|' + _INT + rb')'
_FLAG = rb'(?:true|false|null)'
# The top-level strings after details, matched in the line's text: a string without escapes
# gives its inside (the first group), one with escapes (the second group) is decoded by json.
_PLAIN_OR_ESCAPED = '"([ !#-\\[\\]-~]*)"|(' + _STR.decode("ascii") + ')'
_TEXT_STR = '(?:' + _PLAIN_OR_ESCAPED + ')'
_TEXT_OPT_STR = '(?:null|' + _PLAIN_OR_ESCAPED + ')'
_TAIL = ('"hash":"([0-9a-f]{64})","host":' + _TEXT_STR + ',"mode":' + _TEXT_OPT_STR + ','
         '"prev":"([0-9a-f]{64})","seq":([1-9][0-9]{0,17}),"stack":' + _TEXT_OPT_STR + ','
         '"timestamp":' + _TEXT_STR + ',"version":' + _TEXT_OPT_STR + '\\}\n?')

# A timestamp in the writer's form (_history.utc_timestamp), seconds up to 60 for a leap second.
_TIMESTAMP_FORM = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)"
                   r"(?:\.[0-9]{1,6})?Z")
# A plain JSON string: printable ASCII without `"` or `\` inside, so without escapes, which is
# already how json.dumps writes it.
_PLAIN_STR = rb'"[ !#-\[\]-~]*"'
_PLAIN_OPT_STR = rb'(?:null|' + _PLAIN_STR + rb')'
# A status_scrape line as the role writes it today (templates/status.json.j2), field by field,
# with plain strings. The actor is checked apart (its keys vary; `[^}]*` only finds where it
# ends). The hash is any 64 characters here: only a SHA-256 hex digest can equal the digest
# computed. So is prev, which is checked apart: it is 64 lower-case hex digits when it equals the
# hash of the line before, and otherwise goes through _HEX64. (Classes of one excluded character
# are much cheaper per character for the regex engine than ranges, and these are the longest
# fields.)
_SCRAPE_LINE = re.compile(
    rb'\{"actor":(\{[^}]*\}),"details":\{'
    rb'"chaos":(' + _PLAIN_OPT_STR + rb'),"error_rate_percent":(' + _OPT_NUM + rb'),'
    rb'"errors":' + _OPT_NUM + rb',"mode":' + _PLAIN_OPT_STR + rb','
    rb'"p99_latency_ms":(' + _OPT_NUM + rb'),"policy_canary_pass":(' + _FLAG + rb'),'
    rb'"policy_infra_pass":(' + _FLAG + rb'),'
    rb'"policy_reasons":\[((?:' + _PLAIN_STR + rb'(?:,' + _PLAIN_STR + rb')*)?)\],'
    rb'"req_s":' + _OPT_NUM + rb',"requests":' + _OPT_NUM + rb',"weight":' + _OPT_NUM + rb'\},'
    rb'"event":"status_scrape","hash":"([^"]{64})","host":' + _PLAIN_STR + rb','
    rb'"mode":' + _PLAIN_OPT_STR + rb',"prev":"([^"]{64})","seq":([1-9][0-9]{0,17}),'
    rb'"stack":' + _PLAIN_OPT_STR + rb',"timestamp":"(' + _TIMESTAMP_FORM.encode() + rb')",'
    rb'"version":' + _PLAIN_OPT_STR + rb'\}')
# The scan takes complete lines only that way; a last line without its newline goes the general
# way, which knows it was cut short.
_SCRAPE_LINE_NL = re.compile(_SCRAPE_LINE.pattern + rb'\n')
_SCRAPE_LINE = re.compile(_SCRAPE_LINE.pattern + rb'\n?')
# Any other record: the top level field by field; actor and details are checked by re-encoding.
_RECORD_TAIL = re.compile(r'\},"event":"([a-z][a-z0-9_]{0,63})",' + _TAIL)
_RECORD_HEAD = b'{"actor":{'
_DETAILS_KEY = b'},"details":{'
_EVENT_KEY = b'},"event":"'

_HEX64 = re.compile(rb'[0-9a-f]{64}').fullmatch
_sha256 = hashlib.sha256
# Seconds since midnight of b"HH:MM", for every hour and minute the timestamp pattern allows.
_MINUTE_OF_DAY = {b"%02d:%02d" % (hour, minute): hour * 3600 + minute * 60
                  for hour in range(24) for minute in range(60)}

# check_circular off: it only encodes what _DECODER just parsed, which cannot hold a cycle.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                              allow_nan=False, check_circular=False)
_DECODER = json.JSONDecoder()
_FLAGS = {b"true": True, b"false": False, b"null": None}


def _canonical_object(raw):
    """The dict that raw (ASCII bytes) encodes when raw is exactly its canonical JSON, else
    None."""
    try:
        text = raw.decode("ascii")
        # raw_decode: what follows the value (the decode method checks) makes the texts differ.
        value = _DECODER.raw_decode(text)[0]
        if isinstance(value, dict) and _CANONICAL.encode(value) == text:
            return value
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        pass
    return None


def _string(raw):
    """The text of a JSON string or null token proven canonical."""
    if raw == b"null":
        return None
    if b"\\" in raw:
        return json.loads(raw)
    return raw[1:-1].decode("ascii")


def _body_end(raw):
    """Where the JSON of a line ends: before its newline."""
    return len(raw) - 1 if raw.endswith(b"\n") else len(raw)


class LineProver:
    """Recognises lines whose bytes are their record's canonical serialisation and hash to their
    `hash`: the fast path. It remembers its verdict on actors, which repeat from line to line, and
    on short details.

    Both methods take a line's bytes, with or without its newline. None means "not proven", not
    "not genuine": such a line must be checked the slow way.
    """

    _ACTORS_KEPT = 4096
    _DETAILS_KEPT = 1024
    _DETAILS_BYTES = 1024   # longer details are not remembered: the memory stays small

    def __init__(self):
        self._actors = {}
        self._details = {}
        self.known_actor = self._actors.get  # the verdict on an actor already seen, else None

    def actor(self, raw):
        actor = self._actors.get(raw)
        if actor is None:
            if len(self._actors) >= self._ACTORS_KEPT:
                self._actors.clear()
            actor = self._actors[raw] = _canonical_object(raw) or False
        return actor

    def scrape(self, raw):
        """A status_scrape line in the role's layout with plain strings, proven: (its hash, the
        raw tokens of actor, chaos, error rate, P99, canary pass, infrastructure pass, reasons
        (the inside of the list), hash, prev, seq and timestamp (without quotes)), else None."""
        match = _SCRAPE_LINE.fullmatch(raw)
        if match is None:
            return None
        tokens = match.groups()
        actor = self._actors.get(tokens[0])
        if actor is None:
            actor = self.actor(tokens[0])
        if actor is False:
            return None
        start, end = match.span(8)
        claimed = tokens[7].decode("ascii")
        body = raw[:start - 8] + (raw[end + 2:-1] if raw[-1] == 10 else raw[end + 2:])
        if _sha256(body).hexdigest() != claimed or not _HEX64(tokens[8]):
            return None
        return claimed, tokens

    def record(self, raw):
        """Any line in the writer's layout, proven: its record, else None."""
        if not raw.startswith(_RECORD_HEAD) or not raw.isascii():
            return None
        split = raw.find(_DETAILS_KEY, len(_RECORD_HEAD))
        tail_at = raw.rfind(_EVENT_KEY)
        if split < 0 or tail_at <= split:
            return None
        text = raw.decode("ascii")
        match = _RECORD_TAIL.fullmatch(text, tail_at)
        if match is None:
            return None
        actor = self.actor(raw[9:split + 1])
        if actor is False:
            return None
        details = self.details(raw[split + 12:tail_at + 1])
        if details is None:
            return None
        (event, claimed, host, host_escaped, mode, mode_escaped, prev, seq, stack, stack_escaped,
         stamp, stamp_escaped, version, version_escaped) = match.groups()
        start = match.start(2)  # of the hash: 64 characters, then `",`
        if _sha256(raw[:start - 8] + raw[start + 66:_body_end(raw)]).hexdigest() != claimed:
            return None
        return {
            "seq": int(seq),
            "timestamp": stamp if stamp_escaped is None else json.loads(stamp_escaped),
            "event": event,
            "stack": stack if stack_escaped is None else json.loads(stack_escaped),
            "host": host if host_escaped is None else json.loads(host_escaped),
            "actor": dict(actor),
            "mode": mode if mode_escaped is None else json.loads(mode_escaped),
            "version": version if version_escaped is None else json.loads(version_escaped),
            "details": details,
            "prev": prev,
            "hash": claimed,
        }

    def details(self, raw):
        """The details object that raw encodes when raw is its canonical JSON, else None. Short
        ones are remembered: blocked operations, bypasses and teardowns tend to repeat theirs.
        Each call returns a dict of its own (its values may be shared: read them only)."""
        if len(raw) > self._DETAILS_BYTES:
            return _canonical_object(raw)
        details = self._details.get(raw)
        if details is None:
            if len(self._details) >= self._DETAILS_KEPT:
                self._details.clear()
            details = self._details[raw] = _canonical_object(raw)
            if details is None:
                self._details[raw] = False
                return None
        elif details is False:
            return None
        return dict(details)


def prove_line(raw):
    """The record of one history line (its bytes, with or without the newline) when the fast
    path proves it genuine: exactly the canonical serialisation of a record whose hash matches.
    None means "not proven", not "not genuine": such a line is checked the slow way."""
    return LineProver().record(raw)


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------

_EPOCH_DAY = datetime.date(1970, 1, 1)
_TIMESTAMP = re.compile(_TIMESTAMP_FORM + r"\Z")


class _Clock:
    """Seconds since 1970 of the writer's RFC 3339 UTC timestamps, fast for the usual form."""

    def __init__(self):
        self._days = {}

    def seconds(self, stamp):
        if not isinstance(stamp, str) or not _TIMESTAMP.match(stamp):
            return self._other(stamp)
        minute = self._minute(stamp[:16])
        return None if minute is None else minute + float(stamp[17:-1])

    def day_seconds(self, day):
        """Seconds since 1970 of the start of a day written "YYYY-MM-DD" (str or ASCII bytes,
        in that form already); None when there is no such day."""
        seconds = self._days.get(day)
        if seconds is None:
            if len(self._days) > 10000:
                self._days.clear()
            try:
                date = datetime.date(int(day[:4]), int(day[5:7]), int(day[8:10]))
            except ValueError:
                return None
            seconds = self._days[day] = (date - _EPOCH_DAY).days * 86400
        return seconds

    def _minute(self, prefix):
        day = self.day_seconds(prefix[:10])
        if day is None:
            return None
        return day + int(prefix[11:13]) * 3600 + int(prefix[14:16]) * 60

    @staticmethod
    def _other(stamp):
        """Other ISO 8601 forms that a different writer might use; None when it is not a time."""
        if not isinstance(stamp, str) or len(stamp) > 64:
            return None
        try:
            when = datetime.datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            return when.timestamp()
        except (ValueError, OverflowError):
            return None


def _finite(value):
    """A number usable in sums and charts (not a bool, not NaN or infinite), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _compact(value):
    """Any JSON value as short readable text: strings as they are, the rest as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=str)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _reasons(value):
    """A policy's reasons (a list, as the role writes them) as a tuple of texts."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(_compact(item) for item in value)
    return (_compact(value),)


def _who(actor):
    """The actor's user, with the AWX job and template when present."""
    if not isinstance(actor, dict):
        return "?"
    user = _compact(actor.get("user", "?"))
    awx = []
    if actor.get("awx_job_id") not in (None, ""):
        awx.append("AWX job %s" % _compact(actor["awx_job_id"]))
    if actor.get("awx_job_template") not in (None, ""):
        awx.append("template %s" % _compact(actor["awx_job_template"]))
    return "%s (%s)" % (user, ", ".join(awx)) if awx else user


def _duration(seconds):
    """The two largest units: 3 d 4 h, 2 h, 2 h 5 min, 4 min 10 s, 12 s."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    while len(parts) > 1 and not parts[0][0]:
        parts.pop(0)
    shown = [part for part in parts[:2] if part[0]] or parts[-1:]
    return " ".join("%d %s" % part for part in shown)


def _count(number):
    return "{:,}".format(number)


def _chaos_state(value):
    if isinstance(value, str) and value.strip() in NO_CHAOS:
        return "none"
    if value is None:
        return "none"
    return _compact(value)


_CELL_TRANSLATION = {ord(char): "\\" + char for char in "\\|`*_[]~"}
_CELL_TRANSLATION.update({ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;",
                          ord("\n"): "<br>", 0x7f: "\u2421"})
_CELL_TRANSLATION.update({code: chr(0x2400 + code) for code in range(0x20) if code not in (9, 10)})
_EDGE_SPACE = {" ": "&#32;", "\t": "&#9;"}


def table_cell(value, limit=CELL_LIMIT):
    """The Markdown text of one GFM table cell that shows value as it reads.

    Strings are shown as they are, other values as compact JSON. Longer than limit characters,
    the value is cut and ends in an ellipsis. Backslashes and the characters Markdown would act
    on (pipes, backticks, emphasis, brackets, tildes) are backslash-escaped, `<`, `>` and `&`
    become HTML entities, newlines become <br>, other control characters their visible symbol,
    and spaces at either end (which a table trims) character references.
    """
    text = _compact(value).replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > limit:
        text = text[:max(limit - 1, 0)] + "\u2026"
    core = text.strip(" \t")
    lead = text[:len(text) - len(text.lstrip(" \t"))]
    trail = text[len(lead) + len(core):] if core else ""
    return ("".join(_EDGE_SPACE[char] for char in lead) + core.translate(_CELL_TRANSLATION)
            + "".join(_EDGE_SPACE[char] for char in trail))


def markdown_table(headers, rows, align=None):
    """The lines of a GFM table; every header and cell goes through table_cell."""
    align = align or "l" * len(headers)
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(table_cell(header) for header in headers) + " |",
             "| " + " | ".join(rule[side] for side in align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(table_cell(cell) for cell in row) + " |")
    return lines


_MERMAID_UNSAFE = re.compile(r'[^A-Za-z0-9 .,:;_+\-/()%#=]')


def mermaid_text(value, limit=80):
    """Text safe inside a double-quoted Mermaid label: one line, no quotes or brackets."""
    text = _MERMAID_UNSAFE.sub("_", " ".join(_compact(value).split()))
    return text[:limit]


def _mermaid_number(value):
    text = "%.3f" % value
    text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --------------------------------------------------------------------------------------------
# The chart: fixed memory over any time range
# --------------------------------------------------------------------------------------------


class _Chart:
    """Mean error rate and mean P99 per time bucket. Buckets are one minute wide at first and
    aligned on multiples of their width since 1970; whenever there would be more than `limit`
    of them, every bucket doubles in width and neighbours merge, so the chart holds at most
    `limit` buckets whatever the time range, and two charts of consecutive parts of a history
    merge exactly."""

    def __init__(self, limit=CHART_POINTS):
        self.limit = limit
        self.width = 60.0
        self.buckets = {}       # start / width -> [error sum, error count, p99 sum, p99 count]
        self._index = None
        self._bucket = None

    def add(self, when, error_rate, p99):
        index = int(when // self.width)
        if index != self._index:
            bucket = self.buckets.get(index)
            if bucket is None:
                bucket = self.buckets[index] = [0.0, 0, 0.0, 0]
                if len(self.buckets) > self.limit:
                    self._widen()
                    index = int(when // self.width)
                    bucket = self.buckets[index]
            self._index, self._bucket = index, bucket
        bucket = self._bucket
        if error_rate is not None:
            bucket[0] += error_rate
            bucket[1] += 1
        if p99 is not None:
            bucket[2] += p99
            bucket[3] += 1

    def current(self):
        """The bucket the last add went to and its time range: (counters, start, end)."""
        start = self._index * self.width
        return self._bucket, start, start + self.width

    def _double(self):
        self.width *= 2
        merged = {}
        for index, bucket in self.buckets.items():
            into = merged.get(index // 2)
            if into is None:
                merged[index // 2] = list(bucket)
            else:
                for position in range(4):
                    into[position] += bucket[position]
        self.buckets = merged
        self._index = self._bucket = None

    def _widen(self):
        while len(self.buckets) > self.limit:
            self._double()

    def merge(self, other):
        """Add the buckets of another chart."""
        while self.width < other.width:
            self._double()
        factor = int(round(self.width / other.width))
        for index, bucket in other.buckets.items():
            into = self.buckets.setdefault(index // factor, [0.0, 0, 0.0, 0])
            for position in range(4):
                into[position] += bucket[position]
        self._widen()
        self._index = self._bucket = None

    def points(self):
        """[(bucket start in seconds, mean error rate or None, mean p99 or None)] in time order."""
        result = []
        for index in sorted(self.buckets):
            errors, error_count, p99s, p99_count = self.buckets[index]
            if error_count or p99_count:
                result.append((index * self.width,
                               errors / error_count if error_count else None,
                               p99s / p99_count if p99_count else None))
        return result


# --------------------------------------------------------------------------------------------
# Summing up
# --------------------------------------------------------------------------------------------


def _mode_transition(record, details):
    """What a mode-changing event does: (mode after it, whether it starts a canary (otherwise
    it ends one), whether it is shown even when the mode stays, the mode it says it left (None
    when it does not say), a note for the table)."""
    event = record["event"]
    if event == "promote":
        now = details.get("target_mode") or record.get("mode")
        if details.get("result") == "rolled_forward":
            note = "rolled forward %s -> %s" % (_compact(details.get("from_version", "?")),
                                                _compact(details.get("version", "?")))
        elif details.get("weight") is not None:
            note = "weight %s %%" % _compact(details["weight"])
            if details.get("canary_version") is not None:
                note += ", canary %s" % _compact(details["canary_version"])
        else:
            note = ""
        return now, now == "canary", True, details.get("from_mode"), note
    if event == "rollback":
        return (record.get("mode") or "stable", False, True, None,
                _compact(details.get("reason", "")))
    if event == "teardown":
        return "down", False, True, None, "clean" if details.get("clean") is True else ""
    now = record.get("mode")  # deploy
    note = "generation %s" % _compact(details["generation"]) if "generation" in details else ""
    return now, now == "canary", False, None, note


_MODE_EVENTS = frozenset(("deploy", "promote", "rollback", "teardown"))


class _Digest:
    """Everything the report shows, gathered line by line in bounded memory.

    A digest of a later part of the history (continued=True) does not know the mode, the canary
    or the chaos state its part starts in: it keeps its first mode-changing event aside (head)
    and notes the first chaos state it sees, and merge settles both against the digest of the
    part before.
    """

    def __init__(self, timeline_limit, continued=False):
        self.clock = _Clock()
        self.events = 0
        self.not_records = 0
        self.by_event = collections.Counter()
        self.first_stamp = None
        self.last_stamp = None
        self.last_names = (None, None)      # (stack, host) of the last record
        self.timeline = collections.deque(maxlen=timeline_limit)
        self.timeline_total = 0
        # Modes and the canary
        self.mode = None
        self.mode_known = not continued
        self.head = None                    # (record, details, stamp, when) of a continued part
        self.head_period_open = False       # the head started a canary this part has not ended
        self.head_period_end = None         # (when,) if this part ended the head's canary
        self.mode_changes = collections.deque(maxlen=MODE_CHANGES_SHOWN)
        self.mode_changes_total = 0
        self.canary_since = None
        self.canary_seconds = 0.0
        self.canary_periods = 0
        # Blocked operations, lock waits
        self.blocked = collections.deque(maxlen=BLOCKED_SHOWN)
        self.lock_waits = collections.deque(maxlen=LOCK_WAITS_SHOWN)
        self.lock_wait_seconds = 0.0
        self.lock_wait_longest = 0.0
        # Status scrapes
        self.scrapes = 0
        self.chart = _Chart()
        self.policy_failures = {}       # (policies, reasons) -> [count, first, last]
        self.policy_failures_total = 0
        self.policy_pooled = None       # [count, first, last] of reason sets beyond the cap
        self.chaos = "none"
        self.chaos_known = not continued
        self.chaos_first = None         # (state, stamp) of the first scrape of a continued part
        self.chaos_seen = {}            # state -> [scrapes, first, last]
        self.chaos_transitions = collections.deque(maxlen=CHAOS_TRANSITIONS_SHOWN)
        self.chaos_transitions_total = 0

    # Reading ---------------------------------------------------------------------------------

    def scan(self, blocks, chain):
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
        chart, day_seconds = self.chart, self.clock.day_seconds
        scrapes = 0
        need_first = self.first_stamp is None
        last_inline = None                  # the last line when it was summed up inline
        run = 0                             # lines in the run of proven lines not yet pushed
        first = None                        # (seq, event, prev, hash) of its first line
        last_seq = last_event = last_prev = last_hash = None    # of its last line, hashes in bytes
        day_key = day = None                # b"YYYY-MM-DD" and its seconds since 1970
        low = high = 0.0                    # the chart bucket now filled inline: [low, high)
        bucket = None
        # The bucket's counters while it is filled inline, written back before anything else
        # reads the chart: the same additions in the same order as on the bucket itself.
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
                            self.first_stamp = stamp.decode("ascii")
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
                            self._policy_failure(stamp.decode("ascii"), _FLAGS[infra_pass],
                                                 _FLAGS[canary_pass],
                                                 tuple(json.loads(b"[" + reasons + b"]")))
                        if chaos != chaos_token:
                            chaos_token = chaos
                            seen = self._chaos_now(_chaos_state(_string(chaos)),
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
                            self.not_records += 1
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
                self.record(record)
                need_first = False
        if bucket is not None:
            bucket[:] = error_sum, error_count, p99_sum, p99_count
        if run:
            add_run(run, first, _run_end(last_seq, last_event, last_prev, last_hash))
        if last_inline is not None:
            self._inline_last(last_inline)
        self.events += scrapes
        self.scrapes += scrapes
        self.by_event[SCRAPE] += scrapes

    def _inline_last(self, raw):
        """The last stamp and names, from the last line when it was summed up inline."""
        record = LineProver().record(raw)
        self.last_stamp = record["timestamp"]
        self.last_names = (record["stack"], record["host"])

    # Any record ---------------------------------------------------------------------------

    def record(self, record):
        event = record["event"]
        stamp = record["timestamp"]
        self.events += 1
        self.by_event[event] += 1
        if self.first_stamp is None:
            self.first_stamp = stamp
        self.last_stamp = stamp
        self.last_names = (record.get("stack"), record.get("host"))
        details = record["details"]
        when = self.clock.seconds(stamp)
        if event == SCRAPE:
            self.scrapes += 1
            self._scrape(stamp, when, details)
            return
        self.timeline.append(record)
        self.timeline_total += 1
        if event in _MODE_EVENTS:
            if self.mode_known:
                self._mode_event(record, details, stamp, when)
            else:
                self._head(record, details, stamp, when)
        elif event in BLOCKED_EVENTS:
            self.blocked.append((stamp, event, "deploy" if event == "deploy_blocked"
                                 else details.get("target_mode"), details.get("policy"),
                                 "\n".join(_reasons(details.get("reasons"))),
                                 _who(record.get("actor"))))
        elif event == "lock_wait":
            self._lock_wait(record, details, stamp)

    # Modes ----------------------------------------------------------------------------------

    def _mode_event(self, record, details, stamp, when):
        now, starts, shown, left, note = _mode_transition(record, details)
        if shown or now != self.mode:
            self.mode_changes_total += 1
            self.mode_changes.append((stamp, record["event"], left or self.mode, now,
                                      record.get("version"), note, _who(record.get("actor"))))
        self.mode = now
        if starts:
            self._canary_starts(when)
        else:
            self._canary_ends(when)

    def _head(self, record, details, stamp, when):
        """The first mode-changing event of a continued part: kept for merge, which knows the
        state before it. What follows it does not depend on that state, except the length of a
        canary the head keeps going, which merge corrects."""
        self.head = (record, details, stamp, when)
        self.mode_known = True
        now, starts, _shown, _left, _note = _mode_transition(record, details)
        self.mode = now
        if starts:
            self.canary_since = when if when is not None else math.nan
            self.head_period_open = True

    def _canary_starts(self, when):
        if self.canary_since is None:
            self.canary_periods += 1
            # A start without a usable time still counts as a period; its time cannot be summed.
            self.canary_since = when if when is not None else math.nan

    def _canary_ends(self, when):
        if self.canary_since is None:
            return
        if self.head_period_open:  # merge knows when this canary started
            self.head_period_end = (when,)
            self.head_period_open = False
        elif when is not None and not math.isnan(self.canary_since):
            self.canary_seconds += max(0.0, when - self.canary_since)
        self.canary_since = None

    # Lock waits -----------------------------------------------------------------------------

    def _lock_wait(self, record, details, stamp):
        waited = details.get("waited_seconds")
        if isinstance(waited, str):  # a template may have rendered the number as text
            try:
                waited = float(waited)
            except ValueError:
                waited = None
        waited = _finite(waited)
        if waited is not None:
            self.lock_wait_seconds += waited
            self.lock_wait_longest = max(self.lock_wait_longest, waited)
        self.lock_waits.append((stamp, waited, _who(record.get("actor")),
                                details.get("broken_stale")))

    # Status scrapes --------------------------------------------------------------------------

    def _scrape(self, stamp, when, details):
        """A status_scrape record, whatever its details hold."""
        error_rate = _finite(details.get("error_rate_percent"))
        p99 = _finite(details.get("p99_latency_ms"))
        if when is not None and (error_rate is not None or p99 is not None):
            self.chart.add(when, error_rate, p99)
        infra_pass = details.get("policy_infra_pass")
        canary_pass = details.get("policy_canary_pass")
        if infra_pass is False or canary_pass is False:
            self._policy_failure(stamp, infra_pass, canary_pass,
                                 _reasons(details.get("policy_reasons")))
        self._chaos_now(_chaos_state(details.get("chaos")), stamp)

    def _chaos_now(self, state, stamp):
        """Note the chaos state a scrape saw; return its counters (None for no chaos), with
        this scrape counted."""
        if not self.chaos_known:
            self.chaos_first = (state, stamp)
            self.chaos_known = True
            self.chaos = state
        elif state != self.chaos:
            self.chaos_transitions_total += 1
            self.chaos_transitions.append((stamp, self.chaos, state))
            self.chaos = state
        if state == "none":
            return None
        return _tally(self.chaos_seen, CHAOS_STATES_KEPT, "(other states)", state, 1, stamp,
                      stamp)

    def _policy_failure(self, stamp, infra_pass, canary_pass, reasons):
        self.policy_failures_total += 1
        failed = tuple(name for name, passed in (("infrastructure", infra_pass),
                                                 ("canary", canary_pass)) if passed is False)
        key = (failed, reasons)
        if key in self.policy_failures or len(self.policy_failures) < POLICY_REASONS_KEPT:
            _tally(self.policy_failures, None, None, key, 1, stamp, stamp)
        else:
            self.policy_pooled = _add_seen(self.policy_pooled, 1, stamp, stamp)

    # Putting parts together ------------------------------------------------------------------

    def merge(self, later):
        """Add the digest of the part of the history that follows this one."""
        self.events += later.events
        self.not_records += later.not_records
        self.by_event.update(later.by_event)
        if self.first_stamp is None:
            self.first_stamp = later.first_stamp
        if later.last_stamp is not None:
            self.last_stamp, self.last_names = later.last_stamp, later.last_names
        self.timeline.extend(later.timeline)
        self.timeline_total += later.timeline_total
        if later.head is not None:
            self._mode_event(*later.head)
            if later.head_period_end is not None:
                self._canary_ends(later.head_period_end[0])
            if not later.head_period_open:
                self.canary_since = later.canary_since
            self.mode = later.mode
        self.mode_changes.extend(later.mode_changes)
        self.mode_changes_total += later.mode_changes_total
        self.canary_seconds += later.canary_seconds
        self.canary_periods += later.canary_periods
        self.blocked.extend(later.blocked)
        self.lock_waits.extend(later.lock_waits)
        self.lock_wait_seconds += later.lock_wait_seconds
        self.lock_wait_longest = max(self.lock_wait_longest, later.lock_wait_longest)
        self.scrapes += later.scrapes
        self.chart.merge(later.chart)
        self.policy_failures_total += later.policy_failures_total
        for key, (count, first, last) in later.policy_failures.items():
            if key in self.policy_failures or len(self.policy_failures) < POLICY_REASONS_KEPT:
                _tally(self.policy_failures, None, None, key, count, first, last)
            else:
                self.policy_pooled = _add_seen(self.policy_pooled, count, first, last)
        if later.policy_pooled is not None:
            self.policy_pooled = _add_seen(self.policy_pooled, *later.policy_pooled)
        if later.chaos_first is not None:
            state, stamp = later.chaos_first
            if state != self.chaos:
                self.chaos_transitions_total += 1
                self.chaos_transitions.append((stamp, self.chaos, state))
            self.chaos = later.chaos
        self.chaos_transitions.extend(later.chaos_transitions)
        self.chaos_transitions_total += later.chaos_transitions_total
        for state, (count, first, last) in later.chaos_seen.items():
            _tally(self.chaos_seen, CHAOS_STATES_KEPT, "(other states)", state, count, first,
                   last)

    def finish(self):
        """Close a canary still open at the last event."""
        if self.canary_since is not None and not math.isnan(self.canary_since):
            end = self.clock.seconds(self.last_stamp)
            if end is not None:
                self.canary_seconds += max(0.0, end - self.canary_since)

    def summary(self):
        by_event = self.by_event
        return {
            "events": self.events,
            "deploys": by_event["deploy"],
            "promotions": by_event["promote"],
            "rollbacks": by_event["rollback"],
            "blocked": by_event["deploy_blocked"] + by_event["promote_blocked"],
            "deploys_blocked": by_event["deploy_blocked"],
            "promotions_blocked": by_event["promote_blocked"],
            "teardowns": by_event["teardown"],
            "policy_bypasses": by_event["policy_bypass"],
            "lock_waits": by_event["lock_wait"],
            "lock_wait_seconds": round(self.lock_wait_seconds, 3),
            "status_scrapes": self.scrapes,
            "scrape_policy_failures": self.policy_failures_total,
            "chaos_transitions": self.chaos_transitions_total,
            "canary_seconds": round(self.canary_seconds, 3),
            "canary_periods": self.canary_periods,
            "in_canary": self.canary_since is not None,
            "not_records": self.not_records,
            "first_timestamp": self.first_stamp,
            "last_timestamp": self.last_stamp,
            "events_by_type": dict(sorted(by_event.items())),
        }


def _add_seen(seen, count, first, last):
    """[count, first seen, last seen] with more sightings added (seen may be None)."""
    if seen is None:
        return [count, first, last]
    seen[0] += count
    seen[2] = last
    return seen


def _tally(table, cap, pool, key, count, first, last):
    """Add sightings of key to table (key -> [count, first, last]); beyond cap distinct keys,
    new ones are counted under pool. Returns the counters that took them."""
    seen = table.get(key)
    if seen is None and cap is not None and len(table) >= cap:
        key = pool
        seen = table.get(key)
    if seen is None:
        seen = table[key] = [count, first, last]
        return seen
    return _add_seen(seen, count, first, last)


def _run_end(seq, event, prev, hash_):
    """The last line of a run as the chain takes it, from the scan's bytes."""
    return seq, event, prev.decode("ascii"), hash_.decode("ascii")


def _parse(raw):
    """parse_line for a line with or without its newline."""
    return parse_line(raw[:-1] if raw.endswith(b"\n") else raw)


def _hash_matches(record):
    try:
        return record_hash(record) == record["hash"]
    except ValueError:
        return False


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
        digest.scan(_range_blocks(handle, start, end), chain)
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


def build_report(path, anchor=None, timeline_limit=TIMELINE_LIMIT, stack=None, host=None,
                 workers=None):
    """Read the history at path once and return the report and its figures.

    Returns {"markdown", "verified", "problem", "lines", "events", "last_seq", "last_hash",
    "summary", "chart_points"}. problem is None or {"line", "seq", "event", "kind", "reason"}
    (reason: the sentence audit_verify gives as its message). anchor is {"seq", "hash"} as for
    _history.verify. stack and host name the title; by default those of the last record.
    The history is read up to the size it has when the report starts: events appended meanwhile
    are left for the next report. A long history is read in parts by up to `workers` forked
    processes (by default one per CPU, at most 4); the result is the same as reading it in one
    go.
    Raises ReportError when the history is missing or unreadable, HistoryError for a bad anchor.
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
    except FileNotFoundError:
        raise ReportError("no history at %s: nothing has been recorded for this stack on this "
                          "host yet" % path)
    except OSError as exc:
        raise ReportError("cannot read the history %s: %s" % (path, exc.strerror or exc))
    digest.finish()
    verdict = chain.result()
    found = verdict["first_problem"]
    problem = None
    if found is not None:
        problem = {"line": found["line"], "seq": found["seq"], "event": found["event"],
                   "kind": found["problem"], "reason": found["message"]}
    stack = stack if stack else digest.last_names[0]
    host = host if host else digest.last_names[1]
    points = digest.chart.points()
    markdown = _render(path, verdict, problem, digest, points, stack, host, anchor)
    return {
        "markdown": markdown,
        "verified": problem is None,
        "problem": problem,
        "lines": verdict["lines"],
        "events": digest.events,
        "last_seq": verdict["last_seq"],
        "last_hash": verdict["last_hash"],
        "summary": digest.summary(),
        "chart_points": len(points),
    }


def _read_parts(path, handle, ranges, chain, digest, timeline_limit):
    """The first part here, the others in forked workers; results are taken in file order."""
    workers = []
    try:
        for start, end in ranges[1:]:
            try:
                workers.append(_Worker(path, start, end, chain.anchor_seq, timeline_limit))
            except OSError:  # cannot fork: read what is left here
                workers.append(None)
        digest.scan(_range_blocks(handle, *ranges[0]), chain)
        for (start, end), worker in zip(ranges[1:], workers):
            part = worker.results(chain) if worker is not None else None
            if part is None:  # the worker failed before sending anything: read its part here
                part = _Digest(timeline_limit, continued=True)
                part.scan(_range_blocks(handle, start, end), chain)
            digest.merge(part)
    finally:  # after a failure: stop the workers whose results are no longer wanted
        for worker in workers:
            if worker is not None and not worker.pipe.closed:
                worker.pipe.close()
                os.kill(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _render(path, verdict, problem, digest, points, stack, host, anchor):
    lines = []
    title = "Audit report: stack %s on %s" % (
        _compact(stack) if stack else "(unnamed)", _compact(host) if host else "(unknown host)")
    lines += ["# " + _inline(title), ""]
    if digest.last_stamp is not None:
        lines.append("As of the last event in the history, %s (generated from the history "
                     "alone, so an unchanged history gives an unchanged report)."
                     % _inline(_compact(digest.last_stamp)))
    else:
        lines.append("The history holds no event yet.")
    lines += ["", "History file: %s" % _inline(path), ""]
    lines += _chain_section(verdict, problem, digest, anchor)
    lines += _summary_section(digest)
    lines += _timeline_section(digest)
    lines += _mode_section(digest)
    lines += _blocked_section(digest)
    lines += _policy_section(digest)
    lines += _chaos_section(digest)
    lines += _lock_section(digest)
    lines += _chart_section(points, digest)
    return "\n".join(lines).rstrip("\n") + "\n"


def _inline(text):
    """Text in a paragraph or heading: escaped as a table cell is, without cutting it."""
    return table_cell(text, limit=10 ** 6)


def _chain_section(verdict, problem, digest, anchor):
    lines = ["## Chain verification", ""]
    if problem is None:
        anchored = ""
        if anchor is not None:
            anchored = " It contains the anchor seq %d with the expected hash." % anchor["seq"]
        if verdict["lines"]:
            lines.append("**Verified**: the hash chain holds for all %s lines (%s events); the "
                         "last record is seq %d with hash `%s`.%s"
                         % (_count(verdict["lines"]), _count(digest.events), verdict["last_seq"],
                            verdict["last_hash"], anchored))
        else:
            lines.append("**Verified**: the history is empty.%s" % anchored)
    else:
        lines += ["**BROKEN**: the hash chain breaks at line %d (%s)."
                  % (problem["line"], problem["kind"]), ""]
        seq = "-" if problem["seq"] is None else problem["seq"]
        lines += markdown_table(("Line", "Seq", "Event", "Problem", "What is wrong"),
                                [(problem["line"], seq, problem["event"] or "-", problem["kind"],
                                  problem["reason"])], "rrlll")
        if verdict["last_hash"] == GENESIS:
            before = "No record before it is sound."
        else:
            before = ("The last sound record before it is seq %d with hash `%s`."
                      % (verdict["last_seq"], verdict["last_hash"]))
        if problem["kind"] == "truncated":
            after = "Lines were cut from the end; the records left are summed up below."
        else:
            after = ("Records from line %d on cannot be trusted; they are still summed up below."
                     % problem["line"])
        lines += ["", "%s %s" % (before, after)]
    if digest.not_records:
        lines += ["", "%s line%s of the file %s not a record and %s left out of this report."
                  % (_count(digest.not_records), "" if digest.not_records == 1 else "s",
                     "is" if digest.not_records == 1 else "are",
                     "is" if digest.not_records == 1 else "are")]
    return lines + [""]


def _summary_section(digest):
    summary = digest.summary()
    canary = _duration(digest.canary_seconds)
    if digest.canary_periods:
        canary += " over %s period%s" % (
            _count(digest.canary_periods), "" if digest.canary_periods == 1 else "s")
    if digest.canary_since is not None:
        canary += "; still in canary at the last event"
    rows = [
        ("Events", _count(summary["events"])),
        ("Deploys", _count(summary["deploys"])),
        ("Promotions", _count(summary["promotions"])),
        ("Roll-backs", _count(summary["rollbacks"])),
        ("Blocked operations", "%s (deploys %s, promotions %s)"
         % (_count(summary["blocked"]), _count(summary["deploys_blocked"]),
            _count(summary["promotions_blocked"]))),
        ("Time in canary", canary),
        ("Policy bypasses", _count(summary["policy_bypasses"])),
        ("Lock waits", "%s (%s waited in all)" % (_count(summary["lock_waits"]),
                                                  _duration(digest.lock_wait_seconds))),
        ("Teardowns", _count(summary["teardowns"])),
        ("Status scrapes", "%s (%s with a failing policy)"
         % (_count(summary["status_scrapes"]), _count(summary["scrape_policy_failures"]))),
        ("First event", summary["first_timestamp"] or "-"),
        ("Last event", summary["last_timestamp"] or "-"),
    ]
    lines = ["## Summary", ""] + markdown_table(("Figure", "Value"), rows) + [""]
    lines += ["Time in canary runs from a promotion to canary to the promotion, roll-back, "
              "teardown or deploy that ends it.", ""]
    lines += ["### Events by type", ""]
    by_event = sorted(digest.by_event.items(), key=lambda item: (-item[1], item[0]))
    if by_event:
        lines += markdown_table(("Event", "Count"), [(name, _count(number))
                                                     for name, number in by_event], "lr")
    else:
        lines.append("No events.")
    return lines + [""]


def _details_summary(record):
    details = record["details"]
    event = record["event"]
    get = details.get
    if event == "deploy_blocked" or event == "policy_bypass":
        parts = [("policy %s" % _compact(get("policy"))) if get("policy") else ""]
        if get("operation"):
            parts.insert(0, "operation %s" % _compact(get("operation")))
        reasons = "; ".join(_reasons(get("reasons")))
        return ", ".join(part for part in parts if part) + (": " + reasons if reasons else "")
    if event == "promote_blocked":
        reasons = "; ".join(_reasons(get("reasons")))
        return "to %s, policy %s%s" % (_compact(get("target_mode")), _compact(get("policy")),
                                       ": " + reasons if reasons else "")
    if event == "lock_wait":
        return "waited %s s" % _compact(get("waited_seconds"))
    return _compact(details) if details else ""


def _timeline_section(digest):
    lines = ["## Timeline", ""]
    shown = len(digest.timeline)
    if not digest.timeline_total:
        return lines + ["No events other than status scrapes.", ""]
    omitted = digest.timeline_total - shown
    lines.append("The last %s of %s events other than status scrapes%s."
                 % (_count(shown), _count(digest.timeline_total),
                    "; %s earlier ones are omitted" % _count(omitted) if omitted else ""))
    lines.append("")
    rows = [(record["timestamp"], record["seq"], record["event"], record.get("mode") or "",
             record.get("version") or "", _who(record.get("actor")), _details_summary(record))
            for record in digest.timeline]
    lines += markdown_table(("When (UTC)", "Seq", "Event", "Mode", "Version", "Who", "Details"),
                            rows, "lrlllll")
    return lines + [""]


def _shown_of(shown, total, what):
    if total > shown:
        return "The last %s of %s %s." % (_count(shown), _count(total), what)
    return "%s %s." % (_count(total), what)


def _mode_section(digest):
    lines = ["## Mode changes", ""]
    if not digest.mode_changes_total:
        return lines + ["No mode changes.", ""]
    lines += [_shown_of(len(digest.mode_changes), digest.mode_changes_total, "mode changes"), ""]
    rows = [(stamp, event, was or "-", now or "-", version or "", note, who)
            for stamp, event, was, now, version, note, who in digest.mode_changes]
    lines += markdown_table(("When (UTC)", "Event", "From", "To", "Version", "Details", "Who"),
                            rows)
    return lines + [""]


def _blocked_section(digest):
    total = digest.by_event["deploy_blocked"] + digest.by_event["promote_blocked"]
    lines = ["## Blocked operations", ""]
    if not total:
        return lines + ["No operation was blocked.", ""]
    lines += [_shown_of(len(digest.blocked), total, "blocked operations"), ""]
    rows = [(stamp, event, target if target is not None else "-",
             policy if policy is not None else "-", reasons or "-", who)
            for stamp, event, target, policy, reasons, who in digest.blocked]
    lines += markdown_table(("When (UTC)", "Event", "Target", "Policy", "Reasons", "Who"), rows)
    return lines + [""]


def _policy_section(digest):
    lines = ["## Policy failures seen by status scrapes", ""]
    if not digest.policy_failures_total:
        return lines + ["No status scrape saw a failing policy.", ""]
    ranked = sorted(digest.policy_failures.items(),
                    key=lambda item: (-item[1][0], item[1][1], item[0]))
    shown = ranked[:POLICY_REASONS_SHOWN]
    lines.append("%s scrape%s saw a failing policy, with %s distinct set%s of reasons%s."
                 % (_count(digest.policy_failures_total),
                    "" if digest.policy_failures_total == 1 else "s", _count(len(ranked)),
                    "" if len(ranked) == 1 else "s",
                    "; the %s most frequent are shown" % _count(len(shown))
                    if len(ranked) > len(shown) else ""))
    lines.append("")
    rows = [(", ".join(failed), "\n".join(reasons) or "(no reason given)", _count(count), first,
             last) for (failed, reasons), (count, first, last) in shown]
    if digest.policy_pooled is not None:
        count, first, last = digest.policy_pooled
        rows.append(("-", "(other reasons, beyond %d distinct sets)" % POLICY_REASONS_KEPT,
                     _count(count), first, last))
    lines += markdown_table(("Failing policy", "Reasons", "Scrapes", "First seen (UTC)",
                             "Last seen (UTC)"), rows, "llrll")
    return lines + [""]


def _chaos_section(digest):
    lines = ["## Chaos", ""]
    if not digest.chaos_seen:
        return lines + ["No status scrape saw chaos injected.", ""]
    rows = [(state, _count(count), first, last)
            for state, (count, first, last) in sorted(digest.chaos_seen.items(),
                                                      key=lambda item: item[1][1])]
    lines += markdown_table(("Chaos", "Scrapes", "First seen (UTC)", "Last seen (UTC)"), rows,
                            "lrll")
    lines += ["", "### Chaos transitions", "",
              _shown_of(len(digest.chaos_transitions), digest.chaos_transitions_total,
                        "changes of the chaos state between scrapes"), ""]
    lines += markdown_table(("When (UTC)", "From", "To"), list(digest.chaos_transitions))
    return lines + [""]


def _lock_section(digest):
    lines = ["## Lock waits", ""]
    total = digest.by_event["lock_wait"]
    if not total:
        return lines + ["No run had to wait for the stack lock.", ""]
    shown = len(digest.lock_waits)
    lines.append("%s lock wait%s, %s in all, the longest %s%s."
                 % (_count(total), "" if total == 1 else "s", _duration(digest.lock_wait_seconds),
                    _duration(digest.lock_wait_longest),
                    "; the last %s are shown" % _count(shown) if total > shown else ""))
    lines.append("")
    rows = [(stamp, "-" if waited is None else "%g" % waited, who,
             "-" if stale is None else stale) for stamp, waited, who, stale in digest.lock_waits]
    lines += markdown_table(("When (UTC)", "Waited (s)", "Who", "Stale lock broken"), rows,
                            "lrll")
    return lines + [""]


def _chart_labels(points, width):
    if not points:
        return []
    span = points[-1][0] - points[0][0]
    if width >= 86400:
        layout = "%Y-%m-%d"
    elif span >= 86400:
        layout = "%m-%d %H:%M"
    else:
        layout = "%H:%M"
    return [_utc(start, layout) for start, _error, _p99 in points]


def _utc(seconds, layout):
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(layout)
    except (OverflowError, OSError, ValueError):  # before year 1 or after 9999
        return "%d s" % seconds


def _chart_section(points, digest):
    lines = ["## Error rate and P99 over time", ""]
    if not points:
        return lines + ["No status scrape recorded an error rate or a P99, so there is no "
                        "chart.", ""]
    width = digest.chart.width
    labels = _chart_labels(points, width)
    lines.append("Mean per %s of the error rate (first line, %%) and of the P99 latency "
                 "(second line, ms) seen by %s status scrapes; 0 where a bucket has no figure."
                 % (_duration(width), _count(digest.scrapes)))
    lines += ["", "```mermaid", "xychart-beta",
              '    title "%s"' % mermaid_text("Error rate (%%) and P99 (ms), mean per %s"
                                              % _duration(width)),
              "    x-axis [%s]" % ", ".join('"%s"' % mermaid_text(label) for label in labels),
              '    y-axis "%s"' % mermaid_text("error rate (%) / P99 (ms)"),
              "    line [%s]" % ", ".join(_mermaid_number(error or 0.0)
                                          for _start, error, _p99 in points),
              "    line [%s]" % ", ".join(_mermaid_number(p99 or 0.0)
                                          for _start, _error, p99 in points),
              "```"]
    return lines + [""]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_report(dest, text, check_mode=False):
    """Write text to dest atomically with mode 0640 unless it already holds exactly that text.

    Returns whether dest changed (in check mode: would change; nothing is written). The text
    goes to a temporary file in the same directory, synced, then renamed over dest.
    """
    data = text.encode("utf-8")
    try:
        with open(dest, "rb") as handle:
            if handle.read(len(data) + 1) == data:
                if (os.stat(dest).st_mode & 0o777) == REPORT_MODE:
                    return False
                if not check_mode:
                    os.chmod(dest, REPORT_MODE)
                return True
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise ReportError("cannot write the report %s: it is a directory." % dest)
    if check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(dest))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(dest),
                                     suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), REPORT_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, dest)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return True
