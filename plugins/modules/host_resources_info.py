#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_resources_info
short_description: Measure the host figures the infrastructure policy checks
version_added: 0.1.0
description:
  - Reports free disk space on the filesystem that holds O(path) (give the Docker data root, where
    images and containers land), the 1-minute load average and the percentage of memory
    available, as the original SwiftDeploy CLI printed before a deploy.
  - Runs on the managed host, so the figures are the Docker host's, never the controller's.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.info_module
options:
  path:
    description:
      - A path on the filesystem to measure. Empty means the Docker data root, as
        C(docker info) reports it, where images and containers land.
    type: path
  images:
    description:
      - Image references to look for on the host; the missing ones are returned in
        RV(images_missing). Measuring and looking in one call keeps a deploy short.
    type: list
    elements: str
    default: []
  health_urls:
    description:
      - HTTP URLs on the host whose status the gates need too (for example the stable app slot's
        health before a canary starts), requested once each with a 5 s timeout; their statuses
        are returned in RV(health). Asking them here saves the gate a round trip.
    type: list
    elements: str
    default: []
attributes:
  platform:
    support: full
    platforms: linux
"""

EXAMPLES = r"""
- name: Measure the Docker data root's filesystem, load and memory, and look for two images
  swiftdeploy.stack.host_resources_info:
    images: [nginx:latest, swift-deploy-1-node:latest]
  register: swiftdeploy_host
"""

RETURN = r"""
images_missing:
  description: The images of O(images) that are not on the host.
  returned: success
  type: list
  elements: str
  sample: [nginx:latest]
image_ids:
  description: The ID of each image of O(images) on the host, null for one that is not there.
  returned: success
  type: dict
  sample: {"nginx:latest": "sha256:40516eb38fa6c5a9d0a5f2ab4e6d8f1b8f6f3a3bd0a1e0b4b3c86b2d8e2e7f1c"}
health:
  description:
    - For each URL of O(health_urls), C(ok) (it answered 2xx), C(status) (the HTTP status of a
      non-2xx answer, null otherwise) and C(error) (why it is not healthy, null when it is).
  returned: success
  type: dict
  sample:
    http://127.0.0.1:8082/slots/blue/healthz: {ok: true, status: null, error: null}
resources:
  description: The figures.
  returned: success
  type: dict
  contains:
    disk_free_gb:
      description: Free space for unprivileged writers, in GB (10^9 bytes).
      type: float
      sample: 81.52
    disk_path:
      description: The path measured.
      type: str
      sample: /var/lib/docker
    cpu_load_1m:
      description: The 1-minute load average.
      type: float
      sample: 0.42
    cpu_count:
      description: Number of CPUs, to read the load against.
      type: int
      sample: 2
    mem_free_percent:
      description: Memory available to new workloads (MemAvailable), as a percentage of the total.
      type: float
      sample: 93.1
    mem_total_mb:
      description: Total memory in MiB.
      type: float
      sample: 24033.6
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._host import measure


def main():
    module = AnsibleModule(argument_spec={"path": {"type": "path"},
                                          "images": {"type": "list", "elements": "str", "default": []},
                                          "health_urls": {"type": "list", "elements": "str", "default": []}},
                           supports_check_mode=True)
    path = module.params["path"]
    if path and not os.path.exists(path):
        module.fail_json(msg="path: %s does not exist on this host; give the Docker data root "
                             "(docker info --format '{{.DockerRootDir}}')." % path)
    try:
        found = measure(path, module.params["images"], module.params["health_urls"])
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot measure host resources: %s" % exc)
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
