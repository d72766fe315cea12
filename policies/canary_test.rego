# Tests for policies/canary.rego: `opa test policies/` (CI and developers without OPA run the
# same rules through regopy: tests/unit/plugins/test_policies.py).
#
# Inputs are given with `with input.metrics as m with input.thresholds as t` inside _decide,
# never `with input as {...}`: regopy (rego-cpp) crashes on a whole-input override, and passes
# a rule reference after `as` through as undefined, so values reach `as` as local variables.
package swiftdeploy.canary_test

import rego.v1

import data.swiftdeploy.canary

_healthy := {"requests": 100, "error_rate_percent": 0.5, "p99_latency_ms": 120.0, "window_seconds": 30}

_limits := {"min_requests": 20, "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0}

_decide(metrics, limits) := d if {
	d := canary.decision with input.metrics as metrics with input.thresholds as limits
}

# No input.thresholds at all: every threshold comes from data.json.
_decide_with_defaults(metrics) := d if {
	d := canary.decision with input.metrics as metrics
}

_metrics_with(key, value) := object.union(_healthy, {key: value})

_metrics_without(key) := object.remove(_healthy, [key])

# --- a healthy canary ---

test_healthy_canary_is_allowed if {
	d := _decide(_healthy, _limits)
	d.allow == true
	d.reasons == []
	d.domain == "canary"
}

test_decision_reports_the_figures_checked if {
	d := _decide(_healthy, _limits)
	d.checked == {
		"requests": 100, "error_rate_percent": 0.5, "p99_latency_ms": 120.0, "window_seconds": 30,
		"min_requests": 20, "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0,
	}
}

# --- requests: the minimum itself is enough ---

test_requests_at_minimum_are_allowed if {
	d := _decide(_metrics_with("requests", 20), _limits)
	d.allow == true
	d.reasons == []
}

test_requests_just_above_minimum_are_allowed if {
	d := _decide(_metrics_with("requests", 21), _limits)
	d.allow == true
	d.reasons == []
}

test_requests_just_below_minimum_are_not_enough_data if {
	d := _decide(_metrics_with("requests", 19), _limits)
	d.allow == false
	d.reasons == ["only 19 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data"]
}

test_few_requests_message if {
	d := _decide(_metrics_with("requests", 7), _limits)
	d.reasons == ["only 7 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data"]
}

test_whole_number_floats_print_as_counts if {
	metrics := {"requests": 7.0, "error_rate_percent": 0.0, "p99_latency_ms": 80.0, "window_seconds": 60.0}
	d := _decide(metrics, {"min_requests": 20.0, "max_error_rate_percent": 1.0, "max_p99_latency_ms": 500.0})
	d.reasons == ["only 7 requests in the 60 s window, fewer than the 20 needed for a decision: not enough data"]
}

test_no_requests_with_null_rates_is_only_not_enough_data if {
	metrics := {"requests": 0, "error_rate_percent": null, "p99_latency_ms": null, "window_seconds": 30}
	d := _decide(metrics, _limits)
	d.allow == false
	d.reasons == ["only 0 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data"]
	d.checked.error_rate_percent == null
	d.checked.p99_latency_ms == null
}

# --- error rate: the maximum itself passes ---

test_error_rate_at_maximum_is_allowed if {
	d := _decide(_metrics_with("error_rate_percent", 1.0), _limits)
	d.allow == true
	d.reasons == []
}

test_error_rate_just_below_maximum_is_allowed if {
	d := _decide(_metrics_with("error_rate_percent", 0.99), _limits)
	d.allow == true
	d.reasons == []
}

test_error_rate_just_above_maximum_is_denied if {
	d := _decide(_metrics_with("error_rate_percent", 1.01), _limits)
	d.allow == false
	d.reasons == ["error rate 1.01% exceeds the maximum 1.00%"]
}

test_error_rate_message_has_two_decimals if {
	d := _decide(_metrics_with("error_rate_percent", 2.5), _limits)
	d.reasons == ["error rate 2.50% exceeds the maximum 1.00%"]
}

# OPA formats an integer such as 3 under sprintf("%.2f") as "%!f(int64=3)"; the policy must not.
test_error_rate_whole_numbers_have_two_decimals if {
	d := _decide(_metrics_with("error_rate_percent", 3), {"min_requests": 20, "max_error_rate_percent": 1, "max_p99_latency_ms": 500})
	d.reasons == ["error rate 3.00% exceeds the maximum 1.00%"]
}

test_zero_error_rate_is_allowed if {
	d := _decide(_metrics_with("error_rate_percent", 0), _limits)
	d.allow == true
}

# --- p99 latency: the maximum itself passes ---

test_p99_at_maximum_is_allowed if {
	d := _decide(_metrics_with("p99_latency_ms", 500.0), _limits)
	d.allow == true
	d.reasons == []
}

test_p99_just_below_maximum_is_allowed if {
	d := _decide(_metrics_with("p99_latency_ms", 499.99), _limits)
	d.allow == true
	d.reasons == []
}

test_p99_just_above_maximum_is_denied if {
	d := _decide(_metrics_with("p99_latency_ms", 500.01), _limits)
	d.allow == false
	d.reasons == ["p99 latency 500.01 ms exceeds the maximum 500.00 ms"]
}

test_p99_whole_numbers_have_two_decimals if {
	d := _decide(_metrics_with("p99_latency_ms", 612), {"min_requests": 20, "max_error_rate_percent": 1, "max_p99_latency_ms": 500})
	d.reasons == ["p99 latency 612.00 ms exceeds the maximum 500.00 ms"]
}

# --- null figures: allowed only when there were no requests ---

test_null_p99_with_requests_is_no_latency_data if {
	d := _decide(_metrics_with("p99_latency_ms", null), _limits)
	d.allow == false
	d.reasons == ["p99 latency is unknown although there were 100 requests: no latency data"]
}

test_null_error_rate_with_requests_is_no_error_data if {
	d := _decide(_metrics_with("error_rate_percent", null), _limits)
	d.allow == false
	d.reasons == ["error rate is unknown although there were 100 requests: no error data"]
}

# --- several problems: every reason, sorted ---

test_every_failed_check_is_reported_sorted if {
	metrics := {"requests": 7, "error_rate_percent": 2.5, "p99_latency_ms": 612.5, "window_seconds": 30}
	d := _decide(metrics, _limits)
	d.allow == false
	d.reasons == [
		"error rate 2.50% exceeds the maximum 1.00%",
		"only 7 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data",
		"p99 latency 612.50 ms exceeds the maximum 500.00 ms",
	]
}

# --- incomplete input never allows ---

test_missing_requests_are_denied if {
	d := _decide(_metrics_without("requests"), _limits)
	d.allow == false
	d.reasons == ["input metrics.requests is missing or not a number"]
	d.checked.requests == null
}

test_missing_window_is_denied if {
	d := _decide(_metrics_without("window_seconds"), _limits)
	d.allow == false
	d.reasons == ["input metrics.window_seconds is missing or not a number"]
}

test_missing_window_with_few_requests_names_no_window_length if {
	metrics := object.remove(_metrics_with("requests", 7), ["window_seconds"])
	d := _decide(metrics, _limits)
	d.reasons == [
		"input metrics.window_seconds is missing or not a number",
		"only 7 requests in the window, fewer than the 20 needed for a decision: not enough data",
	]
}

test_missing_error_rate_is_denied if {
	d := _decide(_metrics_without("error_rate_percent"), _limits)
	d.allow == false
	d.reasons == ["input metrics.error_rate_percent is missing or neither a number nor null"]
}

test_missing_p99_is_denied if {
	d := _decide(_metrics_without("p99_latency_ms"), _limits)
	d.allow == false
	d.reasons == ["input metrics.p99_latency_ms is missing or neither a number nor null"]
}

test_text_requests_are_denied if {
	d := _decide(_metrics_with("requests", "100"), _limits)
	d.allow == false
	d.reasons == ["input metrics.requests is missing or not a number"]
	d.checked.requests == null
}

test_null_requests_are_denied if {
	d := _decide(_metrics_with("requests", null), _limits)
	d.allow == false
	d.reasons == ["input metrics.requests is missing or not a number"]
}

test_text_error_rate_is_denied if {
	d := _decide(_metrics_with("error_rate_percent", "0.5"), _limits)
	d.allow == false
	d.reasons == ["input metrics.error_rate_percent is missing or neither a number nor null"]
}

test_boolean_p99_is_denied if {
	d := _decide(_metrics_with("p99_latency_ms", false), _limits)
	d.allow == false
	d.reasons == ["input metrics.p99_latency_ms is missing or neither a number nor null"]
}

test_empty_metrics_are_denied_for_every_figure if {
	d := _decide({}, _limits)
	d.allow == false
	d.reasons == [
		"input metrics.error_rate_percent is missing or neither a number nor null",
		"input metrics.p99_latency_ms is missing or neither a number nor null",
		"input metrics.requests is missing or not a number",
		"input metrics.window_seconds is missing or not a number",
	]
}

test_no_input_at_all_is_denied if {
	d := canary.decision
	d.allow == false
	count(d.reasons) == 4
}

# --- thresholds: the input's, key by key over data.json ---

test_defaults_come_from_data_json if {
	d := _decide_with_defaults(_healthy)
	d.allow == true
	d.checked.min_requests == 20
	d.checked.max_error_rate_percent == 1.0
	d.checked.max_p99_latency_ms == 500.0
}

test_default_minimum_requests_applies if {
	d := _decide_with_defaults(_metrics_with("requests", 19))
	d.reasons == ["only 19 requests in the 30 s window, fewer than the 20 needed for a decision: not enough data"]
}

test_default_maximum_error_rate_applies if {
	d := _decide_with_defaults(_metrics_with("error_rate_percent", 1.01))
	d.reasons == ["error rate 1.01% exceeds the maximum 1.00%"]
}

test_default_maximum_p99_applies if {
	d := _decide_with_defaults(_metrics_with("p99_latency_ms", 500.01))
	d.reasons == ["p99 latency 500.01 ms exceeds the maximum 500.00 ms"]
}

test_input_thresholds_override_the_defaults if {
	d := _decide(_healthy, {"min_requests": 150, "max_error_rate_percent": 0.25, "max_p99_latency_ms": 100})
	d.reasons == [
		"error rate 0.50% exceeds the maximum 0.25%",
		"only 100 requests in the 30 s window, fewer than the 150 needed for a decision: not enough data",
		"p99 latency 120.00 ms exceeds the maximum 100.00 ms",
	]
}

test_input_can_relax_a_threshold if {
	d := _decide(_metrics_with("requests", 5), {"min_requests": 5})
	d.allow == true
	d.checked.min_requests == 5
}

test_absent_input_threshold_falls_back_per_key if {
	d := _decide(_healthy, {"max_p99_latency_ms": 100})
	d.reasons == ["p99 latency 120.00 ms exceeds the maximum 100.00 ms"]
	d.checked.min_requests == 20
	d.checked.max_error_rate_percent == 1.0
}

test_data_thresholds_are_the_defaults if {
	metrics := _healthy
	defaults := {"min_requests": 1000, "max_error_rate_percent": 1, "max_p99_latency_ms": 500}
	d := canary.decision with input.metrics as metrics with data.swiftdeploy.thresholds as defaults
	d.reasons == ["only 100 requests in the 30 s window, fewer than the 1000 needed for a decision: not enough data"]
}

test_non_numeric_input_threshold_is_denied if {
	d := _decide(_healthy, {"max_error_rate_percent": "1"})
	d.allow == false
	d.reasons == ["threshold max_error_rate_percent is missing or not a number"]
	d.checked.max_error_rate_percent == null
}

test_threshold_missing_everywhere_is_denied if {
	metrics := _healthy
	defaults := {"max_error_rate_percent": 1, "max_p99_latency_ms": 500}
	d := canary.decision with input.metrics as metrics with data.swiftdeploy.thresholds as defaults
	d.allow == false
	d.reasons == ["threshold min_requests is missing or not a number"]
}

# --- input.analysis: the comparison with the live baseline (an automated rollout) ---

_decide_auto(metrics, analysis) := d if {
	d := canary.decision with input.metrics as metrics with input.thresholds as _limits with input.analysis as analysis
}

test_analysis_pass_allows_and_does_not_hold if {
	d := _decide_auto(_healthy, {"verdict": "pass", "reasons": ["errors: 1000 canary requests without evidence"]})
	d.allow == true
	d.hold == false
}

test_analysis_waiting_does_not_deny if {
	d := _decide_auto(_healthy, {"verdict": "hold", "reasons": ["errors: 30 of the 1000 canary requests needed"]})
	d.allow == true
	d.hold == false
}

test_analysis_rejection_denies_naming_it if {
	a := {"verdict": "rollback", "reasons": ["errors: the canary's 5xx rate is higher than the baseline's"]}
	d := _decide_auto(_healthy, a)
	d.allow == false
	d.hold == false
	d.reasons == ["the comparison with the baseline rejects the canary: errors: the canary's 5xx rate is higher than the baseline's"]
}

test_analysis_rejection_without_reasons_still_denies if {
	d := _decide_auto(_healthy, {"verdict": "rollback"})
	d.allow == false
	d.reasons == ["the comparison with the baseline rejects the canary"]
}

test_too_few_requests_hold_even_with_a_high_rate if {
	d := _decide_auto(object.union(_healthy, {"requests": 5, "error_rate_percent": 20.0}), {"verdict": "hold", "reasons": []})
	d.allow == false
	d.hold == true
}

test_too_few_requests_do_not_hold_a_rejected_canary if {
	d := _decide_auto(_metrics_with("requests", 5), {"verdict": "rollback", "reasons": ["errors: worse"]})
	d.allow == false
	d.hold == false
}

test_enough_requests_over_a_threshold_do_not_hold if {
	d := _decide_auto(_metrics_with("error_rate_percent", 20.0), {"verdict": "hold", "reasons": []})
	d.allow == false
	d.hold == false
}

test_a_bad_analysis_verdict_denies if {
	d := _decide_auto(_healthy, {"verdict": "maybe"})
	d.allow == false
	d.reasons == ["input analysis.verdict is missing or not one of pass, hold, rollback"]
}

test_without_analysis_the_decision_has_no_hold if {
	d := _decide(_healthy, _limits)
	not "hold" in object.keys(d)
}

test_a_slow_first_window_holds_the_step if {
	a := {"verdict": "hold", "reasons": [], "latency_warm_up": true}
	d := _decide_auto(_metrics_with("p99_latency_ms", 900.0), a)
	d.allow == false
	d.hold == true
	d.reasons == ["p99 latency 900.00 ms exceeds the maximum 500.00 ms in the first window after the canary started (its warm-up): held, the windows after it decide"]
}

test_a_slow_first_window_with_errors_over_the_maximum_does_not_hold if {
	a := {"verdict": "hold", "reasons": [], "latency_warm_up": true}
	d := _decide_auto(object.union(_healthy, {"p99_latency_ms": 900.0, "error_rate_percent": 20.0}), a)
	d.allow == false
	d.hold == false
}

test_a_slow_window_after_the_first_does_not_hold if {
	a := {"verdict": "hold", "reasons": [], "latency_warm_up": false}
	d := _decide_auto(_metrics_with("p99_latency_ms", 900.0), a)
	d.allow == false
	d.hold == false
	d.reasons == ["p99 latency 900.00 ms exceeds the maximum 500.00 ms"]
}

test_a_fast_first_window_allows if {
	d := _decide_auto(_healthy, {"verdict": "pass", "reasons": [], "latency_warm_up": true})
	d.allow == true
	d.hold == false
}

test_a_rejected_first_window_does_not_hold if {
	a := {"verdict": "rollback", "reasons": ["errors: worse"], "latency_warm_up": true}
	d := _decide_auto(_metrics_with("p99_latency_ms", 900.0), a)
	d.allow == false
	d.hold == false
}
