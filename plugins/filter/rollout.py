# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that apply a rolling deploy's rules (module_utils/_rollout.py) in the role."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._rollout import (
    BatchError,
    batch_number,
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
                "rollout_result": rollout_result}
