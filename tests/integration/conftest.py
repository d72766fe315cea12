"""Shared fixtures for the integration tests: run the collection's playbooks for real.

Fixtures (none is autouse):
  repo_root        the checkout (the collection root), a pathlib.Path
  venv             the virtualenv the playbooks run from (.venv, or SWIFTDEPLOY_VENV's)
  ansible_env      the environment for ansible-playbook: the venv's PATH, ANSIBLE_CONFIG and
                   ANSIBLE_COLLECTIONS_PATH of this checkout, colour off. The venv is .venv, or
                   the one SWIFTDEPLOY_VENV names (scripts/test-min.sh: the oldest ansible-core)
  run_playbook     run_playbook(playbook, *args, inventory=None, check=False, diff=None,
                   timeout=600) -> PlaybookRun(rc, stdout, stderr); unpacks as a 3-tuple
  parse_recap      parse_recap(stdout) -> {host: {"ok": n, "changed": n, ...}} from PLAY RECAP
  validate_checks  validate_checks(stdout) -> [(number, "✔"|"✘", name)] from validate's report
  init_report_line init_report_line(name, project, "changed"|"unchanged") -> regex of the line
                   init prints for one generated file
  write_manifest   write_manifest(path, {"nginx.port": 9999, ...}) -> path of a modified copy of
                   the example manifest (dotted keys; value DELETE removes a key)
  docker_engine    fails (does not skip) when the Docker engine does not answer
  app_image        the manifest's app image, built with scripts/build-images.sh when missing
  thirdparty_app   the third-party-style test image (tests/fixtures/thirdparty_app), built once
                   per session as thirdparty-app:1 (version 1.0.0) and thirdparty-app:2 (2.0.0);
                   a ThirdPartyApp with .images {"1": tag, "2": tag}, .versions, .port (8000),
                   .health_path ("/ready"), .uid/.gid (20000) and .manifest(...) -> a manifest
                   dict for it
  ssh_host         a real sshd on 127.0.0.1 for this session, with a key pair and a ready
                   inventory (group swiftdeploy, host sshtarget); skips when sshd is missing
  fleet            real Docker hosts (each its own dockerd and sshd) started on demand:
                   fleet.hosts(n), fleet.inventory(path, hosts); see fleet.py
  fleet_host       the fleet's first host
Every test that needs `fleet` (directly or through a fixture) is marked `fleet`
(pytest_collection_modifyitems below): `-m fleet` selects them, `-m "not fleet"` the others.
"""

from __future__ import annotations

import copy
import dataclasses
import getpass
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml
import fleet as _fleet  # tests/integration/fleet.py

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "thirdparty_app"))
import thirdparty_images  # noqa: E402  pylint: disable=wrong-import-position

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_MANIFEST = REPO_ROOT / "manifest.yml"
SSHD = pathlib.Path("/usr/sbin/sshd")
VENV = pathlib.Path(os.environ.get("SWIFTDEPLOY_VENV") or REPO_ROOT / ".venv").absolute()
DELETE = object()


# --------------------------------------------------------------------------------------------
# Ansible
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def example_manifest() -> pathlib.Path:
    return EXAMPLE_MANIFEST


@pytest.fixture(scope="session")
def venv() -> pathlib.Path:
    """The virtualenv the playbooks run from: .venv, or SWIFTDEPLOY_VENV's."""
    return VENV


@pytest.fixture(scope="session")
def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = VENV / "bin"
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(REPO_ROOT / ".collections")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # A caller's verbosity or callback settings would change the text the tests assert on.
    for name in ("ANSIBLE_VERBOSITY", "ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACKS_ENABLED",
                 "ANSIBLE_DISPLAY_OK_HOSTS", "ANSIBLE_DISPLAY_SKIPPED_HOSTS", "ANSIBLE_INVENTORY"):
        env.pop(name, None)
    return env


@dataclasses.dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    command: list[str]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __iter__(self):  # rc, stdout, stderr = run_playbook(...)
        return iter((self.rc, self.stdout, self.stderr))

    def describe(self) -> str:
        return (f"$ {' '.join(self.command)}\nrc={self.rc}\n--- stdout ---\n{self.stdout}"
                f"\n--- stderr ---\n{self.stderr}")


def _playbook_path(playbook) -> str:
    path = pathlib.Path(playbook)
    if path.is_absolute():
        return str(path)
    if len(path.parts) == 1:  # "init" or "init.yml": one of the collection's playbooks
        name = path.name if path.suffix in (".yml", ".yaml") else f"{path.name}.yml"
        return str(REPO_ROOT / "playbooks" / name)
    return str(REPO_ROOT / path)


@pytest.fixture(scope="session")
def run_playbook(ansible_env):
    """Run ansible-playbook from the repository root; never raises on a failed play."""

    def run(playbook, *args, inventory=None, check=False, diff=None, timeout=600) -> PlaybookRun:
        command = ["ansible-playbook", _playbook_path(playbook)]
        if inventory is not None:
            command += ["-i", str(inventory)]
        if check:
            command.append("--check")
        if check if diff is None else diff:
            command.append("--diff")
        command += [str(arg) for arg in args]
        proc = subprocess.run(command, cwd=REPO_ROOT, env=ansible_env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, command)

    return run


_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


def parse_play_recap(stdout: str) -> dict[str, dict[str, int]]:
    """Return {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}} from the
    PLAY RECAP of an ansible-playbook run. Raises AssertionError when there is no recap."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("PLAY RECAP")]
    assert starts, f"no PLAY RECAP in the output:\n{stdout}"
    recap: dict[str, dict[str, int]] = {}
    for line in lines[starts[-1] + 1:]:
        match = _RECAP_LINE.match(line.strip())
        if not match:
            if recap:
                break
            continue
        recap[match["host"]] = {key: int(value) for key, value in
                                re.findall(r"(\w+)=(\d+)", match["counts"])}
    assert recap, f"PLAY RECAP has no host lines:\n{stdout}"
    return recap


@pytest.fixture(scope="session")
def parse_recap():
    return parse_play_recap


def parse_validate_checks(stdout: str) -> list[tuple[int, str, str]]:
    """The numbered lines the validate role's "Report the checks" task prints."""
    section = stdout.split("TASK [swiftdeploy.stack.swiftdeploy : Report the checks]", 1)
    assert len(section) == 2, f"validate printed no report:\n{stdout}"
    body = section[1].split("TASK [", 1)[0]
    return [(int(n), mark, name)
            for n, mark, name in re.findall(r'^\s*"(\d+)\. ([✔✘]) ([^"]+)",?$', body, re.M)]


@pytest.fixture(scope="session")
def validate_checks():
    return parse_validate_checks


def init_report_pattern(name: str, project, state: str) -> re.Pattern:
    """The line init's last task prints for one generated file, e.g.
    "nginx.conf:         /dir/nginx.conf (unchanged)"."""
    return re.compile(rf'"{re.escape(name)}:\s+{re.escape(str(project))}/{re.escape(name)} \({state}\)"')


@pytest.fixture(scope="session")
def init_report_line():
    return init_report_pattern


def _set_dotted(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


@pytest.fixture(scope="session")
def write_manifest():
    """write_manifest(path, overrides=None, base=EXAMPLE_MANIFEST, raw=None) -> path.

    Copies the example manifest with dotted-key overrides applied (value DELETE removes the
    key), or writes `raw` text verbatim."""

    def write(path, overrides=None, base=EXAMPLE_MANIFEST, raw=None) -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_text(raw)
            return path
        data = copy.deepcopy(yaml.safe_load(pathlib.Path(base).read_text()))
        for dotted, value in (overrides or {}).items():
            _set_dotted(data, dotted, value)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    write.DELETE = DELETE
    return write


# --------------------------------------------------------------------------------------------
# Docker
# --------------------------------------------------------------------------------------------


def _docker(*args, timeout=60):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def docker_engine():
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"docker CLI unusable: {exc}; run scripts/setup.sh (it starts dockerd)")
    if info.returncode != 0:
        pytest.fail(f"the Docker engine does not answer (`docker info`: {info.stderr.strip()}); "
                    "run scripts/setup.sh (it starts dockerd)")
    return info.stdout.strip()


@pytest.fixture(scope="session")
def app_image(docker_engine, example_manifest):
    """The example manifest's app image, built by scripts/build-images.sh when missing."""
    image = yaml.safe_load(example_manifest.read_text())["services"]["image"]
    if _docker("image", "inspect", image).returncode != 0:
        build = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-images.sh")],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200, check=False)
        assert build.returncode == 0, (
            f"scripts/build-images.sh failed ({build.returncode}):\n{build.stdout}\n{build.stderr}")
        assert _docker("image", "inspect", image).returncode == 0, (
            f"scripts/build-images.sh succeeded but {image} is still missing:\n{build.stdout}")
    return image


THIRDPARTY_VERSIONS = thirdparty_images.VERSIONS


@dataclasses.dataclass
class ThirdPartyApp:
    """The third-party-style test service and what a manifest needs to know about it."""

    images: dict
    versions: dict
    port: int = 8000
    health_path: str = "/ready"
    uid: int = 20000
    gid: int = 20000

    def manifest(self, stack: str, port: int, admin_port: int, tag: str = "1", **services) -> dict:
        """A manifest for this app (not the example's): stack `stack` with nginx on `port` and
        `admin_port`, the stack's own network and log volume (<stack>-net, <stack>-logs), the
        app's port, version, uid and health path (checked from outside: no HEALTHCHECK in the
        image); `services` keys are added to or replace the services block."""
        data = copy.deepcopy(yaml.safe_load(EXAMPLE_MANIFEST.read_text()))
        data["stack"] = stack
        data["contact"] = "oncall@%s.example" % stack
        data["nginx"]["port"] = port
        data["nginx"]["admin_port"] = admin_port
        data["network"].pop("name", None)
        data["services"].pop("log_volume", None)
        data["services"].update(image=self.images[tag], port=self.port, version=self.versions[tag],
                                user="%d:%d" % (self.uid, self.gid),
                                healthcheck={"path": self.health_path, "docker": False})
        data["services"].update(services)
        return data


def _build_thirdparty(tag: str, version: str) -> None:
    # Shared with scripts/bench_promote.py --app thirdparty (tests/fixtures/thirdparty_app/thirdparty_images.py).
    try:
        thirdparty_images.build(tag, version)
    except thirdparty_images.BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def thirdparty_app(docker_engine, app_image) -> ThirdPartyApp:
    """thirdparty-app:1 and :2, built from tests/fixtures/thirdparty_app when missing or when
    the sources, the base image or the version changed (a label records their hash)."""
    # app_image builds swiftdeploy/debian-base:bookworm too, when it is missing.
    images = {key: f"thirdparty-app:{key}" for key in THIRDPARTY_VERSIONS}
    for key, tag in images.items():
        _build_thirdparty(tag, THIRDPARTY_VERSIONS[key])
    return ThirdPartyApp(images=images, versions=dict(THIRDPARTY_VERSIONS))


# --------------------------------------------------------------------------------------------
# SSH
# --------------------------------------------------------------------------------------------


def free_tcp_port(address="127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class SSHHost:
    """A running sshd that accepts `user` with `private_key`, and an inventory for it."""

    name: str
    address: str
    port: int
    user: str
    private_key: pathlib.Path
    python: str
    inventory: pathlib.Path
    log: pathlib.Path
    control_path_dir: pathlib.Path

    def ssh_command(self, *remote: str) -> list[str]:
        return ["ssh", "-i", str(self.private_key), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", f"{self.user}@{self.address}", *remote]

    def write_inventory(self, path, group="swiftdeploy", name=None, **extra_vars) -> pathlib.Path:
        host_vars = {
            "ansible_host": self.address,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.private_key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            # Interpreter discovery over SSH finds a broken pyenv shim; the venv has the docker
            # SDK and requests that community.docker needs.
            "ansible_python_interpreter": self.python,
            # Ansible's ControlPersist masters live here, so teardown can close them.
            "ansible_control_path_dir": str(self.control_path_dir),
            **extra_vars,
        }
        path = pathlib.Path(path)
        path.write_text(yaml.safe_dump({group: {"hosts": {name or self.name: host_vars}}},
                                       sort_keys=False))
        return path


def _wait_for_sshd(proc, port, deadline_s=15.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory):
    """Start `/usr/sbin/sshd` on a free port of 127.0.0.1 for root, authorised by a key pair
    made here and listed in a dedicated AuthorizedKeysFile (root's ~/.ssh is not touched)."""
    if not SSHD.is_file():
        pytest.skip(f"{SSHD} is missing: install openssh-server (scripts/setup-host.sh does)")
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip("ssh / ssh-keygen missing: install openssh-client")
    workdir = tmp_path_factory.mktemp("sshd")
    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "id_ed25519"
    for key, comment in ((host_key, "swiftdeploy-test-host"), (client_key, "swiftdeploy-test-client")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                       check=True, capture_output=True)
    authorized_keys = workdir / "authorized_keys"
    authorized_keys.write_text(client_key.with_suffix(".pub").read_text())
    authorized_keys.chmod(0o600)
    pathlib.Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
    log = workdir / "sshd.log"
    user = getpass.getuser()

    proc = port = None
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_tcp_port()
        with log.open("ab") as log_file:
            proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-p", str(port), "-o", "ListenAddress=127.0.0.1",
                 "-h", str(host_key), "-o", f"PidFile={workdir / 'sshd.pid'}",
                 "-o", "PermitRootLogin=prohibit-password", "-o", "PasswordAuthentication=no",
                 "-o", "KbdInteractiveAuthentication=no", "-o", "StrictModes=no",
                 "-o", f"AuthorizedKeysFile={authorized_keys}"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        if _wait_for_sshd(proc, port):
            break
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc = None
    if proc is None:
        pytest.fail(f"sshd did not start; its log:\n{log.read_text()}")

    host = SSHHost(name="sshtarget", address="127.0.0.1", port=port, user=user,
                   private_key=client_key, python=_venv_python(), inventory=workdir / "inventory.yml",
                   log=log, control_path_dir=workdir / "cp")
    host.control_path_dir.mkdir(mode=0o700)
    try:
        host.write_inventory(host.inventory)
        probe = subprocess.run(host.ssh_command("true"), capture_output=True, text=True, timeout=30, check=False)
        assert probe.returncode == 0, (
            f"ssh to the test sshd failed ({probe.returncode}): {probe.stderr}\nsshd log:\n{log.read_text()}")
        yield host
    finally:
        for socket_path in host.control_path_dir.iterdir():  # ansible's ControlPersist masters
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "sshtarget"],
                           capture_output=True, timeout=30, check=False)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _venv_python() -> str:
    python = VENV / "bin" / "python"
    return str(python) if python.exists() else sys.executable


# --------------------------------------------------------------------------------------------
# Fleet hosts (tests/integration/fleet.py)
# --------------------------------------------------------------------------------------------

fleet = _fleet.fleet
fleet_host = _fleet.fleet_host


def pytest_collection_modifyitems(items):
    """Mark `fleet` every test that needs the fleet fixture, directly or through another fixture:
    scripts/test.sh runs them (-m fleet) in a pytest process of their own, beside the tests on
    this machine's engine (-m "not fleet"). Their stacks run in the fleet hosts' own dockerds at
    their own addresses, so the two processes share no stack, port or lock."""
    for item in items:
        if "fleet" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fleet)
