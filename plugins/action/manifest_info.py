# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action for swiftdeploy.stack.manifest_info: the manifest lives on the controller, so it is read,
parsed and validated here rather than on the managed host."""

from __future__ import annotations

import os
import pwd

import yaml

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import (
    ManifestError,
    validate_manifest,
)
from ansible_collections.swiftdeploy.stack.plugins.plugin_utils._inputs import (
    inputs_from_file,
    internal_extra_vars,
)

ARGUMENT_SPEC = {
    "path": {"type": "str", "required": True},
    "overrides": {"type": "dict", "default": {}},
    "inputs_file": {"type": "path"},
    "inputs": {"type": "list", "elements": "str", "default": []},
}


# A manifest is a few hundred bytes, about a hundred values, four levels deep. The limits are
# far above that and far below what it takes to exhaust the controller.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 10000
# Longer integers are refused as written: Python will not read more than 4300 digits, and a
# YAML 1.1 base-60 integer ('1:2:3:...') costs time quadratic in its length.
MAX_INT_TEXT = 64


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but that a manifest may not use; the problem carries its own fix."""


class _ManifestLoader(yaml.SafeLoader):
    """A safe loader that refuses what a manifest never needs and an attacker would: aliases (a
    few hundred bytes of them expand to gigabytes), deep nesting, too many values, complex keys,
    integers too long to read, and duplicate keys, which plain YAML silently overwrites."""

    def __init__(self, stream):
        super(_ManifestLoader, self).__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(None, None, "the alias *%s is not allowed, as aliases let a few hundred bytes expand to "
                                       "gigabytes; write the value out in full" % _brief_text(event.anchor),
                           event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(None, None, "it holds more than %d values, where a manifest needs about 100; remove the "
                                       "extra ones" % MAX_NODES, event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, "values are nested more than %d levels deep, where a manifest needs 4; "
                                           "flatten them" % MAX_DEPTH, event.start_mark)
            return super(_ManifestLoader, self).compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super(_ManifestLoader, self).construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError, AttributeError) as exc:
            # e.g. 'version: 2024-13-01', which YAML 1.1 reads as a date that does not exist, or
            # '!!timestamp x', on which PyYAML itself fails
            reason = " (%s)" % _brief_text(exc, 60) if isinstance(exc, ValueError) else ""
            shown = _brief_text(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
            raise _Refused(None, None, "%s cannot be read as %s%s; quote it to make it a string"
                                       % (shown, _brief_text(node.tag.rsplit(":", 1)[-1]), reason), node.start_mark)


def _brief_text(value, width=40):
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise _Refused(None, None, "a %s is used as a key; use a plain name such as 'services'"
                                       % ("list" if isinstance(key_node, yaml.SequenceNode) else "mapping"),
                           key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %s (first at line %d); keep only one" % (_brief_repr(key), seen[key] + 1),
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


def _brief_repr(value):
    text = repr(value) if not isinstance(value, int) else repr(int(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _construct_int(loader, node):
    if len(node.value) > MAX_INT_TEXT:
        raise _Refused(None, None, "the integer %s has %d characters, more than any field takes; use a number in "
                                   "the field's range" % (_brief_text(node.value), len(node.value)), node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_ManifestLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_ManifestLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _merge(base, overrides):
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def controller_user():
    """The name of the user running the controller (its uid when it has no name)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def forged_extra_vars(inputs_file, inputs):
    """The role's internal names supplied as extra variables, or None when no inputs are given."""
    if not inputs_file and not inputs:
        return None
    names = list(inputs)
    if inputs_file:
        try:
            names += inputs_from_file(inputs_file)
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleActionFail("swiftdeploy.stack.manifest_info: inputs_file %s cannot be read (%s); pass the "
                                    "role's defaults/main.yml." % (inputs_file, _brief_text(exc, 200)))
    return internal_extra_vars(names)


def load_manifest(path, overrides=None):
    """Return (manifest, None) or (None, (stage, errors)); stage is 'read', 'parse' or 'schema'."""
    if overrides is not None and not isinstance(overrides, dict):
        return None, ("schema", ["manifest: the overrides are %s, expected a mapping of manifest keys such as "
                                 "{'opa': {'mode': 'embedded'}}; pass a mapping." % type(overrides).__name__])
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        return None, ("read", ["manifest: cannot read %s (%s); pass the right file with -e swiftdeploy_manifest=PATH."
                               % (path, exc.strerror or exc)])
    if len(raw) > MAX_MANIFEST_BYTES:
        return None, ("read", ["manifest: %s is larger than %d bytes (1 MiB), where a manifest needs a few hundred; "
                               "pass the right file with -e swiftdeploy_manifest=PATH." % (path, MAX_MANIFEST_BYTES)])
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_ManifestLoader)  # nosec B506 - SafeLoader subclass
    except UnicodeDecodeError as exc:
        return None, ("parse", ["manifest: %s is not UTF-8 text (%s); save it as UTF-8." % (path, exc.reason)])
    except _Refused as exc:
        mark = exc.problem_mark
        return None, ("parse", ["manifest: %s is refused at line %d, column %d: %s." % (
            path, mark.line + 1, mark.column + 1, exc.problem)])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        problem = _brief_text(getattr(exc, "problem", None) or str(exc), 200)
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
            raise AnsibleActionFail("swiftdeploy.stack.manifest_info: %s" % "; ".join(validation.error_messages))
        args = validation.validated_parameters
        path = os.path.abspath(os.path.expanduser(args["path"]))
        result.update(changed=False, path=path, controller_user=controller_user())
        forged = forged_extra_vars(args["inputs_file"], args["inputs"])
        if forged:
            # Before the manifest is read: nothing this run would work out can be trusted.
            result.update(valid=False, failed=True, stage="inputs", errors=[], forged=forged,
                          msg="%s: set by the role itself, not an input; supplied as an extra variable it would "
                              "override what the role works out (a policy decision, the manifest, the live state), "
                              "so nothing was done. Remove it from -e (or the AWX job's extra variables); the "
                              "inputs are in roles/swiftdeploy/meta/argument_specs.yml." % ", ".join(forged))
            return result
        manifest, problem = load_manifest(path, args["overrides"])
        if problem is None:
            result.update(valid=True, manifest=manifest, errors=[], stage="valid")
            return result
        stage, errors = problem
        headline = "cannot read the SwiftDeploy manifest" if stage == "read" else "%s is not a valid SwiftDeploy manifest" % path
        result.update(valid=False, failed=True, errors=errors, stage=stage,
                      msg="%s:\n- %s" % (headline, "\n- ".join(errors)))
        return result
