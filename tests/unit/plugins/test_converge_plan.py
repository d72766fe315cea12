"""The converge planner: file and state diffs, slot changes, compose output parsing, exact errors."""

from __future__ import annotations

import json

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._converge import (
    STATE_FILE,
    PlanError,
    check_files,
    check_relpath,
    check_state,
    compose_sections,
    compose_services,
    compose_up_needed,
    generation_matches,
    mode_only_changes,
    nginx_exec_test_argv,
    nginx_test_argv,
    not_running,
    orphans,
    parse_mode,
    parse_state,
    plan_step,
    running_services,
    slot_changes,
    slot_hosts_to_loopback,
    state_text,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import containers_started, parse_compose_ps

BLUE = {"image": "app:1.0.0", "version": "1.0.0", "mode": "stable"}
BLUE_NEXT = {"image": "app:1.1.0", "version": "1.1.0", "mode": "stable"}
GREEN = {"image": "app:1.1.0", "version": "1.1.0", "mode": "canary"}


def live(generation, slots, canary=None, weight=0):
    return {"generation": generation, "mode": "canary" if canary else "stable", "weight": weight,
            "stable": "blue", "canary": canary, "slots": slots}


def compose(*services, volume="logs"):
    """A compose file laid out as the role's to_nice_yaml renders it."""
    lines = ["# Ansible managed", "name: demo", "networks:", "  stack:", "    name: demo-net", "services:"]
    for name, image in services:
        lines += ["  %s:" % name, "    image: %s" % image, "    labels:", "      org.swiftdeploy.stack: demo"]
    lines += ["volumes:", "  logs:", "    name: %s" % volume]
    return "\n".join(lines) + "\n"


STACK_BLUE = compose(("app-blue", "app:1.0.0"), ("nginx", "nginx:latest"))
STACK_BOTH = compose(("app-blue", "app:1.0.0"), ("app-green", "app:1.1.0"), ("nginx", "nginx:latest"))
FILES_BLUE = {"nginx/nginx.conf": {"content": "conf 1\n", "mode": 0o644},
              "docker-compose.yml": {"content": STACK_BLUE, "mode": 0o640}}


def on_disk(files, state, modes=None, state_mode=0o640):
    """What plan_step's `current` looks like for a project holding exactly these files."""
    modes = modes or {}
    current = {path: (spec["content"], modes.get(path, spec["mode"])) for path, spec in files.items()}
    current[STATE_FILE] = (state_text(state), state_mode) if state is not None else (None, None)
    return current


# --------------------------------------------------------------------------------------------
# plan_step
# --------------------------------------------------------------------------------------------


def test_a_project_that_matches_plans_nothing():
    state = live(1, {"blue": BLUE})
    plan = plan_step(on_disk(FILES_BLUE, state), FILES_BLUE, state)
    assert plan.changes == []
    assert not plan.writes_anything
    assert (plan.added, plan.changed, plan.removed, plan.slots_to_start) == ([], [], [], [])
    assert not plan.nginx_conf_changed and not plan.compose_changed


def test_a_first_converge_writes_everything_and_starts_every_slot():
    state = live(1, {"blue": BLUE})
    plan = plan_step({}, FILES_BLUE, state)
    assert plan.files_changed == ["docker-compose.yml", "nginx/nginx.conf", STATE_FILE]
    assert all(change.before is None and change.mode_before is None for change in plan.changes)
    assert plan.slots_before == {} and plan.added == ["blue"] and plan.slots_to_start == ["blue"]
    assert plan.nginx_conf_changed and plan.compose_changed


@pytest.mark.parametrize("before_slots, after_slots, to_start, removed", [
    pytest.param({"blue": BLUE}, {"blue": BLUE, "green": GREEN}, ["green"], [], id="canary added"),
    pytest.param({"blue": BLUE, "green": GREEN}, {"blue": BLUE_NEXT, "green": GREEN}, ["blue"], [],
                 id="stable slot recreated with the canary's release"),
    pytest.param({"blue": BLUE_NEXT, "green": GREEN}, {"blue": BLUE_NEXT}, [], ["green"], id="canary retired"),
    pytest.param({"blue": BLUE}, {"green": GREEN}, ["green"], ["blue"], id="slot swapped"),
    pytest.param({"blue": BLUE, "green": GREEN}, {"blue": BLUE, "green": GREEN}, [], [], id="weight only"),
])
def test_slots_to_start_and_to_remove(before_slots, after_slots, to_start, removed):
    before, after = live(3, before_slots, canary="green"), live(4, after_slots, canary="green", weight=100)
    plan = plan_step(on_disk(FILES_BLUE, before), FILES_BLUE, after)
    assert plan.slots_to_start == to_start
    assert plan.removed == removed
    assert plan.files_changed == [STATE_FILE]


@pytest.mark.parametrize("before_slots, after_slots, to_start, switched", [
    pytest.param({"blue": BLUE, "green": GREEN}, {"green": dict(GREEN, mode="stable")}, [], ["green"],
                 id="roll forward: the canary becomes stable in place"),
    pytest.param({"blue": BLUE}, {"blue": dict(BLUE, mode="canary")}, [], ["blue"], id="stable to canary"),
    pytest.param({"green": GREEN}, {"green": dict(GREEN, mode="stable", version="9")}, ["green"], [],
                 id="mode and version: restarted"),
    pytest.param({"green": GREEN}, {"green": dict(GREEN, mode="stable", extra=1)}, ["green"], [],
                 id="mode and a new key: restarted"),
    pytest.param({}, {"green": GREEN}, ["green"], [], id="new slot: started"),
])
def test_a_slot_that_only_changes_mode_switches_in_place(before_slots, after_slots, to_start, switched):
    before, after = live(3, before_slots), live(4, after_slots)
    plan = plan_step(on_disk(FILES_BLUE, before), FILES_BLUE, after, slot_prefix="app-")
    assert (plan.slots_to_start, plan.mode_switched) == (to_start, switched)
    assert mode_only_changes(before_slots, after_slots) == switched


def test_a_mode_switch_restarts_a_slot_whose_compose_service_changes():
    """A container created from another compose service (an older template that set MODE in its
    environment) may not read a mode file: it is started again instead."""
    before, after = live(3, {"green": GREEN}), live(4, {"green": dict(GREEN, mode="stable")})
    old_files = {"docker-compose.yml": {"content": compose(("app-green", "app:1.1.0")), "mode": 0o640}}
    same = plan_step(on_disk(old_files, before), old_files, after, slot_prefix="app-")
    assert (same.slots_to_start, same.mode_switched) == ([], ["green"])
    new_files = {"docker-compose.yml": {"content": compose(("app-green", "app:1.1.0-mode-file")), "mode": 0o640}}
    other = plan_step(on_disk(old_files, before), new_files, after, slot_prefix="app-")
    assert (other.slots_to_start, other.mode_switched) == (["green"], [])
    # Only another service changed: the slot still switches in place.
    with_nginx = {"docker-compose.yml": {"content": compose(("app-green", "app:1.1.0"), ("nginx", "nginx:1")),
                                         "mode": 0o640}}
    nginx_only = plan_step(on_disk(old_files, before), with_nginx, after, slot_prefix="app-")
    assert (nginx_only.slots_to_start, nginx_only.mode_switched) == ([], ["green"])
    # Without the prefix the services cannot be matched to slots: started again.
    unknown = plan_step(on_disk(old_files, before), new_files, after)
    assert (unknown.slots_to_start, unknown.mode_switched) == (["green"], [])


@pytest.mark.parametrize("before, after, expected", [
    ({}, {"blue": BLUE}, (["blue"], [], [])),
    ({"blue": BLUE}, {}, ([], [], ["blue"])),
    ({"blue": BLUE, "green": GREEN}, {"green": dict(GREEN, mode="stable"), "red": BLUE}, (["red"], ["green"], ["blue"])),
    (None, {"b": BLUE, "a": BLUE}, (["a", "b"], [], [])),
])
def test_slot_changes(before, after, expected):
    assert slot_changes(before, after) == expected


@pytest.mark.parametrize("modes, state_mode, changed, content_changed", [
    pytest.param({"nginx/nginx.conf": 0o600}, 0o640, ["nginx/nginx.conf"], [], id="a file's mode only"),
    pytest.param({}, 0o644, [STATE_FILE], [], id="state.json's mode only"),
    pytest.param({}, 0o640, [], [], id="nothing"),
])
def test_a_mode_difference_is_a_change_without_new_content(modes, state_mode, changed, content_changed):
    state = live(1, {"blue": BLUE})
    plan = plan_step(on_disk(FILES_BLUE, state, modes, state_mode), FILES_BLUE, state)
    assert plan.files_changed == changed
    assert [change.relpath for change in plan.changes if change.content_changed] == content_changed
    assert not plan.nginx_conf_changed


def test_the_state_file_is_always_the_last_change():
    state = live(2, {"blue": BLUE})
    files = {"a.txt": {"content": "a", "mode": 0o644}, "z/z.txt": {"content": "z", "mode": 0o644}}
    assert plan_step({}, files, state).files_changed == ["a.txt", "z/z.txt", STATE_FILE]


def test_only_the_changed_file_is_planned_and_flagged():
    state = live(1, {"blue": BLUE})
    files = dict(FILES_BLUE, **{"nginx/nginx.conf": {"content": "conf 2\n", "mode": 0o644}})
    plan = plan_step(on_disk(FILES_BLUE, state), files, state)
    assert plan.files_changed == ["nginx/nginx.conf"]
    change = plan.change("nginx/nginx.conf")
    assert (change.before, change.after, change.content_changed) == ("conf 1\n", "conf 2\n", True)
    assert plan.nginx_conf_changed and not plan.compose_changed
    assert plan.change("docker-compose.yml") is None


def test_a_generation_bump_alone_rewrites_the_state():
    plan = plan_step(on_disk(FILES_BLUE, live(1, {"blue": BLUE})), FILES_BLUE, live(2, {"blue": BLUE}))
    assert plan.files_changed == [STATE_FILE]
    assert plan.slots_to_start == [] and plan.removed == []


def test_a_state_written_by_the_role_is_not_rewritten():
    # The role wrote state.json with to_nice_json and a newline; the same state must match.
    state = live(9, {"blue": BLUE})
    role_text = json.dumps(state, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"
    current = on_disk(FILES_BLUE, None)
    current[STATE_FILE] = (role_text, 0o640)
    assert plan_step(current, FILES_BLUE, state).changes == []


def test_a_corrupt_state_file_fails_the_plan():
    current = on_disk(FILES_BLUE, None)
    current[STATE_FILE] = ("{not json", 0o640)
    with pytest.raises(PlanError, match=r"^state.json is not valid JSON \(.*\); restore it from the history "
                                        r"or remove it to start over$"):
        plan_step(current, FILES_BLUE, live(1, {"blue": BLUE}))


@pytest.mark.parametrize("text, expected", [
    (None, None),
    ('{"slots": {}}\n', {"slots": {}}),
])
def test_parse_state(text, expected):
    assert parse_state(text) == expected


def test_parse_state_refuses_a_list():
    with pytest.raises(PlanError, match=r"^state.json does not hold a JSON object; restore it or remove it to start over$"):
        parse_state("[1]")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [("0644", 0o644), ("644", 0o644), ("0640", 0o640), ("2755", 0o2755)])
def test_parse_mode(value, expected):
    assert parse_mode(value, "m") == expected


@pytest.mark.parametrize("value, message", [
    (420, "m: 420 is not a quoted octal string; write it as '0644'"),
    (True, "m: True is not a quoted octal string; write it as '0644'"),
    ("0888", "m: '0888' is not an octal file mode; write it as '0644'"),
    ("rw-r--r--", "m: 'rw-r--r--' is not an octal file mode; write it as '0644'"),
])
def test_parse_mode_refuses(value, message):
    with pytest.raises(PlanError) as caught:
        parse_mode(value, "m")
    assert str(caught.value) == message


@pytest.mark.parametrize("relpath, expected", [
    ("nginx/nginx.conf", "nginx/nginx.conf"),
    ("./docker-compose.yml", "docker-compose.yml"),
    ("nginx//a/../nginx.conf", "nginx/nginx.conf"),
])
def test_check_relpath(relpath, expected):
    assert check_relpath(relpath, "w") == expected


@pytest.mark.parametrize("relpath, message", [
    ("/etc/passwd", "w: '/etc/passwd' is not relative to the project directory; give a path such as nginx/nginx.conf"),
    ("~/x", "w: '~/x' is not relative to the project directory; give a path such as nginx/nginx.conf"),
    ("../x", "w: '../x' points outside the project directory"),
    ("a/../../x", "w: 'a/../../x' points outside the project directory"),
    (".", "w: '.' points outside the project directory"),
    ("", "w: a file name must be a non-empty string"),
    ("state.json", "w: state.json is written from the step's state; do not list it among the files"),
    ("./state.json", "w: state.json is written from the step's state; do not list it among the files"),
])
def test_check_relpath_refuses(relpath, message):
    with pytest.raises(PlanError) as caught:
        check_relpath(relpath, "w")
    assert str(caught.value) == message


def test_check_files_defaults_the_mode_and_normalises_paths():
    assert check_files({"./a.txt": {"content": "x"}, "b": {"content": "", "mode": "0600"}}, "f") == {
        "a.txt": {"content": "x", "mode": 0o644}, "b": {"content": "", "mode": 0o600}}


@pytest.mark.parametrize("files, message", [
    ([], "f: must be a dict of relative path to {content, mode}"),
    ({"a": "text"}, "f[a]: must be a dict with content (and mode)"),
    ({"a": {"content": 1}}, "f[a].content: must be a string (the rendered file)"),
    ({"a": {"content": "x", "owner": "root"}}, "f[a]: unknown keys owner; a file has content and mode"),
    ({"a": {"content": "x"}, "./a": {"content": "y"}}, "f[./a]: names the same file as another entry"),
    ({"a": {"content": "x", "mode": 420}}, "f[a].mode: 420 is not a quoted octal string; write it as '0644'"),
])
def test_check_files_refuses(files, message):
    with pytest.raises(PlanError) as caught:
        check_files(files, "f")
    assert str(caught.value) == message


@pytest.mark.parametrize("state, message", [
    ([], "s: must be a dict (the live state)"),
    ({"slots": {"blue": BLUE}}, "s.generation: must be an integer; nginx.conf serves it so a reload can be confirmed"),
    ({"generation": "3", "slots": {"blue": BLUE}},
     "s.generation: must be an integer; nginx.conf serves it so a reload can be confirmed"),
    ({"generation": True, "slots": {"blue": BLUE}},
     "s.generation: must be an integer; nginx.conf serves it so a reload can be confirmed"),
    ({"generation": 3}, "s.slots: must be a non-empty dict of slot name to its spec"),
    ({"generation": 3, "slots": {}}, "s.slots: must be a non-empty dict of slot name to its spec"),
])
def test_check_state_refuses(state, message):
    with pytest.raises(PlanError) as caught:
        check_state(state, "s")
    assert str(caught.value) == message


def test_state_text_is_sorted_pretty_json_with_a_newline():
    assert state_text({"b": 1, "a": {"d": None, "c": [1]}}) == (
        '{\n    "a": {\n        "c": [\n            1\n        ],\n        "d": null\n    },\n    "b": 1\n}\n')


# --------------------------------------------------------------------------------------------
# The compose file
# --------------------------------------------------------------------------------------------


def test_compose_services_reads_the_role_layout():
    assert compose_services(STACK_BOTH) == ["app-blue", "app-green", "nginx"]
    rest, blocks = compose_sections(STACK_BOTH)
    assert "services:" in rest and "app-blue" not in rest and "name: demo-net" in rest
    assert blocks["nginx"] == "  nginx:\n    image: nginx:latest\n    labels:\n      org.swiftdeploy.stack: demo"


@pytest.mark.parametrize("text, expected", [
    ("services:\n  'quoted':\n    image: x\n  \"dq\": {image: y}\n", ["quoted", "dq"]),
    ("services:    # the stack\n\n    a:\n        image: x\n\n    b:\n        image: y\nvolumes: {}\n", ["a", "b"]),
    ("services: {a: {image: x}}\n", None),
    ("name: x\n", None),
    ("services:\n", None),
    ("services:\n    image: x\n  a:\n", None),
    ("services:\n  - a\n", None),
    ("services:\n  a:\n    image: x\n  a:\n    image: y\n", None),
    (None, None),
])
def test_compose_services_or_none(text, expected):
    assert compose_services(text) == expected


@pytest.mark.parametrize("before, after, started, expected", [
    pytest.param(STACK_BLUE, STACK_BLUE, [], False, id="unchanged"),
    pytest.param(STACK_BLUE, STACK_BOTH, ["app-green"], False, id="a slot added and started"),
    pytest.param(STACK_BLUE, STACK_BOTH, [], True, id="a slot added, not started"),
    pytest.param(STACK_BOTH, STACK_BLUE, [], False, id="a slot removed"),
    pytest.param(STACK_BOTH, compose(("app-blue", "app:1.1.0"), ("app-green", "app:1.1.0"), ("nginx", "nginx:latest")),
                 ["app-blue"], False, id="a slot changed and started"),
    pytest.param(STACK_BLUE, compose(("app-blue", "app:1.0.0"), ("nginx", "nginx:1.27")), [], True,
                 id="nginx changed"),
    pytest.param(STACK_BLUE, compose(("app-blue", "app:1.0.0"), ("nginx", "nginx:latest"), volume="other"),
                 [], True, id="a volume changed"),
    pytest.param(STACK_BLUE, compose(("app-blue", "app:1.0.0"), ("nginx", "nginx:latest"), ("opa", "opa")),
                 [], True, id="a sidecar added"),
    pytest.param(None, STACK_BLUE, ["app-blue"], True, id="no compose file before"),
    pytest.param("services: {}\n", STACK_BLUE, [], True, id="unreadable before"),
])
def test_compose_up_needed(before, after, started, expected):
    assert compose_up_needed(before, after, started) is expected


# --------------------------------------------------------------------------------------------
# What docker compose prints
# --------------------------------------------------------------------------------------------

PS_LINES = "\n".join(json.dumps(entry) for entry in [
    {"Service": "app-blue", "State": "running", "Name": "demo-app-blue-1", "ID": "a1", "Health": "healthy"},
    {"Service": "app-green", "State": "exited", "Name": "demo-app-green-1", "ID": "b2"},
    {"Service": "nginx", "State": "running", "Name": "demo-nginx-1", "ID": "c3"},
]) + "\n"


@pytest.mark.parametrize("text", [PS_LINES, json.dumps([json.loads(line) for line in PS_LINES.splitlines()])],
                         ids=["one object a line (compose 2.21+)", "one array (older compose)"])
def test_parse_compose_ps(text):
    entries = parse_compose_ps(text)
    assert [entry["Service"] for entry in entries] == ["app-blue", "app-green", "nginx"]
    assert sorted(running_services(entries)) == ["app-blue", "nginx"]
    assert not_running(["app-blue", "app-green", "nginx", "opa"], entries) == ["app-green", "opa"]
    assert orphans(["app-blue", "nginx"], entries) == ["app-green"]
    assert orphans(["app-blue", "app-green", "nginx"], entries) == []


@pytest.mark.parametrize("text", ["", "  \n"])
def test_parse_compose_ps_of_an_empty_project(text):
    assert parse_compose_ps(text) == []


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"a"\n'])
def test_parse_compose_ps_refuses_what_is_not_objects(text):
    with pytest.raises(ValueError):
        parse_compose_ps(text)


def test_containers_started_reads_compose_progress():
    output = (" Container demo-app-blue-1  Running\n"
              " Container demo-nginx-1  Recreate\n"
              " Container demo-nginx-1  Recreated\n"
              " Container demo-opa-1  Started\n"
              " Network demo-net  Created\n"
              "WARN[0000] Found orphan containers ([demo-app-green-1]) for this project.\n")
    assert containers_started(output) == {"demo-nginx-1", "demo-opa-1"}


@pytest.mark.parametrize("body, generation, expected", [
    ("7", 7, True), ("7\n", 7, True), ("6", 7, False), (None, 7, False), ("", 7, False)])
def test_generation_matches(body, generation, expected):
    assert generation_matches(body, generation) is expected


def test_nginx_test_argv_tests_every_file_in_one_container_without_a_network():
    script = 'for f in "$@"; do nginx -t -q -c "$f" || { echo "refused: ${f##*/}" >&2; exit 1; }; done'
    assert nginx_test_argv("docker", "nginx:latest", "/etc/nginx/swiftdeploy", "app-", {"green": {}, "blue": {}},
                           ["/tmp/x.conf", "/tmp/y.conf"]) == [
        "docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", "--add-host=app-blue:127.0.0.1",
        "--add-host=app-green:127.0.0.1",
        "-v", "/tmp/x.conf:/etc/nginx/swiftdeploy/test-1.conf:ro",
        "-v", "/tmp/y.conf:/etc/nginx/swiftdeploy/test-2.conf:ro",
        "nginx:latest", "-c", script, "sh", "/etc/nginx/swiftdeploy/test-1.conf", "/etc/nginx/swiftdeploy/test-2.conf"]


UPSTREAMS = """upstream swiftdeploy_slot_blue {
        server app-blue:3000 max_fails=0;
        keepalive 128;
}
upstream swiftdeploy_slot_green {
        server\tapp-green:3000;
}
server { server_name app-green; location /app-blue { return 200; } }
upstream other { server app-bluey:3000; server app-blue.example:80; server xapp-blue:1; }
"""


def test_slot_hosts_to_loopback_rewrites_only_upstream_server_addresses_of_the_slots():
    assert slot_hosts_to_loopback(UPSTREAMS, "app-", ["green", "blue"]) == UPSTREAMS.replace(
        "server app-blue:3000", "server 127.0.0.1:3000").replace("server\tapp-green:3000", "server\t127.0.0.1:3000")
    assert slot_hosts_to_loopback(UPSTREAMS, "app-", []) == UPSTREAMS
    # A prefix with regular-expression characters is taken literally.
    assert slot_hosts_to_loopback("server a.b-blue:1;", "a.b-", ["blue"]) == "server 127.0.0.1:1;"
    assert slot_hosts_to_loopback("server axb-blue:1;", "a.b-", ["blue"]) == "server axb-blue:1;"


def test_nginx_exec_test_argv_passes_each_text_with_slots_on_loopback():
    argv = nginx_exec_test_argv("docker", "stack-nginx-1", "app-", {"blue": {}}, ["server app-blue:3000;", "b"])
    assert argv[:5] == ["docker", "exec", "stack-nginx-1", "sh", "-c"]
    assert argv[6:] == ["sh", "server 127.0.0.1:3000;", "b"]
    script = argv[5]
    assert 'nginx -t -q -c "$d/test-$i.conf"' in script and 'echo "refused: test-$i.conf" >&2; exit 1' in script
    assert script.endswith('rm -rf "$d"')
