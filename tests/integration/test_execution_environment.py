"""execution-environment.yml: `ansible-builder create` makes a complete build context.

The definition is used as a user would: next to the collection artifact that `ansible-galaxy
collection build` writes and the requirements.txt it names (copied to a scratch directory with
it, so that nothing is written into the checkout). The generated context is then checked
against what the code needs, derived from the code itself:
  - every third-party Python module imported by the collection's plugins (action, filter and
    module_utils run on the controller), and every library the community.docker modules the
    roles call declare as required, is in _build/requirements.txt;
  - every collection whose FQCNs appear in roles/, playbooks/ or awx/ is in requirements.yml,
    at a version the one tested here satisfies, and this collection's own artifact resolves from
    the directory the image's galaxy stage installs from;
  - the ansible-core pin agrees with the controller's virtualenv and meta/runtime.yml, and is
    safe in the unquoted RUN line the builder writes;
  - the final image puts the galaxy stage's install path on ANSIBLE_COLLECTIONS_PATH.

Not tested: `ansible-builder build`. It pulls quay.io/centos/centos:stream9 and installs from
Galaxy and PyPI inside the build; no container registry or Galaxy is reachable from here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name


@pytest.fixture(scope="module")
def definition(repo_root):
    return yaml.safe_load((repo_root / "execution-environment.yml").read_text())


@pytest.fixture(scope="module")
def galaxy(repo_root):
    return yaml.safe_load((repo_root / "galaxy.yml").read_text())


@pytest.fixture(scope="module")
def builder(tmp_path_factory, repo_root, ansible_env, definition):
    """Run `ansible-builder create` on the definition beside its inputs; return the context."""
    source = tmp_path_factory.mktemp("ee-source")
    shutil.copy(repo_root / "execution-environment.yml", source)
    shutil.copy(repo_root / definition["dependencies"]["python"], source)
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(source), str(repo_root)],
                           cwd=repo_root, env=ansible_env, capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    context = tmp_path_factory.mktemp("ee-context")
    proc = subprocess.run(["ansible-builder", "create", "-f", str(source / "execution-environment.yml"),
                           "--context", str(context), "--output-filename", "Containerfile", "-v", "3"],
                          cwd=source, env=ansible_env, capture_output=True, text=True, timeout=300, check=False)
    proc.context = context
    return proc


@pytest.fixture(scope="module")
def context(builder):
    assert builder.returncode == 0, builder.stdout + builder.stderr
    return builder.context


@pytest.fixture(scope="module")
def containerfile(context):
    return (context / "Containerfile").read_text()


def build_args(containerfile):
    return dict(re.findall(r'^ARG (\w+)="(.*)"$', containerfile, re.M))


def test_create_succeeds_and_finds_every_input(builder):
    assert builder.returncode == 0, builder.stdout + builder.stderr
    output = builder.stdout + builder.stderr
    assert "Complete! The build context can be found at" in output
    # A missing additional_build_files source is only a warning to the builder.
    assert "No matches for" not in output and "does not exist" not in output, output


def test_base_image_is_the_one_the_definition_names(containerfile, definition):
    args = build_args(containerfile)
    assert args["EE_BASE_IMAGE"] == definition["images"]["base_image"]["name"] == "quay.io/centos/centos:stream9"
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile
    assert args["PYCMD"] == "/usr/bin/python3.11"


# --------------------------------------------------------------------------------------------
# Python
# --------------------------------------------------------------------------------------------


def plugin_imports(repo_root) -> dict[str, set[str]]:
    """{top-level module: {files importing it}} for the third-party imports of plugins/."""
    found: dict[str, set[str]] = {}
    for path in sorted((repo_root / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", "ansible", "ansible_collections"):
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(repo_root)))
    return found


def used_fqcns(repo_root) -> set[str]:
    """Every namespace.collection.name of an installed collection used in roles/, playbooks/, awx/."""
    installed = repo_root / ".collections" / "ansible_collections"
    collections = sorted("%s.%s" % (ns.name, coll.name) for ns in installed.iterdir() if ns.is_dir()
                         for coll in ns.iterdir() if coll.is_dir())
    pattern = re.compile(r"(?<![\w.])(%s)\.[a-z_][a-z0-9_]*" % "|".join(re.escape(c) for c in collections))
    found = set()
    for folder in ("roles", "playbooks", "awx"):
        for path in (repo_root / folder).rglob("*"):
            if path.suffix in (".yml", ".yaml", ".j2"):
                found |= {match.group(0) for match in pattern.finditer(path.read_text())}
    return found


def test_plugins_import_what_this_test_expects_to_find(repo_root):
    """Guards the derivation below: the policy engine and the manifest parser are found."""
    imports = plugin_imports(repo_root)
    assert {"regopy", "yaml"} <= set(imports), imports
    assert "plugins/module_utils/_policy.py" in imports["regopy"]


def _distribution(module):
    dists = importlib.metadata.packages_distributions().get(module)
    assert dists, "%s is imported by the plugins but not installed in the virtualenv" % module
    return canonicalize_name(dists[0])


def requirement_names(path) -> dict[str, Requirement]:
    requirements = {}
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            requirements[canonicalize_name(requirement.name)] = requirement
    return requirements


def test_python_requirements_cover_every_plugin_import(context, repo_root):
    listed = requirement_names(context / "_build" / "requirements.txt")
    for module, files in plugin_imports(repo_root).items():
        assert _distribution(module) in listed, "%s (imported by %s) is not in the EE" % (module, sorted(files))


def test_python_requirements_cover_the_docker_modules(context, repo_root, ansible_env):
    """The libraries the community.docker modules used by the roles require unconditionally
    (their documented `requirements`, fragments resolved by ansible-doc)."""
    modules = sorted(name for name in used_fqcns(repo_root) if name.startswith("community.docker."))
    assert modules, "the roles use no community.docker module?"
    proc = subprocess.run(["ansible-doc", "-t", "module", "--json", *modules], cwd=repo_root, env=ansible_env,
                          capture_output=True, text=True, timeout=120, check=True)
    needed = set()
    for name, doc in json.loads(proc.stdout).items():
        # "requests" is unconditional; "paramiko (when using SSH ...)" is not.
        needed |= {canonicalize_name(entry) for entry in doc["doc"].get("requirements", [])
                   if re.fullmatch(r"[A-Za-z0-9_.-]+", entry)}
    assert "requests" in needed, needed
    listed = requirement_names(context / "_build" / "requirements.txt")
    assert needed <= set(listed), needed - set(listed)


def test_python_requirements_include_the_libraries_the_issue_names(context):
    listed = requirement_names(context / "_build" / "requirements.txt")
    assert {"regopy", "docker", "requests", "pyyaml", "jinja2", "prometheus-client"} <= set(listed), sorted(listed)


def test_installed_libraries_satisfy_the_ee_pins(context):
    """The versions the tests run with are versions the image may get."""
    for name, requirement in requirement_names(context / "_build" / "requirements.txt").items():
        installed = importlib.metadata.version(name)
        assert requirement.specifier.contains(installed, prereleases=True), (name, installed, requirement)


def test_ansible_core_pin_matches_the_controller_and_the_collection(containerfile, repo_root):
    refs = build_args(containerfile)["ANSIBLE_INSTALL_REFS"].split()
    # The builder runs `pip install $ANSIBLE_INSTALL_REFS` unquoted: no shell redirections.
    assert not any(char in ref for ref in refs for char in "<>|;&$`"), refs
    pins = {canonicalize_name(Requirement(ref).name): Requirement(ref).specifier for ref in refs}
    assert set(pins) == {"ansible-core", "ansible-runner"}
    venv = requirement_names(repo_root / "requirements.txt")["ansible-core"].specifier
    runtime = SpecifierSet(yaml.safe_load((repo_root / "meta" / "runtime.yml").read_text())["requires_ansible"])
    for probe in ("2.18.9", "2.19.0", "2.19.14", "2.19.99", "2.20.0", "3.0.0"):
        assert pins["ansible-core"].contains(probe) == venv.contains(probe), probe
        if pins["ansible-core"].contains(probe):
            assert runtime.contains(probe), probe
    assert pins["ansible-core"].contains(importlib.metadata.version("ansible-core"))
    assert pins["ansible-runner"].contains(importlib.metadata.version("ansible-runner"))


# --------------------------------------------------------------------------------------------
# Collections
# --------------------------------------------------------------------------------------------


def _installed_version(repo_root, collection):
    namespace, name = collection.split(".")
    manifest = repo_root / ".collections" / "ansible_collections" / namespace / name / "MANIFEST.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["collection_info"]["version"]
    return yaml.safe_load((repo_root / "galaxy.yml").read_text())["version"]  # this checkout


def _file_requirement_manifest(context, entry):
    with tarfile.open(context / "_build" / entry["name"]) as artifact:
        return json.load(artifact.extractfile("MANIFEST.json"))["collection_info"]


def test_every_collection_used_is_in_the_ee(context, repo_root):
    used = {".".join(fqcn.split(".")[:2]) for fqcn in used_fqcns(repo_root)} - {"ansible.builtin"}
    assert {"community.docker", "swiftdeploy.stack", "awx.awx"} <= used, used
    entries = yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"]
    provided = {}
    for entry in entries:
        if entry.get("type") == "file":
            info = _file_requirement_manifest(context, entry)
            provided["%s.%s" % (info["namespace"], info["name"])] = "==%s" % info["version"]
        else:
            provided[entry["name"]] = entry.get("version", "")
    assert used <= set(provided), used - set(provided)
    for collection in used:
        wanted = provided[collection]
        assert SpecifierSet(wanted).contains(_installed_version(repo_root, collection)), (collection, wanted)


def test_collection_dependencies_of_galaxy_yml_are_in_the_ee(context, galaxy):
    entries = yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"]
    versions = {entry["name"]: entry.get("version") for entry in entries if entry.get("type") != "file"}
    for name, version in galaxy["dependencies"].items():
        assert versions.get(name) == version, (name, versions.get(name), version)


def test_this_collection_installs_from_the_galaxy_stage_directory(context, tmp_path, ansible_env, galaxy):
    """The galaxy stage runs `ansible-galaxy collection install -r requirements.yml` with
    WORKDIR /build, a copy of _build: do the same, offline, for the artifact entries (the others
    need Galaxy)."""
    build = tmp_path / "build"
    shutil.copytree(context / "_build", build)
    entries = yaml.safe_load((build / "requirements.yml").read_text())["collections"]
    (artifact,) = [entry for entry in entries if entry.get("type") == "file"]
    assert artifact["name"] == "collections/swiftdeploy-stack-%s.tar.gz" % galaxy["version"], (
        "execution-environment.yml names %s; galaxy.yml is at version %s" % (artifact["name"], galaxy["version"]))
    (build / "requirements.yml").write_text(yaml.safe_dump({"collections": [artifact]}))
    # Like the image, an empty collections path (the checkout's is linked into .collections).
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"))
    proc = subprocess.run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "-r", "requirements.yml",
                           "--collections-path", str(tmp_path / "collections")],
                          cwd=build, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = tmp_path / "collections" / "ansible_collections" / "swiftdeploy" / "stack"
    info = json.loads((installed / "MANIFEST.json").read_text())["collection_info"]
    assert info["version"] == galaxy["version"]
    assert (installed / "playbooks" / "deploy.yml").is_file()


def test_final_image_searches_where_the_galaxy_stage_installs(containerfile):
    (install_path,) = re.findall(r'ansible-galaxy collection install .*--collections-path "([^"]+)"', containerfile)
    final = containerfile.split("FROM base AS final", 1)[1]
    (search,) = re.findall(r"^ENV ANSIBLE_COLLECTIONS_PATH=(\S+)$", final, re.M)
    assert install_path in search.split(":"), (install_path, search)
    assert re.search(r"^COPY --from=galaxy /usr/share/ansible /usr/share/ansible$", final, re.M)


def test_system_packages_include_the_ssh_client(context):
    """Jobs reach the Docker hosts over SSH: the connection plugin runs the `ssh` client."""
    bindep = (context / "_build" / "bindep.txt").read_text().splitlines()
    assert any(line.split()[0] == "openssh-clients" for line in bindep if line.strip()), bindep
