"""Images on a Docker host reached over SSH (a fleet host: its own dockerd, image store and IP).

With `swiftdeploy_image_source=controller` the images the host lacks are exported on this
machine (the controller), copied and loaded there, with no registry anywhere; a second run finds
the same image IDs and ships nothing; a tag rebuilt on the controller (same name, new ID) is
shipped and deployed blue/green, and state.json, the history and the audit report name the IDs.
An image that nothing can provide fails, naming the field, the host and the three fixes.

Pulls with a registry login run against a real registry protocol server on the fleet host's
loopback (tests/fixtures/registry/serve.py: the Docker registry's HTTP API v2 with basic auth,
serving an image built here), because no registry image can be pulled on this machine: the
login, the pull (manifest and blobs, by the fleet host's own dockerd) and the logout are real;
only the registry is a small stand-in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from helpers import http_get  # tests/integration/helpers.py

pytestmark = [pytest.mark.docker, pytest.mark.ssh, pytest.mark.slow]

IMAGE = "swiftdeploy-test/shop:latest"  # not the example app: never built by the role
STACK = "imgship"
STALE_ARCHIVE = "e" * 64 + ".tar"


def docker(*args, timeout=300, **kwargs):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def controller_id(image):
    return docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


def get(address, port, path="/"):
    """One GET on a fresh connection: (status, body bytes)."""
    status, _headers, body = http_get(port, path, host=address)
    return status, body


class FleetStack:
    """The test stack on one fleet host: its manifest, inventory and what is on the host."""

    def __init__(self, host, inventory, manifest, cache_dir, run_playbook):
        self.host = host
        self.inventory = inventory
        self.manifest = manifest
        self.cache_dir = cache_dir
        self._run = run_playbook
        self.project = f"/root/.swiftdeploy/{STACK}"

    def run(self, playbook, *args, manifest=None, inventory=None, **kwargs):
        return self._run(playbook, "-e", f"swiftdeploy_manifest={manifest or self.manifest}",
                         "-e", f"swiftdeploy_image_cache_dir={self.cache_dir}",
                         "-e", f"swiftdeploy_anchor_dir={self.cache_dir.parent / 'anchors'}", *args,
                         inventory=inventory or self.inventory, **kwargs)

    def deploy(self, *args, **kwargs):
        return self.run("deploy", "-e", "swiftdeploy_image_source=controller", *args, **kwargs)

    def state(self):
        return json.loads(self.host.run("cat", f"{self.project}/state.json").stdout)

    def history(self):
        text = self.host.run("cat", f"{self.project}/history.jsonl").stdout
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def shop_image(app_image):
    """A local image that is not the example app (the example app, retagged)."""
    assert docker("tag", app_image, IMAGE).returncode == 0
    yield IMAGE
    docker("rmi", IMAGE)


@pytest.fixture(scope="module")
def fresh_hosts(fleet):
    """h1 and h2 without the images these tests ship: the session's other fleet tests (which run
    first) leave nginx on the hosts they deployed to, and these tests prove what a host that lacks
    an image gets."""
    hosts = fleet.hosts(2)
    for host in hosts:
        removed = host.docker("image", "rm", "-f", "nginx:latest", IMAGE)
        assert host.image_id("nginx:latest") is None, (host.name, removed.stderr)
    return hosts


@pytest.fixture(scope="module")
def fleet_stack(fleet_host, fleet, fresh_hosts, shop_image, write_manifest, run_playbook, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("images-fleet")
    manifest = write_manifest(workdir / "manifest.yml", {"stack": STACK, "services.image": shop_image,
                                                         "network.name": f"{STACK}-net",
                                                         "services.log_volume": f"{STACK}-logs"})
    inventory = fleet.inventory(workdir / "inventory.yml", [fleet_host])
    stack = FleetStack(fleet_host, inventory, manifest, workdir / "cache", run_playbook)
    yield stack
    stack.run("teardown", "-e", "clean=true")


@pytest.fixture(scope="module")
def validate_before(fleet_stack):
    """validate.yml before anything is on the host, with the images to be shipped."""
    assert fleet_stack.host.image_id(IMAGE) is None, "the fleet host must not have the image yet"
    return fleet_stack.run("validate", "-e", "swiftdeploy_image_source=controller")


@pytest.fixture(scope="module")
def first_deploy(fleet_stack, validate_before):
    assert fleet_stack.host.image_id(IMAGE) is None, "the fleet host must not have the image yet"
    # An archive of an earlier run unused for 30 days, and a file that is not the export's: the
    # export prunes the first (swiftdeploy_image_cache_max_age_days, 14) and leaves the second.
    fleet_stack.cache_dir.mkdir(parents=True, exist_ok=True)
    month_ago = time.time() - 30 * 86400
    for name in (STALE_ARCHIVE, "README"):
        (fleet_stack.cache_dir / name).write_text("old\n")
        os.utime(fleet_stack.cache_dir / name, (month_ago, month_ago))
    return fleet_stack.deploy()


def test_validate_counts_an_image_the_controller_ships_as_present(fleet_stack, validate_before, validate_checks):
    run = validate_before
    assert run.rc == 0, run.describe()
    assert (3, "✔", "App image present on the host") in validate_checks(run.stdout)
    # The host has no nginx image yet: nginx -t ran on the controller, in the image it ships.
    assert (5, "✔", "nginx.conf passes nginx -t") in validate_checks(run.stdout)
    assert f"[{fleet_stack.host.name} -> localhost]" in run.stdout.split("Run nginx -t", 1)[1].split("TASK", 1)[0]
    assert (f"{IMAGE} is not on {fleet_stack.host.name} yet: deploy.yml ships it from the controller "
            f"(swiftdeploy_image_source=controller, ID {controller_id(IMAGE)})") in run.stdout, run.stdout


def test_images_are_shipped_from_the_controller_without_a_registry(fleet_stack, first_deploy, parse_recap):
    run, host = first_deploy, fleet_stack.host
    assert run.rc == 0, run.describe()
    image_id = controller_id(IMAGE)
    nginx_id = controller_id("nginx:latest")
    assert f"{IMAGE} ({image_id}) shipped from the controller to {host.name}, no registry" in run.stdout, run.describe()
    assert f"nginx:latest ({nginx_id}) shipped from the controller to {host.name}" in run.stdout, run.describe()
    # Exported once into the cache, keyed by image ID; the copy on the host is gone after the load.
    # The stale archive was pruned, the file that is not an archive kept.
    assert sorted(path.name for path in fleet_stack.cache_dir.iterdir()) == sorted(
        [image_id.split(":")[1] + ".tar", nginx_id.split(":")[1] + ".tar", "README"])
    assert host.run("ls", f"{fleet_stack.project}/images").stdout.split() == []
    assert host.image_id(IMAGE) == image_id and host.image_id("nginx:latest") == nginx_id
    assert "EXAMPLE APP BUILD" not in run.stdout and "AIR-GAPPED BUILD" not in run.stdout
    assert parse_recap(run.stdout)[host.name]["failed"] == 0
    # A copy or load that took a few seconds said so, one plain line each time (docs/progress.md).
    for line in re.findall(r"^Waiting for .*$", run.stdout, re.M):
        assert re.fullmatch(r"Waiting for [ -~]+ on (h1|localhost): \d+ s( of at most [\d.]+ s)?", line), line
    # Served on the host's own address, reached from here.
    status, body = get(host.address, 8080)
    assert status == 200, body
    # state.json and the history record the slot's image ID.
    state = fleet_stack.state()
    assert state["slots"] == {"blue": {"image": IMAGE, "version": "1.0.0", "mode": "stable", "image_id": image_id}}
    deploy = [record for record in fleet_stack.history() if record["event"] == "deploy"][-1]
    assert deploy["details"]["slots"]["blue"]["image_id"] == image_id
    running = host.docker("inspect", "--format", "{{.Image}} {{index .Config.Labels \"org.swiftdeploy.image_id\"}}",
                          f"{STACK}-app-blue-1").stdout.split()
    assert running == [image_id, image_id]


def test_a_second_run_ships_nothing(fleet_stack, first_deploy, parse_recap):
    assert first_deploy.rc == 0, first_deploy.describe()
    host = fleet_stack.host
    cached = {path.name: path.stat().st_mtime_ns for path in fleet_stack.cache_dir.iterdir()}
    run = fleet_stack.deploy()
    assert run.rc == 0, run.describe()
    image_id = controller_id(IMAGE)
    assert f"{IMAGE} ({image_id}) already on {host.name} with the same image ID: not shipped" in run.stdout, \
        run.describe()
    assert "shipped from the controller to" not in run.stdout, run.describe()
    # A host with every image skips shipping, pulling and building in one include.
    assert re.search(r"Ship, pull or build the images this host lacks, and read their IDs again\] \**\n"
                     r"skipping: \[h1\]", run.stdout), run.describe()
    assert "Ship the images the host lacks from the controller" not in run.stdout, run.describe()
    assert parse_recap(run.stdout)[host.name]["changed"] == 0, run.describe()
    assert {path.name: path.stat().st_mtime_ns for path in fleet_stack.cache_dir.iterdir()} == cached
    assert fleet_stack.state()["slots"]["blue"]["image_id"] == image_id


def test_a_rebuilt_tag_is_shipped_and_deployed_blue_green(fleet_stack, first_deploy, tmp_path, run_playbook):
    assert first_deploy.rc == 0, first_deploy.describe()
    host = fleet_stack.host
    old_id = controller_id(IMAGE)
    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nLABEL org.swiftdeploy.test.rebuilt={tmp_path.name}\n")
    build = docker("build", "-q", "-t", IMAGE, str(tmp_path))
    assert build.returncode == 0, build.stderr
    new_id = controller_id(IMAGE)
    assert new_id != old_id

    # Check mode says what it would ship and changes nothing: no archive, no load, same state.
    cached = sorted(path.name for path in fleet_stack.cache_dir.iterdir())
    check = fleet_stack.deploy(check=True)
    assert check.rc == 0, check.describe()
    assert f"{IMAGE} ({new_id}) shipped from the controller to {host.name}" in check.stdout, check.describe()
    assert sorted(path.name for path in fleet_stack.cache_dir.iterdir()) == cached
    assert host.image_id(IMAGE) == old_id
    assert fleet_stack.state()["slots"]["blue"]["image_id"] == old_id

    run = fleet_stack.deploy()
    assert run.rc == 0, run.describe()
    assert f"{IMAGE} ({new_id}) shipped from the controller to {host.name}" in run.stdout, run.describe()
    assert host.image_id(IMAGE) == new_id
    state = fleet_stack.state()
    assert state["stable"] == "green", state
    assert state["slots"] == {"green": {"image": IMAGE, "version": "1.0.0", "mode": "stable", "image_id": new_id}}
    deploys = [record for record in fleet_stack.history() if record["event"] == "deploy"]
    assert [record["details"]["slots"] for record in deploys[-2:]] == [
        {"blue": {"image": IMAGE, "version": "1.0.0", "mode": "stable", "image_id": old_id}},
        {"green": {"image": IMAGE, "version": "1.0.0", "mode": "stable", "image_id": new_id}}]
    assert get(host.address, 8080)[0] == 200

    # The audit report says which image ID ran from when.
    report_dir = tmp_path / "reports"
    audit = fleet_stack.run("audit", "-e", f"report_dir={report_dir}")
    assert audit.rc == 0, audit.describe()
    reports = list(report_dir.rglob("audit_report.md"))
    assert len(reports) == 1, audit.describe()
    text = reports[0].read_text()
    images = text.split("## Images that ran", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in images.splitlines() if line.startswith("| 20")]
    assert len(rows) == 2, images
    assert f"| blue | stable | {IMAGE} | {old_id} | 1.0.0 |" in rows[0], images
    assert f"| green | stable | {IMAGE} | {new_id} | 1.0.0 |" in rows[1], images


@pytest.mark.parametrize("source", ["registry", "controller"])
def test_an_image_nothing_provides_fails_naming_the_field_and_the_fixes(
        fleet_stack, first_deploy, write_manifest, tmp_path, source):
    host = fleet_stack.host
    missing = "swiftdeploy-test/nowhere:1.0"
    manifest = write_manifest(tmp_path / "missing.yml", {"stack": f"{STACK}-missing", "services.image": missing,
                                                         "nginx.port": 18290, "nginx.admin_port": 18292,
                                                         "network.name": f"{STACK}-missing-net"})
    run = fleet_stack.run("deploy", "-e", f"swiftdeploy_image_source={source}", manifest=manifest)
    assert run.rc != 0, run.describe()
    text = " ".join(run.stdout.split())
    assert (f"manifest field 'services.image': {missing} is not on {host.name} and could not be obtained "
            f"(pull failed: ") in text, run.describe()
    for fix in ("(1) pull it from a registry", "swiftdeploy_registry (url, username, password)",
                "(2) ship it from the controller without a registry",
                "-e swiftdeploy_image_source=controller", "(3) load it on the host yourself (docker load)"):
        assert fix in text, run.describe()
    assert "EXAMPLE APP BUILD" not in run.stdout
    assert host.image_id(missing) is None
    # Nothing of that stack started.
    assert host.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={STACK}-missing").stdout == ""


# --------------------------------------------------------------------------------------------
# Pulls with a registry login
# --------------------------------------------------------------------------------------------

REGISTRY = "127.0.0.1:5000"
REGISTRY_USER = "deployer"
REGISTRY_PASSWORD = "s3cret-Registry-pw"
REGISTRY_DIR = "/srv/swiftdeploy-registry"


@pytest.fixture(scope="module")
def registry(fleet_stack, first_deploy, app_image, repo_root, tmp_path_factory):
    """A real registry (HTTP API v2, basic auth) on the fleet host's loopback, serving one image
    built here: tests/fixtures/registry/serve.py, as no registry image can be pulled here."""
    assert first_deploy.rc == 0, first_deploy.describe()  # it shipped nginx:latest there
    host = fleet_stack.host
    workdir = tmp_path_factory.mktemp("registry")
    source = "swiftdeploy-test/registry-source:1"
    (workdir / "Dockerfile").write_text(f"FROM {app_image}\nLABEL org.swiftdeploy.test.registry={workdir.name}\n")
    assert docker("build", "-q", "-t", source, str(workdir)).returncode == 0
    assert docker("image", "save", "--output", str(workdir / "image.tar"), source).returncode == 0
    sys.path.insert(0, str(repo_root / "tests" / "fixtures" / "registry"))
    try:
        import serve  # tests/fixtures/registry/serve.py
    finally:
        sys.path.pop(0)
    root = workdir / "root"
    image_id = serve.prepare(str(workdir / "image.tar"), str(root), "team/shop", "2.0")
    shutil.copy(repo_root / "tests" / "fixtures" / "registry" / "serve.py", root / "serve.py")
    packed = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True).stdout
    unpacked = host.run("sh", "-c", f"mkdir -p {REGISTRY_DIR} && tar -C {REGISTRY_DIR} -x", input=packed.decode("latin-1"),
                        encoding="latin-1")
    assert unpacked.returncode == 0, unpacked.stderr
    started = host.run("sh", "-c", f"nohup python3 {REGISTRY_DIR}/serve.py {REGISTRY_DIR} 5000 {REGISTRY_USER} "
                                   f"{REGISTRY_PASSWORD} {REGISTRY_DIR}/requests.log >/dev/null 2>&1 & echo $!")
    pid = started.stdout.strip()
    assert pid.isdigit(), started.stderr
    probe = "import urllib.request as u\ntry: u.urlopen('http://127.0.0.1:5000/v2/')\nexcept Exception as e: print(e)"
    for _attempt in range(50):
        if "401" in host.run("python3", "-c", probe).stdout:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the test registry did not start on the fleet host")
    yield {"image": f"{REGISTRY}/team/shop:2.0", "id": image_id, "log": f"{REGISTRY_DIR}/requests.log"}
    host.run("kill", pid)
    docker("rmi", source)


def registry_requests(host, registry):
    return [json.loads(line) for line in host.run("cat", registry["log"]).stdout.splitlines()]


def test_a_missing_image_is_pulled_after_a_registry_login_and_logged_out_after(
        fleet_stack, registry, write_manifest, tmp_path):
    host = fleet_stack.host
    manifest = write_manifest(tmp_path / "pull.yml", {"stack": "imgpull", "services.image": registry["image"],
                                                      "nginx.port": 18380, "nginx.admin_port": 18382,
                                                      "network.name": "imgpull-net",
                                                      "services.log_volume": "imgpull-logs"})
    credentials = json.dumps({"swiftdeploy_registry": {"url": REGISTRY, "username": REGISTRY_USER,
                                                       "password": REGISTRY_PASSWORD}})
    assert host.image_id(registry["image"]) is None
    run = fleet_stack.run("deploy", "-e", credentials, "-v", manifest=manifest)
    try:
        assert run.rc == 0, run.describe()
        assert REGISTRY_PASSWORD not in run.output
        # Pulled from the registry with the credentials: the very image served, by its ID.
        assert host.image_id(registry["image"]) == registry["id"]
        requests = registry_requests(host, registry)
        assert {"method": "GET", "path": "/v2/", "auth": "ok"} in requests, requests
        assert any(entry["path"] == "/v2/team/shop/manifests/2.0" and entry["auth"] == "ok" for entry in requests)
        assert any("/blobs/sha256:" in entry["path"] and entry["auth"] == "ok" for entry in requests)
        # Logged out after the pulls: no credentials left on the host.
        docker_config = host.run("cat", "/root/.docker/config.json").stdout
        assert REGISTRY not in json.loads(docker_config or "{}").get("auths", {}), docker_config
        state = json.loads(host.run("cat", "/root/.swiftdeploy/imgpull/state.json").stdout)
        assert state["slots"]["blue"]["image_id"] == registry["id"]
        assert get(host.address, 18380)[0] == 200
    finally:
        fleet_stack.run("teardown", "-e", "clean=true", manifest=manifest)


def test_a_failed_registry_login_is_named_in_the_failure(fleet_stack, registry, write_manifest, tmp_path):
    host = fleet_stack.host
    image = f"{REGISTRY}/team/other:1.0"
    manifest = write_manifest(tmp_path / "badlogin.yml", {"stack": "imgbad", "services.image": image,
                                                          "nginx.port": 18390, "nginx.admin_port": 18392,
                                                          "network.name": "imgbad-net"})
    wrong = "not-the-Password-42"
    credentials = json.dumps({"swiftdeploy_registry": {"url": REGISTRY, "username": REGISTRY_USER,
                                                       "password": wrong}})
    run = fleet_stack.run("deploy", "-e", credentials, "-vvv", manifest=manifest)
    assert run.rc != 0, run.describe()
    assert wrong not in run.output
    text = " ".join(run.stdout.split())
    assert (f"manifest field 'services.image': {image} is not on {host.name} and could not be obtained "
            f"(registry login as {REGISTRY_USER} failed: ") in text, run.describe()
    assert "(2) ship it from the controller without a registry" in text
    assert any(entry["auth"] == "wrong" for entry in registry_requests(host, registry))


def test_two_hosts_get_one_export_loaded_on_both_at_once(fleet_stack, fleet, first_deploy, tmp_path, parse_recap):
    """A rebuilt tag that neither host has: exported once (one archive, one export task run on
    the controller), copied and loaded on both hosts in the same tasks."""
    assert first_deploy.rc == 0, first_deploy.describe()
    hosts = fleet.hosts(2)
    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nLABEL org.swiftdeploy.test.two-hosts={tmp_path.name}\n")
    assert docker("build", "-q", "-t", IMAGE, str(tmp_path)).returncode == 0
    image_id = controller_id(IMAGE)
    assert all(host.image_id(IMAGE) != image_id for host in hosts)
    inventory = fleet.inventory(tmp_path / "two.yml", hosts)
    cache = tmp_path / "cache"
    run = fleet_stack.run("deploy", "-e", "swiftdeploy_image_source=controller", "-e",
                          f"swiftdeploy_image_cache_dir={cache}", inventory=inventory)
    try:
        assert run.rc == 0, run.describe()
        # One export on the controller, for both hosts.
        export = run.stdout.split("Export the images some host lacks, once for all hosts, on the controller]", 1)[1]
        export = export.split("TASK [", 1)[0]
        assert re.findall(r"^(changed|ok): \[([^]]+)\]", export, re.M) == [("changed", "h1 -> localhost")], export
        # Each image once: the new app image for both, nginx for the fresh h2 (h1 has its ID).
        nginx_id = controller_id("nginx:latest")
        assert sorted(path.name for path in cache.iterdir()) == sorted(
            [image_id.split(":")[1] + ".tar", nginx_id.split(":")[1] + ".tar"])
        assert f"nginx:latest ({nginx_id}) already on h1 with the same image ID: not shipped" in run.stdout
        assert f"nginx:latest ({nginx_id}) shipped from the controller to h2" in run.stdout
        for host in hosts:
            assert f"{IMAGE} ({image_id}) shipped from the controller to {host.name}" in run.stdout, run.describe()
            assert host.image_id(IMAGE) == image_id
            assert get(host.address, 8080)[0] == 200
        recap = parse_recap(run.stdout)
        assert all(recap[host.name]["failed"] == 0 for host in hosts), run.describe()
    finally:
        fleet_stack.run("teardown", "-e", "clean=true", inventory=inventory)
