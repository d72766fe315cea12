# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Manifest schema, validation and defaults for SwiftDeploy.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports so that the unit tests can exercise every rule directly.

Every error is one sentence that names the field path, the bad value and the fix, so a user
never has to read code or a traceback to correct a manifest.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import math
import re

# Docker's reference grammar (distribution/reference), written out so that a bad image name is
# caught before Docker answers with a less helpful message.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = r"(?:%s(?:\.%s)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?" % (_DOMAIN_PART, _DOMAIN_PART)
_IMAGE_RE = re.compile(
    r"^(?:%s/)?%s(?:/%s)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$" % (_DOMAIN, _COMPONENT, _COMPONENT)
)
# Network and volume names as the Docker engine accepts them.
_DOCKER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# A compose project name: lower case, as `docker compose` requires.
_STACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# The contact is shown in nginx's JSON error bodies, so it is held to the characters an e-mail
# address or URL needs: no quote, brace, semicolon, `$`, backslash or control character can
# reach nginx.conf through it.
_CONTACT_RE = re.compile(r"^[A-Za-z0-9@._+:/ -]{1,128}$")
_CA_PATH_RE = re.compile(r"^/[^\x00-\x1f]{1,4095}$")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?$")

MODES = ("stable", "canary")
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
NETWORK_DRIVERS = ("bridge",)
OPA_MODES = ("embedded", "sidecar", "external")
DEFAULT_OPA_IMAGE = "openpolicyagent/opa:1.10.1-static"


class Field(object):
    """One manifest key: its type rule, default, and help for the fix."""

    def __init__(self, kind, required=False, default=None, check=None, fix=None, choices=None, minimum=None,
                 maximum=None, children=None, item=None):
        self.kind = kind
        self.required = required
        self.default = default
        self.check = check
        self.fix = fix
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.children = children
        self.item = item


def _port(required=False, default=None):
    return Field("int", required=required, default=default, minimum=1, maximum=65535,
                 fix="use a TCP port number from 1 to 65535")


def _image(required=False, default=None):
    return Field("str", required=required, default=default, check=_IMAGE_RE,
                 fix="use a Docker image reference such as 'nginx:1.27' or 'registry.example.com:5000/team/app:1.2.0' "
                     "(lower-case repository, optional tag)")


def _docker_name(what):
    return Field("str", required=False, check=_DOCKER_NAME_RE,
                 fix="use a %s name of letters, digits, '_', '.' and '-', starting with a letter or digit" % what)


SCHEMA = {
    "stack": Field("str", default="swiftdeploy", check=_STACK_NAME_RE,
                   fix="use a lower-case name of letters, digits, '_' and '-' (at most 63 characters); "
                       "it names the compose project"),
    "services": Field("dict", required=True, children={
        "image": _image(required=True),
        "port": _port(required=True),
        "mode": Field("str", default="stable", choices=MODES),
        "version": Field("str", default="1.0.0", check=_VERSION_RE,
                         fix="use a version of letters, digits, '.', '_', '+' and '-', quoted in YAML, e.g. \"1.0.0\""),
        "restart_policy": Field("str", default="unless-stopped", choices=RESTART_POLICIES),
        "log_volume": Field("str", default="swiftdeploy-logs", check=_DOCKER_NAME_RE,
                            fix="use a Docker volume name of letters, digits, '_', '.' and '-', "
                                "starting with a letter or digit"),
    }),
    "nginx": Field("dict", required=True, children={
        "image": _image(required=True),
        "port": _port(required=True),
        "proxy_timeout": Field("int", default=30, minimum=1, maximum=3600,
                               fix="use a whole number of seconds from 1 to 3600"),
        "admin_port": _port(default=8082),
        "keepalive_timeout": Field("int", default=0, minimum=0, maximum=300,
                                   fix="use a whole number of seconds from 0 (no client keep-alive) to 300"),
    }),
    "opa": Field("dict", default={}, children={
        "image": _image(default=DEFAULT_OPA_IMAGE),
        "port": _port(default=8181),
        "mode": Field("str", default="embedded", choices=OPA_MODES),
        "url": Field("str", check=_URL_RE,
                     fix="use an http(s) URL of the OPA server such as 'https://opa.example.com:8181'"),
        "timeout": Field("number", default=5, minimum=0.1, maximum=60,
                         fix="use a number of seconds from 0.1 to 60"),
        "allow_http": Field("bool", default=False),
        "ca_path": Field("str", check=_CA_PATH_RE,
                         fix="use the absolute path on the controller of a PEM file of CA certificates, "
                             "such as '/etc/pki/opa-ca.pem'"),
    }),
    "network": Field("dict", default={}, children={
        "name": Field("str", default="swiftdeploy-net", check=_DOCKER_NAME_RE,
                      fix="use a Docker network name of letters, digits, '_', '.' and '-', "
                          "starting with a letter or digit"),
        "driver_type": Field("str", default="bridge", choices=NETWORK_DRIVERS),
    }),
    "contact": Field("str", required=True, check=_CONTACT_RE,
                     fix="use an e-mail address or URL of letters, digits and @ . _ + : / - (at most 128 characters); "
                         "quotes, braces, semicolons, '$' and line breaks are not allowed"),
    "canary": Field("dict", default={}, children={
        "weight": Field("int", default=10, minimum=1, maximum=100,
                        fix="use the percentage of traffic for the canary, a whole number from 1 to 100"),
        "image": _image(),
        "version": Field("str", check=_VERSION_RE,
                         fix="use a version of letters, digits, '.', '_', '+' and '-', quoted in YAML, e.g. \"1.1.0\""),
        "window_seconds": Field("int", default=30, minimum=5, maximum=3600,
                                fix="use a whole number of seconds from 5 to 3600"),
    }),
    "policy": Field("dict", default={}, children={
        "fail_open": Field("bool", default=False),
        "thresholds": Field("dict", default={}, children={
            "min_disk_free_gb": Field("number", default=5.0, minimum=0, maximum=1000000,
                                      fix="use a number of gigabytes, 0 or more"),
            "max_cpu_load": Field("number", default=16.0, minimum=0, maximum=100000,
                                  fix="use the highest acceptable 1-minute load average, 0 or more"),
            "min_mem_free_percent": Field("number", default=10.0, minimum=0, maximum=100,
                                          fix="use a percentage from 0 to 100"),
            "max_error_rate_percent": Field("number", default=1.0, minimum=0, maximum=100,
                                            fix="use a percentage from 0 to 100"),
            "max_p99_latency_ms": Field("number", default=500.0, minimum=0, maximum=600000,
                                        fix="use a number of milliseconds, 0 or more"),
            "min_requests": Field("int", default=20, minimum=1, maximum=10000000,
                                  fix="use the smallest number of canary requests a decision may rest on, 1 or more"),
        }),
    }),
    "chaos": Field("dict", default={}, children={
        "allow_from": Field("list", default=[], item="cidr"),
    }),
}


class ManifestError(Exception):
    """Raised with every problem found, so a user can fix them all in one pass."""

    def __init__(self, errors):
        self.errors = list(errors)
        super(ManifestError, self).__init__("\n".join(self.errors))


def _show(value):
    """Render a value the way the user wrote it, short enough for one line."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null (empty)"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


_EXPECTED = {
    "int": "a whole number",
    "number": "a number",
    "str": "a string",
    "bool": "true or false",
    "dict": "a mapping of keys",
    "list": "a list",
}


def _check_type(path, field, value, errors):
    """Return True when value has the field's type; otherwise record why not."""
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool)
        and not (isinstance(value, float) and not math.isfinite(value)),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
        "list": isinstance(value, list),
    }[field.kind]
    if ok:
        return True
    hint = field.fix or ("use one of: %s" % ", ".join(field.choices) if field.choices else "")
    if field.kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        hint = "quote it in YAML, e.g. \"%s\"" % value
    message = "manifest field '%s': %s is %s, expected %s" % (path, _show(value), _type_name(value), _EXPECTED[field.kind])
    errors.append(message + ("; %s." % hint if hint else "."))
    return False


def _check_cidr(path, value, errors):
    try:
        ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError):
        errors.append("manifest field '%s': %s is not an IP address or CIDR range; use e.g. '192.0.2.10' "
                      "or '10.0.0.0/8'." % (path, _show(value)))
        return None
    return str(ipaddress.ip_network(value, strict=False))


def _check_value(path, field, value, errors):
    if field.choices is not None and value not in field.choices:
        errors.append("manifest field '%s': %s is not allowed; use one of: %s." % (path, _show(value), ", ".join(field.choices)))
    if field.check is not None and not field.check.match(value):
        errors.append("manifest field '%s': %s is not valid; %s." % (path, _show(value), field.fix))
    if field.minimum is not None and value < field.minimum or field.maximum is not None and value > field.maximum:
        errors.append("manifest field '%s': %s is out of range; %s." % (path, _show(value), field.fix))


def _unknown_key(path, key, allowed, errors):
    where = "manifest field '%s'" % ("%s.%s" % (path, key) if path else key)
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    hint = "did you mean '%s'? " % ("%s.%s" % (path, close[0]) if path else close[0]) if close else ""
    errors.append("%s: unknown key; %sremove it or use one of: %s." % (where, hint, ", ".join(sorted(allowed))))


def _validate_dict(path, schema, data, errors):
    result = {}
    for key in data:
        if key not in schema:
            _unknown_key(path, key, schema, errors)
    for key, field in schema.items():
        sub = "%s.%s" % (path, key) if path else key
        if key not in data or (data[key] is None and not field.required and field.kind == "dict"):
            if field.required:
                fix = field.fix or ("add a '%s:' section" % key if field.kind == "dict" else "add it")
                errors.append("manifest field '%s': required but missing; add it (%s)." % (sub, fix))
                continue
            if field.kind == "dict":
                result[key] = _validate_dict(sub, field.children, {}, errors)
            elif field.default is not None:
                result[key] = copy.deepcopy(field.default)
            else:
                result[key] = None
            continue
        value = data[key]
        if not _check_type(sub, field, value, errors):
            continue
        if field.kind == "dict":
            result[key] = _validate_dict(sub, field.children, value, errors)
        elif field.kind == "list":
            items = []
            for index, item in enumerate(value):
                item_path = "%s[%d]" % (sub, index)
                if not isinstance(item, str):
                    errors.append("manifest field '%s': %s is %s, expected a string such as '10.0.0.0/8'."
                                  % (item_path, _show(item), _type_name(item)))
                    continue
                normalised = _check_cidr(item_path, item, errors)
                if normalised is not None:
                    items.append(normalised)
            result[key] = items
        else:
            _check_value(sub, field, value, errors)
            result[key] = float(value) if field.kind == "number" else value
    return result


def _cross_field_rules(manifest, errors):
    """Rules that span fields: published ports that would clash, engine-specific keys."""
    # The OPA sidecar publishes no port (the host reaches it on its own network), so opa.port
    # cannot clash.
    published = [("nginx.port", manifest["nginx"]["port"]), ("nginx.admin_port", manifest["nginx"]["admin_port"])]
    seen = {}
    for path, port in published:
        if port in seen:
            errors.append("manifest field '%s': port %d is already used by '%s'; every port published on the host "
                          "must differ, choose another one." % (path, port, seen[port]))
        else:
            seen[port] = path
    if manifest["opa"]["mode"] == "external" and not manifest["opa"]["url"]:
        errors.append("manifest field 'opa.url': required when opa.mode is 'external'; set it to the OPA server's URL, "
                      "e.g. 'https://opa.example.com:8181'.")
    if (manifest["opa"]["mode"] == "external" and (manifest["opa"]["url"] or "").lower().startswith("http://")
            and not manifest["opa"]["allow_http"]):
        errors.append("manifest field 'opa.url': %s is plain HTTP, so the decision and the token could be read or "
                      "forged on the way; use an https:// URL, or set opa.allow_http: true if OPA is reached over "
                      "a trusted network only." % _show(manifest["opa"]["url"]))
    canary = manifest["canary"]
    if canary["image"] is None:
        canary["image"] = manifest["services"]["image"]
    if canary["version"] is None:
        canary["version"] = manifest["services"]["version"]


def validate_manifest(data):
    """Validate a parsed manifest and return it with every default filled in.

    Raises ManifestError listing every problem found.
    """
    errors = []
    if data is None:
        raise ManifestError(["manifest: the file is empty; start from the example manifest.yml in the collection."])
    if not isinstance(data, dict):
        raise ManifestError(["manifest: the top level is %s, expected a mapping with the keys services, nginx and "
                             "contact; start from the example manifest.yml in the collection." % _type_name(data)])
    result = _validate_dict("", SCHEMA, data, errors)
    if not errors:
        _cross_field_rules(result, errors)
    if errors:
        raise ManifestError(errors)
    return result


def required_paths(schema=None, prefix=""):
    """Every field path the manifest must contain, for the 'required fields present' check."""
    schema = SCHEMA if schema is None else schema
    paths = []
    for key, field in schema.items():
        path = "%s.%s" % (prefix, key) if prefix else key
        if field.required:
            paths.append(path)
            if field.kind == "dict":
                paths.extend(required_paths(field.children, path))
    return paths
