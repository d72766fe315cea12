# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The releases a stack keeps in its state, to go back to one: pure rules, no I/O.

This is a private module_utils file: its API may change without notice. No Ansible imports, so
the unit tests drive every rule as a table.

state.json's optional `releases` lists the last N releases that became stable, oldest first,
the current stable release last: each one's image reference, image ID (when known), version,
hash of its configuration (when known), when it last became stable and by whom. A release is
recorded when a deploy, a roll forward or a rollback to it makes it stable; one already in the
list moves to the end (its identity is image, version and image ID), so "previous" is always the
release that was stable before the current one. The list is trimmed to the N most recent.
"""

from __future__ import annotations

import json
import re

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import _IMAGE_RE, _VERSION_RE

RELEASE_KEYS = ("image", "version", "stable_at", "by")
RELEASE_OPTIONAL_KEYS = ("image_id", "config_hash")
# The identity of a release: the same image (by ID when known) and version.
IDENTITY_KEYS = ("image", "version", "image_id")
IMAGE_ID_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
CONFIG_HASH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,99}", re.ASCII)
STABLE_AT_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)
# Who made it stable: the user (and AWX job) as the role words it; printable, no line breaks.
BY_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
DEFAULT_KEEP = 5
MAX_KEEP = 50
TARGETS = ("previous",)


class ReleaseError(ValueError):
    """A release record, a choice or a keep count that cannot be used; the message says the fix."""


def _show(value):
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where, field, value, fix):
    raise ReleaseError("%s: field '%s' is %s; %s" % (where, field, _show(value), fix))


def validate_releases(releases, where="state.json", path="releases"):
    """The releases list, checked: at most MAX_KEEP records, each with a valid image, version,
    stable_at and by, and optionally image_id and config_hash. ReleaseError names the field."""
    if not isinstance(releases, list):
        _fail(where, path, releases, "it must be a list of releases (image, version, stable_at, by)")
    if len(releases) > MAX_KEEP:
        _fail(where, path, "%d releases" % len(releases), "at most %d are kept; remove the oldest" % MAX_KEEP)
    for index, record in enumerate(releases):
        validate_release(record, where, "%s[%d]" % (path, index))
    return releases


def validate_release(record, where, path):
    if not isinstance(record, dict):
        _fail(where, path, record, "a release holds image, version, stable_at and by")
    allowed = RELEASE_KEYS + RELEASE_OPTIONAL_KEYS
    for key in record:
        if key not in allowed:
            _fail(where, "%s.%s" % (path, key), record[key], "it is not a field of a release (%s); remove it"
                  % ", ".join(allowed))
    for key in RELEASE_KEYS:
        if key not in record:
            raise ReleaseError("%s: field '%s.%s' is missing; restore the file or remove the release" % (where, path, key))
    checks = (
        ("image", _IMAGE_RE, "it must be a Docker image reference such as 'app:1.2.0'"),
        ("version", _VERSION_RE, "it must be a version of letters, digits, '.', '_', '+' and '-' such as '1.2.0'"),
        ("stable_at", STABLE_AT_RE, "it must be a UTC time such as '2026-12-07T11:34:56Z'"),
        ("by", BY_RE, "it must name who made the release stable, in at most 128 printable characters"),
        ("image_id", IMAGE_ID_RE, "it must be an image ID such as 'sha256:' and 64 lower-case hex digits, or absent"),
        ("config_hash", CONFIG_HASH_RE, "it must be a hash of letters, digits, ':', '.', '_' and '-' "
                                        "(at most 100), or absent"),
    )
    for key, pattern, fix in checks:
        if key in record and (not isinstance(record[key], str) or not pattern.fullmatch(record[key])):
            _fail(where, "%s.%s" % (path, key), record[key], fix)
    return record


def check_keep(keep):
    """The number of releases to keep, or ReleaseError naming the variable."""
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
        raise ReleaseError("swiftdeploy_releases_kept: %s is not a number of releases; use a whole number from 1 to %d"
                           % (_show(keep), MAX_KEEP))
    return keep


def identity(spec):
    """What makes two releases the same one: image, version and image ID (None when unknown)."""
    return tuple(spec.get(key) for key in IDENTITY_KEYS)


def release_of(spec, stamp):
    """The release record of a slot's spec, made stable at stamp {at, by}."""
    record = {"image": spec["image"], "version": spec["version"], "stable_at": stamp["at"], "by": stamp["by"]}
    for key in RELEASE_OPTIONAL_KEYS:
        if spec.get(key) is not None:
            record[key] = spec[key]
    if spec.get("secrets") and "config_hash" not in record:
        # The keyed hash of the slot's secrets (stack_secrets), never a value.
        record["config_hash"] = spec["secrets"]
    return record


def remember(releases, spec, stamp, keep=DEFAULT_KEEP):
    """releases with the release of spec last (moved there when it is already kept), trimmed to
    the `keep` most recent. A stamp of None records nothing (a caller that keeps no releases)."""
    if stamp is None:
        return releases
    check_keep(keep)
    record = release_of(spec, stamp)
    kept = [entry for entry in (releases or []) if identity(entry) != identity(record)]
    return (kept + [record])[-keep:]


def describe(record):
    """A release in a sentence's words: version, image (and ID), since when stable."""
    text = "%s (%s" % (record["version"], record["image"])
    if record.get("image_id"):
        text += ", %s" % record["image_id"][:19]
    if record.get("stable_at"):
        text += ", stable since %s" % record["stable_at"]
    return text + ")"


def pick(releases, current, to=None, version=None):
    """The kept release to go back to, or None when it is the current stable release.

    current: the stable slot's spec. to: "previous" (the release stable before the current one);
    version: the most recent kept release of that version. ReleaseError says what is kept."""
    releases = releases or []
    to = to or None
    version = version or None
    if to is not None and version is not None:
        raise ReleaseError("rollback: give either -e to=previous or -e version=X, not both (to=%s, version=%s)"
                           % (_show(to), _show(version)))
    if to is None and version is None:
        raise ReleaseError("rollback: no release named; use -e to=previous or -e version=X")
    kept = "; kept: " + ", ".join(describe(record) for record in reversed(releases)) if releases else ""
    others = [record for record in releases if identity(record) != identity(current)]
    if to is not None:
        if to not in TARGETS:
            raise ReleaseError("rollback: to=%s is not a target; use -e to=previous, or -e version=X for a kept "
                               "release%s" % (_show(to), kept))
        if not others:
            raise ReleaseError(
                "rollback: nothing to go back to: the state keeps no release other than the current one (%s)%s. "
                "Releases are kept from the first deploy or roll forward that makes each one stable; deploy an "
                "earlier version with deploy.yml instead." % (current["version"], kept))
        return others[-1]
    matches = [record for record in releases if record["version"] == version]
    if not matches:
        raise ReleaseError("rollback: version %s is not among the kept releases%s; use -e version= with one of them"
                           % (_show(version), kept or " (none is kept yet)"))
    chosen = matches[-1]
    return None if identity(chosen) == identity(current) else chosen


def slot_spec(record, mode):
    """The slot spec that runs a kept release again."""
    spec = {"image": record["image"], "version": record["version"], "mode": mode}
    if record.get("image_id"):
        spec["image_id"] = record["image_id"]
    return spec
