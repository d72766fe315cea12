"""nginx.conf.j2 and docker-compose.yml.j2 with HTTPS on the routing nginx itself (nginx.edge
false), rendered without Docker (the integration test runs the result through nginx -t and real
clients). With the edge, on by default, the edge terminates TLS: test_edge_templates.py."""

import copy
import re

import yaml

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import initial_state

from role_templates import render_template, role_variables  # tests/unit/roles/role_templates.py

MINIMAL = {"services": {"image": "app:1", "port": 3000}, "nginx": {"image": "nginx:1.27", "port": 8443, "edge": False},
           "contact": "ops@example.com"}
STEM = "0123456789abcdef"


def render(name, tls=None):
    data = copy.deepcopy(MINIMAL)
    if tls is not None:
        data["nginx"]["tls"] = tls
    manifest = validate_manifest(data)
    return render_template(name, role_variables(manifest, initial_state("app:1", "1.0.0", "stable"),
                                                _swiftdeploy_tls={"stem": STEM}))


def servers(conf):
    """{listen directive: server block text} of an nginx.conf."""
    blocks = re.split(r"\n    server \{\n", conf)[1:]
    return dict((re.search(r"listen ([^;]+);", block).group(1), block) for block in blocks)


def test_without_tls_nothing_changes():
    conf = render("nginx.conf.j2")
    assert "ssl" not in conf and "Strict-Transport-Security" not in conf
    assert sorted(servers(conf)) == ["8080", "8081"]
    ports = yaml.safe_load(render("docker-compose.yml.j2"))["services"]["nginx"]["ports"]
    assert ports == ["0.0.0.0:8443:8080", "127.0.0.1:8082:8081"]


def test_https_on_the_public_port_only_and_no_plain_http_without_a_redirect_port():
    conf = render("nginx.conf.j2", {"enabled": True})
    listeners = servers(conf)
    assert sorted(listeners) == ["8080 ssl", "8081"]
    public = listeners["8080 ssl"]
    assert "ssl_certificate '/etc/nginx/swiftdeploy/tls/%s.crt';" % STEM in public
    assert "ssl_certificate_key '/etc/nginx/swiftdeploy/tls/%s.key';" % STEM in public
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert "ssl_session_cache shared:swiftdeploy_tls:10m;" in conf
    assert "Strict-Transport-Security" not in conf
    ports = yaml.safe_load(render("docker-compose.yml.j2", {"enabled": True}))["services"]["nginx"]["ports"]
    assert ports == ["0.0.0.0:8443:8080", "127.0.0.1:8082:8081"]


def test_the_redirect_port_only_redirects_and_is_published():
    tls = {"enabled": True, "redirect_port": 8079, "hsts_max_age": 31536000}
    conf = render("nginx.conf.j2", tls)
    redirect = servers(conf)["8083"]
    assert re.findall(r"^ +(?:location|return|proxy_pass)[^\n]*", redirect, re.M) == [
        "        location / {", "            return 308 https://$host:8443$request_uri;"]
    assert "add_header Strict-Transport-Security 'max-age=31536000' always;" in conf
    ports = yaml.safe_load(render("docker-compose.yml.j2", tls))["services"]["nginx"]["ports"]
    assert ports == ["0.0.0.0:8443:8080", "127.0.0.1:8082:8081", "0.0.0.0:8079:8083"]


def test_the_redirect_to_port_443_names_no_port():
    data = {"enabled": True, "redirect_port": 80}
    MINIMAL["nginx"]["port"], port = 443, MINIMAL["nginx"]["port"]
    try:
        conf = render("nginx.conf.j2", data)
    finally:
        MINIMAL["nginx"]["port"] = port
    assert "return 308 https://$host$request_uri;" in servers(conf)["8083"]
