#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: opa_sidecar
short_description: Start the stack's OPA sidecar with its own token and wait until it answers
version_added: 0.2.0
description:
  - Makes sure the stack's OPA token exists on the managed host, in C(opa/token.json) of
    O(project_dir) (the directory mode C(0700), the file mode C(0600) and owned by OPA's uid
    65532), generating a new random token when there is none. The token never leaves the host
    and is never returned.
  - Starts only the C(opa) service of the project's compose file, finds its container through
    the Docker engine (checked by its compose and SwiftDeploy labels and by being on O(network)
    alone) and waits until its C(/health) answers on its address on that network.
  - Fails, with the reason, when the sidecar does not start or does not become healthy; the
    role records that as a blocked deploy.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  project_dir:
    description: The stack's project directory on the host, where C(docker-compose.yml) is.
    type: path
    required: true
  stack:
    description: The stack's name (the compose project); the container's labels must name it.
    type: str
    required: true
  network:
    description: The OPA network's name; the sidecar must be on it and on no other network.
    type: str
    required: true
  wait_timeout:
    description: Seconds to wait for the started sidecar to answer C(/health).
    type: float
    default: 30
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the token would be created and the sidecar started; writes and starts
        nothing, and waits only for a sidecar that is already running.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A valid token is kept, and compose leaves a sidecar that is up to date running.
  platform:
    support: full
    platforms: posix
notes:
  - Needs root on the host (C(become)), to give the token file to OPA's uid.
"""

EXAMPLES = r"""
- name: Start the OPA sidecar and wait for it
  swiftdeploy.stack.opa_sidecar:
    project_dir: /srv/swiftdeploy
    stack: swiftdeploy
    network: swiftdeploy-net-opa
"""

RETURN = r"""
container_id:
  description: The ID of the stack's OPA container, or C(null) in check mode when it is not running.
  returned: success
  type: str
  sample: 3f1c0a6c2d1e9b7a5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b
address:
  description: The sidecar's address on the OPA network, where the decisions are asked.
  returned: success
  type: str
  sample: 172.28.0.2
token_created:
  description: Whether a new token was generated (the token itself is never returned).
  returned: success
  type: bool
  sample: false
"""

import functools

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, containers_started, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._opa_sidecar import (
    OPA_SERVICE,
    SidecarError,
    check_running,
    ensure_token,
    find_sidecar,
    wait_healthy,
)


def main():
    module = AnsibleModule(argument_spec={
        "project_dir": {"type": "path", "required": True},
        "stack": {"type": "str", "required": True},
        "network": {"type": "str", "required": True},
        "wait_timeout": {"type": "float", "default": 30},
    }, supports_check_mode=True)
    params = module.params
    result = {"changed": False, "container_id": None, "address": None, "token_created": False}
    try:
        result["token_created"] = ensure_token(params["project_dir"], check_mode=module.check_mode)
        engine = open_engine(runner=functools.partial(module.run_command, check_rc=False),
                             check_mode=module.check_mode, docker=module.get_bin_path("docker"))
        started = containers_started(engine.compose_up(params["project_dir"], [OPA_SERVICE]))
        result["changed"] = result["token_created"] or bool(started)
        if module.check_mode:
            try:
                sidecar = find_sidecar(engine.real, params["project_dir"], params["stack"], params["network"])
            except SidecarError:
                result["changed"] = True  # it would be started
                module.exit_json(**result)
        else:
            sidecar = find_sidecar(engine, params["project_dir"], params["stack"], params["network"])
        real = engine.real if module.check_mode else engine
        wait_healthy(sidecar["url"], params["wait_timeout"],
                     still_running=lambda: check_running(real, sidecar["id"], params["stack"]))
    except SidecarError as exc:
        module.fail_json(msg="%s." % exc, **result)
    except EngineError as exc:
        module.fail_json(msg="OPA sidecar did not start: %s" % exc, **result)
    except OSError as exc:
        module.fail_json(msg="OPA sidecar: cannot write its token in %s/opa (%s); run with become (root) so the "
                             "token can be given to OPA's uid" % (params["project_dir"], exc.strerror or exc), **result)
    result.update(container_id=sidecar["id"], address=sidecar["address"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
