#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stack_logs_info
short_description: Read the last lines of a SwiftDeploy stack's container logs
version_added: 0.2.0
description:
  - Lists the containers of the stack in O(project_path) (its compose file, as
    C(docker compose ps --all) does) and returns the last O(lines) lines of each one's log
    (stdout and stderr in time order, as C(docker logs --timestamps) gives them), optionally only
    those written since O(since).
  - The containers are read side by side, so a stack of four costs about one C(docker logs).
  - Reads only; takes no stack lock, so it can watch a deploy or promote as it happens.
  - nginx writes its access log to the stack's log volume, not to its container log; its
    container log holds nginx's errors and warnings.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.info_module
options:
  project_path:
    description: The stack's project directory on the host (where its C(docker-compose.yml) is).
    type: path
    required: true
  lines:
    description: How many of the last lines of each container's log to return, 1 to 10000.
    type: int
    default: 50
  since:
    description:
      - Only lines written since then - an age such as V(30s), V(10m), V(2h) or V(7d), or a UTC
        time such as V(2026-12-07T10:00Z). Empty for no limit.
    type: str
    default: ""
attributes:
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: The last 20 lines of each container of the stack, from the last 10 minutes
  swiftdeploy.stack.stack_logs_info:
    project_path: /home/ops/.swiftdeploy/swiftdeploy
    lines: 20
    since: 10m
  register: swiftdeploy_logs
"""

RETURN = r"""
containers:
  description:
    - One entry a container of the stack, always in this order - the app slots (by slot), the edge
      nginx, the routing nginx, OPA, then any other container (by name).
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The container's name.
      type: str
      sample: swiftdeploy-app-blue-1
    service:
      description: Its service in the compose file.
      type: str
      sample: app-blue
    role:
      description: V(app), V(nginx) or V(opa), from its C(org.swiftdeploy.role) label.
      type: str
      sample: app
    slot:
      description: The app slot (V(blue) or V(green)); empty for nginx and OPA.
      type: str
      sample: blue
    state:
      description: The container's state (V(running), V(exited), ...).
      type: str
      sample: running
    lines:
      description: Its last lines, oldest first, each with its time, stream and text.
      type: list
      elements: dict
      sample: [{time: "2026-12-07T10:00:01.123456789Z", stream: stdout, text: "listening on 3000"}]
    error:
      description: Why its log could not be read (then O(lines) is empty); absent otherwise.
      type: str
since:
  description: The unix time O(since) named, or null for no limit.
  returned: success
  type: int
  sample: 1796637600
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._logs import (
    LogsError,
    check_lines,
    container_role,
    log_order,
    merge_streams,
    since_timestamp,
)


def main():
    module = AnsibleModule(argument_spec={"project_path": {"type": "path", "required": True},
                                          "lines": {"type": "int", "default": 50},
                                          "since": {"type": "str", "default": ""}},
                           supports_check_mode=True)
    project = module.params["project_path"]
    try:
        lines = check_lines(module.params["lines"])
        since = since_timestamp(module.params["since"])
    except LogsError as exc:
        module.fail_json(msg=str(exc))
    if not os.path.isfile(os.path.join(project, "docker-compose.yml")):
        module.fail_json(msg="project_path: %s has no docker-compose.yml on this host; deploy the stack first, or "
                             "pass its project directory (-e swiftdeploy_project_dir=...)." % project)
    try:
        engine = open_engine(runner=module.run_command)
        entries = engine.ps(project)
        found = []
        for entry in entries:
            role, slot = container_role(entry)
            found.append({"name": entry.get("Name", ""), "service": entry.get("Service", ""), "role": role,
                          "slot": slot, "state": entry.get("State", "")})
        found.sort(key=log_order)
        logs = engine.logs([item["name"] for item in found], lines, since)
    except EngineError as exc:
        module.fail_json(msg="cannot read the stack's logs: %s" % exc)
    for item in found:
        rc, out, err = logs[item["name"]]
        if rc == 0:
            item["lines"] = merge_streams(out, err, lines)
        else:
            item["lines"] = []
            item["error"] = (err.strip() or out.strip() or "docker logs failed with status %d" % rc)[:500]
    module.exit_json(changed=False, containers=found, since=since)


if __name__ == "__main__":
    main()
