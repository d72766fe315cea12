#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: opa_decision_info
short_description: Ask the SwiftDeploy policies for an allow or deny decision
version_added: 0.1.0
description:
  - Evaluates the decision of one policy domain, C(data.swiftdeploy.<domain>.decision), for
    the facts in O(input), and returns it with every reason for a deny.
  - The Rego policies in the collection's C(policies/) directory hold every allow/deny
    decision; this module only fetches the decision and reports it.
  - A deny does not fail the task. Register the result and decide in the playbook what to do
    and what to record. The task fails only on bad arguments.
  - B(Fails closed.) When no decision can be had (OPA unreachable or too slow, an HTTP error,
    an answer that is not JSON, an undefined or malformed decision, policies that do not
    compile), the result is a deny whose one reason is that error. With O(fail_open=true) it is
    an allow instead, marked RV(bypassed), whose reason names the error.
  - Where the policy runs depends on O(engine). V(embedded) evaluates the policies in-process
    on the controller with the C(regopy) library; V(external) asks a central OPA from the
    controller, as AWX runs it; V(sidecar) runs this module on the managed host, which asks the
    stack's own OPA container at its address on the OPA network, with the stack's token.
  - B(Sidecar trust.) The sidecar publishes no port. This module finds the container of the
    compose project's C(opa) service in O(project_dir) through the Docker engine, checks that
    its labels name O(stack) and that it is on O(network) alone, and only then sends it the
    token it reads from C(opa/token.json) on the host (as a bearer token). A sidecar
    that is not running or fails these checks is a deny, and the token is not sent.
  - B(External trust.) The URL must be C(https://) unless O(allow_http=true); certificates
    are verified (O(ca_path) for a private CA); O(token) is sent as a bearer token; a redirect
    is never followed, so a redirecting OPA is a deny.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.info_module
options:
  domain:
    description:
      - The policy domain. V(infrastructure) checks the host (disk, load, memory) before a
        deploy; V(canary) checks the canary's traffic (requests, error rate, p99 latency) before
        a promotion.
    type: str
    required: true
    choices: [infrastructure, canary]
  input:
    description:
      - The facts to decide on, sent as OPA's C(input) document.
      - For V(infrastructure), C(host) with C(disk_free_gb), C(cpu_load_1m) and
        C(mem_free_percent), and C(thresholds).
      - For V(canary), C(metrics) with C(requests), C(error_rate_percent), C(p99_latency_ms) and
        C(window_seconds), and C(thresholds). A rate or quantile is C(null) when there were no
        requests.
      - C(thresholds) are the manifest's C(policy.thresholds); a key left out falls back to the
        default in the collection's C(policies/data.json).
      - A missing or non-numeric figure is a deny, never an allow.
    type: dict
    required: true
  engine:
    description:
      - Where the policies are evaluated.
      - V(embedded) on the controller, in-process with the C(regopy) library and the policies
        in O(policy_dir). No OPA server is involved.
      - V(sidecar) on the managed host, by this module, against the stack's OPA container found
        through the Docker engine (O(project_dir), O(stack), O(network)).
      - V(external) on the controller, against the central OPA at O(url).
    type: str
    required: true
    choices: [embedded, sidecar, external]
  url:
    description:
      - Base URL of the central OPA as the controller reaches it, without C(/v1/data), such as
        C(https://opa.example.com:8181). Required for V(external), refused for V(sidecar).
      - C(http://) is refused unless O(allow_http=true).
      - Proxy settings from the environment are used, except for loopback addresses.
    type: str
  allow_http:
    description:
      - Accept a plain C(http://) O(url) for V(external). The decision and O(token) then travel
        unencrypted; the manifest's C(opa.allow_http) sets this.
    type: bool
    default: false
  token:
    description:
      - Bearer token sent to the V(external) OPA in the C(Authorization) header. Never logged nor
        returned. The V(sidecar) engine reads the stack's own token on the host instead.
    type: str
  ca_path:
    description:
      - PEM file of the CA certificates that verify the V(external) OPA's certificate, on the
        controller. Defaults to the system's trust store.
    type: path
  validate_certs:
    description:
      - Verify the V(external) OPA's TLS certificate. Turning this off lets anyone on the path
        answer in OPA's name; it exists for tests only.
    type: bool
    default: true
  project_dir:
    description:
      - For V(sidecar), the stack's project directory on the managed host (where
        C(docker-compose.yml) and C(opa/token.json) are). Required for V(sidecar).
    type: path
  stack:
    description:
      - For V(sidecar), the stack's name; the OPA container's labels must name it. Required
        for V(sidecar).
    type: str
  network:
    description:
      - For V(sidecar), the OPA network's name; the container must be on it and on no other.
        Required for V(sidecar).
    type: str
  timeout:
    description: Seconds to wait for OPA to answer before the decision counts as failed.
    type: float
    default: 5
  fail_open:
    description:
      - What to do when no decision can be had. V(false) denies (fail closed); V(true) allows,
        with RV(bypassed) set and the error as the reason.
      - A decision the policy did make is never changed by this option.
    type: bool
    default: false
  policy_dir:
    description:
      - The directory of C(.rego) files and C(data.json) that the V(embedded) engine loads,
        on the controller. C(*_test.rego) files are skipped.
      - A relative path is resolved against the playbook's directory.
      - Defaults to the collection's own C(policies/) directory. Ignored by the other engines.
    type: path
attributes:
  action:
    description: Has a corresponding action plugin, so some or all of its work runs on the controller.
    support: full
    details:
      - V(embedded) and V(external) run on the controller and do not contact the managed host.
      - V(sidecar) runs this module on the managed host.
  platform:
    support: full
    platforms: posix
    details:
      - Only V(sidecar) runs on the managed host, with nothing but Python's standard library.
notes:
  - The decision's C(reasons) are sorted, so equal inputs give equal results on every engine.
  - See C(docs/policies.md) in the collection for the decision shape, every reason and how to
    run the policy tests with C(opa test policies/).
requirements:
  - C(regopy) on the controller for O(engine=embedded).
seealso:
  - name: OPA REST API
    description: The data API the sidecar and external engines call.
    link: https://www.openpolicyagent.org/docs/rest-api
"""

EXAMPLES = r"""
- name: Read the 1-minute load average
  ansible.builtin.slurp:
    src: /proc/loadavg
  register: loadavg

- name: May we deploy on this host?
  swiftdeploy.stack.opa_decision_info:
    domain: infrastructure
    engine: embedded
    input:
      host:
        disk_free_gb: "{{ (ansible_facts.mounts | selectattr('mount', '==', '/') | first).size_available / 1e9 }}"
        cpu_load_1m: "{{ (loadavg.content | b64decode).split()[0] | float }}"
        mem_free_percent: "{{ 100 * ansible_facts.memfree_mb / ansible_facts.memtotal_mb }}"
      thresholds: "{{ swiftdeploy_stack.policy.thresholds }}"
  register: infrastructure_gate

- name: Stop here when the policy denies
  ansible.builtin.fail:
    msg: "Deploy blocked by policy: {{ infrastructure_gate.reasons | join('; ') }}"
  when: not infrastructure_gate.allow

- name: Ask the OPA sidecar on the host whether the canary may be promoted
  swiftdeploy.stack.opa_decision_info:
    domain: canary
    engine: sidecar
    project_dir: /srv/swiftdeploy
    stack: swiftdeploy
    network: swiftdeploy-net-opa
    input:
      metrics: "{{ canary_metrics }}"
      thresholds: "{{ swiftdeploy_stack.policy.thresholds }}"
  register: canary_gate

- name: Ask the central OPA, letting the promotion through if OPA is down
  swiftdeploy.stack.opa_decision_info:
    domain: canary
    engine: external
    url: https://opa.example.com:8181
    token: "{{ vault_opa_token }}"
    ca_path: /etc/pki/opa-ca.pem
    timeout: 2
    fail_open: true
    input:
      metrics: "{{ canary_metrics }}"
  register: canary_gate
"""

RETURN = r"""
allow:
  description: Whether the policy allows, or was bypassed under O(fail_open).
  returned: always
  type: bool
  sample: false
reasons:
  description:
    - Why the policy denies, one sentence each, sorted; empty when it allows.
    - When no decision could be had, the one reason is the error.
  returned: always
  type: list
  elements: str
  sample:
    - "disk free 3.20 GB is below the minimum 5.00 GB"
    - "memory free 4.10% is below the minimum 10.00%"
bypassed:
  description: Whether the policy was skipped because of an error and O(fail_open=true).
  returned: always
  type: bool
  sample: false
decision:
  description: The whole decision.
  returned: always
  type: dict
  contains:
    allow:
      description: As RV(allow).
      type: bool
      sample: false
    reasons:
      description: As RV(reasons).
      type: list
      elements: str
      sample: ["1-minute load 9.50 exceeds the maximum 8.00"]
    domain:
      description: The policy domain decided on.
      type: str
      sample: infrastructure
    checked:
      description:
        - The figures the decision rests on, and the thresholds in force; C(null) where a
          figure was missing or not a number. Empty when no decision could be had.
      type: dict
      sample: {disk_free_gb: 3.2, min_disk_free_gb: 5.0, cpu_load_1m: 9.5, max_cpu_load: 8.0,
               mem_free_percent: 4.1, min_mem_free_percent: 10.0}
    engine:
      description: The engine that was asked.
      type: str
      sample: embedded
    error:
      description:
        - Why no decision could be had, or C(null). C(kind) is one of V(unreachable),
          V(timeout), V(http_status), V(bad_json), V(undefined), V(malformed),
          V(rego_error), V(no_policy), V(missing_library), V(bad_input),
          V(sidecar_unavailable).
      type: dict
      sample: {kind: unreachable, message: "cannot connect to http://127.0.0.1:8181/v1/data/swiftdeploy/canary/decision:
               connection refused; is OPA running?"}
    bypassed:
      description: As RV(bypassed).
      type: bool
      sample: false
"""

import functools

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._opa_sidecar import SidecarError, find_sidecar, read_token
from ansible_collections.swiftdeploy.stack.plugins.module_utils._policy import DOMAINS, ENGINES, decide, unavailable

# Shared with the action plugin, which validates the same arguments on the controller.
ARGUMENT_SPEC = {
    "domain": {"type": "str", "required": True, "choices": list(DOMAINS)},
    "input": {"type": "dict", "required": True},
    "engine": {"type": "str", "required": True, "choices": list(ENGINES)},
    "url": {"type": "str"},
    "allow_http": {"type": "bool", "default": False},
    "token": {"type": "str", "no_log": True},
    "ca_path": {"type": "path"},
    "validate_certs": {"type": "bool", "default": True},
    "timeout": {"type": "float", "default": 5},
    "fail_open": {"type": "bool", "default": False},
    "policy_dir": {"type": "path"},
    "project_dir": {"type": "path"},
    "stack": {"type": "str"},
    "network": {"type": "str"},
}
REQUIRED_IF = [
    ("engine", "sidecar", ["project_dir", "stack", "network"]),
    ("engine", "external", ["url"]),
]


def check_engine_options(params):
    """Raise ValueError for options that do not belong to the engine chosen: the sidecar's
    address is found, never given, and its token is read on the host, never passed."""
    if params["engine"] == "sidecar":
        given = [name for name in ("url", "token", "ca_path") if params.get(name)]
        if given:
            raise ValueError("%s: not for the sidecar engine, which finds the stack's OPA container through the "
                             "Docker engine (project_dir, stack, network) and reads its token on the host"
                             % ", ".join(given))


def decision_result(decision):
    """The task result for a decision: the decision, and its main keys at the top."""
    return {
        "changed": False,
        "decision": decision,
        "allow": decision["allow"],
        "reasons": decision["reasons"],
        "bypassed": decision["bypassed"],
    }


def main():
    # On the managed host this runs for engine=sidecar; the action plugin handles the other
    # engines on the controller.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True)
    params = module.params
    try:
        check_engine_options(params)
        if params["engine"] != "sidecar":
            decision = decide(params["engine"], params["domain"], params["input"], policy_dir=params["policy_dir"],
                              url=params["url"], timeout=params["timeout"], fail_open=params["fail_open"],
                              token=params["token"], ca_path=params["ca_path"],
                              validate_certs=params["validate_certs"], require_https=not params["allow_http"])
        else:
            decision = ask_sidecar(module, params)
    except ValueError as exc:
        module.fail_json(msg="opa_decision: %s." % exc)
    module.exit_json(**decision_result(decision))


def ask_sidecar(module, params):
    """Find the stack's own OPA container, then ask it with the stack's token; a sidecar that
    cannot be found or trusted is a deny (or a bypass under fail_open), and gets no token."""
    try:
        token = read_token(params["project_dir"])
        engine = open_engine(runner=functools.partial(module.run_command, check_rc=False),
                             docker=module.get_bin_path("docker"))
        sidecar = find_sidecar(engine, params["project_dir"], params["stack"], params["network"])
    except (SidecarError, EngineError) as exc:
        return unavailable("sidecar", params["domain"], "sidecar_unavailable",
                           "no decision from the OPA sidecar: %s" % exc, params["fail_open"])
    return decide("sidecar", params["domain"], params["input"], url=sidecar["url"], timeout=params["timeout"],
                  fail_open=params["fail_open"], token=token)


if __name__ == "__main__":
    main()
