# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Safe literals for nginx.conf.

This is a private module_utils file: its API may change without notice. No Ansible imports.

The manifest validator already refuses dangerous characters; these functions are the second
line of defence, so that a value that slips past validation still cannot change the structure
of nginx.conf.
"""

from __future__ import annotations

import json


class NginxQuoteError(ValueError):
    """A value that cannot be written into nginx.conf safely."""


def nginx_string(value):
    """Return value as a single-quoted nginx string literal.

    Inside single quotes nginx only interprets backslash escapes and `$` variables. Backslashes
    and quotes are escaped; `$` and control characters have no escape in nginx and are refused.
    """
    text = str(value)
    for char in text:
        if char == "$" or ord(char) < 0x20 or ord(char) == 0x7F:
            raise NginxQuoteError("%r cannot be written into nginx.conf: it contains %r, which nginx would "
                                  "interpret; remove it" % (text, char))
    return "'%s'" % text.replace("\\", "\\\\").replace("'", "\\'")


def nginx_json(value):
    """Return value encoded as JSON, as a single-quoted nginx string literal.

    JSON escapes control characters itself and `$` is written as its JSON escape, so any
    string survives: the body nginx sends decodes to exactly the original value.
    """
    encoded = json.dumps(value, ensure_ascii=True, sort_keys=False).replace("$", "\\u0024")
    return nginx_string(encoded)
