"""nginx.conf.j2 with a fresh baseline (analysis.baseline: fresh, docs/auto-rollout.md), rendered
without Docker: the baseline slot gets the canary's weight, taken from the stable slot
(tests/integration/test_fresh_baseline.py runs it in the stack's nginx under load)."""

import copy

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import (
    canary_target,
    initial_state,
    with_generations,
)

from role_templates import render_template, role_variables  # tests/unit/roles/role_templates.py

MINIMAL = {"stack": "shop", "services": {"image": "app:1", "port": 3000},
           "nginx": {"image": "nginx:1.27", "port": 8080}, "contact": "ops@example.com"}
STABLE = with_generations(initial_state("app:1.0.0", "1.0.0"), False, [initial_state("app:1.0.0", "1.0.0")])[0]


def canary(weight, baseline):
    """The live state of a canary of 1.1.0 at `weight`, beside a fresh baseline or not."""
    return with_generations(STABLE, True, [canary_target(STABLE, "app:1.1.0", "1.1.0", weight, baseline=baseline)])[0]


def render(live):
    data = copy.deepcopy(MINIMAL)
    data["analysis"] = {"baseline": "fresh"}
    variables = role_variables(validate_manifest(data), live, _swiftdeploy_tls={"stem": "0"})
    return render_template("nginx.conf.j2", variables)


def split_lines(conf):
    start = conf.index('split_clients "${request_id}" $swiftdeploy_slot {')
    body = conf[start:conf.index("\n    }", start)].splitlines()[1:]
    return [line.strip() for line in body if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("weight, lines", [
    (5, ["5% green;", "5% baseline;", "* blue;"]),
    (25, ["25% green;", "25% baseline;", "* blue;"]),
    # The stable slot gets nothing at 50: no '*' line, which would have no share left.
    (50, ["50% green;", "50% baseline;"]),
])
def test_nginx_gives_the_baseline_the_canarys_weight_taken_from_stable(weight, lines):
    live = canary(weight, baseline=True)
    assert live["baseline"] == "baseline"
    conf = render(live)
    assert split_lines(conf) == lines
    assert "upstream swiftdeploy_slot_baseline {" in conf and "server app-baseline:3000;" in conf
    assert "location = /slots/baseline/metrics {" in conf and "location = /slots/baseline/healthz {" in conf


def test_without_a_baseline_the_split_is_as_before():
    conf = render(canary(10, baseline=False))
    assert split_lines(conf) == ["10% green;", "* blue;"]
    assert "baseline" not in conf
