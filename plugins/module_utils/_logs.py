# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The stack's container logs, pure: what `since` means, and one ordered list of lines from a
container's two streams.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

import calendar
import re
import time

MAX_LINES = 10000
# A relative age (30s, 10m, 2h, 7d) or a UTC time (2026-12-07T10:00:00Z, seconds optional).
_AGE_RE = re.compile(r"([1-9][0-9]{0,6})([smhd])", re.ASCII)
_UTC_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?Z", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# docker logs --timestamps: RFC 3339 with nanoseconds, then one space, then the line.
_STAMPED_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(?:Z|[+-][0-9]{2}:[0-9]{2})) (.*)", re.ASCII | re.DOTALL)


class LogsError(ValueError):
    """An input that cannot be used, with its fix."""


def since_timestamp(text, now=None):
    """The unix time `since` names: '' (no limit) -> None, an age such as '10m' -> now minus it,
    a UTC time '2026-12-07T10:00Z' -> that time. LogsError names the value and the forms."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    now = time.time() if now is None else now
    age = _AGE_RE.fullmatch(text)
    if age:
        return int(now - int(age.group(1)) * _UNIT_SECONDS[age.group(2)])
    utc = _UTC_RE.fullmatch(text)
    if utc:
        year, month, day, hour, minute = (int(part) for part in utc.groups()[:5])
        second = int(utc.group(6) or 0)
        try:
            stamp = calendar.timegm(time.struct_time((year, month, day, hour, minute, second, 0, 1, 0)))
            if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
                raise ValueError
        except (ValueError, OverflowError):
            raise LogsError(_since_message(text, "is not a real time"))
        return stamp
    raise LogsError(_since_message(text, "is neither an age nor a UTC time"))


def _since_message(text, problem):
    shown = text if len(text) <= 40 else text[:37] + "..."
    return ("since: %r %s; use an age such as 30s, 10m, 2h or 7d, or a UTC time such as 2026-12-07T10:00Z"
            % (shown, problem))


def check_lines(lines):
    """`lines` as an int from 1 to MAX_LINES; LogsError otherwise."""
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LINES:
        raise LogsError("lines: %r is out of range; use a whole number of lines from 1 to %d" % (lines, MAX_LINES))
    return lines


def merge_streams(stdout, stderr, lines):
    """The last `lines` lines of a container's two streams (docker logs --timestamps output), in
    time order, each {time, stream, text}. Lines without a timestamp (a line the container wrote
    with a newline inside) continue the line before them."""
    entries = []
    for stream, text in (("stdout", stdout), ("stderr", stderr)):
        for raw in text.splitlines():
            stamped = _STAMPED_RE.fullmatch(raw)
            if stamped:
                entries.append({"time": stamped.group(1), "stream": stream, "text": stamped.group(2)})
            elif entries and entries[-1]["stream"] == stream:
                entries[-1]["text"] += "\n" + raw
            else:
                entries.append({"time": "", "stream": stream, "text": raw})
    # Stable sort: equal (or missing) times keep each stream's own order. RFC 3339 times of one
    # daemon share a format and zone, so they sort as text.
    entries.sort(key=lambda entry: entry["time"])
    return entries[-lines:]


def container_role(entry):
    """(role, slot) of a `docker compose ps` entry from its SwiftDeploy labels ('' when absent)."""
    labels = entry.get("Labels") or ""
    found = {}
    for pair in labels.split(","):
        key, _sep, value = pair.partition("=")
        if key in ("org.swiftdeploy.role", "org.swiftdeploy.slot"):
            found[key] = value
    return found.get("org.swiftdeploy.role", ""), found.get("org.swiftdeploy.slot", "")


# logs.yml shows the app slots first (what is usually wanted), then the way a request comes in:
# the edge nginx (nginx.edge), the routing nginx, then the OPA sidecar; a container without a
# SwiftDeploy role label last.
LOG_ROLE_ORDER = ("app", "edge", "nginx", "opa")


def log_order(container):
    """Sort key of a container ({role, slot, name}) in stack_logs_info's output: by role
    (LOG_ROLE_ORDER), then slot, then name, so the order never depends on `docker compose ps`."""
    role = container["role"]
    rank = LOG_ROLE_ORDER.index(role) if role in LOG_ROLE_ORDER else len(LOG_ROLE_ORDER)
    return (rank, container["slot"], container["name"])
