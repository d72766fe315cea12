"""init and validate through the default inventory (localhost, connection local): rendering,
idempotence, check mode, regeneration, manifest errors and the five pre-flight checks."""

from __future__ import annotations

import re
import shutil
import stat

import pytest
import yaml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HOST = "localhost"
FILES = ("nginx/nginx.conf", "docker-compose.yml")
CHECK_NAMES = [
    "Manifest parses",
    "Required fields present and valid",
    "App image present on the host",
    "nginx port free on the host",
    "nginx.conf passes nginx -t",
]
BAD_MANIFEST = """\
services:
  image: swift-deploy-1-node:latest
  port: 3000
  mode: stable
  version: "1.0.0"
  restart_policy: unless-stopped
  log_volume: swiftdeploy-logs
nginx:
  image: nginx:latest
  prot: 8080
  port: 70000
  proxy_timeout: 30
network:
  name: swiftdeploy-net
  driver_type: bridge
contact: 'ops"} return 200 {@x'
"""


@pytest.fixture(scope="module")
def local_init(docker_engine, run_playbook, example_manifest, tmp_path_factory):
    project = tmp_path_factory.mktemp("local-init") / "proj"
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       "-e", f"swiftdeploy_project_dir={project}")
    return run, project


@pytest.fixture
def rendered_copy(local_init, tmp_path):
    """A copy of the rendered project directory a test may change."""
    run, project = local_init
    assert run.rc == 0, run.describe()
    copy = tmp_path / "proj"
    shutil.copytree(project, copy)
    return copy


def test_init_renders_both_files(local_init, parse_recap, init_report_line):
    run, project = local_init
    assert run.rc == 0, run.describe()
    recap = parse_recap(run.stdout)
    assert list(recap) == [HOST], run.describe()
    # The project and nginx directories, both files, the edge's edge.conf (nginx.edge, on by
    # default), the blue slot's mode directory and file.
    assert recap[HOST]["changed"] == 7 and recap[HOST]["failed"] == 0, run.describe()
    for name in FILES:
        assert init_report_line(name, project, "changed").search(run.stdout), run.describe()
    assert sorted(p.name for p in project.iterdir()) == ["docker-compose.yml", "nginx", "slots"]
    assert (project / "slots" / "blue" / "mode").read_text() == "stable\n"
    assert stat.S_IMODE((project / "slots" / "blue" / "mode").stat().st_mode) == 0o644
    assert stat.S_IMODE(project.stat().st_mode) == 0o750
    assert stat.S_IMODE((project / "nginx" / "nginx.conf").stat().st_mode) == 0o644
    assert stat.S_IMODE((project / "docker-compose.yml").stat().st_mode) == 0o640
    nginx_conf = (project / "nginx" / "nginx.conf").read_text()
    assert nginx_conf.startswith("#\n# Ansible managed\n#\n")
    for directive in ("proxy_connect_timeout 5s;", "proxy_send_timeout 30s;", "proxy_read_timeout 30s;",
                      "server app-blue:3000;", "listen 8081;"):
        assert f"    {directive}\n" in nginx_conf, directive
    # The public port is the edge's; the routing nginx listens for it on a Unix socket.
    assert "listen 8080;" in (project / "nginx" / "edge.conf").read_text() and "listen 8080;" not in nginx_conf
    compose = yaml.safe_load((project / "docker-compose.yml").read_text())
    assert compose["name"] == "swiftdeploy"
    assert sorted(compose["services"]) == ["app-blue", "edge", "nginx"]
    assert compose["services"]["app-blue"]["image"] == "swift-deploy-1-node:latest"
    assert compose["services"]["nginx"]["image"] == compose["services"]["edge"]["image"] == "nginx:latest"
    assert compose["services"]["edge"]["ports"] == ["0.0.0.0:8080:8080"]


def test_second_init_changes_nothing(local_init, run_playbook, parse_recap, example_manifest,
                                     init_report_line):
    first, project = local_init
    assert first.rc == 0, first.describe()
    before = {name: ((project / name).read_bytes(), (project / name).stat().st_mtime_ns) for name in FILES}
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       "-e", f"swiftdeploy_project_dir={project}")
    assert run.rc == 0, run.describe()
    recap = parse_recap(run.stdout)
    assert recap[HOST]["changed"] == 0 and recap[HOST]["failed"] == 0, run.describe()
    for name in FILES:
        assert init_report_line(name, project, "unchanged").search(run.stdout), run.describe()
        assert ((project / name).read_bytes(), (project / name).stat().st_mtime_ns) == before[name]


def test_check_diff_shows_a_manifest_change_without_applying_it(rendered_copy, run_playbook, parse_recap,
                                                                write_manifest, tmp_path, init_report_line):
    project = rendered_copy
    before = {name: ((project / name).read_bytes(), (project / name).stat().st_mtime_ns) for name in FILES}
    manifest = write_manifest(tmp_path / "manifest.yml", {"nginx.proxy_timeout": 45})
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={manifest}",
                       "-e", f"swiftdeploy_project_dir={project}", check=True)
    assert run.rc == 0, run.describe()
    recap = parse_recap(run.stdout)
    # nginx.conf and the edge's edge.conf (nginx.edge, on by default: it waits 5 s longer).
    assert recap[HOST]["changed"] == 2 and recap[HOST]["failed"] == 0, run.describe()
    assert init_report_line("nginx/nginx.conf", project, "changed").search(run.stdout), run.describe()
    assert init_report_line("docker-compose.yml", project, "unchanged").search(run.stdout), run.describe()
    assert f"--- before: {project}/nginx/nginx.conf\n" in run.stdout, run.describe()
    assert f"--- before: {project}/nginx/edge.conf\n" in run.stdout, run.describe()
    for directive in ("proxy_send_timeout", "proxy_read_timeout"):
        assert f"\n-    {directive} 30s;\n" in run.stdout, run.describe()
        assert f"\n+    {directive} 45s;\n" in run.stdout, run.describe()
        assert f"\n-    {directive} 35s;\n" in run.stdout, run.describe()
        assert f"\n+    {directive} 50s;\n" in run.stdout, run.describe()
    # Exactly those two lines of each file differ: connecting stays capped at 5 s.
    assert len(re.findall(r"^[-+] ", run.stdout, re.M)) == 8, run.describe()
    for name in FILES:
        assert ((project / name).read_bytes(), (project / name).stat().st_mtime_ns) == before[name], name
    assert b"proxy_read_timeout 30s;" in (project / "nginx" / "nginx.conf").read_bytes()


def test_deleted_files_are_regenerated_byte_for_byte(rendered_copy, run_playbook, parse_recap,
                                                     example_manifest, init_report_line):
    project = rendered_copy
    before = {name: (project / name).read_bytes() for name in FILES}
    for name in FILES:
        (project / name).unlink()
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       "-e", f"swiftdeploy_project_dir={project}")
    assert run.rc == 0, run.describe()
    recap = parse_recap(run.stdout)
    assert recap[HOST]["changed"] == 2 and recap[HOST]["failed"] == 0, run.describe()
    for name in FILES:
        assert init_report_line(name, project, "changed").search(run.stdout), run.describe()
        assert (project / name).read_bytes() == before[name], name


def test_a_bad_manifest_fails_init_naming_every_field(run_playbook, parse_recap, write_manifest, tmp_path):
    manifest = write_manifest(tmp_path / "bad.yml", raw=BAD_MANIFEST)
    project = tmp_path / "fresh" / "proj"
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={manifest}",
                       "-e", f"swiftdeploy_project_dir={project}")
    assert run.rc == 2, run.describe()
    assert "Traceback" not in run.output, run.describe()
    headline = f"[ERROR]: Task failed: Action failed: {manifest} is not a valid SwiftDeploy manifest:"
    assert headline in run.output, run.describe()
    fatal = re.search(rf"^fatal: \[{HOST}\]: FAILED! => (.*)$", run.stdout, re.M)
    assert fatal, run.describe()
    result = yaml.safe_load(fatal.group(1))
    assert result["valid"] is False and result["stage"] == "schema"
    errors = result["errors"]
    assert len(errors) == 3, errors
    assert errors[0].startswith(
        "manifest field 'nginx.prot': unknown key; did you mean 'nginx.port'?"), errors
    assert errors[1] == ("manifest field 'nginx.port': 70000 is out of range; "
                         "use a TCP port number from 1 to 65535.")
    assert errors[2].startswith("manifest field 'contact': "), errors
    assert "quotes, braces" in errors[2], errors
    for error in errors:  # each one is in the human-readable message too
        assert f"- {error}" in result["msg"]
    recap = parse_recap(run.stdout)
    assert recap[HOST]["failed"] == 1 and recap[HOST]["changed"] == 0, run.describe()
    assert "TASK [swiftdeploy.stack.swiftdeploy : Render nginx.conf]" not in run.stdout
    assert not project.parent.exists(), "init created the project directory for an invalid manifest"


def test_validate_passes_on_the_example_manifest(app_image, run_playbook, parse_recap, example_manifest,
                                                 validate_checks):
    run = run_playbook("validate.yml", "-e", f"swiftdeploy_manifest={example_manifest}")
    assert run.rc == 0, run.describe()
    assert validate_checks(run.stdout) == [(n, "✔", name) for n, name in enumerate(CHECK_NAMES, 1)], \
        run.describe()
    assert len(re.findall(r'^\s*"\d+\. [✔✘] ', run.stdout, re.M)) == 5, run.describe()
    assert f'"     - {app_image} found"' in run.stdout
    # Free, or held by this stack's own nginx when another test left it deployed.
    port_ok = r'^\s*"     - port 8080 is (free|held by this stack \(redeploy\))",?$'
    assert re.search(port_ok, run.stdout, re.M), run.describe()
    assert '"     - nginx -t accepts it"' in run.stdout
    assert '"Validation PASSED"' in run.stdout and "Validation FAILED" not in run.output
    recap = parse_recap(run.stdout)
    assert recap[HOST]["changed"] == 0 and recap[HOST]["failed"] == 0, run.describe()


def test_validate_reports_a_bad_manifest_and_skips_the_host_checks(run_playbook, parse_recap,
                                                                   write_manifest, tmp_path, validate_checks):
    manifest = write_manifest(tmp_path / "bad.yml", raw=BAD_MANIFEST)
    run = run_playbook("validate.yml", "-e", f"swiftdeploy_manifest={manifest}")
    assert run.rc == 2, run.describe()
    assert "Traceback" not in run.output, run.describe()
    assert [(n, mark) for n, mark, _title in validate_checks(run.stdout)] == \
        [(1, "✔"), (2, "✘"), (3, "✘"), (4, "✘"), (5, "✘")], run.describe()
    assert run.stdout.count('"     - not checked: the manifest is not valid"') == 3, run.describe()
    assert "did you mean 'nginx.port'?" in run.stdout
    assert '"Validation FAILED"' in run.stdout
    recap = parse_recap(run.stdout)
    assert recap[HOST]["failed"] == 1 and recap[HOST]["changed"] == 0, run.describe()
