# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which of the role's internal variables a launcher supplied as extra variables.

Extra variables (-e, an AWX job's extra variables) outrank everything the role registers or
sets, so one named like an internal variable could forge a policy decision, a manifest or a live
state. Used by the internal_extra_vars filter and by manifest_info's guard (the role's first
task), which reads the role's inputs from its defaults file.

This is a private plugin_utils file: its API may change without notice.
"""

from __future__ import annotations

import re

import yaml

from ansible import context
from ansible.parsing.dataloader import DataLoader
from ansible.utils.vars import load_extra_vars

ROLE_NAMES = re.compile(r"_?swiftdeploy_[A-Za-z0-9_]+")


def internal_extra_vars(public_names):
    """The names given with -e (or AWX's extra variables) that belong to the role but are not one
    of its inputs (public_names), sorted."""
    if not context.CLIARGS:
        return []
    extra = load_extra_vars(DataLoader())  # parsed once by ansible-playbook; cached since
    allowed = set(public_names or [])
    return sorted(name for name in extra if ROLE_NAMES.fullmatch(str(name)) and name not in allowed)


def inputs_from_file(path):
    """The top-level names of a YAML mapping (a role's defaults/main.yml): the role's inputs."""
    with open(path, "rb") as handle:
        data = yaml.safe_load(handle)
    return list(data) if isinstance(data, dict) else []
