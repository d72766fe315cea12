# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The options of every module that records events in a stack's history or gives its lock back,
described once (module_utils/_session.py's session_argument_spec() defines them once)."""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  actor:
    description:
      - Who caused the events (and holds the lock). C(user) is required when given;
        C(playbook), C(awx_job_id) and C(awx_job_template) are kept when present. Keys whose
        value is null are dropped.
      - AWX passes its job id and template name as the extra variables C(awx_job_id) and
        C(awx_job_template_name), which only the playbook can see, so playbooks pass O(actor).
      - When omitted, or without C(user), C(user) is the login name the module runs as on the
        managed host.
    type: dict
  history_key:
    description:
      - The history key, held on the controller (Ansible Vault, an AWX credential). With it every
        event gets C(mac), the HMAC-SHA256 of its hash under the key, so lines rewritten and
        re-hashed by someone without the key fail the audit (given the same key).
      - Never logged, never written to the host.
    type: str
  release_lock:
    description:
      - After the events are written and synced, release the stack lock this run holds, as
        M(swiftdeploy.stack.stack_lock) with O(swiftdeploy.stack.stack_lock#module:state=released)
        would. A run's last event and the release then cost one round trip, and the events are
        always in the history before another run can take the stack.
      - Before anything is written, the module checks that the lock is still this run's (it fails,
        changing nothing, when the lock is gone or another run holds it). When the release fails
        (wrong token), the events stay written and the task fails. In check mode nothing is checked
        or removed.
      - Every check also refreshes the lock's heartbeat, and a module that waits (for slots or
        health) refreshes it every few seconds while it waits, so that a long run is not taken
        for a dead one.
    type: dict
    suboptions:
      path:
        description: The lock file.
        type: path
        required: true
      token:
        description:
          - The run's token, the one the lock was taken with. It is kept out of every output
            (C(no_log)), since whoever has it can release or refresh the run's lock.
        type: str
        required: true
      keep:
        description:
          - Check the lock and refresh its heartbeat, but keep it held; the run's next module
            releases it. A repair after a takeover (the run's operation follows) uses it.
        type: bool
        default: false
"""
