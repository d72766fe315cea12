#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: audit_report_info
short_description: Check a stack's history and return what happened, for the audit report
version_added: 0.1.0
description:
  - Reads the history written by M(swiftdeploy.stack.audit_event) on the managed host once, and
    in that one pass checks its hash chain, returning the same verdict as
    M(swiftdeploy.stack.audit_verify_info) with the same keys, and sums up what happened.
  - Returns the data of every section of the audit report, which the C(swiftdeploy) role's
    template C(audit_report.md.j2) renders as GitHub Flavored Markdown. The title (the stack,
    the host and the time of the last event). The chain verification. A summary (events,
    deploys, promotions, roll-backs, blocked operations, time spent in canary, events by type).
    A timeline of the last O(timeline_limit) events other than status scrapes. Mode changes
    with who made them (user, AWX job and template). Blocked operations with their policy
    reasons. Policy failures seen by status scrapes, identical reasons counted together. Chaos
    seen by status scrapes and its transitions. Lock waits. The error rate and the P99 latency
    over time (at most 60 points).
  - Values are returned as the history holds them, not escaped; render them into Markdown with
    the P(swiftdeploy.stack.md_cell#filter), P(swiftdeploy.stack.md_text#filter) and
    P(swiftdeploy.stack.md_mermaid#filter) filters, as the role's template does.
  - The data depends on the history only, never on the time it is read, so an unchanged history
    gives unchanged data and an unchanged report.
  - A broken chain does not fail the task; RV(verified) and RV(problem) say what is wrong, and
    the playbook decides. Records after the first broken line are still summed up.
  - Memory stays bounded however long the history is. A history of more than 32 MiB is read in
    parts by up to one process per CPU (at most 4).
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
  anchor:
    description:
      - A record known to be in the history, as returned by M(swiftdeploy.stack.audit_event)
        (RV(swiftdeploy.stack.audit_event#module:seq) and RV(swiftdeploy.stack.audit_event#module:hash)),
        checked as M(swiftdeploy.stack.audit_verify_info) checks it. A history that ends before
        it was truncated.
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
      - How many of the latest events other than status scrapes the timeline returns. RV(timeline)
        says how many there are in all.
    type: int
    default: 200
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
  action:
    description: Has a corresponding action plugin, so some or all of its work runs on the controller.
    support: full
    details:
      - Without O(anchor), the action reads the anchor the controller kept for this stack and
        inventory host (C(<swiftdeploy_anchor_dir>/<stack>/<inventory_hostname>.<digest of the history path>.json), or the
        C(swiftdeploy_history_anchors) variable) and checks the history against it; a missing
        history that the anchor says existed fails, naming the seq and hash it should end at.
  platform:
    support: full
    platforms: posix
notes:
  - A missing history fails the task; see C(docs/audit-trail.md) in the collection for the
    report's sections and figures.
  - Renamed from C(audit_report), which also wrote the Markdown (its C(dest) option); the
    C(swiftdeploy) role now renders it with M(ansible.builtin.template).
seealso:
  - module: swiftdeploy.stack.audit_event
  - module: swiftdeploy.stack.audit_verify_info
  - module: ansible.builtin.template
"""

EXAMPLES = r"""
- name: Sum up the history
  swiftdeploy.stack.audit_report_info:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"
  register: swiftdeploy_audit

- name: Render the report next to the history, as the swiftdeploy role does
  ansible.builtin.template:
    src: "{{ swiftdeploy_audit_report_template }}"
    dest: "{{ swiftdeploy_project_path }}/audit_report.md"
    mode: "0640"

- name: Stop when the history has been tampered with
  ansible.builtin.assert:
    that: swiftdeploy_audit.verified
    fail_msg: "History not intact: {{ swiftdeploy_audit.problem.reason | default('') }}"

- name: Check the history against the hash printed by an earlier run, with a short timeline
  swiftdeploy.stack.audit_report_info:
    path: "{{ swiftdeploy_project_path }}/history.jsonl"
    stack: shop
    host: web1
    timeline_limit: 50
    anchor:
      seq: 120
      hash: 0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b
  register: swiftdeploy_audit
"""

RETURN = r"""
controller_anchor:
  description:
    - The anchor the controller kept for this history and checked it against (by the action, when
      O(anchor) was not given); C(regressed) when a run saw the history go backwards.
  returned: when the controller has an anchor for the history
  type: dict
  sample: {seq: 12, hash: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b"}
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
chart_points:
  description: How many time buckets the chart shows; 0 when no status scrape had figures.
  returned: always
  type: int
  sample: 60
title:
  description: What the report's title and first lines show.
  returned: always
  type: dict
  contains:
    stack:
      description: The stack's name (O(stack), else the last record's), V((unnamed)) when none.
      type: str
    host:
      description: The host's name (O(host), else the last record's), V((unknown host)) when none.
      type: str
    last_event:
      description: The timestamp of the last record; null for an empty history.
      type: str
    history:
      description: The history file, O(path).
      type: str
  sample:
    stack: shop
    host: web1
    last_event: "2026-05-05T20:34:51.123Z"
    history: /srv/shop/history.jsonl
chain:
  description: What the chain verification section shows besides the verdict.
  returned: always
  type: dict
  contains:
    anchor_seq:
      description: The seq of O(anchor); null without one.
      type: int
    sound_record_before:
      description: Whether a sound record comes before RV(problem) (then RV(last_seq) and
        RV(last_hash) describe it).
      type: bool
    not_records:
      description: Lines of the file that are not records, left out of every figure.
      type: int
  sample:
    anchor_seq: null
    sound_record_before: true
    not_records: 0
figures:
  description: The rows of the summary table, values as text ("2 (deploys 1, promotions 1)").
  returned: always
  type: list
  elements: dict
  contains:
    figure:
      description: What the row counts (V(Events), V(Deploys), V(Time in canary), ...).
      type: str
    value:
      description: Its value as text.
      type: str
  sample:
    - {figure: Events, value: "4,000"}
    - {figure: Time in canary, value: "1 h 30 min over 5 periods"}
events_by_type:
  description: How many records of each event, the most frequent first.
  returned: always
  type: list
  elements: dict
  contains:
    event:
      description: The event.
      type: str
    count:
      description: How many records carry it.
      type: int
  sample:
    - {event: status_scrape, count: 3950}
    - {event: deploy, count: 12}
timeline:
  description: The last O(timeline_limit) events other than status scrapes.
  returned: always
  type: dict
  contains:
    total:
      description: How many events other than status scrapes the history holds.
      type: int
    rows:
      description: The events shown, oldest first.
      type: list
      elements: dict
      contains:
        timestamp:
          description: When.
          type: str
        seq:
          description: The record's seq.
          type: int
        event:
          description: The event.
          type: str
        mode:
          description: The record's mode, empty when it has none.
          type: str
        version:
          description: The record's version, empty when it has none.
          type: str
        who:
          description: The actor's user, with the AWX job and template when present.
          type: str
        details:
          description: The details in one line (policy and reasons, the wait, or compact JSON).
          type: str
  sample:
    total: 1
    rows:
      - timestamp: "2026-05-05T20:01:00.000Z"
        seq: 1
        event: deploy
        mode: stable
        version: 1.0.0
        who: alice (AWX job 42, template promote)
        details: '{"generation":1}'
mode_changes:
  description: The last 100 mode changes (promotions, roll-backs, teardowns and the deploys that
    changed the mode).
  returned: always
  type: dict
  contains:
    total:
      description: How many mode changes the history holds.
      type: int
    rows:
      description: The mode changes shown, oldest first.
      type: list
      elements: dict
      contains:
        timestamp:
          description: When.
          type: str
        event:
          description: The event.
          type: str
        from_mode:
          description: The mode before, V(-) when unknown.
          type: raw
        to_mode:
          description: The mode after, V(-) when unknown.
          type: raw
        version:
          description: The record's version, empty when it has none.
          type: str
        details:
          description: The weight, the versions of a roll-forward, a roll-back's reason.
          type: str
        who:
          description: The actor's user, with the AWX job and template when present.
          type: str
  sample:
    total: 1
    rows:
      - {timestamp: "2026-05-05T20:03:00.000Z", event: promote, from_mode: stable, to_mode: canary,
         version: 1.0.0, details: "weight 20 %, canary 1.1.0", who: alice}
blocked:
  description: The last 100 blocked operations (C(deploy_blocked) and C(promote_blocked)).
  returned: always
  type: dict
  contains:
    total:
      description: How many operations were blocked.
      type: int
    rows:
      description: The blocked operations shown, oldest first.
      type: list
      elements: dict
      contains:
        timestamp:
          description: When.
          type: str
        event:
          description: The event.
          type: str
        target:
          description: V(deploy), or the mode a promotion aimed at; V(-) when unknown.
          type: raw
        policy:
          description: The policy that blocked it; V(-) when unknown.
          type: raw
        reasons:
          description: Its reasons, one a line; V(-) when none.
          type: str
        who:
          description: The actor's user, with the AWX job and template when present.
          type: str
  sample:
    total: 1
    rows:
      - {timestamp: "2026-05-05T20:06:00.000Z", event: deploy_blocked, target: deploy,
         policy: infrastructure, reasons: disk full, who: deploy}
policy_failures:
  description: Status scrapes that saw a failing policy, grouped by failing policy and identical
    reasons, the most frequent first (at most 50 groups, then one row for the reasons beyond
    500 distinct sets).
  returned: always
  type: dict
  contains:
    total:
      description: Status scrapes that saw a failing policy.
      type: int
    distinct:
      description: Distinct groups of failing policy and reasons.
      type: int
    shown:
      description: Groups in RV(policy_failures.rows), the pooled row left aside.
      type: int
    rows:
      description: The groups.
      type: list
      elements: dict
      contains:
        policies:
          description: The failing policies, comma-separated.
          type: str
        reasons:
          description: The reasons, one a line.
          type: str
        scrapes:
          description: How many scrapes saw them.
          type: int
        first_seen:
          description: The first of those scrapes.
          type: str
        last_seen:
          description: The last of those scrapes.
          type: str
  sample:
    total: 2
    distinct: 1
    shown: 1
    rows:
      - {policies: canary, reasons: "error rate 2.00% exceeds 1%", scrapes: 2,
         first_seen: "2026-05-05T20:04:00.000Z", last_seen: "2026-05-05T20:05:00.000Z"}
chaos:
  description: The chaos states status scrapes saw and the last 50 changes between them.
  returned: always
  type: dict
  contains:
    states:
      description: Each state but none, in the order first seen (at most 100, then one pooled).
      type: list
      elements: dict
      contains:
        state:
          description: The state, as text.
          type: str
        scrapes:
          description: How many scrapes saw it.
          type: int
        first_seen:
          description: The first of those scrapes.
          type: str
        last_seen:
          description: The last of those scrapes.
          type: str
    transitions_total:
      description: How many times the state changed from one scrape to the next.
      type: int
    transitions:
      description: The changes shown, oldest first.
      type: list
      elements: dict
      contains:
        timestamp:
          description: The scrape that saw the new state.
          type: str
        from_state:
          description: The state before.
          type: str
        to_state:
          description: The state after.
          type: str
  sample:
    states:
      - {state: error, scrapes: 2, first_seen: "2026-05-05T20:04:00.000Z", last_seen: "2026-05-05T20:05:00.000Z"}
    transitions_total: 1
    transitions:
      - {timestamp: "2026-05-05T20:04:00.000Z", from_state: none, to_state: error}
lock_waits:
  description: The last 50 waits for the stack lock.
  returned: always
  type: dict
  contains:
    total:
      description: How many runs waited.
      type: int
    waited:
      description: How long they waited in all, as text.
      type: str
    longest:
      description: The longest wait, as text.
      type: str
    rows:
      description: The waits shown, oldest first.
      type: list
      elements: dict
      contains:
        timestamp:
          description: When.
          type: str
        waited:
          description: Seconds waited, as text; V(-) when unknown.
          type: str
        who:
          description: The actor's user, with the AWX job and template when present.
          type: str
        stale_lock_broken:
          description: The holder of the stale lock broken, V(-) when none.
          type: raw
  sample:
    total: 1
    waited: 12 s
    longest: 12 s
    rows:
      - {timestamp: "2026-05-05T20:08:00.000Z", waited: "12.5", who: deploy, stale_lock_broken: "-"}
images:
  description:
    - Which image each slot ran from when, from the events that say what runs after them (their
      C(details.slots), recorded by M(swiftdeploy.stack.stack_converge)), the last 200 of them;
      a row per slot each time that changed, oldest first.
  returned: always
  type: dict
  contains:
    kept:
      description: How many such events were read.
      type: int
    rows:
      description:
        - C(timestamp), C(seq) and C(event) of the event from which on the slot ran it, C(slot),
          C(mode), C(image), C(image_id) (C((not recorded)) for events from before image IDs were
          kept) and C(version); a teardown gives one row with the image C((nothing runs)).
      type: list
      elements: dict
  sample:
    kept: 3
    rows:
      - {timestamp: "2026-12-07T11:40:02.113Z", seq: 4, event: deploy, slot: blue, mode: stable,
         image: "shop:latest", image_id: "sha256:226cb151e39fa61e4d4cbf1dacce6859f579f73be6313f7407561e918745fdbf",
         version: 1.0.0}
chart:
  description: The mean error rate and P99 of the status scrapes per time bucket, at most 60
    buckets; the lists are empty when no scrape had figures.
  returned: always
  type: dict
  contains:
    bucket:
      description: The width of a bucket, as text.
      type: str
    bucket_seconds:
      description: The width of a bucket in seconds.
      type: float
    scrapes:
      description: Status scrapes in the history.
      type: int
    labels:
      description: The start of each bucket in UTC (C(HH:MM), C(MM-DD HH:MM) or C(YYYY-MM-DD)).
      type: list
      elements: str
    error_rate:
      description: The mean error rate of each bucket in percent, as text; 0 without a figure.
      type: list
      elements: str
    p99:
      description: The mean P99 latency of each bucket in milliseconds, as text; 0 without a
        figure.
      type: list
      elements: str
  sample:
    bucket: 1 min
    bucket_seconds: 60.0
    scrapes: 2
    labels: ["20:04", "20:05"]
    error_rate: ["2", "3"]
    p99: ["120", "130"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import (
    ReportError,
    build_report,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import HistoryError


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
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
            "history_key": {"type": "str", "no_log": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = build_report(params["path"], anchor=params["anchor"],
                              timeline_limit=params["timeline_limit"], stack=params["stack"],
                              host=params["host"], key=params["history_key"])
    except HistoryError as exc:
        module.fail_json(msg="anchor: %s" % exc)
    except ReportError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
