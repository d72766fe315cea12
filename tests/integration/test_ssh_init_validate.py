"""init and validate against a host reached over real SSH (an sshd on 127.0.0.1 started for the
session), compared with the same playbooks run through the local inventory."""

from __future__ import annotations

import re
import shutil
import socket
import stat

import pytest
import yaml

pytestmark = [pytest.mark.ssh, pytest.mark.docker, pytest.mark.slow]

HOST = "sshtarget"
FILES = ("nginx/nginx.conf", "docker-compose.yml")
CHECK_NAMES = [
    "Manifest parses",
    "Required fields present and valid",
    "App image present on the host",
    "nginx port free on the host",
    "nginx.conf passes nginx -t",
]


@pytest.fixture(scope="module")
def ssh_init(ssh_host, docker_engine, run_playbook, example_manifest, tmp_path_factory):
    """The first init run over SSH into a fresh project directory."""
    project = tmp_path_factory.mktemp("ssh-init") / "proj"
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       "-e", f"swiftdeploy_project_dir={project}", inventory=ssh_host.inventory)
    return run, project


def test_init_over_ssh_renders_both_files(ssh_init, parse_recap, init_report_line):
    run, project = ssh_init
    assert run.rc == 0, run.describe()
    recap = parse_recap(run.stdout)
    assert list(recap) == [HOST], run.describe()
    assert recap[HOST]["failed"] == 0 and recap[HOST]["unreachable"] == 0, run.describe()
    # The project and nginx directories, both files, the blue slot's mode directory and file are new.
    assert recap[HOST]["changed"] == 7, run.describe()  # edge.conf too (nginx.edge)
    assert (project / "slots" / "blue" / "mode").read_text() == "stable\n"
    for name in FILES:
        assert init_report_line(name, project, "changed").search(run.stdout), run.describe()
    assert stat.S_IMODE((project / "nginx" / "nginx.conf").stat().st_mode) == 0o644
    assert stat.S_IMODE((project / "docker-compose.yml").stat().st_mode) == 0o640
    nginx_conf = (project / "nginx" / "nginx.conf").read_text()
    assert nginx_conf.startswith("#\n# Ansible managed\n#\n")
    assert "    proxy_read_timeout 30s;\n" in nginx_conf
    compose = yaml.safe_load((project / "docker-compose.yml").read_text())
    assert sorted(compose["services"]) == ["app-blue", "edge", "nginx"]  # nginx.edge, on by default
    assert compose["services"]["edge"]["ports"] == ["0.0.0.0:8080:8080"]


def test_second_init_over_ssh_changes_nothing(ssh_init, ssh_host, run_playbook, parse_recap,
                                              example_manifest, init_report_line):
    first, project = ssh_init
    assert first.rc == 0, first.describe()
    before = {name: (project / name).read_bytes() for name in FILES}
    mtimes = {name: (project / name).stat().st_mtime_ns for name in FILES}
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       "-e", f"swiftdeploy_project_dir={project}", inventory=ssh_host.inventory)
    assert run.rc == 0, run.describe()
    recap = parse_recap(run.stdout)
    assert recap[HOST]["changed"] == 0 and recap[HOST]["failed"] == 0, run.describe()
    for name in FILES:
        assert init_report_line(name, project, "unchanged").search(run.stdout), run.describe()
        assert (project / name).read_bytes() == before[name]
        assert (project / name).stat().st_mtime_ns == mtimes[name]


def test_check_diff_over_ssh_reports_a_missing_file_and_leaves_it_missing(
        ssh_init, ssh_host, run_playbook, parse_recap, example_manifest, tmp_path, init_report_line):
    first, rendered = ssh_init
    assert first.rc == 0, first.describe()
    project = tmp_path / "proj"
    shutil.copytree(rendered, project)
    (project / "nginx" / "nginx.conf").unlink()
    compose_before = (project / "docker-compose.yml").read_bytes()

    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       "-e", f"swiftdeploy_project_dir={project}", inventory=ssh_host.inventory,
                       check=True)
    assert run.rc == 0, run.describe()
    assert "--check" in run.command and "--diff" in run.command
    recap = parse_recap(run.stdout)
    assert recap[HOST]["changed"] == 1 and recap[HOST]["failed"] == 0, run.describe()
    assert init_report_line("nginx/nginx.conf", project, "changed").search(run.stdout), run.describe()
    assert init_report_line("docker-compose.yml", project, "unchanged").search(run.stdout), run.describe()
    # The diff shows the whole file as added, and only that file.
    added = r"^--- before\n\+\+\+ after: \S+/nginx\.conf\.j2\n@@ -0,0 \+1,\d+ @@\n\+#\n\+# Ansible managed\n"
    assert re.search(added, run.stdout, re.M), run.describe()
    assert run.stdout.count("--- before") == 1, run.describe()
    assert "+    proxy_read_timeout 30s;" in run.stdout, run.describe()
    assert not (project / "nginx" / "nginx.conf").exists(), "--check wrote nginx.conf"
    assert (project / "docker-compose.yml").read_bytes() == compose_before
    assert sorted(p.name for p in project.iterdir()) == ["docker-compose.yml", "nginx", "slots"]
    # the edge's file (on by default) was there and stays as it was
    assert [path.name for path in (project / "nginx").iterdir()] == ["edge.conf"]
    assert (project / "nginx" / "edge.conf").read_bytes() == (rendered / "nginx" / "edge.conf").read_bytes()


def test_files_rendered_over_ssh_equal_the_local_ones(ssh_init, run_playbook, parse_recap,
                                                      example_manifest, tmp_path):
    first, ssh_project = ssh_init
    assert first.rc == 0, first.describe()
    local_project = tmp_path / "local-proj"
    run = run_playbook("init.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       "-e", f"swiftdeploy_project_dir={local_project}")
    assert run.rc == 0, run.describe()
    assert list(parse_recap(run.stdout)) == ["localhost"], run.describe()
    for name in FILES:
        assert (ssh_project / name).read_bytes() == (local_project / name).read_bytes(), name
        assert (stat.S_IMODE((ssh_project / name).stat().st_mode)
                == stat.S_IMODE((local_project / name).stat().st_mode)), name


def test_validate_over_ssh_passes(ssh_host, app_image, run_playbook, parse_recap, example_manifest,
                                  validate_checks):
    run = run_playbook("validate.yml", "-e", f"swiftdeploy_manifest={example_manifest}",
                       inventory=ssh_host.inventory)
    assert run.rc == 0, run.describe()
    assert validate_checks(run.stdout) == [(n, "✔", name) for n, name in enumerate(CHECK_NAMES, 1)], \
        run.describe()
    assert f"{app_image} found" in run.stdout
    # Free, or held by this stack's own nginx when another test left it deployed.
    port_ok = r'^\s*"     - port 8080 is (free|held by this stack \(redeploy\))",?$'
    assert re.search(port_ok, run.stdout, re.M), run.describe()
    assert "nginx -t accepts it" in run.stdout
    assert '"Validation PASSED"' in run.stdout and "Validation FAILED" not in run.output
    recap = parse_recap(run.stdout)
    assert recap[HOST]["changed"] == 0 and recap[HOST]["failed"] == 0, run.describe()


def test_validate_over_ssh_fails_on_a_held_nginx_port(ssh_host, app_image, run_playbook, parse_recap,
                                                      write_manifest, tmp_path, validate_checks):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        manifest = write_manifest(tmp_path / "manifest.yml", {"nginx.port": port})
        run = run_playbook("validate.yml", "-e", f"swiftdeploy_manifest={manifest}",
                           inventory=ssh_host.inventory)

    assert run.rc == 2, run.describe()
    lines = validate_checks(run.stdout)
    marks = [(n, mark) for n, mark, _title in lines]
    assert marks == [(1, "✔"), (2, "✔"), (3, "✔"), (4, "✘"), (5, "✔")], run.describe()
    assert lines[3][2] == "nginx port free on the host"
    expected = (f"port {port} is in use on {HOST} ([Errno 98] Address already in use); "
                "stop what holds it or change nginx.port")
    assert f'"     - {expected}"' in run.stdout, run.describe()
    assert '"Validation FAILED"' in run.stdout, run.describe()
    # The failure message lists only the failed check.
    fatal = re.search(rf"^fatal: \[{HOST}\]: FAILED! => (.*)$", run.stdout, re.M)
    assert fatal, run.describe()
    message = yaml.safe_load(fatal.group(1))["msg"]
    assert message == f"4. ✘ nginx port free on the host\n     - {expected}\nValidation FAILED\n"
    recap = parse_recap(run.stdout)
    assert recap[HOST]["failed"] == 1 and recap[HOST]["changed"] == 0, run.describe()
