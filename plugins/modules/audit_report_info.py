#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: audit_report_info
short_description: Check a stack's history and write what happened as a Markdown report
version_added: 0.1.0
description:
  - Reads the history written by M(swiftdeploy.stack.audit_event) on the managed host once, line
    by line, and in that one pass checks its hash chain exactly as
    M(swiftdeploy.stack.audit_verify_info) does and sums up what happened.
  - Writes O(dest), GitHub Flavored Markdown with these sections. The title, with the stack, the
    host and the time of the last event. The chain verification (verified with the number of
    events and the last hash, or broken with the first broken line, its event and what is
    wrong). A summary (events, deploys, promotions, roll-backs, blocked operations, time spent in
    canary, events by type). A timeline of the last O(timeline_limit) events other than status
    scrapes. Mode changes with who made them (user, AWX job and template). Blocked operations
    with their policy reasons. Policy failures seen by status scrapes, identical reasons counted
    together. Chaos seen by status scrapes and its transitions. Lock waits. A Mermaid chart of
    the error rate and the P99 latency over time (at most 60 points), which GitHub renders.
  - Every table cell is escaped, so values with pipes, backticks, HTML, newlines or leading
    spaces show as they are; long values are cut with an ellipsis.
  - The report says when its history ends, not when it was generated, so an unchanged history
    gives an unchanged report and C(changed) is false.
  - A broken chain does not fail the task; RV(verified) and RV(problem) say what is wrong, and
    the playbook decides. Records after the first broken line are still summed up.
  - Memory stays bounded however long the history is. A history of more than 32 MiB is read in
    parts by up to one process per CPU (at most 4).
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  path:
    description: The history file, for example C(<project>/history.jsonl).
    type: path
    required: true
  dest:
    description:
      - Where to write the report, for example C(<project>/audit_report.md). The directory must
        exist.
      - The file is replaced atomically (a temporary file in the same directory, renamed over
        it) and gets mode C(0640).
    type: path
    required: true
  anchor:
    description:
      - A record known to be in the history, as returned by M(swiftdeploy.stack.audit_event)
        (RV(swiftdeploy.stack.audit_event#module:seq) and RV(swiftdeploy.stack.audit_event#module:hash)),
        checked as M(swiftdeploy.stack.audit_verify_info) checks it. A history that ends before it
        was truncated.
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
  stack:
    description: The stack's name in the title; by default the one the last event records.
    type: str
  host:
    description: The host's name in the title; by default the one the last event records.
    type: str
  timeline_limit:
    description:
      - How many of the latest events other than status scrapes the timeline shows. The report
        says how many earlier ones it leaves out.
    type: int
    default: 200
attributes:
  check_mode:
    support: full
    details:
      - Reads the history and returns everything, including whether O(dest) would change, but
        writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - The report depends on the history only, so it is rewritten only when the history has
        changed.
  platform:
    support: full
    platforms: posix
notes:
  - A missing history fails the task; see C(docs/audit-trail.md) in the collection for the
    report's sections and figures.
seealso:
  - module: swiftdeploy.stack.audit_event
  - module: swiftdeploy.stack.audit_verify_info
"""

EXAMPLES = r"""
- name: Write the audit report next to the history
  swiftdeploy.stack.audit_report_info:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"
    dest: "{{ swiftdeploy_project_path }}/audit_report.md"
  register: swiftdeploy_audit

- name: Stop when the history has been tampered with
  ansible.builtin.assert:
    that: swiftdeploy_audit.verified
    fail_msg: "History not intact: {{ swiftdeploy_audit.problem.reason | default('') }}"

- name: Check the history against the hash printed by an earlier run, with a short timeline
  swiftdeploy.stack.audit_report_info:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"
    dest: /srv/reports/shop-web1.md
    stack: shop
    host: web1
    timeline_limit: 50
    anchor:
      seq: 120
      hash: 0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b
"""

RETURN = r"""
verified:
  description: Whether the whole chain holds (and contains O(anchor) when given).
  returned: always
  type: bool
  sample: true
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
      description: The sentence M(swiftdeploy.stack.audit_verify_info) gives as its message.
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
summary:
  description: The figures of the report's summary.
  returned: always
  type: dict
  contains:
    events:
      description: Records in the history.
      type: int
    deploys:
      description: C(deploy) events.
      type: int
    promotions:
      description: C(promote) events, to canary and roll-forwards.
      type: int
    rollbacks:
      description: C(rollback) events.
      type: int
    blocked:
      description: C(deploy_blocked) and C(promote_blocked) events.
      type: int
    deploys_blocked:
      description: C(deploy_blocked) events.
      type: int
    promotions_blocked:
      description: C(promote_blocked) events.
      type: int
    teardowns:
      description: C(teardown) events.
      type: int
    policy_bypasses:
      description: C(policy_bypass) events.
      type: int
    lock_waits:
      description: C(lock_wait) events.
      type: int
    lock_wait_seconds:
      description: Seconds waited for the stack lock in all.
      type: float
    status_scrapes:
      description: C(status_scrape) events.
      type: int
    scrape_policy_failures:
      description: Status scrapes that saw the infrastructure or the canary policy fail.
      type: int
    chaos_transitions:
      description: Changes of the chaos state seen from one status scrape to the next.
      type: int
    canary_seconds:
      description: Seconds spent in canary, from each promotion to canary to the promotion,
        roll-back, teardown or deploy that ended it (or to the last event).
      type: float
    canary_periods:
      description: How many times the stack went into canary.
      type: int
    in_canary:
      description: Whether the stack was still in canary at the last event.
      type: bool
    not_records:
      description: Lines of the file that are not records.
      type: int
    first_timestamp:
      description: The timestamp of the first record; null for an empty history.
      type: str
    last_timestamp:
      description: The timestamp of the last record; null for an empty history.
      type: str
    events_by_type:
      description: How many records of each event.
      type: dict
  sample:
    events: 4000
    deploys: 12
    promotions: 9
    rollbacks: 2
    blocked: 3
    deploys_blocked: 1
    promotions_blocked: 2
    teardowns: 1
    policy_bypasses: 0
    lock_waits: 4
    lock_wait_seconds: 31.5
    status_scrapes: 3950
    scrape_policy_failures: 40
    chaos_transitions: 4
    canary_seconds: 5400.0
    canary_periods: 5
    in_canary: false
    not_records: 0
    first_timestamp: "2026-05-01T08:00:00.000Z"
    last_timestamp: "2026-05-05T20:34:51.123Z"
    events_by_type: {deploy: 12, promote: 9, status_scrape: 3950}
report:
  description: The path of the report, O(dest).
  returned: always
  type: str
  sample: /srv/shop/audit_report.md
chart_points:
  description: How many time buckets the chart shows; 0 when no status scrape had figures.
  returned: always
  type: int
  sample: 60
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_report import (
    ReportError,
    build_report,
    write_report,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import HistoryError


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "dest": {"type": "path", "required": True},
            "anchor": {
                "type": "dict",
                "options": {
                    "seq": {"type": "int", "required": True},
                    "hash": {"type": "str", "required": True},
                },
            },
            "stack": {"type": "str"},
            "host": {"type": "str"},
            "timeline_limit": {"type": "int", "default": 200},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = build_report(params["path"], anchor=params["anchor"],
                              timeline_limit=params["timeline_limit"], stack=params["stack"],
                              host=params["host"])
    except HistoryError as exc:
        module.fail_json(msg="anchor: %s" % exc)
    except ReportError as exc:
        module.fail_json(msg=str(exc))
    markdown = result.pop("markdown")
    dest = params["dest"]
    try:
        changed = write_report(dest, markdown, check_mode=module.check_mode)
    except ReportError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="cannot write the report %s: %s; check that its directory exists and "
                             "is writable by the remote user." % (dest, exc.strerror or exc))
    module.exit_json(changed=changed, report=dest, **result)


if __name__ == "__main__":
    main()
