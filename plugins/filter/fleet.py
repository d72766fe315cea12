# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters over a fleet's hosts (module_utils/_fleet.py, _fleet_status.py, _fleet_audit.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._fleet import FleetError, canary_hosts, judgement, merge
from ansible_collections.swiftdeploy.stack.plugins.module_utils._fleet_audit import FleetAuditError, fleet_audit
from ansible_collections.swiftdeploy.stack.plugins.module_utils._fleet_status import (
    FleetStatusError,
    fleet_status,
    table_lines,
)


def fleet_merge(per_host):
    """{fleet, hosts, outliers} for {host: window figures}."""
    if not isinstance(per_host, dict):
        raise AnsibleFilterError("fleet_merge expects a mapping of host to window figures, not %s"
                                 % type(per_host).__name__)
    try:
        return merge(per_host)
    except FleetError as exc:
        raise AnsibleFilterError(str(exc))


def _hosts(hosts, name):
    if not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("%s expects the play's hosts as a list (ansible_play_hosts_all), not %s"
                                 % (name, type(hosts).__name__))
    return [str(host) for host in hosts]


def fleet_status_filter(outcomes, hosts, round_number=None):
    """The fleet's status table and figures from each host's status outcome."""
    if not isinstance(outcomes, dict):
        raise AnsibleFilterError("fleet_status expects a mapping of host to status outcome, not %s"
                                 % type(outcomes).__name__)
    try:
        return fleet_status(outcomes, _hosts(hosts, "fleet_status"),
                            None if round_number is None else int(round_number))
    except (FleetStatusError, FleetError) as exc:
        raise AnsibleFilterError(str(exc))


def fleet_table(status):
    """The text lines of fleet_status's table (with its fleet row and notes)."""
    if not isinstance(status, dict) or not {"columns", "rows", "fleet_row", "notes"} <= set(status):
        raise AnsibleFilterError("fleet_table expects what swiftdeploy.stack.fleet_status returns")
    return table_lines(status["columns"], status["rows"], status["fleet_row"]) + list(status["notes"])


def fleet_audit_filter(outcomes, hosts, stack=None, limit=500):
    """The fleet audit report's data from each host's audit outcome."""
    if not isinstance(outcomes, dict):
        raise AnsibleFilterError("fleet_audit expects a mapping of host to audit outcome, not %s"
                                 % type(outcomes).__name__)
    try:
        return fleet_audit(outcomes, _hosts(hosts, "fleet_audit"), stack, int(limit))
    except FleetAuditError as exc:
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
        return {"fleet_merge": fleet_merge, "fleet_status": fleet_status_filter, "fleet_table": fleet_table,
                "fleet_audit": fleet_audit_filter, "fleet_canary_hosts": fleet_canary_hosts,
                "fleet_canary_judgement": fleet_canary_judgement}
