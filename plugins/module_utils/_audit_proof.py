# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit's fast proof: history lines proven genuine by their bytes, and the verdict.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports (only the history's own module_utils) so that the unit tests and the benchmark drive it
directly.

Re-serialising each record to check its hash costs more than everything else together, so a
line is first matched against the exact byte layout the writer produces: `LineProver` accepts a
line only when (1) a strict pattern shows that every part of it is already in canonical form
(keys sorted, no spaces, the escapes and number forms json.dumps writes, ASCII only) and (2) the
SHA-256 of its bytes without the `"hash":"<64 hex>",` member equals that hash. (1) makes those
bytes exactly `_history.canonical_json` of the record without `hash`, so (2) is exactly the
check `record_hash` makes. Any other line (non-ASCII text, another spacing, an unknown layout, a
wrong hash) goes the slow way, parse_line and record_hash, and `_history.ChainVerifier` names
what is wrong with the lines that fail it: the verdict never depends on which way a line went.

`chain_verdict` shapes what the verifier concludes into the verdict both audit modules return.
"""

from __future__ import annotations

import hashlib
import json
import re

from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import (
    parse_line,
    record_hash,
)

SCRAPE = "status_scrape"


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


def chain_verdict(result, events):
    """The verdict audit_verify_info and audit_report_info both return, from what
    _history.ChainVerifier.result (or _history.verify) concludes and the count of records.

    {"verified", "problem", "events", "lines", "last_seq", "last_hash"}; problem is None or
    {"line", "seq", "event", "kind", "reason"} (reason: the verifier's sentence)."""
    found = result["first_problem"]
    problem = None
    if found is not None:
        problem = {"line": found["line"], "seq": found["seq"], "event": found["event"],
                   "kind": found["problem"], "reason": found["message"]}
    return {
        "verified": problem is None,
        "problem": problem,
        "events": events,
        "lines": result["lines"],
        "last_seq": result["last_seq"],
        "last_hash": result["last_hash"],
    }
