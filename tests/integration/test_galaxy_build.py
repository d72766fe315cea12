"""`ansible-galaxy collection build` makes an artifact that installs and runs the example.

The artifact is built from the checkout, checked (size, content, checksums, what galaxy.yml's
build_ignore leaves out), installed offline into a scratch collections path, and its playbooks
are run by FQCN (swiftdeploy.stack.validate, swiftdeploy.stack.init) from a directory outside
the checkout, with a configuration and inventory of their own, against the example manifest the
artifact ships. The checkout is also on the collections path (.collections links it as
swiftdeploy.stack, next to community.docker), after the scratch path: the task paths of the runs
prove the installed copy is the one used.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile

import pytest
import yaml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MAX_BYTES = 2 * 1024 * 1024
STACK, PORT, ADMIN_PORT = "sdgalaxy", 17480, 17482
# What must never ship: local environments, caches, test output, reports, other artifacts.
EXCLUDED = (".venv/", ".venv-min/", ".collections/", ".git/", ".pytest_cache/", ".hypothesis/", ".ansible/", ".ci/",
            "tests/output/", "reports/", "context/", "changelogs/.plugin-cache.yaml")


@pytest.fixture(scope="module")
def galaxy(repo_root):
    return yaml.safe_load((repo_root / "galaxy.yml").read_text())


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, repo_root, ansible_env, galaxy):
    out = tmp_path_factory.mktemp("artifact")
    proc = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(out), str(repo_root)],
                          cwd=repo_root, env=ansible_env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = out / ("%s-%s-%s.tar.gz" % (galaxy["namespace"], galaxy["name"], galaxy["version"]))
    assert path.is_file(), proc.stdout
    return path


@pytest.fixture(scope="module")
def members(artifact):
    with tarfile.open(artifact) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_artifact_is_small(artifact):
    size = artifact.stat().st_size
    assert size < MAX_BYTES, "%s is %d bytes: did build_ignore miss a directory?" % (artifact.name, size)


def test_artifact_holds_the_collection(members, repo_root):
    names = set(members)
    assert {"MANIFEST.json", "FILES.json", "meta/runtime.yml", "README.md", "LICENSE", "CHANGELOG.rst",
            "changelogs/changelog.yaml", "manifest.yml"} <= names
    for playbook in (repo_root / "playbooks").glob("*.yml"):
        assert "playbooks/%s" % playbook.name in names, playbook.name
    for folder in ("plugins/modules", "plugins/action", "plugins/module_utils", "plugins/filter", "policies",
                   "roles/swiftdeploy/tasks", "roles/swiftdeploy/templates", "app", "awx"):
        files = [str(path.relative_to(repo_root)) for path in (repo_root / folder).rglob("*")
                 if path.is_file() and "__pycache__" not in path.parts]
        assert files, folder
        missing = [path for path in files if path not in names]
        assert missing == [], "%s: not in the artifact: %s" % (folder, missing)
    assert "execution-environment.yml" in names


def test_artifact_leaves_out_local_state(members):
    shipped = [name for name in members if name.startswith(EXCLUDED) or name.endswith((".tar.gz", ".pyc"))
               or "__pycache__" in name.split("/")]
    assert shipped == []


def test_manifest_json_is_galaxy_yml(artifact, galaxy):
    with tarfile.open(artifact) as tar:
        info = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    for key in ("namespace", "name", "version", "dependencies", "license"):
        assert info[key] == galaxy[key], key
    # Addresses the project does not have yet are left out, never filled with a placeholder.
    for key in ("repository", "documentation", "homepage", "issues"):
        assert info[key] == galaxy.get(key), key
        assert "example." not in str(info[key]), (key, info[key])


def test_license_file_is_the_licence_galaxy_yml_names(galaxy, members, artifact):
    assert galaxy["license"] == ["GPL-3.0-or-later"]
    with tarfile.open(artifact) as tar:
        text = tar.extractfile(members["LICENSE"]).read().decode()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text


def test_files_json_checksums_match_the_content(artifact):
    with tarfile.open(artifact) as tar:
        files = json.load(tar.extractfile("FILES.json"))["files"]
        regular = [entry for entry in files if entry["ftype"] == "file"]
        assert len(regular) > 50
        for entry in regular:
            digest = hashlib.sha256(tar.extractfile(entry["name"]).read()).hexdigest()
            assert digest == entry["chksum_sha256"], entry["name"]


# --------------------------------------------------------------------------------------------
# Install it and run it
# --------------------------------------------------------------------------------------------


class Installed:
    """The artifact installed in a scratch collections path, and a place to run it from."""

    def __init__(self, root, repo_root, env):
        self.root = root
        self.collections = root / "collections"
        self.tree = self.collections / "ansible_collections" / "swiftdeploy" / "stack"
        self.project = root / "project"
        self.repo_root = repo_root
        # The scratch path first: it must win over the checkout that .collections links.
        self.env = dict(env, ANSIBLE_COLLECTIONS_PATH="%s:%s" % (self.collections, repo_root / ".collections"),
                        ANSIBLE_CONFIG=str(root / "ansible.cfg"))

    def playbook(self, fqcn, *args):
        command = ["ansible-playbook", "-i", str(self.root / "inventory.yml"), fqcn,
                   "-e", "swiftdeploy_project_dir=%s" % self.project, "-vv", *args]
        return subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=600, check=False)


@pytest.fixture(scope="module")
def installed(artifact, tmp_path_factory, repo_root, ansible_env, write_manifest, app_image):
    root = tmp_path_factory.mktemp("installed")
    install = Installed(root, repo_root, ansible_env)
    # --force: the checkout, linked into .collections, is the same name and version "already
    # installed"; community.docker, the dependency, is found there offline.
    proc = subprocess.run(["ansible-galaxy", "collection", "install", str(artifact), "-p", str(install.collections),
                           "--offline", "--force"], cwd=root, env=install.env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "community.docker" in proc.stdout and "already installed" in proc.stdout, proc.stdout
    assert (install.tree / "MANIFEST.json").is_file()
    (root / "ansible.cfg").write_text("[defaults]\ninterpreter_python = auto_silent\nretry_files_enabled = false\n")
    inventory = {"swiftdeploy": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": str(repo_root / ".venv" / "bin" / "python")}}}}
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory))
    # The example manifest as the artifact ships it, with this test's stack name and ports; at
    # the default path, manifest.yml in the working directory.
    write_manifest(root / "manifest.yml", {"stack": STACK, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT,
                                           "network.name": "%s-net" % STACK,
                                           "services.log_volume": "%s-logs" % STACK}, base=install.tree / "manifest.yml")
    return install


def _task_paths(output):
    return re.findall(r"^task path: (\S+):\d+$", output, re.M)


def assert_ran_from_the_installed_copy(run, installed):
    paths = _task_paths(run.stdout)
    assert paths, run.stdout
    outside = [path for path in paths if not path.startswith(str(installed.tree) + "/")]
    assert outside == [], "tasks ran from outside the installed collection: %s" % sorted(set(outside))
    assert str(installed.repo_root / "roles") not in run.stdout
    assert "/.collections/ansible_collections/swiftdeploy/" not in run.stdout


def test_installed_validate_passes_on_the_example(installed):
    run = installed.playbook("swiftdeploy.stack.validate")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Validation PASSED" in run.stdout
    assert "port %d is free" % PORT in run.stdout or "held by this stack" in run.stdout, run.stdout
    assert_ran_from_the_installed_copy(run, installed)
    assert any(path.endswith("/roles/swiftdeploy/tasks/validate.yml") for path in _task_paths(run.stdout))


def test_installed_init_renders_the_example(installed):
    run = installed.playbook("swiftdeploy.stack.init")
    assert run.returncode == 0, run.stdout + run.stderr
    assert_ran_from_the_installed_copy(run, installed)
    conf = (installed.project / "nginx" / "nginx.conf").read_text()
    edge = (installed.project / "nginx" / "edge.conf").read_text()
    compose = yaml.safe_load((installed.project / "docker-compose.yml").read_text())
    # The edge (on by default) holds the container port, the host port published by compose; the
    # routing nginx behind it listens on the Unix socket they share.
    assert "listen 8080" in edge and "listen 8080" not in conf
    assert re.search(r"listen ['\"]?unix:", conf), conf
    assert compose["name"] == STACK
    published = json.dumps(compose["services"]["nginx"]["ports"] + compose["services"]["edge"]["ports"])
    assert str(PORT) in published and "127.0.0.1" in published and str(ADMIN_PORT) in published
