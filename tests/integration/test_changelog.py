"""The release notes: antsibull-changelog accepts every fragment and changelogs/changelog.yaml,
CHANGELOG.rst is exactly what it makes from changelog.yaml (never edited by hand), and the
newest release there is the version galaxy.yml builds. All offline.

A new fragment is folded into the release by `antsibull-changelog release --update-existing
--refresh` (changelogs/config.yaml says why); that is the release manager's step, not checked
here, so branches adding fragments do not all rewrite the same two files.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml


@pytest.fixture(scope="module")
def changelog_tool(repo_root, ansible_env, venv):
    tool = venv / "bin" / "antsibull-changelog"
    assert tool.exists(), "%s is missing: requirements-dev.txt installs it (make setup)" % tool

    def run(*args):
        return subprocess.run([str(tool), *args], cwd=repo_root, env=ansible_env, capture_output=True,
                              text=True, timeout=120, check=False)

    return run


def test_every_fragment_passes_lint(changelog_tool):
    proc = changelog_tool("lint")
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_changelog_yaml_passes_lint(changelog_tool):
    proc = changelog_tool("lint-changelog-yaml", "changelogs/changelog.yaml")
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_changelog_rst_is_generated_from_changelog_yaml(changelog_tool, repo_root, tmp_path):
    generated = tmp_path / "CHANGELOG.rst"
    proc = changelog_tool("generate", "--output", str(generated), "--output-format", "rst")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo_root / "CHANGELOG.rst").read_text() == generated.read_text(), (
        "CHANGELOG.rst differs from what changelogs/changelog.yaml gives: run "
        "`antsibull-changelog release --update-existing --refresh` (or `generate`) instead of editing it")


def test_the_newest_release_is_the_version_galaxy_builds(repo_root):
    releases = yaml.safe_load((repo_root / "changelogs" / "changelog.yaml").read_text())["releases"]
    version = yaml.safe_load((repo_root / "galaxy.yml").read_text())["version"]
    assert version in releases, (version, sorted(releases))
    assert "release_summary" in releases[version]["changes"]
