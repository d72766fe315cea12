#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: audit_verify_info
short_description: Check the hash chain of a stack's history
version_added: 0.1.0
description:
  - Reads the history file written by M(swiftdeploy.stack.audit_event) on the managed host once,
    in bounded memory however long it is, and checks that every record's hash matches its
    content and that each record chains to the one before it.
  - Reports the first line where the chain breaks and why, telling an edited line from
    removed, inserted or reordered lines and from a malformed one.
  - Returns the same verdict as M(swiftdeploy.stack.audit_report_info), with the same keys; both
    read the history the same way. A history of more than 32 MiB is read in parts by up to one
    process per CPU (at most 4).
  - Lines cut from the end of the file leave a valid chain; give O(anchor), a C(seq) and C(hash)
    kept elsewhere, to detect that too.
  - A missing history is an empty, valid one.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.info_module
options:
  path:
    description: The history file, for example C(<project>/history.jsonl).
    type: path
    required: true
  fail_on_tamper:
    description:
      - Fail with the problem's message when the chain is broken. With V(false) the task
        succeeds and the result says what is wrong.
    type: bool
    default: true
  anchor:
    description:
      - A record known to be in the history, as returned by M(swiftdeploy.stack.audit_event)
        (RV(swiftdeploy.stack.audit_event#module:seq) and RV(swiftdeploy.stack.audit_event#module:hash)).
        The line with that C(seq) must carry that C(hash); a history that ends before it was
        truncated.
    type: dict
    suboptions:
      seq:
        description: The anchored record's seq.
        type: int
        required: true
      hash:
        description: The anchored record's hash.
        type: str
        required: true
  history_key:
    description:
      - The history key the events were recorded with (M(swiftdeploy.stack.audit_event)'s
        O(swiftdeploy.stack.audit_event#module:history_key)). With it, every record must carry a
        C(mac) that matches its hash under the key; the first one that does not is the problem
        (kind V(edited)). Lines rewritten and re-hashed without the key are found even where no
        anchor is kept.
      - Never logged. A keyed history is read the general way, a little slower than an unkeyed one.
    type: str
attributes:
  platform:
    support: full
    platforms: posix
notes:
  - See C(docs/audit-trail.md) in the collection for what can and cannot be detected.
  - Renamed from C(audit_verify), whose result said C(ok) and C(first_problem) (C(problem),
    C(message)) where this module says RV(verified) and RV(problem) (RV(problem.kind),
    RV(problem.reason)).
seealso:
  - module: swiftdeploy.stack.audit_event
  - module: swiftdeploy.stack.audit_report_info
"""

EXAMPLES = r"""
- name: Check the history before trusting it
  swiftdeploy.stack.audit_verify_info:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"

- name: Check it against the hash printed by an earlier run
  swiftdeploy.stack.audit_verify_info:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"
    anchor:
      seq: 120
      hash: 0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b

- name: Report without failing
  swiftdeploy.stack.audit_verify_info:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"
    fail_on_tamper: false
  register: swiftdeploy_history_check
"""

RETURN = r"""
verified:
  description: Whether the whole chain holds (and contains O(anchor) when given).
  returned: always
  type: bool
  sample: false
problem:
  description: The first line where the chain breaks; null when RV(verified) is true.
  returned: always
  type: dict
  contains:
    line:
      description: Line number in the file, from 1.
      type: int
    seq:
      description: The seq that line carries; null when it cannot be read.
      type: int
    event:
      description: The event that line carries; null when it cannot be read.
      type: str
    kind:
      description: One of V(edited), V(removed), V(inserted), V(reordered), V(malformed),
        V(truncated) (only with O(anchor)).
      type: str
    reason:
      description: One sentence naming the line and what happened to it.
      type: str
  sample:
    line: 17
    seq: 17
    event: promote
    kind: edited
    reason: "line 17 (seq 17, event promote): its hash does not match its content: the line was edited"
events:
  description: How many records the history holds (lines that are not records are left out).
  returned: always
  type: int
  sample: 4000
lines:
  description: How many lines the file has.
  returned: always
  type: int
  sample: 4000
last_seq:
  description: The seq of the last record before any problem; 0 for an empty history.
  returned: always
  type: int
  sample: 4000
last_hash:
  description: The hash of that record (64 zeros for an empty history); keep it as an anchor.
  returned: always
  type: str
  sample: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import (
    ReportError,
    verify_history,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import HistoryError


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "fail_on_tamper": {"type": "bool", "default": True},
            "history_key": {"type": "str", "no_log": True},
            "anchor": {
                "type": "dict",
                "options": {
                    "seq": {"type": "int", "required": True},
                    "hash": {"type": "str", "required": True},
                },
            },
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        verdict = verify_history(path, anchor=module.params["anchor"], key=module.params["history_key"])
    except HistoryError as exc:
        module.fail_json(msg="anchor: %s" % exc)
    except ReportError as exc:
        module.fail_json(msg="%s." % exc)
    if not verdict["verified"] and module.params["fail_on_tamper"]:
        module.fail_json(msg="history %s is not intact: %s" % (path, verdict["problem"]["reason"]),
                         **verdict)
    module.exit_json(changed=False, **verdict)


if __name__ == "__main__":
    main()
