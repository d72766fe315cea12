# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.opa_decision_info: chooses where the policy is evaluated.

embedded and external are evaluated here on the controller (regopy in-process, or the central
OPA over HTTP, as AWX runs it); sidecar runs the module on the managed host, because that OPA
is reachable from the host only and its token never leaves the host.

The external engine's token is a task argument: it is sent to OPA and never returned, and a
plain http:// URL is refused unless allow_http is true.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.module_utils._policy import decide
from ansible_collections.swiftdeploy.stack.plugins.modules.opa_decision_info import (
    ARGUMENT_SPEC,
    REQUIRED_IF,
    check_engine_options,
    decision_result,
)

# ansible-playbook imports this plugin in its own process (its strategy looks each task's action
# up there) before it forks the task's workers: the embedded engine's library imported here, when
# it is installed, is inherited by every host's worker instead of being loaded again in each
# (about 0.1 s of controller CPU a host and gate; docs/performance.md).
try:
    import regopy  # noqa: F401  pylint: disable=unused-import
except ImportError:
    pass

# The collection's policies/, next to plugins/.
DEFAULT_POLICY_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "policies"))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC, required_if=REQUIRED_IF).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("swiftdeploy.stack.opa_decision_info: %s" % "; ".join(validation.error_messages))
        args = validation.validated_parameters
        try:
            check_engine_options(args)
        except ValueError as exc:
            raise AnsibleActionFail("swiftdeploy.stack.opa_decision_info: %s." % exc)

        if args["engine"] == "sidecar":
            module_args = {key: value for key, value in args.items()
                           if key in ("domain", "input", "engine", "timeout", "fail_open", "project_dir", "stack",
                                      "network")}
            result.update(self._execute_module(module_name="swiftdeploy.stack.opa_decision_info", module_args=module_args,
                                               task_vars=task_vars))
            return result

        policy_dir = DEFAULT_POLICY_DIR
        if args["policy_dir"]:
            policy_dir = self._loader.path_dwim(args["policy_dir"])
        try:
            decision = decide(args["engine"], args["domain"], args["input"], policy_dir=policy_dir, url=args["url"],
                              timeout=args["timeout"], fail_open=args["fail_open"], token=args["token"],
                              ca_path=self._loader.path_dwim(args["ca_path"]) if args["ca_path"] else None,
                              validate_certs=args["validate_certs"], require_https=not args["allow_http"])
        except ValueError as exc:
            raise AnsibleActionFail("swiftdeploy.stack.opa_decision_info: %s." % exc)
        result.update(decision_result(decision))
        return result
