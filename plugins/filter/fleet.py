# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters over a fleet's hosts (module_utils/_fleet.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._fleet import FleetError, canary_hosts, judgement, merge


def fleet_merge(per_host):
    """{fleet, hosts, outliers} for {host: window figures}."""
    if not isinstance(per_host, dict):
        raise AnsibleFilterError("fleet_merge expects a mapping of host to window figures, not %s"
                                 % type(per_host).__name__)
    try:
        return merge(per_host)
    except FleetError as exc:
        raise AnsibleFilterError(str(exc))


def fleet_canary_hosts(hosts, setting=None):
    """The first hosts of `hosts` that a new canary starts on, for the manifest's canary.hosts."""
    return canary_hosts(hosts, setting)


def fleet_canary_judgement(windows, play_hosts, active_hosts):
    """What one decision for a fleet canary rests on, or why there can be none."""
    if not isinstance(windows, dict):
        raise AnsibleFilterError("fleet_canary_judgement expects a mapping of host to window figures, not %s"
                                 % type(windows).__name__)
    return judgement(windows, play_hosts, active_hosts)


class FilterModule(object):
    def filters(self):
        return {"fleet_merge": fleet_merge, "fleet_canary_hosts": fleet_canary_hosts,
                "fleet_canary_judgement": fleet_canary_judgement}
