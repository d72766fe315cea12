# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters over a fleet's hosts (module_utils/_fleet.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._fleet import FleetError, merge


def fleet_merge(per_host):
    """{fleet, hosts, outliers} for {host: window figures}."""
    if not isinstance(per_host, dict):
        raise AnsibleFilterError("fleet_merge expects a mapping of host to window figures, not %s"
                                 % type(per_host).__name__)
    try:
        return merge(per_host)
    except FleetError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {"fleet_merge": fleet_merge}
