"""Manifest validation: every rule, with the exact message a user sees."""

import ast
import copy
import json
import pathlib

import pytest
import yaml

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import (
    APP_HISTORY_SECONDS,
    DEFAULT_OPA_IMAGE,
    required_paths,
    validate_manifest,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._nginx import nginx_json

from manifest_seed import SEED_TEXT, errors_of, with_changes  # tests/unit/plugins/manifest_seed.py

APP_SOURCE = pathlib.Path(__file__).resolve().parents[3] / "app" / "swiftdeploy_app.py"

SEED = yaml.safe_load(SEED_TEXT)


# What a manifest without a team's own service settings gets (_manifest_service.py).
SERVICE_DEFAULTS = {"env": {}, "secrets": [], "command": None, "user": "10001:10001",
                    "tmpfs": [{"path": "/tmp", "size": "16m"}],
                    "healthcheck": {"path": "/healthz", "interval": 1, "timeout": 2, "retries": 3, "start_period": 0,
                                    "docker": True}}


def with_change(path, value):
    """The seed manifest with one field set (or removed when value is ...)."""
    return with_changes(SEED, {path: value})


@pytest.mark.parametrize("nginx, edge, keepalive", [
    ({}, True, 60),  # the edge by default: it holds them through every switch (docs/keepalive.md)
    ({"edge": True}, True, 60),
    ({"edge": False}, False, 0),  # no edge: a reload would close idle connections, so none
    ({"edge": False, "keepalive_timeout": 30}, False, 30),
    ({"edge": True, "keepalive_timeout": 0}, True, 0),
    ({"edge": True, "keepalive_timeout": 300}, True, 300),
])
def test_keepalive_timeout_defaults_to_the_edge(nginx, edge, keepalive):
    data = copy.deepcopy(SEED)
    data["nginx"].update(nginx)
    result = validate_manifest(data)["nginx"]
    assert (result["edge"], result["keepalive_timeout"]) == (edge, keepalive)


def test_seed_manifest_is_accepted_unchanged_and_defaults_filled():
    result = validate_manifest(copy.deepcopy(SEED))
    assert result["services"] == dict(SEED["services"], mode_switch="signal",
                                      resources={"memory": "256m", "cpus": 1.0, "pids": 64}, **SERVICE_DEFAULTS)
    assert result["nginx"] == {"image": "nginx:latest", "port": 8080, "proxy_timeout": 30,
                               "admin_port": 8082, "keepalive_timeout": 60, "edge": True,
                               "resources": {"memory": "256m", "cpus": 1.0, "pids": 256},
                               "tls": {"enabled": False, "cert_file": None, "key_file": None, "redirect_port": None,
                                       "hsts_max_age": 0, "expiry_warn_days": 30}}
    assert result["opa"]["mode"] == "embedded"
    assert result["opa"]["image"] == "openpolicyagent/opa:latest-static"
    assert result["stack"] == "swiftdeploy"
    assert result["canary"] == {"weight": 10, "image": "swift-deploy-1-node:latest", "version": "1.0.0",
                                "window_seconds": 30, "metrics": "edge", "hosts": None, "sticky": False,
                                "sticky_max_age": 3600, "steps": None,
                                "interval_seconds": 30, "max_duration_seconds": 1800}
    assert result["analysis"] == {"alpha": 0.01, "min_canary_requests": 1000, "latency_bound_seconds": None,
                                  "baseline": "stable"}
    assert result["policy"]["fail_open"] is False
    assert result["policy"]["thresholds"]["min_requests"] == 20
    assert result["chaos"] == {"allow_from": []}


def test_minimal_manifest_gets_every_default():
    result = validate_manifest({"services": {"image": "app:1", "port": 3000},
                                "nginx": {"image": "nginx:1.27", "port": 80}, "contact": "a@b.c"})
    assert result["services"]["mode"] == "stable"
    assert result["services"]["log_volume"] == "swiftdeploy-logs"
    assert result["network"] == {"name": "swiftdeploy-net", "driver_type": "bridge"}
    assert result["services"]["resources"] == {"memory": "256m", "cpus": 1.0, "pids": 64}
    assert result["nginx"]["resources"] == {"memory": "256m", "cpus": 1.0, "pids": 256}
    assert result["opa"]["resources"] == {"memory": "256m", "cpus": 0.5, "pids": 128}
    assert result["opa"]["image"] == DEFAULT_OPA_IMAGE
    assert result["opa"]["port"] == 8181


def test_validation_does_not_modify_its_input():
    data = copy.deepcopy(SEED)
    validate_manifest(data)
    assert data == SEED


@pytest.mark.parametrize("path, value, message", [
    ("services.port", 70000,
     "manifest field 'services.port': 70000 is out of range; use a TCP port number from 1 to 65535."),
    ("services.port", 0,
     "manifest field 'services.port': 0 is out of range; use a TCP port number from 1 to 65535."),
    ("nginx.port", "80 80",
     "manifest field 'nginx.port': '80 80' is string, expected a whole number; use a TCP port number from 1 to 65535."),
    ("nginx.port", "8080\n",
     "manifest field 'nginx.port': '8080\\n' is string, expected a whole number; use a TCP port number from 1 to "
     "65535."),
    ("nginx.port", "\uff18\uff10",
     "manifest field 'nginx.port': '\uff18\uff10' is string, expected a whole number; use a TCP port number from 1 to "
     "65535."),
    ("nginx.port", "8_080",
     "manifest field 'nginx.port': '8_080' is string, expected a whole number; use a TCP port number from 1 to 65535."),
    ("nginx.port", "70000",
     "manifest field 'nginx.port': 70000 is out of range; use a TCP port number from 1 to 65535."),
    ("nginx.port", True,
     "manifest field 'nginx.port': true is boolean, expected a whole number; use a TCP port number from 1 to 65535."),
    ("nginx.proxy_timeout", 0,
     "manifest field 'nginx.proxy_timeout': 0 is out of range; use a whole number of seconds from 1 to 3600."),
    ("services.mode", "canry",
     "manifest field 'services.mode': 'canry' is not allowed; use one of: stable, canary."),
    ("services.mode_switch", "sighup",
     "manifest field 'services.mode_switch': 'sighup' is not allowed; use one of: signal, none."),
    ("services.mode_switch", False,
     "manifest field 'services.mode_switch': false is boolean, expected a string; use one of: signal, none."),
    ("services.restart_policy", "sometimes",
     "manifest field 'services.restart_policy': 'sometimes' is not valid; use one of: no, always, unless-stopped, "
     "on-failure, or on-failure:N to restart at most N times (1 to 9999)."),
    ("services.restart_policy", "on-failure:0",
     "manifest field 'services.restart_policy': 'on-failure:0' is not valid; use one of: no, always, unless-stopped, "
     "on-failure, or on-failure:N to restart at most N times (1 to 9999)."),
    ("services.restart_policy", "always:3",
     "manifest field 'services.restart_policy': 'always:3' is not valid; use one of: no, always, unless-stopped, "
     "on-failure, or on-failure:N to restart at most N times (1 to 9999)."),
    ("services.restart_policy", "on-failure:3\n",
     "manifest field 'services.restart_policy': 'on-failure:3\\n' is not valid; use one of: no, always, "
     "unless-stopped, on-failure, or on-failure:N to restart at most N times (1 to 9999)."),
    ("services.version", 1.0,
     "manifest field 'services.version': 1.0 is number, expected a string; quote it in YAML, e.g. \"1.0\"."),
    ("network.driver_type", "overlay",
     "manifest field 'network.driver_type': 'overlay' is not allowed; use one of: bridge."),
    ("opa.mode", "remote",
     "manifest field 'opa.mode': 'remote' is not allowed; use one of: embedded, sidecar, external."),
    ("canary.metrics", "prometheus",
     "manifest field 'canary.metrics': 'prometheus' is not allowed; use one of: edge, app."),
    ("canary.metrics", "EDGE",
     "manifest field 'canary.metrics': 'EDGE' is not allowed; use one of: edge, app."),
    ("canary.window_seconds", 601,
     "manifest field 'canary.window_seconds': 601 is out of range; use a whole number of seconds from 5 to 600, as "
     "the app keeps its per-second metrics for 600 s and a longer window could not be measured."),
    ("services.version", "1.0.0\n",
     "manifest field 'services.version': '1.0.0\\n' is not valid; use a version of letters, digits, '.', '_', '+' "
     "and '-', quoted in YAML, e.g. \"1.0.0\"."),
    ("services.version", "1.0.\u0966",
     "manifest field 'services.version': '1.0.\u0966' is not valid; use a version of letters, digits, '.', '_', '+' "
     "and '-', quoted in YAML, e.g. \"1.0.0\"."),
    ("stack", "swiftdeplo\u0443",
     "manifest field 'stack': 'swiftdeplo\u0443' is not valid; use a lower-case name of letters, digits, '_' and "
     "'-' (at most 63 characters); it names the compose project."),
    ("stack", "swiftdeploy\n",
     "manifest field 'stack': 'swiftdeploy\\n' is not valid; use a lower-case name of letters, digits, '_' and '-' "
     "(at most 63 characters); it names the compose project."),
    ("network.name", "net\n",
     "manifest field 'network.name': 'net\\n' is not valid; use a Docker network name of letters, digits, '_', '.' "
     "and '-', starting with a letter or digit."),
    ("services.resources.memory", "5m",
     "manifest field 'services.resources.memory': '5m' is not valid; use a Docker memory size of at least 6m, a "
     "whole number with the unit b, k, m or g, e.g. \"256m\"."),
    ("nginx.resources.memory", "256 MB",
     "manifest field 'nginx.resources.memory': '256 MB' is not valid; use a Docker memory size of at least 6m, a "
     "whole number with the unit b, k, m or g, e.g. \"256m\"."),
    ("opa.resources.memory", "256\u212a",
     "manifest field 'opa.resources.memory': '256\u212a' is not valid; use a Docker memory size of at least 6m, a "
     "whole number with the unit b, k, m or g, e.g. \"256m\"."),
    ("opa.resources.memory", 268435456,
     "manifest field 'opa.resources.memory': 268435456 is integer, expected a string; quote it in YAML, e.g. "
     "\"268435456\"."),
    ("services.resources.cpus", 0,
     "manifest field 'services.resources.cpus': 0 is out of range; use the number of CPUs the container may use, "
     "above 0, e.g. 0.5 (from 0.01 to 1024)."),
    ("nginx.resources.cpus", "1",
     "manifest field 'nginx.resources.cpus': '1' is string, expected a number; use the number of CPUs the container "
     "may use, above 0, e.g. 0.5 (from 0.01 to 1024)."),
    ("opa.resources.pids", 15,
     "manifest field 'opa.resources.pids': 15 is out of range; use the most processes and threads the container may "
     "run, a whole number from 16 to 4194304."),
    ("canary.weight", 101,
     "manifest field 'canary.weight': 101 is out of range; use the percentage of traffic for the canary, a whole number from 1 to 100."),
    ("policy.fail_open", "yes",
     "manifest field 'policy.fail_open': 'yes' is string, expected true or false."),
    ("policy.thresholds.max_p99_latency_ms", float("nan"),
     "manifest field 'policy.thresholds.max_p99_latency_ms': nan is number, expected a number; use a number of milliseconds, 0 or more."),
    ("chaos.allow_from", ["10.0.0.0/8", "not-an-ip"],
     "manifest field 'chaos.allow_from[1]': 'not-an-ip' is not an IP address or CIDR range; use e.g. '192.0.2.10' or '10.0.0.0/8'."),
    ("services", ...,
     "manifest field 'services': required but missing; add it (add a 'services:' section)."),
    ("services.image", ...,
     "manifest field 'services.image': required but missing; add it (use a Docker image reference such as 'nginx:1.27' or "
     "'registry.example.com:5000/team/app:1.2.0' (lower-case repository, optional tag))."),
    ("contact", ...,
     "manifest field 'contact': required but missing; add it (use an e-mail address or URL of letters, digits and @ . _ + : / - "
     "(at most 128 characters); quotes, braces, semicolons, '$' and line breaks are not allowed)."),
])
def test_field_errors_name_path_value_and_fix(path, value, message):
    assert errors_of(with_change(path, value)) == [message]


@pytest.mark.parametrize("image", [
    "nginx", "nginx:latest", "nginx:1.27.3-alpine", "library/nginx", "openpolicyagent/opa:latest-static",
    "registry.example.com:5000/team/app:1.2.0", "localhost/app", "a/b/c/d:e",
    "app@sha256:" + "a" * 64, "ghcr.io/org/app:v1_2",
])
def test_valid_image_references(image):
    assert validate_manifest(with_change("services.image", image))["services"]["image"] == image


@pytest.mark.parametrize("image", [
    "Nginx:latest", "nginx:", ":latest", "nginx:la test", "bad image!", "nginx:-tag", "a//b", "app@sha256:xyz",
    "nginx:latest\nx", "", "-nginx", "nginx:latest\n", "nginx:l\u0430test", "nginx:\u00e9t\u00e9", "ngin\u0445",
    "nginx:\uff11",
])
def test_invalid_image_references(image):
    (error,) = errors_of(with_change("services.image", image))
    assert error.startswith("manifest field 'services.image': %r is not valid; use a Docker image reference" % image)


@pytest.mark.parametrize("path, value", [
    ("network.name", "-net"), ("network.name", "net work"), ("network.name", "net/work"),
    ("services.log_volume", "logs;rm"), ("stack", "My-Stack"), ("stack", "a" * 64),
])
def test_invalid_docker_names(path, value):
    (error,) = errors_of(with_change(path, value))
    assert error.startswith("manifest field '%s': %r is not valid; use a" % (path, value))


@pytest.mark.parametrize("contact", [
    "x'; } server { listen 9999; #", 'a"b', "a{b", "a}b", "a;b", "a\nb", "a$b", "a\\b", "a`b", "a\tb", "a\rb",
    "ops@x\n", "a\x00b", "a\u2028b", "a\u202eb", "a\u200bb", "a\u00a0b", "\u00e9" * 129, "a" * 129,
])
def test_contact_cannot_carry_nginx_syntax(contact):
    (error,) = errors_of(with_change("contact", contact))
    assert error.startswith("manifest field 'contact': ")
    assert "is not valid" in error and "quotes, braces, semicolons, '$' and line breaks are not allowed" in error


@pytest.mark.parametrize("contact", [
    "ops@swiftdeploy.local", "https://status.example.com/oncall", "Ops Team +44", "\u00e9quipe@exemple.fr",
    "Bj\u00f6rn M\u00fcller", "\u0437\u0430\u043f\u0443\u0441\u043a@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
    "\u904b\u7528\u30c1\u30fc\u30e0", "e\u0301quipe", "\u00e9" * 128,
])
def test_reasonable_contacts_are_accepted(contact):
    assert validate_manifest(with_change("contact", contact))["contact"] == contact


@pytest.mark.parametrize("section, key, expected", [
    ("nginx", "prot", "manifest field 'nginx.prot': unknown key; did you mean 'nginx.port'? remove it or use one of: "
                      "admin_port, edge, image, keepalive_timeout, port, proxy_timeout, resources, tls."),
    ("services", "imgae", "manifest field 'services.imgae': unknown key; did you mean 'services.image'? remove it or "
                          "use one of: command, env, healthcheck, image, log_volume, mode, mode_switch, port, "
                          "resources, restart_policy, secrets, tmpfs, user, version."),
    ("services", "zzz", "manifest field 'services.zzz': unknown key; remove it or use one of: command, env, "
                        "healthcheck, image, log_volume, mode, mode_switch, port, resources, restart_policy, secrets, "
                        "tmpfs, user, version."),
])
def test_unknown_keys_suggest_the_closest(section, key, expected):
    data = copy.deepcopy(SEED)
    data[section][key] = 1
    assert errors_of(data) == [expected]


def test_unknown_top_level_key():
    data = copy.deepcopy(SEED)
    data["contcat"] = "x@y.z"
    assert errors_of(data) == ["manifest field 'contcat': unknown key; did you mean 'contact'? remove it or use one "
                               "of: analysis, canary, chaos, contact, fleet, network, nginx, opa, policy, services, stack."]


def test_every_error_is_reported_at_once():
    data = with_change("services.port", 0)
    data["nginx"]["image"] = "BAD"
    data["contact"] = "x;y"
    assert [e.split(":")[0] for e in errors_of(data)] == [
        "manifest field 'services.port'", "manifest field 'nginx.image'", "manifest field 'contact'"]


@pytest.mark.parametrize("data, message", [
    (None, "manifest: the file is empty; start from the example manifest.yml in the collection."),
    ([1, 2], "manifest: the top level is list, expected a mapping with the keys services, nginx and contact; start "
             "from the example manifest.yml in the collection."),
    ("text", "manifest: the top level is string, expected a mapping with the keys services, nginx and contact; start "
             "from the example manifest.yml in the collection."),
])
def test_top_level_shape(data, message):
    assert errors_of(data) == [message]


def test_section_of_wrong_type():
    assert errors_of(with_change("nginx", "nginx:latest")) == [
        "manifest field 'nginx': 'nginx:latest' is string, expected a mapping of keys."]


def test_published_port_clash():
    data = with_change("nginx.admin_port", 8080)
    assert errors_of(data) == [
        "manifest field 'nginx.admin_port': port 8080 is already used by 'nginx.port'; every port published on the "
        "host must differ, choose another one."]


def test_opa_port_is_never_published_so_never_clashes():
    # The sidecar publishes no port: the host reaches it on its own network (docs/security.md).
    data = with_change("opa.port", 8080)
    data["opa"]["mode"] = "sidecar"
    assert validate_manifest(data)["opa"]["port"] == 8080


def test_external_engine_needs_a_url():
    assert errors_of(with_change("opa.mode", "external")) == [
        "manifest field 'opa.url': required when opa.mode is 'external'; set it to the OPA server's URL, e.g. "
        "'https://opa.example.com:8181'."]
    data = with_change("opa.mode", "external")
    data["opa"]["url"] = "https://opa.example.com:8181"
    result = validate_manifest(data)
    assert (result["opa"]["url"], result["opa"]["allow_http"], result["opa"]["ca_path"]) == (
        "https://opa.example.com:8181", False, None)


def test_external_engine_refuses_plain_http_unless_allowed():
    """Attack: a manifest writer points the gate at an http:// OPA, where anyone on the path can
    read the token and answer allow. Refused, naming the field and the fix."""
    data = with_change("opa.mode", "external")
    data["opa"]["url"] = "http://opa.example.com:8181"
    assert errors_of(copy.deepcopy(data)) == [
        "manifest field 'opa.url': 'http://opa.example.com:8181' is plain HTTP, so the decision and the token could "
        "be read or forged on the way; use an https:// URL, or set opa.allow_http: true if OPA is reached over a "
        "trusted network only."]
    data["opa"]["allow_http"] = True
    assert validate_manifest(data)["opa"]["url"] == "http://opa.example.com:8181"


@pytest.mark.parametrize("ca_path, ok", [("/etc/pki/opa-ca.pem", True), ("relative/ca.pem", False),
                                         ("/etc/ca\n.pem", False)])
def test_opa_ca_path_is_an_absolute_path(ca_path, ok):
    data = with_change("opa.ca_path", ca_path)
    if ok:
        assert validate_manifest(data)["opa"]["ca_path"] == ca_path
    else:
        assert errors_of(data)[0].startswith("manifest field 'opa.ca_path': ")


def test_canary_image_and_version_default_to_the_service():
    data = copy.deepcopy(SEED)
    data["canary"] = {"version": "1.1.0"}
    result = validate_manifest(data)
    assert result["canary"]["version"] == "1.1.0"
    assert result["canary"]["image"] == SEED["services"]["image"]


def test_chaos_allow_list_is_normalised():
    result = validate_manifest(with_change("chaos.allow_from", ["10.1.2.3/8", "192.0.2.7"]))
    assert result["chaos"]["allow_from"] == ["10.0.0.0/8", "192.0.2.7/32"]


def test_integer_thresholds_become_floats():
    result = validate_manifest(with_change("policy.thresholds", {"max_cpu_load": 3}))
    assert result["policy"]["thresholds"]["max_cpu_load"] == 3.0
    assert isinstance(result["policy"]["thresholds"]["max_cpu_load"], float)


def test_required_paths():
    assert required_paths() == ["services", "services.image", "services.port", "nginx", "nginx.image", "nginx.port",
                                "contact"]


@pytest.mark.parametrize("policy", ["no", "always", "unless-stopped", "on-failure", "on-failure:1", "on-failure:5",
                                    "on-failure:9999"])
def test_every_restart_policy_docker_accepts(policy):
    assert validate_manifest(with_change("services.restart_policy", policy))["services"]["restart_policy"] == policy


@pytest.mark.parametrize("path, text, port", [
    ("nginx.port", "8080", 8080), ("services.port", "3000", 3000), ("nginx.admin_port", "08082", 8082),
    ("opa.port", "8181", 8181),
])
def test_a_port_may_be_a_string_of_digits_as_ansibles_int_type_reads_it(path, text, port):
    section, key = path.split(".")
    result = validate_manifest(with_change(path, text))[section][key]
    assert result == port and isinstance(result, int)


def test_network_and_volume_default_to_the_stacks_own_names():
    data = copy.deepcopy(SEED)
    del data["network"]["name"], data["services"]["log_volume"]
    data["stack"] = "shop"
    result = validate_manifest(data)
    assert (result["network"]["name"], result["services"]["log_volume"]) == ("shop-net", "shop-logs")
    other = copy.deepcopy(data)
    other["stack"] = "blog"
    result_other = validate_manifest(other)
    assert (result_other["network"]["name"], result_other["services"]["log_volume"]) == ("blog-net", "blog-logs")


def test_explicit_network_and_volume_names_stay_as_written():
    data = with_change("stack", "shop")
    result = validate_manifest(data)
    assert (result["network"]["name"], result["services"]["log_volume"]) == ("swiftdeploy-net", "swiftdeploy-logs")


@pytest.mark.parametrize("section", ["services", "nginx", "opa"])
def test_resources_are_overridable(section):
    data = copy.deepcopy(SEED)
    data[section]["resources"] = {"memory": "1G", "cpus": 2, "pids": 16}
    result = validate_manifest(data)[section]["resources"]
    assert result == {"memory": "1G", "cpus": 2.0, "pids": 16} and isinstance(result["cpus"], float)


@pytest.mark.parametrize("memory", ["6m", "6291456", "6291456b", "6144k", "256m", "256M", "1g", "2G"])
def test_docker_memory_sizes(memory):
    assert validate_manifest(with_change("services.resources.memory", memory))["services"]["resources"]["memory"] \
        == memory


def test_canary_window_is_at_most_the_apps_snapshot_history():
    tree = ast.parse(APP_SOURCE.read_text(encoding="utf-8"))
    history = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and [getattr(t, "id", None) for t in node.targets] == ["HISTORY_SECONDS"]]
    assert history == [APP_HISTORY_SECONDS]
    assert validate_manifest(with_change("canary.window_seconds", 600))["canary"]["window_seconds"] == 600


@pytest.mark.parametrize("contact", [
    "\u00e9quipe@exemple.fr", "\u904b\u7528\u30c1\u30fc\u30e0 / ops@x.jp", "ops@swiftdeploy.local",
])
def test_a_non_ascii_contact_reaches_nginx_conf_as_ascii_and_round_trips(contact):
    """The template writes the contact only through nginx_json, into a single-quoted literal."""
    validated = validate_manifest(with_change("contact", contact))["contact"]
    body = {"error": "Bad Gateway", "code": 502, "service": "app", "contact": validated}
    literal = nginx_json(body)
    assert literal.isascii() and literal.startswith("'") and literal.endswith("'")
    # nginx_string escapes only backslashes and quotes; JSON left no quote or `$` to escape.
    assert "'" not in literal[1:-1] and "$" not in literal
    assert json.loads(literal[1:-1].replace("\\\\", "\\"))["contact"] == contact


@pytest.mark.parametrize("path, value, message", [
    ("contact", "x" * (1 << 20),
     "manifest field 'contact': '" + "x" * 76 + "... is too long "
     "(1048576 characters, at most 255); use an e-mail address or URL of letters, digits and @ . _ + : / - (at most "
     "128 characters); quotes, braces, semicolons, '$' and line breaks are not allowed."),
    ("services.image", "a" * 100000,
     "manifest field 'services.image': '" + "a" * 76 + "... is too "
     "long (100000 characters, at most 512); use a Docker image reference such as 'nginx:1.27' or "
     "'registry.example.com:5000/team/app:1.2.0' (lower-case repository, optional tag)."),
    ("services.port", 10 ** 5000,
     "manifest field 'services.port': an integer of about 5000 digits is out of range; use a TCP port number from 1 "
     "to 65535."),
    ("policy.thresholds.max_cpu_load", 10 ** 400,
     "manifest field 'policy.thresholds.max_cpu_load': an integer of about 400 digits is out of range; use the "
     "highest acceptable 1-minute load average, 0 or more."),
    ("services.version", 10 ** 400,
     "manifest field 'services.version': an integer of about 400 digits is integer, expected a string; use a version "
     "of letters, digits, '.', '_', '+' and '-', quoted in YAML, e.g. \"1.0.0\"."),
    ("chaos.allow_from", ["10.0.0.0/8"] * 257,
     "manifest field 'chaos.allow_from': " + "[" + "'10.0.0.0/8', " * 5 + "'10.0.... "
     "has 257 entries, more than 256; list fewer addresses, or wider CIDR ranges."),
    ("chaos.allow_from", ["1" * 100000],
     "manifest field 'chaos.allow_from[0]': '" + "1" * 76 + "... "
     "is not an IP address or CIDR range; use e.g. '192.0.2.10' or '10.0.0.0/8'."),
], ids=["1MiB-contact", "long-image", "huge-port", "huge-number", "huge-version", "long-list", "long-cidr"])
def test_huge_values_get_a_bounded_message(path, value, message):
    assert errors_of(with_change(path, value)) == [message]


def nested(depth):
    value = []
    for _level in range(depth):
        value = [value]
    return value


CONTACT_FIX = ("use an e-mail address or URL of letters, digits and @ . _ + : / - (at most 128 characters); quotes, "
               "braces, semicolons, '$' and line breaks are not allowed")


@pytest.mark.parametrize("value, shown", [
    (nested(10000), "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[..."),
    ({"k" * 1000: {"v": [1] * 100000}}, "{'" + "k" * 75 + "..."),
    ({"a": 1, 2: None, True: [1.5, "x"]}, "{'a': 1, 2: None, True: [1.5, 'x']}"),
    ([10 ** 5000], "[an integer of about 5000 digits]"),
    ({1, 2}, "{1, 2}"),
], ids=["10000-deep", "wide", "odd-keys", "huge-int", "set"])
def test_deep_and_wide_values_get_a_bounded_message(value, shown):
    kind = {list: "list", dict: "mapping", set: "set"}[type(value)]
    assert errors_of(with_change("contact", value)) == [
        "manifest field 'contact': %s is %s, expected a string; %s." % (shown, kind, CONTACT_FIX)]


@pytest.mark.parametrize("key, where", [
    (12, "nginx.12"), (None, "nginx.null (empty)"), (True, "nginx.true"), (1.5, "nginx.1.5"), ((1, 2), "nginx.[1, 2]"),
    ("k" * 1000, "nginx.'" + "k" * 36 + "..."), ("a'b", "nginx.\"a'b\""),
    (10 ** 5000, "nginx.an integer of about 5000 digits"),
], ids=["int", "null", "bool", "float", "tuple", "long", "quote", "huge-int"])
def test_odd_keys_get_a_message(key, where):
    data = copy.deepcopy(SEED)
    data["nginx"][key] = 1
    assert errors_of(data) == ["manifest field '%s': unknown key; remove it or use one of: admin_port, edge, image, "
                               "keepalive_timeout, port, proxy_timeout, resources, tls." % where]


def test_many_problems_are_capped():
    data = copy.deepcopy(SEED)
    data["nginx"].update({"bad%d" % i: 1 for i in range(100000)})
    errors = errors_of(data)
    assert len(errors) == 21
    assert errors[-1] == "manifest: 99980 more problems are not shown; fix the ones above first."


def with_tls(**tls):
    data = copy.deepcopy(SEED)
    data["nginx"]["tls"] = tls
    return data


def test_tls_is_off_unless_enabled_and_its_keys_are_filled_in():
    assert validate_manifest(with_tls())["nginx"]["tls"]["enabled"] is False
    tls = validate_manifest(with_tls(enabled=True, cert_file="/etc/tls/a.crt", key_file="/etc/tls/a.key",
                                     redirect_port="80"))["nginx"]["tls"]
    assert tls == {"enabled": True, "cert_file": "/etc/tls/a.crt", "key_file": "/etc/tls/a.key", "redirect_port": 80,
                   "hsts_max_age": 0, "expiry_warn_days": 30}


@pytest.mark.parametrize("tls, message", [
    ({"cert_file": "/etc/tls/a.crt"},
     "manifest field 'nginx.tls.cert_file': '/etc/tls/a.crt' is set but nginx.tls.enabled is false, so it would be "
     "ignored; set nginx.tls.enabled: true for HTTPS, or remove it."),
    ({"redirect_port": 80},
     "manifest field 'nginx.tls.redirect_port': 80 is set but nginx.tls.enabled is false, so it would be ignored; set "
     "nginx.tls.enabled: true for HTTPS, or remove it."),
    ({"enabled": True, "redirect_port": 8080},
     "manifest field 'nginx.tls.redirect_port': port 8080 is already used by 'nginx.port'; every port published on "
     "the host must differ, choose another one."),
    ({"enabled": True, "redirect_port": 8082},
     "manifest field 'nginx.tls.redirect_port': port 8082 is already used by 'nginx.admin_port'; every port "
     "published on the host must differ, choose another one."),
    ({"enabled": True, "redirect_port": 0},
     "manifest field 'nginx.tls.redirect_port': 0 is out of range; use a TCP port number from 1 to 65535."),
    ({"enabled": True, "cert_file": "certs/a.crt"},
     "manifest field 'nginx.tls.cert_file': 'certs/a.crt' is not valid; use the absolute path on the controller of "
     "the PEM certificate file, such as '/etc/swiftdeploy/tls/shop.crt'."),
    ({"enabled": True, "key_file": "/etc/tls/a\n.key"},
     "manifest field 'nginx.tls.key_file': '/etc/tls/a\\n.key' is not valid; use the absolute path on the controller "
     "of the PEM private key file, such as '/etc/swiftdeploy/tls/shop.key'."),
    ({"enabled": "yes"},
     "manifest field 'nginx.tls.enabled': 'yes' is string, expected true or false."),
    ({"enabled": True, "hsts_max_age": -1},
     "manifest field 'nginx.tls.hsts_max_age': -1 is out of range; use a number of seconds from 0 (no "
     "Strict-Transport-Security header) to 63072000 (two years), e.g. 31536000."),
    ({"enabled": True, "expiry_warn_days": 400},
     "manifest field 'nginx.tls.expiry_warn_days': 400 is out of range; use a whole number of days from 0 to 365."),
    ({"enabled": True, "cert": "/etc/tls/a.crt"},
     "manifest field 'nginx.tls.cert': unknown key; did you mean 'nginx.tls.cert_file'? remove it or use one of: "
     "cert_file, enabled, expiry_warn_days, hsts_max_age, key_file, redirect_port."),
])
def test_tls_fields_are_checked(tls, message):
    assert errors_of(with_tls(**tls)) == [message]


@pytest.mark.parametrize("given, normalised", [
    (1, 1), (3, 3), (10000, 10000), ("2", 2), ("50%", "50%"), ("100%", "100%"), ("1%", "1%"), ("007%", "7%"),
    (None, None),
])
def test_canary_hosts_a_number_or_a_percentage(given, normalised):
    assert validate_manifest(with_change("canary.hosts", given))["canary"]["hosts"] == normalised


@pytest.mark.parametrize("given, shown", [
    (0, "0"), (-1, "-1"), (10001, "10001"), (True, "true"), (1.5, "1.5"), ("0%", "'0%'"), ("101%", "'101%'"),
    ("half", "'half'"), ("50 %", "'50 %'"), ("%50", "'%50'"), ("\uff15\uff10%", None), ([1], "[1]"), ("", "''"),
])
def test_canary_hosts_refused_naming_the_field_the_value_and_the_fix(given, shown):
    (message,) = errors_of(with_change("canary.hosts", given))
    assert message.startswith("manifest field 'canary.hosts': ")
    if shown is not None:
        assert message.startswith("manifest field 'canary.hosts': %s is not a number of hosts" % shown), message
    assert message.endswith("use a whole number of hosts from 1 to 10000 (e.g. 1) or a percentage from 1% to 100% "
                            "in quotes (e.g. \"50%\"), or remove it to start the canary on every host.")


# promote.yml -e mode=auto (docs/auto-rollout.md): the steps, the interval, the maximum duration
# and the analysis settings.
@pytest.mark.parametrize("path, given, normalised", [
    ("canary.steps", [5, 25, 50], [5, 25, 50]),
    ("canary.steps", [1], [1]),
    ("canary.steps", [99], [99]),
    ("canary.steps", None, None),
    ("canary.interval_seconds", 2, 2),
    ("canary.max_duration_seconds", 600, 600),
    ("analysis.alpha", 0.05, 0.05),
    ("analysis.min_canary_requests", 50, 50),
    ("analysis.latency_bound_seconds", 0.1, 0.1),
    ("analysis.latency_bound_seconds", 1, 1.0),
    ("analysis.latency_bound_seconds", None, None),
    ("analysis.baseline", "stable", "stable"),
    ("analysis.baseline", "fresh", "fresh"),
])
def test_auto_rollout_settings_accepted(path, given, normalised):
    section, key = path.split(".")
    assert validate_manifest(with_change(path, given))[section][key] == normalised


STEPS_FIX = ("is not a list of ascending canary weights; use 1 to 20 whole percentages from 1 to 99 in ascending "
             "order, e.g. [5, 25, 50] (the rollout then goes to 100).")
BOUND_FIX = ("is not a latency bucket bound; use one of 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 "
             "(seconds), or remove it to choose the bound from the baseline's latency before the canary starts.")


@pytest.mark.parametrize("path, given, message", [
    ("canary.steps", [25, 5], "manifest field 'canary.steps': [25, 5] " + STEPS_FIX),
    ("canary.steps", [5, 5], "manifest field 'canary.steps': [5, 5] " + STEPS_FIX),
    ("canary.steps", [0, 50], "manifest field 'canary.steps': [0, 50] " + STEPS_FIX),
    ("canary.steps", [5, 100], "manifest field 'canary.steps': [5, 100] " + STEPS_FIX),
    ("canary.steps", [], "manifest field 'canary.steps': [] " + STEPS_FIX),
    ("canary.steps", [5.5], "manifest field 'canary.steps': [5.5] " + STEPS_FIX),
    ("canary.steps", [True], "manifest field 'canary.steps': [True] " + STEPS_FIX),
    ("canary.steps", "5,25", "manifest field 'canary.steps': '5,25' " + STEPS_FIX),
    ("canary.steps", list(range(1, 22)), "manifest field 'canary.steps': [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, "
                                         "13, 14, 15, 16, 17, 18, 19, 20, 21] " + STEPS_FIX),
    ("canary.interval_seconds", 0, "manifest field 'canary.interval_seconds': 0 is out of range; use the seconds "
                                   "between two judgements of an automated rollout, a whole number from 1 to 600."),
    ("canary.max_duration_seconds", 5, "manifest field 'canary.max_duration_seconds': 5 is out of range; use the "
                                       "longest an automated rollout may take, a whole number of seconds from 10 to "
                                       "86400."),
    ("analysis.alpha", 0, "manifest field 'analysis.alpha': 0 is out of range; use the highest acceptable rate of "
                          "false rollbacks, from 0.0001 to 0.2, e.g. 0.01."),
    ("analysis.alpha", 0.5, "manifest field 'analysis.alpha': 0.5 is out of range; use the highest acceptable rate "
                            "of false rollbacks, from 0.0001 to 0.2, e.g. 0.01."),
    ("analysis.min_canary_requests", 0, "manifest field 'analysis.min_canary_requests': 0 is out of range; use the "
                                        "fewest canary requests an automated rollout may promote on, 1 or more, "
                                        "e.g. 1000."),
    ("analysis.latency_bound_seconds", 0.2, "manifest field 'analysis.latency_bound_seconds': 0.2 " + BOUND_FIX),
    ("analysis.latency_bound_seconds", "0.1", "manifest field 'analysis.latency_bound_seconds': '0.1' " + BOUND_FIX),
    ("analysis.baseline", "canary", "manifest field 'analysis.baseline': 'canary' is not allowed; use 'stable' (the "
                                    "live stable slot is the baseline) or 'fresh' (a third slot runs the stable release "
                                    "beside the canary, at its weight)."),
])
def test_auto_rollout_settings_refused_naming_field_value_and_fix(path, given, message):
    assert errors_of(with_change(path, given)) == [message]


def test_auto_rollout_max_duration_fits_a_look_per_step():
    data = with_change("canary.steps", [5, 25, 50])
    data["canary"].update(interval_seconds=10, max_duration_seconds=30)
    assert errors_of(data) == [
        "manifest field 'canary.max_duration_seconds': 30 s is shorter than 4 looks of canary.interval_seconds "
        "(10 s), the least an automated rollout of these steps takes; raise it to at least 40, or shorten "
        "canary.interval_seconds."]
    data["canary"]["max_duration_seconds"] = 40
    assert validate_manifest(data)["canary"]["max_duration_seconds"] == 40


def test_auto_rollout_looks_are_bounded():
    data = with_change("canary.interval_seconds", 1)
    data["canary"]["max_duration_seconds"] = 3601
    assert errors_of(data) == [
        "manifest field 'canary.max_duration_seconds': 3601 s is more than 3600 looks of canary.interval_seconds "
        "(1 s); lower it to at most 3600, or lengthen canary.interval_seconds."]
