#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: audit_event
short_description: Append one event to a stack's tamper-evident history
version_added: 0.1.0
description:
  - Appends one record to the history file (C(history.jsonl) in the project directory) on the
    managed host. Each record is one JSON line carrying C(seq), C(timestamp), O(event),
    O(stack), O(host), O(actor), O(mode), O(version), O(details), C(prev) (the hash of the
    record before it) and C(hash) (the SHA-256 of the record itself), so that any later edit,
    removal, insertion or reordering of lines is found by M(swiftdeploy.stack.audit_verify_info).
  - Concurrent writers, from parallel runs or forks, are serialised with an exclusive C(flock)
    on C(<path>.lock). Only the tail of the file is read, so appending costs the same however
    long the history is. Each line is written with one C(write) and synced to disk.
  - The directory of O(path) is created (mode C(0750)) when missing; the history is created
    with mode C(0640).
  - Keep the returned RV(hash) and RV(seq) somewhere the managed host cannot rewrite, such as
    the run's log or the AWX job output. They are the anchor that detects lines cut from the end
    of the file.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  path:
    description: The history file, for example C(<project>/history.jsonl).
    type: path
    required: true
  event:
    description:
      - What happened, for example V(deploy), V(deploy_blocked), V(promote), V(status_scrape),
        V(teardown), V(rollback), V(lock_wait), V(policy_bypass).
      - Lower-case letters, digits and C(_), starting with a letter, at most 64 characters.
    type: str
    required: true
  stack:
    description: The stack's name.
    type: str
  mode:
    description: The app's mode (V(stable) or V(canary)) the event concerns.
    type: str
  version:
    description: The app version the event concerns.
    type: str
  details:
    description: Anything else worth keeping about the event, as JSON-compatible data.
    type: dict
    default: {}
  actor:
    description:
      - Who caused the event. C(user) is required when given; C(awx_job_id) and
        C(awx_job_template) are kept when present. Keys whose value is null are dropped.
      - AWX passes its job id and template name as the extra variables C(awx_job_id) and
        C(awx_job_template_name), which only the playbook can see, so playbooks pass O(actor).
      - When omitted, C(user) is the remote user the module runs as on the managed host.
    type: dict
  host:
    description: The host name recorded; by default the managed host's own name.
    type: str
  release_lock:
    description:
      - After the event is written and synced, release the stack lock this run holds, as
        M(swiftdeploy.stack.stack_lock) with O(swiftdeploy.stack.stack_lock#module:state=released)
        would. A run's last event and the release then cost one round trip, and the event is
        always in the history before another run can take the stack.
      - When the release fails (wrong token), the event stays written and the task fails.
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
      - Writes nothing and returns the record it would append, with its C(seq), C(prev) and
        C(hash) as they would be.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every call appends one event, by design.
  platform:
    support: full
    platforms: posix
notes:
  - The history needs a local filesystem; C(flock) is not reliable over NFS.
  - See C(docs/audit-trail.md) in the collection for the line format and the hash chain.
seealso:
  - module: swiftdeploy.stack.audit_verify_info
"""

EXAMPLES = r"""
- name: Record the deploy
  swiftdeploy.stack.audit_event:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"
    event: deploy
    stack: "{{ swiftdeploy_stack.stack }}"
    mode: stable
    version: "{{ swiftdeploy_stack.services.version }}"
    actor:
      user: "{{ lookup('ansible.builtin.env', 'USER') }}"
      awx_job_id: "{{ awx_job_id | default(none) }}"
      awx_job_template: "{{ awx_job_template_name | default(none) }}"
    details:
      image: "{{ swiftdeploy_stack.services.image }}"
  register: swiftdeploy_history_entry

- name: Show the anchor of the history
  ansible.builtin.debug:
    msg: "history seq {{ swiftdeploy_history_entry.seq }} hash {{ swiftdeploy_history_entry.hash }}"
"""

RETURN = r"""
record:
  description: The record appended (in check mode, the record that would be appended).
  returned: always
  type: dict
  sample:
    seq: 17
    timestamp: "2026-05-05T20:34:51.123Z"
    event: promote
    stack: swiftdeploy
    host: web1
    actor: {user: deploy, awx_job_id: "42"}
    mode: canary
    version: "1.2.0"
    details: {from: stable}
    prev: "6f1ed002ab5595859014ebf0951522d9f3e3e3d8a7e8c7a6b5a4f3e2d1c0b9a8"
    hash: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"
seq:
  description: The record's position in the history, from 1.
  returned: always
  type: int
  sample: 17
hash:
  description: The record's hash; with RV(seq), an anchor for M(swiftdeploy.stack.audit_verify_info).
  returned: always
  type: str
  sample: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"
lock_released:
  description: Whether O(release_lock) removed the lock (false when there was none left to remove).
  returned: when O(release_lock) is given
  type: bool
  sample: true
"""

import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._identity import current_user
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import HistoryError, record_event
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import LockError, release


def record_fields(params):
    actor = dict(params["actor"] or {})
    if actor.get("user") is None:
        actor["user"] = current_user()
    return {
        "event": params["event"],
        "stack": params["stack"],
        "host": params["host"] or socket.gethostname(),
        "actor": actor,
        "mode": params["mode"],
        "version": params["version"],
        "details": params["details"],
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "event": {"type": "str", "required": True},
            "stack": {"type": "str"},
            "mode": {"type": "str"},
            "version": {"type": "str"},
            "details": {"type": "dict", "default": {}},
            "actor": {"type": "dict"},
            "host": {"type": "str"},
            "release_lock": {"type": "dict", "options": {
                "path": {"type": "path", "required": True},
                # Not a credential: it only stops one run from releasing another's lock.
                "token": {"type": "str", "required": True, "no_log": False},
            }},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    fields = record_fields(module.params)
    try:
        record = record_event(path, fields, module.check_mode)
    except HistoryError as exc:
        module.fail_json(msg=str(exc))
    result = {"changed": True, "record": record, "seq": record["seq"], "hash": record["hash"]}
    lock = module.params["release_lock"]
    if lock:
        try:
            result["lock_released"] = release(lock["path"], lock["token"], check_mode=module.check_mode)["changed"]
        except LockError as exc:
            module.fail_json(msg="the event was recorded (seq %s) but the lock was not released: %s"
                                 % (record["seq"], exc), **result)
        except OSError as exc:
            module.fail_json(msg="the event was recorded (seq %s) but the lock %s could not be released: %s"
                                 % (record["seq"], lock["path"], exc.strerror or exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
