# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that apply a rolling deploy's rules (module_utils/_rollout.py) in the role."""

from __future__ import annotations

import jinja2
from jinja2.filters import do_truncate

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._rollout import (
    BatchError,
    batch_number,
    deployed_part,
    halt_message,
    parse_batch,
    rollout_summary,
    with_lost_hosts,
)


def rollout_batch_number(hosts, batches, host=None):
    """The 1-based batch of `host` when `hosts` are cut into `batches` as Ansible's serial does;
    without `host`, every host's as {host: number}."""
    try:
        hosts, batches = [str(name) for name in hosts], parse_batch(batches)
        if host is None:
            return dict((name, batch_number(hosts, batches, name)) for name in hosts)
        return batch_number(hosts, batches, str(host))
    except BatchError as exc:
        raise AnsibleFilterError(str(exc))


def rollout_play_hosts(pattern, batches, rolling):
    """The hosts of one of deploy.yml's plays: the direct play (rolling false) targets `pattern` when
    there are no batches, the rolling plays when there are; the other plays get none."""
    return pattern if bool(batches) == bool(rolling) else []


def _true(value):
    """A fact set from a condition: a boolean, or its text where ansible-core made one."""
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


def unreachable_part(rollout_id, batch, reach):
    """The failure of a host that did not answer when its batch started (`reach`: the result of
    rollout.yml's check), which halts the rollout."""
    message = do_truncate(jinja2.Environment(), str(dict(reach).get("msg", "no answer")), 300)
    return {"id": rollout_id, "batch": int(batch), "result": "failed",
            "failure": "unreachable when its batch started (%s); nothing was changed there: check the host and run the "
                       "rollout again" % message,
            "task": "Check that this host answers before its batch starts", "unreachable": True}


def rollout_parts(hostvars, hosts, active, rollout_id, batch_of):
    """Each host's part in the rollout, {host: part} in the order of `hosts`, worked out once for
    deploy.yml's finishing play: the part the rolling play kept (failed), `not_reached` for a host
    whose batch started after an earlier one had failed, a failure for one that did not answer when
    its batch started, else the one
    the host's finished deploy left (deployed or unchanged, from the state it read under the lock,
    the one its converge started from and the one it ended in); None for a host out of the play
    (not in `active`) or one without a finished deploy, which rollout_result counts as lost."""
    active = set(str(name) for name in active)
    parts = {}
    for name in (str(name) for name in hosts):
        found = hostvars[name] if name in active else {}
        part = found.get("_swiftdeploy_rollout")
        if part is None and name in active and _true(found.get("_swiftdeploy_rollout_halted_before")):
            # Its batch started after an earlier one had failed: the rolling play ended it untouched.
            part = {"id": rollout_id, "batch": int(batch_of[name]), "result": "not_reached"}
        elif part is None and name in active and _true((found.get("_swiftdeploy_rollout_reach") or {}).get("unreachable")):
            part = unreachable_part(rollout_id, batch_of[name], found["_swiftdeploy_rollout_reach"])
        elif part is None and name in active:
            try:
                files = (found.get("swiftdeploy_lock") or {}).get("files") or [{}]
                had_release = (files[0] or {}).get("content") is not None
                before = found["_swiftdeploy_previous_live"] if had_release else None
                after = found["swiftdeploy_live"]
                part = deployed_part(rollout_id, batch_of[name], had_release,
                                     before["slots"][before["stable"]] if had_release else None,
                                     after["slots"][after["stable"]])
            except (KeyError, TypeError, IndexError):
                part = None
        parts[name] = None if part is None else dict(part)
    return parts


def rollout_result(hosts, rollout_id, batches):
    """The rollout's summary from each host's part ({host: {...}}), with the halt message."""
    try:
        hosts = with_lost_hosts(dict((str(name), part) for name, part in dict(hosts).items()), list(batches))
    except BatchError as exc:
        raise AnsibleFilterError(str(exc))
    summary = rollout_summary(hosts, str(rollout_id), list(batches))
    summary["message"] = halt_message(summary, hosts) if summary["result"] == "halted" else (
        "Rollout %s completed: %d hosts in %s; hosts by release: %s." % (
            summary["id"], len(hosts), summary["batches"],
            "; ".join("%s: %s" % (version, ", ".join(names)) for version, names in sorted(summary["releases"].items()))))
    return summary


class FilterModule(object):
    def filters(self):
        return {"rollout_batch_number": rollout_batch_number, "rollout_play_hosts": rollout_play_hosts,
                "rollout_parts": rollout_parts, "rollout_result": rollout_result}
