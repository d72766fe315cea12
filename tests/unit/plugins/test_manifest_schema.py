"""Manifest validation: every rule, with the exact message a user sees."""

import copy

import pytest
import yaml

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import (
    DEFAULT_OPA_IMAGE,
    ManifestError,
    required_paths,
    validate_manifest,
)

SEED = yaml.safe_load("""
services: {image: swift-deploy-1-node:latest, port: 3000, mode: stable, version: "1.0.0",
           restart_policy: unless-stopped, log_volume: swiftdeploy-logs}
nginx: {image: nginx:latest, port: 8080, proxy_timeout: 30}
opa: {image: openpolicyagent/opa:latest-static, port: 8181}
network: {name: swiftdeploy-net, driver_type: bridge}
contact: "ops@swiftdeploy.local"
""")


def with_change(path, value):
    """The seed manifest with one field set (or removed when value is ...)."""
    data = copy.deepcopy(SEED)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return data


def errors_of(data):
    with pytest.raises(ManifestError) as caught:
        validate_manifest(data)
    return caught.value.errors


def test_seed_manifest_is_accepted_unchanged_and_defaults_filled():
    result = validate_manifest(copy.deepcopy(SEED))
    assert result["services"] == SEED["services"]
    assert result["nginx"] == {"image": "nginx:latest", "port": 8080, "proxy_timeout": 30,
                               "admin_port": 8082, "keepalive_timeout": 0}
    assert result["opa"]["mode"] == "embedded"
    assert result["opa"]["image"] == "openpolicyagent/opa:latest-static"
    assert result["stack"] == "swiftdeploy"
    assert result["canary"] == {"weight": 10, "image": "swift-deploy-1-node:latest", "version": "1.0.0",
                                "window_seconds": 30}
    assert result["policy"]["fail_open"] is False
    assert result["policy"]["thresholds"]["min_requests"] == 20
    assert result["chaos"] == {"allow_from": []}


def test_minimal_manifest_gets_every_default():
    result = validate_manifest({"services": {"image": "app:1", "port": 3000},
                                "nginx": {"image": "nginx:1.27", "port": 80}, "contact": "a@b.c"})
    assert result["services"]["mode"] == "stable"
    assert result["services"]["log_volume"] == "swiftdeploy-logs"
    assert result["network"] == {"name": "swiftdeploy-net", "driver_type": "bridge"}
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
    ("nginx.port", "8080",
     "manifest field 'nginx.port': '8080' is string, expected a whole number; use a TCP port number from 1 to 65535."),
    ("nginx.port", True,
     "manifest field 'nginx.port': true is boolean, expected a whole number; use a TCP port number from 1 to 65535."),
    ("nginx.proxy_timeout", 0,
     "manifest field 'nginx.proxy_timeout': 0 is out of range; use a whole number of seconds from 1 to 3600."),
    ("services.mode", "canry",
     "manifest field 'services.mode': 'canry' is not allowed; use one of: stable, canary."),
    ("services.restart_policy", "sometimes",
     "manifest field 'services.restart_policy': 'sometimes' is not allowed; use one of: no, always, unless-stopped, on-failure."),
    ("services.version", 1.0,
     "manifest field 'services.version': 1.0 is number, expected a string; quote it in YAML, e.g. \"1.0\"."),
    ("network.driver_type", "overlay",
     "manifest field 'network.driver_type': 'overlay' is not allowed; use one of: bridge."),
    ("opa.mode", "remote",
     "manifest field 'opa.mode': 'remote' is not allowed; use one of: embedded, sidecar, external."),
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
    "nginx:latest\nx", "", "-nginx",
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
    "x'; } server { listen 9999; #", 'a"b', "a{b", "a}b", "a;b", "a\nb", "a$b", "a\\b", "a`b", "\u00e9@x",
    "a" * 129,
])
def test_contact_cannot_carry_nginx_syntax(contact):
    (error,) = errors_of(with_change("contact", contact))
    assert error.startswith("manifest field 'contact': ")
    assert "is not valid" in error and "quotes, braces, semicolons, '$' and line breaks are not allowed" in error


@pytest.mark.parametrize("contact", ["ops@swiftdeploy.local", "https://status.example.com/oncall", "Ops Team +44"])
def test_reasonable_contacts_are_accepted(contact):
    assert validate_manifest(with_change("contact", contact))["contact"] == contact


@pytest.mark.parametrize("section, key, expected", [
    ("nginx", "prot", "manifest field 'nginx.prot': unknown key; did you mean 'nginx.port'? remove it or use one of: "
                      "admin_port, image, keepalive_timeout, port, proxy_timeout."),
    ("services", "imgae", "manifest field 'services.imgae': unknown key; did you mean 'services.image'? remove it or "
                          "use one of: image, log_volume, mode, port, restart_policy, version."),
    ("services", "zzz", "manifest field 'services.zzz': unknown key; remove it or use one of: image, log_volume, mode, "
                        "port, restart_policy, version."),
])
def test_unknown_keys_suggest_the_closest(section, key, expected):
    data = copy.deepcopy(SEED)
    data[section][key] = 1
    assert errors_of(data) == [expected]


def test_unknown_top_level_key():
    data = copy.deepcopy(SEED)
    data["contcat"] = "x@y.z"
    assert errors_of(data) == ["manifest field 'contcat': unknown key; did you mean 'contact'? remove it or use one "
                               "of: canary, chaos, contact, network, nginx, opa, policy, services, stack."]


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
