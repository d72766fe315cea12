# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A filter that names the role's internal variables a launcher supplied as extra variables."""

from __future__ import annotations

import re

from ansible import context
from ansible.parsing.dataloader import DataLoader
from ansible.utils.vars import load_extra_vars

ROLE_NAMES = re.compile(r"_?swiftdeploy_[A-Za-z0-9_]+")


def internal_extra_vars(public_names):
    """The names given with -e (or AWX's extra variables) that belong to the role but are not one
    of its inputs (public_names), sorted. Extra variables outrank everything the role registers
    or sets, so such a name could forge a decision, a manifest or a live state."""
    if not context.CLIARGS:
        return []
    extra = load_extra_vars(DataLoader())  # parsed once by ansible-playbook; cached since
    allowed = set(public_names or [])
    return sorted(name for name in extra if ROLE_NAMES.fullmatch(str(name)) and name not in allowed)


class FilterModule(object):
    def filters(self):
        return {"internal_extra_vars": internal_extra_vars}
