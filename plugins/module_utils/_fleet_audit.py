# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""audit.yml on a fleet, pure: every host's verification and one timeline with host names.

Each host's audit leaves an outcome: what audit_report_info returned for its history (and where
its own report went), or the reason it could not be audited. `fleet_audit` turns the outcomes of
every host of the play into the data of the fleet report: per host its verification result, and
the hosts' timelines merged into one, oldest first, each row naming its host.

Each host's timeline holds only its last events (audit_report_info's timeline_limit). Merged as
they are, the rows of a quiet host would reach further back than those of a busy one, and the
fleet timeline would look as if the busy host had done nothing then. So the merged timeline
starts at the latest first row of any host whose timeline was cut, and says how many events it
leaves out; within what it shows, no host's event is missing.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

import datetime

NOT_REACHED = "not reached: unreachable, or failed before its history was read"
TIMELINE_LIMIT = 500


class FleetAuditError(ValueError):
    """An outcome that is not one audit.yml leaves; the message names the host and the field."""


def _when(timestamp):
    """A sort key for a record's timestamp: its instant when it parses, else the text after
    every instant (a history written by another tool still sorts)."""
    if not isinstance(timestamp, str) or not timestamp:
        return (0, datetime.datetime.min.replace(tzinfo=datetime.timezone.utc), "")
    try:
        parsed = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return (2, datetime.datetime.min.replace(tzinfo=datetime.timezone.utc), timestamp)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return (1, parsed, "")


def _row_key(row):
    return (_when(row.get("timestamp")), row["host"], row.get("seq") or 0)


def merge_timelines(timelines, limit=TIMELINE_LIMIT):
    """One timeline for {host: {rows, total}} (each host's rows oldest first, the last of its
    `total` events). Returns {rows, total, shown, since, left_out}: rows oldest first with `host`
    added, at most `limit` of them; `since` the first instant every host's events are complete
    from (None when no host's timeline was cut); left_out how many events the rows leave out."""
    merged, total, since = [], 0, None
    for host, timeline in timelines.items():
        rows = list(timeline.get("rows") or [])
        total += int(timeline.get("total") or 0)
        merged += [dict(row, host=str(host)) for row in rows]
        if rows and int(timeline.get("total") or 0) > len(rows):
            first = _when(rows[0].get("timestamp"))
            since = first if since is None or first > since else since
    merged.sort(key=_row_key)
    if since is not None:
        merged = [row for row in merged if _when(row.get("timestamp")) >= since]
    if limit is not None and len(merged) > limit:
        merged = merged[len(merged) - limit:]
    first = merged[0].get("timestamp") if merged and since is not None else None
    return {"rows": merged, "total": total, "shown": len(merged), "since": first,
            "left_out": total - len(merged)}


def _host_entry(host, outcome):
    if outcome is None:
        return {"host": host, "audited": False, "verified": False, "reason": NOT_REACHED}
    if not isinstance(outcome, dict):
        raise FleetAuditError("host %s: its audit outcome is %s, not a mapping; every host must run the same "
                              "version of the swiftdeploy.stack collection" % (host, type(outcome).__name__))
    if outcome.get("error") is not None:
        return {"host": host, "audited": False, "verified": False, "reason": " ".join(str(outcome["error"]).split())}
    audit = outcome.get("audit")
    if not isinstance(audit, dict) or "verified" not in audit:
        raise FleetAuditError("host %s: its audit outcome has no audit result with `verified`; every host must "
                              "run the same version of the swiftdeploy.stack collection" % host)
    problem = audit.get("problem") or None
    return {"host": host, "audited": True, "verified": bool(audit["verified"]),
            "events": audit.get("events", 0), "problem": problem,
            "reason": None if audit["verified"] else (problem or {}).get("reason", "the hash chain is broken"),
            "first_event": (audit.get("summary") or {}).get("first_timestamp"),
            "last_event": (audit.get("summary") or {}).get("last_timestamp"),
            "history": (audit.get("title") or {}).get("history"),
            "report": outcome.get("report"), "summary": audit.get("summary") or {}}


def host_stats(entry):
    """What set_stats publishes for one host: the single-host audit's keys (verified, events,
    report, problem, summary) for an audited host, else audited false and the reason."""
    if not entry["audited"]:
        return {"audited": False, "verified": False, "reason": entry["reason"]}
    return {"verified": entry["verified"], "events": entry["events"], "report": entry["report"],
            "problem": entry["problem"], "summary": entry["summary"]}


def host_line(entry):
    """One line of the play's output per host."""
    if not entry["audited"]:
        return "%s: NOT AUDITED: %s" % (entry["host"], entry["reason"])
    if entry["verified"]:
        return "%s: verified, %d events" % (entry["host"], entry["events"])
    return "%s: BROKEN: %s" % (entry["host"], entry["reason"])


def fleet_audit(outcomes, hosts, stack=None, limit=TIMELINE_LIMIT):
    """The fleet report's data from each host's outcome.

    outcomes  {host: {audit: audit_report_info's result, report: the local report's path} or
              {error: why it could not be audited} or None (no outcome: not reached)}
    hosts     every host of the play, in inventory order

    Returns {stack, hosts: [entry per host], verified, failed, not_audited, events, timeline,
    stats, lines}: an entry has host, audited, verified, reason (why not verified or not
    audited), events, problem, first_event, last_event, history, report, summary; `verified`
    is true only when every host was audited and its chain holds; `failed` the hosts whose
    chain is broken; `not_audited` the hosts that could not be audited; `timeline`
    merge_timelines of the audited hosts; `stats` {host: host_stats}; `lines` host_line each.
    """
    entries = [_host_entry(str(host), outcomes.get(str(host))) for host in hosts]
    timelines = {entry["host"]: (outcomes[entry["host"]]["audit"].get("timeline") or {})
                 for entry in entries if entry["audited"]}
    return {
        "stack": stack,
        "hosts": entries,
        "verified": bool(entries) and all(entry["verified"] for entry in entries),
        "failed": [entry["host"] for entry in entries if entry["audited"] and not entry["verified"]],
        "not_audited": [entry["host"] for entry in entries if not entry["audited"]],
        "events": sum(entry.get("events", 0) for entry in entries if entry["audited"]),
        "timeline": merge_timelines(timelines, limit),
        "stats": {entry["host"]: host_stats(entry) for entry in entries},
        "lines": [host_line(entry) for entry in entries],
    }
