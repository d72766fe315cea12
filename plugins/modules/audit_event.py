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
  - swiftdeploy.stack.attributes.recording_action
  - swiftdeploy.stack.session
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
  host:
    description: The host name recorded; by default the managed host's own name.
    type: str
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._session import Session, SessionError, session_argument_spec

ARGUMENT_SPEC = {
    "path": {"type": "path", "required": True},
    "event": {"type": "str", "required": True},
    "stack": {"type": "str"},
    "mode": {"type": "str"},
    "version": {"type": "str"},
    "details": {"type": "dict", "default": {}},
    "host": {"type": "str"},
}


def main():
    module = AnsibleModule(argument_spec=dict(ARGUMENT_SPEC, **session_argument_spec()), supports_check_mode=True)
    params = module.params
    session = Session(params["path"], params["actor"], params["release_lock"], module.check_mode,
                      stack=params["stack"], version=params["version"], mode=params["mode"],
                      history_key=params["history_key"])
    try:
        session.check_lock()
        record = session.record(params["event"], params["details"], host=params["host"])
    except SessionError as exc:
        module.fail_json(msg=str(exc))
    result = {"changed": True, "record": record, "seq": record["seq"], "hash": record["hash"],
              "history_path": session.anchor()["history_path"]}
    try:
        released = session.release("the event was recorded (seq %s)" % record["seq"])
    except SessionError as exc:
        module.fail_json(msg=str(exc), **result)
    if released is not None:
        result["lock_released"] = released
    module.exit_json(**result)


if __name__ == "__main__":
    main()
