#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: manifest_info
short_description: Load and validate a SwiftDeploy manifest
version_added: 0.1.0
description:
  - Reads a SwiftDeploy manifest (YAML) on the controller, validates every field and returns it
    with all defaults filled in.
  - Each problem is reported as one sentence naming the field path, the bad value and the fix.
    All problems are reported at once. Unknown keys get a "did you mean" suggestion.
  - Duplicate keys, which plain YAML silently overwrites, are rejected.
  - The file is refused, with its line and column, when it is larger than 1 MiB, uses a YAML
    alias, nests values more than 32 levels deep, holds more than 10,000 values, uses a list or
    mapping as a key or writes an integer with more than 64 characters. A manifest needs none of
    these, and each can exhaust the controller (see C(docs/security.md)).
  - This is an action plugin; the manifest is read on the controller, never on the managed host.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.info_module
  - swiftdeploy.stack.attributes.controller_action
options:
  path:
    description:
      - Path of the manifest on the controller. A relative path is resolved against the current
        working directory, as the original SwiftDeploy CLI did.
    type: str
    required: true
  overrides:
    description:
      - >-
        Values merged over the manifest before validation, for example V({"opa": {"mode": "embedded"}})
        to choose the policy engine on the command line. They are validated like the file.
    type: dict
    default: {}
  inputs_file:
    description:
      - A role's C(defaults/main.yml) on the controller; its top-level names are the role's inputs.
      - With O(inputs_file) or O(inputs), the task first refuses extra variables (C(-e), an AWX
        job's extra variables) named C(swiftdeploy_*) or C(_swiftdeploy_*) that are not among
        the inputs, naming them, before the manifest is read. Extra variables outrank every
        variable a role registers or sets, so such a name could forge a policy decision, a
        manifest or a live state. The swiftdeploy role's first task does this.
    type: path
  inputs:
    description:
      - More input names that extra variables may set, besides those of O(inputs_file) (for
        example a playbook's own C(swiftdeploy_hosts)).
    type: list
    elements: str
    default: []
notes:
  - See C(docs/manifest.md) in the collection for every key and its default.
"""

EXAMPLES = r"""
- name: Load the manifest
  swiftdeploy.stack.manifest_info:
    path: manifest.yml
  register: swiftdeploy_loaded

- name: Choose the embedded policy engine regardless of the file
  swiftdeploy.stack.manifest_info:
    path: manifest.yml
    overrides:
      opa:
        mode: embedded
"""

RETURN = r"""
valid:
  description: Whether the manifest is valid.
  returned: always
  type: bool
  sample: true
stage:
  description:
    - How far loading got. V(inputs) an internal variable was supplied as an extra variable
      (the manifest was not read), V(read) the file could not be read, V(parse) it is not YAML,
      V(schema) a field is wrong, V(valid) all is well.
  returned: always
  type: str
  sample: valid
errors:
  description: Every problem found, one sentence each.
  returned: always
  type: list
  elements: str
  sample:
    - "manifest field 'nginx.port': 80800 is out of range; use a TCP port number from 1 to 65535."
forged:
  description: The internal variables supplied as extra variables.
  returned: when O(inputs_file) or O(inputs) is given and some were supplied
  type: list
  elements: str
  sample: [swiftdeploy_decision]
controller_user:
  description: The user running the controller, the default actor of the history's events.
  returned: always
  type: str
  sample: ops
path:
  description: The absolute path that was read.
  returned: always
  type: str
  sample: /home/ops/stack/manifest.yml
manifest:
  description: The manifest with every default filled in.
  returned: when valid
  type: dict
  sample:
    stack: swiftdeploy
    contact: ops@swiftdeploy.local
    services: {image: "swift-deploy-1-node:latest", port: 3000, mode: stable, version: "1.0.0"}
"""
