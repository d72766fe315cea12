"""docker-compose.yml.j2 rendered without Docker: every container gets the manifest's limits."""

import copy

import pytest
import yaml

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import initial_state

from role_templates import render_template, role_variables  # tests/unit/roles/role_templates.py

MINIMAL = {"services": {"image": "app:1", "port": 3000}, "nginx": {"image": "nginx:1.27", "port": 8080},
           "contact": "ops@example.com", "opa": {"mode": "sidecar"}}
TWO_SLOTS = {"generation": 2, "mode": "canary", "weight": 10, "stable": "blue", "canary": "green", "slots": {
    "blue": {"image": "app:1", "version": "1.0.0", "mode": "stable"},
    "green": {"image": "app:2", "version": "1.1.0", "mode": "canary"},
}}


def render(manifest, live=None):
    # The role renders from the live state, or the first deploy's one.
    if live is None:
        services = manifest["services"]
        live = initial_state(services["image"], services["version"], services["mode"])
    return yaml.safe_load(render_template("docker-compose.yml.j2", role_variables(manifest, live)))


def limits(service):
    return {key: service.get(key) for key in ("mem_limit", "cpus", "pids_limit")}


def test_every_container_gets_the_default_limits():
    compose = render(validate_manifest(copy.deepcopy(MINIMAL)), TWO_SLOTS)
    assert sorted(compose["services"]) == ["app-blue", "app-green", "edge", "nginx", "opa"]
    app = {"mem_limit": "256m", "cpus": 1.0, "pids_limit": 64}
    assert limits(compose["services"]["app-blue"]) == limits(compose["services"]["app-green"]) == app
    assert limits(compose["services"]["nginx"]) == {"mem_limit": "256m", "cpus": 1.0, "pids_limit": 256}
    assert limits(compose["services"]["edge"]) == limits(compose["services"]["nginx"])  # nginx.edge, on by default
    assert limits(compose["services"]["opa"]) == {"mem_limit": "256m", "cpus": 0.5, "pids_limit": 128}


@pytest.mark.parametrize("section, service", [("services", "app-blue"), ("nginx", "nginx"), ("opa", "opa")])
def test_the_manifest_overrides_the_limits(section, service):
    data = copy.deepcopy(MINIMAL)
    data[section]["resources"] = {"memory": "1g", "cpus": 2, "pids": 32}
    compose = render(validate_manifest(data))
    assert limits(compose["services"][service]) == {"mem_limit": "1g", "cpus": 2.0, "pids_limit": 32}


def test_network_and_volume_are_named_after_the_stack():
    compose = render(validate_manifest(dict(copy.deepcopy(MINIMAL), stack="shop")))
    assert compose["networks"]["stack"]["name"] == "shop-net"
    assert compose["volumes"]["logs"]["name"] == "shop-logs"


def test_a_restart_policy_with_a_retry_count_reaches_compose_as_written():
    data = copy.deepcopy(MINIMAL)
    data["services"]["restart_policy"] = "on-failure:3"
    compose = render(validate_manifest(data))
    assert {service["restart"] for service in compose["services"].values()} == {"on-failure:3"}
