# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The option of every module whose waits the play shows as progress lines, described once
(module_utils/_progress.py's ARGUMENT_SPEC defines it once)."""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  progress_path:
    description:
      - A file on the host where the module notes the wait it is in (what, its limit, since
        when) while it waits, removed when the module ends. The action plugin names it (a random
        name in a directory the module uses anyway) and, once the call has run for a few seconds,
        reads it to print progress lines in the play output (C(docs/progress.md) in the
        collection). Set by the action plugin; do not set it by hand.
    type: path
"""
