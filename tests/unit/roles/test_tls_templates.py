"""nginx.conf.j2 and docker-compose.yml.j2 with HTTPS, rendered without Docker (the integration
test runs the result through nginx -t and real clients)."""

import copy
import pathlib
import re

import jinja2
import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core before 2.19 templates any string it is given
    def trust_as_template(text):
        return text

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._nginx import nginx_json, nginx_string
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import initial_state

ROLE = pathlib.Path(__file__).resolve().parents[3] / "roles" / "swiftdeploy"
MINIMAL = {"services": {"image": "app:1", "port": 3000}, "nginx": {"image": "nginx:1.27", "port": 8443},
           "contact": "ops@example.com"}
STEM = "0123456789abcdef"


def render(name, tls=None):
    data = copy.deepcopy(MINIMAL)
    if tls is not None:
        data["nginx"]["tls"] = tls
    manifest = validate_manifest(data)
    variables = yaml.safe_load((ROLE / "vars" / "main.yml").read_text(encoding="utf-8"))
    variables.update(swiftdeploy_stack=manifest, ansible_managed="managed by test",
                     _swiftdeploy_opa_network="%s_opa" % manifest["stack"], _swiftdeploy_tls={"stem": STEM},
                     swiftdeploy_live=initial_state("app:1", "1.0.0", "stable"))
    template = (ROLE / "templates" / name).read_text(encoding="utf-8")
    if name == "nginx.conf.j2":
        # Plain Jinja with the collection's quoting filters, as Ansible's template module renders
        # it (trim_blocks); a Templar outside a play does not find collection filters.
        environment = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
        environment.filters.update({"comment": lambda text: "# " + text, "swiftdeploy.stack.nginx_string": nginx_string,
                                    "swiftdeploy.stack.nginx_json": nginx_json})
        return environment.from_string(template).render(variables)
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(template))


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
