# Tests for policies/infrastructure.rego: `opa test policies/` (CI and developers without OPA
# run the same rules through regopy: tests/unit/plugins/test_policies.py).
#
# Inputs are given with `with input.host as h with input.thresholds as t` inside _decide,
# never `with input as {...}`: regopy (rego-cpp) crashes on a whole-input override, and passes
# a rule reference after `as` through as undefined, so values reach `as` as local variables.
package swiftdeploy.infrastructure_test

import rego.v1

import data.swiftdeploy.infrastructure

_healthy := {"disk_free_gb": 50.0, "cpu_load_1m": 0.5, "mem_free_percent": 60.0}

_limits := {"min_disk_free_gb": 5.0, "max_cpu_load": 8.0, "min_mem_free_percent": 10.0}

_decide(host, limits) := d if {
	d := infrastructure.decision with input.host as host with input.thresholds as limits
}

# No input.thresholds at all: every threshold comes from data.json.
_decide_with_defaults(host) := d if {
	d := infrastructure.decision with input.host as host
}

_host_with(key, value) := object.union(_healthy, {key: value})

_host_without(key) := object.remove(_healthy, [key])

# --- a healthy host ---

test_healthy_host_is_allowed if {
	d := _decide(_healthy, _limits)
	d.allow == true
	d.reasons == []
	d.domain == "infrastructure"
}

test_decision_reports_the_figures_checked if {
	d := _decide(_healthy, _limits)
	d.checked == {
		"disk_free_gb": 50.0, "cpu_load_1m": 0.5, "mem_free_percent": 60.0,
		"min_disk_free_gb": 5.0, "max_cpu_load": 8.0, "min_mem_free_percent": 10.0,
	}
}

# --- disk free: the minimum itself passes ---

test_disk_at_minimum_is_allowed if {
	d := _decide(_host_with("disk_free_gb", 5.0), _limits)
	d.allow == true
	d.reasons == []
}

test_disk_just_above_minimum_is_allowed if {
	d := _decide(_host_with("disk_free_gb", 5.01), _limits)
	d.allow == true
	d.reasons == []
}

test_disk_just_below_minimum_is_denied if {
	d := _decide(_host_with("disk_free_gb", 4.99), _limits)
	d.allow == false
	d.reasons == ["disk free 4.99 GB is below the minimum 5.00 GB"]
}

test_disk_message_has_two_decimals if {
	d := _decide(_host_with("disk_free_gb", 3.2), _limits)
	d.reasons == ["disk free 3.20 GB is below the minimum 5.00 GB"]
}

# OPA formats an integer such as 3 under sprintf("%.2f") as "%!f(int64=3)"; the policy must not.
test_disk_whole_numbers_have_two_decimals if {
	d := _decide(_host_with("disk_free_gb", 3), {"min_disk_free_gb": 5, "max_cpu_load": 8, "min_mem_free_percent": 10})
	d.reasons == ["disk free 3.00 GB is below the minimum 5.00 GB"]
}

test_disk_zero_is_denied if {
	d := _decide(_host_with("disk_free_gb", 0), _limits)
	d.reasons == ["disk free 0.00 GB is below the minimum 5.00 GB"]
}

# --- 1-minute load: the maximum itself passes ---

test_load_at_maximum_is_allowed if {
	d := _decide(_host_with("cpu_load_1m", 8.0), _limits)
	d.allow == true
	d.reasons == []
}

test_load_just_below_maximum_is_allowed if {
	d := _decide(_host_with("cpu_load_1m", 7.99), _limits)
	d.allow == true
	d.reasons == []
}

test_load_just_above_maximum_is_denied if {
	d := _decide(_host_with("cpu_load_1m", 8.01), _limits)
	d.allow == false
	d.reasons == ["1-minute load 8.01 exceeds the maximum 8.00"]
}

test_load_message_has_two_decimals if {
	d := _decide(_host_with("cpu_load_1m", 9.5), _limits)
	d.reasons == ["1-minute load 9.50 exceeds the maximum 8.00"]
}

# --- memory free: the minimum itself passes ---

test_memory_at_minimum_is_allowed if {
	d := _decide(_host_with("mem_free_percent", 10.0), _limits)
	d.allow == true
	d.reasons == []
}

test_memory_just_above_minimum_is_allowed if {
	d := _decide(_host_with("mem_free_percent", 10.01), _limits)
	d.allow == true
	d.reasons == []
}

test_memory_just_below_minimum_is_denied if {
	d := _decide(_host_with("mem_free_percent", 9.99), _limits)
	d.allow == false
	d.reasons == ["memory free 9.99% is below the minimum 10.00%"]
}

test_memory_message_has_two_decimals if {
	d := _decide(_host_with("mem_free_percent", 4.1), _limits)
	d.reasons == ["memory free 4.10% is below the minimum 10.00%"]
}

# --- several problems: every reason, sorted ---

test_every_failed_check_is_reported_sorted if {
	d := _decide({"disk_free_gb": 3.2, "cpu_load_1m": 9.5, "mem_free_percent": 4.1}, _limits)
	d.allow == false
	d.reasons == [
		"1-minute load 9.50 exceeds the maximum 8.00",
		"disk free 3.20 GB is below the minimum 5.00 GB",
		"memory free 4.10% is below the minimum 10.00%",
	]
}

# --- incomplete input never allows ---

test_missing_disk_is_denied if {
	d := _decide(_host_without("disk_free_gb"), _limits)
	d.allow == false
	d.reasons == ["input host.disk_free_gb is missing or not a number"]
	d.checked.disk_free_gb == null
}

test_missing_load_is_denied if {
	d := _decide(_host_without("cpu_load_1m"), _limits)
	d.allow == false
	d.reasons == ["input host.cpu_load_1m is missing or not a number"]
}

test_missing_memory_is_denied if {
	d := _decide(_host_without("mem_free_percent"), _limits)
	d.allow == false
	d.reasons == ["input host.mem_free_percent is missing or not a number"]
}

test_text_figure_is_denied if {
	d := _decide(_host_with("disk_free_gb", "50"), _limits)
	d.allow == false
	d.reasons == ["input host.disk_free_gb is missing or not a number"]
	d.checked.disk_free_gb == null
}

test_null_figure_is_denied if {
	d := _decide(_host_with("cpu_load_1m", null), _limits)
	d.allow == false
	d.reasons == ["input host.cpu_load_1m is missing or not a number"]
}

test_boolean_figure_is_denied if {
	d := _decide(_host_with("mem_free_percent", true), _limits)
	d.allow == false
	d.reasons == ["input host.mem_free_percent is missing or not a number"]
}

test_empty_host_is_denied_for_every_figure if {
	d := _decide({}, _limits)
	d.allow == false
	d.reasons == [
		"input host.cpu_load_1m is missing or not a number",
		"input host.disk_free_gb is missing or not a number",
		"input host.mem_free_percent is missing or not a number",
	]
}

test_host_that_is_not_an_object_is_denied if {
	d := _decide("host", _limits)
	d.allow == false
	count(d.reasons) == 3
}

test_no_input_at_all_is_denied if {
	d := infrastructure.decision
	d.allow == false
	d.reasons == [
		"input host.cpu_load_1m is missing or not a number",
		"input host.disk_free_gb is missing or not a number",
		"input host.mem_free_percent is missing or not a number",
	]
}

# --- thresholds: the input's, key by key over data.json ---

test_defaults_come_from_data_json if {
	d := _decide_with_defaults(_healthy)
	d.allow == true
	d.checked.min_disk_free_gb == 5.0
	d.checked.max_cpu_load == 16.0
	d.checked.min_mem_free_percent == 10.0
}

test_default_minimum_disk_applies if {
	d := _decide_with_defaults(_host_with("disk_free_gb", 4.99))
	d.reasons == ["disk free 4.99 GB is below the minimum 5.00 GB"]
}

test_default_maximum_load_applies if {
	d := _decide_with_defaults(_host_with("cpu_load_1m", 16.01))
	d.reasons == ["1-minute load 16.01 exceeds the maximum 16.00"]
}

test_default_minimum_memory_applies if {
	d := _decide_with_defaults(_host_with("mem_free_percent", 9.99))
	d.reasons == ["memory free 9.99% is below the minimum 10.00%"]
}

test_input_thresholds_override_the_defaults if {
	d := _decide(_healthy, {"min_disk_free_gb": 60, "max_cpu_load": 0.25, "min_mem_free_percent": 75.5})
	d.reasons == [
		"1-minute load 0.50 exceeds the maximum 0.25",
		"disk free 50.00 GB is below the minimum 60.00 GB",
		"memory free 60.00% is below the minimum 75.50%",
	]
}

test_input_can_relax_a_threshold if {
	d := _decide(_host_with("disk_free_gb", 1.5), {"min_disk_free_gb": 1.5})
	d.allow == true
	d.checked.min_disk_free_gb == 1.5
}

test_absent_input_threshold_falls_back_per_key if {
	d := _decide(_healthy, {"max_cpu_load": 0.1})
	d.reasons == ["1-minute load 0.50 exceeds the maximum 0.10"]
	d.checked.min_disk_free_gb == 5.0
	d.checked.min_mem_free_percent == 10.0
}

test_data_thresholds_are_the_defaults if {
	host := _healthy
	defaults := {"min_disk_free_gb": 100, "max_cpu_load": 8, "min_mem_free_percent": 10}
	d := infrastructure.decision with input.host as host with data.swiftdeploy.thresholds as defaults
	d.reasons == ["disk free 50.00 GB is below the minimum 100.00 GB"]
}

test_non_numeric_input_threshold_is_denied if {
	d := _decide(_healthy, {"max_cpu_load": "8"})
	d.allow == false
	d.reasons == ["threshold max_cpu_load is missing or not a number"]
	d.checked.max_cpu_load == null
}

test_null_input_threshold_is_denied if {
	d := _decide(_healthy, {"min_mem_free_percent": null})
	d.allow == false
	d.reasons == ["threshold min_mem_free_percent is missing or not a number"]
}

test_threshold_missing_everywhere_is_denied if {
	host := _healthy
	defaults := {"max_cpu_load": 8, "min_mem_free_percent": 10}
	d := infrastructure.decision with input.host as host with data.swiftdeploy.thresholds as defaults
	d.allow == false
	d.reasons == ["threshold min_disk_free_gb is missing or not a number"]
}

test_thresholds_that_are_not_an_object_fall_back_to_the_defaults if {
	d := _decide(_host_with("disk_free_gb", 4.99), ["min_disk_free_gb", 1])
	d.reasons == ["disk free 4.99 GB is below the minimum 5.00 GB"]
}
