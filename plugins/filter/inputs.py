# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A filter that names the role's internal variables a launcher supplied as extra variables."""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._inputs import internal_extra_vars


class FilterModule(object):
    def filters(self):
        return {"internal_extra_vars": internal_extra_vars}
