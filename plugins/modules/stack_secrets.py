#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stack_secrets
short_description: Write a service's secrets on the managed host and return their keyed hash
version_added: 0.3.0
description:
  - Writes the values of the manifest's C(services.secrets) into C(secrets/<digest>/) of
    O(project_path), the directory mode C(0700). A secret delivered as a file as
    C(<digest>/files/<name>), mode C(0400), in a directory of mode C(0500), both owned by O(owner)
    (the container's user, the only one who can read them once the directory is bind-mounted
    read-only at C(/run/secrets)); secrets delivered as environment variables in one env_file
    C(<digest>/env), mode C(0400), owned by root (docker compose reads it).
  - C(<digest>) is the HMAC-SHA256 of the names, deliveries, owner and values, keyed with a random
    key made on the host on first use (C(secrets/hmac.key), mode C(0600)). It is returned, and it
    is all that leaves the host; the role puts it into the slot's state (a new digest is a new
    release, rolled out blue/green) and the history.
  - Removes the directories of earlier secret sets that no slot in O(keep) names.
  - The values are never returned, logged or shown in a diff.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  project_path:
    description: The stack's project directory on the host.
    type: path
    required: true
  secrets:
    description: The manifest's C(services.secrets), validated (each a name and whether it is delivered as a variable).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The secret's name.
        type: str
        required: true
      env:
        description: Delivered as an environment variable rather than a file.
        type: bool
        default: false
  values:
    description:
      - The secrets' values by name (the play variable C(swiftdeploy_secrets)). Never logged.
      - A secret of O(secrets) without a value fails the module, naming the secret.
    type: dict
    required: true
  owner:
    description: The numeric C(uid:gid) the container runs as (C(services.user)), given the secret files.
    type: str
    required: true
  keep:
    description: Digests of the slots still running or about to run, whose directories stay.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    details:
      - Reports the digest and whether files would be written; writes nothing (with no key yet,
        the digest is computed with a key that is not kept).
  diff_mode:
    support: none
    details:
      - Never, since a diff would show the values.
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix
notes:
  - Needs root on the host (C(become)), to give the files to the container's uid.
  - Call it with C(no_log) as well; O(values) is C(no_log) in the module's own argument spec.
"""

EXAMPLES = r"""
- name: Write the service's secrets
  swiftdeploy.stack.stack_secrets:
    project_path: /srv/swiftdeploy
    secrets:
      - {name: api_key, env: false}
      - {name: API_TOKEN, env: true}
    values: "{{ swiftdeploy_secrets }}"
    owner: "20000:20000"
  no_log: true
  register: swiftdeploy_secrets_written
"""

RETURN = r"""
digest:
  description: The HMAC-SHA256 of the secrets (hex); the name of their directory under C(secrets/).
  returned: success
  type: str
  sample: 9f2c4e1b7a3d5c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6
written:
  description: Whether the directory was (or in check mode would be) written.
  returned: success
  type: bool
  sample: true
key_created:
  description: Whether the stack's HMAC key was made by this run.
  returned: success
  type: bool
  sample: false
removed:
  description: Digests of earlier secret sets whose directories were removed.
  returned: success
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._secrets import (
    SecretsDir,
    SecretsError,
    check_values,
    digest,
    files_of,
)


def main():
    module = AnsibleModule(argument_spec={
        "project_path": {"type": "path", "required": True},
        "secrets": {"type": "list", "elements": "dict", "required": True, "no_log": False, "options": {
            "name": {"type": "str", "required": True},
            "env": {"type": "bool", "default": False},
        }},
        "values": {"type": "dict", "required": True, "no_log": True},
        "owner": {"type": "str", "required": True},
        "keep": {"type": "list", "elements": "str", "default": [], "no_log": False},
    }, supports_check_mode=True)
    params = module.params
    result = {"changed": False, "digest": "", "written": False, "key_created": False, "removed": []}
    store = SecretsDir(params["project_path"])
    try:
        values = check_values(params["secrets"], params["values"])
        key, result["key_created"] = store.key(module.check_mode)
        result["digest"] = digest(key, params["secrets"], values, params["owner"])
        files, env = files_of(params["secrets"], values)
        result["written"] = store.ensure(result["digest"], files, env, params["owner"], module.check_mode)
        result["removed"] = store.prune(set(params["keep"]) | {result["digest"]}, module.check_mode)
    except SecretsError as exc:
        module.fail_json(msg="%s." % exc, **result)
    except OSError as exc:
        # The error names a path under secrets/, never a value.
        module.fail_json(msg="cannot write the secrets in %s (%s: %s); run with become (root) so the files can "
                             "be given to the container's uid" % (store.root, exc.strerror or exc,
                                                                  getattr(exc, "filename", "")), **result)
    result["changed"] = result["written"] or result["key_created"] or bool(result["removed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
