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
  - A lock file on the managed host, one per stack on the host (for example
    C(/run/lock/swiftdeploy/<stack>.lock)), whose existence means that one run owns the stack.
    O(state=acquired) creates it atomically (C(O_CREAT|O_EXCL)) with the run's O(token) (or a
    fresh RV(token)); O(state=released) removes it, but only for the run that presents that token.
  - The file's modification time is the holder's heartbeat. Every call that presents the token
    refreshes it, and modules that wait (this one while it measures a canary's window,
    M(swiftdeploy.stack.stack_converge) while slots start) refresh it every few seconds.
  - When another run holds the lock, O(state=acquired) waits up to O(wait) seconds, then fails
    with a message naming the holder (user, playbook, AWX job, host, since when), and returns
    its RV(lock_id).
  - A dead holder's lock is taken over, and its holder returned in RV(taken_over) with the
    reason, so that the playbook can record it and repair the stack. A holder is dead when its
    heartbeat is older than O(stale_after) seconds, when its C(since) or heartbeat lies more
    than 30 s in the future (a broken clock or a forged file), when the lock is older than
    O(ttl) whatever its heartbeat, or when the action plugin found its controller's playbook
    process gone (O(take_over)) and nothing has refreshed the lock for 10 s (a module that
    playbook started may still be finishing on the host). Taking over is race-free; two runs taking over the same dead
    lock cannot remove each other's fresh one.
  - The action plugin (on the controller) adds the controller's identity (host name, boot id,
    and the pid of the C(ansible-playbook) process) to the lock. When the lock is held by a
    playbook of the same controller whose process is gone (killed, cancelled), it takes the lock
    over as soon as the lock has been quiet for 10 s, instead of waiting for O(stale_after).
  - The directory of O(path) is created when missing, mode C(2770) with the group C(docker)
    when there is one, so that every user who deploys shares the stack's lock; a directory
    that is a symbolic link is refused.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.progress
options:
  path:
    description: The lock file, for example C(/run/lock/swiftdeploy/<stack>.lock).
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
      - The module adds C(host), C(pid), C(since) and C(controller). The pid is the module's own
        process, gone once the task ends; it only helps to match logs.
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
      - Age in seconds after which a lock is taken over whatever its heartbeat, a backstop for a
        run that hangs while it keeps its lock alive. Keep it longer than the longest run.
      - Only used with O(state=acquired).
    type: int
    default: 3600
  stale_after:
    description:
      - Seconds without a heartbeat after which the holder counts as dead and its lock is taken
        over. At least 10 (a holder refreshes it every 5 s while it waits).
      - Only used with O(state=acquired).
    type: int
    default: 90
  token:
    description:
      - The run's secret. With O(state=acquired), the lock is taken with it when free (the
        role generates it on the controller, so it never appears in a result), and a lock this
        run already holds is confirmed and its heartbeat refreshed (C(changed) is false).
        Without it, O(state=acquired) makes one and returns it in RV(token).
      - With O(state=released), required to release a lock. A wrong or missing token fails and
        leaves the lock in place.
      - Kept out of every output (C(no_log)); the lock file keeps only its SHA-256.
    type: str
  controller:
    description:
      - The controller running the play, written into the lock as C(controller). Set by the
        action plugin; do not set it by hand.
    type: dict
  take_over:
    description:
      - The RV(lock_id) of a lock to take over because its holder is known to be dead. Set by
        the action plugin when the holder is a playbook process of this controller that is gone;
        a lock with another id (a new holder since) is judged as usual.
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
        round trip, exactly as M(swiftdeploy.stack.host_resources_info) does with the same options;
        the result is in RV(host). Saves a deploy or a promotion one round trip.
      - Only used with O(state=acquired). When the measurement fails, the lock is released and
        the task fails.
    type: dict
    suboptions:
      path:
        description: As O(swiftdeploy.stack.host_resources_info#module:path); empty means the Docker data root.
        type: path
      images:
        description: As O(swiftdeploy.stack.host_resources_info#module:images).
        type: list
        elements: str
        default: []
      health_urls:
        description: As O(swiftdeploy.stack.host_resources_info#module:health_urls).
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
      edge:
        description:
          - Each app slot's traffic as nginx saw it over the last O(host.edge.window_seconds),
            read from the stack's edge log (one line per public request, C(docs/metrics.md),
            "At the edge"), so that an app without C(/metrics) can be judged. Results are in
            C(edge) of RV(host).
          - With O(host.edge.wait_for_canary), a canary whose container started less than the
            window ago is waited for until it is that old, as a canary is on the app's metrics;
            its window is then its whole life.
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
            description: The compose project directory, to find the containers of O(host.edge.services).
            type: path
          services:
            description:
              - Slot name to compose service (for example C(green) to C(app-green)). A slot whose
                container started within the window is measured over its life only.
            type: dict
            default: {}
          wait_for_canary:
            description:
              - Wait until the canary (the slot named by C(canary) in the first file of O(read), the
                stack's C(state.json)) is as old as the window, as described above.
            type: bool
            default: false
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
  - A dead run's lock needs no manual step; removing the file named in the message by hand still works.
  - See C(docs/audit-trail.md) in the collection for the lock file's format.
seealso:
  - module: swiftdeploy.stack.host_resources_info
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
      no_log: true
"""

RETURN = r"""
token:
  description:
    - The secret that releases the lock, when this call made it (no O(token) given); register
      it and pass it to O(state=released). In check mode a token that matches nothing. Null when
      O(token) was given. A playbook that must not show it passes its own O(token).
  returned: when O(state=acquired)
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015
lock_id:
  description:
    - The SHA-256 of the holder's token, which names that very lock for O(take_over). It does
      not release or refresh the lock.
  returned: when the lock is held by another run
  type: str
  sample: 4c9184f37cff01bcdc32dc486ec36961f3f9c1e7e8fd3b5d5e5f1b2b1ba9b1a4
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
    - What M(swiftdeploy.stack.host_resources_info) returns for O(host) (C(resources),
      C(images_missing), C(image_ids) and C(health)), measured while the lock is held.
    - With O(host.edge), also C(edge) - C(slots) (each slot's figures as in C(metrics)' C(window)),
      C(window_seconds), C(window_source) (C(edge), or C(edge-waited) when a slot was waited for),
      C(waited_seconds), C(life_starts) and C(messages) - or C(edge.error) when it could not be measured.
    - With O(host.metrics_urls), also C(metrics), one entry per URL - C(window), C(window_source)
      and C(message) as M(swiftdeploy.stack.metrics_scrape) returns them, or C(error) for a slot
      that could not be measured.
  returned: when O(state=acquired) and O(host) is given
  type: dict
  sample:
    resources: {disk_free_gb: 81.52, disk_path: /var/lib/docker, cpu_load_1m: 0.42, cpu_count: 2,
                mem_free_percent: 71.3, mem_total_mb: 24105.6}
    images_missing: []
    image_ids: {"nginx:latest": "sha256:40516eb38fa6c5a9d0a5f2ab4e6d8f1b8f6f3a3bd0a1e0b4b3c86b2d8e2e7f1c"}
    health: {"http://127.0.0.1:8082/slots/blue/healthz": {ok: true, status: null, error: null}}
    metrics:
      "http://127.0.0.1:8082/slots/green/metrics":
        window: {requests: 398, req_per_s: 76.5, errors: 0, error_rate_percent: 0.0, p99_latency_ms: 4.9,
                 window_seconds: 5.2, counter_reset: false, latency_buckets: [["0.005", 398], ["+Inf", 398]]}
        window_source: history
        message: "398 requests in 5.2 s (76.54/s), 0 errors (0.00%), p99 4.9 ms"
      "http://127.0.0.1:8082/slots/blue/metrics": {error: "http://127.0.0.1:8082/slots/blue/metrics answered HTTP 404 Not Found"}
    edge:
      slots:
        green: {requests: 398, req_per_s: 13.3, errors: 0, error_rate_percent: 0.0, p99_latency_ms: 4.9,
                window_seconds: 30.0, counter_reset: false, latency_buckets: [["0.005", 398], ["+Inf", 398]]}
      window_seconds: 30.0
      window_source: edge
      waited_seconds: 0.0
      life_starts: {green: 1765100000.5}
      messages: {green: "398 requests in 30.0 s (13.27/s), 0 errors (0.00%), p99 4.9 ms"}
taken_over:
  description:
    - The holder of a dead run's lock that was taken over (in check mode, that would be), with
      C(reason), C(age_seconds) and C(heartbeat_age_seconds); null when none was.
  returned: when O(state=acquired)
  type: dict
  sample:
    user: deploy
    playbook: deploy.yml
    host: web1
    pid: 4242
    since: "2026-11-27T01:00:00Z"
    controller: {host: ctl1, boot_id: 0c6b7c8e-1f7e-4c59-9a55-0e4c1d3b2a10, pid: 31337, pid_start: 123456}
    age_seconds: 260
    heartbeat_age_seconds: 130
    reason: no heartbeat for 2 min (stale after 90 s)
"""

import functools
import json
import os
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _edge as edge_log
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as progress
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import open_engine

from ansible_collections.swiftdeploy.stack.plugins.module_utils._host import measure
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics_store import measure_windows
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import (
    KeepAlive,
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
        release(path, result["token"] or module.params["token"])


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
    if host["edge"]:
        found["edge"] = measure_edge(module, host["edge"], result["files"])
    if host["metrics_urls"]:
        found["metrics"] = dict((url, dict((key, value) for key, value in measured.items() if key != "current"))
                                for url, measured in measure_windows(host["metrics_urls"], host["window_seconds"]).items())
    return found


def canary_of(files):
    """The canary slot named by the state read first, or None."""
    try:
        state = json.loads(files[0]["content"]) if files and files[0]["content"] else {}
    except ValueError:
        return None
    return state.get("canary") if isinstance(state, dict) else None


def measure_edge(module, edge, files):
    """The slots' edge figures, or {error} when the log or a slot's start cannot be read."""
    engine = functools.partial(open_engine, runner=functools.partial(module.run_command, check_rc=False),
                               docker=module.get_bin_path("docker"))
    return edge_log.measure_option(edge, engine, canary_of(files), check_mode=module.check_mode)


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
            "holder": {"type": "dict", "default": {}},
            "wait": {"type": "int", "default": 0},
            "ttl": {"type": "int", "default": 3600},
            # Whoever has it may release or refresh the run's lock.
            "token": {"type": "str", "no_log": True},
            "stale_after": {"type": "int", "default": 90},
            "controller": {"type": "dict"},
            "take_over": {"type": "str"},
            "read": {"type": "list", "elements": "path", "default": []},
            "host": {"type": "dict", "options": {
                "path": {"type": "path"},
                "images": {"type": "list", "elements": "str", "default": []},
                "health_urls": {"type": "list", "elements": "str", "default": []},
                "metrics_urls": {"type": "list", "elements": "str", "default": []},
                "window_seconds": {"type": "float", "default": 0},
                "edge": {"type": "dict", "options": edge_log.ARGUMENT_SPEC},
            }},
            **progress.ARGUMENT_SPEC
        },
        supports_check_mode=True,
    )
    params = module.params
    progress.start(params["progress_path"])
    path = params["path"]
    problem = option_problem(params["wait"], params["ttl"], stale_after=params["stale_after"])
    if problem:
        module.fail_json(msg=problem)
    try:
        if params["state"] == "acquired":
            result = acquire(path, actor_of(params["holder"]), host=socket.gethostname(), pid=os.getpid(),
                             wait=params["wait"], ttl=params["ttl"], token=params["token"],
                             stale_after=params["stale_after"], controller=params["controller"],
                             take_over=params["take_over"], check_mode=module.check_mode)
            progress.clear()  # the lock's wait, if there was one
            try:
                result["files"] = read_files(params["read"])
            except (OSError, ValueError) as exc:
                give_back(module, path, result)
                module.fail_json(msg="%s; the lock was not kept." % (
                    exc if isinstance(exc, ValueError) else "read: cannot read %s: %s" % (exc.filename, exc.strerror)))
            if params["host"] is not None:
                # A canary's window may be waited for: keep the lock just taken alive meanwhile.
                with KeepAlive(None if module.check_mode else path, result["token"]):
                    result["host"] = measure_host(module, path, result)
            if params["token"]:
                # The caller has it; returned, Ansible would only show it masked.
                result["token"] = None
        else:
            result = release(path, params["token"], check_mode=module.check_mode)
    except LockError as exc:
        extra = {"holder": exc.holder}
        if params["state"] == "acquired":
            extra["waited_seconds"] = exc.waited_seconds
            if exc.lock_id:
                extra["lock_id"] = exc.lock_id
        module.fail_json(msg=str(exc), **extra)
    except OSError as exc:
        module.fail_json(msg="cannot %s the lock %s: %s; check that its directory is writable by "
                             "the remote user." % ("take" if params["state"] == "acquired"
                                                   else "release", path, exc.strerror or exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
