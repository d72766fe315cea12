# Infrastructure gate: may the stack be deployed on this host?
#
# Query data.swiftdeploy.infrastructure.decision with
#   input.host        {"disk_free_gb": n, "cpu_load_1m": n, "mem_free_percent": n}
#   input.thresholds  any of min_disk_free_gb, max_cpu_load, min_mem_free_percent; a key that
#                     is absent falls back to data.swiftdeploy.thresholds (policies/data.json)
# A figure equal to its threshold passes. A missing or non-numeric figure or threshold denies:
# the gate never allows on incomplete data. See docs/policies.md.
#
# The same text runs on OPA and on regopy (rego-cpp), so it keeps to what both evaluate alike:
# - type checks such as is_number() only as conditions or under `not`: regopy makes them
#   undefined instead of false;
# - messages are joined with concat(), not sprintf(): OPA prints an integer such as 5 under
#   "%.2f" as "%!f(int64=5)", and regopy quotes a computed string under "%s";
# - sort() is given an array, not a set: regopy's sorted set does not compare equal to an array.
package swiftdeploy.infrastructure

import rego.v1

_figures := ["disk_free_gb", "cpu_load_1m", "mem_free_percent"]

_threshold_names := ["min_disk_free_gb", "max_cpu_load", "min_mem_free_percent"]

_host := input.host if {
	is_object(input.host)
} else := {}

_given := input.thresholds if {
	is_object(input.thresholds)
} else := {}

_defaults := data.swiftdeploy.thresholds if {
	is_object(data.swiftdeploy.thresholds)
} else := {}

# The thresholds in force: the caller's, key by key over the defaults.
thresholds := object.union(_defaults, _given)

reasons contains concat("", ["input host.", name, " is missing or not a number"]) if {
	some name in _figures
	not is_number(_host[name])
}

reasons contains concat("", ["threshold ", name, " is missing or not a number"]) if {
	some name in _threshold_names
	not is_number(thresholds[name])
}

reasons contains msg if {
	disk := _host.disk_free_gb
	minimum := thresholds.min_disk_free_gb
	is_number(disk)
	is_number(minimum)
	disk < minimum
	msg := concat("", ["disk free ", _fmt2(disk), " GB is below the minimum ", _fmt2(minimum), " GB"])
}

reasons contains msg if {
	load := _host.cpu_load_1m
	maximum := thresholds.max_cpu_load
	is_number(load)
	is_number(maximum)
	load > maximum
	msg := concat("", ["1-minute load ", _fmt2(load), " exceeds the maximum ", _fmt2(maximum)])
}

reasons contains msg if {
	mem := _host.mem_free_percent
	minimum := thresholds.min_mem_free_percent
	is_number(mem)
	is_number(minimum)
	mem < minimum
	msg := concat("", ["memory free ", _fmt2(mem), "% is below the minimum ", _fmt2(minimum), "%"])
}

allow := count(reasons) == 0

# The figures the decision rests on; null where one is missing or not a number, so that no
# input text is echoed back.
checked := object.union(
	{name: _number_or_null(_host, name) | some name in _figures},
	{name: _number_or_null(thresholds, name) | some name in _threshold_names},
)

decision := {
	"allow": allow,
	"reasons": sort([reason | some reason in reasons]),
	"domain": "infrastructure",
	"checked": checked,
}

# x with two decimals, rounded half away from zero; huge numbers fall back to %v.
_fmt2(x) := text if {
	cents := round(abs(x) * 100)
	whole := floor(cents / 100)
	frac := cents - (whole * 100)
	text := concat("", [_sign(x, cents), format_int(whole, 10), ".", _pad2(frac), format_int(frac, 10)])
} else := sprintf("%v", [x])

_sign(x, cents) := "-" if {
	x < 0
	cents > 0
} else := ""

_pad2(n) := "0" if {
	n < 10
} else := ""

_number_or_null(obj, key) := obj[key] if {
	is_number(obj[key])
} else := null
