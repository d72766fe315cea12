#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stack_converge
short_description: Bring a stack's compose project to one or more wanted states in one call
version_added: 0.1.0
description:
  - Runs on the Docker host. Each item of O(steps) is one converge of the compose project in
    O(project_path) to a wanted set of files (rendered on the controller, typically nginx.conf
    and docker-compose.yml) and a live state (written as C(state.json)), without dropping a
    request. Steps run in order; a roll-forward is three steps in one call.
  - "One converge, in order: plan (which files differ, which app slots of the state's C(slots)
    are new, changed or gone); write the changed files atomically, C(state.json) last; start the
    new and changed slots with C(docker compose up) and wait until they are healthy (see
    O(slot_port)); switch a running slot whose spec changes only in C(mode) in place (C(SIGHUP)
    makes the app read its mode file again, written with the files; its C(/healthz) through
    O(admin_url) at C(/slots/<slot>/healthz) must then report the new mode; so is a running
    slot that reports another mode than the state names, which a failed switch leaves); bring
    the whole project up when a service is not running or the compose file changed in more than
    the slots just started and those leaving (an nginx or volume change, a new sidecar); reload
    nginx gracefully (C(SIGHUP)) when its configuration changed and wait until its admin listener
    serves the state's C(generation); and only then, after O(drain_seconds), remove the
    containers of slots that left the state."
  - Every changed nginx.conf and compose file of every step is checked before anything is
    written (C(docker compose config); C(nginx -t) with O(nginx_image), by C(docker exec) in the
    stack's running nginx container when there is one, otherwise, and to confirm a refusal, in a
    fresh container of O(nginx_image)); when one fails, the module fails naming the file and the
    tool's message, and nothing is written.
  - A step whose files, state and running services already match does nothing but one
    C(docker compose ps) and one request for the generation nginx serves (which also repairs a
    reload an interrupted run never made).
  - After the last step, waits for O(health_url) when given.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  project_path:
    description:
      - The compose project directory on the Docker host; created (mode C(0750)) when missing.
      - Its C(docker-compose.yml) names the project; its C(state.json) holds the live state.
    type: path
    required: true
  steps:
    description:
      - The wanted states, applied in order; each is one converge.
    type: list
    elements: dict
    required: true
    suboptions:
      files:
        description:
          - The files of this state, by path relative to O(project_path) (for example
            C(nginx/nginx.conf)), each a dict with C(content) (a string) and C(mode) (a quoted
            octal string such as C("0644"); default C("0644")).
          - Missing parent directories are created with mode C(0755). Files of the project that
            are not listed are left alone. C(state.json) may not be listed; it is written from
            O(steps[].state).
        type: dict
        required: true
      state:
        description:
          - The live state, written to C(state.json) (mode C(0640), sorted keys) when it differs.
          - Must have an integer C(generation) (which the nginx.conf of this step serves at
            C(/_swiftdeploy/generation)) and a non-empty C(slots) dict; slot C(X) runs as the
            compose service C(<slot_prefix>X). A slot whose value differs from the one in the
            current C(state.json) is started again; one whose C(mode) alone differs, and whose
            compose service stays the same, switches mode in place without a restart.
        type: dict
        required: true
  nginx_image:
    description: The image C(nginx -t) runs in, the stack's nginx image.
    type: str
    required: true
  nginx_conf:
    description:
      - The path of nginx's configuration among the O(steps[].files). The compose service
        C(nginx) mounts its directory; a changed file is tested and reloaded.
    type: str
    default: nginx/nginx.conf
  nginx_conf_dir:
    description: Where the directory of O(nginx_conf) is mounted in the nginx container.
    type: str
    default: /etc/nginx/swiftdeploy
  slot_prefix:
    description: The compose service of slot C(X) is C(<slot_prefix>X); nginx resolves it by that name.
    type: str
    default: app-
  admin_url:
    description:
      - The base URL of nginx's admin listener as seen from the Docker host, for example
        C(http://127.0.0.1:8082). After a reload, C(<admin_url>/_swiftdeploy/generation) is polled
        until it answers the state's C(generation) (10 s at most).
    type: str
    required: true
  health_url:
    description:
      - After the last step, request this URL until it answers with a 2xx status, for example
        C(http://127.0.0.1:8080/healthz). Not requested in check mode.
    type: str
  health_timeout:
    description: Seconds to wait for O(health_url).
    type: float
    default: 60
  wait_timeout:
    description: Seconds to wait for started containers to be running and healthy.
    type: int
    default: 60
  slot_port:
    description:
      - The port the app listens on inside its container. When given, a starting slot counts as
        healthy as soon as C(http://<container address>:<slot_port><slot_health_path>) answers 2xx
        from the Docker host, without waiting a Docker health-check interval; Docker's own
        health status counts too, so hosts that cannot reach container addresses (rootless
        Docker) still work, a little slower.
    type: int
  slot_health_path:
    description: The app's health path, see O(slot_port).
    type: str
    default: /healthz
  drain_seconds:
    description:
      - Seconds to let requests already sent to a leaving slot finish, after nginx stopped routing
        to it and before its container is stopped (SIGTERM). An app that finishes what it is
        answering on SIGTERM, as the SwiftDeploy app does, needs none (the role passes V(0)).
    type: float
    default: 2
  validate_nginx:
    description:
      - Test a changed O(nginx_conf) with C(nginx -t) before anything is written, in the stack's
        running nginx container (C(docker exec)) or in a fresh container of O(nginx_image).
    type: bool
    default: true
  engine_api:
    description:
      - Inspect, signal, stop and remove containers through the Docker Engine API on its unix
        socket (about 1 ms a call) instead of the docker CLI (10 to 20 ms a call on a quiet host,
        since each starts the CLI, plus a process spawn), when the docker CLI would use that same socket (no
        E(DOCKER_HOST) but a C(unix://) one, no E(DOCKER_CONTEXT), no current context in the
        CLI's configuration). Otherwise, or when false, the docker CLI does it all.
      - C(docker compose) and C(docker exec) always run through the CLI.
    type: bool
    default: true
  history:
    description:
      - Events to append to the stack's history in the same round trip, as
        M(swiftdeploy.stack.audit_event) appends them (same line format, file lock, sync and hash
        chain), and the stack lock to release after them. A run's converge, its record and the
        release of its lock then cost one round trip instead of two.
      - Events with C(when=before) are appended before anything is planned, so they stay in the
        history even when the converge fails (for example the refusal that a roll-back follows).
        Events with C(when=after) are appended once every step has converged, and C(when=changed)
        ones only when the converge changed something. Their C(details) get C(changed), whether
        the converge changed anything.
      - Nothing is appended after a failed converge, and the lock is not released then; the
        playbook releases it.
    type: dict
    suboptions:
      path:
        description: The history file, for example C(<project>/history.jsonl).
        type: path
        required: true
      stack:
        description: The stack's name, recorded in every event.
        type: str
      version:
        description: The app version recorded in every event.
        type: str
      mode:
        description: The mode recorded in events that do not give their own.
        type: str
      actor:
        description:
          - Who caused the events, as for M(swiftdeploy.stack.audit_event)'s
            O(swiftdeploy.stack.audit_event#module:actor); C(user) defaults to the remote user.
        type: dict
      events:
        description: The events, appended in this order within each C(when).
        type: list
        elements: dict
        required: true
        suboptions:
          event:
            description: What happened, as for M(swiftdeploy.stack.audit_event).
            type: str
            required: true
          when:
            description: V(before) the converge, V(after) it, or after it only when it V(changed) something.
            type: str
            choices: [before, after, changed]
            default: after
          mode:
            description: The mode this event concerns; by default O(history.mode).
            type: str
          details:
            description: Anything else worth keeping about the event.
            type: dict
            default: {}
      release_lock:
        description:
          - After the converge and its events, release the stack lock this run holds, as
            M(swiftdeploy.stack.stack_lock) with O(swiftdeploy.stack.stack_lock#module:state=released) would.
        type: dict
        suboptions:
          path:
            description: The lock file.
            type: path
            required: true
          token:
            description: The token that taking the lock returned.
            type: str
            required: true
attributes:
  check_mode:
    support: full
    details:
      - Plans every step, tests the changed files with C(nginx -t) and C(docker compose config),
        and asks C(docker compose ps) and nginx what runs and is served, but writes nothing and
        starts, reloads or removes nothing. RV(actions) lists what would be done.
        O(history) events are returned as they would be appended, and no lock is released.
      - From the second step on, check mode assumes the earlier steps succeeded.
  diff_mode:
    support: full
    details:
      - One diff per changed file and step, C(state.json) included.
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix
requirements:
  - The C(docker) CLI with the compose plugin (v2) on the Docker host.
notes:
  - The compose file is C(docker-compose.yml) in O(project_path); its nginx service is C(nginx).
  - Run it under the stack lock (M(swiftdeploy.stack.stack_lock)); two converges of one project
    at the same time would interleave their steps.
  - See C(docs/converge.md) in the collection for why each step comes where it does.
seealso:
  - module: swiftdeploy.stack.stack_lock
  - module: swiftdeploy.stack.audit_event
  - module: community.docker.docker_compose_v2
"""

EXAMPLES = r"""
- name: Bring the stack to its new state
  swiftdeploy.stack.stack_converge:
    project_path: "{{ swiftdeploy_project_path }}"
    nginx_image: "{{ swiftdeploy_stack.nginx.image }}"
    admin_url: "http://127.0.0.1:{{ swiftdeploy_stack.nginx.admin_port }}"
    health_url: "http://127.0.0.1:{{ swiftdeploy_stack.nginx.port }}/healthz"
    steps:
      - files:
          nginx/nginx.conf:
            content: "{{ lookup('ansible.builtin.template', 'nginx.conf.j2', template_vars={'swiftdeploy_live': live}) }}"
            mode: "0644"
          docker-compose.yml:
            content: "{{ lookup('ansible.builtin.template', 'docker-compose.yml.j2', template_vars={'swiftdeploy_live': live}) }}"
            mode: "0640"
        state: "{{ live }}"
  vars:
    live:
      generation: 4
      mode: canary
      weight: 10
      stable: blue
      canary: green
      slots:
        blue: {image: "app:1.0.0", version: "1.0.0", mode: stable}
        green: {image: "app:1.1.0", version: "1.1.0", mode: canary}
  register: swiftdeploy_converge

- name: Show where the time went
  ansible.builtin.debug:
    msg: "{{ swiftdeploy_converge.actions | map(attribute='action') | zip(swiftdeploy_converge.actions | map(attribute='seconds')) }}"
"""

RETURN = r"""
changed:
  description: Whether a file was written or a container started, reloaded or removed (in check mode, would be).
  returned: always
  type: bool
  sample: true
project_path:
  description: The project directory, absolute.
  returned: always
  type: str
  sample: /root/.swiftdeploy/swiftdeploy
files_changed:
  description: Paths relative to O(project_path) whose content or mode changed in any step, C(state.json) included.
  returned: always
  type: list
  elements: str
  sample: [nginx/nginx.conf, docker-compose.yml, state.json]
generation:
  description: The C(generation) of the last step's state, the routing nginx serves now.
  returned: always
  type: int
  sample: 7
state:
  description: The last step's state, as written to C(state.json).
  returned: always
  type: dict
  sample:
    generation: 7
    mode: stable
    weight: 0
    stable: blue
    canary: null
    slots:
      blue: {image: "app:1.1.0", version: "1.1.0", mode: stable}
steps:
  description: What each step did, in order.
  returned: always
  type: list
  elements: dict
  contains:
    step:
      description: The step's number, from 1.
      type: int
      sample: 1
    changed:
      description: Whether the step wrote or did anything.
      type: bool
      sample: true
    files_changed:
      description: The files this step wrote or chmodded.
      type: list
      elements: str
      sample: [nginx/nginx.conf, state.json]
    slots_started:
      description: Slots started because they were new, changed or not running.
      type: list
      elements: str
      sample: [green]
    slots_switched:
      description: Running slots that switched mode in place (SIGHUP, confirmed by their C(/healthz)).
      type: list
      elements: str
      sample: [green]
    slots_removed:
      description: Compose services whose containers were removed after the drain.
      type: list
      elements: str
      sample: [app-green]
    nginx:
      description: V(reloaded), V(started) (nginx was created or started with this state's configuration) or V(unchanged).
      type: str
      sample: reloaded
  sample:
    - step: 1
      changed: true
      files_changed: [nginx/nginx.conf, docker-compose.yml, state.json]
      slots_started: [green]
      slots_switched: []
      slots_removed: []
      nginx: reloaded
actions:
  description:
    - Everything the module did that takes time, in order, with how long it took. Reads
      (C(docker compose ps), the generation request) are listed too; in check mode the actions
      that were not run say so in C(detail) and take 0 s.
  returned: always
  type: list
  elements: dict
  contains:
    step:
      description: The step's number, from 1; null for the final health wait.
      type: int
      sample: 1
    action:
      description:
        - One of V(plan), V(validate nginx.conf), V(validate compose file), V(write), V(compose ps),
          V(compose services) (only for a compose file that is not block YAML), V(start slots),
          V(compose up), V(reload nginx), V(wait generation), V(check generation), V(switch mode),
          V(drain), V(retire old workers) (a slot that left is stopped no sooner than 0.5 s after
          the reload, for nginx's old workers to stop accepting), V(remove slots), V(wait health).
      type: str
      sample: start slots
    seconds:
      description: Wall time of the action.
      type: float
      sample: 5.71
    detail:
      description: What exactly was done, for example the services or the generation seen.
      type: str
      sample: app-green healthy
  sample:
    - {step: 1, action: plan, seconds: 0.001, detail: "nginx/nginx.conf, docker-compose.yml, state.json differ; slots added: green"}
    - {step: 1, action: start slots, seconds: 5.71, detail: "app-green"}
seconds:
  description: Wall time of the whole module run.
  returned: always
  type: float
  sample: 7.9
records:
  description:
    - The events of O(history) appended (in check mode, that would be), in order, each as
      M(swiftdeploy.stack.audit_event) returns it in its RV(swiftdeploy.stack.audit_event#module:record).
  returned: when O(history) is given
  type: list
  elements: dict
  sample:
    - {seq: 12, event: deploy, stack: shop, mode: stable, version: "1.0.0", details: {changed: true},
       prev: "6f1e...", hash: "0a9b..."}
seq:
  description: The last appended event's position in the history; with RV(hash), the history's anchor.
  returned: when O(history) appended an event
  type: int
  sample: 12
hash:
  description: The last appended event's hash.
  returned: when O(history) appended an event
  type: str
  sample: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"
lock_released:
  description: Whether O(history.release_lock) removed the lock (false when there was none left to remove).
  returned: when O(history.release_lock) is given and the converge succeeded
  type: bool
  sample: true
diff:
  description: One diff per changed file and step, in Ansible's diff format.
  returned: when diff mode is on
  type: list
  elements: dict
  sample:
    - before: "..."
      after: "..."
      before_header: nginx/nginx.conf
      after_header: nginx/nginx.conf
"""

import contextlib
import errno
import json
import os
import socket
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._converge import (
    STATE_FILE,
    PlanError,
    check_files,
    check_state,
    compose_argv,
    compose_services,
    compose_up_needed,
    containers_started,
    generation_matches,
    nginx_exec_test_argv,
    nginx_test_argv,
    orphans,
    parse_compose_ps,
    plan_step,
    running_services,
    slot_services,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._docker_api import DockerApi, DockerApiError, local_socket
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import HistoryError, record_event
from ansible_collections.swiftdeploy.stack.plugins.module_utils._host import run_side_by_side
from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError, get_text
from ansible_collections.swiftdeploy.stack.plugins.module_utils._identity import current_user
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import LockError, release

COMPOSE_FILE = "docker-compose.yml"
NGINX_SERVICE = "nginx"
PROJECT_DIR_MODE = 0o750
PARENT_DIR_MODE = 0o755
GENERATION_PATH = "/_swiftdeploy/generation"
SLOT_HEALTH_PATH = "/slots/%s/healthz"  # nginx's admin listener, per slot (the role's nginx.conf)
MODE_TIMEOUT = 10.0
MODES = ("stable", "canary")
GENERATION_TIMEOUT = 10.0
GENERATION_POLL = 0.05
# After a reload nginx's master starts the new workers, sleeps 100 ms and only then tells the old
# ones to stop accepting; until then an old worker can still route a new request to a slot that
# left. The new generation answering says nothing of that, so a slot that left is stopped no
# sooner than this after the reload (molecule's canary scenario saw two 502s without it).
RETIRE_SECONDS = 0.5
HEALTH_POLL = 0.2
HEALTH_PROBE_POLL = 0.05
HEALTH_PROBE_TIMEOUT = 0.5
STOP_SECONDS = 10  # docker stop's grace before SIGKILL; the app stops within a second of SIGTERM


class ConvergeError(Exception):
    """A converge that cannot go on; the message says what failed and what to look at."""


class DiffTracker(object):
    """Ansible diffs of the changed files, one per file and step."""

    def __init__(self, enabled, many_steps):
        self.enabled = enabled
        self.many_steps = many_steps
        self.diffs = []

    def add(self, step, change):
        if not self.enabled:
            return
        suffix = " (step %d)" % step if self.many_steps else ""
        before_mode = after_mode = ""
        if change.mode_before is not None and change.mode_before != change.mode:
            before_mode, after_mode = " (mode %04o)" % change.mode_before, " (mode %04o)" % change.mode
        self.diffs.append({
            "before": change.before if change.before is not None else "",
            "after": change.after,
            "before_header": "%s%s%s" % (change.relpath, before_mode if change.before is not None else " (absent)", suffix),
            "after_header": "%s%s%s" % (change.relpath, after_mode, suffix),
        })


class Converger(object):
    def __init__(self, module):
        self.module = module
        params = module.params
        self.params = params
        self.check = module.check_mode
        self.project = os.path.abspath(params["project_path"])
        self.prefix = params["slot_prefix"]
        self.admin_url = params["admin_url"].rstrip("/")
        self.docker = None
        self.api = None  # a DockerApi when engine_api and the CLI would use the local socket
        self.started = time.monotonic()
        self.actions = []
        self.step_reports = []
        self.changed = False
        self.files_changed = []
        self.diff = DiffTracker(module._diff, len(params["steps"]) > 1)
        # The project as the run has left it so far (in check mode: would have), by relpath:
        # (content or None, mode or None). Later steps are planned against it.
        self.view = {}
        # Check mode only: the `docker compose ps` entries the earlier steps would have left.
        self.simulated_ps = None
        # The containers the next step starts from, when already known: the first step's
        # `docker compose ps` that validate() asked beside its tests, or what a step that ran no
        # whole `compose up` left. compose_ps() takes it once.
        self.prefetched_ps = None
        self.reload_planned = False
        self.reloaded_at = None  # time.monotonic() of this run's last reload signal

    # ----------------------------------------------------------------------------------------
    # Timing and commands
    # ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def action(self, step, name, detail=""):
        record = {"step": step, "action": name, "seconds": 0.0, "detail": detail}
        begun = time.monotonic()
        try:
            yield record
        finally:
            record["seconds"] = round(time.monotonic() - begun, 3)
            self.actions.append(record)

    def skipped(self, step, name, detail):
        self.actions.append({"step": step, "action": name, "seconds": 0.0, "detail": detail + " (check mode: not run)"})

    def run(self, argv, what):
        rc, out, err = self.module.run_command(argv, check_rc=False)
        if rc != 0:
            raise ConvergeError(self.command_failure(argv, what, rc, out, err))
        return out, err

    def command_failure(self, argv, what, rc, out, err):
        text = (err or "").strip() or (out or "").strip() or "(no output)"
        if "'compose' is not a docker command" in text or "unknown flag: --project-directory" in text:
            return ("the docker compose plugin (v2) is not installed on this host (%s); install it "
                    "(docker-compose-plugin) next to the docker CLI" % text)
        return "%s failed (rc=%d): %s\ncommand: %s" % (what, rc, text, " ".join(argv))

    def compose(self, *args):
        return compose_argv(self.docker, self.project, *args)

    def engine(self, what, call, argv):
        """One container call: through the Engine API when there is one, else the docker CLI."""
        if self.api is None:
            return self.run(argv, what)
        try:
            return call()
        except DockerApiError as exc:
            raise ConvergeError("%s failed: %s" % (what, exc))

    # ----------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------

    def current(self, relpath):
        if relpath in self.view:
            return self.view[relpath]
        path = os.path.join(self.project, relpath)
        try:
            with open(path, "rb") as handle:
                content = handle.read().decode("utf-8", "replace")
            mode = os.stat(path).st_mode & 0o7777
        except IsADirectoryError:
            raise PlanError("%s is a directory; it must be a file" % path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise PlanError("cannot read %s: %s" % (path, exc.strerror or exc))
            content = mode = None
        self.view[relpath] = (content, mode)
        return content, mode

    def write_file(self, relpath, content, mode):
        path = os.path.join(self.project, relpath)
        directory = os.path.dirname(path)
        self.make_dirs(directory)
        handle, temp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path), suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(content.encode("utf-8"))
                out.flush()
                os.fchmod(out.fileno(), mode)
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def make_dirs(self, directory):
        missing = []
        while not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for path in reversed(missing):
            os.mkdir(path)
            os.chmod(path, PROJECT_DIR_MODE if path == self.project else PARENT_DIR_MODE)

    @contextlib.contextmanager
    def scratch_file(self, content, mode=0o644):
        handle, path = tempfile.mkstemp(prefix="swiftdeploy-converge.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(content.encode("utf-8"))
                os.fchmod(out.fileno(), mode)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # ----------------------------------------------------------------------------------------
    # The run
    # ----------------------------------------------------------------------------------------

    def converge(self):
        if os.path.exists(self.project) and not os.path.isdir(self.project):
            raise ConvergeError("project_path: %s exists and is not a directory" % self.project)
        self.docker = self.module.get_bin_path("docker")
        if self.docker is None:
            raise ConvergeError("the docker CLI is not on PATH on this host; install Docker with the compose "
                                "plugin, or set PATH for this task (environment:)")
        socket_path = local_socket() if self.params["engine_api"] else None
        if socket_path:
            self.api = DockerApi(socket_path)
        steps = self.params["steps"]
        planned = []
        for number, step in enumerate(steps, 1):
            with self.action(number, "plan") as record:
                planned.append(self.plan(number, step, record))
        self.validate(planned)
        for number, (step, files, plan, compose) in enumerate(planned, 1):
            self.apply(number, step, files, plan, compose)
        if self.params["health_url"]:
            self.wait_health()
        final = steps[-1]["state"]
        return {
            "changed": self.changed,
            "project_path": self.project,
            "files_changed": self.files_changed,
            "generation": final["generation"],
            "state": final,
            "steps": self.step_reports,
            "actions": self.actions,
            "seconds": round(time.monotonic() - self.started, 3),
        }

    def plan(self, number, step, record):
        where = "step %d" % number
        files = check_files(step["files"], where + ": files")
        check_state(step["state"], where + ": state")
        current = dict((relpath, self.current(relpath)) for relpath in list(files) + [STATE_FILE])
        try:
            plan = plan_step(current, files, step["state"], self.params["nginx_conf"], COMPOSE_FILE, self.prefix)
        except PlanError as exc:
            raise PlanError("%s: %s" % (where, exc))
        compose = files[COMPOSE_FILE]["content"] if COMPOSE_FILE in files else self.current(COMPOSE_FILE)[0]
        if compose is None:
            raise PlanError("%s: %s has no %s and the step's files do not include one"
                            % (where, self.project, COMPOSE_FILE))
        for change in plan.changes:
            self.view[change.relpath] = (change.after, change.mode)
        parts = ["%s differ" % ", ".join(plan.files_changed) if plan.changes else "files and state match"]
        switched = plan.mode_switched
        for label, slots in (("added", plan.added), ("changed", [slot for slot in plan.changed if slot not in switched]),
                             ("switching mode", switched), ("removed", plan.removed)):
            if slots:
                parts.append("slots %s: %s" % (label, ", ".join(slots)))
        record["detail"] = "; ".join(parts)
        return step, files, plan, compose

    def validate(self, planned):
        """Test every changed nginx.conf and compose file of every step before anything lands.

        The compose files are tested side by side (each costs mostly a docker CLI), next to the
        `docker compose ps` that the first step needs anyway: it names the running nginx, in which
        the nginx.conf files are then tested with docker exec (about 0.1 s) instead of in a fresh
        container (about 0.5 s, more on a busy host). A refusal there is confirmed in a fresh
        container, which alone decides. Verdicts are read compose files first, as one by one.
        """
        tested = set()
        confs = []  # (step number, content) of each distinct nginx.conf to test
        composes = []  # (step number, content) of each distinct compose file to test
        slots = set()
        conf = self.params["nginx_conf"]
        for number, (step, files, plan, _compose) in enumerate(planned, 1):
            if plan.nginx_conf_changed and self.params["validate_nginx"]:
                key = ("nginx", files[conf]["content"])
                if key not in tested:
                    tested.add(key)
                    confs.append((number, files[conf]["content"]))
                    slots.update(step["state"]["slots"])
            if plan.compose_changed:
                key = ("compose", files[COMPOSE_FILE]["content"])
                if key not in tested:
                    tested.add(key)
                    composes.append((number, files[COMPOSE_FILE]["content"]))
        if not confs and not composes:
            return
        ask_ps = bool(confs) and os.path.isfile(os.path.join(self.project, COMPOSE_FILE))
        with contextlib.ExitStack() as stack:
            checks = [("compose", number, self.compose("-f", stack.enter_context(self.scratch_file(content)),
                                                       "config", "--quiet"))
                      for number, content in composes]
            if ask_ps:
                checks.append(("ps", 1, self.compose_ps_argv()))
            results = run_side_by_side([argv for _kind, _number, argv in checks])
        entries = []
        for (kind, number, argv), (rc, out, err, seconds) in zip(checks, results):
            if kind == "compose":
                self.actions.append({"step": number, "action": "validate compose file", "seconds": seconds,
                                     "detail": "docker compose config"})
                if rc != 0:
                    message = self.command_failure(argv, "docker compose config", rc, out, err)
                    raise ConvergeError("step %d: %s is refused by docker compose, nothing was written: %s"
                                        % (number, COMPOSE_FILE, message))
            else:
                if rc != 0:
                    raise ConvergeError(self.command_failure(argv, "docker compose ps", rc, out, err))
                entries = self.read_ps(out)
                self.actions.append({"step": number, "action": "compose ps", "seconds": seconds,
                                     "detail": self.describe_ps(entries)})
                self.prefetched_ps = entries
        if not confs:
            return
        nginx = running_services(entries).get(NGINX_SERVICE)
        container = nginx and (nginx.get("ID") or nginx.get("Name"))
        if container:
            argv = nginx_exec_test_argv(self.docker, container, self.prefix, slots, [content for _n, content in confs])
            ((rc, out, err, seconds),) = run_side_by_side([argv])
            steps = ", ".join(str(number) for number, _content in confs)
            outcome = "passed" if rc == 0 else "refused, so tested again in a fresh container" if "refused:" in err \
                else "could not run (rc=%d), so tested in a fresh container" % rc
            self.actions.append({"step": confs[0][0], "action": "validate nginx.conf", "seconds": seconds,
                                 "detail": "nginx -t in the running nginx %s (step %s): %s"
                                           % (nginx.get("Name") or container, steps, outcome)})
            if rc == 0:
                return
        with contextlib.ExitStack() as stack:
            paths = [stack.enter_context(self.scratch_file(content)) for _number, content in confs]
            argv = nginx_test_argv(self.docker, self.params["nginx_image"], self.params["nginx_conf_dir"],
                                   self.prefix, slots, paths)
            ((rc, out, err, seconds),) = run_side_by_side([argv])
        self.nginx_verdict(confs, conf, rc, out, err, seconds)

    def nginx_verdict(self, confs, relpath, rc, out, err, seconds):
        """The result of nginx -t on every (step, content) of confs, tested in one container."""
        steps = ", ".join(str(number) for number, _content in confs)
        self.actions.append({"step": confs[0][0], "action": "validate nginx.conf", "seconds": seconds,
                             "detail": "nginx -t in %s (step %s)" % (self.params["nginx_image"], steps)})
        if rc != 0:
            text = (err or out or "").strip() or "rc=%d, no output" % rc
            number = confs[0][0]
            for index, (step_number, _content) in enumerate(confs, 1):
                if "refused: test-%d.conf" % index in text:
                    number = step_number
            raise ConvergeError("step %d: %s is refused by nginx -t in %s, nothing was written: %s"
                                % (number, relpath, self.params["nginx_image"], text))

    def apply(self, number, step, files, plan, compose_text):
        report = {"step": number, "changed": False, "files_changed": plan.files_changed,
                  "slots_started": [], "slots_switched": [], "slots_removed": [], "nginx": "unchanged"}
        self.step_reports.append(report)
        state = step["state"]
        if plan.changes:
            self.write(number, plan)
            self.note_change(report)

        expected = self.expected_services(number, compose_text)
        entries = self.compose_ps(number)
        running = running_services(entries)
        nginx_before = running.get(NGINX_SERVICE)

        # New and changed slots first, and any not running, so that they are healthy before
        # nginx routes to them and before an nginx that starts (and resolves them) needs them.
        to_start = sorted(set(plan.slots_to_start)
                          | set(slot for slot in state["slots"] if self.prefix + slot not in running))
        started = slot_services(self.prefix, to_start)
        # The containers after this step, while it is known without asking compose again.
        after = [entry for entry in entries if entry.get("Service") not in started]
        if started:
            out = self.docker_change(number, "start slots", ", ".join(started), ["up", "-d"] + started)
            names = self.wait_slots(number, started, out)
            after += [{"Service": service, "State": "running", "Name": names.get(service, ""), "ID": ""}
                      for service in started]
            report["slots_started"] = to_start
            self.note_change(report)

        # A running slot that only changes mode (a canary that passed becomes the stable
        # release) keeps its process: it reads its mode file, just written, again. So does a
        # running slot whose state already names its mode but which reports another (a run that
        # failed or died between writing the mode file and confirming the switch).
        switch = [slot for slot in plan.mode_switched if self.prefix + slot in running]
        if not self.check:
            switch += self.slots_in_another_mode(state, running, nginx_before, set(switch) | set(to_start))
        if switch:
            self.switch_modes(number, switch, state, running, nginx_before)
            report["slots_switched"] = switch
            self.note_change(report)

        nginx_fresh = NGINX_SERVICE in expected and nginx_before is None
        compose_change = plan.change(COMPOSE_FILE)
        others_down = [service for service in expected if service not in running and service not in started]
        compose_up = compose_change is not None and compose_up_needed(compose_change.before, compose_change.after,
                                                                      started)
        if others_down or compose_up:
            why = "not running: %s" % ", ".join(others_down) if others_down else "compose file changed"
            out = self.docker_change(number, "compose up", why,
                                     ["up", "-d", "--wait", "--wait-timeout", str(self.params["wait_timeout"])])
            if nginx_before is not None and nginx_before.get("Name") in containers_started(out):
                nginx_fresh = True
            after = None
            self.note_change(report)

        if self.params["nginx_conf"] in files and NGINX_SERVICE in expected:
            report["nginx"] = self.route(number, state["generation"], plan, nginx_before, nginx_fresh)
            if report["nginx"] != "unchanged":
                self.note_change(report)

        # Only after nginx confirmed the new routing: containers of slots that left the state,
        # and of any other service the compose file no longer has.
        leaving = set(slot_services(self.prefix, plan.removed)) | set(orphans(expected, entries))
        leaving = sorted(set(entry.get("Service") for entry in entries) & leaving)
        if leaving:
            self.remove(number, leaving, entries, drain=any(service in running for service in leaving))
            report["slots_removed"] = leaving
            self.note_change(report)

        # Unless a whole `compose up` ran, the containers are those listed, with the slots just
        # started (by the names `up` and the health wait found) and without those removed: the
        # next step needs no `compose ps` of its own.
        if after is not None and not self.check:
            self.prefetched_ps = [entry for entry in after if entry.get("Service") not in leaving]

        if self.check:
            self.simulated_ps = [{"Service": service, "State": "running",
                                  "Name": (nginx_before or {}).get("Name", "") if service == NGINX_SERVICE else service,
                                  "ID": (nginx_before or {}).get("ID", "") if service == NGINX_SERVICE else ""}
                                 for service in expected]

    def wait_slots(self, number, services, up_output):
        """Wait until the containers of `services` answer their health check.

        Docker runs the image's HEALTHCHECK first one `interval` after the start, so `compose up
        --wait` costs at least a second per start. The module runs on the Docker host, which
        reaches containers on a bridge network at their addresses: it asks each slot's
        health URL itself every HEALTH_PROBE_POLL seconds and takes whichever says healthy first,
        the app or Docker. A container that exits or that Docker marks unhealthy fails the step.
        Returns {service: container name} ({} in check mode).
        """
        if self.check:
            self.skipped(number, "wait slots", ", ".join(services))
            return {}
        with self.action(number, "wait slots", ", ".join(services)) as record:
            # `up` names the containers it touched ("Container <project>-app-green-1  Started");
            # compose ps is asked only when that cannot be matched to every service.
            touched = containers_started(up_output)
            names = {}
            for service in services:
                suffix = "-%s-" % service
                matches = [name for name in touched if suffix in name]
                if len(matches) == 1:
                    names[service] = matches[0]
            if len(names) < len(services):
                names = dict((entry.get("Service"), entry.get("Name") or entry.get("ID"))
                             for entry in self.compose_ps(number) if entry.get("Service") in services)
            missing = [service for service in services if not names.get(service)]
            if missing:
                raise ConvergeError("step %d: docker compose up created no container for %s; look at "
                                    "`docker compose --project-directory %s ps --all`"
                                    % (number, ", ".join(missing), self.project))
            deadline = time.monotonic() + self.params["wait_timeout"]
            pending = dict(names)
            answered = {}
            while pending:
                for service, container in sorted(pending.items()):
                    state = self.container_state(container)
                    how = self.slot_healthy(state)
                    if how:
                        answered[service] = how
                        del pending[service]
                if not pending:
                    break
                if time.monotonic() >= deadline:
                    names = sorted(pending)
                    raise ConvergeError(
                        "step %d: %s did not become healthy within %d s; look at `docker compose "
                        "--project-directory %s logs %s` and raise swiftdeploy_deploy_health_timeout if "
                        "the app needs longer to start"
                        % (number, ", ".join(names), self.params["wait_timeout"], self.project, " ".join(names)))
                time.sleep(HEALTH_PROBE_POLL)
            record["detail"] = ", ".join("%s healthy (%s)" % item for item in sorted(answered.items()))
        return names

    def switch_modes(self, number, slots, state, running, nginx_before):
        """SIGHUP to the slots' containers, then wait until each one's /healthz reports the mode
        its file now names: through nginx's admin listener, or at the container's address when
        nginx is not running."""
        wanted = dict((slot, state["slots"][slot].get("mode")) for slot in slots)
        detail = ", ".join("%s to %s" % item for item in sorted(wanted.items()))
        if self.check:
            self.skipped(number, "switch mode", detail)
            return
        with self.action(number, "switch mode", detail) as record:
            containers = [running[self.prefix + slot].get("ID") or running[self.prefix + slot].get("Name")
                          for slot in slots]
            for container in containers:
                self.engine("docker kill --signal HUP %s (app slot)" % container,
                            lambda container=container: self.api.kill(container, "HUP"),
                            [self.docker, "kill", "--signal", "HUP", container])
            deadline = time.monotonic() + MODE_TIMEOUT
            pending = dict(wanted)
            seen = {}
            while pending:
                for slot, mode in sorted(pending.items()):
                    seen[slot] = self.slot_mode(slot, running[self.prefix + slot], nginx_before)
                    if seen[slot] == mode:
                        del pending[slot]
                if not pending:
                    break
                if time.monotonic() >= deadline:
                    raise ConvergeError(
                        "step %d: %s did not switch mode within %g s (its /healthz says %s); the app must read "
                        "the file named by its MODE_FILE again on SIGHUP; look at `docker compose "
                        "--project-directory %s logs %s`"
                        % (number, ", ".join(sorted(pending)), MODE_TIMEOUT,
                           ", ".join("%s: %s" % (slot, seen.get(slot)) for slot in sorted(pending)),
                           self.project, " ".join(self.prefix + slot for slot in sorted(pending))))
                time.sleep(GENERATION_POLL)
            record["detail"] = detail + ", confirmed by /healthz"

    def slots_in_another_mode(self, state, running, nginx_before, skip):
        """Running slots (not in skip) whose /healthz reports a mode other than the state's. A
        slot that does not answer is not counted: the health checks elsewhere are for that."""
        slots = []
        for slot, spec in sorted(state["slots"].items()):
            entry = running.get(self.prefix + slot)
            if slot in skip or entry is None or not isinstance(spec, dict) or spec.get("mode") not in MODES:
                continue
            seen = self.slot_mode(slot, entry, nginx_before)
            if seen in MODES and seen != spec["mode"]:
                slots.append(slot)
        return slots

    def slot_mode(self, slot, entry, nginx_before):
        """The mode a slot's /healthz reports, or a short text saying why there is none."""
        urls = []
        if nginx_before is not None:
            urls.append(self.admin_url + SLOT_HEALTH_PATH % slot)
        elif self.params["slot_port"]:
            _state, networks = self.container_state(entry.get("ID") or entry.get("Name"))
            urls += ["http://%s:%d%s" % (network["IPAddress"], self.params["slot_port"], self.params["slot_health_path"])
                     for network in networks.values() if (network or {}).get("IPAddress")]
        if not urls:
            return "no way to ask it (nginx is not running and slot_port is not set)"
        problem = "no answer"
        for url in urls:
            try:
                body = json.loads(get_text(url, HEALTH_PROBE_TIMEOUT, service="the app slot"))
            except HttpError as exc:
                problem = exc.message
                continue
            except ValueError:
                problem = "not JSON"
                continue
            return body.get("mode") if isinstance(body, dict) else "not a JSON object"
        return problem

    def container_state(self, container):
        if self.api is not None:
            try:
                data = self.api.inspect(container)
            except DockerApiError as exc:
                raise ConvergeError("docker inspect %s failed: %s" % (container, exc))
            return data.get("State") or {}, (data.get("NetworkSettings") or {}).get("Networks") or {}
        out, _err = self.run([self.docker, "inspect", "--format", "{{json .State}}|{{json .NetworkSettings.Networks}}",
                              container], "docker inspect")
        state_text, _sep, networks_text = out.strip().partition("|")
        try:
            return json.loads(state_text), json.loads(networks_text) or {}
        except ValueError:
            raise ConvergeError("docker inspect %s printed something that is not JSON: %s" % (container, out[:200]))

    def slot_healthy(self, inspected):
        """'docker' or 'probe' when the container is healthy, None while it is starting."""
        state, networks = inspected
        health = (state.get("Health") or {}).get("Status")
        if state.get("Status") in ("exited", "dead") or health == "unhealthy":
            raise ConvergeError("an app slot container is %s (exit code %s, health %s); look at its logs with "
                                "`docker compose --project-directory %s logs`"
                                % (state.get("Status"), state.get("ExitCode"), health or "none", self.project))
        if health == "healthy" or (health is None and state.get("Running")):
            return "docker"
        port = self.params["slot_port"]
        if not port or not state.get("Running"):
            return None
        for network in networks.values():
            address = (network or {}).get("IPAddress")
            if not address:
                continue
            try:
                get_text("http://%s:%d%s" % (address, port, self.params["slot_health_path"]), HEALTH_PROBE_TIMEOUT,
                         service="the app slot")
                return "probe"
            except HttpError:
                continue
        return None

    def note_change(self, report):
        report["changed"] = True
        self.changed = True

    def write(self, number, plan):
        names = ", ".join(plan.files_changed)
        for change in plan.changes:
            self.diff.add(number, change)
            if change.relpath not in self.files_changed:
                self.files_changed.append(change.relpath)
        if self.check:
            self.skipped(number, "write", names)
            return
        with self.action(number, "write", names):
            if not os.path.isdir(self.project):
                self.make_dirs(self.project)
            for change in plan.changes:
                path = os.path.join(self.project, change.relpath)
                if change.content_changed:
                    self.write_file(change.relpath, change.after, change.mode)
                else:
                    os.chmod(path, change.mode)

    def expected_services(self, number, content):
        services = compose_services(content)
        if services is None:
            with self.action(number, "compose services", "the compose file is not block YAML; asked compose"):
                with self.scratch_file(content) as path:
                    out, _err = self.run(self.compose("-f", path, "config", "--services"), "docker compose config --services")
            services = [line.strip() for line in out.splitlines() if line.strip()]
        return services

    def compose_ps_argv(self):
        return self.compose("ps", "--all", "--format", "json")

    @staticmethod
    def read_ps(out):
        try:
            return parse_compose_ps(out)
        except ValueError as exc:
            raise ConvergeError("docker compose ps --format json printed something that is not JSON (%s): %s"
                                % (exc, out[:200]))

    @staticmethod
    def describe_ps(entries):
        return ", ".join("%s %s" % (entry.get("Service"), entry.get("State")) for entry in entries) or "no containers"

    def compose_ps(self, number):
        if self.prefetched_ps is not None:
            entries, self.prefetched_ps = self.prefetched_ps, None
            return entries
        if self.check and self.simulated_ps is not None:
            return self.simulated_ps
        if self.check and not os.path.isfile(os.path.join(self.project, COMPOSE_FILE)):
            self.simulated_ps = []
            return []
        with self.action(number, "compose ps") as record:
            out, _err = self.run(self.compose_ps_argv(), "docker compose ps")
            entries = self.read_ps(out)
            record["detail"] = self.describe_ps(entries)
        return entries

    def docker_change(self, number, name, detail, args):
        argv = self.compose(*args)
        if self.check:
            self.skipped(number, name, detail)
            return ""
        with self.action(number, name, detail):
            out, err = self.run(argv, "docker compose %s" % " ".join(args[:1]))
        return out + err

    def route(self, number, generation, plan, nginx_before, nginx_fresh):
        """Make nginx serve this step's routing; returns reloaded, started or unchanged."""
        if nginx_fresh:
            if self.check:
                self.skipped(number, "wait generation", "nginx starts with generation %s" % generation)
            else:
                self.wait_generation(number, generation, "nginx started")
            return "started"
        if plan.nginx_conf_changed:
            self.reload(number, generation, nginx_before, "configuration changed")
            return "reloaded"
        if self.check and self.reload_planned:
            return "unchanged"
        # Unchanged files, yet nginx may serve an older routing: an earlier run wrote the file
        # and died before its reload. One request tells.
        with self.action(number, "check generation") as record:
            served, error = self.served_generation(2.0)
            record["detail"] = "serves %s" % served if error is None else error
        if generation_matches(served, generation):
            return "unchanged"
        self.reload(number, generation, nginx_before, "nginx serves generation %s, not %s" % (
            (served or "").strip() or "?", generation))
        return "reloaded"

    def reload(self, number, generation, nginx_before, why):
        self.reload_planned = True
        target = nginx_before.get("ID") or nginx_before.get("Name")
        argv = [self.docker, "kill", "--signal", "HUP", target]
        if self.check:
            self.skipped(number, "reload nginx", why)
            return
        with self.action(number, "reload nginx", "%s: SIGHUP to %s" % (why, nginx_before.get("Name") or target)):
            self.engine("docker kill --signal HUP (nginx)", lambda: self.api.kill(target, "HUP"), argv)
        self.reloaded_at = time.monotonic()
        self.wait_generation(number, generation, "after the reload")

    def served_generation(self, timeout):
        try:
            return get_text(self.admin_url + GENERATION_PATH, timeout, service="nginx's admin listener"), None
        except HttpError as exc:
            return None, exc.message

    def wait_generation(self, number, generation, when):
        with self.action(number, "wait generation") as record:
            deadline = time.monotonic() + GENERATION_TIMEOUT
            while True:
                served, error = self.served_generation(max(0.2, min(1.0, deadline - time.monotonic())))
                if generation_matches(served, generation):
                    record["detail"] = "nginx serves generation %s" % generation
                    return
                if time.monotonic() >= deadline:
                    seen = ("it still serves generation %s" % served.strip()) if served is not None else "last error: %s" % error
                    raise ConvergeError(
                        "step %d: nginx did not serve generation %s within %g s %s (%s); look at "
                        "`docker compose --project-directory %s logs nginx` for a configuration it refused"
                        % (number, generation, GENERATION_TIMEOUT, when, seen, self.project))
                time.sleep(GENERATION_POLL)

    def remove(self, number, services, entries, drain):
        """Stop (SIGTERM, then up to STOP_SECONDS) and remove the containers of services that
        left, by name: compose no longer knows a slot its file dropped, and `up --remove-orphans`
        would also check every other service again (about 0.7 s more here)."""
        detail = ", ".join(services)
        if drain and self.params["drain_seconds"] > 0:
            if self.check:
                self.skipped(number, "drain", "%g s before removing %s" % (self.params["drain_seconds"], detail))
            else:
                with self.action(number, "drain", "%g s for requests already sent to %s"
                                 % (self.params["drain_seconds"], detail)):
                    time.sleep(self.params["drain_seconds"])
        names = sorted(entry["Name"] for entry in entries if entry.get("Service") in services and entry.get("Name"))
        if self.check or not names:
            self.skipped(number, "remove slots", detail)
            return
        retire = RETIRE_SECONDS - (time.monotonic() - self.reloaded_at) if self.reloaded_at is not None else 0
        if retire > 0:
            with self.action(number, "retire old workers", "%.2f s more for nginx's old workers to stop accepting"
                             % retire):
                time.sleep(retire)
        with self.action(number, "remove slots", detail):
            if self.api is None:
                self.run([self.docker, "stop", "--time", str(STOP_SECONDS)] + names, "docker stop")
                self.run([self.docker, "rm", "--volumes"] + names, "docker rm")
                return
            for name in names:
                self.engine("docker stop %s" % name, lambda name=name: self.api.stop(name, STOP_SECONDS), None)
                self.engine("docker rm --volumes %s" % name, lambda name=name: self.api.remove(name), None)

    def wait_health(self):
        url = self.params["health_url"]
        if self.check:
            self.skipped(None, "wait health", url)
            return
        timeout = self.params["health_timeout"]
        with self.action(None, "wait health", url) as record:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    get_text(url, max(0.2, min(5.0, deadline - time.monotonic())), service="the stack")
                    record["detail"] = "%s answers" % url
                    return
                except HttpError as exc:
                    if time.monotonic() >= deadline:
                        raise ConvergeError("%s did not answer with a 2xx status within %g s: %s"
                                            % (url, timeout, exc.message))
                time.sleep(HEALTH_POLL)


class Recorder(object):
    """The O(history) events of one converge, and the release of the lock after them."""

    def __init__(self, spec, check_mode):
        self.spec = spec
        self.check = check_mode
        actor = dict(spec["actor"] or {})
        if actor.get("user") is None:
            actor["user"] = current_user()
        self.actor = actor
        self.records = []

    def append(self, phase, changed=None):
        """Append the events of this phase ('before', or 'after' with the converge's changed)."""
        for event in self.spec["events"]:
            wanted = event["when"] == phase or (phase == "after" and event["when"] == "changed" and changed)
            if not wanted:
                continue
            details = dict(event["details"])
            if phase == "after":
                details["changed"] = bool(changed)
            fields = {"event": event["event"], "stack": self.spec["stack"], "host": socket.gethostname(),
                      "actor": self.actor, "mode": event["mode"] or self.spec["mode"],
                      "version": self.spec["version"], "details": details}
            try:
                self.records.append(record_event(self.spec["path"], fields, self.check))
            except HistoryError as exc:
                raise ConvergeError(str(exc))

    def release(self):
        lock = self.spec["release_lock"]
        if not lock or self.check:
            return None
        try:
            return release(lock["path"], lock["token"])["changed"]
        except (LockError, OSError) as exc:
            raise ConvergeError("the stack converged and its events were recorded, but the lock %s was not "
                                "released: %s" % (lock["path"], exc))

    def result(self):
        result = {"records": self.records}
        if self.records:
            result.update(seq=self.records[-1]["seq"], hash=self.records[-1]["hash"])
        return result


def main():
    module = AnsibleModule(
        argument_spec={
            "project_path": {"type": "path", "required": True},
            "steps": {"type": "list", "elements": "dict", "required": True, "options": {
                "files": {"type": "dict", "required": True},
                "state": {"type": "dict", "required": True},
            }},
            "nginx_image": {"type": "str", "required": True},
            "nginx_conf": {"type": "str", "default": "nginx/nginx.conf"},
            "nginx_conf_dir": {"type": "str", "default": "/etc/nginx/swiftdeploy"},
            "slot_prefix": {"type": "str", "default": "app-"},
            "admin_url": {"type": "str", "required": True},
            "health_url": {"type": "str"},
            "health_timeout": {"type": "float", "default": 60},
            "wait_timeout": {"type": "int", "default": 60},
            "drain_seconds": {"type": "float", "default": 2},
            "validate_nginx": {"type": "bool", "default": True},
            "engine_api": {"type": "bool", "default": True},
            "slot_port": {"type": "int"},
            "slot_health_path": {"type": "str", "default": "/healthz"},
            "history": {"type": "dict", "options": {
                "path": {"type": "path", "required": True},
                "stack": {"type": "str"},
                "version": {"type": "str"},
                "mode": {"type": "str"},
                "actor": {"type": "dict"},
                "events": {"type": "list", "elements": "dict", "required": True, "options": {
                    "event": {"type": "str", "required": True},
                    "when": {"type": "str", "choices": ["before", "after", "changed"], "default": "after"},
                    "mode": {"type": "str"},
                    "details": {"type": "dict", "default": {}},
                }},
                "release_lock": {"type": "dict", "options": {
                    "path": {"type": "path", "required": True},
                    # Not a credential: it only stops one run from releasing another's lock.
                    "token": {"type": "str", "required": True, "no_log": False},
                }},
            }},
        },
        supports_check_mode=True,
    )
    if not module.params["steps"]:
        module.fail_json(msg="steps: give at least one step (files and state)")
    converger = Converger(module)
    recorder = Recorder(module.params["history"], module.check_mode) if module.params["history"] else None
    try:
        if recorder:
            recorder.append("before")
        result = converger.converge()
        if recorder:
            recorder.append("after", result["changed"])
            released = recorder.release()
            result.update(recorder.result())
            if released is not None:
                result["lock_released"] = released
    except (PlanError, ConvergeError) as exc:
        module.fail_json(msg=str(exc), actions=converger.actions, files_changed=converger.files_changed,
                         changed=converger.changed, **(recorder.result() if recorder else {}))
    except OSError as exc:
        module.fail_json(msg="cannot write in %s: %s" % (converger.project, exc), actions=converger.actions,
                         files_changed=converger.files_changed, changed=converger.changed,
                         **(recorder.result() if recorder else {}))
    if module._diff:
        result["diff"] = converger.diff.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
