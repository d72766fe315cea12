#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: canary_interval
short_description: One interval of an automated canary rollout on a host - save, wait, read both slots
version_added: 0.2.0
description:
  - The host's side of one look of C(promote.yml -e mode=auto) (C(docs/auto-rollout.md) in the
    collection). In one round trip it saves the rollout's state in O(state_path) (so that a rerun
    resumes from it), waits until O(interval_seconds) after the previous reading while keeping
    the stack lock's heartbeat, then reads the canary's and the stable slot's traffic.
  - With O(metrics_urls) (C(canary.metrics=app)) each slot's reading is its cumulative counters
    from the app's C(/metrics) - requests, 5xx answers, latency buckets, uptime (probes and control
    paths excluded); the controller takes the increase since the previous reading.
  - With O(edge) (C(canary.metrics=edge)) each slot's reading is its window from nginx's edge log
    since O(since) (without it, the last O(interval_seconds), from which a latency bound may be
    chosen).
  - Judging is not done here. The controller merges the hosts' readings and decides once
    (the C(swiftdeploy.stack.auto_look) and C(swiftdeploy.stack.auto_decide) filters).
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  since:
    description:
      - When this host's previous reading was taken (its RV(taken_at)), in epoch seconds on the host's clock.
        The module waits until O(interval_seconds) after it. Omitted, it reads at once.
    type: float
  interval_seconds:
    description: Seconds between two readings.
    type: float
    required: true
  warm_up_seconds:
    description:
      - Without O(since), wait this long before the first reading, so that a canary that has just
        started is judged from its second interval on (a process starting up is slower than one
        that has served for a while, which is not what the comparison is about).
    type: float
    default: 0
  metrics_urls:
    description: Slot name to its metrics URL as the host reaches it. Give this or O(edge).
    type: dict
  edge:
    description: The stack's edge log directory (C(<project>/edge)). Give this or O(metrics_urls).
    type: path
  slots:
    description: The slots to read with O(edge); with a fresh baseline (C(analysis.baseline=fresh)) also C(baseline).
    type: list
    elements: str
    default: [blue, green]
  state_path:
    description: Where the rollout's state is saved, replaced atomically with mode C(0600).
    type: path
  state:
    description: The rollout's state to save in O(state_path) before waiting; nothing is saved without it.
    type: dict
  lock_path:
    description: The stack lock file; its heartbeat is kept while the module waits.
    type: path
  lock_token:
    description:
      - The run's lock token. The module fails, naming the holder, when the lock is no longer
        the run's (taken over), so no judgement is applied without it.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Saves nothing; waits and reads as in a real run, so that check mode shows the verdicts a real run would reach.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Each call reads the traffic of a new interval.
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Wait the interval and read both slots
  swiftdeploy.stack.canary_interval:
    since: "{{ previous.taken_at }}"
    interval_seconds: 30
    metrics_urls:
      blue: http://127.0.0.1:8082/slots/blue/metrics
      green: http://127.0.0.1:8082/slots/green/metrics
    state_path: /root/.swiftdeploy/shop/auto.json
    state: "{{ rollout_state }}"
"""

RETURN = r"""
taken_at:
  description: When the slots were read, epoch seconds on the host's clock.
  returned: success
  type: float
  sample: 1765100000.25
waited_seconds:
  description: How long the module waited for the interval.
  returned: success
  type: float
  sample: 2.98
slots:
  description:
    - Per slot its reading - C(counters) (C(requests), C(errors), C(le:<bound>)) and C(uptime) with
      O(metrics_urls), or C(window) (requests, errors, latency buckets, as the edge log gives them) with O(edge).
  returned: success
  type: dict
  sample:
    green: {counters: {requests: 120, errors: 0, "le:0.005": 118, "le:+Inf": 120}, uptime: 42.0}
    blue: {counters: {requests: 1880, errors: 1, "le:0.005": 1870, "le:+Inf": 1880}, uptime: 3600.0}
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._auto import app_reading
from ansible_collections.swiftdeploy.stack.plugins.module_utils._edge import EdgeError, read_window
from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import KeepAlive, touch
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import MetricsError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics_store import scrape
from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import write_atomic


def save(path, state, move):
    """Replace path atomically with the state as JSON (mode 0600), put in place by move."""
    write_atomic(path, json.dumps(state, sort_keys=True).encode("utf-8"), 0o600, move=move)


def read_slots(params, since, now):
    if params["metrics_urls"]:
        return dict((slot, app_reading(scrape(url, 5.0))) for slot, url in params["metrics_urls"].items())
    window = now - since if since is not None else params["interval_seconds"]
    found = read_window(params["edge"], max(window, 0.0), now)
    return dict((slot, {"window": found["slots"][slot]}) for slot in params["slots"])


def main():
    module = AnsibleModule(
        argument_spec={
            "since": {"type": "float"},
            "interval_seconds": {"type": "float", "required": True},
            "warm_up_seconds": {"type": "float", "default": 0},
            "metrics_urls": {"type": "dict"},
            "edge": {"type": "path"},
            "slots": {"type": "list", "elements": "str", "default": ["blue", "green"]},
            "state_path": {"type": "path"},
            "state": {"type": "dict"},
            "lock_path": {"type": "path"},
            "lock_token": {"type": "str", "no_log": True},
        },
        required_one_of=[("metrics_urls", "edge")],
        mutually_exclusive=[("metrics_urls", "edge")],
        required_together=[("lock_path", "lock_token"), ("state_path", "state")],
        supports_check_mode=True,
    )
    params = module.params
    if not 0 < params["interval_seconds"] <= 600:
        module.fail_json(msg="interval_seconds: %s; give more than 0 and at most 600 seconds (canary.interval_seconds)"
                             % params["interval_seconds"])
    lock_path = None if module.check_mode else params["lock_path"]
    if lock_path and not touch(lock_path, params["lock_token"]):
        module.fail_json(msg="the stack lock %s is no longer this run's (it was taken over or removed); nothing was "
                             "judged or changed. The canary keeps its weight: rerun promote.yml -e mode=auto to "
                             "resume the rollout." % lock_path)
    if params["state"] is not None and not module.check_mode:
        try:
            save(params["state_path"], params["state"], module.atomic_move)
        except Exception as exc:  # atomic_move raises a bare Exception naming the paths
            module.fail_json(msg="cannot save the rollout's state in %s: %s" % (params["state_path"], exc))
    since = params["since"]
    started = time.time()
    if not 0 <= params["warm_up_seconds"] <= 600:
        module.fail_json(msg="warm_up_seconds: %s; give 0 to 600 seconds" % params["warm_up_seconds"])
    wait = params["warm_up_seconds"] if since is None else max(0.0, since + params["interval_seconds"] - started)
    with KeepAlive(lock_path, params["lock_token"]) as keeper:
        time.sleep(wait)
    if keeper.lost:
        module.fail_json(msg="the stack lock %s was lost while waiting for the interval; nothing was judged or "
                             "changed. Rerun promote.yml -e mode=auto to resume the rollout." % lock_path)
    now = time.time()
    try:
        slots = read_slots(params, since, now)
    except (HttpError, MetricsError, EdgeError, OSError, ValueError) as exc:
        module.fail_json(msg="cannot read the slots' traffic, so the canary cannot be judged (nothing was changed; "
                             "the canary keeps its weight): %s" % exc)
    module.exit_json(changed=False, taken_at=now, waited_seconds=round(time.time() - started, 3), slots=slots)


if __name__ == "__main__":
    main()
