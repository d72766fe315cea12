# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.manifest: the manifest lives on the controller, so it is read,
parsed and validated here rather than on the managed host."""

from __future__ import annotations

import os

import yaml

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import (
    ManifestError,
    validate_manifest,
)

ARGUMENT_SPEC = {
    "path": {"type": "str", "required": True},
    "overrides": {"type": "dict", "default": {}},
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which plain YAML silently overwrites."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r (first at line %d); keep only one" % (key, seen[key] + 1),
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _merge(base, overrides):
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_manifest(path, overrides=None):
    """Return (manifest, None) or (None, (stage, errors)); stage is 'read', 'parse' or 'schema'."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        return None, ("read", ["manifest: cannot read %s (%s); pass the right file with -e swiftdeploy_manifest=PATH."
                               % (path, exc.strerror or exc)])
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # nosec B506 - SafeLoader subclass
    except UnicodeDecodeError as exc:
        return None, ("parse", ["manifest: %s is not UTF-8 text (%s); save it as UTF-8." % (path, exc.reason)])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return None, ("parse", ["manifest: %s is not valid YAML%s: %s; fix the syntax there." % (path, where, problem)])
    if overrides and isinstance(data, dict):
        data = _merge(data, overrides)
    try:
        return validate_manifest(data), None
    except ManifestError as exc:
        return None, ("schema", exc.errors)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("swiftdeploy.stack.manifest: %s" % "; ".join(validation.error_messages))
        args = validation.validated_parameters
        path = os.path.abspath(os.path.expanduser(args["path"]))
        manifest, problem = load_manifest(path, args["overrides"])
        result.update(changed=False, path=path)
        if problem is None:
            result.update(valid=True, manifest=manifest, errors=[], stage="valid")
            return result
        stage, errors = problem
        headline = "cannot read the SwiftDeploy manifest" if stage == "read" else "%s is not a valid SwiftDeploy manifest" % path
        result.update(valid=False, failed=True, errors=errors, stage=stage,
                      msg="%s:\n- %s" % (headline, "\n- ".join(errors)))
        return result
