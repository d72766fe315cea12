# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Everything a converge does to the Docker host or asks it: files, compose, containers, nginx.

This is a private module_utils file: its API may change without notice. No Ansible imports.

`StackHost` performs each step of a converge over an engine (_engine.py), the stack's HTTP
endpoints and the project directory, and times it in an `ActionLog`. `DryRunStackHost` is the
same host in check mode: it reads for real (files, `docker compose ps`, the tests of changed
files, the generation nginx serves) and records every change and wait as "not run". The
Converger (_converger.py) sequences the steps and never asks which of the two it drives.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import tempfile
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils._converge import (
    EDGE_CONF,
    EDGE_SERVICE,
    PlanError,
    compose_services,
    edge_workers_argv,
    generation_matches,
    new_workers,
    nginx_exec_test_argv,
    nginx_test_argv,
    parse_edge_workers,
    running_services,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._edge import ensure_directory as ensure_edge_directory
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import (
    EngineError,
    command_failure,
    containers_started,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError, get_text
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as progress
from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import fsync_directory, write_atomic
from ansible_collections.swiftdeploy.stack.plugins.module_utils._status import NOT_RUN

PROJECT_DIR_MODE = 0o750
PARENT_DIR_MODE = 0o755
GENERATION_PATH = "/_swiftdeploy/generation"
SLOT_HEALTH_PATH = "/slots/%s/healthz"  # nginx's admin listener, per slot (the role's nginx.conf)
MODE_TIMEOUT = 10.0
MODES = ("stable", "canary")
GENERATION_TIMEOUT = 10.0
GENERATION_POLL = 0.05
# How long the edge's nginx may take to load a changed edge.conf (its reload starts new workers).
EDGE_RELOAD_TIMEOUT = 10.0
EDGE_POLL = 0.1
# After a reload nginx's master starts the new workers, sleeps 100 ms and only then tells the old
# ones to stop accepting; until then an old worker can still route a new request to a slot that
# left. The new generation answering says nothing of that, so a slot that left is stopped no
# sooner than this after the reload (molecule's canary scenario saw two 502s without it).
RETIRE_SECONDS = 0.5
HEALTH_POLL = 0.2
HEALTH_PROBE_POLL = 0.05
HEALTH_PROBE_TIMEOUT = 0.5
# The shared logs volume inside an app slot (docker-compose.yml.j2) and the mode of its root.
LOGS_TARGET = "/app/logs"
LOGS_MODE = 0o1777
STOP_SECONDS = 10  # docker stop's grace before SIGKILL; the app stops within a second of SIGTERM
FAILED_LOG_LINES = 20  # of a slot that never got healthy, shown before it is removed


def share_logs_volume(inspected, target=LOGS_TARGET):
    """Make the root of the logs volume a slot mounts at `target` world-writable with the sticky
    bit, as the example image's /app/logs is (Docker copies that mode into a new volume). An
    image without that directory (a team's own service) leaves a new volume root's 0755, and
    nginx (uid 101), which writes its logs there, would not start. Only where the Docker host's
    volume directory is reachable from here (a local engine); True when the mode was changed."""
    for mount in inspected.get("Mounts") or []:
        source = mount.get("Source") or ""
        if mount.get("Type") != "volume" or mount.get("Destination") != target or not os.path.isabs(source):
            continue
        try:
            if os.stat(source).st_mode & 0o7777 != LOGS_MODE:
                os.chmod(source, LOGS_MODE)
                return True
        except OSError:
            return False
    return False


def outside_health_limit(check):
    """Seconds a slot without Docker health may take to answer its probe, or None (no limit but
    the wait's own): Docker's rule for a health check, start_period then `retries` failures
    `interval` apart, with the stack probing far more often so a healthy slot is seen at once."""
    if not check:
        return None
    return float(check["start_period"]) + float(check["interval"]) * int(check["retries"])


class ConvergeError(Exception):
    """A converge that cannot go on; the message says what failed and what to look at."""


class ActionLog(object):
    """Everything a converge did that takes time, in order, with how long it took."""

    NOT_RUN = NOT_RUN  # planned_lines() (_status.py) finds check mode's plan by it

    def __init__(self):
        self.actions = []

    @contextlib.contextmanager
    def action(self, step, name, detail=""):
        record = {"step": step, "action": name, "seconds": 0.0, "detail": detail}
        begun = time.monotonic()
        try:
            yield record
        finally:
            record["seconds"] = round(time.monotonic() - begun, 3)
            self.actions.append(record)

    def add(self, step, name, seconds, detail):
        self.actions.append({"step": step, "action": name, "seconds": seconds, "detail": detail})

    def not_run(self, step, name, detail):
        self.add(step, name, 0.0, detail + self.NOT_RUN)


def default_atomic_write(path, content, mode):
    """Write path atomically: a synced temporary file in the same directory, renamed over it."""
    write_atomic(path, content.encode("utf-8"), mode)


class StackHost(object):
    """The real host. `options` holds the module's parameters that shape the work."""

    def __init__(self, engine, project, options, log=None, atomic_write=default_atomic_write, http_get=get_text):
        self.engine = engine
        self.http = http_get
        self.project = project
        self.options = options
        self.log = log or ActionLog()
        self.atomic_write = atomic_write
        self.admin_url = options["admin_url"].rstrip("/")
        self.prefix = options["slot_prefix"]
        self.reloaded_at = None  # time.monotonic() of this run's last reload signal
        self.reload_planned = False
        # The containers the next step starts from, when already known (see settle()).
        self.known_ps = None

    # -- files ------------------------------------------------------------------------------------

    def read(self, relpath):
        """(content or None, mode or None) of a project file."""
        path = os.path.join(self.project, relpath)
        try:
            with open(path, "rb") as handle:
                content = handle.read().decode("utf-8", "replace")
            mode = os.stat(path).st_mode & 0o7777
        except IsADirectoryError:
            raise PlanError("%s is a directory; it must be a file" % path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise PlanError("cannot read %s: %s" % (path, exc.strerror or exc))
            return None, None
        return content, mode

    def write(self, number, changes):
        with self.log.action(number, "write", ", ".join(change.relpath for change in changes)) as record:
            if not os.path.isdir(self.project):
                self.make_dirs(self.project)
            # Before compose can make it as root: nginx writes the edge log there (_edge.py).
            problem = ensure_edge_directory(self.project)
            if problem:
                record["detail"] += "; " + problem
            directories = set()
            for change in changes:
                path = os.path.join(self.project, change.relpath)
                self.make_dirs(os.path.dirname(path))
                if change.content_changed:
                    self.atomic_write(path, change.after, change.mode)
                    directories.add(os.path.dirname(path))
                else:
                    os.chmod(path, change.mode)
            for directory in sorted(directories):
                fsync_directory(directory)

    def restore(self, number, changes):
        """Put back the files a step wrote before it failed (the step's `before` contents; a file
        that did not exist is removed), state.json last, as write() orders them."""
        with self.log.action(number, "restore", ", ".join(change.relpath for change in changes)):
            directories = set()
            for change in changes:
                path = os.path.join(self.project, change.relpath)
                if change.before is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                elif change.content_changed:
                    self.atomic_write(path, change.before, change.mode_before if change.mode_before is not None
                                      else change.mode)
                elif change.mode_before is not None:
                    os.chmod(path, change.mode_before)
                directories.add(os.path.dirname(path))
            for directory in sorted(directories):
                if os.path.isdir(directory):
                    fsync_directory(directory)

    def make_dirs(self, directory):
        missing = []
        while not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for path in reversed(missing):
            os.mkdir(path)
            os.chmod(path, PROJECT_DIR_MODE if path == self.project else PARENT_DIR_MODE)

    @contextlib.contextmanager
    def scratch_file(self, content, mode=0o644):
        handle, path = tempfile.mkstemp(prefix="swiftdeploy-converge.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(content.encode("utf-8"))
                os.fchmod(out.fileno(), mode)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # -- compose ----------------------------------------------------------------------------------

    def ps(self, number):
        """The project's containers; what an earlier step already knows costs nothing."""
        if self.known_ps is not None:
            entries, self.known_ps = self.known_ps, None
            return entries
        with self.log.action(number, "compose ps") as record:
            entries = self.engine.ps(self.project)
            record["detail"] = describe_ps(entries)
        return entries

    def services(self, number, content):
        """The service names of a compose file's text."""
        services = compose_services(content)
        if services is None:
            with self.log.action(number, "compose services", "the compose file is not block YAML; asked compose"):
                with self.scratch_file(content) as path:
                    services = self.engine.compose_services(self.project, path)
        return services

    def settle(self, entries_after, expected, nginx_before):
        """After a step: remember the containers it left when that is known without asking
        compose (entries_after; None after a whole `compose up`)."""
        self.known_ps = entries_after

    def validate(self, composes, confs, slots):
        """Test every changed compose file and nginx.conf before anything lands.

        The compose files are tested side by side, next to the `docker compose ps` that the first
        step needs anyway: it names the running nginx, in which the nginx.conf files are then
        tested with docker exec (about 0.1 s) instead of in a fresh container (about 0.5 s, more
        on a busy host). A refusal there is confirmed in a fresh container, which alone decides.
        composes are [(step number, content)], confs [(step number, content, relative path)]."""
        ask_ps = bool(confs) and os.path.isfile(os.path.join(self.project, "docker-compose.yml"))
        with contextlib.ExitStack() as stack:
            checks = [("compose", number, self.engine.compose_config_argv(
                self.project, stack.enter_context(self.scratch_file(content)))) for number, content in composes]
            if ask_ps:
                checks.append(("ps", 1, self.engine.ps_argv(self.project)))
            results = self.engine.side_by_side([argv for _kind, _number, argv in checks]) if checks else []
        entries = []
        for (kind, number, argv), (rc, out, err, seconds) in zip(checks, results):
            if kind == "compose":
                self.log.add(number, "validate compose file", seconds, "docker compose config")
                if rc != 0:
                    message = command_failure(argv, "docker compose config", rc, out, err)
                    raise ConvergeError("step %d: docker-compose.yml is refused by docker compose, nothing was "
                                        "written: %s" % (number, message))
            else:
                if rc != 0:
                    raise ConvergeError(command_failure(argv, "docker compose ps", rc, out, err))
                entries = self.engine.read_ps(out)
                self.log.add(number, "compose ps", seconds, describe_ps(entries))
                self.known_ps = entries
        if confs:
            self.test_nginx(confs, slots, entries)

    def test_nginx(self, confs, slots, entries):
        running = running_services(entries)
        # Each file in the running container that loads it: edge.conf in the edge when it runs
        # (docs/keepalive.md), the rest in the routing nginx; both side by side.
        groups = {}
        for conf in confs:
            edge = posixpath.basename(conf[2]) == EDGE_CONF and EDGE_SERVICE in running
            groups.setdefault(EDGE_SERVICE if edge else "nginx", []).append(conf)
        containers = dict((service, running[service].get("ID") or running[service].get("Name"))
                          for service in groups if service in running)
        if len(containers) == len(groups) and all(containers.values()):
            order = sorted(groups)
            results = self.engine.side_by_side([nginx_exec_test_argv(
                self.engine.docker, containers[service], self.prefix, slots,
                [content for _n, content, _path in groups[service]]) for service in order])
            passed = True
            for service, (rc, out, err, seconds) in zip(order, results):
                outcome = "passed" if rc == 0 else "refused, so tested again in a fresh container" if "refused:" in err \
                    else "could not run (rc=%d), so tested in a fresh container" % rc
                self.log.add(groups[service][0][0], "validate nginx.conf", seconds, "nginx -t in the running %s %s "
                             "(step %s): %s" % (service, running[service].get("Name") or containers[service],
                                                step_numbers(groups[service]), outcome))
                passed = passed and rc == 0
            if passed:
                return
        image = self.options["nginx_image"]
        steps = step_numbers(confs)
        with contextlib.ExitStack() as stack:
            paths = [stack.enter_context(self.scratch_file(content)) for _number, content, _path in confs]
            argv = nginx_test_argv(self.engine.docker, image, self.options["nginx_conf_dir"], self.prefix, slots, paths,
                                   self.conf_subdirs())
            ((rc, out, err, seconds),) = self.engine.side_by_side([argv])
        self.log.add(confs[0][0], "validate nginx.conf", seconds, "nginx -t in %s (step %s)" % (image, steps))
        if rc != 0:
            text = (err or out or "").strip() or "rc=%d, no output" % rc
            # The file nginx refused, by its place in the test: nginx.conf or edge.conf (nginx.edge).
            # nginx names the test's copies (test-<i>.conf): named back as the files they stand for.
            number, _content, relpath = confs[0]
            for index, (step_number, _content, path) in enumerate(confs, 1):
                if "refused: test-%d.conf" % index in text:
                    number, relpath = step_number, path
                text = text.replace("test-%d.conf" % index, os.path.basename(path))
            raise ConvergeError("step %d: %s is refused by nginx -t in %s, nothing was written: %s"
                                % (number, relpath, image, text))

    def conf_subdirs(self):
        """The directories beside nginx.conf in the project (the TLS pairs), which a fresh
        container's nginx -t needs as the stack's nginx sees them."""
        base = os.path.join(self.project, os.path.dirname(self.options["nginx_conf"]))
        try:
            names = os.listdir(base)
        except OSError:
            return []
        return [os.path.join(base, name) for name in sorted(names) if os.path.isdir(os.path.join(base, name))]

    def compose_up(self, number, why):
        """Bring the whole project up and wait for it; returns what compose printed."""
        with self.log.action(number, "compose up", why), \
                progress.waiting("the stack's containers to start and be healthy", self.options["wait_timeout"]):
            try:
                return self.engine.compose_up(self.project, wait_timeout=self.options["wait_timeout"])
            except EngineError as exc:
                if "has no healthcheck configured" not in str(exc):
                    raise
                raise ConvergeError("%s\nThe app image has no HEALTHCHECK: set services.healthcheck.docker: false in "
                                    "the manifest, so that the stack checks services.healthcheck.path from outside "
                                    "(docs/manifest.md, \"Health of your own service\")" % exc)

    # -- app slots --------------------------------------------------------------------------------

    def start_slots(self, number, services):
        """Start the slots' services and wait until each is healthy; {service: container name}."""
        detail = ", ".join(services)
        with self.log.action(number, "start slots", detail), progress.waiting("%s to be created and started" % detail):
            out = self.engine.compose_up(self.project, services)
        return self.wait_slots(number, services, out)

    def wait_slots(self, number, services, up_output):
        """Wait until the containers of `services` answer their health check.

        Docker runs the image's HEALTHCHECK first one `interval` after the start, so `compose up
        --wait` costs at least a second per start. The module runs on the Docker host, which
        reaches containers on a bridge network at their addresses: it asks each slot's health URL
        itself every HEALTH_PROBE_POLL seconds and takes whichever says healthy first, the app or
        Docker. A container that exits or that Docker marks unhealthy fails the step.

        An image without a HEALTHCHECK (a team's own service, often without curl or wget inside)
        has no Docker health: with the `slot_healthcheck` option such a slot is healthy only once
        the probe answers, and fails when it has not answered `start_period` + `retries` x
        `interval` seconds after it started (see outside_health_limit).
        """
        with self.log.action(number, "wait slots", ", ".join(services)) as record, \
                progress.waiting("%s to be healthy" % ", ".join(services), self.options["wait_timeout"]):
            # `up` names the containers it touched ("Container <project>-app-green-1  Started");
            # compose ps is asked only when that cannot be matched to every service.
            touched = containers_started(up_output)
            names = {}
            for service in services:
                matches = [name for name in touched if "-%s-" % service in name]
                if len(matches) == 1:
                    names[service] = matches[0]
            if len(names) < len(services):
                names = dict((entry.get("Service"), entry.get("Name") or entry.get("ID"))
                             for entry in self.engine.ps(self.project) if entry.get("Service") in services)
            missing = [service for service in services if not names.get(service)]
            if missing:
                raise ConvergeError("step %d: docker compose up created no container for %s; look at "
                                    "`docker compose --project-directory %s ps --all`"
                                    % (number, ", ".join(missing), self.project))
            started = time.monotonic()
            deadline = started + self.options["wait_timeout"]
            limit = outside_health_limit(self.options.get("slot_healthcheck"))
            pending, answered, problems = dict(names), {}, {}
            while pending:
                for service, container in sorted(pending.items()):
                    inspected = self.engine.inspect(container)
                    how = self.slot_healthy(inspected, problems, service)
                    if how:
                        answered[service] = how
                        del pending[service]
                        share_logs_volume(inspected)
                if not pending:
                    break
                late = sorted(service for service in pending if service in problems)
                if limit is not None and late and time.monotonic() - started >= limit:
                    check = self.options["slot_healthcheck"]
                    raise ConvergeError(
                        "step %d: %s did not answer GET %s with a 2xx status within %g s (services.healthcheck: "
                        "start_period %g s + retries %d x interval %g s; last: %s); the image has no HEALTHCHECK, so "
                        "the stack asks that path from the Docker host. Look at `docker compose --project-directory "
                        "%s logs %s`, and check services.port and services.healthcheck.path"
                        % (number, ", ".join(late), self.options["slot_health_path"], limit, check["start_period"],
                           check["retries"], check["interval"], "; ".join(problems[service] for service in late),
                           self.project, " ".join(late)))
                if time.monotonic() >= deadline:
                    waiting = sorted(pending)
                    raise ConvergeError(
                        "step %d: %s did not become healthy within %d s; look at `docker compose "
                        "--project-directory %s logs %s` and raise swiftdeploy_deploy_health_timeout if "
                        "the app needs longer to start"
                        % (number, ", ".join(waiting), self.options["wait_timeout"], self.project, " ".join(waiting)))
                time.sleep(HEALTH_PROBE_POLL)
            record["detail"] = ", ".join("%s healthy (%s)" % item for item in sorted(answered.items()))
        return names

    def slot_healthy(self, inspected, problems=None, key=None):
        """'docker' or 'probe' when the container is healthy, None while it is starting. A
        container without Docker health leaves in problems[key] why its probe failed."""
        state = inspected.get("State") or {}
        networks = (inspected.get("NetworkSettings") or {}).get("Networks") or {}
        health = (state.get("Health") or {}).get("Status")
        if state.get("Status") in ("exited", "dead") or health == "unhealthy":
            raise ConvergeError("an app slot container is %s (exit code %s, health %s); look at its logs with "
                                "`docker compose --project-directory %s logs`"
                                % (state.get("Status"), state.get("ExitCode"), health or "none", self.project))
        check = self.options.get("slot_healthcheck")
        port = self.options["slot_port"]
        addresses = [(network or {}).get("IPAddress") for network in networks.values()]
        addresses = [address for address in addresses if address]
        # Running counts as healthy only when nothing better can be asked: no health check
        # asked for, or no address to probe.
        if health == "healthy" or (health is None and state.get("Running") and not (check and port and addresses)):
            return "docker"
        if not port or not state.get("Running"):
            return None
        timeout = min(check["timeout"], HEALTH_PROBE_TIMEOUT * 4) if check else HEALTH_PROBE_TIMEOUT
        for address in addresses:
            try:
                self.http("http://%s:%d%s" % (address, port, self.options["slot_health_path"]), timeout,
                          service="the app slot")
                return "probe"
            except HttpError as exc:
                if health is None and problems is not None:
                    problems[key] = exc.message
                continue
        return None

    def switch_modes(self, number, wanted, running, nginx_running):
        """SIGHUP to the slots' containers, then wait until each one's /healthz reports the mode
        its file now names. wanted: {slot: mode}."""
        detail = ", ".join("%s to %s" % item for item in sorted(wanted.items()))
        with self.log.action(number, "switch mode", detail) as record, \
                progress.waiting("%s to switch mode" % ", ".join(sorted(wanted)), MODE_TIMEOUT):
            for slot in sorted(wanted):
                entry = running[self.prefix + slot]
                self.engine.kill(entry.get("ID") or entry.get("Name"), "HUP")
            deadline = time.monotonic() + MODE_TIMEOUT
            pending, seen = dict(wanted), {}
            while pending:
                for slot, mode in sorted(pending.items()):
                    seen[slot] = self.slot_mode(slot, running[self.prefix + slot], nginx_running)
                    if seen[slot] == mode:
                        del pending[slot]
                if not pending:
                    break
                if time.monotonic() >= deadline:
                    raise ConvergeError(
                        "step %d: %s did not switch mode within %g s (its /healthz says %s); the app must read "
                        "the file named by its MODE_FILE again on SIGHUP; look at `docker compose "
                        "--project-directory %s logs %s`"
                        % (number, ", ".join(sorted(pending)), MODE_TIMEOUT,
                           ", ".join("%s: %s" % (slot, seen.get(slot)) for slot in sorted(pending)),
                           self.project, " ".join(self.prefix + slot for slot in sorted(pending))))
                time.sleep(GENERATION_POLL)
            record["detail"] = detail + ", confirmed by /healthz"

    def slots_in_another_mode(self, state, running, nginx_running, skip):
        """Running slots (not in skip) whose /healthz reports a mode other than the state's. A
        slot that does not answer is not counted: the health checks elsewhere are for that."""
        slots = []
        for slot, spec in sorted(state["slots"].items()):
            entry = running.get(self.prefix + slot)
            if slot in skip or entry is None or not isinstance(spec, dict) or spec.get("mode") not in MODES:
                continue
            seen = self.slot_mode(slot, entry, nginx_running)
            if seen in MODES and seen != spec["mode"]:
                slots.append(slot)
        return slots

    def slot_mode(self, slot, entry, nginx_running):
        """The mode a slot's /healthz reports, or a short text saying why there is none."""
        urls = []
        if nginx_running:
            urls.append(self.admin_url + SLOT_HEALTH_PATH % slot)
        elif self.options["slot_port"]:
            inspected = self.engine.inspect(entry.get("ID") or entry.get("Name"))
            networks = (inspected.get("NetworkSettings") or {}).get("Networks") or {}
            urls += ["http://%s:%d%s" % (network["IPAddress"], self.options["slot_port"], self.options["slot_health_path"])
                     for network in networks.values() if (network or {}).get("IPAddress")]
        if not urls:
            return "no way to ask it (nginx is not running and slot_port is not set)"
        problem = "no answer"
        for url in urls:
            try:
                body = json.loads(self.http(url, HEALTH_PROBE_TIMEOUT, service="the app slot"))
            except HttpError as exc:
                problem = exc.message
                continue
            except ValueError:
                problem = "not JSON"
                continue
            return body.get("mode") if isinstance(body, dict) else "not a JSON object"
        return problem

    # -- nginx ------------------------------------------------------------------------------------

    def served_generation(self, timeout):
        try:
            return self.http(self.admin_url + GENERATION_PATH, timeout, service="nginx's admin listener"), None
        except HttpError as exc:
            return None, exc.message

    def check_generation(self, number, generation):
        """The generation nginx serves now (one request), or None."""
        with self.log.action(number, "check generation") as record:
            served, error = self.served_generation(2.0)
            record["detail"] = "serves %s" % served if error is None else error
        return served

    def reload(self, number, nginx, generation, why):
        """SIGHUP to nginx, then wait until it serves `generation`."""
        self.reload_planned = True
        target = nginx.get("ID") or nginx.get("Name")
        with self.log.action(number, "reload nginx", "%s: SIGHUP to %s" % (why, nginx.get("Name") or target)):
            self.engine.kill(target, "HUP")
        self.reloaded_at = time.monotonic()
        self.wait_generation(number, generation, "after the reload")

    def wait_generation(self, number, generation, when):
        with self.log.action(number, "wait generation") as record, \
                progress.waiting("nginx to serve generation %s" % generation, GENERATION_TIMEOUT):
            deadline = time.monotonic() + GENERATION_TIMEOUT
            while True:
                served, error = self.served_generation(max(0.2, min(1.0, deadline - time.monotonic())))
                if generation_matches(served, generation):
                    record["detail"] = "nginx serves generation %s" % generation
                    return
                if time.monotonic() >= deadline:
                    seen = ("it still serves generation %s" % served.strip()) if served is not None else \
                        "last error: %s" % error
                    raise ConvergeError(
                        "step %d: nginx did not serve generation %s within %g s %s (%s); look at "
                        "`docker compose --project-directory %s logs nginx` for a configuration it refused"
                        % (number, generation, GENERATION_TIMEOUT, when, seen, self.project))
                time.sleep(GENERATION_POLL)

    # -- the edge (nginx.edge, docs/keepalive.md) ----------------------------------------------------

    def edge_relpath(self):
        return posixpath.join(posixpath.dirname(self.options["nginx_conf"]), EDGE_CONF)

    def edge_workers(self, number, edge, test_conf=None):
        """(master PID, its workers' PIDs) of the edge's nginx, read inside its container; with
        test_conf, `nginx -t` on that file there first (ConvergeError naming it when refused)."""
        name = edge.get("Name") or edge.get("ID")
        argv = edge_workers_argv(self.engine.docker, edge.get("ID") or name, test_conf)
        ((rc, out, err, _seconds),) = self.engine.side_by_side([argv])
        if rc == 3 and test_conf:
            raise ConvergeError(
                "step %d: %s is refused by nginx -t in the running edge %s, so the edge was not reloaded and "
                "serves its previous listener: %s"
                % (number, self.edge_relpath(), name, (err or out).strip() or "no output"))
        if rc != 0:
            raise ConvergeError("step %d: cannot read the edge's nginx processes: %s"
                                % (number, command_failure(argv, "docker exec", rc, out, err)))
        try:
            return parse_edge_workers(out)
        except ValueError as exc:
            raise ConvergeError("step %d: cannot read the edge's nginx processes in %s: %s" % (number, name, exc))

    def reload_edge(self, number, edge, why):
        """Load a changed edge.conf in the running edge, in place: nginx -t on the written file
        inside it, SIGHUP to it (as the routing nginx is reloaded), then wait until its master runs
        workers it did not run before, which it forks only once the file is loaded. The edge keeps
        its listening sockets, so no connection is refused; its old workers finish their requests."""
        target = edge.get("ID") or edge.get("Name")
        name = edge.get("Name") or target
        relpath = self.edge_relpath()
        conf = posixpath.join(self.options["nginx_conf_dir"], EDGE_CONF)
        with self.log.action(number, "test edge.conf", "nginx -t on %s in the running edge %s" % (conf, name)):
            before = self.edge_workers(number, edge, conf)
        with self.log.action(number, "reload edge", "%s: SIGHUP to %s" % (why, name)):
            self.engine.kill(target, "HUP")
        with self.log.action(number, "wait edge") as record, \
                progress.waiting("the edge to load %s" % relpath, EDGE_RELOAD_TIMEOUT):
            deadline = time.monotonic() + EDGE_RELOAD_TIMEOUT
            while True:
                fresh = new_workers(before, self.edge_workers(number, edge))
                if fresh:
                    record["detail"] = "the edge runs %s new worker(s): %s loaded" % (len(fresh), relpath)
                    return
                if time.monotonic() >= deadline:
                    _rc, out, err = self.engine.logs([target], FAILED_LOG_LINES).get(target, (0, "", ""))
                    lines = [line[:200] for line in (out + err).splitlines() if line.strip()][-5:]
                    raise ConvergeError(
                        "step %d: the edge %s did not load the new %s within %g s: its nginx started no new "
                        "worker after SIGHUP, so it still serves its previous listener (last log lines: %s); "
                        "look at `docker compose --project-directory %s logs %s`"
                        % (number, name, relpath, EDGE_RELOAD_TIMEOUT, " | ".join(lines) or "none", self.project,
                           EDGE_SERVICE))
                time.sleep(EDGE_POLL)

    # -- leaving slots and the end ----------------------------------------------------------------

    def drain(self, number, seconds, detail):
        with self.log.action(number, "drain", "%g s for requests already sent to %s" % (seconds, detail)), \
                progress.waiting("the requests already sent to %s to finish" % detail, seconds):
            time.sleep(seconds)

    def remove(self, number, names, detail):
        """Stop (SIGTERM, then up to STOP_SECONDS) and remove containers by name, no sooner than
        RETIRE_SECONDS after this run's last reload."""
        retire = RETIRE_SECONDS - (time.monotonic() - self.reloaded_at) if self.reloaded_at is not None else 0
        if retire > 0:
            with self.log.action(number, "retire old workers", "%.2f s more for nginx's old workers to stop accepting"
                                 % retire):
                time.sleep(retire)
        with self.log.action(number, "remove slots", detail), \
                progress.waiting("%s to stop" % detail, STOP_SECONDS * max(1, len(names))):
            for name in names:
                self.engine.stop(name, STOP_SECONDS)
                self.engine.remove(name)

    def remove_services(self, number, services, tail=FAILED_LOG_LINES):
        """Stop and remove the containers of services right away (nothing routes to them); their
        last `tail` log lines, read first, as text ("" when none was removed)."""
        names = sorted(entry["Name"] for entry in self.engine.ps(self.project)
                       if entry.get("Service") in services and entry.get("Name"))
        if not names:
            return ""
        shown = []
        for name, (_rc, out, err) in sorted(self.engine.logs(names, tail).items()):
            lines = [line[:200] for line in (out + err).splitlines() if line.strip()][-tail:]
            shown.append("Last log lines of %s:%s" % (name, "".join("\n  " + line for line in lines) or " none"))
        with self.log.action(number, "remove failed slots", ", ".join(services)):
            for name in names:
                self.engine.stop(name, STOP_SECONDS)
                self.engine.remove(name)
        return "\n".join(shown)

    def wait_health(self, url, timeout):
        with self.log.action(None, "wait health", url) as record, progress.waiting("%s to answer" % url, timeout):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self.http(url, max(0.2, min(5.0, deadline - time.monotonic())), service="the stack")
                    record["detail"] = "%s answers" % url
                    return
                except HttpError as exc:
                    if time.monotonic() >= deadline:
                        raise ConvergeError("%s did not answer with a 2xx status within %g s: %s"
                                            % (url, timeout, exc.message))
                time.sleep(HEALTH_POLL)


class DryRunStackHost(StackHost):
    """Check mode: reads and tests are real; every change and wait is recorded as not run, and
    later steps see the containers the earlier ones would have left."""

    def write(self, number, changes):
        self.log.not_run(number, "write", ", ".join(change.relpath for change in changes))

    def restore(self, number, changes):
        self.log.not_run(number, "restore", ", ".join(change.relpath for change in changes))

    def remove_services(self, number, services, tail=None):
        self.log.not_run(number, "remove failed slots", ", ".join(services))
        return ""

    def ps(self, number):
        if self.engine.simulating:
            return self.engine.ps(self.project)
        return super(DryRunStackHost, self).ps(number)

    def settle(self, entries_after, expected, nginx_before):
        nginx_before = nginx_before or {}
        self.engine.simulate([{"Service": service, "State": "running",
                               "Name": nginx_before.get("Name", "") if service == "nginx" else service,
                               "ID": nginx_before.get("ID", "") if service == "nginx" else "",
                               "simulated": service != "nginx"}
                              for service in expected])

    def compose_up(self, number, why):
        self.log.not_run(number, "compose up", why)
        return ""

    def start_slots(self, number, services):
        self.log.not_run(number, "start slots", ", ".join(services))
        self.log.not_run(number, "wait slots", ", ".join(services))
        return {}

    def switch_modes(self, number, wanted, running, nginx_running):
        self.log.not_run(number, "switch mode", ", ".join("%s to %s" % item for item in sorted(wanted.items())))

    def slots_in_another_mode(self, state, running, nginx_running, skip):
        return []

    def check_generation(self, number, generation):
        # An earlier step's reload would have made nginx serve what it was asked for.
        if self.reload_planned:
            return str(generation)
        return super(DryRunStackHost, self).check_generation(number, generation)

    def reload(self, number, nginx, generation, why):
        self.reload_planned = True
        self.log.not_run(number, "reload nginx", why)

    def reload_edge(self, number, edge, why):
        self.log.not_run(number, "reload edge", "%s: SIGHUP to %s after nginx -t, confirmed by its new workers"
                         % (why, edge.get("Name") or edge.get("ID")))

    def wait_generation(self, number, generation, when):
        self.log.not_run(number, "wait generation", "nginx serves generation %s %s" % (generation, when))

    def drain(self, number, seconds, detail):
        self.log.not_run(number, "drain", "%g s before removing %s" % (seconds, detail))

    def remove(self, number, names, detail):
        self.log.not_run(number, "remove slots", detail)

    def wait_health(self, url, timeout):
        self.log.not_run(None, "wait health", url)


def step_numbers(confs):
    """"1, 2": the steps of [(step number, content, path)], in order."""
    return ", ".join(sorted(set(str(number) for number, _content, _path in confs), key=int))


def describe_ps(entries):
    return ", ".join("%s %s" % (entry.get("Service"), entry.get("State")) for entry in entries) or "no containers"
