#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stack_lock
short_description: Take or release the lock that keeps two runs off one stack
version_added: 0.1.0
description:
  - A lock file on the managed host (for example C(<project>/.swiftdeploy.lock)) whose existence
    means that one run owns the stack. O(state=acquired) creates it atomically
    (C(O_CREAT|O_EXCL)) and returns a fresh RV(token); O(state=released) removes it, but only for
    the run that presents that token.
  - When another run holds the lock, O(state=acquired) waits up to O(wait) seconds, then fails
    with a message naming the holder (user, playbook, AWX job, host, since when).
  - A lock older than O(ttl) seconds is stale (its run died without releasing it) and is broken;
    its holder is returned in RV(broken_stale) so that the playbook can record it. Breaking is
    race-free; two runs breaking the same stale lock cannot remove each other's fresh one.
  - The directory of O(path) is created (mode C(0750)) when missing.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  path:
    description: The lock file, for example C(<project>/.swiftdeploy.lock).
    type: path
    required: true
  state:
    description:
      - V(acquired) takes the lock, V(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  holder:
    description:
      - Who takes the lock, written into the lock file and shown to a run that finds it taken.
        Keys C(user) (by default the remote user), C(playbook) and C(awx_job_id) are shown in
        messages; other keys with string or number values are kept. Null values are dropped.
      - The module adds C(host), C(pid) and C(since). The pid is the module's own process, gone
        once the task ends; it only helps to match logs.
      - Only used with O(state=acquired).
    type: dict
    default: {}
  wait:
    description:
      - Seconds to wait for another run's lock to be released before failing; V(0) fails at once.
      - Only used with O(state=acquired).
    type: int
    default: 0
  ttl:
    description:
      - Age in seconds after which a lock is stale and may be broken. Keep it longer than the
        longest run.
      - Only used with O(state=acquired).
    type: int
    default: 3600
  token:
    description:
      - With O(state=released), the RV(token) that O(state=acquired) returned; required to
        release a lock. A wrong or missing token fails and leaves the lock in place.
      - With O(state=acquired), the token of a lock this run already holds, to confirm it
        without waiting (C(changed) is false); when the token does not match, it is ignored.
    type: str
  read:
    description:
      - Files to read once the lock is held, returned in RV(files). A run reads the stack's live
        state here so that what it reads cannot change before it releases the lock, and saves
        the round trip of a separate read.
      - Only used with O(state=acquired). A missing file is returned as null; a file larger than
        1 MiB or not UTF-8 fails the task, naming the file.
    type: list
    elements: path
    default: []
  host:
    description:
      - Once the lock is held, also measure the host and ask it what the gates need, in the same
        round trip, exactly as M(swiftdeploy.stack.host_resources) does with the same options;
        the result is in RV(host). Saves a deploy or a promotion one round trip.
      - Only used with O(state=acquired). When the measurement fails, the lock is released and
        the task fails.
    type: dict
    suboptions:
      path:
        description: As O(swiftdeploy.stack.host_resources#module:path); empty means the Docker data root.
        type: path
      images:
        description: As O(swiftdeploy.stack.host_resources#module:images).
        type: list
        elements: str
        default: []
      health_urls:
        description: As O(swiftdeploy.stack.host_resources#module:health_urls).
        type: list
        elements: str
        default: []
      metrics_urls:
        description:
          - App slots' metrics URLs to measure over their last O(host.window_seconds), as
            M(swiftdeploy.stack.metrics_scrape) does with
            O(swiftdeploy.stack.metrics_scrape#module:window_seconds) and its default
            O(swiftdeploy.stack.metrics_scrape#module:use_history) (from the app's own snapshot of
            that long ago, or waiting once for all of them). Judging a canary then needs no round
            trip of its own. Results are in C(metrics) of RV(host).
        type: list
        elements: str
        default: []
      window_seconds:
        description: The window for O(host.metrics_urls); required with them.
        type: float
        default: 0
attributes:
  check_mode:
    support: full
    details:
      - Takes and releases nothing, but reports whether the lock is free. A lock held by another
        run still fails (after O(wait)), so a check run tells the truth about a real run.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - O(state=released) is idempotent. O(state=acquired) changes once; it is idempotent when the
        run passes its own O(token) back.
  platform:
    support: full
    platforms: posix
notes:
  - Needs a local filesystem on the managed host; C(O_EXCL) and C(flock) are not reliable over NFS.
  - To clear the lock of a run that is certainly dead, remove the file named in the message.
  - See C(docs/audit-trail.md) in the collection for the lock file's format.
seealso:
  - module: swiftdeploy.stack.host_resources
"""

EXAMPLES = r"""
- name: Take the stack lock
  swiftdeploy.stack.stack_lock:
    path: "{{ swiftdeploy_project_path }}/.swiftdeploy.lock"
    holder:
      user: "{{ lookup('ansible.builtin.env', 'USER') }}"
      playbook: deploy.yml
      awx_job_id: "{{ awx_job_id | default(none) }}"
    wait: "{{ swiftdeploy_lock_wait | default(0) }}"
  register: swiftdeploy_lock

- name: Deploy while holding the lock
  block:
    - name: Record how long this run waited for the lock
      swiftdeploy.stack.audit_event:
        path: "{{ swiftdeploy_project_path }}/history.jsonl"
        event: lock_wait
        details:
          waited_seconds: "{{ swiftdeploy_lock.waited_seconds }}"
      when: swiftdeploy_lock.waited_seconds > 0
  always:
    - name: Release the stack lock
      swiftdeploy.stack.stack_lock:
        path: "{{ swiftdeploy_project_path }}/.swiftdeploy.lock"
        state: released
        token: "{{ swiftdeploy_lock.token }}"
"""

RETURN = r"""
token:
  description:
    - The secret that releases the lock; register it and pass it to O(state=released). In check
      mode a token that matches nothing.
  returned: when O(state=acquired)
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015
holder:
  description:
    - With O(state=acquired), what this run wrote into the lock file (or would write, in check
      mode). With O(state=released), the holder of the lock that was released; null when there
      was no lock.
  returned: always
  type: dict
  sample:
    user: deploy
    playbook: deploy.yml
    awx_job_id: "42"
    host: web1
    pid: 4242
    since: "2026-11-27T03:00:00Z"
free:
  description: Whether the lock could be taken (no lock, a stale one, or this run's own).
  returned: when O(state=acquired)
  type: bool
  sample: true
waited_seconds:
  description: How long this run waited for another run's lock; 0 when it was free.
  returned: when O(state=acquired)
  type: float
  sample: 12.5
files:
  description:
    - One entry per file named in O(read), in the same order, so a playbook finds a file by its
      position whatever C(~) expanded to. C(content) is null for a file that does not exist.
  returned: when O(state=acquired)
  type: list
  elements: dict
  contains:
    path:
      description: The file read, C(~) expanded.
      type: str
    content:
      description: Its text; null when it does not exist.
      type: str
  sample:
    - path: /root/.swiftdeploy/shop/state.json
      content: '{"mode": "stable", "stable": "blue"}'
host:
  description:
    - What M(swiftdeploy.stack.host_resources) returns for O(host) (C(resources),
      C(images_missing) and C(health)), measured while the lock is held.
    - With O(host.metrics_urls), also C(metrics), one entry per URL - C(window), C(window_source)
      and C(message) as M(swiftdeploy.stack.metrics_scrape) returns them, or C(error) for a slot
      that could not be measured.
  returned: when O(state=acquired) and O(host) is given
  type: dict
  sample:
    resources: {disk_free_gb: 81.52, disk_path: /var/lib/docker, cpu_load_1m: 0.42, cpu_count: 2,
                mem_free_percent: 71.3, mem_total_mb: 24105.6}
    images_missing: []
    health: {"http://127.0.0.1:8082/slots/blue/healthz": {ok: true, status: null, error: null}}
    metrics:
      "http://127.0.0.1:8082/slots/green/metrics":
        window: {requests: 398, req_per_s: 76.5, errors: 0, error_rate_percent: 0.0, p99_latency_ms: 4.9,
                 window_seconds: 5.2, counter_reset: false, latency_buckets: [["0.005", 398], ["+Inf", 398]]}
        window_source: history
        message: "398 requests in 5.2 s (76.54/s), 0 errors (0.00%), p99 4.9 ms"
      "http://127.0.0.1:8082/slots/blue/metrics": {error: "http://127.0.0.1:8082/slots/blue/metrics answered HTTP 404 Not Found"}
broken_stale:
  description:
    - The holder of a stale lock that was broken (in check mode, that would be broken), with
      C(age_seconds); null when none was.
  returned: when O(state=acquired)
  type: dict
  sample:
    user: deploy
    playbook: deploy.yml
    host: web1
    pid: 4242
    since: "2026-11-27T01:00:00Z"
    age_seconds: 7260
"""

import os
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._host import measure
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics_store import measure_windows
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import (
    LockError,
    acquire,
    option_problem,
    release,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._session import actor_of


READ_LIMIT = 1024 * 1024


def read_files(paths):
    """[{path, content (text or None)}] of small text files, in order; OSError/ValueError name
    the file."""
    files = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read(READ_LIMIT + 1)
        except FileNotFoundError:
            files.append({"path": path, "content": None})
            continue
        if len(data) > READ_LIMIT:
            raise ValueError("read: %s is larger than 1 MiB; it is not a file this module should read" % path)
        try:
            files.append({"path": path, "content": data.decode("utf-8")})
        except UnicodeDecodeError:
            raise ValueError("read: %s is not UTF-8 text" % path)
    return files


def give_back(module, path, result):
    """Release a lock this call has just taken, because the call fails after all."""
    if not module.check_mode:
        release(path, result["token"])


def measure_host(module, path, result):
    host = module.params["host"]
    if host["path"] and not os.path.exists(host["path"]):
        give_back(module, path, result)
        module.fail_json(msg="host.path: %s does not exist on this host; give the Docker data root "
                             "(docker info --format '{{.DockerRootDir}}'); the lock was not kept." % host["path"])
    if host["metrics_urls"] and not (0 < host["window_seconds"] < float("inf")):
        give_back(module, path, result)
        module.fail_json(msg="host.window_seconds: %s; give the seconds of traffic to measure the metrics_urls over "
                             "(for example canary.window_seconds); the lock was not kept." % host["window_seconds"])
    try:
        found = measure(host["path"], host["images"], host["health_urls"])
    except (OSError, ValueError) as exc:
        give_back(module, path, result)
        module.fail_json(msg="cannot measure host resources: %s; the lock was not kept." % exc)
    if host["metrics_urls"]:
        found["metrics"] = dict((url, dict((key, value) for key, value in measured.items() if key != "current"))
                                for url, measured in measure_windows(host["metrics_urls"], host["window_seconds"]).items())
    return found


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
            "holder": {"type": "dict", "default": {}},
            "wait": {"type": "int", "default": 0},
            "ttl": {"type": "int", "default": 3600},
            # Not a credential: the token only stops one run from releasing another's lock, and
            # it must stay readable in the registered result.
            "token": {"type": "str", "no_log": False},
            "read": {"type": "list", "elements": "path", "default": []},
            "host": {"type": "dict", "options": {
                "path": {"type": "path"},
                "images": {"type": "list", "elements": "str", "default": []},
                "health_urls": {"type": "list", "elements": "str", "default": []},
                "metrics_urls": {"type": "list", "elements": "str", "default": []},
                "window_seconds": {"type": "float", "default": 0},
            }},
        },
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    problem = option_problem(params["wait"], params["ttl"])
    if problem:
        module.fail_json(msg=problem)
    try:
        if params["state"] == "acquired":
            result = acquire(path, actor_of(params["holder"]), host=socket.gethostname(), pid=os.getpid(),
                             wait=params["wait"], ttl=params["ttl"], token=params["token"],
                             check_mode=module.check_mode)
            try:
                result["files"] = read_files(params["read"])
            except (OSError, ValueError) as exc:
                give_back(module, path, result)
                module.fail_json(msg="%s; the lock was not kept." % (
                    exc if isinstance(exc, ValueError) else "read: cannot read %s: %s" % (exc.filename, exc.strerror)))
            if params["host"] is not None:
                result["host"] = measure_host(module, path, result)
        else:
            result = release(path, params["token"], check_mode=module.check_mode)
    except LockError as exc:
        extra = {"holder": exc.holder}
        if params["state"] == "acquired":
            extra["waited_seconds"] = exc.waited_seconds
        module.fail_json(msg=str(exc), **extra)
    except OSError as exc:
        module.fail_json(msg="cannot %s the lock %s: %s; check that its directory is writable by "
                             "the remote user." % ("take" if params["state"] == "acquired"
                                                   else "release", path, exc.strerror or exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
