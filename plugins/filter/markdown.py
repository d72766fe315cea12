# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that write values into Markdown without letting them change its structure: table
cells, paragraph text and Mermaid labels (the audit report's template uses all three)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._markdown import (
    CELL_LIMIT,
    MERMAID_LIMIT,
    inline_text,
    mermaid_text,
    table_cell,
)


def _limit(limit):
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise AnsibleFilterError("limit must be a whole number of characters, 1 or more, not %r"
                                 % (limit,))
    return limit


def md_cell(value, limit=CELL_LIMIT):
    return table_cell(value, _limit(limit))


def md_text(value):
    return inline_text(value)


def md_mermaid(value, limit=MERMAID_LIMIT):
    return mermaid_text(value, _limit(limit))


class FilterModule(object):
    def filters(self):
        return {
            "md_cell": md_cell,
            "md_text": md_text,
            "md_mermaid": md_mermaid,
        }
