# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Planning one converge of a stack: what differs, which slots start, which go.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports and does no I/O, so the unit tests can drive every rule with tables. The module
swiftdeploy.stack.stack_converge reads the project directory, asks these functions what to do,
and does it.

A converge brings a compose project directory to one wanted state: a set of files (the rendered
nginx.conf and docker-compose.yml) and the live state, written as state.json. The state's
`slots` map names a slot's compose service (`<prefix><slot>`) and what runs in it; a slot whose
entry appears or changes must be started and healthy before nginx routes to it, and a slot
whose entry disappears is removed only after nginx stopped routing to it.
"""

from __future__ import annotations

import json
import posixpath
import re

STATE_FILE = "state.json"
STATE_MODE = 0o640
DEFAULT_FILE_MODE = 0o644

_MODE_PATTERN = re.compile(r"^0?[0-7]{3,4}$")
# A plain or quoted mapping key, as to_nice_yaml writes a service name.
_SERVICE_KEY = re.compile(r"""^(?P<name>'[^']+'|"[^"]+"|[^\s:'"#][^:#]*?)\s*:(\s|$)""")


class PlanError(ValueError):
    """The wanted state cannot be planned; the message names the value and the fix."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def parse_mode(value, where):
    """The permission bits of a quoted octal string such as "0644"."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise PlanError("%s: %r is not a quoted octal string; write it as '0644'" % (where, value))
    if not _MODE_PATTERN.match(value):
        raise PlanError("%s: %r is not an octal file mode; write it as '0644'" % (where, value))
    return int(value, 8)


def check_relpath(relpath, where):
    """A normalised path inside the project directory, or PlanError."""
    if not isinstance(relpath, str) or not relpath.strip():
        raise PlanError("%s: a file name must be a non-empty string" % where)
    if relpath.startswith("/") or relpath.startswith("~"):
        raise PlanError("%s: %r is not relative to the project directory; give a path such as nginx/nginx.conf"
                        % (where, relpath))
    normal = posixpath.normpath(relpath)
    if normal == ".." or normal.startswith("../") or normal == ".":
        raise PlanError("%s: %r points outside the project directory" % (where, relpath))
    if normal == STATE_FILE:
        raise PlanError("%s: %s is written from the step's state; do not list it among the files"
                        % (where, STATE_FILE))
    return normal


def check_files(files, where, default_mode=DEFAULT_FILE_MODE):
    """{relpath: {"content": str, "mode": int}} from a step's `files`, or PlanError. A file
    without a mode gets default_mode."""
    if not isinstance(files, dict):
        raise PlanError("%s: must be a dict of relative path to {content, mode}" % where)
    wanted = {}
    for relpath, spec in files.items():
        name = check_relpath(relpath, where)
        here = "%s[%s]" % (where, relpath)
        if not isinstance(spec, dict):
            raise PlanError("%s: must be a dict with content (and mode)" % here)
        unknown = sorted(set(spec) - {"content", "mode"})
        if unknown:
            raise PlanError("%s: unknown keys %s; a file has content and mode" % (here, ", ".join(unknown)))
        content = spec.get("content")
        if not isinstance(content, str):
            raise PlanError("%s.content: must be a string (the rendered file)" % here)
        mode = default_mode if spec.get("mode") is None else parse_mode(spec["mode"], here + ".mode")
        if name in wanted:
            raise PlanError("%s: names the same file as another entry" % here)
        wanted[name] = {"content": content, "mode": mode}
    return wanted


def check_state(state, where):
    """The state's slots, after checking the keys a converge relies on."""
    if not isinstance(state, dict):
        raise PlanError("%s: must be a dict (the live state)" % where)
    if "generation" not in state or isinstance(state["generation"], bool) or not isinstance(state["generation"], int):
        raise PlanError("%s.generation: must be an integer; nginx.conf serves it so a reload can be confirmed"
                        % where)
    slots = state.get("slots")
    if not isinstance(slots, dict) or not slots:
        raise PlanError("%s.slots: must be a non-empty dict of slot name to its spec" % where)
    return slots


def state_text(state):
    """state.json as the role has always written it (to_nice_json) plus a newline, so a stack
    deployed before this module is not rewritten for formatting alone."""
    return json.dumps(state, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"


def parse_state(text):
    """The state in a state.json, or None for no file. PlanError for a file that is not a state."""
    if text is None:
        return None
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise PlanError("%s is not valid JSON (%s); restore it from the history or remove it to start over"
                        % (STATE_FILE, exc))
    if not isinstance(state, dict):
        raise PlanError("%s does not hold a JSON object; restore it or remove it to start over" % STATE_FILE)
    return state


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def slot_changes(before, after):
    """(added, changed, removed) slot names, each sorted: what differs between two `slots`."""
    before = before or {}
    added = sorted(slot for slot in after if slot not in before)
    changed = sorted(slot for slot in after if slot in before and before[slot] != after[slot])
    removed = sorted(slot for slot in before if slot not in after)
    return added, changed, removed


def mode_only_changes(before, after):
    """Sorted slots whose spec differs only in `mode` (stable or canary) between two `slots`:
    the app reads its mode from a file again on SIGHUP, so such a slot switches in place."""
    before = before or {}
    switched = []
    for slot, spec in after.items():
        old = before.get(slot)
        if isinstance(old, dict) and isinstance(spec, dict) and old.get("mode") != spec.get("mode") \
                and dict(old, mode=None) == dict(spec, mode=None):
            switched.append(slot)
    return sorted(switched)


class FileChange(object):
    """One file of the plan whose content or mode differs from the one on disk."""

    def __init__(self, relpath, before, after, mode_before, mode):
        self.relpath = relpath
        self.before = before  # None: the file does not exist
        self.after = after
        self.mode_before = mode_before
        self.mode = mode

    @property
    def content_changed(self):
        return self.before != self.after

    def __repr__(self):
        return "FileChange(%r, content_changed=%r, mode %s -> %o)" % (
            self.relpath, self.content_changed,
            "-" if self.mode_before is None else "%o" % self.mode_before, self.mode)


class StepPlan(object):
    """What one converge has to do, in the order it does it."""

    def __init__(self, changes, slots_before, slots_after, nginx_conf, compose_file, slot_prefix=None):
        self.changes = changes
        self.slot_service_prefix = slot_prefix
        self.slots_before = slots_before
        self.slots_after = slots_after
        self.added, self.changed, self.removed = slot_changes(slots_before, slots_after)
        self._nginx_conf = nginx_conf
        self._compose_file = compose_file

    @property
    def files_changed(self):
        return [change.relpath for change in self.changes]

    def change(self, relpath):
        """The FileChange of relpath, or None when it does not change."""
        for change in self.changes:
            if change.relpath == relpath:
                return change
        return None

    def content_changed(self, relpath):
        change = self.change(relpath)
        return change is not None and change.content_changed

    @property
    def nginx_conf_changed(self):
        return self.content_changed(self._nginx_conf)

    @property
    def compose_changed(self):
        return self.content_changed(self._compose_file)

    @property
    def slots_to_start(self):
        """Slots to (re)start: new ones, and changed ones that cannot switch mode in place."""
        switched = set(self.mode_switched)
        return sorted(self.added + [slot for slot in self.changed if slot not in switched])

    @property
    def mode_switched(self):
        """Changed slots that only change mode and whose compose service stays the same (a
        container created from an older compose file, without the mode file, is restarted)."""
        slots = mode_only_changes(self.slots_before, self.slots_after)
        change = self.change(self._compose_file)
        if not slots or change is None or not change.content_changed:
            return slots
        old, new = compose_sections(change.before), compose_sections(change.after)
        if old is None or new is None:
            return []
        return [slot for slot in slots if self.slot_service_prefix is not None
                and old[1].get(self.slot_service_prefix + slot) == new[1].get(self.slot_service_prefix + slot)
                and old[1].get(self.slot_service_prefix + slot) is not None]

    @property
    def writes_anything(self):
        return bool(self.changes)


def plan_step(current, files, state, nginx_conf="nginx/nginx.conf", compose_file="docker-compose.yml",
              slot_prefix=None):
    """Compare a step's files and state with what the project directory holds.

    current: {relpath: (content or None when missing, mode or None)} for every relpath of
             `files` and for state.json.
    files:   the step's files as check_files returns them.
    state:   the step's state (already checked with check_state).
    slot_prefix: the compose service name of a slot less the slot's name ("app-"): without it,
             a slot that only changes mode switches in place only when the compose file stays.

    The state file is always the last change, so that a run that dies half-way leaves the old
    state and the next run plans the same work again."""
    changes = []
    for relpath in sorted(files):
        before, mode_before = current.get(relpath, (None, None))
        wanted = files[relpath]
        if before != wanted["content"] or mode_before != wanted["mode"]:
            changes.append(FileChange(relpath, before, wanted["content"], mode_before, wanted["mode"]))
    state_before, state_mode = current.get(STATE_FILE, (None, None))
    wanted_state = state_text(state)
    if state_before != wanted_state or state_mode != STATE_MODE:
        changes.append(FileChange(STATE_FILE, state_before, wanted_state, state_mode, STATE_MODE))
    previous = parse_state(state_before) or {}
    slots_before = previous.get("slots") if isinstance(previous.get("slots"), dict) else {}
    return StepPlan(changes, slots_before, state["slots"], nginx_conf, compose_file, slot_prefix)


# --------------------------------------------------------------------------------------------
# What docker compose says
# --------------------------------------------------------------------------------------------


def compose_sections(text):
    """(everything but the services, {service: its lines}) of a block-style compose file; None
    when the file is not laid out so that it can be split without a YAML parser.

    The role renders its compose file with to_nice_yaml: `services:` at column 0, each service
    a key one indentation level in, its definition indented further."""
    if text is None:
        return None
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if re.match(r"^services:\s*(#.*)?$", line):
            break
    else:
        return None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "#"))):
        end += 1
    blocks = {}
    current = indent = None
    for line in lines[start + 1:end]:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if current is not None:
                blocks[current].append(line)
            continue
        width = len(line) - len(line.lstrip(" "))
        if indent is None:
            indent = width
        if width < indent or (width > indent and current is None):
            return None
        if width > indent:
            blocks[current].append(line)
            continue
        match = _SERVICE_KEY.match(stripped)
        current = match.group("name").strip("'\"") if match else None
        if current is None or current in blocks:
            return None
        blocks[current] = [line]
    if not blocks:
        return None
    rest = "\n".join(lines[:start + 1] + lines[end:])
    return rest, dict((name, "\n".join(block).rstrip()) for name, block in blocks.items())


def compose_services(text):
    """The service names of a block-style compose file, in file order; None when they cannot be
    read without a YAML parser (the caller then asks docker compose)."""
    sections = compose_sections(text)
    return None if sections is None else list(sections[1])


def compose_up_needed(before, after, started):
    """Whether the whole project must be brought up because its compose file went from `before`
    to `after`, once the services in `started` have been started from `after`.

    Not when the only differences are services just started and services that left (those are
    removed after the drain): then `up` would change nothing. Any other difference, or a file
    that cannot be split, says yes."""
    if before == after:
        return False
    old, new = compose_sections(before), compose_sections(after)
    if old is None or new is None or old[0] != new[0]:
        return True
    return any(old[1].get(service) != block for service, block in new[1].items() if service not in started)


def running_services(entries):
    """{service: container entry} of the services with a running container."""
    running = {}
    for entry in entries:
        if entry.get("State") == "running" and entry.get("Service"):
            running.setdefault(entry["Service"], entry)
    return running


def not_running(expected, entries):
    """The expected services, in order, that have no running container."""
    running = running_services(entries)
    return [service for service in expected if service not in running]


def orphans(expected, entries):
    """Sorted services with a container (running or not) that the compose file no longer has."""
    return sorted(set(entry["Service"] for entry in entries if entry.get("Service")) - set(expected))


def generation_matches(body, generation):
    return body is not None and body.strip() == str(generation)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def compose_argv(docker, project_path, *args):
    return [docker, "compose", "--project-directory", project_path] + list(args)


def nginx_test_argv(docker, image, conf_dir, slot_prefix, slots, conf_files, conf_subdirs=()):
    """`nginx -t` on each of conf_files in one container of the stack's nginx image, with no
    network and every slot's service name resolvable (nginx resolves upstream host names when it
    loads a file). One container for all the files of a converge: starting one costs more than
    testing a file. Each file is mounted as <conf_dir>/test-<i>.conf; the shell stops at the
    first refused file and names it on stderr ("refused: test-<i>.conf"). conf_subdirs: host
    directories mounted read-only at <conf_dir>/<their name>, for files nginx.conf names there
    (the TLS certificate and key)."""
    hosts = ["--add-host=%s%s:127.0.0.1" % (slot_prefix, slot) for slot in sorted(slots)]
    mounts, targets = [], []
    for subdir in sorted(conf_subdirs):
        mounts += ["-v", "%s:%s:ro" % (subdir, posixpath.join(conf_dir, posixpath.basename(subdir.rstrip("/"))))]
    for index, conf_file in enumerate(conf_files, 1):
        target = posixpath.join(conf_dir, "test-%d.conf" % index)
        mounts += ["-v", "%s:%s:ro" % (conf_file, target)]
        targets.append(target)
    script = 'for f in "$@"; do nginx -t -q -c "$f" || { echo "refused: ${f##*/}" >&2; exit 1; }; done'
    return ([docker, "run", "--rm", "--network", "none", "--entrypoint", "sh"] + hosts + mounts
            + [image, "-c", script, "sh"] + targets)


_TEST_SCRIPT_EXEC = (
    'd=$(mktemp -d /tmp/swiftdeploy-test.XXXXXX) || exit 125; i=0; '
    'for t in "$@"; do i=$((i+1)); printf "%s" "$t" > "$d/test-$i.conf" || { rm -rf "$d"; exit 125; }; '
    'nginx -t -q -c "$d/test-$i.conf" || { rm -rf "$d"; echo "refused: test-$i.conf" >&2; exit 1; }; done; '
    'rm -rf "$d"')


def slot_hosts_to_loopback(text, slot_prefix, slots):
    """text with each `server <prefix><slot>` upstream address pointed at 127.0.0.1, as
    nginx_test_argv's --add-host does: a slot about to be started has no name in the stack
    network yet, and nginx resolves upstream names when it loads a file."""
    if not slots:
        return text
    names = "|".join(re.escape(slot_prefix + slot) for slot in sorted(slots))
    return re.sub(r"(\bserver\s+)(?:%s)(?=[:;\s])" % names, r"\g<1>127.0.0.1", text)


def nginx_exec_test_argv(docker, container, slot_prefix, slots, conf_texts):
    """`nginx -t` on each of conf_texts inside the stack's running nginx container (docker exec):
    the same image and modules as nginx_test_argv's fresh container, for a tenth of its cost.
    Each text goes in as an argument, is written to a directory of the container's /tmp with its
    slot names pointed at 127.0.0.1 (slot_hosts_to_loopback) and tested; the directory is removed.
    A refused file is named on stderr as "refused: test-<i>.conf", as by nginx_test_argv; any
    other failure (the container went away) exits with another status and no such line.

    The test file is not in the configuration directory, so a relative `include` resolves
    elsewhere than in the real file: a refusal here is confirmed in a fresh container before it
    counts (stack_converge does that), so this can only make a test faster, never stricter."""
    texts = [slot_hosts_to_loopback(text, slot_prefix, slots) for text in conf_texts]
    return [docker, "exec", container, "sh", "-c", _TEST_SCRIPT_EXEC, "sh"] + texts


# The edge nginx (nginx.edge, docs/keepalive.md): its file beside nginx.conf, its compose service,
# and where its master writes its PID (edge.conf.j2's `pid`).
EDGE_CONF = "edge.conf"
EDGE_SERVICE = "edge"
EDGE_PID_FILE = "/tmp/nginx.pid"

_EDGE_WORKERS_SCRIPT = (
    'm=$(cat "$1") || exit 4; echo "$m"; '
    'for f in /proc/[0-9]*/stat; do read -r p c s pp r 2>/dev/null < "$f" && [ "$pp" = "$m" ] && echo "$p"; done; '
    'exit 0')


def edge_workers_argv(docker, container, test_conf=None, pid_file=EDGE_PID_FILE):
    """`docker exec` in the edge's container: its nginx master's PID, then the PIDs of the
    master's children (its workers, old ones still shutting down included), one a line. With
    test_conf, `nginx -t` on that file first, as the edge would load it: a refusal exits 3 with
    nginx's message on stderr and lists nothing."""
    script = _EDGE_WORKERS_SCRIPT
    if test_conf is not None:
        script = 'nginx -t -q -c "$2" || exit 3; ' + script
    return [docker, "exec", container, "sh", "-c", script, "sh", pid_file] + ([test_conf] if test_conf else [])


def parse_edge_workers(out):
    """(master PID, frozenset of its children's PIDs) from what edge_workers_argv printed;
    ValueError when that is not a PID a line."""
    pids = [int(line) for line in out.split() if line.strip()]
    if not pids or any(pid <= 0 for pid in pids):
        raise ValueError("expected the nginx master's PID and its workers', one a line: %r" % out[:200])
    return pids[0], frozenset(pids[1:])


def new_workers(before, after):
    """The edge's workers that were not there before its reload: nginx forks new ones only once
    it has loaded the new configuration, so any at all confirm the reload; none means the master
    refused the file (and logged why) or has not finished loading it. Another master (the
    container restarted) read the file when it started: all its workers count."""
    master_before, workers_before = before
    master_after, workers_after = after
    if master_after != master_before:
        return workers_after
    return workers_after - workers_before


def slot_services(slot_prefix, slots):
    return [slot_prefix + slot for slot in sorted(slots)]
