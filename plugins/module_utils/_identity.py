# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Who a module runs as on the managed host.

This is a private module_utils file: its API may change without notice.
"""

from __future__ import annotations

import getpass
import os


def current_user():
    """The login name of the process, or its uid when the uid has no passwd entry (as in some
    containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
