# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The attributes every SwiftDeploy module declares, described once.

A module extends DOCUMENTATION and sets only `support` (and `details` where support is
partial) for each attribute; the fragments below describe what the attribute means.
"""

from __future__ import annotations


class ModuleDocFragment(object):

    # Standard fragment: every module uses it.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return a changed status prediction without modifying the target.
  diff_mode:
    description: Returns details on what has changed (or would change in check mode) when run in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode with the same arguments, the second run reports no change.
      - This assumes that the system it looks at has not changed in a relevant way in between.
  platform:
    description: Target operating systems or families it can act on.
"""

    # Use together with the standard fragment, for modules that only look and never change anything.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state, so it runs the same in check mode.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
    details:
      - This action does not modify state.
"""

    # Use together with the standard fragment, for modules that run on the controller only.
    CONTROLLER_ACTION = r"""
options: {}
attributes:
  action:
    description: Has a corresponding action plugin, so some or all of its work runs on the controller.
    support: full
    details:
      - The whole action runs on the controller; nothing is sent to the managed host.
  platform:
    support: N/A
    platforms: all
    details:
      - The managed host is not contacted, so its platform does not matter.
"""

    # Use together with the standard fragment, for the modules that append to a stack's history.
    RECORDING_ACTION = r"""
options: {}
attributes:
  action:
    description: Has a corresponding action plugin, so some or all of its work runs on the controller.
    support: full
    details:
      - The module runs on the managed host; the action then keeps the last event it recorded
        (C(seq) and C(hash)) as the history's anchor on the controller, in
        C(<swiftdeploy_anchor_dir>/<stack>/<inventory_hostname>.<digest of the history path>.json)
        (default C(anchors) in the working directory), and in the job's
        C(swiftdeploy_history_anchors) stats. The audit checks the history against it, so a
        history rewritten, cut or deleted on the host is found.
"""
