# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""History anchors kept on the controller, where the Docker host cannot rewrite them.

This is a private module_utils file: its API may change without notice. No Ansible imports. It
runs on the controller only (the action plugins of the modules that record events, and the
audit), never on a managed host.

A history whose lines were all rewritten and re-hashed, or cut at the end, still verifies on its
own. Every run that appends to a stack's history therefore keeps the last record it appended,
its seq and hash, in `<anchor_dir>/<stack>/<inventory_hostname>.<digest of the history's path>.json`
on the controller (and in
the job's `swiftdeploy_history_anchors` stats for AWX). The audit checks the history against
it: a history that ends before the anchor was truncated or deleted, one whose record at the
anchor's seq has another hash was rewritten.

An anchor only moves forward. A record with a seq at or below the anchor's means the history
went backwards since (deleted, truncated or rewritten on the host): the anchor is kept and the
record is noted under `regressed`, for the audit to report.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re

from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import fsync_directory, write_atomic

FORMAT = 1
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class AnchorError(ValueError):
    """An anchor file that cannot be used; the message names it and the fix."""


def anchor_path(anchor_dir, stack, host, history):
    """The anchor file of one history: a stack on an inventory host, told apart by the history's
    absolute path on the host (two project directories of one stack are two histories)."""
    digest = hashlib.sha256(os.path.normpath(history or "").encode("utf-8")).hexdigest()[:16]
    return os.path.join(anchor_dir, _SAFE.sub("_", stack or "unnamed"), "%s.%s.json" % (_SAFE.sub("_", host), digest))


def read_anchor(path):
    """The anchor kept in path, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            anchor = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AnchorError("the history anchor %s cannot be read (%s); restore it from a backup or the AWX job's "
                          "swiftdeploy_history_anchors artifact" % (path, exc))
    if not isinstance(anchor, dict) or anchor.get("format") != FORMAT or not isinstance(anchor.get("seq"), int) \
            or not isinstance(anchor.get("hash"), str):
        raise AnchorError("%s is not a SwiftDeploy history anchor; restore it from a backup or the AWX job's "
                          "swiftdeploy_history_anchors artifact" % path)
    return anchor


def advance(anchor, stack, host, history, record, now=None):
    """The anchor after `record` ({seq, hash}) was appended to the history: moved forward, or
    kept with the record noted under `regressed` when the history went backwards."""
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if anchor is None or record["seq"] > anchor["seq"]:
        return {"format": FORMAT, "stack": stack, "host": host, "history": history, "seq": record["seq"],
                "hash": record["hash"], "updated": stamp}
    kept = dict(anchor)
    kept["regressed"] = {"seq": record["seq"], "hash": record["hash"], "seen": stamp}
    return kept


def write_anchor(path, anchor):
    """Replace the anchor file atomically (mode 0600: it tells where the history must end)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    write_atomic(path, (json.dumps(anchor, sort_keys=True, indent=2) + "\n").encode("utf-8"), 0o600)
    fsync_directory(directory)


def remove_anchor(path):
    """Forget the anchor of a history that was purged on purpose."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def stats(anchor, host):
    """The anchor as the job's custom stats, {swiftdeploy_history_anchors: {host: ...}}."""
    return {"swiftdeploy_history_anchors": {host: dict((key, anchor[key]) for key in ("stack", "seq", "hash")
                                                       if key in anchor)}}
