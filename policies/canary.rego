# Canary gate: may the canary be promoted, given what it served in the observation window?
#
# Query data.swiftdeploy.canary.decision with
#   input.metrics     {"requests": n, "error_rate_percent": n or null,
#                      "p99_latency_ms": n or null, "window_seconds": n}
#                     (a rate or a quantile is null when there were no requests to compute it)
#   input.thresholds  any of min_requests, max_error_rate_percent, max_p99_latency_ms; a key
#                     that is absent falls back to data.swiftdeploy.thresholds (policies/data.json)
#   input.analysis    optional: the comparison with the live baseline (an automated rollout);
#                     a rejection denies, and the decision then also carries "hold"; with
#                     latency_warm_up true (a canary's first window) a P99 over its maximum holds
# A figure equal to its threshold passes. Too few requests, a missing figure, or a null rate or
# quantile although requests were served, denies: the gate never allows on incomplete data.
# See docs/policies.md.
#
# The helpers at the end are repeated from infrastructure.rego so that each policy stands alone;
# the notes there on writing Rego that OPA and regopy evaluate alike apply here too.
package swiftdeploy.canary

import rego.v1

_figures := ["requests", "error_rate_percent", "p99_latency_ms", "window_seconds"]

_threshold_names := ["min_requests", "max_error_rate_percent", "max_p99_latency_ms"]

_metrics := input.metrics if {
	is_object(input.metrics)
} else := {}

_given := input.thresholds if {
	is_object(input.thresholds)
} else := {}

_defaults := data.swiftdeploy.thresholds if {
	is_object(data.swiftdeploy.thresholds)
} else := {}

# The thresholds in force: the caller's, key by key over the defaults.
thresholds := object.union(_defaults, _given)

reasons contains concat("", ["input metrics.", name, " is missing or not a number"]) if {
	some name in ["requests", "window_seconds"]
	not is_number(_metrics[name])
}

reasons contains concat("", ["input metrics.", name, " is missing or neither a number nor null"]) if {
	some name in ["error_rate_percent", "p99_latency_ms"]
	not _number_or_null_value(_metrics[name])
}

reasons contains concat("", ["threshold ", name, " is missing or not a number"]) if {
	some name in _threshold_names
	not is_number(thresholds[name])
}

reasons contains msg if {
	requests := _metrics.requests
	needed := thresholds.min_requests
	is_number(requests)
	is_number(needed)
	requests < needed
	msg := concat("", [
		"only ", _count(requests), " requests in ", _window, ", fewer than the ",
		_count(needed), " needed for a decision: not enough data",
	])
}

reasons contains msg if {
	rate := _metrics.error_rate_percent
	maximum := thresholds.max_error_rate_percent
	is_number(rate)
	is_number(maximum)
	rate > maximum
	msg := concat("", ["error rate ", _fmt2(rate), "% exceeds the maximum ", _fmt2(maximum), "%"])
}

_p99_over := concat("", ["p99 latency ", _fmt2(p99), " ms exceeds the maximum ", _fmt2(maximum), " ms"]) if {
	p99 := _metrics.p99_latency_ms
	maximum := thresholds.max_p99_latency_ms
	is_number(p99)
	is_number(maximum)
	p99 > maximum
}

reasons contains _p99_over if not _latency_warm_up

# The first window of a canary an automated rollout has just started (input.analysis.latency_warm_up):
# a process that has just started is slower, so a P99 over the maximum holds the step instead of
# failing it; the step's later windows are judged without this one (docs/auto-rollout.md).
_warm_up_reasons contains concat("", [_p99_over, " in the first window after the canary started (its warm-up): held, the windows after it decide"]) if {
	_latency_warm_up
}

reasons contains msg if {
	some msg in _warm_up_reasons
}

_latency_warm_up if input.analysis.latency_warm_up == true

reasons contains msg if {
	_metrics.error_rate_percent == null
	is_number(_metrics.requests)
	_metrics.requests > 0
	msg := concat("", [
		"error rate is unknown although there were ", _count(_metrics.requests),
		" requests: no error data",
	])
}

reasons contains msg if {
	_metrics.p99_latency_ms == null
	is_number(_metrics.requests)
	_metrics.requests > 0
	msg := concat("", [
		"p99 latency is unknown although there were ", _count(_metrics.requests),
		" requests: no latency data",
	])
}

# --- the comparison with the live baseline (promote.yml -e mode=auto, docs/auto-rollout.md) ---
# input.analysis, when given: {"verdict": "pass" | "hold" | "rollback", "reasons": [text],
# "errors": {...}, "latency": {...}} (the sequential test's figures, docs/analysis.md). A test that
# rejected the canary denies; one still waiting for data does not (the rollout holds instead).

_analysis_verdicts := {"pass", "hold", "rollback"}

reasons contains "input analysis.verdict is missing or not one of pass, hold, rollback" if {
	is_object(input.analysis)
	not input.analysis.verdict in _analysis_verdicts
}

reasons contains concat("", ["the comparison with the baseline rejects the canary: ", text]) if {
	input.analysis.verdict == "rollback"
	some text in input.analysis.reasons
	is_string(text)
}

reasons contains "the comparison with the baseline rejects the canary" if {
	input.analysis.verdict == "rollback"
	count([text | some text in input.analysis.reasons; is_string(text)]) == 0
}

_too_few if {
	is_number(_metrics.requests)
	is_number(thresholds.min_requests)
	_metrics.requests < thresholds.min_requests
}

# Not enough data yet: too few requests for the thresholds to mean anything, and no rejection
# by the comparison with the baseline. An automated rollout holds its step on it.
default hold := false

hold if {
	not allow
	_too_few
	not input.analysis.verdict == "rollback"
}

# A slow first window after the canary's start, and nothing else wrong: hold.
hold if {
	not allow
	_latency_warm_up
	count(reasons - _warm_up_reasons) == 0
}

allow := count(reasons) == 0

# The figures the decision rests on; null where one is missing or not a number, so that no
# input text is echoed back.
checked := object.union(
	{name: _number_or_null(_metrics, name) | some name in _figures},
	{name: _number_or_null(thresholds, name) | some name in _threshold_names},
)

_decision := {
	"allow": allow,
	"reasons": sort([reason | some reason in reasons]),
	"domain": "canary",
	"checked": checked,
}

# With input.analysis (an automated rollout) the decision also says whether to hold.
decision := object.union(_decision, {"hold": hold}) if {
	is_object(input.analysis)
} else := _decision

_window := concat("", ["the ", _count(_metrics.window_seconds), " s window"]) if {
	is_number(_metrics.window_seconds)
} else := "the window"

_number_or_null_value(x) if is_number(x)

_number_or_null_value(x) if x == null

# A count such as a number of requests: whole numbers without decimals.
_count(x) := format_int(x, 10) if {
	x == floor(x)
	abs(x) < 1000000000000000
} else := _fmt2(x)

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
