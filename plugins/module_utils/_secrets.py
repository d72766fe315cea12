# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A service's secrets on the managed host: their keyed hash, their files, the env file.

This is a private module_utils file: its API may change without notice. No Ansible imports.

The values come from the play (swiftdeploy_secrets, no_log) and are written here only:
<project>/secrets/<digest>/files/<name> (mode 0400, the directory 0500, both owned by the
service's uid:gid; the directory is bind-mounted read-only at /run/secrets) and, for secrets
delivered as variables, <project>/secrets/<digest>/env (mode 0400, root's: docker compose reads
it as an env_file). A slot's compose service names only its digest, so a slot's text does not
depend on the manifest's current list of secrets.
<digest> is HMAC-SHA256 over the names, deliveries, owner and values with a random key kept in
<project>/secrets/hmac.key (0600): it names the directory, goes into the state and the history,
and changes with any value, so a new value is a new release; without the key it says nothing
about a low-entropy value (a plain SHA-256 of "hunter2" is found in a dictionary). A directory
is never rewritten while a slot uses it: a new set of values gets a new directory, and the ones
no slot names are removed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets as random
import shutil

from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import write_atomic

SECRETS_DIR = "secrets"
KEY_FILE = "hmac.key"
ENV_FILE = "env"
FILES_DIR = "files"
KEY_BYTES = 32
DIGEST_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
OWNER_RE = re.compile(r"([0-9]{1,10}):([0-9]{1,10})", re.ASCII)
MAX_VALUE = 65536


class SecretsError(Exception):
    """A problem with the secrets; the message names a secret, never its value."""


def check_values(secrets, values, variable="swiftdeploy_secrets"):
    """{name: value} for the manifest's `secrets` ([{name, env}]), or SecretsError naming every
    secret that has no usable value."""
    values = values if isinstance(values, dict) else {}
    missing, bad, result = [], [], {}
    for secret in secrets:
        value = values.get(secret["name"])
        if value is None or value == "":
            missing.append(secret["name"])
        elif not isinstance(value, str) or "\x00" in value or len(value) > MAX_VALUE:
            bad.append("%s (a string of at most %d characters without NUL)" % (secret["name"], MAX_VALUE))
        elif secret["env"] and ("\r" in value or "\n" in value):
            bad.append("%s (delivered as a variable: one line; deliver it as a file for several lines)"
                       % secret["name"])
        else:
            result[secret["name"]] = value
    if missing:
        raise SecretsError("the manifest's services.secrets names %s, but %s has no value for %s; add %s to %s "
                           "(from Ansible Vault or an AWX credential)"
                           % (", ".join(missing), variable, "it" if len(missing) == 1 else "them",
                              "it" if len(missing) == 1 else "them", variable))
    if bad:
        raise SecretsError("%s: unusable value for %s" % (variable, "; ".join(bad)))
    return result


def parse_owner(owner):
    match = OWNER_RE.fullmatch(owner or "")
    if not match:
        raise SecretsError("owner %r is not a numeric uid:gid" % owner)
    return int(match.group(1)), int(match.group(2))


def digest(key, secrets, values, owner):
    """HMAC-SHA256 (hex) of everything the secrets directory holds, keyed with the stack's key."""
    document = json.dumps({"owner": owner, "secrets": [[s["name"], bool(s["env"]), values[s["name"]]]
                                                       for s in sorted(secrets, key=lambda s: s["name"])]},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, document.encode("ascii"), hashlib.sha256).hexdigest()


def env_line(name, value):
    """One line of a compose env_file that gives `name` exactly `value`: double-quoted, with the
    characters compose's dotenv parser reads specially escaped (no interpolation of `$`)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '%s="%s"\n' % (name, escaped)


def files_of(secrets, values):
    """({file name: content} of the files directory, the env file's text or None)."""
    files = dict((s["name"], values[s["name"]]) for s in secrets if not s["env"])
    env = "".join(env_line(s["name"], values[s["name"]]) for s in secrets if s["env"])
    return files, env or None


def read_key(root):
    """The stack's HMAC key, or None when there is none yet."""
    try:
        with open(os.path.join(root, KEY_FILE), "rb") as handle:
            key = handle.read()
    except FileNotFoundError:
        return None
    if len(key) < KEY_BYTES:
        raise SecretsError("%s holds no usable key; remove it (every slot is then rolled out again)"
                           % os.path.join(root, KEY_FILE))
    return key


def _write_file(directory, name, data, mode, uid, gid):
    write_atomic(os.path.join(directory, name), data, mode, uid, gid)


def _same_file(path, data, mode, uid, gid):
    try:
        info = os.lstat(path)
        with open(path, "rb") as handle:
            return (handle.read() == data and (info.st_mode & 0o7777) == mode and info.st_uid == uid
                    and info.st_gid == gid and os.path.isfile(path) and not os.path.islink(path))
    except OSError:
        return False


def ensure_dir(path, mode=0o700):
    """A directory of root's with `mode`; True when it was created or its mode fixed."""
    changed = False
    if not os.path.isdir(path) or os.path.islink(path):
        os.mkdir(path, mode)
        changed = True
    if os.stat(path).st_mode & 0o7777 != mode:
        changed = True
    os.chmod(path, mode)
    return changed


class SecretsDir(object):
    """<project>/secrets of one stack."""

    def __init__(self, project):
        self.project = project
        self.root = os.path.join(project, SECRETS_DIR)

    def make_root(self):
        if not os.path.isdir(self.project):
            os.makedirs(self.project, 0o750)  # a first deploy: the converge fills it later
        ensure_dir(self.root)

    def key(self, check_mode):
        """(key, created): the stack's key; in check mode an ephemeral one when there is none."""
        key = read_key(self.root) if os.path.isdir(self.root) else None
        if key is not None:
            return key, False
        key = random.token_bytes(KEY_BYTES)
        if not check_mode:
            self.make_root()
            _write_file(self.root, KEY_FILE, key, 0o600, 0, 0)
        return key, True

    def ensure(self, name, files, env, owner, check_mode):
        """Make <root>/<name> hold exactly `files` (in files/) and `env` (None: no env file);
        True when anything is (or would be) written."""
        uid, gid = parse_owner(owner)
        directory = os.path.join(self.root, name)
        wanted = dict((os.path.join(FILES_DIR, file_name), (content.encode("utf-8"), 0o400, uid, gid))
                      for file_name, content in files.items())
        if env is not None:
            wanted[ENV_FILE] = (env.encode("utf-8"), 0o400, 0, 0)
        if self._holds(directory, wanted, uid, gid):
            return False
        if check_mode:
            return True
        self.make_root()
        if os.path.isdir(directory):
            shutil.rmtree(directory)  # a half-written set: no slot runs from it yet
        ensure_dir(directory)
        os.mkdir(os.path.join(directory, FILES_DIR), 0o700)
        for relpath, spec in sorted(wanted.items()):
            _write_file(os.path.dirname(os.path.join(directory, relpath)), os.path.basename(relpath), *spec)
        files_dir = os.path.join(directory, FILES_DIR)
        os.chown(files_dir, uid, gid)
        os.chmod(files_dir, 0o500)
        return True

    @staticmethod
    def _holds(directory, wanted, uid, gid):
        try:
            files_dir = os.path.join(directory, FILES_DIR)
            top, inner = os.stat(directory), os.stat(files_dir)
            present = set(os.path.join(FILES_DIR, name) for name in os.listdir(files_dir))
            present |= set(name for name in os.listdir(directory) if name != FILES_DIR)
        except OSError:
            return False
        return (top.st_mode & 0o7777 == 0o700 and inner.st_mode & 0o7777 == 0o500 and inner.st_uid == uid
                and inner.st_gid == gid and present == set(wanted)
                and all(_same_file(os.path.join(directory, relpath), *spec) for relpath, spec in wanted.items()))

    def prune(self, keep, check_mode):
        """Remove the directories of secret sets no slot names; the sorted names removed."""
        if not os.path.isdir(self.root):
            return []
        gone = sorted(name for name in os.listdir(self.root) if DIGEST_RE.fullmatch(name) and name not in keep)
        if not check_mode:
            for name in gone:
                shutil.rmtree(os.path.join(self.root, name))
        return gone
