# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit's digest: what the report shows, gathered record by record in bounded memory.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports so that the unit tests and the benchmark drive it directly.

Memory is bounded whatever the length of the history: counters, bounded deques for the tables,
and a chart whose time buckets double in width (merging pairs) instead of growing in number.
A digest of one part of a history merges with the digest of the part that follows into the
digest of reading both in one go (`_Digest.merge`), so parts can be read at the same time.
"""

from __future__ import annotations

import collections
import datetime
import math
import re

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_proof import (
    SCRAPE,
    _TIMESTAMP_FORM,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._markdown import (
    compact as _compact,
)

TIMELINE_LIMIT = 200
CHART_POINTS = 60           # at most this many time buckets in the chart
MODE_CHANGES_SHOWN = 100
BLOCKED_SHOWN = 100
LOCK_WAITS_SHOWN = 50
JUDGEMENTS_SHOWN = 100      # the last looks of automated rollouts (canary_judged)
CHAOS_TRANSITIONS_SHOWN = 50
IMAGES_KEPT = 200           # the last events that say which images run (details.slots)
POLICY_REASONS_KEPT = 500   # distinct reason sets counted apart; later new ones are pooled
CHAOS_STATES_KEPT = 100     # distinct chaos states counted apart; later new ones are pooled
BLOCKED_EVENTS = ("deploy_blocked", "promote_blocked")
NO_CHAOS = (None, "", "none", "None")


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


def running_images(slots):
    """What an event's details.slots says runs: ((slot, mode, image, image ID, version), ...)
    sorted by slot; () for none (a teardown). Values as the history holds them, '' for a missing
    one (an image ID not recorded)."""
    if not isinstance(slots, dict):
        return ()
    rows = []
    for slot in sorted(slots, key=str):
        spec = slots[slot] if isinstance(slots[slot], dict) else {}
        rows.append((_compact(slot),) + tuple(_compact(spec.get(key, "")) for key in ("mode", "image", "image_id",
                                                                                      "version")))
    return tuple(rows)


def _chaos_state(value):
    if isinstance(value, str) and value.strip() in NO_CHAOS:
        return "none"
    if value is None:
        return "none"
    return _compact(value)


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
    if event == "rollback_release":
        versions = [(part.get("version", "?") if isinstance(part, dict) else "?")
                    for part in (details.get("from"), details.get("to"))]
        return (record.get("mode") or "stable", False, True, None,
                "release %s -> %s" % (_compact(versions[0]), _compact(versions[1])))
    if event == "teardown":
        return "down", False, True, None, "clean" if details.get("clean") is True else ""
    now = record.get("mode")  # deploy
    note = "generation %s" % _compact(details["generation"]) if "generation" in details else ""
    return now, now == "canary", False, None, note


_MODE_EVENTS = frozenset(("deploy", "promote", "rollback", "rollback_release", "teardown"))


class _Digest:
    """Everything the report shows, gathered line by line in bounded memory.

    _audit_scan.scan fills it: plain status scrapes inline, from their bytes, every other record
    through record(). A digest of a later part of the history (continued=True) does not know the mode, the canary
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
        # Automated rollouts' looks (promote.yml -e mode=auto)
        self.judgements = collections.deque(maxlen=JUDGEMENTS_SHOWN)
        self.judgement_verdicts = collections.Counter()
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
        # (stamp, seq, event, running_images(...)) of the events that say what runs afterwards
        self.images = collections.deque(maxlen=IMAGES_KEPT)

    # Any record ---------------------------------------------------------------------------

    def record(self, record):
        """Sum up one record (the scan sums up plain status scrapes itself)."""
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
        if isinstance(details.get("slots"), dict) or event == "teardown":
            self.images.append((stamp, record.get("seq"), event, running_images(details.get("slots"))))
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
        elif event == "canary_judged":
            self._judgement(record, details, stamp)

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

    # Automated rollouts ---------------------------------------------------------------------

    def _judgement(self, record, details, stamp):
        """One look of an automated rollout: its verdict, both sides' figures over the interval
        and the evidence of the comparison with the baseline, whatever shape the details have."""
        verdict = details.get("verdict")
        verdict = verdict if isinstance(verdict, str) else "?"
        self.judgement_verdicts[verdict] += 1
        windows = details.get("windows") if isinstance(details.get("windows"), dict) else {}
        analysis = details.get("analysis") if isinstance(details.get("analysis"), dict) else {}

        def side(name):
            figures = windows.get(name) if isinstance(windows.get(name), dict) else {}
            return (_finite(figures.get("requests")), _finite(figures.get("error_rate_percent")),
                    _finite(figures.get("p99_latency_ms")))

        def evidence(name):
            question = analysis.get(name) if isinstance(analysis.get(name), dict) else {}
            return _finite(question.get("e_value")), _finite(question.get("threshold"))

        version = details.get("canary_version") if isinstance(details.get("canary_version"), str) else None
        self.judgements.append((stamp, version, _finite(details.get("step")),
                                _finite(details.get("steps")), _finite(details.get("weight")), verdict,
                                side("canary"), side("baseline"), evidence("errors"), evidence("latency"),
                                "\n".join(_reasons(details.get("reasons")))))

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
            self.policy_failure(stamp, infra_pass, canary_pass,
                                _reasons(details.get("policy_reasons")))
        self.chaos_now(_chaos_state(details.get("chaos")), stamp)

    def chaos_now(self, state, stamp):
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

    def policy_failure(self, stamp, infra_pass, canary_pass, reasons):
        """Count a status scrape that saw a policy fail, with its reasons."""
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
        self.images.extend(later.images)
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
        self.judgements.extend(later.judgements)
        self.judgement_verdicts.update(later.judgement_verdicts)
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
            "rollbacks": by_event["rollback"] + by_event["rollback_release"],
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
