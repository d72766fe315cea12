"""The converge's files per state (lookup swiftdeploy.stack.converge_steps): rendered by the
template lookup, kept by the SHA-256 of everything they were rendered from, and rendered again
whenever any of that changes. The integration tests render the role's real templates through it."""

from __future__ import annotations

import os
import threading
import time

import pytest

import yaml

from ansible import constants
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.swiftdeploy.stack.plugins.lookup import converge_steps
from ansible_collections.swiftdeploy.stack.plugins.lookup.converge_steps import LookupModule, RenderCache, names_in

NAME = "swiftdeploy.stack.converge_steps"


def plugin(variables):
    """The lookup with its documented options, as Ansible's plugin loader would set it up."""
    constants.config.initialize_plugin_configuration_definitions(
        "lookup", NAME, yaml.safe_load(converge_steps.DOCUMENTATION)["options"])
    loader = DataLoader()
    lookup = LookupModule(loader=loader, templar=Templar(loader=loader, variables=variables))
    lookup._load_name = NAME  # pylint: disable=protected-access
    return lookup


NGINX = "{% set live = swiftdeploy_live %}listen {{ swiftdeploy_stack.port }}; # {{ ansible_managed }} {{ live.stable }}\n"
COMPOSE = "services: {{ swiftdeploy_live.slots | list }} {{ _swiftdeploy_nginx_conf_dir }}\n"
LIVE = {"stable": "blue", "canary": None, "weight": 0, "generation": 1,
        "slots": {"blue": {"mode": "stable", "image": "app:1", "version": "1"}}}


class FakeTemplate(object):
    """ansible.builtin.template's lookup: counts renders, answers the template's name and state."""

    def __init__(self):
        self.renders = []

    def run(self, terms, variables, template_vars):
        self.renders.append(terms[0])
        return ["%s for %s at %s" % (terms[0], template_vars["swiftdeploy_live"]["stable"],
                                     variables["swiftdeploy_stack"]["port"])]


@pytest.fixture
def world(tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "nginx.conf.j2").write_text(NGINX)
    (templates / "docker-compose.yml.j2").write_text(COMPOSE)
    fake = FakeTemplate()
    monkeypatch.setattr(converge_steps, "lookup_loader", type("Loader", (), {"get": staticmethod(lambda *args, **kwargs: fake)}))
    monkeypatch.setattr(LookupModule, "find_file_in_search_path",
                        lambda self, variables, subdir, name, ignore_missing=False: str(templates / name))

    class World(object):
        cache = str(tmp_path / "cache")
        template = fake
        variables = {"swiftdeploy_stack": {"port": 8080}, "_swiftdeploy_nginx_conf_dir": "/etc/nginx",
                     "unrelated": 1}

        def run(self, lives=(LIVE,), **options):
            lookup = plugin(self.variables)
            before = len(fake.renders)
            steps = lookup.run([list(lives)], self.variables, **dict({"cache_dir": self.cache}, **options))
            return steps, fake.renders[before:]

        def write(self, name, text):
            (templates / name).write_text(text)
    return World()


def test_files_are_rendered_once_and_then_come_from_the_cache(world):
    steps, rendered = world.run()
    assert rendered == ["nginx.conf.j2", "docker-compose.yml.j2"]
    assert steps == [{"state": LIVE, "files": {
        "nginx/nginx.conf": {"content": "nginx.conf.j2 for blue at 8080", "mode": "0644"},
        "docker-compose.yml": {"content": "docker-compose.yml.j2 for blue at 8080", "mode": "0640"},
        "slots/blue/mode": {"content": "stable\n", "mode": "0644"}}}]
    again, rendered = world.run()
    assert rendered == [] and again == steps
    assert oct(os.stat(world.cache).st_mode & 0o777) == "0o700"
    assert all(oct(entry.stat().st_mode & 0o777) == "0o600" for entry in os.scandir(world.cache))


@pytest.mark.parametrize("change, rendered", [
    pytest.param(lambda w: w.variables["swiftdeploy_stack"].update(port=9090), ["nginx.conf.j2"], id="a variable nginx.conf names"),
    pytest.param(lambda w: w.variables.update(_swiftdeploy_nginx_conf_dir="/srv"), ["docker-compose.yml.j2"],
                 id="a variable only the compose file names"),
    pytest.param(lambda w: w.variables.update(ansible_managed="managed by us"), ["nginx.conf.j2"], id="ansible_managed"),
    pytest.param(lambda w: w.write("nginx.conf.j2", NGINX + "# more\n"), ["nginx.conf.j2"], id="the template's text"),
    pytest.param(lambda w: w.variables.update(unrelated=2), [], id="a variable no template names"),
])
def test_whatever_a_file_is_rendered_from_renders_it_again(world, change, rendered):
    world.run()
    change(world)
    assert world.run()[1] == rendered


def test_each_state_is_its_own_file(world):
    canary = dict(LIVE, stable="green", slots={"green": {"mode": "canary"}})
    steps, rendered = world.run(lives=[LIVE, canary])
    assert rendered == ["nginx.conf.j2", "docker-compose.yml.j2"] * 2
    assert steps[1]["files"]["nginx/nginx.conf"]["content"] == "nginx.conf.j2 for green at 8080"
    assert world.run(lives=[canary])[1] == []


def test_the_collections_own_code_is_part_of_the_key(world, monkeypatch):
    world.run()
    monkeypatch.setattr(converge_steps, "code_digest", lambda: "another release of the filters")
    assert world.run()[1] == ["nginx.conf.j2", "docker-compose.yml.j2"]


@pytest.mark.parametrize("text", [
    pytest.param("{{ now() }}\n", id="now"),
    pytest.param("{{ lookup('file', '/etc/hostname') }}\n", id="a lookup"),
    pytest.param("{{ template_run_date }}\n", id="the run's date"),
    pytest.param("{% include 'other.j2' %}\n", id="another template"),
    pytest.param("{% if %}\n", id="not parseable outside Ansible"),
])
def test_a_template_whose_output_can_change_by_itself_is_rendered_every_time(world, text):
    world.write("nginx.conf.j2", text)
    world.run()
    assert world.run()[1] == ["nginx.conf.j2"]


def test_without_a_cache_directory_every_file_is_rendered(world):
    world.run(cache_dir="")
    assert world.run(cache_dir="")[1] == ["nginx.conf.j2", "docker-compose.yml.j2"]


def test_without_mode_switch_there_are_no_mode_files(world):
    steps, _rendered = world.run(mode_switch="none", nginx_conf_mode="0640")
    assert sorted(steps[0]["files"]) == ["docker-compose.yml", "nginx/nginx.conf"]
    assert steps[0]["files"]["nginx/nginx.conf"]["mode"] == "0640"


def test_a_cache_that_cannot_be_written_is_only_slower(world, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert world.run(cache_dir=str(blocked / "cache"))[1] == ["nginx.conf.j2", "docker-compose.yml.j2"]


def test_the_cache_keeps_the_newest_files(tmp_path, monkeypatch):
    monkeypatch.setattr(converge_steps, "CACHE_FILES", 3)
    cache = RenderCache(str(tmp_path / "c"))
    for number in range(5):
        cache.put("k%d" % number, "v%d" % number)
        os.utime(os.path.join(cache.directory, "k%d" % number), (number, number))
    assert sorted(os.listdir(cache.directory)) == ["k2", "k3", "k4"]
    assert cache.get("k4") == "v4" and cache.get("k0") is None and cache.get(None) is None


def test_hosts_rendering_the_same_file_side_by_side_render_it_once(tmp_path):
    # A fleet's hosts converge at once, each in its own worker: the first to miss renders, the
    # others wait for it under the key's lock file and read what it kept (threads here, as flock
    # locks each open of the file).
    cache = RenderCache(str(tmp_path / "c"))
    renders = []
    started = threading.Event()

    def render():
        renders.append(1)
        started.set()
        time.sleep(0.3)
        return "rendered"

    results = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_render("k", render)))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=lambda: results.append(cache.get_or_render("k", render))) for _n in range(2)]
    for thread in others:
        thread.start()
    for thread in [first] + others:
        thread.join(10)
    assert results == ["rendered"] * 3 and len(renders) == 1
    assert sorted(os.listdir(cache.directory)) == ["k"]
    assert RenderCache("").get_or_render("k", lambda: "again") == "again"
    assert cache.get_or_render(None, lambda: "uncached") == "uncached"


def test_names_are_every_variable_read():
    assert names_in(NGINX) == ["ansible_managed", "live", "swiftdeploy_live", "swiftdeploy_stack"]
    assert names_in("{% include 'x' %}") is None
