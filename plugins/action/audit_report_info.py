# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.audit_report_info: check the history on the host against the
anchor the controller kept (module_utils/_anchors.py), which the host cannot rewrite.

Without an explicit `anchor`, the anchor of this stack and inventory host is read from
`swiftdeploy_anchor_dir` on the controller, or from the `swiftdeploy_history_anchors` variable
(an earlier AWX job's stats). A history that ends before it was cut, one whose record at its
seq differs was rewritten, and a missing history that the anchor says existed was deleted: each
is reported with what was expected.
"""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.module_utils._anchors import AnchorError, anchor_path, read_anchor
from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._recording_action import DEFAULT_ANCHOR_DIR


class ActionModule(ActionBase):

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        kept = None
        if not args.get("anchor"):
            try:
                kept = self.kept_anchor(args, task_vars)
            except AnchorError as exc:
                result.update(failed=True, msg=str(exc))
                return result
            if kept is not None:
                args["anchor"] = {"seq": kept["seq"], "hash": kept["hash"]}
        result.update(self._execute_module(module_name="swiftdeploy.stack.audit_report_info", module_args=args,
                                           task_vars=task_vars))
        if kept is None:
            return result
        result["controller_anchor"] = kept
        if result.get("failed") and "no history" in str(result.get("msg", "")).lower():
            result["msg"] = ("the history %s on %s was deleted: the controller's anchor says it held seq %d "
                             "(hash %s); %s" % (args.get("path"), task_vars.get("inventory_hostname"), kept["seq"],
                                                kept["hash"], result["msg"]))
        elif kept.get("regressed") and result.get("verified"):
            gone = kept["regressed"]
            result["verified"] = False
            result["problem"] = {"line": None, "seq": gone["seq"], "event": None, "kind": "truncated",
                                 "reason": "the history went backwards: a run appended seq %d (hash %s) at %s, "
                                           "after the controller's anchor at seq %d (hash %s); it was deleted, cut "
                                           "or rewritten in between"
                                           % (gone["seq"], gone["hash"], gone["seen"], kept["seq"], kept["hash"])}
        return result

    def kept_anchor(self, args, task_vars):
        host = task_vars.get("inventory_hostname", "localhost")
        stack = args.get("stack") or (task_vars.get("swiftdeploy_stack") or {}).get("stack")
        anchor_dir = task_vars.get("swiftdeploy_anchor_dir") or DEFAULT_ANCHOR_DIR
        history = str(args.get("path") or "")
        if history.startswith("~"):  # as the module will read it: expanded on the host
            history = self._remote_expand_user(history)
        kept = read_anchor(anchor_path(os.path.abspath(os.path.expanduser(str(anchor_dir))), stack, host, history))
        if kept is None:
            published = (task_vars.get("swiftdeploy_history_anchors") or {}).get(host)
            if isinstance(published, dict) and published.get("stack") in (None, stack) \
                    and isinstance(published.get("seq"), int) and isinstance(published.get("hash"), str):
                kept = {"seq": published["seq"], "hash": published["hash"]}
        return kept
