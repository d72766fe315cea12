"""requirements-min.txt (the oldest-ansible-core stage's virtualenv, scripts/test-min.sh) pins
the controller libraries exactly as requirements.txt does; only ansible-core differs, and its
range is the one meta/runtime.yml's requires_ansible starts at."""

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def requirements(name):
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return {re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower(): line for line in lines if line}


def test_the_libraries_are_pinned_as_in_requirements_txt():
    runtime, oldest = requirements("requirements.txt"), requirements("requirements-min.txt")
    shared = {name: line for name, line in runtime.items() if name != "ansible-core"}
    assert {name: oldest.get(name) for name in shared} == shared


def test_ansible_core_is_the_line_requires_ansible_starts_at():
    required = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]
    major, minor = re.fullmatch(r">=(\d+)\.(\d+)\.0", required).groups()
    assert requirements("requirements-min.txt")["ansible-core"] == "ansible-core>=%s.%s,<%s.%d" % (
        major, minor, major, int(minor) + 1)
