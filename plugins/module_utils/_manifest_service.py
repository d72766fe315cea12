# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The manifest's rules for a team's own service: env, secrets, command, tmpfs, user.

This is a private module_utils file: its API may change without notice. No Ansible imports, so
the unit tests drive every rule directly. _manifest.py calls these for the fields whose values
are free-form (a map of variables, lists of names or paths); each rule appends one message per
problem, naming the field path, the value and the fix, and returns the normalised value.
"""

from __future__ import annotations

import re

# An environment variable's name: what a POSIX shell and Docker accept.
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
# A secret's name is a file name under /run/secrets: no '/', no leading dot.
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)
# A writable path of a read-only container: absolute, plain characters, no '..' component.
TMPFS_PATH_RE = re.compile(r"(?:/[A-Za-z0-9_.-]+)+", re.ASCII)
TMPFS_SIZE_RE = re.compile(r"[1-9][0-9]{0,11}[kmg]?", re.ASCII | re.IGNORECASE)
# A numeric uid:gid; names would need the image's /etc/passwd and could resolve to root.
USER_RE = re.compile(r"(?:0|[1-9][0-9]{0,9}):(?:0|[1-9][0-9]{0,9})", re.ASCII)
# The health path the stack requests from outside the container: a plain absolute path.
HEALTH_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]{0,254}", re.ASCII)

# The variables the stack sets in an app slot itself (docker-compose.yml.j2).
RESERVED_ENV = ("APP_PORT", "APP_VERSION", "LOG_DIR", "MODE_FILE")
# Paths the stack mounts itself: a tmpfs there would hide its files.
RESERVED_PATHS = ("/run/secrets", "/run/swiftdeploy", "/app/logs")
SECRETS_DIR = "/run/secrets"
MAX_ENV = 128
MAX_ENV_VALUE = 4096
MAX_SECRETS = 32
MAX_COMMAND = 64
MAX_ARGUMENT = 4096
MAX_TMPFS = 16
DEFAULT_TMPFS_SIZE = "16m"
SECRETS_VARIABLE = "swiftdeploy_secrets"


def _show(value):
    # Imported here: _manifest imports this module at load time.
    from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import _show as show
    return show(value)


def _error(errors, path, value, problem, fix):
    errors.append("manifest field '%s': %s %s; %s." % (path, _show(value), problem, fix))


def check_env(path, value, errors):
    """services.env: {NAME: "text"}; names ASCII, not the stack's own, values strings without NUL."""
    if len(value) > MAX_ENV:
        _error(errors, path, value, "has %d variables, more than %d" % (len(value), MAX_ENV),
               "pass fewer, or move configuration into a file the image reads")
        return {}
    result = {}
    for name, text in value.items():
        where = "%s.%s" % (path, name) if isinstance(name, str) and name.isprintable() else path
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            _error(errors, path, name, "is not an environment variable name",
                   "use ASCII letters, digits and '_', not starting with a digit (at most 128 characters)")
            continue
        if name in RESERVED_ENV:
            _error(errors, where, name, "is set by the stack itself",
                   "remove it; the stack sets %s in every app slot" % ", ".join(RESERVED_ENV))
            continue
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            _error(errors, where, text, "is not a string", "write the value as a quoted string, e.g. \"on\"")
            continue
        if not isinstance(text, str):
            _error(errors, where, text, "is a number", "quote it in YAML, e.g. \"%s\"" % text)
            continue
        if len(text) > MAX_ENV_VALUE or "\x00" in text:
            _error(errors, where, text, "is too long or holds a NUL character",
                   "use at most %d characters and no NUL" % MAX_ENV_VALUE)
            continue
        result[name] = text
    return result


def check_secrets(path, value, errors):
    """services.secrets: names, or {name, env} mappings; [{"name": str, "env": bool}]."""
    if len(value) > MAX_SECRETS:
        _error(errors, path, value, "lists %d secrets, more than %d" % (len(value), MAX_SECRETS), "list fewer")
        return []
    result, seen = [], set()
    for index, item in enumerate(value):
        where = "%s[%d]" % (path, index)
        env = False
        if isinstance(item, dict):
            unknown = sorted(str(key) for key in item if key not in ("name", "env"))
            if unknown:
                _error(errors, where, item, "has the unknown key %s" % unknown[0],
                       "a secret is a name, or a mapping with name and env (true to deliver it as a variable)")
                continue
            env = item.get("env", False)
            if not isinstance(env, bool):
                _error(errors, where + ".env", env, "is not true or false",
                       "use true to deliver the secret as an environment variable, false (the default) for a file")
                continue
            item = item.get("name")
            where += ".name"
        if not isinstance(item, str) or not SECRET_NAME_RE.fullmatch(item):
            _error(errors, where, item, "is not a secret name",
                   "use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 63 "
                   "characters); the secret becomes the file %s/<name>" % SECRETS_DIR)
            continue
        if env and not ENV_NAME_RE.fullmatch(item):
            _error(errors, where, item, "cannot name an environment variable",
                   "use ASCII letters, digits and '_' for a secret delivered with env: true")
            continue
        if env and item in RESERVED_ENV:
            _error(errors, where, item, "is set by the stack itself", "choose another name")
            continue
        if item in seen:
            _error(errors, where, item, "is listed twice", "list each secret once")
            continue
        seen.add(item)
        result.append({"name": item, "env": env})
    return result


def check_command(path, value, errors):
    """services.command: the exec form, a list of strings without NUL."""
    if not 1 <= len(value) <= MAX_COMMAND:
        _error(errors, path, value, "has %d arguments" % len(value),
               "give the program and its arguments as a list of 1 to %d strings (exec form, no shell), "
               "or leave it out to run the image's own command" % MAX_COMMAND)
        return None
    for index, argument in enumerate(value):
        if not isinstance(argument, str) or len(argument) > MAX_ARGUMENT or "\x00" in argument:
            _error(errors, "%s[%d]" % (path, index), argument, "is not a usable argument",
                   "write each argument as a quoted string of at most %d characters without NUL" % MAX_ARGUMENT)
            return None
    return list(value)


def check_tmpfs(path, value, errors):
    """services.tmpfs: paths, or {path, size} mappings; [{"path": str, "size": str}]."""
    if len(value) > MAX_TMPFS:
        _error(errors, path, value, "lists %d paths, more than %d" % (len(value), MAX_TMPFS), "list fewer")
        return []
    result, seen = [], set()
    for index, item in enumerate(value):
        where = "%s[%d]" % (path, index)
        size = DEFAULT_TMPFS_SIZE
        if isinstance(item, dict):
            unknown = sorted(str(key) for key in item if key not in ("path", "size"))
            if unknown:
                _error(errors, where, item, "has the unknown key %s" % unknown[0],
                       "a tmpfs is a path, or a mapping with path and size")
                continue
            size = item.get("size", DEFAULT_TMPFS_SIZE)
            if not isinstance(size, str) or not TMPFS_SIZE_RE.fullmatch(size):
                _error(errors, where + ".size", size, "is not a size",
                       "use a whole number with the unit k, m or g, e.g. \"64m\"")
                continue
            item = item.get("path")
            where += ".path"
        if not isinstance(item, str) or not TMPFS_PATH_RE.fullmatch(item) or len(item) > 255 \
                or any(part in (".", "..") for part in item.split("/")):
            _error(errors, where, item, "is not an absolute path",
                   "use a path such as /tmp or /var/cache/app (letters, digits, '_', '.' and '-')")
            continue
        if any(item == reserved or item.startswith(reserved + "/") or reserved.startswith(item + "/")
               for reserved in RESERVED_PATHS):
            _error(errors, where, item, "would hide a directory the stack mounts",
                   "choose a path outside %s" % ", ".join(RESERVED_PATHS))
            continue
        if item in seen:
            _error(errors, where, item, "is listed twice", "list each path once")
            continue
        seen.add(item)
        result.append({"path": item, "size": size.lower()})
    return result


def is_user(text):
    """A numeric uid:gid that is not root's."""
    return bool(USER_RE.fullmatch(text)) and not text.startswith("0:")


def cross_rules(services, errors):
    """A variable named both in env and by an env-delivered secret is ambiguous."""
    for secret in services["secrets"]:
        if secret["env"] and secret["name"] in services["env"]:
            errors.append("manifest field 'services.secrets': %s is delivered as an environment variable and "
                          "also set in services.env; remove one of them." % _show(secret["name"]))


def missing_secrets(secrets, values):
    """The names of the manifest's secrets without a value in swiftdeploy_secrets, in order."""
    values = values if isinstance(values, dict) else {}
    return [secret["name"] for secret in secrets
            if not isinstance(values.get(secret["name"]), str) or values.get(secret["name"]) == ""]
