# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that write values into nginx.conf without letting them change its structure."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.swiftdeploy.stack.plugins.module_utils._nginx import (
    NginxQuoteError,
    nginx_json,
    nginx_string,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._sticky import StickyError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._sticky import sticky_routing as _sticky_routing


def _wrap(func):
    def filter_function(value):
        try:
            return func(value)
        except NginxQuoteError as exc:
            raise AnsibleFilterError(str(exc))
    filter_function.__name__ = func.__name__
    return filter_function


def sticky_routing(stack, live):
    """{cookie, slots: [{slot, value, set_cookie}]}: what nginx.conf's sticky routing is rendered
    from (module_utils/_sticky.py)."""
    try:
        return _sticky_routing(stack, live)
    except (StickyError, KeyError, TypeError) as exc:
        raise AnsibleFilterError("sticky_routing: %s. Nothing was rendered." % exc)


class FilterModule(object):
    def filters(self):
        return {
            "nginx_string": _wrap(nginx_string),
            "nginx_json": _wrap(nginx_json),
            "sticky_routing": sticky_routing,
        }
