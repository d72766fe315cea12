# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one way SwiftDeploy's modules reach Docker on the managed host.

This is a private module_utils file: its API may change without notice. No Ansible imports.

`open_engine()` gives an engine with one small interface: compose (ps, up, down, config),
containers (inspect, kill, stop, remove, exec, logs), images (their IDs, save, load), the data root, and running
independent docker commands side by side. Two implementations stand behind it:

- `CliEngine`: every call starts the docker CLI (10 to 20 ms each on a quiet host);
- `ApiEngine`: the same, but inspect, kill, stop and remove, and the images' IDs and the data
  root, go through the Engine API on the local unix socket (about 1 ms each), used when and only when the CLI would talk to that very
  socket (see _docker_api.local_socket). compose and exec always go through the CLI.

`DryRunEngine` wraps either for check mode: reads go to the real engine, changes are recorded
and not made, and what they would have left (containers started or removed) is what later reads
see. Code that sequences work over an engine therefore needs no check-mode branches of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils._docker_api import (
    DockerApi,
    DockerApiError,
    local_socket,
)

# Where a docker CLI lives when the remote user's PATH is minimal (as over SSH).
DOCKER_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/bin", "/usr/bin", "/bin",
                               "/usr/local/sbin", "/usr/sbin", "/sbin"])
# Words docker compose prints after a container's name when it (re)creates or starts it, as in
# " Container stack-nginx-1  Recreated". "Running" means it was left alone.
STARTED_WORDS = frozenset(("Create", "Created", "Creating", "Recreate", "Recreated", "Recreating",
                           "Start", "Started", "Starting", "Restarting"))


class EngineError(Exception):
    """A Docker call that failed; the message names the command and what to look at."""


def docker_cli(path=None):
    """The docker CLI's path, or None."""
    return shutil.which("docker", path=path or DOCKER_PATH)


def subprocess_runner(argv):
    """(rc, stdout, stderr) of a command, as AnsibleModule.run_command returns them."""
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, close_fds=True, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def run_side_by_side(argvs):
    """Run the commands at the same time; [(rc, stdout, stderr, seconds)] in argvs' order.

    For independent checks whose time is mostly process start-up (docker CLI, a container).
    """
    started = time.monotonic()
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              close_fds=True) for argv in argvs]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate()
            results.append((proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                            round(time.monotonic() - started, 3)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def parse_compose_ps(text):
    """The containers `docker compose ps --format json` lists: one JSON object per line (compose
    2.21 and later) or one JSON array (earlier releases). ValueError for anything else."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        entries = json.loads(text)
    else:
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ValueError("expected JSON objects, one a line")
    return entries


def containers_started(output):
    """Names of the containers that `docker compose up` reports it created, recreated or
    started, from its plain progress lines (" Container stack-nginx-1  Recreated")."""
    names = set()
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "Container" and parts[2] in STARTED_WORDS:
            names.add(parts[1])
    return names


def command_failure(argv, what, rc, out, err):
    """One sentence for a docker command that failed."""
    text = (err or "").strip() or (out or "").strip() or "(no output)"
    if "'compose' is not a docker command" in text or "unknown flag: --project-directory" in text:
        return ("the docker compose plugin (v2) is not installed on this host (%s); install it "
                "(docker-compose-plugin) next to the docker CLI" % text)
    return "%s failed (rc=%d): %s\ncommand: %s" % (what, rc, text, " ".join(argv))


class CliEngine(object):
    """Docker through its CLI. `runner(argv) -> (rc, out, err)` runs one command."""

    dry_run = False

    def __init__(self, docker, runner=subprocess_runner):
        self.docker = docker
        self.runner = runner

    # -- commands ----------------------------------------------------------------------------

    def run(self, argv, what):
        """(stdout, stderr) of a command that must succeed; EngineError otherwise."""
        rc, out, err = self.runner(argv)
        if rc != 0:
            raise EngineError(command_failure(argv, what, rc, out, err))
        return out, err

    def side_by_side(self, argvs):
        return run_side_by_side(argvs)

    # -- compose -------------------------------------------------------------------------------

    def compose_argv(self, project, *args):
        return [self.docker, "compose", "--project-directory", project] + list(args)

    def ps_argv(self, project):
        return self.compose_argv(project, "ps", "--all", "--format", "json")

    def ps(self, project):
        """The project's containers, running or not, as `docker compose ps` lists them."""
        out, _err = self.run(self.ps_argv(project), "docker compose ps")
        return self.read_ps(out)

    @staticmethod
    def read_ps(out):
        try:
            return parse_compose_ps(out)
        except ValueError as exc:
            raise EngineError("docker compose ps --format json printed something that is not JSON (%s): %s"
                              % (exc, out[:200]))

    def compose_up(self, project, services=(), wait_timeout=None):
        """`docker compose up -d` of the services (all when none); returns what it printed."""
        args = ["up", "-d"]
        if wait_timeout is not None:
            args += ["--wait", "--wait-timeout", str(int(wait_timeout))]
        out, err = self.run(self.compose_argv(project, *(args + list(services))), "docker compose up")
        return out + err

    def compose_down(self, project, timeout):
        """`docker compose down --volumes --remove-orphans`; returns what it printed."""
        out, err = self.run(self.compose_argv(project, "down", "--volumes", "--remove-orphans", "--timeout",
                                              str(int(timeout))), "docker compose down")
        return err + out

    def compose_services(self, project, compose_file):
        """The service names of a compose file, as `docker compose config --services` lists them."""
        out, _err = self.run(self.compose_argv(project, "-f", compose_file, "config", "--services"),
                             "docker compose config --services")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def compose_config_argv(self, project, compose_file):
        return self.compose_argv(project, "-f", compose_file, "config", "--quiet")

    # -- containers ----------------------------------------------------------------------------

    def inspect(self, container):
        out, _err = self.run([self.docker, "inspect", "--format", "{{json .}}", container], "docker inspect")
        try:
            return json.loads(out)
        except ValueError:
            raise EngineError("docker inspect %s printed something that is not JSON: %s" % (container, out[:200]))

    def kill(self, container, signal_name):
        self.run([self.docker, "kill", "--signal", signal_name, container], "docker kill --signal %s" % signal_name)

    def stop(self, container, seconds):
        self.run([self.docker, "stop", "--time", str(int(seconds)), container], "docker stop")

    def remove(self, container):
        self.run([self.docker, "rm", "--volumes", container], "docker rm")

    def exec_argv(self, container, argv):
        return [self.docker, "exec", container] + list(argv)

    def logs(self, containers, tail, since=None):
        """{container: (rc, stdout, stderr)} of `docker logs --timestamps --tail N [--since T]`,
        the containers read side by side."""
        extra = ["--since", str(int(since))] if since is not None else []
        argvs = [[self.docker, "logs", "--timestamps", "--tail", str(int(tail))] + extra + [name]
                 for name in containers]
        results = self.side_by_side(argvs) if argvs else []
        return dict((name, result[:3]) for name, result in zip(containers, results))

    # -- images and the daemon -----------------------------------------------------------------

    def survey(self, images=(), root_dir=False):
        """{images: {image: its ID or None when absent}, root_dir: the data root or None}, the
        docker commands run side by side (each costs mostly a CLI start)."""
        images = list(dict.fromkeys(images))
        argvs = [[self.docker, "image", "inspect", "--format", "{{.Id}}", image] for image in images]
        if root_dir:
            argvs.append([self.docker, "info", "--format", "{{.DockerRootDir}}"])
        results = self.side_by_side(argvs) if argvs else []
        answers = [out.strip() if rc == 0 and out.strip() else None for rc, out, _err, _seconds in results]
        return {"images": dict(zip(images, answers)), "root_dir": answers[-1] if root_dir else None}

    def image_id(self, image):
        """The ID of an image (a name or an ID) on this host, or None when it is absent."""
        return self.survey([image])["images"][image]

    def image_save(self, image, path):
        """`docker save` of one image, with its name, into the archive at path."""
        self.run([self.docker, "image", "save", "--output", path, image], "docker image save %s" % image)

    def image_load(self, path):
        """`docker image load` of an archive; returns what it printed ("Loaded image: ...")."""
        out, err = self.run([self.docker, "image", "load", "--input", path], "docker image load %s" % path)
        return out + err


class ApiEngine(CliEngine):
    """CliEngine with container inspect, kill, stop and remove, and the survey of images and the
    data root, through the Engine API socket."""

    def __init__(self, docker, socket_path, runner=subprocess_runner):
        super(ApiEngine, self).__init__(docker, runner)
        self.api = DockerApi(socket_path)

    def _call(self, what, call):
        try:
            return call()
        except DockerApiError as exc:
            raise EngineError("%s failed: %s" % (what, exc))

    def inspect(self, container):
        return self._call("docker inspect %s" % container, lambda: self.api.inspect(container))

    def kill(self, container, signal_name):
        self._call("docker kill --signal %s %s" % (signal_name, container), lambda: self.api.kill(container, signal_name))

    def stop(self, container, seconds):
        self._call("docker stop %s" % container, lambda: self.api.stop(container, seconds))

    def remove(self, container):
        self._call("docker rm --volumes %s" % container, lambda: self.api.remove(container))

    def survey(self, images=(), root_dir=False):
        """CliEngine.survey through the socket: one request of about 1 ms each, where each CLI
        start costs 0.1 s on a busy host (the lock's survey on every deploy). An engine that
        does not answer leaves it to the CLI."""
        images = list(dict.fromkeys(images))
        try:
            return {"images": dict((image, self.api.image_id(image)) for image in images),
                    "root_dir": self.api.root_dir() if root_dir else None}
        except DockerApiError:
            return super(ApiEngine, self).survey(images, root_dir)


class DryRunEngine(object):
    """Check mode over a real engine: reads are real, changes are only recorded.

    `changes` lists (what, detail) of every change that would be made. After a simulated
    `compose_up`, `ps` lists the services it named as running (all of `services_after` when it
    named none); after a simulated `remove` the container is gone from `ps`.
    """

    dry_run = True

    def __init__(self, real):
        self.real = real
        self.docker = real.docker
        self.changes = []
        self._simulated = None  # the ps entries the changes so far would have left, once any

    def __getattr__(self, name):
        # Reads and argv builders (ps_argv, exec_argv, side_by_side, image_ids, ...) are real.
        return getattr(self.real, name)

    @property
    def simulating(self):
        return self._simulated is not None

    def ps(self, project):
        if self._simulated is not None:
            return [dict(entry) for entry in self._simulated]
        if not os.path.isfile(os.path.join(project, "docker-compose.yml")):
            return []
        return self.real.ps(project)

    def simulate(self, entries):
        """What `ps` answers from now on (the caller knows what an `up` would have started)."""
        self._simulated = [dict(entry) for entry in entries]

    def inspect(self, container):
        for entry in self._simulated or []:
            if container in (entry.get("Name"), entry.get("ID")) and entry.get("simulated"):
                return {"State": {"Status": "running", "Running": True, "Health": {"Status": "healthy"}},
                        "NetworkSettings": {"Networks": {}}}
        return self.real.inspect(container)

    def _record(self, what, detail):
        self.changes.append((what, detail))
        return ""

    def compose_up(self, project, services=(), wait_timeout=None):
        return self._record("compose up", ", ".join(services) or "all services")

    def image_save(self, image, path):
        self._record("image save", "%s -> %s" % (image, path))

    def image_load(self, path):
        return self._record("image load", path)

    def compose_down(self, project, timeout):
        """What `down` would print about the containers it would remove."""
        self._record("compose down", project)
        return "".join(" Container %s  Removed\n" % (entry.get("Name") or entry.get("ID"))
                       for entry in self.ps(project))

    def kill(self, container, signal_name):
        self._record("kill --signal %s" % signal_name, container)

    def stop(self, container, seconds):
        self._record("stop", container)

    def remove(self, container):
        self._record("remove", container)
        if self._simulated is not None:
            self._simulated = [entry for entry in self._simulated if container not in (entry.get("Name"), entry.get("ID"))]


def open_engine(runner=subprocess_runner, engine_api=True, check_mode=False, docker=None):
    """The engine for this host: ApiEngine when engine_api and the CLI would use the local
    socket, else CliEngine; wrapped in DryRunEngine in check mode. EngineError when there is no
    docker CLI."""
    docker = docker or docker_cli()
    if not docker:
        raise EngineError("the docker CLI is not on PATH on this host; install Docker with the compose plugin (v2), "
                          "or set PATH for this task (environment:)")
    socket_path = local_socket() if engine_api else None
    engine = ApiEngine(docker, socket_path, runner) if socket_path else CliEngine(docker, runner)
    return DryRunEngine(engine) if check_mode else engine
