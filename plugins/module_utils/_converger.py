# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The order of a converge: which step of a stack's change comes when.

This is a private module_utils file: its API may change without notice. No Ansible imports.

`Converger` plans every wanted state (_converge.py's pure rules), has the host test every
changed file before anything lands, and then brings the project through the states one by one
over a `StackHost` (_stack_host.py): files written, new slots started and healthy, mode switches
in place, the whole project up when needed, nginx reloaded and confirmed, leaving slots removed
last. It never touches Docker, HTTP or the disk itself and never asks whether it runs in check
mode: a DryRunStackHost plays that, and a fake host in the unit tests checks the order.
docs/converge.md says why each step comes where it does.
"""

from __future__ import annotations

import os
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils._converge import (
    DEFAULT_FILE_MODE,
    EDGE_CONF,
    EDGE_SERVICE,
    STATE_FILE,
    PlanError,
    check_files,
    check_state,
    compose_up_needed,
    orphans,
    plan_step,
    running_services,
    slot_services,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, containers_started
from ansible_collections.swiftdeploy.stack.plugins.module_utils._stack_host import ConvergeError

COMPOSE_FILE = "docker-compose.yml"
NGINX_SERVICE = "nginx"


class DiffTracker(object):
    """Ansible diffs of the changed files, one per file and step."""

    def __init__(self, enabled, many_steps):
        self.enabled = enabled
        self.many_steps = many_steps
        self.diffs = []

    def add(self, step, change):
        if not self.enabled:
            return
        suffix = " (step %d)" % step if self.many_steps else ""
        before_mode = after_mode = ""
        if change.mode_before is not None and change.mode_before != change.mode:
            before_mode, after_mode = " (mode %04o)" % change.mode_before, " (mode %04o)" % change.mode
        self.diffs.append({
            "before": change.before if change.before is not None else "",
            "after": change.after,
            "before_header": "%s%s%s" % (change.relpath, before_mode if change.before is not None else " (absent)", suffix),
            "after_header": "%s%s%s" % (change.relpath, after_mode, suffix),
        })


class Converger(object):
    """Bring a project through `steps` ([{files, state}]) over `host`.

    `options`: nginx_conf, slot_prefix, validate_nginx, drain_seconds, health_url,
    health_timeout, mode_switch (the module's parameters of the same names)."""

    def __init__(self, host, steps, options, diff=False):
        self.host = host
        self.steps = steps
        self.options = options
        self.prefix = options["slot_prefix"]
        self.started = time.monotonic()
        self.step_reports = []
        self.changed = False
        self.files_changed = []
        self.diff = DiffTracker(diff, len(steps) > 1)
        self.undo = None  # (files written, services started) of the step under way, until nginx routes
        # The project as the run has left it so far (in check mode: would have), by relpath:
        # (content or None, mode or None). Later steps are planned against it.
        self.view = {}

    @property
    def actions(self):
        return self.host.log.actions

    def current(self, relpath):
        if relpath not in self.view:
            self.view[relpath] = self.host.read(relpath)
        return self.view[relpath]

    def converge(self):
        project = self.host.project
        if os.path.exists(project) and not os.path.isdir(project):
            raise ConvergeError("project_path: %s exists and is not a directory" % project)
        planned = []
        for number, step in enumerate(self.steps, 1):
            with self.host.log.action(number, "plan") as record:
                planned.append(self.plan(number, step, record))
        self.validate(planned)
        for number, (step, files, plan, compose) in enumerate(planned, 1):
            self.undo = None
            try:
                self.apply(number, step, files, plan, compose)
            except ConvergeError as exc:
                if self.undo is None:
                    raise
                raise ConvergeError("%s\n%s" % (exc, self.undo_step(number, *self.undo)))
        if self.options["health_url"]:
            self.host.wait_health(self.options["health_url"], self.options["health_timeout"])
        final = self.steps[-1]["state"]
        return {
            "changed": self.changed,
            "project_path": project,
            "files_changed": self.files_changed,
            "generation": final["generation"],
            "state": final,
            "steps": self.step_reports,
            "actions": self.actions,
            "seconds": round(time.monotonic() - self.started, 3),
        }

    def plan(self, number, step, record):
        where = "step %d" % number
        files = check_files(step["files"], where + ": files", self.options.get("default_mode", DEFAULT_FILE_MODE))
        check_state(step["state"], where + ": state")
        current = dict((relpath, self.current(relpath)) for relpath in list(files) + [STATE_FILE])
        try:
            plan = plan_step(current, files, step["state"], self.options["nginx_conf"], COMPOSE_FILE, self.prefix)
        except PlanError as exc:
            raise PlanError("%s: %s" % (where, exc))
        compose = files[COMPOSE_FILE]["content"] if COMPOSE_FILE in files else self.current(COMPOSE_FILE)[0]
        if compose is None:
            raise PlanError("%s: %s has no %s and the step's files do not include one"
                            % (where, self.host.project, COMPOSE_FILE))
        for change in plan.changes:
            self.view[change.relpath] = (change.after, change.mode)
        parts = ["%s differ" % ", ".join(plan.files_changed) if plan.changes else "files and state match"]
        switched = plan.mode_switched
        # Without mode switching such a slot only changes how nginx routes to it.
        in_place = "switching mode" if self.options.get("mode_switch", "signal") != "none" else "rerouted in place"
        for label, slots in (("added", plan.added), ("changed", [slot for slot in plan.changed if slot not in switched]),
                             (in_place, switched), ("removed", plan.removed)):
            if slots:
                parts.append("slots %s: %s" % (label, ", ".join(slots)))
        record["detail"] = "; ".join(parts)
        return step, files, plan, compose

    def validate(self, planned):
        """Every distinct changed nginx.conf and compose file of every step, tested before
        anything lands."""
        tested = set()
        confs, composes, slots = [], [], set()
        conf = self.options["nginx_conf"]
        for number, (step, files, plan, _compose) in enumerate(planned, 1):
            edge = os.path.join(os.path.dirname(conf), EDGE_CONF)
            for path, changed in ((conf, plan.nginx_conf_changed), (edge, edge in files and plan.content_changed(edge))):
                if changed and self.options["validate_nginx"] and ("nginx", files[path]["content"]) not in tested:
                    tested.add(("nginx", files[path]["content"]))
                    confs.append((number, files[path]["content"], path))
                    slots.update(step["state"]["slots"])
            if plan.compose_changed and ("compose", files[COMPOSE_FILE]["content"]) not in tested:
                tested.add(("compose", files[COMPOSE_FILE]["content"]))
                composes.append((number, files[COMPOSE_FILE]["content"]))
        if confs or composes:
            self.host.validate(composes, confs, slots)

    def note_change(self, report):
        report["changed"] = True
        self.changed = True

    def apply(self, number, step, files, plan, compose_text):
        host = self.host
        report = {"step": number, "changed": False, "files_changed": plan.files_changed,
                  "slots_started": [], "slots_switched": [], "slots_removed": [], "nginx": "unchanged",
                  "edge": "unchanged"}
        self.step_reports.append(report)
        state = step["state"]
        if plan.changes:
            for change in plan.changes:
                self.diff.add(number, change)
                if change.relpath not in self.files_changed:
                    self.files_changed.append(change.relpath)
            host.write(number, plan.changes)
            self.note_change(report)

        expected = host.services(number, compose_text)
        entries = host.ps(number)
        running = running_services(entries)
        nginx_before = running.get(NGINX_SERVICE)

        # New and changed slots first, and any not running, so that they are healthy before
        # nginx routes to them and before an nginx that starts (and resolves them) needs them.
        to_start = sorted(set(plan.slots_to_start)
                          | set(slot for slot in state["slots"] if self.prefix + slot not in running))
        started = slot_services(self.prefix, to_start)
        # The containers after this step, while it is known without asking compose again.
        after = [entry for entry in entries if entry.get("Service") not in started]
        if started:
            # Nothing routes to a slot before nginx is told: one that never gets healthy is
            # removed and the step's files put back, so a restarted nginx or a later run never
            # picks up a release that failed its health check.
            self.undo = (plan.changes, [service for service in started if service not in running])
            names = host.start_slots(number, started)
            self.undo = None
            after += [{"Service": service, "State": "running", "Name": names.get(service, ""), "ID": ""}
                      for service in started]
            report["slots_started"] = to_start
            self.note_change(report)

        # A running slot that only changes mode (a canary that passed becomes the stable
        # release) keeps its process: it reads its mode file, just written, again. So does a
        # running slot whose state already names its mode but which reports another (a run that
        # failed or died between writing the mode file and confirming the switch).
        # An app without modes (mode_switch none) is neither signalled nor asked: only nginx's
        # routing tells its slots apart, and the slot keeps its process all the same.
        switch = []
        if self.options.get("mode_switch", "signal") != "none":
            switch = [slot for slot in plan.mode_switched if self.prefix + slot in running]
            switch += host.slots_in_another_mode(state, running, nginx_before is not None, set(switch) | set(to_start))
        if switch:
            host.switch_modes(number, dict((slot, state["slots"][slot].get("mode")) for slot in switch), running,
                              nginx_before is not None)
            report["slots_switched"] = switch
            self.note_change(report)

        nginx_fresh = NGINX_SERVICE in expected and nginx_before is None
        compose_change = plan.change(COMPOSE_FILE)
        others_down = [service for service in expected if service not in running and service not in started]
        compose_up = compose_change is not None and compose_up_needed(compose_change.before, compose_change.after,
                                                                      started)
        # nginx.edge turned off: the edge holds the public port(s) the routing nginx is about to
        # publish again, so it goes first (the port is closed until nginx is up: docs/keepalive.md).
        edge_leaving = EDGE_SERVICE not in expected and EDGE_SERVICE in running and (others_down or compose_up)
        if edge_leaving:
            self.remove(number, [EDGE_SERVICE], entries, drain=False)
            entries = [entry for entry in entries if entry.get("Service") != EDGE_SERVICE]
            report["slots_removed"] = [EDGE_SERVICE]
            self.note_change(report)
        edge_before = running.get(EDGE_SERVICE) if not edge_leaving else None
        if others_down or compose_up:
            out = host.compose_up(number, "not running: %s" % ", ".join(others_down) if others_down
                                  else "compose file changed")
            if nginx_before is not None and nginx_before.get("Name") in containers_started(out):
                nginx_fresh = True
            if edge_before is not None and edge_before.get("Name") in containers_started(out):
                edge_before = None  # recreated or restarted: it read the new edge.conf as it started
            after = None
            self.note_change(report)

        # The edge's listener changed (a new TLS pair, a timeout): loaded in place, never by a new
        # container, so its port never closes (docs/keepalive.md). Before the routing switches: an
        # edge that does not load the file undoes the step (files put back, its new slots removed),
        # so the next run finds the change again instead of an edge on its old listener.
        edge_conf = os.path.join(os.path.dirname(self.options["nginx_conf"]), EDGE_CONF)
        if edge_before is not None and plan.content_changed(edge_conf):
            self.undo = (plan.changes, [service for service in started if service not in running])
            host.reload_edge(number, edge_before, "%s changed" % edge_conf)
            self.undo = None
            report["edge"] = "reloaded"
            self.note_change(report)

        if self.options["nginx_conf"] in files and NGINX_SERVICE in expected:
            report["nginx"] = self.route(number, state["generation"], plan, nginx_before, nginx_fresh)
            if report["nginx"] != "unchanged":
                self.note_change(report)

        # Only after nginx confirmed the new routing: containers of slots that left the state,
        # and of any other service the compose file no longer has.
        leaving = set(slot_services(self.prefix, plan.removed)) | set(orphans(expected, entries))
        leaving = sorted(set(entry.get("Service") for entry in entries) & leaving)
        if leaving:
            self.remove(number, leaving, entries, drain=any(service in running for service in leaving))
            report["slots_removed"] = report["slots_removed"] + leaving
            self.note_change(report)

        host.settle(None if after is None else [entry for entry in after if entry.get("Service") not in leaving],
                    expected, nginx_before)

    def undo_step(self, number, changes, started):
        """Undo a step whose slots failed to start before nginx routed to them; the sentence that
        says so (or why it could not be undone)."""
        undone, logs = [], ""
        try:
            if started:
                logs = self.host.remove_services(number, started)
                if logs:
                    undone.append("removed %s" % ", ".join(started))
            if changes:
                self.host.restore(number, changes)
                undone.append("put back %s" % ", ".join(change.relpath for change in changes))
        except (ConvergeError, EngineError, OSError) as exc:
            return ("Nothing was routed to this step's slots, but undoing the step failed (%s): run deploy.yml "
                    "again, or rollback.yml, once the cause is fixed." % exc)
        if not undone:
            return "Nothing was routed to this step's slots."
        return ("Nothing was routed to this step's slots, so the step was undone (%s): the stack serves "
                "what it served before.%s" % ("; ".join(undone), "\n" + logs if logs else ""))

    def route(self, number, generation, plan, nginx_before, nginx_fresh):
        """Make nginx serve this step's routing; returns reloaded, started or unchanged."""
        if nginx_fresh:
            self.host.wait_generation(number, generation, "nginx started")
            return "started"
        if plan.nginx_conf_changed:
            self.host.reload(number, nginx_before, generation, "configuration changed")
            return "reloaded"
        # Unchanged files, yet nginx may serve an older routing: an earlier run wrote the file
        # and died before its reload. One request tells.
        served = self.host.check_generation(number, generation)
        if served is not None and served.strip() == str(generation):
            return "unchanged"
        self.host.reload(number, nginx_before, generation, "nginx serves generation %s, not %s"
                         % ((served or "").strip() or "?", generation))
        return "reloaded"

    def remove(self, number, services, entries, drain):
        """Stop and remove the containers of services that left, by name: compose no longer knows
        a slot its file dropped, and `up --remove-orphans` would also check every other service
        again (about 0.7 s more here)."""
        detail = ", ".join(services)
        if drain and self.options["drain_seconds"] > 0:
            self.host.drain(number, self.options["drain_seconds"], detail)
        names = sorted(entry["Name"] for entry in entries if entry.get("Service") in services and entry.get("Name"))
        if names:
            self.host.remove(number, names, detail)
