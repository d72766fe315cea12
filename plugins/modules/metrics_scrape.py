#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: metrics_scrape
short_description: Measure one app slot's traffic over a window from its Prometheus metrics
version_added: 0.1.0
description:
  - Scrapes the SwiftDeploy app's C(/metrics) of one slot (stable or canary) and returns the
    traffic over a window, never totals since the app started - requests, requests per second,
    5xx errors, error rate and p99 latency - as the canary policy expects them.
  - With O(window_seconds=0) the window runs from the sample the previous run kept in
    O(state_path) to now. With O(window_seconds) above 0 the module scrapes, waits that long,
    and scrapes again.
  - Requests to C(/metrics), C(/healthz) and C(/chaos) are probes and control calls, not
    traffic, and are never counted.
  - When the app restarted within the window (its uptime or a counter went down), the new
    process's counts are the window, as Prometheus' C(increase) function takes them; RV(window.counter_reset)
    says so. No figure is ever negative.
  - Runs on the managed host with nothing but Python's standard library.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - ansible.builtin.files
options:
  url:
    description:
      - The slot's metrics URL as the managed host reaches it, such as
        C(http://127.0.0.1:8082/slots/blue/metrics).
      - Proxy settings from the environment are used, except for loopback addresses.
    type: str
    required: true
  window_seconds:
    description:
      - V(0) compares with the previous sample kept in O(state_path); the first run has
        nothing to compare with and returns an empty window with RV(previous_found=false).
      - Above V(0), scrape, wait this many seconds, and scrape again.
    type: float
    default: 0
  state_path:
    description:
      - The JSON file on the managed host where the sample of each run is kept for the next.
        Required when O(window_seconds=0); optional otherwise, and then the newer sample is
        kept there too.
      - Use one file per slot. A file holding a sample of another URL, or one that cannot be
        parsed, counts as no previous sample and is replaced.
      - Missing parent directories are created. The file is replaced atomically and gets mode
        C(0640), or O(mode), O(owner) and O(group) when given.
    type: path
  use_history:
    description:
      - With O(window_seconds) above 0, first ask the app for its counters as they were
        O(window_seconds) ago (C(<url>?ago=<window_seconds>)); the SwiftDeploy app keeps a
        snapshot of its counters every second for ten minutes. The window is then the last
        O(window_seconds) (up to a second more) without waiting, between two real sets of
        counters of the same process. When the app has no snapshot that old (it started less than
        O(window_seconds) ago) or does not answer such a query, the module scrapes, waits
        O(window_seconds) and scrapes again. RV(window_source) says which happened.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each scrape to answer.
    type: float
    default: 5
attributes:
  check_mode:
    support: full
    details:
      - Scrapes and computes the window, but does not write O(state_path), so the next run
        still compares with the sample kept before.
  diff_mode:
    support: N/A
    details:
      - Only the state file is written, and it is bookkeeping, not configuration.
  idempotent:
    support: full
    details:
      - Never reports a change. With O(window_seconds=0) each run replaces the kept sample with
        its own, so what a run returns depends on when the run before it was.
  platform:
    support: full
    platforms: posix
notes:
  - The p99 is what Prometheus' C(histogram_quantile) function gives for 0.99 over the window's
    increase of the latency histogram, with linear interpolation inside a bucket; see
    C(docs/metrics.md) in the collection for the exact definition.
  - Scrape each slot separately and keep one O(state_path) per slot; the figures of both slots
    add up to the service's.
seealso:
  - module: swiftdeploy.stack.opa_decision_info
    description: Decides on a canary's promotion from RV(window).
"""

EXAMPLES = r"""
- name: Measure the canary slot since the previous status run
  swiftdeploy.stack.metrics_scrape:
    url: "http://127.0.0.1:8082/slots/green/metrics"
    state_path: "{{ swiftdeploy_project_dir }}/.metrics/green.json"
  register: canary_traffic

- name: Report the first run's baseline
  ansible.builtin.debug:
    msg: "{{ canary_traffic.message }}"
  when: not canary_traffic.previous_found

- name: Watch the canary slot for 30 seconds before deciding on its promotion
  swiftdeploy.stack.metrics_scrape:
    url: "http://127.0.0.1:8082/slots/green/metrics"
    window_seconds: 30
  register: canary_traffic

- name: May the canary be promoted?
  swiftdeploy.stack.opa_decision_info:
    domain: canary
    engine: sidecar
    url: "http://127.0.0.1:8181"
    input:
      metrics: "{{ canary_traffic.window }}"
      thresholds: "{{ swiftdeploy_stack.policy.thresholds }}"
  register: canary_gate
"""

RETURN = r"""
window:
  description:
    - The slot's traffic over the window. Application requests only - C(/metrics),
      C(/healthz) and C(/chaos) are not counted.
    - Without a previous sample, requests and errors are 0 and every rate is null.
  returned: success
  type: dict
  contains:
    requests:
      description: Requests in the window.
      type: int
      sample: 80
    req_per_s:
      description: Requests per second; null for a window of 0 seconds.
      type: float
      sample: 2.67
    errors:
      description: Requests answered with a 5xx status.
      type: int
      sample: 20
    error_rate_percent:
      description: 100 * errors / requests; null when there were no requests.
      type: float
      sample: 25.0
    p99_latency_ms:
      description: The 99th percentile of the window's latencies in milliseconds, as Prometheus'
        histogram_quantile computes it; null when there were no requests.
      type: float
      sample: 9.9
    window_seconds:
      description: Seconds between the two samples (0 when there is no previous sample).
      type: float
      sample: 30.004
    counter_reset:
      description: Whether the app restarted within the window; the figures then count from
        the restart.
      type: bool
      sample: false
    latency_buckets:
      description: The window's cumulative latency histogram, as [upper bound, count] pairs with
        the bound as Prometheus writes it, to merge the windows of several slots.
      type: list
      elements: list
      sample: [["0.005", 78], ["0.01", 80], ["+Inf", 80]]
sample:
  description: The newest sample.
  returned: success
  type: dict
  contains:
    taken_at:
      description: When it was taken, in seconds since the epoch.
      type: float
      sample: 1778013291.123
    uptime:
      description: The app's uptime in seconds.
      type: float
      sample: 3600.5
    mode:
      description: The app's mode, V(stable) or V(canary).
      type: str
      sample: canary
    chaos:
      description: The chaos injected into the app, V(none), V(slow) or V(error).
      type: str
      sample: none
    version:
      description: The app's version.
      type: str
      sample: 2.0.0
window_source:
  description:
    - Where the window starts. V(previous) - the sample kept in O(state_path) (O(window_seconds=0));
      V(history) - the app's own snapshot of O(window_seconds) ago (O(use_history));
      V(waited) - a scrape this run took O(window_seconds) before the last; V(none) - no sample
      to compare with.
  returned: success
  type: str
  sample: history
previous_found:
  description: Whether there was a sample to compare with; false on the first run with
    O(window_seconds=0).
  returned: success
  type: bool
  sample: true
message:
  description: One line saying what the window holds, or why it is empty.
  returned: success
  type: str
  sample: "80 requests in 30.0 s (2.67/s), 20 errors (25.00%), p99 9.9 ms"
"""

import math

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import MetricsError, empty_window, window
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics_store import (
    describe,
    measure_windows,
    read_state,
    scrape,
    write_state,
)


def check_options(module):
    params = module.params
    for name in ("window_seconds", "timeout"):
        if not math.isfinite(params[name]):
            module.fail_json(msg="%s must be a finite number of seconds, got %s" % (name, params[name]))
    if params["window_seconds"] < 0:
        module.fail_json(msg="window_seconds must be 0 (compare with the sample kept in state_path) or a "
                             "positive number of seconds to wait between two scrapes, got %g"
                             % params["window_seconds"])
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds, got %g" % params["timeout"])
    if params["window_seconds"] == 0 and not params["state_path"]:
        module.fail_json(msg="state_path is required when window_seconds is 0: the previous sample is kept "
                             "there; or set window_seconds to scrape twice, that many seconds apart")


def main():
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "window_seconds": {"type": "float", "default": 0},
            "state_path": {"type": "path"},
            "use_history": {"type": "bool", "default": True},
            "timeout": {"type": "float", "default": 5},
        },
        supports_check_mode=True,
        add_file_common_args=True,
    )
    check_options(module)
    url, path = module.params["url"], module.params["state_path"]
    wait = module.params["window_seconds"]

    if wait > 0:
        measured = measure_windows([url], wait, module.params["use_history"], module.params["timeout"])[url]
        if "error" in measured:
            module.fail_json(msg=measured["error"])
        figures, source, current, message = (measured["window"], measured["window_source"], measured["current"],
                                             measured["message"])
        previous_found = True
    else:
        try:
            previous, missing = read_state(path, url)
        except OSError as exc:
            module.fail_json(msg="cannot read the previous sample from %s: %s" % (path, exc.strerror or exc))
        try:
            current = scrape(url, module.params["timeout"])
        except (HttpError, MetricsError) as exc:
            module.fail_json(msg=str(exc))
        previous_found = previous is not None
        source = "previous" if previous_found else "none"
        if previous is None:
            figures = empty_window()
            if module.check_mode:
                message = "%s, and check mode does not keep this one: the window is empty" % missing
            else:
                message = "%s: this one is kept as the baseline and the window is empty; run again to measure" % missing
        else:
            figures = window(previous, current)
            message = describe(figures)

    if path and not module.check_mode:
        try:
            write_state(path, url, current, move=module.atomic_move)
            # The sample is bookkeeping (changed stays false); owner, group and mode as asked.
            module.set_fs_attributes_if_different(module.load_file_common_arguments(module.params, path=path), False)
        except OSError as exc:
            module.fail_json(msg="cannot keep the sample in %s: %s" % (path, exc.strerror or exc))

    module.exit_json(changed=False, window=figures, sample=current.summary(), window_source=source,
                     previous_found=previous_found, message=message)


if __name__ == "__main__":
    main()
