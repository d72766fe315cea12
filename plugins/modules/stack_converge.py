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
  - "With an edge nginx (compose service C(edge), C(nginx.edge)): a changed C(edge.conf) beside
    O(nginx_conf) is tested in the running edge before anything is written, and loaded in place
    before the routing nginx switches - C(nginx -t) on the written file inside the edge, C(SIGHUP),
    then the edge's nginx master must run worker processes it did not run before (10 s at most).
    The edge's container is never recreated for it, so its public port never closes."
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
  - swiftdeploy.stack.attributes.recording_action
  - swiftdeploy.stack.session
  - swiftdeploy.stack.progress
  - ansible.builtin.files
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
            octal string such as C("0644"); default O(mode), or C("0644")).
          - Every file written is replaced atomically (Ansible's atomic_move) and gets O(owner),
            O(group) and the SELinux context options when they are given.
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
  mode_switch:
    description:
      - How a running slot whose spec changes only in C(mode) (a canary rolled forward) learns it.
      - V(signal) writes its mode file and sends it C(SIGHUP), then waits until its C(/healthz)
        reports the new mode; a running slot reporting another mode than the state names is
        switched too.
      - V(none) neither signals nor asks the app; the slot keeps its process and only nginx's
        routing changes, for apps that have no mode (the manifest's C(services.mode_switch)).
    type: str
    choices: [signal, none]
    default: signal
  slot_healthcheck:
    description:
      - The manifest's C(services.healthcheck), for images without a Docker C(HEALTHCHECK) (a
        team's own service, with no tool inside to run one). Such a slot counts as healthy only
        once C(http://<container address>:<slot_port><slot_health_path>) answers 2xx (each request
        waits at most O(slot_healthcheck.timeout), 2 s at most), and fails the step when it has
        not after O(slot_healthcheck.start_period) + O(slot_healthcheck.retries) x
        O(slot_healthcheck.interval) seconds. Without it, a running container without Docker
        health counts as healthy.
    type: dict
    suboptions:
      interval:
        description: Seconds between the failures that count.
        type: float
        default: 1
      timeout:
        description: Seconds one request may take.
        type: float
        default: 2
      retries:
        description: Failures, O(slot_healthcheck.interval) apart, after which the slot is unhealthy.
        type: int
        default: 3
      start_period:
        description: Seconds after the start in which failures do not count.
        type: float
        default: 0
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
        chain), as O(actor). With O(release_lock), a run's converge, its record and the release of
        its lock then cost one round trip instead of two.
      - Events with C(when=before) are appended before anything is planned, so they stay in the
        history even when the converge fails (for example the refusal that a roll-back follows).
        Events with C(when=after) are appended once every step has converged, and C(when=changed)
        ones only when the converge changed something. Their C(details) get C(changed), whether
        the converge changed anything, and C(slots), the last step's slots (each one's C(image),
        C(version), C(mode) and, when recorded, C(image_id)), which say what runs from then on.
      - Nothing is appended after a failed converge, and O(release_lock) is not released then; the
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
          version:
            description: The app version this event records; by default O(history.version).
            type: str
          details:
            description: Anything else worth keeping about the event.
            type: dict
            default: {}
          outcome:
            description:
              - Whether an C(after) or C(changed) event's C(details) get the converge's C(changed) and
                C(slots). V(false) records the details as given, as M(swiftdeploy.stack.audit_event)
                would after the converge (a rolling deploy's C(rollout_batch)) without its round trip.
            type: bool
            default: true
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
    at the same time would interleave their steps. With O(release_lock), the lock's heartbeat is
    refreshed every few seconds while the converge waits, and checked again before the C(after)
    events are appended.
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
    edge:
      description:
        - V(reloaded) when the edge nginx (C(nginx.edge)) loaded a changed C(edge.conf) in place
          (C(nginx -t) inside it, C(SIGHUP), confirmed by its new worker processes), else V(unchanged)
          (also when compose created or recreated it, which loads the file as it starts).
      type: str
      sample: unchanged
  sample:
    - step: 1
      changed: true
      files_changed: [nginx/nginx.conf, docker-compose.yml, state.json]
      slots_started: [green]
      slots_switched: []
      slots_removed: []
      nginx: reloaded
      edge: unchanged
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
          V(test edge.conf), V(reload edge), V(wait edge) (the edge nginx loading a changed C(edge.conf) in place),
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
  description: Whether O(release_lock) removed the lock (false when there was none left to remove; in check mode, would remove).
  returned: when O(release_lock) is given and the converge succeeded
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
anchor:
  description:
    - The history's anchor now kept on the controller (not in check mode). C(regressed) is there when
      the history on the host went backwards (deleted, cut or rewritten) since the anchor was kept.
  returned: when an event was recorded
  type: dict
  sample: {seq: 12, hash: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"}
history_path:
  description: The history's absolute path on the managed host, C(~) expanded there; the action keys the controller's anchor by it.
  returned: when O(history) is given
  type: str
  sample: /root/.swiftdeploy/shop/history.jsonl
"""

import functools
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as progress
from ansible_collections.swiftdeploy.stack.plugins.module_utils._converge import DEFAULT_FILE_MODE, PlanError, parse_mode
from ansible_collections.swiftdeploy.stack.plugins.module_utils._converger import Converger
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import write_atomic
from ansible_collections.swiftdeploy.stack.plugins.module_utils._session import (
    Session,
    SessionError,
    session_argument_spec,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._stack_host import (
    ActionLog,
    ConvergeError,
    DryRunStackHost,
    StackHost,
)

ARGUMENT_SPEC = {
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
    "mode_switch": {"type": "str", "choices": ["signal", "none"], "default": "signal"},
    "validate_nginx": {"type": "bool", "default": True},
    "engine_api": {"type": "bool", "default": True},
    "slot_port": {"type": "int"},
    "slot_health_path": {"type": "str", "default": "/healthz"},
    "slot_healthcheck": {"type": "dict", "options": {
        "interval": {"type": "float", "default": 1},
        "timeout": {"type": "float", "default": 2},
        "retries": {"type": "int", "default": 3},
        "start_period": {"type": "float", "default": 0},
    }},
    "history": {"type": "dict", "options": {
        "path": {"type": "path", "required": True},
        "stack": {"type": "str"},
        "version": {"type": "str"},
        "mode": {"type": "str"},
        "events": {"type": "list", "elements": "dict", "required": True, "options": {
            "event": {"type": "str", "required": True},
            "when": {"type": "str", "choices": ["before", "after", "changed"], "default": "after"},
            "mode": {"type": "str"},
            "version": {"type": "str"},
            "details": {"type": "dict", "default": {}},
            "outcome": {"type": "bool", "default": True},
        }},
    }},
}


def atomic_write(module, path, content, mode):
    """A synced temporary file beside path, moved over it by Ansible's atomic_move."""
    write_atomic(path, content.encode("utf-8"), mode, move=module.atomic_move)
    attributes = module.load_file_common_arguments(module.params, path=path)
    attributes["mode"] = None
    module.set_fs_attributes_if_different(attributes, False)


def record(session, events, phase, changed=None, slots=None):
    """Append the O(history) events of one phase: 'before', or 'after' with whether the converge
    changed anything (events with when=changed only then) and the slots it left running (each
    one's image, version, mode and image ID: the history says which image ran when)."""
    for event in events:
        if event["when"] != phase and not (phase == "after" and event["when"] == "changed" and changed):
            continue
        details = dict(event["details"])
        if phase == "after" and event.get("outcome", True):
            details["changed"] = bool(changed)
            if slots is not None:
                details["slots"] = slots
        session.record(event["event"], details, mode=event["mode"], version=event.get("version"))


def main():
    argument_spec = dict(ARGUMENT_SPEC, **session_argument_spec())
    argument_spec.update(progress.ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, add_file_common_args=True)
    params = module.params
    progress.start(params["progress_path"])
    if not params["steps"]:
        module.fail_json(msg="steps: give at least one step (files and state)")
    try:
        params["default_mode"] = parse_mode(params["mode"], "mode") if params["mode"] else DEFAULT_FILE_MODE
    except PlanError as exc:
        module.fail_json(msg=str(exc))
    history = params["history"] or {}
    session = Session(history.get("path"), params["actor"], params["release_lock"], module.check_mode,
                      stack=history.get("stack"), version=history.get("version"), mode=history.get("mode"),
                      history_key=params["history_key"])
    log = ActionLog()
    project = os.path.abspath(params["project_path"])
    converger = None
    try:
        engine = open_engine(runner=functools.partial(module.run_command, check_rc=False),
                             engine_api=params["engine_api"], check_mode=module.check_mode,
                             docker=module.get_bin_path("docker"))
        host = (DryRunStackHost if module.check_mode else StackHost)(
            engine, project, params, log, atomic_write=functools.partial(atomic_write, module))
        converger = Converger(host, params["steps"], params, diff=module._diff)
        session.check_lock()
        record(session, history.get("events", []), "before")
        # Slot, generation and health waits can outlast the lock's stale_after: keep it alive.
        with session.keep_alive():
            result = converger.converge()
        # Taken over during the converge (a keeper that could not refresh the lock): say so
        # rather than record events under another run's lock.
        session.check_lock("the converge ran, but its after events were not recorded")
        record(session, history.get("events", []), "after", result["changed"], result["state"].get("slots"))
        released = session.release("the stack converged and its events were recorded")
        if history:
            result.update(session.anchor())
        if released is not None:
            result["lock_released"] = released
    except (PlanError, ConvergeError, EngineError, SessionError, OSError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and not isinstance(exc, EngineError):
            message = "cannot write in %s: %s" % (project, exc.strerror or exc)
        module.fail_json(msg=message, actions=log.actions,
                         files_changed=converger.files_changed if converger else [],
                         changed=converger.changed if converger else False,
                         **(session.anchor() if history else {}))
    if module._diff:
        result["diff"] = converger.diff.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
