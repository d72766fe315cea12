"""The Rego policies: every test_ rule of policies/*_test.rego, run through regopy, and a few
decisions through decide(), the entry point the opa_decision_info module uses.

`opa test policies/` runs the same rules where OPA is available; this runner is how CI and
developers without OPA run them. Each rule is one pytest case. A test package is evaluated
once, whole, in an interpreter holding the policies, data.json and that one test file: a rule
that holds is true in the package document, a rule that fails is absent from it (undefined),
as `opa test` judges them. (Querying rule by rule gives the same verdicts but takes 30 s.)
"""

from __future__ import annotations

import functools
import json
import pathlib
import re

import pytest

regopy = pytest.importorskip("regopy", reason="regopy evaluates the policies; pip install regopy")

from ansible_collections.swiftdeploy.stack.plugins.module_utils._policy import decide  # noqa: E402

POLICY_DIR = pathlib.Path(__file__).resolve().parents[3] / "policies"
TEST_FILES = sorted(POLICY_DIR.glob("*_test.rego"))
POLICY_FILES = sorted(path for path in POLICY_DIR.glob("*.rego") if not path.name.endswith("_test.rego"))

_PACKAGE_RE = re.compile(r"^package\s+([\w.]+)", re.M)
_TEST_RULE_RE = re.compile(r"^(test_\w+)\s+if\b", re.M)
# regopy 1.5 crashes the whole process (SIGSEGV) on `with input as ...` when the rules it
# evaluates call any builtin; `with input.<key> as <local variable>` is safe.
_WHOLE_INPUT_OVERRIDE_RE = re.compile(r"\bwith\s+input\s+as\b")
_COMMENT_RE = re.compile(r"#[^\n]*")


def _test_rules():
    for path in TEST_FILES:
        text = path.read_text()
        package = _PACKAGE_RE.search(text).group(1)
        for rule in _TEST_RULE_RE.findall(text):
            yield pytest.param(path, package, rule, id="%s::%s" % (path.stem, rule))


def _interpreter(*extra_files):
    interpreter = regopy.Interpreter()
    for path in (*POLICY_FILES, *extra_files):
        interpreter.add_module(path.name, path.read_text())
    interpreter.add_data_json((POLICY_DIR / "data.json").read_text())
    return interpreter


def _evaluate_package(interpreter, package):
    """Return the test package's document, or raise AssertionError when it cannot be evaluated."""
    output = interpreter.query("data.%s" % package)
    assert output.ok() and output.results and output.results[0].expressions, (
        "data.%s cannot be evaluated (%s); a rule with conflicting values is the usual cause, "
        "`opa test policies/` names it" % (package, output))
    return output.results[0].expressions[0]


@functools.lru_cache(maxsize=None)
def _package_document(path, package):
    return _evaluate_package(_interpreter(path), package)


def _verdict(document, rule):
    """(passed, what the rule evaluated to), as `opa test` judges a test rule."""
    if rule not in document:
        return False, "undefined"
    return document[rule] is True, json.dumps(document[rule])


@pytest.mark.parametrize("path, package, rule", list(_test_rules()))
def test_rego_rule(path, package, rule):
    if _WHOLE_INPUT_OVERRIDE_RE.search(_COMMENT_RE.sub("", path.read_text())):
        pytest.fail("%s uses `with input as ...`, which crashes regopy; override input.<key> from a local "
                    "variable instead (see the header of the test files)" % path.name)
    passed, answer = _verdict(_package_document(path, package), rule)
    assert passed, "%s in %s is not true but %s (undefined: a condition in the rule does not hold)" % (
        rule, path.name, answer)


def test_every_policy_has_tests():
    tested = {_PACKAGE_RE.search(path.read_text()).group(1) for path in TEST_FILES}
    for path in POLICY_FILES:
        package = _PACKAGE_RE.search(path.read_text()).group(1)
        assert package + "_test" in tested, "%s (package %s) has no %s_test.rego" % (path.name, package, path.stem)


def test_test_rule_names_are_unique_per_file():
    for path in TEST_FILES:
        rules = _TEST_RULE_RE.findall(path.read_text())
        duplicates = sorted({rule for rule in rules if rules.count(rule) > 1})
        assert not duplicates, "%s defines %s more than once; OPA would report a conflict" % (path.name, duplicates)


def test_the_runner_reports_a_false_rule(tmp_path):
    """The runner itself: a false and an undefined test must fail, a true one pass."""
    probe = tmp_path / "probe_test.rego"
    probe.write_text(
        "package swiftdeploy.probe_test\n\nimport rego.v1\n\nimport data.swiftdeploy.canary\n\n"
        "test_true if {\n\tm := {}\n\td := canary.decision with input.metrics as m\n\td.allow == false\n}\n\n"
        "test_false if {\n\tm := {}\n\td := canary.decision with input.metrics as m\n\td.allow == true\n}\n")
    document = _evaluate_package(_interpreter(probe), "swiftdeploy.probe_test")
    assert _verdict(document, "test_true") == (True, "true")
    assert _verdict(document, "test_false") == (False, "undefined")
    assert _verdict(document, "test_missing") == (False, "undefined")


def test_data_json_holds_the_documented_defaults():
    assert json.loads((POLICY_DIR / "data.json").read_text()) == {"swiftdeploy": {"thresholds": {
        "min_disk_free_gb": 5.0, "max_cpu_load": 16.0, "min_mem_free_percent": 10.0,
        "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0, "min_requests": 20,
    }}}


# ------------------------------------------------------------------------------------------
# Decisions through decide(), as the module gets them
# ------------------------------------------------------------------------------------------

MANIFEST_THRESHOLDS = {
    "min_disk_free_gb": 5.0, "max_cpu_load": 8.0, "min_mem_free_percent": 10.0,
    "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0, "min_requests": 20,
}


def _embedded(domain, input_dict):
    result = decide("embedded", domain, input_dict, policy_dir=str(POLICY_DIR))
    assert result["error"] is None, result["error"]
    assert result["engine"] == "embedded"
    assert result["bypassed"] is False
    assert result["domain"] == domain
    return result


@pytest.mark.parametrize("host, reasons", [
    ({"disk_free_gb": 40.0, "cpu_load_1m": 0.7, "mem_free_percent": 55.0}, []),
    ({"disk_free_gb": 5.0, "cpu_load_1m": 8.0, "mem_free_percent": 10.0}, []),
    ({"disk_free_gb": 3.2, "cpu_load_1m": 9.5, "mem_free_percent": 4.1}, [
        "1-minute load 9.50 exceeds the maximum 8.00",
        "disk free 3.20 GB is below the minimum 5.00 GB",
        "memory free 4.10% is below the minimum 10.00%",
    ]),
    ({"cpu_load_1m": 0.7, "mem_free_percent": 55.0}, ["input host.disk_free_gb is missing or not a number"]),
], ids=["healthy", "at-every-threshold", "every-check-fails", "disk-missing"])
def test_infrastructure_decision(host, reasons):
    result = _embedded("infrastructure", {"host": host, "thresholds": MANIFEST_THRESHOLDS})
    assert result["reasons"] == reasons
    assert result["allow"] is (reasons == [])
    assert result["checked"] == {
        "disk_free_gb": host.get("disk_free_gb"), "cpu_load_1m": host.get("cpu_load_1m"),
        "mem_free_percent": host.get("mem_free_percent"),
        "min_disk_free_gb": 5.0, "max_cpu_load": 8.0, "min_mem_free_percent": 10.0,
    }


@pytest.mark.parametrize("metrics, reasons", [
    ({"requests": 120, "error_rate_percent": 0.4, "p99_latency_ms": 180.0, "window_seconds": 30}, []),
    ({"requests": 20, "error_rate_percent": 1.0, "p99_latency_ms": 500.0, "window_seconds": 30}, []),
    ({"requests": 7, "error_rate_percent": 0.0, "p99_latency_ms": 90.0, "window_seconds": 30},
     ["only 7 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data"]),
    ({"requests": 57, "error_rate_percent": 3.5, "p99_latency_ms": None, "window_seconds": 30}, [
        "error rate 3.50% exceeds the maximum 1.00%",
        "p99 latency is unknown although there were 57 requests: no latency data",
    ]),
    ({"requests": 0, "error_rate_percent": None, "p99_latency_ms": None, "window_seconds": 30},
     ["only 0 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data"]),
], ids=["healthy", "at-every-threshold", "not-enough-data", "errors-and-no-latency", "no-traffic"])
def test_canary_decision(metrics, reasons):
    result = _embedded("canary", {"metrics": metrics, "thresholds": MANIFEST_THRESHOLDS})
    assert result["reasons"] == reasons
    assert result["allow"] is (reasons == [])
    assert result["checked"]["requests"] == metrics["requests"]
    assert result["checked"]["min_requests"] == 20


@pytest.mark.parametrize("merged, reasons", [
    ({"requests": 300, "error_rate_percent": 0.0, "p99_latency_ms": 5.0, "window_seconds": 6}, []),
    ({"requests": 300, "error_rate_percent": 16.67, "p99_latency_ms": 5.0, "window_seconds": 6},
     ["error rate 16.67% exceeds the maximum 1.00%"]),
], ids=["merged-healthy", "merged-over"])
def test_a_fleet_is_judged_on_its_merged_metrics_whatever_input_fleet_holds(merged, reasons):
    """docs/fleet-canary.md: input.fleet carries each host's figures and the outliers for rules of
    one's own; the shipped policy decides on input.metrics, the merged figures, alone."""
    fleet = {"size": 3, "outliers": [{"host": "h2", "reasons": ["error rate 50.00% against 0.00% on the other hosts"]}],
             "hosts": {"h1": {"requests": 100, "errors": 0, "error_rate_percent": 0.0, "p99_latency_ms": 5.0,
                              "window_seconds": 6},
                       "h2": {"requests": 100, "errors": 50, "error_rate_percent": 50.0, "p99_latency_ms": None,
                              "window_seconds": 6}}}
    result = _embedded("canary", {"metrics": merged, "thresholds": MANIFEST_THRESHOLDS, "fleet": fleet})
    assert result["reasons"] == reasons
    assert result["allow"] is (reasons == [])


def test_thresholds_from_the_manifest_win_over_data_json():
    result = _embedded("canary", {
        "metrics": {"requests": 120, "error_rate_percent": 0.4, "p99_latency_ms": 180.0, "window_seconds": 30},
        "thresholds": dict(MANIFEST_THRESHOLDS, max_p99_latency_ms=150, min_requests=200),
    })
    assert result["reasons"] == [
        "only 120 requests in the 30 s window, fewer than the 200 needed for a decision: not enough data",
        "p99 latency 180.00 ms exceeds the maximum 150.00 ms",
    ]


def test_without_thresholds_data_json_applies():
    result = _embedded("infrastructure", {"host": {"disk_free_gb": 4.99, "cpu_load_1m": 16.01, "mem_free_percent": 10}})
    assert result["reasons"] == [
        "1-minute load 16.01 exceeds the maximum 16.00",
        "disk free 4.99 GB is below the minimum 5.00 GB",
    ]
    assert result["checked"]["min_mem_free_percent"] == 10.0


def test_test_files_are_not_loaded_for_decisions(tmp_path):
    for path in (*POLICY_FILES, POLICY_DIR / "data.json"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "broken_test.rego").write_text("package swiftdeploy.broken_test\n\nthis is not rego\n")
    result = _embedded("canary", {"metrics": {"requests": 0, "error_rate_percent": None, "p99_latency_ms": None,
                                              "window_seconds": 30}})
    assert result["allow"] is False


@pytest.mark.parametrize("requests, analysis, allow, hold", [
    (100, "pass", True, False),
    (5, "hold", False, True),
    (100, "rollback", False, False),
])
def test_an_automated_rollout_gets_hold_through_decide(requests, analysis, allow, hold):
    """docs/auto-rollout.md: with input.analysis the decision says whether to hold (not enough data)."""
    metrics = {"requests": requests, "error_rate_percent": 0.0, "p99_latency_ms": 5.0, "window_seconds": 6}
    result = _embedded("canary", {"metrics": metrics, "thresholds": MANIFEST_THRESHOLDS,
                                  "analysis": {"verdict": analysis, "reasons": ["errors: worse"]}})
    assert (result["allow"], result["hold"]) == (allow, hold)


def test_without_analysis_decide_gives_no_hold():
    metrics = {"requests": 100, "error_rate_percent": 0.0, "p99_latency_ms": 5.0, "window_seconds": 6}
    assert "hold" not in _embedded("canary", {"metrics": metrics, "thresholds": MANIFEST_THRESHOLDS})
