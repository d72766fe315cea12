"""A fleet of real Docker hosts on one machine, for the integration tests.

Each fleet host is a container that runs its own dockerd and sshd (the recipe of
../shared/ENVIRONMENT.md, "A fleet of real Docker hosts on one machine"): its own filesystem,
image store, ports and IP address, and it is reached by the playbooks only over SSH, with a key
made for the session, at its container IP. Load and probes go to that address.

The host image (`swiftdeploy/fleet-host:<hash>`) is built once, FROM the debootstrap base image
(scripts/build-images.sh builds it), with Debian's docker.io, sshd, python3 with the docker and
requests libraries, and the controller's Compose v2 plugin copied in. Its tag is a hash of its
build inputs (the Dockerfile's text, the base image's ID, the plugin's bytes), so a later session
reuses it and any change of an input builds a new one.

Fixtures (conftest.py imports them; none is autouse):

  fleet        session-scoped `Fleet`. `fleet.hosts(n)` starts hosts until there are n and returns
               the first n (`FleetHost` objects, names h1, h2, ...); hosts are started on demand,
               side by side, and reused by every later test of the session. Everything (containers,
               their volumes, ssh masters) is removed at the end of the session, and containers a
               dead session left behind are removed at the start.
               `fleet.inventory(path, hosts, group="swiftdeploy", **vars)` writes an inventory
               of those hosts (`ansible_host` = container IP, root, the session key,
               `/usr/bin/python3`) and returns its path.
  fleet_host   the first host of `fleet.hosts(1)`.

A `FleetHost` has `name`, `container`, `address` (its IP), `run(*argv)` (a command over SSH, each
argument passed as it is; a CompletedProcess with text), `docker(*args)` (the docker CLI on the host, over SSH),
`image_id(image)` (the ID on that host, None when absent) and `inventory_vars()`.

`FleetStack(name, hosts, root, run_playbook, app)` is a test stack on several fleet hosts, each
with a manifest of its own (the third-party-style app's `app.manifest(...)`, written under
`root`): `write_manifest(name, data)`, `inventory(name, {host name: manifest}, **{host: vars})`,
`run(playbook, inventory, *args)` (the controller's image cache and anchors under `root`), and
what each host holds in the role's default project directory: `state(host)`, `stable(host)`,
`history(host)`; `traffic(port)` is one Traffic (tests/integration/traffic.py) per host, to its
own address.

The same fleet outside pytest (the Molecule scenario `fleet` runs it; docs/fleet-testing.md):

  python tests/integration/fleet.py up 3 --inventory PATH [--name NAME]
      starts hosts h1..h3 (after removing those of an earlier `up` of the same NAME), writes the
      inventory of group `swiftdeploy`, and keeps the session's key and ssh control sockets next
      to it; prints the hosts and their addresses.
  python tests/integration/fleet.py down --inventory PATH [--name NAME]
      removes the hosts of NAME (containers and their volumes) and closes the ssh masters.
  python tests/integration/fleet.py image
      builds the host image when no image of its inputs' hash exists, and prints its tag
      (scripts/test.sh, before the pytest processes that may each start a fleet).

NAME (default `cli`) labels the containers instead of a pytest process id, so a pytest session
never takes them for a dead session's leftovers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml

from traffic import Traffic  # tests/integration/traffic.py

BASE_IMAGE = "swiftdeploy/debian-base:bookworm"
HOST_IMAGE_REPO = "swiftdeploy/fleet-host"
LABEL = "org.swiftdeploy.fleet"
COMPOSE_PLUGIN_PATHS = ("/usr/local/lib/docker/cli-plugins/docker-compose",
                        "/usr/libexec/docker/cli-plugins/docker-compose",
                        "/usr/lib/docker/cli-plugins/docker-compose")
# The inner dockerd gets address ranges apart from the outer bridge's 172.17.0.0/16 (its CMD).
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      docker.io iptables openssh-server python3 python3-docker python3-requests ca-certificates procps \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /run/sshd /root/.ssh /usr/local/lib/docker/cli-plugins && chmod 700 /root/.ssh
COPY docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
CMD ["dockerd", "--bip", "10.201.0.1/24", "--default-address-pool", "base=10.202.0.0/16,size=24"]
"""
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]


def _docker(*args, timeout=120, check=False, **kwargs):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, **kwargs)


def compose_plugin() -> pathlib.Path:
    for path in COMPOSE_PLUGIN_PATHS:
        if os.path.isfile(path):
            return pathlib.Path(path)
    pytest.fail("the Compose v2 plugin is not installed on this machine (looked in %s); run scripts/setup.sh"
                % ", ".join(COMPOSE_PLUGIN_PATHS))


def host_image_tag(base_id: str, plugin: pathlib.Path) -> str:
    """The host image's tag: a hash of what it is built from."""
    digest = hashlib.sha256()
    digest.update(DOCKERFILE.encode())
    digest.update(base_id.encode())
    with plugin.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "%s:%s" % (HOST_IMAGE_REPO, digest.hexdigest()[:16])


def ensure_host_image() -> str:
    """The host image, built when no image of its inputs' hash exists (about a minute)."""
    base = _docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE)
    if base.returncode != 0:
        pytest.fail(f"{BASE_IMAGE} is missing: run scripts/build-images.sh (the app_image fixture does)")
    plugin = compose_plugin()
    tag = host_image_tag(base.stdout.strip(), plugin)
    if _docker("image", "inspect", tag).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="fleet-host-") as context:
        (pathlib.Path(context) / "Dockerfile").write_text(DOCKERFILE)
        shutil.copy2(plugin, pathlib.Path(context) / "docker-compose")
        build = _docker("build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--label", f"{LABEL}=host-image",
                        "-t", tag, context, timeout=900)
    assert build.returncode == 0, f"building the fleet host image failed:\n{build.stdout}\n{build.stderr}"
    return tag


@dataclasses.dataclass
class FleetHost:
    """One Docker host of the fleet: a container with its own dockerd and sshd."""

    name: str
    container: str
    volume: str
    address: str
    private_key: pathlib.Path
    control_path_dir: pathlib.Path
    python: str = "/usr/bin/python3"
    user: str = "root"

    def ssh_command(self, *argv: str) -> list[str]:
        """ssh running argv on the host, each argument passed as it is (quoted for the remote shell)."""
        return ["ssh", "-i", str(self.private_key), *SSH_OPTIONS, f"{self.user}@{self.address}",
                " ".join(shlex.quote(arg) for arg in argv)]

    def run(self, *argv: str, timeout=120, **kwargs) -> subprocess.CompletedProcess:
        """A command on the host, over SSH (argv as it is, no shell expansion)."""
        return subprocess.run(self.ssh_command(*argv), capture_output=True, text=True, timeout=timeout,
                              check=False, **kwargs)

    def docker(self, *args: str, timeout=120, **kwargs) -> subprocess.CompletedProcess:
        """The host's docker CLI, over SSH."""
        return self.run("docker", *args, timeout=timeout, **kwargs)

    def image_id(self, image: str):
        found = self.docker("image", "inspect", "--format", "{{.Id}}", image)
        return found.stdout.strip() if found.returncode == 0 else None

    def inventory_vars(self, **extra) -> dict:
        return {
            "ansible_host": self.address,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.private_key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            # Ansible's default ssh_args without -C: the hosts are on this machine's bridge, where
            # compressing the image archives the deploys ship (hundreds of MB) only burns CPU.
            "ansible_ssh_args": "-o ControlMaster=auto -o ControlPersist=60s",
            # Debian's python3 on the host has python3-docker and python3-requests.
            "ansible_python_interpreter": self.python,
            "ansible_control_path_dir": str(self.control_path_dir),
            **extra,
        }


class Fleet:
    """Fleet hosts started on demand for one test session; `close()` removes them all."""

    def __init__(self, workdir: pathlib.Path, session: str = ""):
        self.workdir = workdir
        # A pytest session is its process id (remove_leftovers); the command line names its own.
        self.session = session or f"{os.getpid()}"
        self.prefix = f"swiftdeploy-fleet-{self.session}"
        self.private_key = workdir / "id_ed25519"
        self.control_path_dir = workdir / "cp"
        self.control_path_dir.mkdir(mode=0o700, exist_ok=True)
        if not self.private_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swiftdeploy-fleet", "-f",
                            str(self.private_key)], check=True, capture_output=True)
        self.image = None
        self._hosts: list[FleetHost] = []
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def hosts(self, count: int) -> list[FleetHost]:
        """The first `count` hosts, starting the missing ones side by side."""
        with self._lock:
            if self.image is None:
                remove_leftovers()
                self.image = ensure_host_image()
            names = [f"h{index}" for index in range(len(self._hosts) + 1, count + 1)]
            started, errors = {}, []

            def start(name):
                try:
                    started[name] = self._start(name)
                except BaseException as exc:  # reported below, after every thread ended
                    errors.append(f"{name}: {exc}")

            threads = [threading.Thread(target=start, args=(name,)) for name in names]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            self._hosts += [started[name] for name in names if name in started]
            if errors:
                pytest.fail("fleet hosts did not start:\n" + "\n".join(errors))
            return self._hosts[:count]

    def _start(self, name: str) -> FleetHost:
        container, volume = f"{self.prefix}-{name}", f"{self.prefix}-{name}-docker"
        run = _docker("run", "-d", "--name", container, "--hostname", name, "--label", f"{LABEL}={self.session}",
                      "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                      "--security-opt", "apparmor=unconfined", "-v", f"{volume}:/var/lib/docker",
                      "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", self.image)
        assert run.returncode == 0, f"docker run {container} failed: {run.stderr}"
        public_key = self.private_key.with_suffix(".pub").read_text()
        setup = _docker("exec", "-i", container, "sh", "-c",
                        "cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys "
                        "&& mkdir -p /run/sshd && /usr/sbin/sshd", input=public_key)
        assert setup.returncode == 0, f"sshd did not start on {container}: {setup.stderr}"
        address = _docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", container).stdout.strip()
        assert address, f"{container} has no IP address"
        host = FleetHost(name=name, container=container, volume=volume, address=address,
                         private_key=self.private_key, control_path_dir=self.control_path_dir)
        deadline = time.monotonic() + 60
        while True:
            probe = host.docker("info", "--format", "{{.ServerVersion}}", timeout=30)
            if probe.returncode == 0:
                return host
            if time.monotonic() > deadline:
                logs = _docker("logs", "--tail", "30", container)
                raise AssertionError(f"{name} ({address}): docker info over SSH does not answer: "
                                     f"{probe.stderr}\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)

    def close(self):
        for socket_path in self.control_path_dir.iterdir():  # ansible's ControlPersist masters
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "fleet"],
                           capture_output=True, timeout=30, check=False)
        for host in self._hosts:
            _docker("rm", "-f", "-v", host.container, timeout=120)
            _docker("volume", "rm", "-f", host.volume, timeout=120)
        self._hosts = []

    # -- inventory -----------------------------------------------------------------------------

    def inventory(self, path, hosts=None, group="swiftdeploy", **extra_vars) -> pathlib.Path:
        """Write an inventory of `hosts` (default: every started host) in `group`."""
        hosts = self._hosts if hosts is None else hosts
        path = pathlib.Path(path)
        path.write_text(yaml.safe_dump(
            {group: {"hosts": {host.name: host.inventory_vars(**extra_vars) for host in hosts}}}, sort_keys=False))
        return path


class FleetStack:
    """A test stack on fleet hosts, a manifest per host (see the module's docstring)."""

    def __init__(self, name, hosts, root: pathlib.Path, run_playbook, app=None):
        self.name = name
        self.hosts = hosts
        self.root = root
        self.app = app
        self._run = run_playbook
        self.project = f"/root/.swiftdeploy/{name}"  # the role's default (~/.swiftdeploy/<stack>) for root

    def write_manifest(self, name, data) -> pathlib.Path:
        path = self.root / f"manifest-{name}.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def inventory(self, name, manifests, **host_vars) -> pathlib.Path:
        """An inventory of the hosts, each with its own manifest ({host name: path}, a host var),
        and more variables per host ({host name: {var: value}})."""
        path = self.root / f"inventory-{name}.yml"
        hosts = {host.name: host.inventory_vars(swiftdeploy_manifest=str(manifests[host.name]),
                                                **host_vars.get(host.name, {}))
                 for host in self.hosts}
        path.write_text(yaml.safe_dump({"swiftdeploy": {"hosts": hosts}}, sort_keys=False))
        return path

    def run(self, playbook, inventory, *args):
        return self._run(playbook, "-e", f"swiftdeploy_image_cache_dir={self.root / 'cache'}",
                         "-e", f"swiftdeploy_anchor_dir={self.root / 'anchors'}", *args, inventory=inventory)

    def state(self, host) -> dict:
        return json.loads(host.run("cat", f"{self.project}/state.json").stdout)

    def stable(self, host) -> dict:
        state = self.state(host)
        return state["slots"][state["stable"]]

    def history(self, host) -> list:
        return [json.loads(line) for line in host.run("cat", f"{self.project}/history.jsonl").stdout.splitlines()]

    def traffic(self, port, threads=1) -> dict:
        return {host.name: Traffic(port, host=host.address, threads=threads) for host in self.hosts}


def remove_session(session: str):
    """Remove the fleet containers (and their volumes) labelled with `session`."""
    listed = _docker("ps", "-a", "--filter", f"label={LABEL}={session}", "--format", "{{.Names}}")
    for name in listed.stdout.split():
        _docker("rm", "-f", "-v", name, timeout=120)
        _docker("volume", "rm", "-f", f"{name}-docker", timeout=120)


def remove_leftovers():
    """Remove fleet containers (and their volumes) of sessions whose pytest process is gone."""
    listed = _docker("ps", "-a", "--filter", f"label={LABEL}", "--format",
                     '{{.Names}}\t{{.Label "%s"}}' % LABEL)
    for line in listed.stdout.splitlines():
        name, _sep, session = line.partition("\t")
        if session.isdigit() and not os.path.exists(f"/proc/{session}"):
            _docker("rm", "-f", "-v", name)
            _docker("volume", "rm", "-f", f"{name}-docker")


@pytest.fixture(scope="session")
def fleet(docker_engine, app_image, tmp_path_factory):
    """The session's fleet (see the module's docstring); hosts start on `fleet.hosts(n)`."""
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("ssh / ssh-keygen missing: install openssh-client")
    the_fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        yield the_fleet
    finally:
        the_fleet.close()


@pytest.fixture(scope="session")
def fleet_host(fleet):
    """The first fleet host."""
    return fleet.hosts(1)[0]


# --------------------------------------------------------------------------------------------
# Command line: the same fleet for Molecule (molecule/fleet) or by hand
# --------------------------------------------------------------------------------------------


def close_control_masters(control_path_dir: pathlib.Path):
    if control_path_dir.is_dir():
        for socket_path in control_path_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "fleet"],
                           capture_output=True, timeout=30, check=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Start or remove a fleet of Docker hosts reached over SSH.")
    parser.add_argument("action", choices=["up", "down", "image"])
    parser.add_argument("count", nargs="?", type=int, default=3, help="how many hosts `up` starts (default 3)")
    parser.add_argument("--inventory", type=pathlib.Path,
                        help="the inventory `up` writes; the key and ssh sockets are kept in its directory")
    parser.add_argument("--name", default="cli", help="the fleet's label, apart from pytest's (default cli)")
    args = parser.parse_args(argv)
    if args.action == "image":
        try:
            print(ensure_host_image())
        except (Exception, pytest.fail.Exception) as exc:  # pylint: disable=broad-except
            print(f"fleet host image: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.inventory is None:
        parser.error(f"{args.action} needs --inventory PATH")
    if not args.name.replace("-", "").isalnum() or args.name.isdigit():
        parser.error(f"--name {args.name!r}: use letters, digits and '-', not only digits (those are pytest's)")
    workdir = args.inventory.absolute().parent / f"fleet-{args.name}"
    # Before anything else, an earlier `up` of the same name is removed: `up` always starts clean.
    close_control_masters(workdir / "cp")
    remove_session(args.name)
    if args.action == "down":
        args.inventory.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"fleet {args.name}: removed")
        return 0
    if args.count < 1:
        parser.error(f"count {args.count}: start at least one host")
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    the_fleet = Fleet(workdir, session=args.name)
    try:
        hosts = the_fleet.hosts(args.count)
    except (Exception, pytest.fail.Exception) as exc:  # pylint: disable=broad-except
        the_fleet.close()
        print(f"fleet {args.name}: {exc}", file=sys.stderr)
        return 1
    the_fleet.inventory(args.inventory, hosts)
    for host in hosts:
        print(f"{host.name} {host.address} {host.container}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
