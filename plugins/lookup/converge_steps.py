# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: converge_steps
author:
  - SwiftDeploy contributors (!UNKNOWN)
short_description: The files of each state a converge goes through, rendered on the controller
description:
  - For each live state given, the files C(swiftdeploy.stack.stack_converge) writes for it
    (C(nginx/nginx.conf), C(docker-compose.yml) and with O(edge) C(nginx/edge.conf) from the role's templates, and each slot's
    C(slots/<slot>/mode) unless O(mode_switch=none)), as that module's O(ignore:steps) option wants them.
  - The templates are rendered exactly as C(ansible.builtin.template)'s lookup renders them, with
    C(swiftdeploy_live) set to the state. Compiling them costs the controller 0.1 to 0.3 s a run,
    so a rendered file is kept in O(cache_dir), named by the SHA-256 of everything it was rendered
    from (the template's text, the values of every variable it names, this collection's filters
    and module_utils, ansible-core's version). A template that names C(lookup), C(query),
    C(now) or C(template_run_date) is rendered every time.
  - Hosts that want the same file at the same time (a fleet converging side by side) render it
    once; the others wait for the first under a lock file of that key in O(cache_dir), then read
    what it kept.
  - See docs/converge.md.
options:
  _terms:
    description: The live states, one per step, in order (validated states, as C(state_generations) returns them).
    required: true
    type: list
    elements: dict
  nginx_conf_mode:
    description: The mode of C(nginx/nginx.conf).
    type: str
    default: "0644"
  compose_mode:
    description: The mode of C(docker-compose.yml).
    type: str
    default: "0640"
  mode_switch:
    description: C(signal) writes each slot's mode file; C(none) writes none (the app has none).
    type: str
    choices: [signal, none]
    default: signal
  edge:
    description:
      - Also render C(nginx/edge.conf) (the edge nginx of the manifest's C(nginx.edge), docs/keepalive.md).
    type: bool
    default: false
  cache_dir:
    description:
      - Where rendered files are kept on the controller (created mode 0700, files 0600, the oldest
        pruned beyond 256 files); C(~) is the controller user's home. Empty renders every time.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Bring the stack through the states
  swiftdeploy.stack.stack_converge:
    project_path: "{{ swiftdeploy_project_path }}"
    steps: "{{ query('swiftdeploy.stack.converge_steps', _swiftdeploy_lives, cache_dir='~/.cache/swiftdeploy/render') }}"
"""

RETURN = r"""
_list:
  description: One step a state, C({files, state}); C(files) maps a path in the project to C({content, mode}).
  type: list
  elements: dict
"""

import fcntl
import hashlib
import json
import os
import tempfile

import jinja2
import jinja2.nodes

from ansible import __version__ as ANSIBLE_VERSION
from ansible import constants
from ansible.errors import AnsibleError
from ansible.plugins.loader import lookup_loader
from ansible.plugins.lookup import LookupBase

TEMPLATES = (("nginx/nginx.conf", "nginx.conf.j2", "nginx_conf_mode"),
             ("docker-compose.yml", "docker-compose.yml.j2", "compose_mode"))
# With edge: the edge nginx's file (loaded in place by stack_converge when it changes).
EDGE_TEMPLATE = ("nginx/edge.conf", "edge.conf.j2", "nginx_conf_mode")
# Names whose value changes between two renders of the same inputs: such a template is never cached.
UNCACHEABLE = frozenset(("lookup", "query", "q", "now", "template_run_date"))
# What ansible_managed (a template itself) may name, from the template lookup's own variables.
TEMPLATE_VARS = ("template_host", "template_uid", "template_path", "template_fullpath", "template_mtime")
CACHE_FILES = 256
COLLECTION = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names_in(source):
    """Every variable name a template reads (a superset: its own locals too), or None when it
    cannot be parsed outside Ansible or renders other templates."""
    try:
        tree = jinja2.Environment(trim_blocks=True).parse(source)
    except jinja2.TemplateError:
        return None
    others = (jinja2.nodes.Include, jinja2.nodes.Import, jinja2.nodes.FromImport, jinja2.nodes.Extends)
    if any(True for _node in tree.find_all(others)):
        return None  # another template's text would be part of the output
    return sorted(set(node.name for node in tree.find_all(jinja2.nodes.Name) if node.ctx == "load"))


def code_digest():
    """This collection's filters and module_utils: what a template's filters run."""
    digest = hashlib.sha256()
    for folder in ("filter", "module_utils"):
        directory = os.path.join(COLLECTION, folder)
        for name in sorted(os.listdir(directory)):
            if name.endswith(".py"):
                with open(os.path.join(directory, name), "rb") as handle:
                    digest.update(("%s/%s" % (folder, name)).encode() + b"\0" + handle.read())
    return digest.hexdigest()


class RenderCache(object):
    """Rendered files on the controller, by the SHA-256 of what they were rendered from."""

    def __init__(self, directory):
        self.directory = os.path.expanduser(directory) if directory else None

    def get(self, key):
        if not self.directory or key is None:
            return None
        try:
            with open(os.path.join(self.directory, key), encoding="utf-8") as handle:
                return handle.read()
        except (OSError, ValueError):
            return None

    def put(self, key, content):
        """Keep content under key; a cache that cannot be written is only slower."""
        if not self.directory or key is None:
            return
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(content)
            os.replace(temporary, os.path.join(self.directory, key))
            self.prune()
        except OSError:
            pass

    def get_or_render(self, key, render):
        """The file kept under key, else render() kept under it. The hosts of a fleet converge side
        by side, each in its own worker, and usually want the same files: the first to miss renders
        while the others wait for it (under a lock file per key) and then read what it kept."""
        content = self.get(key)
        if content is not None or not self.directory or key is None:
            return render() if content is None else content
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            lock = os.open(os.path.join(self.directory, ".lock-" + key), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return render()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            content = self.get(key)
            if content is None:
                content = render()
                self.put(key, content)
            return content
        finally:
            try:
                os.unlink(os.path.join(self.directory, ".lock-" + key))
            except OSError:
                pass
            os.close(lock)

    def prune(self):
        entries = [entry for entry in os.scandir(self.directory) if entry.is_file() and not entry.name.startswith(".")]
        if len(entries) > CACHE_FILES:
            entries.sort(key=lambda entry: entry.stat().st_mtime)
            for entry in entries[:len(entries) - CACHE_FILES]:
                os.unlink(entry.path)


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        lives = terms[0] if len(terms) == 1 and isinstance(terms[0], list) else terms
        self.cache = cache = RenderCache(self.get_option("cache_dir"))
        template = lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
        code = None
        steps = []
        templates = ((EDGE_TEMPLATE,) if self.get_option("edge") else ()) + TEMPLATES
        for live in lives:
            files = {}
            for relpath, name, mode_option in templates:
                key = None
                if cache.directory:
                    code = code or code_digest()
                    key = self.key(name, live, variables, code)
                content = cache.get_or_render(key, lambda: template.run(
                    [name], variables, template_vars=dict(swiftdeploy_live=live))[0])
                files[relpath] = {"content": content, "mode": self.get_option(mode_option)}
            if self.get_option("mode_switch") == "signal":
                for slot, spec in sorted(live["slots"].items()):
                    files["slots/%s/mode" % slot] = {"content": "%s\n" % spec["mode"], "mode": "0644"}
            steps.append({"files": files, "state": live})
        return steps

    def names(self, source):
        """names_in(source), kept in the cache too: parsing nginx.conf.j2 alone takes 30 ms."""
        key = "names-" + hashlib.sha256(source.encode("utf-8")).hexdigest()
        try:
            return json.loads(self.cache.get(key) or "")
        except ValueError:
            names = names_in(source)
            self.cache.put(key, json.dumps(names))
            return names

    def key(self, name, live, variables, code):
        """The SHA-256 of everything the template renders from, or None when it cannot be cached."""
        path = self.find_file_in_search_path(variables, "templates", name, ignore_missing=True)
        if not path:
            return None
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        names = self.names(source)
        if names is None or UNCACHEABLE.intersection(names):
            return None
        values = dict(swiftdeploy_live=live)
        for var in names:
            if var in values:
                continue
            if var == "ansible_managed" and var not in variables:
                managed = constants.config.get_config_value("DEFAULT_MANAGED_STR")
                if "template_run_date" in managed:
                    return None
                stat = os.stat(path)
                values[var] = [managed, str(stat.st_mtime), str(stat.st_uid), os.uname()[1], name, path]
            elif var in TEMPLATE_VARS:
                values[var] = [name, path, str(os.stat(path).st_mtime)]
            elif var in variables:
                try:
                    values[var] = self._templar.template(variables[var])
                except AnsibleError:
                    return None  # the render itself says what is wrong
        try:
            text = json.dumps({"values": values, "source": source, "code": code, "ansible": ANSIBLE_VERSION},
                              sort_keys=True, default=repr)
        except (TypeError, ValueError):
            return None
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
