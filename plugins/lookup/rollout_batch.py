# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_batch
author: SwiftDeploy contributors (!UNKNOWN)
version_added: 0.1.0
short_description: The batch sizes of a rolling deploy, for a play's serial keyword
description:
  - Reads the batch setting of a rolling deploy (docs/fleet-rollout.md) on the controller, before
    any host is contacted, so that C(deploy.yml) can give it to the play's C(serial) keyword.
  - O(batch) (C(-e swiftdeploy_batch)) wins; when it is empty, the manifest's C(fleet.batch) is
    used; when both are empty the result is an empty list (no batches, every host at once, a deploy
    as without this setting).
  - A value that is not valid fails, naming the setting, the value and the fix. A manifest that
    cannot be read or is not valid is left to the deploy's own manifest check, which reports every
    problem.
options:
  batch:
    description:
      - What Ansible's serial takes - a number of hosts, a percentage of the play's hosts (V(25%)),
        or a list of them (V([1, "50%", "100%"])), also written as text (V(1,50%,100%)).
    type: raw
    default: ""
  manifest:
    description: Path of the manifest on the controller, relative to the working directory.
    type: path
    default: manifest.yml
"""

EXAMPLES = r"""
- name: A rolling deploy
  hosts: swiftdeploy
  serial: "{{ query('swiftdeploy.stack.rollout_batch', batch=swiftdeploy_batch | default(''),
                    manifest=swiftdeploy_manifest | default('manifest.yml')) }}"
  tasks: []
"""

RETURN = r"""
_list:
  description: The batch sizes, each a whole number of hosts or a percentage text such as V(50%); empty for none.
  type: list
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.swiftdeploy.stack.plugins.action.manifest_info import load_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._rollout import BatchError, parse_batch

OPTIONS = {"batch": "", "manifest": "manifest.yml"}


class LookupModule(LookupBase):

    # The two options are read as given (documented above), without the configuration
    # system: the lookup runs while a play's keywords are templated, before any host.
    def run(self, terms, variables=None, **kwargs):
        unknown = sorted(set(kwargs) - set(OPTIONS))
        if terms or unknown:
            raise AnsibleLookupError("swiftdeploy.stack.rollout_batch takes only the options %s, not %s."
                                     % (" and ".join(OPTIONS), ", ".join(unknown) or "terms"))
        options = dict(OPTIONS, **kwargs)
        try:
            batches = parse_batch(options["batch"])
        except BatchError as exc:
            raise AnsibleLookupError("%s Nothing was deployed." % exc)
        if batches:
            return batches
        path = os.path.abspath(os.path.expanduser(str(options["manifest"] or "manifest.yml")))
        manifest, problem = load_manifest(path)
        if problem is not None:
            return []
        return list(manifest.get("fleet", {}).get("batch") or [])
