"""A normal run prints no Python warnings: a user sees Ansible's output, not the controller's
libraries' deprecations (cryptography 51 warned at ansible-core's import of its DSA module
before every playbook; requirements.txt caps it).

Python's warnings module writes "<file>:<line>: <Category>Warning: <message>" to stderr;
Ansible's own are "[WARNING]" and "[DEPRECATION WARNING]", which this does not look at.
"""

from __future__ import annotations

import pathlib
import re

import pytest

PLAYBOOKS = sorted(path.stem for path in (pathlib.Path(__file__).resolve().parents[2] / "playbooks").glob("*.yml"))
PYTHON_WARNING = re.compile(r"\b\w*Warning\b")


def python_warnings(text):
    return [line for line in text.splitlines() if PYTHON_WARNING.search(line)]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check_prints_no_python_warning(run_playbook, playbook):
    run = run_playbook(playbook, "--syntax-check")
    assert run.rc == 0, run.describe()
    assert python_warnings(run.output) == [], run.describe()


def test_a_real_run_prints_no_python_warning(run_playbook, tmp_path):
    """init.yml renders the example stack's files into a scratch project: a real run with the
    collection's action plugins, modules and filters loaded, and no Docker."""
    run = run_playbook("init", "-e", "swiftdeploy_project_dir=%s" % tmp_path)
    assert run.rc == 0, run.describe()
    assert (tmp_path / "docker-compose.yml").is_file()
    assert python_warnings(run.output) == [], run.describe()
