"""The role's templates rendered without Docker, the way the role renders them: the tests' modules
in this folder share it (`from role_templates import ...`)."""

import pathlib

import jinja2
import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core before 2.19 templates any string it is given
    def trust_as_template(text):
        return text

from ansible_collections.swiftdeploy.stack.plugins.filter.nginx import sticky_routing
from ansible_collections.swiftdeploy.stack.plugins.module_utils._nginx import nginx_json, nginx_string

ROLE = pathlib.Path(__file__).resolve().parents[3] / "roles" / "swiftdeploy"


def role_variables(manifest, live, **facts):
    """The role's vars/main.yml with the facts a play has set by the time it renders."""
    variables = yaml.safe_load((ROLE / "vars" / "main.yml").read_text(encoding="utf-8"))
    variables.update(swiftdeploy_stack=manifest, ansible_managed="managed by test",
                     _swiftdeploy_opa_network="%s_opa" % manifest["stack"], swiftdeploy_live=live)
    variables.update(facts)
    return variables


def render_template(name, variables):
    """The text of roles/swiftdeploy/templates/<name> rendered with variables."""
    template = (ROLE / "templates" / name).read_text(encoding="utf-8")
    if name.endswith(".conf.j2"):
        # Plain Jinja with the collection's quoting filters, as Ansible's template module renders
        # it (trim_blocks); a Templar outside a play does not find collection filters.
        environment = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
        environment.filters.update({"comment": lambda text: "# " + text, "swiftdeploy.stack.nginx_string": nginx_string,
                                    "swiftdeploy.stack.nginx_json": nginx_json,
                                    "swiftdeploy.stack.sticky_routing": sticky_routing})
        return environment.from_string(template).render(variables)
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(template))
