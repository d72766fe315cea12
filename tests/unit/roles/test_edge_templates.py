"""nginx.edge (docs/keepalive.md): edge.conf.j2, and what nginx.conf.j2 and docker-compose.yml.j2
become with it, rendered without Docker (tests/integration/test_keepalive.py runs them)."""

import copy
import re

import pytest
import yaml

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import initial_state

from role_templates import render_template, role_variables  # tests/unit/roles/role_templates.py

MINIMAL = {"services": {"image": "app:1", "port": 3000}, "nginx": {"image": "nginx:1.27", "port": 8443},
           "contact": "ops@example.com"}
SOCKET = "unix:/var/cache/nginx/swiftdeploy-public.sock"


def render(name, nginx=None, live=None, stem="0123abcd"):
    data = copy.deepcopy(MINIMAL)
    data["nginx"].update(nginx or {})
    manifest = validate_manifest(data)
    variables = role_variables(manifest, live or initial_state("app:1", "1.0.0", "stable"),
                               _swiftdeploy_tls={"stem": stem})
    text = render_template(name, variables)
    return text if name.endswith(".conf.j2") else yaml.safe_load(text)


def test_the_edge_keeps_client_connections_a_minute_unless_told_otherwise():
    assert "keepalive_timeout 60s;" in render("edge.conf.j2", {"edge": True})
    assert "keepalive_timeout 0s;" in render("nginx.conf.j2", {"edge": True})


def test_edge_is_on_by_default_and_off_leaves_one_nginx_as_before():
    assert validate_manifest(copy.deepcopy(MINIMAL))["nginx"]["edge"] is True
    assert "edge" in render("docker-compose.yml.j2")["services"]
    compose = render("docker-compose.yml.j2", {"edge": False})
    assert "edge" not in compose["services"]
    assert compose["services"]["nginx"]["ports"] == ["0.0.0.0:8443:8080", "127.0.0.1:8082:8081"]
    assert "rm -f" not in compose["services"]["nginx"]["command"][2]
    conf = render("nginx.conf.j2", {"edge": False})
    assert "listen 8080;" in conf and "unix:" not in conf and "keepalive_timeout 0s;" in conf


@pytest.mark.parametrize("tls, ports", [
    ({}, ["0.0.0.0:8443:8080"]),
    ({"enabled": True, "redirect_port": 8000}, ["0.0.0.0:8443:8080", "0.0.0.0:8000:8083"]),
])
def test_the_edge_owns_the_public_ports_and_the_routing_nginx_only_the_admin_port(tls, ports):
    compose = render("docker-compose.yml.j2", {"edge": True, "tls": tls})
    edge, nginx = compose["services"]["edge"], compose["services"]["nginx"]
    assert edge["ports"] == ports
    assert nginx["ports"] == ["127.0.0.1:8082:8081"]
    # Least privilege, as the routing nginx: same image, user, hardening and limits; mounts read-only.
    for key in ("image", "user", "read_only", "cap_drop", "security_opt", "init", "mem_limit", "cpus", "pids_limit",
                "networks", "tmpfs"):
        assert edge[key] == nginx[key], key
    assert edge["read_only"] is True and edge["cap_drop"] == ["ALL"]
    assert all(volume["read_only"] for volume in edge["volumes"])
    assert edge["labels"] == {"org.swiftdeploy.stack": "swiftdeploy", "org.swiftdeploy.role": "edge"}
    assert edge["depends_on"] == ["nginx"]
    assert nginx["command"][2].startswith("rm -f /var/cache/nginx/swiftdeploy-public.sock; ")


@pytest.mark.parametrize("before, after", [
    ({"keepalive_timeout": 60}, {"keepalive_timeout": 30}),
    ({"proxy_timeout": 30}, {"proxy_timeout": 40}),
    ({"tls": {"enabled": True}}, {"tls": {"enabled": True}, "stem": "4567cdef"}),
])
def test_a_changed_listener_changes_edge_conf_but_not_the_edges_compose_service(before, after):
    """Compose must not recreate the edge for its listener (its port would close): stack_converge
    loads the new edge.conf in place (docs/keepalive.md)."""
    def both(nginx):
        nginx = dict(nginx, edge=True)
        stem = nginx.pop("stem", "0123abcd")
        return [render(name, nginx, stem=stem) for name in ("edge.conf.j2", "docker-compose.yml.j2")]
    conf_before, compose_before = both(before)
    conf_after, compose_after = both(after)
    assert conf_before != conf_after
    assert compose_before["services"]["edge"] == compose_after["services"]["edge"]


def test_the_routing_nginx_listens_on_the_socket_and_trusts_only_it_for_the_client_address():
    conf = render("nginx.conf.j2", {"edge": True, "keepalive_timeout": 60, "tls": {"enabled": True, "hsts_max_age": 60}})
    assert "listen '%s';" % SOCKET in conf
    assert "set_real_ip_from unix:;" in conf and "real_ip_header X-Real-IP;" in conf
    assert "ssl_certificate" not in conf and " ssl;" not in conf and "listen 8083" not in conf
    assert "keepalive_timeout 0s;" in conf  # only the edge holds clients' idle connections
    assert "Strict-Transport-Security" in conf  # added by the routing nginx, passed on by the edge
    assert "X-Forwarded-Proto $swiftdeploy_forwarded_proto;" in conf


@pytest.mark.parametrize("nginx, present, absent", [
    ({"edge": True}, ["listen 8080;", "keepalive_timeout 60s;"], ["ssl_certificate", "listen 8083"]),
    ({"edge": True, "keepalive_timeout": 0}, ["keepalive_timeout 0s;"], []),
    ({"edge": True, "keepalive_timeout": 60, "proxy_timeout": 30},
     ["keepalive_timeout 60s;", "proxy_read_timeout 35s;"], ["ssl"]),
    ({"edge": True, "tls": {"enabled": True, "redirect_port": 8000}},
     ["listen 8080 ssl;", "ssl_certificate '/etc/nginx/swiftdeploy/tls/0123abcd.crt';", "listen 8083;",
      "return 308 https://$host:8443$request_uri;"], []),
])
def test_edge_conf(nginx, present, absent):
    conf = render("edge.conf.j2", nginx)
    for text in present:
        assert text in conf
    for text in absent:
        assert text not in conf
    assert "server '%s' max_fails=0;" % SOCKET in conf
    # No upstream keep-alive, and no retry of a request that was sent (docs/keepalive.md).
    assert re.search(r"^\s*keepalive \d+;", conf, re.M) is None
    assert "proxy_next_upstream error;" in conf and "non_idempotent" not in conf


def test_edge_conf_does_not_depend_on_the_live_state():
    canary = initial_state("app:1", "1.0.0", "stable")
    other = dict(canary, generation=7, weight=50)
    assert render("edge.conf.j2", {"edge": True}, canary) == render("edge.conf.j2", {"edge": True}, other)
