# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A rolling deploy's rules, pure (docs/fleet-rollout.md).

The batch size takes what Ansible's play keyword `serial` takes: a number of hosts, a
percentage of the play's hosts, or a list of them, the last repeated until every host has had
its turn. `parse_batch` reads it from `-e swiftdeploy_batch` (often text) or the manifest's
`fleet.batch`, and names the field, the value and the fix when it is not valid;
`split_batches` cuts a host list into batches exactly as Ansible's `serial` does, so the role
knows each host's batch number; `rollout_summary` says, after a rollout, which hosts are on which
release and why the rollout halted.
"""

from __future__ import annotations

import json
import re

# More batches than hosts is never useful; a long list is a mistake.
MAX_ITEMS = 100
MAX_HOSTS = 100000
_NUMBER_RE = re.compile(r"[0-9]{1,6}")
_PERCENT_RE = re.compile(r"([0-9]{1,3})%")
_SHOW_WIDTH = 60

FIX = ("use a number of hosts (1 or more), a percentage of the hosts from 1% to 100% such as \"25%\", "
       "or a list of them such as [1, \"50%\", \"100%\"] (what Ansible's serial takes)")


class BatchError(ValueError):
    """A batch setting that is not valid; the message names the field, the value and the fix."""


def _show(value):
    text = json.dumps(value) if not isinstance(value, str) else value
    if isinstance(value, bool):
        text = "true" if value else "false"
    return text if len(text) <= _SHOW_WIDTH else text[:_SHOW_WIDTH - 3] + "..."


def _item(value, where):
    """One batch size: an int of hosts or a "N%" string, checked."""
    if isinstance(value, bool) or value is None or isinstance(value, (float, dict, list)):
        raise BatchError("%s: %s is not a batch size; %s." % (where, _show(value), FIX))
    if isinstance(value, int):
        if not 1 <= value <= MAX_HOSTS:
            raise BatchError("%s: %s is out of range; %s." % (where, _show(value), FIX))
        return value
    if not isinstance(value, str):
        raise BatchError("%s: %s is not a batch size; %s." % (where, _show(value), FIX))
    text = value.strip()
    if _NUMBER_RE.fullmatch(text):
        return _item(int(text), where)
    match = _PERCENT_RE.fullmatch(text)
    if match is None:
        raise BatchError("%s: %s is not a batch size; %s." % (where, _show(value), FIX))
    if not 1 <= int(match.group(1)) <= 100:
        raise BatchError("%s: %s is out of range; %s." % (where, _show(value), FIX))
    return "%d%%" % int(match.group(1))


def _split_text(text):
    """A list written as text: JSON ('[1, "50%"]'), YAML-ish ('[1, 50%]') or '1,50%'."""
    if text.startswith("["):
        try:
            loaded = json.loads(text)
        except ValueError:
            if not text.endswith("]"):
                return None
            loaded = [part.strip().strip("'\"") for part in text[1:-1].split(",")]
        return loaded if isinstance(loaded, list) else None
    return [part.strip() for part in text.split(",")]


def parse_batch(value, field="swiftdeploy_batch", name="-e %s"):
    """The batch setting as Ansible's serial takes it: [] (no batches: every host at once) for
    None or an empty text, else a list of ints and "N%" strings. BatchError when not valid,
    naming the setting as `name % field` (with the item's index for a list)."""
    where = name % field
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    items = value
    if isinstance(value, str):
        text = value.strip()
        items = _split_text(text) if ("," in text or text.startswith("[")) else [text]
        if items is None:
            raise BatchError("%s: %s is not a batch size or a list of them; %s." % (where, _show(value), FIX))
    elif not isinstance(value, list):
        items = [value]
    if not items:
        raise BatchError("%s: an empty list has no batch size; %s." % (where, FIX))
    if len(items) > MAX_ITEMS:
        raise BatchError("%s: %d batch sizes, more than %d; the last size is repeated until every host had its "
                         "turn, so list fewer." % (where, len(items), MAX_ITEMS))
    return [_item(item, name % ("%s[%d]" % (field, index)) if len(items) > 1 or isinstance(value, list) else where)
            for index, item in enumerate(items)]


def _size(item, total):
    """Ansible's pct_to_int: a percentage of all the play's hosts, rounded down, at least 1."""
    if isinstance(item, str) and item.endswith("%"):
        return int((int(item[:-1]) / 100.0) * total) or 1
    return int(item)


def split_batches(hosts, batches):
    """The hosts in batches, in order, as Ansible's `serial` cuts them: each size in turn, the
    last one repeated; no sizes: one batch of every host."""
    hosts = list(hosts)
    if not batches:
        return [hosts] if hosts else []
    total, index, result = len(hosts), 0, []
    while hosts:
        size = _size(batches[index], total)
        result.append(hosts[:size])
        hosts = hosts[size:]
        index = min(index + 1, len(batches) - 1)
    return result


def batch_number(hosts, batches, host):
    """The 1-based number of the batch `host` is in (0 when it is not among `hosts`)."""
    for number, batch in enumerate(split_batches(hosts, batches), 1):
        if host in batch:
            return number
    return 0


# What a host's part in a rollout ended as (the role's _swiftdeploy_rollout.result).
# Where the summary lists hosts the rollout never touched: they serve what they served before.
NOT_REACHED = "unchanged (not reached)"
RESULTS = ("deployed", "unchanged", "failed", "not_reached", "reverted", "revert_failed", "kept")


# The part of a host Ansible took out of the rolling play: it has none of its own.
UNKNOWN = "unknown (unreachable)"
LOST = ("became unreachable or failed outside the rollout's rescue during its batch, so its state is "
        "unknown: check it with status.yml (rollback.yml -e to=previous if it serves the new release)")


def with_lost_hosts(hosts, batches):
    """hosts ({host: part}, in play order) with each missing part (None: a host Ansible took out
    of the play) made a failure of its batch, whose state is unknown."""
    order = list(hosts)
    found = {}
    for name in order:
        part = hosts[name]
        if part is None:
            part = {"result": "failed", "batch": batch_number(order, parse_batch(batches), name),
                    "failure": LOST, "version": None, "image": None, "unreachable": True}
        found[name] = dict(part)
    return found


def deployed_part(rollout_id, batch, had_release, before, after):
    """The part of a host whose deploy in the rollout finished: `deployed` when its stable release
    (image, version or image ID) changed or it had none before (`had_release` false), otherwise
    `unchanged`; `from` is the release it had (None without one), `version` and `image` the one it
    serves now. `before` is read only when the host had a release."""
    before = dict(before or {}) if had_release else {}
    after = dict(after or {})
    changed = not had_release or any(before.get(key) != after.get(key) for key in ("image", "version")) or (
        before.get("image_id", "") != after.get("image_id", ""))
    return {"id": rollout_id, "batch": int(batch), "result": "deployed" if changed else "unchanged",
            "had_release": bool(had_release), "from": before if had_release else None,
            "version": after.get("version"), "image": after.get("image")}


def rollout_summary(hosts, rollout_id, batches):
    """The rollout's outcome from each host's part: {host: {result, batch, version, image, ...}}.

    result: completed (every host deployed) or halted (a batch failed); halted_batch, the hosts
    that failed, were reverted, kept the new release or were not reached, and `releases`:
    {version: [hosts]} for the release each host serves now (hosts serving nothing are under
    "none")."""
    ordered = sorted(hosts, key=lambda name: (hosts[name].get("batch") or 0, name))
    failed = [name for name in ordered if hosts[name].get("result") == "failed"]
    halted_batch = min((hosts[name].get("batch") or 0) for name in failed) if failed else None
    releases = {}
    for name in ordered:
        version = hosts[name].get("version") or (
            NOT_REACHED if hosts[name].get("result") == "not_reached" else UNKNOWN if hosts[name].get("unreachable") else "none")
        releases.setdefault(version, []).append(name)

    def having(*results):
        return [name for name in ordered if hosts[name].get("result") in results]

    return {
        "id": rollout_id,
        "batches": list(batches),
        "result": "halted" if failed else "completed",
        "halted_batch": halted_batch,
        "failed": failed,
        "reverted": having("reverted"),
        "revert_failed": having("revert_failed"),
        "kept_new_release": having("kept") if failed else [],
        "not_reached": having("not_reached"),
        "deployed": having("deployed", "unchanged") if not failed else having("deployed"),
        "unchanged": having("unchanged"),
        "releases": releases,
    }


def halt_message(summary, hosts):
    """The one sentence a halted rollout fails the play with."""
    parts = ["Rollout %s halted at batch %s: %s failed (%s)." % (
        summary["id"], summary["halted_batch"], ", ".join(summary["failed"]),
        "; ".join("%s: %s" % (name, hosts[name].get("failure") or "failed") for name in summary["failed"]))]
    if summary["reverted"]:
        parts.append("Reverted to the release they had before: %s." % ", ".join(
            "%s (%s)" % (name, hosts[name].get("version")) for name in summary["reverted"]))
    if summary["revert_failed"]:
        parts.append("Revert FAILED on %s: roll back there with rollback.yml -e to=previous." %
                     ", ".join(summary["revert_failed"]))
    if summary["kept_new_release"]:
        parts.append("Still on the new release: %s." % ", ".join(
            "%s (%s)" % (name, hosts[name].get("reason") or hosts[name].get("version"))
            for name in summary["kept_new_release"]))
    if summary["not_reached"]:
        parts.append("Not reached (untouched): %s." % ", ".join(summary["not_reached"]))
    parts.append("Hosts by release now: %s." % "; ".join(
        "%s: %s" % (version, ", ".join(names)) for version, names in sorted(summary["releases"].items())))
    return " ".join(parts)
