"""Render the role's audit report template as the template module does, for the audit tests
(tests/integration/test_audit_playbook.py checks that ansible renders the same bytes)."""

import json
import pathlib

import jinja2

from ansible_collections.swiftdeploy.stack.plugins.filter.markdown import FilterModule

ROOT = pathlib.Path(__file__).resolve().parents[3]
AUDIT_TEMPLATE = ROOT / "roles" / "swiftdeploy" / "templates" / "audit_report.md.j2"


def render_report(data, template=AUDIT_TEMPLATE):
    """The Markdown the role renders from audit_report_info's result: the template module's
    Jinja settings (trim_blocks), the collection's filters under their full names, and the data
    after the JSON round trip a module result makes."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters.update({"swiftdeploy.stack." + name: function
                        for name, function in FilterModule().filters().items()})
    source = pathlib.Path(template).read_text(encoding="utf-8")
    return env.from_string(source).render(swiftdeploy_audit=json.loads(json.dumps(data)))
