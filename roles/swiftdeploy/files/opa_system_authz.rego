# The OPA sidecar's own access policy (OPA runs with --authentication=token
# --authorization=basic): OPA asks data.system.authz.allow before it serves any request, and
# answers 401 to every request this does not allow. Policy and data writes (PUT /v1/policies,
# PUT /v1/data), reads of other documents (the token itself among them), /v1/query, /v1/config
# and /metrics are all refused.
#
# The token is the stack's own, generated on the host by swiftdeploy.stack.opa_sidecar into
# opa/token.json of the project directory (mode 0600, owned by OPA's uid 65532), which OPA
# loads as data.swiftdeploy_sidecar.token. It never leaves the host.
package system.authz

import rego.v1

default allow := false

# The health check carries no token and reveals nothing but "up".
allow if {
	input.method == "GET"
	input.path == ["health"]
}

# The two decisions SwiftDeploy asks, and nothing else, with the stack's token.
allow if {
	input.method == "POST"
	input.path in _decision_paths
	_token_matches
}

_decision_paths := {
	["v1", "data", "swiftdeploy", "infrastructure", "decision"],
	["v1", "data", "swiftdeploy", "canary", "decision"],
}

_token_matches if {
	token := data.swiftdeploy_sidecar.token
	is_string(token)
	count(token) >= 32
	input.identity == token
}
