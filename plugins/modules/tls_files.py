#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tls_files
short_description: Put a stack's TLS certificate and key where its nginx reads them
version_added: 0.2.0
description:
  - Writes O(cert) and O(key) to C(<project_path>/<directory>/<stem>.crt) (mode C(0644)) and
    C(<stem>.key) (mode C(0600)), both owned by O(owner):O(group), in a directory of mode
    C(0700) owned by them; the stem is a digest of the certificate file's certificates, the same
    as M(swiftdeploy.stack.tls_info) returns. Each file is created with its final mode, synced
    and renamed into place, so the key is never readable by others, not even for an instant.
  - Then removes every other pair of that directory except those the project's current
    O(nginx_conf) names, which the running nginx may still need until the converge that follows
    has reloaded it. A pair therefore stays on disk until the run after the one that replaced it.
  - The key is a module option that is never logged; it is never returned, never in a diff and
    never in check-mode output.
  - Check the pair with M(swiftdeploy.stack.tls_info) on the controller first; this module only
    checks that the certificate holds PEM certificates.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  project_path:
    description: The stack's project directory on the Docker host; created (mode C(0750)) when missing.
    type: path
    required: true
  directory:
    description: The directory of the pairs, relative to O(project_path).
    type: str
    default: nginx/tls
  nginx_conf:
    description: The project's nginx configuration, relative to O(project_path); the pairs it names are kept.
    type: str
    default: nginx/nginx.conf
  cert:
    description: The PEM certificate file's text (leaf first, then any intermediates).
    type: str
    required: true
  key:
    description: The PEM private key's text. Never logged.
    type: str
    required: true
  owner:
    description: The numeric user the files and their directory belong to, the one nginx runs as.
    type: int
    default: 101
  group:
    description: The numeric group the files and their directory belong to.
    type: int
    default: 101
attributes:
  check_mode:
    support: full
    details:
      - Says whether the pair would be written and which pairs removed; writes nothing.
  diff_mode:
    support: none
    details:
      - The files' contents are never shown; RV(stem) and RV(fingerprint) say which certificate it is.
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix
notes:
  - Setting O(owner) needs root on the host (C(become)).
seealso:
  - module: swiftdeploy.stack.tls_info
  - module: swiftdeploy.stack.stack_converge
"""

EXAMPLES = r"""
- name: Put the certificate and key in place for nginx
  swiftdeploy.stack.tls_files:
    project_path: "{{ swiftdeploy_project_path }}"
    cert: "{{ lookup('ansible.builtin.file', '/etc/swiftdeploy/tls/shop.crt') }}"
    key: "{{ lookup('ansible.builtin.file', '/etc/swiftdeploy/tls/shop.key') }}"
"""

RETURN = r"""
stem:
  description: The pair's file stem.
  returned: always
  type: str
  sample: 9a1c0e33b5d27f4e
fingerprint:
  description: SHA-256 of the leaf certificate (DER), lower-case hex.
  returned: always
  type: str
  sample: 3f0c5c8a0e4d4b0f9d2f6b2f5a1c7e9d8b6a4c2e0f1d3b5a7c9e1f3a5b7c9d1e
cert_path:
  description: The certificate file's absolute path.
  returned: always
  type: str
  sample: /root/.swiftdeploy/shop/nginx/tls/9a1c0e33b5d27f4e.crt
key_path:
  description: The key file's absolute path.
  returned: always
  type: str
  sample: /root/.swiftdeploy/shop/nginx/tls/9a1c0e33b5d27f4e.key
written:
  description: The files written (or that would be), C(crt) and C(key).
  returned: always
  type: list
  elements: str
  sample: [crt, key]
removed:
  description: File names of replaced pairs removed (or that would be).
  returned: always
  type: list
  elements: str
  sample: [0b7d2c11aa03e9f1.crt, 0b7d2c11aa03e9f1.key]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._tls_files import (
    CERT_MODE,
    CERT_SUFFIX,
    DIR_MODE,
    KEY_MODE,
    KEY_SUFFIX,
    TlsFileError,
    fingerprint,
    needs_write,
    normalised,
    read_bytes,
    referenced_stems,
    stale_files,
    stem,
    write_private,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import inside


# As stack_converge creates it: the project holds the stack's state and history.
PROJECT_DIR_MODE = 0o750


def place_directory(project, path, uid, gid, check_mode):
    """Create the pairs' directory, or give it the mode and owner; whether anything changed."""
    if not os.path.isdir(path):
        if not check_mode:
            if not os.path.isdir(project):
                os.makedirs(project, mode=PROJECT_DIR_MODE)
                os.chmod(project, PROJECT_DIR_MODE)
            # The directories between (nginx/) are mounted into nginx's container: readable by its user.
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)
            os.chown(path, uid, gid)
        return True
    info = os.stat(path)
    if (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (DIR_MODE, uid, gid):
        return False
    if not check_mode:
        os.chmod(path, DIR_MODE)
        os.chown(path, uid, gid)
    return True


def main():
    module = AnsibleModule(argument_spec={
        "project_path": {"type": "path", "required": True},
        "directory": {"type": "str", "default": "nginx/tls"},
        "nginx_conf": {"type": "str", "default": "nginx/nginx.conf"},
        "cert": {"type": "str", "required": True},
        "key": {"type": "str", "required": True, "no_log": True},
        "owner": {"type": "int", "default": 101},
        "group": {"type": "int", "default": 101},
    }, supports_check_mode=True)
    params = module.params
    project = os.path.abspath(params["project_path"])
    if os.path.lexists(project) and not os.path.isdir(project):
        module.fail_json(msg="project_path: %s exists and is not a directory; give the stack's project directory"
                         % project)
    try:
        directory = inside(project, params["directory"])
        conf = inside(project, params["nginx_conf"])
        cert, key = normalised(params["cert"]), normalised(params["key"])
        cert.encode("ascii")
        key.encode("ascii")
        name = stem(cert)
        result = {"stem": name, "fingerprint": fingerprint(cert),
                  "cert_path": os.path.join(directory, name + CERT_SUFFIX),
                  "key_path": os.path.join(directory, name + KEY_SUFFIX), "written": [], "removed": []}
    except (ValueError, TlsFileError, UnicodeEncodeError) as exc:
        # The messages name the option and never quote the key.
        module.fail_json(msg="cert, key or a path cannot be used: %s; check the pair with swiftdeploy.stack.tls_info "
                         "first" % (exc.reason if isinstance(exc, UnicodeEncodeError) else exc))
    uid, gid, check = params["owner"], params["group"], module.check_mode
    try:
        changed = place_directory(project, directory, uid, gid, check)
        for suffix, content, mode, path in (("crt", cert, CERT_MODE, result["cert_path"]),
                                            ("key", key, KEY_MODE, result["key_path"])):
            if not os.path.isdir(directory) or needs_write(path, content, mode, uid, gid):
                result["written"].append(suffix)
                if not check:
                    write_private(path, content, mode, uid, gid)
        conf_text = read_bytes(conf)
        keep = referenced_stems(conf_text.decode("utf-8", "replace") if conf_text else "") | {name}
        result["removed"] = stale_files(os.listdir(directory), keep) if os.path.isdir(directory) else []
        if not check:
            for stale in result["removed"]:
                os.unlink(os.path.join(directory, stale))
    except OSError as exc:
        hint = "; run as root (become: true) to give the files to nginx's user" if exc.errno == 1 else ""
        module.fail_json(msg="cannot write the TLS files in %s: %s%s" % (directory, exc.strerror or exc, hint))
    module.exit_json(changed=changed or bool(result["written"] or result["removed"]), **result)


if __name__ == "__main__":
    main()
