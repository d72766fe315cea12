# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.tls_info: the certificate and key are checked on the controller,
where the `cryptography` library is, before anything is sent to the managed host. The key's text
is never part of the result."""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.module_utils._tls_check import (
    MAX_PEM_BYTES,
    TlsCheckError,
    check_pair,
)

ARGUMENT_SPEC = {
    "cert_file": {"type": "str"},
    "key_file": {"type": "str"},
    "cert": {"type": "str"},
    "key": {"type": "str", "no_log": True},
    "warn_days": {"type": "int", "default": 30},
    "hosts": {"type": "list", "elements": "str", "default": []},
}


def _read(path, field, what, errors):
    """The text of a controller file named by a manifest field, or None with the reason in errors."""
    shown = "%s '%s'" % (field, path)
    try:
        with open(os.path.expanduser(path), "rb") as handle:
            raw = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        errors.append("%s cannot be read on the controller (%s); give the path of the PEM %s file there, readable "
                      "by the user running ansible-playbook" % (shown, exc.strerror or exc, what))
        return shown, None
    return shown, raw.decode("utf-8", "replace")


def source(path, value, field, variable, what, errors):
    """(where, text) of a certificate or key: from the file a manifest field names or from a play
    variable, never both."""
    if path and value:
        errors.append("%s and the variable %s are both set; give the %s one way only (remove the field, or stop "
                      "setting the variable)" % (field, variable, what))
        return field, None
    if path:
        return _read(path, field, what, errors)
    if value:
        return "the variable %s" % variable, value
    errors.append("no %s: nginx.tls.enabled is true, but neither %s nor the variable %s is set; name the PEM file in "
                  "the manifest, or set the variable (e.g. from Vault or an AWX credential)" % (what, field, variable))
    return field, None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("swiftdeploy.stack.tls_info: %s" % "; ".join(validation.error_messages))
        args = validation.validated_parameters
        errors = []
        cert_where, cert = source(args["cert_file"], args["cert"], "nginx.tls.cert_file", "swiftdeploy_tls_cert",
                                  "certificate", errors)
        key_where, key = source(args["key_file"], args["key"], "nginx.tls.key_file", "swiftdeploy_tls_key",
                                "private key", errors)
        result["changed"] = False
        if not errors:
            try:
                found = check_pair(cert, key, cert_where, key_where, warn_days=args["warn_days"],
                                   hosts=args["hosts"])
            except TlsCheckError as exc:
                errors = exc.errors
        if errors:
            result.update(failed=True, errors=errors,
                          msg="the TLS certificate and key are refused, nothing was deployed:\n- %s" % "\n- ".join(errors))
            return result
        warnings = found.pop("warnings")
        if warnings:
            result["warnings"] = warnings
        result.update(found)
        return result
