#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stack_teardown
short_description: Take a stack down under its lock, forget its files and record it, in one call
version_added: 0.1.0
description:
  - Runs on the Docker host and does the whole of a teardown in one round trip.
  - First it takes the stack lock O(lock_path), as M(swiftdeploy.stack.stack_lock) does, waiting
    up to O(lock_wait) seconds and naming the holder when it cannot; a dead holder's lock (no
    heartbeat for O(lock_stale_after) seconds, a time in the future, older than O(lock_ttl)) is
    taken over. Its heartbeat is refreshed while compose takes the stack down.
  - Then it runs C(docker compose down --volumes --remove-orphans) for the project's
    C(docker-compose.yml), giving each container O(timeout) seconds to stop (the stack's
    containers stop in about a second), and removes the entries of O(remove).
  - Then it appends a C(teardown) event to C(<project_path>/history.jsonl), as
    M(swiftdeploy.stack.audit_event) does (and before it a C(lock_wait) event when the lock had
    to be waited for, a C(lock_takeover) event when a dead holder's lock was taken over), unless
    O(history) is omitted.
  - Last it releases the lock, whatever happened before.
  - C(teardown.yml) used to do this in five module calls, each a round trip costing about half a
    second on a local host and more over SSH.
  - When C(docker compose down) fails, nothing is removed or recorded, the lock is released and
    the task fails with compose's own message.
  - A project directory without C(docker-compose.yml) (never deployed, or cleaned) has nothing to
    take down; the files are still removed and the teardown recorded.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.recording_action
  - swiftdeploy.stack.progress
options:
  project_path:
    description:
      - The stack's project directory on the Docker host, holding C(docker-compose.yml) (which
        names the compose project) and C(history.jsonl). Created (mode C(0750)) when missing, so
        that the history has somewhere to live.
    type: path
    required: true
  remove:
    description:
      - Entries of O(project_path) to remove once the stack is down, files and whole directories
        alike, as relative paths such as V(state.json) or V(nginx). Missing entries are fine.
      - Every name must stay inside O(project_path). Absolute names, C(..) and names that resolve
        outside through a symbolic link are refused before anything is done. A symbolic link
        named here is removed itself, never followed.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds C(docker compose down) gives each container to stop before killing it.
    type: int
    default: 5
  actor:
    description:
      - Who runs the teardown; the lock names it as its holder and the history as the actor.
        C(user) defaults to the remote user; C(playbook), C(awx_job_id) and C(awx_job_template)
        are kept when present.
    type: dict
  history_key:
    description:
      - The history key, held on the controller; the teardown event gets its C(mac) as
        M(swiftdeploy.stack.audit_event) gives it with O(swiftdeploy.stack.audit_event#module:history_key).
      - Never logged, never written to the host.
    type: str
  lock_wait:
    description: Seconds to wait for another run's lock before failing; V(0) fails at once.
    type: int
    default: 0
  lock_ttl:
    description:
      - Age in seconds after which a lock is taken over whatever its heartbeat (a backstop for
        a run that hangs while it keeps its lock alive), and the previous holder recorded.
    type: int
    default: 3600
  lock_path:
    description:
      - The stack lock, one per stack on the host, for example
        C(/run/lock/swiftdeploy/<stack>.lock) (the role's C(swiftdeploy_lock_dir)), as
        O(swiftdeploy.stack.stack_lock#module:path).
    type: path
    required: true
  lock_stale_after:
    description:
      - Seconds without a heartbeat after which the lock's holder counts as dead and its lock
        is taken over, as O(swiftdeploy.stack.stack_lock#module:stale_after).
    type: int
    default: 90
  history:
    description:
      - The C(teardown) event to record. Omit it to record nothing, for a teardown that purges the
        history (then list C(history.jsonl) and C(history.jsonl.lock) in O(remove)).
      - The module adds C(removed) (whether compose removed anything) and C(files_removed) to
        C(details).
    type: dict
    suboptions:
      stack:
        description: The stack's name.
        type: str
        required: true
      mode:
        description: The mode recorded.
        type: str
      version:
        description: The version recorded.
        type: str
      details:
        description: Anything else worth keeping about the teardown.
        type: dict
        default: {}
attributes:
  check_mode:
    support: full
    details:
      - Takes no lock (but still fails when another run holds it), stops nothing and removes
        nothing. RV(stack_removed) says whether compose has containers of the project to remove
        (C(docker compose ps --all)), RV(removed) lists the entries that exist, and RV(record) is
        the event that would be appended.
  diff_mode:
    support: partial
    details:
      - The diff lists the entries of O(remove) that are (or would be) removed.
  idempotent:
    support: partial
    details:
      - A second call takes nothing down and removes nothing (changed=false), but records a
        second C(teardown) event when O(history) is given, by design.
  platform:
    support: full
    platforms: posix
requirements:
  - The C(docker) CLI with the compose plugin (v2) on the Docker host, when there is a compose
    file to take down.
notes:
  - The history needs a local filesystem; C(flock) is not reliable over NFS.
seealso:
  - module: swiftdeploy.stack.stack_lock
  - module: swiftdeploy.stack.audit_event
  - module: swiftdeploy.stack.stack_converge
"""

EXAMPLES = r"""
- name: Take the stack down, delete the generated files and record it
  swiftdeploy.stack.stack_teardown:
    project_path: "{{ swiftdeploy_project_path }}"
    lock_path: /run/lock/swiftdeploy/shop.lock
    remove: [state.json, metrics, nginx, docker-compose.yml]
    actor: {user: deploy, playbook: SwiftDeploy teardown}
    history:
      stack: shop
      mode: stable
      version: "1.4.0"
      details: {clean: true}
  register: swiftdeploy_teardown
"""

RETURN = r"""
stack_removed:
  description:
    - Whether C(docker compose down) removed containers, networks or volumes (in check mode,
      whether the project has containers to remove).
  returned: always
  type: bool
  sample: true
removed:
  description: The entries of O(remove) that were (in check mode, would be) removed, in order.
  returned: always
  type: list
  elements: str
  sample: [state.json, nginx]
compose_output:
  description: What C(docker compose down) printed, one line per item, for the log.
  returned: when there was a compose file to take down (not in check mode)
  type: list
  elements: str
  sample: [" Container shop-nginx-1  Removed", " Network shop-net  Removed"]
waited_seconds:
  description: How long the lock was waited for.
  returned: always
  type: float
  sample: 0.0
taken_over:
  description:
    - The holder of a dead run's lock that was taken over, with C(reason), C(age_seconds) and
      C(heartbeat_age_seconds), as RV(swiftdeploy.stack.stack_lock#module:taken_over); null when none was.
  returned: always
  type: dict
  sample: null
holder:
  description: The holder of the lock when another run holds it.
  returned: when the lock is held by another run
  type: dict
  sample: {user: alice, playbook: SwiftDeploy promote, host: web1, pid: 4242, since: "2026-05-05T20:34:51Z"}
record:
  description:
    - The C(teardown) event appended to the history (in check mode, the one that would be), as
      M(swiftdeploy.stack.audit_event) returns it.
  returned: when O(history) is given
  type: dict
  sample: {seq: 42, event: teardown, stack: shop, details: {clean: true, removed: true, files_removed: [state.json]}}
seq:
  description: The record's position in the history; with RV(hash), the history's anchor.
  returned: when O(history) is given
  type: int
  sample: 42
hash:
  description: The record's hash.
  returned: when O(history) is given
  type: str
  sample: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"
anchor:
  description:
    - The history's anchor now kept on the controller (not in check mode). C(regressed) is there when
      the history on the host went backwards (deleted, cut or rewritten) since the anchor was kept.
  returned: when an event was recorded
  type: dict
  sample: {seq: 12, hash: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"}
history_path:
  description: The history's absolute path on the managed host, C(~) expanded there; the action keys the controller's anchor by it.
  returned: always
  type: str
  sample: /root/.swiftdeploy/shop/history.jsonl
"""

import os
import re
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as progress
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import LockError, acquire, option_problem
from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import inside, remove
from ansible_collections.swiftdeploy.stack.plugins.module_utils._session import Layout, Session, SessionError, session_argument_spec

# " Container shop-nginx-1  Removed", " Network shop-net  Removed", " Volume shop-logs  Removed"
REMOVED_LINE = re.compile(r"^\s*(Container|Network|Volume)\s+\S+\s+Removed\s*$")


class TeardownError(Exception):
    pass


class Teardown:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.layout = Layout(self.params["project_path"])
        self.project = self.params["project_path"]
        self.check = module.check_mode
        history = self.params["history"] or {}
        self.session = Session(self.layout.history, self.params["actor"], check_mode=self.check,
                               stack=history.get("stack"), version=history.get("version"), mode=history.get("mode"),
                               history_key=self.params["history_key"])
        self.result = {"changed": False, "stack_removed": False, "removed": [], "waited_seconds": 0.0,
                       "taken_over": None, "history_path": self.layout.history}

    def run(self):
        try:
            targets = [(name, inside(self.project, name)) for name in self.params["remove"]]
        except ValueError as exc:
            raise TeardownError(str(exc))
        lock = self.take_lock()
        self.session.release_lock = {"path": self.params["lock_path"], "token": lock["token"]}
        try:
            self.record_lock_wait()
            with self.session.keep_alive():
                self.compose_down()
            self.remove_files(targets)
            self.record_teardown()
        finally:
            try:
                self.session.release("the teardown ran")
            except SessionError as exc:
                raise TeardownError(str(exc))
        return self.result

    def take_lock(self):
        try:
            lock = acquire(self.params["lock_path"], self.session.actor, host=socket.gethostname(), pid=os.getpid(),
                           wait=self.params["lock_wait"], ttl=self.params["lock_ttl"],
                           stale_after=self.params["lock_stale_after"], check_mode=self.check)
        except LockError as exc:
            self.module.fail_json(msg=str(exc), holder=exc.holder, **self.result)
        except OSError as exc:
            self.module.fail_json(msg="cannot take the lock %s: %s; check that its directory is writable by the "
                                      "remote user." % (self.params["lock_path"], exc.strerror or exc), **self.result)
        progress.clear()  # the lock's wait, if there was one
        self.result["waited_seconds"] = lock["waited_seconds"]
        self.result["taken_over"] = lock["taken_over"]
        return lock

    def compose_down(self):
        if not os.path.exists(self.layout.compose):
            return
        try:
            engine = open_engine(runner=lambda argv: self.module.run_command(argv, check_rc=False),
                                 check_mode=self.check, docker=self.module.get_bin_path("docker"))
            with progress.waiting("the stack's containers to stop and be removed", None):
                output = engine.compose_down(self.project, self.params["timeout"])
        except EngineError as exc:
            raise TeardownError("%s; nothing was removed or recorded" % exc)
        lines = [line for line in output.splitlines() if line.strip()]
        self.result["compose_output"] = lines
        self.result["stack_removed"] = any(REMOVED_LINE.match(line) for line in lines)
        self.result["changed"] = self.result["changed"] or self.result["stack_removed"]

    def remove_files(self, targets):
        for name, target in targets:
            if not os.path.lexists(target):
                continue
            if not self.check:
                try:
                    remove(target)
                except OSError as exc:
                    raise TeardownError("cannot remove %s: %s; check that the remote user may write in %s"
                                        % (target, exc.strerror or exc, self.project))
            self.result["removed"].append(name)
        self.result["changed"] = self.result["changed"] or bool(self.result["removed"])

    def append(self, event, details):
        try:
            return self.session.record(event, details)
        except SessionError as exc:
            raise TeardownError(str(exc))

    def record_lock_wait(self):
        if not self.params["history"]:
            return
        if self.result["waited_seconds"] > 0:
            self.append("lock_wait", {"waited_seconds": self.result["waited_seconds"]})
        if self.result["taken_over"] is not None:
            self.append("lock_takeover", {"previous_holder": self.result["taken_over"]})

    def record_teardown(self):
        if not self.params["history"]:
            return
        details = dict(self.params["history"]["details"], removed=self.result["stack_removed"],
                       files_removed=list(self.result["removed"]))
        record = self.append("teardown", details)
        self.result.update(record=record, seq=record["seq"], hash=record["hash"])


def main():
    argument_spec = {
        "project_path": {"type": "path", "required": True},
        "remove": {"type": "list", "elements": "str", "default": []},
        "timeout": {"type": "int", "default": 5},
        "lock_wait": {"type": "int", "default": 0},
        "lock_ttl": {"type": "int", "default": 3600},
        "lock_path": {"type": "path", "required": True},
        "lock_stale_after": {"type": "int", "default": 90},
        "history": {"type": "dict", "options": {
            "stack": {"type": "str", "required": True},
            "mode": {"type": "str"},
            "version": {"type": "str"},
            "details": {"type": "dict", "default": {}},
        }},
    }
    argument_spec.update((name, spec) for name, spec in session_argument_spec().items() if name != "release_lock")
    argument_spec.update(progress.ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    progress.start(params["progress_path"])
    if params["timeout"] < 0:
        module.fail_json(msg="timeout: %d is negative; give the seconds each container has to stop (default 5)."
                             % params["timeout"])
    problem = option_problem(params["lock_wait"], params["lock_ttl"], "lock_wait", "lock_ttl",
                             params["lock_stale_after"], "lock_stale_after")
    if problem:
        module.fail_json(msg=problem)
    teardown = Teardown(module)
    try:
        result = teardown.run()
    except TeardownError as exc:
        module.fail_json(msg=str(exc), **teardown.result)
    if module._diff:
        listing = "".join("%s\n" % name for name in result["removed"])
        result["diff"] = {"before": listing, "after": "", "before_header": params["project_path"],
                          "after_header": params["project_path"]}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
