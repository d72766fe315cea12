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
  edge:
    description:
      - Each app slot's traffic as nginx saw it over the last O(edge.window_seconds), read from
        the stack's edge log (C(docs/metrics.md), "At the edge"); returned in RV(edge). A slot
        whose container started within the window is measured over its life. This never waits.
    type: dict
    suboptions:
      path:
        description: The edge log directory, C(<project>/edge).
        type: path
        required: true
      window_seconds:
        description: Seconds of traffic to measure, up to 600.
        type: float
        required: true
      project:
        description: The compose project directory, to find the containers of O(edge.services).
        type: path
      services:
        description: Slot name to compose service (for example C(green) to C(app-green)).
        type: dict
        default: {}
      wait_for_canary:
        description: Only for M(swiftdeploy.stack.stack_lock); ignored here.
        type: bool
        default: false
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
edge:
  description:
    - With O(edge), C(slots) (each slot's C(requests), C(req_per_s), C(errors),
      C(error_rate_percent), C(p99_latency_ms), C(window_seconds) and C(latency_buckets), as
      M(swiftdeploy.stack.metrics_scrape) returns a window), C(window_seconds), C(life_starts),
      C(messages) and counts of the lines left out (C(skipped), C(partial), C(excluded),
      C(future)); or C(error) when the log could not be read.
  returned: when O(edge) is given
  type: dict
  sample:
    slots:
      blue: {requests: 1210, req_per_s: 40.3, errors: 0, error_rate_percent: 0.0, p99_latency_ms: 4.9,
             window_seconds: 30.0, counter_reset: false, latency_buckets: [["0.005", 1210], ["+Inf", 1210]]}
    window_seconds: 30.0
    window_source: edge
    messages: {blue: "1210 requests in 30.0 s (40.33/s), 0 errors (0.00%), p99 4.9 ms"}
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

import functools
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _edge as edge_log
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._host import measure


def main():
    module = AnsibleModule(argument_spec={"path": {"type": "path"},
                                          "images": {"type": "list", "elements": "str", "default": []},
                                          "health_urls": {"type": "list", "elements": "str", "default": []},
                                          "edge": {"type": "dict", "options": edge_log.ARGUMENT_SPEC}},
                           supports_check_mode=True)
    path = module.params["path"]
    if path and not os.path.exists(path):
        module.fail_json(msg="path: %s does not exist on this host; give the Docker data root "
                             "(docker info --format '{{.DockerRootDir}}')." % path)
    try:
        found = measure(path, module.params["images"], module.params["health_urls"])
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot measure host resources: %s" % exc)
    if module.params["edge"]:
        engine = functools.partial(open_engine, runner=functools.partial(module.run_command, check_rc=False),
                                   docker=module.get_bin_path("docker"))
        options = dict(module.params["edge"], wait_for_canary=False)
        found["edge"] = edge_log.measure_option(options, engine, check_mode=module.check_mode)
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
