"""The converge's order of work, over a fake Docker engine and fake stack endpoints.

The fake engine keeps containers in memory and answers as Docker and nginx would: `compose up`
starts services, a SIGHUP to nginx makes it serve the generation of the state.json on disk, a
SIGHUP to an app slot makes it report the mode in its mode file. The real StackHost and Converger
run over it, so these tests check the sequencing rules (healthy before routed, routed before
removed) and check mode (a DryRunStackHost over a DryRunEngine changes nothing) without Docker;
tests/integration/test_stack_converge_module.py runs the same module on the real engine.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _stack_host as stack_host
from ansible_collections.swiftdeploy.stack.plugins.module_utils._converge import (
    edge_workers_argv,
    new_workers,
    parse_edge_workers,
    state_text,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._converger import Converger
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import DryRunEngine, EngineError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._stack_host import (
    ActionLog,
    ConvergeError,
    DryRunStackHost,
    StackHost,
)

BLUE = {"image": "app:1.0.0", "version": "1.0.0", "mode": "stable"}
GREEN = {"image": "app:1.1.0", "version": "1.1.0", "mode": "canary"}
ADMIN = "http://127.0.0.1:8082"
OPTIONS = {"admin_url": ADMIN, "slot_prefix": "app-", "nginx_conf": "nginx/nginx.conf", "nginx_image": "nginx:latest",
           "nginx_conf_dir": "/etc/nginx/swiftdeploy", "wait_timeout": 5, "slot_port": None,
           "slot_health_path": "/healthz", "validate_nginx": True, "drain_seconds": 0, "health_url": None,
           "health_timeout": 5}


def live(generation, slots, canary=None, weight=0, stable="blue"):
    return {"generation": generation, "mode": "canary" if canary else "stable", "weight": weight,
            "stable": stable, "canary": canary, "slots": slots}


def compose(slots):
    lines = ["name: demo", "services:"]
    for slot, spec in sorted(slots.items()):
        lines += ["  app-%s:" % slot, "    image: %s" % spec["image"]]
    lines += ["  nginx:", "    image: nginx:latest", "volumes:", "  logs:", "    name: demo-logs"]
    return "\n".join(lines) + "\n"


def step(state):
    files = {"nginx/nginx.conf": {"content": "conf generation %d weight %d\n" % (state["generation"], state["weight"]),
                                  "mode": "0644"},
             "docker-compose.yml": {"content": compose(state["slots"]), "mode": "0640"}}
    for slot, spec in state["slots"].items():
        files["slots/%s/mode" % slot] = {"content": spec["mode"] + "\n", "mode": "0644"}
    return {"files": files, "state": state}


class FakeEngine(object):
    """Containers in memory; `calls` lists every change in order."""

    dry_run = False
    docker = "docker"

    def __init__(self, project):
        self.project = project
        self.containers = {}  # service -> {"mode": ..., "id": ...}
        self.served = None  # the generation nginx serves
        self.calls = []
        self.fail_nginx_test = False
        self.refuse_conf_with = None  # nginx -t refuses a file holding this text, naming it by its place
        self.nginx_tests = []  # the argv of every nginx -t
        self.unhealthy = set()  # services whose containers Docker marks unhealthy
        # The edge's nginx: its master's PID and workers'; a SIGHUP forks new workers unless it
        # cannot load the file (edge_loads False), as nginx keeps the old ones then.
        self.edge_master, self.edge_workers, self.edge_loads = 7, {8, 9}, True

    def name(self, service):
        return "demo-%s-1" % service

    def service_of(self, container):
        for service in self.containers:
            if container in (self.name(service), "id-" + service):
                return service
        raise EngineError("No such container: %s" % container)

    # compose
    def ps_argv(self, project):
        return ["ps"]

    def compose_config_argv(self, project, path):
        return ["config", path]

    def read_ps(self, out):
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def ps(self, project):
        return [{"Service": service, "State": "running", "Name": self.name(service), "ID": "id-" + service}
                for service in sorted(self.containers)]

    def side_by_side(self, argvs):
        results = []
        for argv in argvs:
            if argv == ["ps"]:
                results.append((0, "\n".join(json.dumps(entry) for entry in self.ps(self.project)), "", 0.01))
            elif argv[0] == "config":
                results.append((0, "", "", 0.01))
            elif "/tmp/nginx.pid" in argv:  # the edge's processes, after nginx -t on its file when asked
                results.append(self.edge_processes(argv))
            else:  # nginx -t, in the running nginx or a fresh container
                self.calls.append(("nginx -t",))
                self.nginx_tests.append(argv)
                results.append((1, "", "refused: test-1.conf", 0.01) if self.fail_nginx_test else self.nginx_test(argv))
        return results

    def nginx_test(self, argv):
        """The verdict on the files under test: texts after `sh -c <script> sh` in the running
        nginx, or files mounted as .../test-<i>.conf in a fresh container."""
        if argv[1] == "exec":
            texts = argv[argv.index("-c") + 3:]
        else:
            mounts = [argv[i + 1].split(":") for i, arg in enumerate(argv) if arg == "-v"]
            texts = [open(source).read() for source, target, _mode in mounts if "/test-" in target]
        for index, text in enumerate(texts, 1):
            if self.refuse_conf_with is not None and self.refuse_conf_with in text:
                return (1, "", "nginx: [emerg] unknown directive in /etc/nginx/swiftdeploy/test-%d.conf:3\n"
                        "refused: test-%d.conf" % (index, index), 0.01)
        return (0, "", "", 0.01)

    def edge_processes(self, argv):
        self.service_of(argv[2])
        if "nginx -t" in argv[5]:
            self.calls.append(("nginx -t in the edge", argv[-1]))
            with open(os.path.join(self.project, "nginx", "edge.conf")) as handle:
                if self.refuse_conf_with is not None and self.refuse_conf_with in handle.read():
                    return (3, "", "nginx: [emerg] unknown directive in %s:3" % argv[-1], 0.01)
        return (0, "\n".join(str(pid) for pid in [self.edge_master] + sorted(self.edge_workers)) + "\n", "", 0.01)

    def compose_services(self, project, path):
        raise AssertionError("the fake's compose files are block YAML")

    def compose_up(self, project, services=(), wait_timeout=None):
        with open(os.path.join(project, "docker-compose.yml")) as handle:
            declared = [line.strip()[:-1] for line in handle if line.startswith("  ") and not line.startswith("   ")
                        and line.strip().endswith(":") and line.strip() != "logs:"]
        wanted = list(services) or declared
        self.calls.append(("up",) + tuple(wanted))
        out = []
        for service in wanted:
            if service not in self.containers:
                self.containers[service] = {"mode": self.mode_file(service)}
                if service == "nginx":
                    self.served = self.state_generation()
                out.append(" Container %s  Started" % self.name(service))
        return "\n".join(out)

    def inspect(self, container):
        health = "unhealthy" if self.service_of(container) in self.unhealthy else "healthy"
        return {"State": {"Status": "running", "Running": True, "Health": {"Status": health}},
                "NetworkSettings": {"Networks": {}}}

    def kill(self, container, signal_name):
        service = self.service_of(container)
        self.calls.append(("kill", service, signal_name))
        if service == "nginx":
            self.served = self.state_generation()
        elif service == "edge":
            if self.edge_loads:
                self.edge_workers = {pid + 10 for pid in self.edge_workers}
        else:
            self.containers[service]["mode"] = self.mode_file(service)

    def logs(self, containers, tail, since=None):
        return dict((name, (0, "2026-12-07T10:00:00Z listening\n", "2026-12-07T10:00:01Z health: 503\n"))
                    for name in containers)

    def stop(self, container, seconds):
        self.calls.append(("stop", self.service_of(container)))

    def remove(self, container):
        service = self.service_of(container)
        self.calls.append(("rm", service))
        del self.containers[service]

    # what the files on disk say
    def state_generation(self):
        with open(os.path.join(self.project, "state.json")) as handle:
            return json.load(handle)["generation"]

    def mode_file(self, service):
        path = os.path.join(self.project, "slots", service[len("app-"):], "mode")
        if not service.startswith("app-") or not os.path.exists(path):
            return None
        with open(path) as handle:
            return handle.read().strip()

    # the stack's HTTP endpoints
    def http(self, url, timeout, service=None):
        if url == ADMIN + "/_swiftdeploy/generation":
            if "nginx" not in self.containers:
                raise HttpError("unreachable", "connection refused")
            return "%s\n" % self.served
        if url.startswith(ADMIN + "/slots/") and url.endswith("/healthz"):
            slot = url[len(ADMIN + "/slots/"):-len("/healthz")]
            return json.dumps({"status": "ok", "mode": self.containers["app-" + slot]["mode"]})
        return "ok"


@pytest.fixture
def project(tmp_path):
    return str(tmp_path / "project")


def converge(engine, project, *states, check=False, options=None):
    real = engine
    if check:
        engine = DryRunEngine(engine)
    host_class = DryRunStackHost if check else StackHost
    host = host_class(engine, project, dict(OPTIONS, **(options or {})), ActionLog(), http_get=real.http)
    return Converger(host, [step(state) for state in states], dict(OPTIONS, **(options or {}))).converge()


def actions(result):
    return [action["action"] for action in result["actions"]]


def deployed(project):
    engine = FakeEngine(project)
    converge(engine, project, live(1, {"blue": BLUE}))
    engine.calls = []
    return engine


def test_a_first_converge_starts_the_slot_before_nginx_and_waits_for_its_generation(project):
    engine = FakeEngine(project)
    result = converge(engine, project, live(1, {"blue": BLUE}))
    assert engine.calls == [("nginx -t",), ("up", "app-blue"), ("up", "app-blue", "nginx")]
    assert result["changed"] and result["steps"][0]["nginx"] == "started"
    assert result["steps"][0]["slots_started"] == ["blue"]
    order = actions(result)
    assert order.index("write") < order.index("start slots") < order.index("compose up") < order.index("wait generation")
    assert engine.served == 1
    assert json.load(open(os.path.join(project, "state.json")))["generation"] == 1


def test_the_same_state_again_changes_nothing(project):
    engine = deployed(project)
    result = converge(engine, project, live(1, {"blue": BLUE}))
    assert result["changed"] is False and engine.calls == []
    assert actions(result) == ["plan", "compose ps", "check generation"]


def test_a_canary_is_healthy_before_nginx_routes_to_it(project):
    engine = deployed(project)
    result = converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    assert engine.calls == [("nginx -t",), ("up", "app-green"), ("kill", "nginx", "HUP")]
    assert result["steps"][0]["slots_started"] == ["green"] and result["steps"][0]["nginx"] == "reloaded"
    assert engine.served == 2


def test_a_roll_forward_switches_the_judged_slot_in_place_and_removes_the_old_one_last(project):
    engine = deployed(project)
    converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    engine.calls = []
    forward = live(3, {"green": dict(GREEN, mode="stable")}, stable="green")
    result = converge(engine, project, forward)
    assert engine.calls == [("nginx -t",), ("kill", "app-green", "HUP"), ("kill", "nginx", "HUP"),
                            ("stop", "app-blue"), ("rm", "app-blue")]
    assert engine.containers["app-green"]["mode"] == "stable"
    assert result["steps"][0]["slots_switched"] == ["green"]
    assert result["steps"][0]["slots_removed"] == ["app-blue"]
    assert "retire old workers" in actions(result)


def test_a_roll_forward_without_mode_switching_only_reroutes(project):
    """mode_switch none: the judged slot keeps its process and is neither signalled nor asked
    its mode (an app without modes); nginx routes everything to it, then the old slot goes."""
    engine = deployed(project)
    none = {"mode_switch": "none"}
    converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10), options=none)
    engine.calls = []
    # The app reports a mode the state does not name: with signals, that would be switched.
    engine.containers["app-green"]["mode"] = "stable"
    engine.containers["app-blue"]["mode"] = "canary"
    forward = live(3, {"green": dict(GREEN, mode="stable")}, stable="green")
    result = converge(engine, project, forward, options=none)
    assert engine.calls == [("nginx -t",), ("kill", "nginx", "HUP"), ("stop", "app-blue"), ("rm", "app-blue")]
    assert result["steps"][0]["slots_switched"] == [] and result["steps"][0]["slots_started"] == []
    assert result["steps"][0]["slots_removed"] == ["app-blue"]
    assert engine.served == 3
    assert "slots rerouted in place: green" in result["actions"][0]["detail"]
    assert "switch mode" not in actions(result)


def test_a_roll_back_reloads_before_it_removes_the_canary(project):
    engine = deployed(project)
    converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    engine.calls = []
    result = converge(engine, project, live(3, {"blue": BLUE}))
    assert engine.calls == [("nginx -t",), ("kill", "nginx", "HUP"), ("stop", "app-green"), ("rm", "app-green")]
    assert result["steps"][0]["slots_removed"] == ["app-green"]


def test_a_changed_edge_conf_is_tested_with_nginx_conf_and_an_unchanged_one_is_not(project):
    engine = deployed(project)
    engine.nginx_tests = []
    state = live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10)
    edge_step = step(state)
    edge_step["files"]["nginx/edge.conf"] = {"content": "edge listener one\n", "mode": "0644"}
    Converger(StackHost(engine, project, dict(OPTIONS), ActionLog(), http_get=engine.http), [edge_step],
              dict(OPTIONS)).converge()
    assert any("edge listener one\n" in " ".join(argv) for argv in engine.nginx_tests), engine.nginx_tests
    engine.nginx_tests = []
    again = step(dict(state, generation=3, weight=50))
    again["files"]["nginx/edge.conf"] = {"content": "edge listener one\n", "mode": "0644"}
    Converger(StackHost(engine, project, dict(OPTIONS), ActionLog(), http_get=engine.http), [again],
              dict(OPTIONS)).converge()
    assert engine.nginx_tests and not any("edge listener" in " ".join(argv) for argv in engine.nginx_tests)


def test_several_steps_in_one_call_plan_against_each_other(project):
    engine = deployed(project)
    canary = live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10)
    result = converge(engine, project, canary, dict(canary, generation=3, weight=50))
    assert [report["nginx"] for report in result["steps"]] == ["reloaded", "reloaded"]
    assert engine.served == 3 and list(engine.calls).count(("up", "app-green")) == 1


def test_a_refused_nginx_conf_writes_nothing(project):
    engine = deployed(project)
    engine.fail_nginx_test = True
    before = open(os.path.join(project, "state.json")).read()
    with pytest.raises(ConvergeError, match="refused by nginx -t"):
        converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    assert open(os.path.join(project, "state.json")).read() == before
    assert [call for call in engine.calls if call[0] != "nginx -t"] == []


@pytest.mark.parametrize("refused, named", [
    ("conf generation 2", "nginx/nginx.conf"),
    ("edge listener", "nginx/edge.conf"),
])
def test_a_refused_file_is_named_as_itself_nginx_conf_or_edge_conf(project, refused, named):
    engine = deployed(project)
    engine.refuse_conf_with = refused
    with_edge = step(live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    with_edge["files"]["nginx/edge.conf"] = {"content": "edge listener two\n", "mode": "0644"}
    with pytest.raises(ConvergeError) as failed:
        Converger(StackHost(engine, project, dict(OPTIONS), ActionLog(), http_get=engine.http), [with_edge],
                  dict(OPTIONS)).converge()
    message = str(failed.value)
    assert message.startswith("step 1: %s is refused by nginx -t in nginx:latest, nothing was written: " % named), message
    # nginx's own words name the file too, not the test's copy of it.
    assert "/etc/nginx/swiftdeploy/%s:3" % named.split("/")[1] in message and "test-" not in message, message
    assert [call for call in engine.calls if call[0] != "nginx -t"] == []


def test_turning_the_edge_off_removes_it_before_nginx_takes_the_public_port_back(project):
    """nginx.edge true -> false: the edge still holds the public port that the recreated routing
    nginx publishes, so compose up would fail on it (port already allocated): the edge goes first."""
    engine = FakeEngine(project)
    first = step(live(1, {"blue": BLUE}))
    first["files"]["docker-compose.yml"]["content"] = compose({"blue": BLUE}).replace(
        "  nginx:\n    image: nginx:latest\n", "  edge:\n    image: nginx:latest\n  nginx:\n    image: nginx:latest\n"
        "    command: socket\n")
    Converger(StackHost(engine, project, dict(OPTIONS), ActionLog(), http_get=engine.http), [first],
              dict(OPTIONS)).converge()
    assert sorted(engine.containers) == ["app-blue", "edge", "nginx"]
    engine.calls = []
    result = converge(engine, project, live(1, {"blue": BLUE}))
    # nginx's service changed (its command and ports), so compose brings the project up.
    assert engine.calls[:3] == [("stop", "edge"), ("rm", "edge"), ("up", "app-blue", "nginx")], engine.calls
    assert result["steps"][0]["slots_removed"] == ["edge"] and sorted(engine.containers) == ["app-blue", "nginx"]


def with_edge(state, listener):
    """step(state) of a stack with an edge nginx (nginx.edge) whose edge.conf says `listener`."""
    wanted = step(state)
    wanted["files"]["docker-compose.yml"]["content"] = compose(state["slots"]).replace(
        "  nginx:\n", "  edge:\n    image: nginx:latest\n  nginx:\n")
    wanted["files"]["nginx/edge.conf"] = {"content": "edge listener %s\n" % listener, "mode": "0644"}
    return wanted


def converge_steps(engine, project, *steps, check=False, options=None):
    options = dict(OPTIONS, **(options or {}))
    host_class, host_engine = (DryRunStackHost, DryRunEngine(engine)) if check else (StackHost, engine)
    host = host_class(host_engine, project, options, ActionLog(), http_get=engine.http)
    return Converger(host, list(steps), options).converge()


def deployed_with_edge(project):
    engine = FakeEngine(project)
    converge_steps(engine, project, with_edge(live(1, {"blue": BLUE}), "one"))
    assert sorted(engine.containers) == ["app-blue", "edge", "nginx"]
    engine.calls, engine.nginx_tests = [], []
    return engine


def test_a_changed_edge_conf_is_loaded_in_place_by_the_running_edge(project):
    """A new listener (a renewed TLS pair): tested in the running edge before it is written, then
    nginx -t on the written file there, SIGHUP, confirmed by new workers; never a new container."""
    engine = deployed_with_edge(project)
    result = converge_steps(engine, project, with_edge(live(1, {"blue": BLUE}), "two"))
    assert engine.calls == [("nginx -t",), ("nginx -t in the edge", "/etc/nginx/swiftdeploy/edge.conf"),
                            ("kill", "edge", "HUP")], engine.calls
    assert engine.nginx_tests[0][:3] == ["docker", "exec", "id-edge"], engine.nginx_tests
    assert engine.edge_workers == {18, 19}
    assert result["files_changed"] == ["nginx/edge.conf"]
    assert {key: result["steps"][0][key] for key in ("edge", "nginx", "slots_started")} == \
        {"edge": "reloaded", "nginx": "unchanged", "slots_started": []}
    order = actions(result)
    assert order.index("write") < order.index("test edge.conf") < order.index("reload edge") < order.index("wait edge")
    assert "compose up" not in order
    assert [action["detail"] for action in result["actions"] if action["action"] == "wait edge"] == \
        ["the edge runs 2 new worker(s): nginx/edge.conf loaded"]
    # The same files again: nothing to load.
    engine.calls = []
    again = converge_steps(engine, project, with_edge(live(1, {"blue": BLUE}), "two"))
    assert engine.calls == [] and again["steps"][0]["edge"] == "unchanged"


def test_the_edge_loads_its_new_listener_before_the_routing_nginx_switches(project):
    engine = deployed_with_edge(project)
    converge_steps(engine, project, with_edge(live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10), "two"))
    assert engine.calls.index(("kill", "edge", "HUP")) < engine.calls.index(("kill", "nginx", "HUP")), engine.calls
    assert engine.served == 2


def test_an_edge_that_does_not_load_its_file_fails_the_step_before_nginx_switches(project, monkeypatch):
    monkeypatch.setattr(stack_host, "EDGE_RELOAD_TIMEOUT", 0.3)
    engine = deployed_with_edge(project)
    engine.edge_loads = False
    with pytest.raises(ConvergeError) as failed:
        converge_steps(engine, project, with_edge(live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10),
                                                  "two"))
    message = str(failed.value)
    assert message.startswith("step 1: the edge demo-edge-1 did not load the new nginx/edge.conf within 0.3 s: its "
                              "nginx started no new worker after SIGHUP, so it still serves its previous listener "
                              "(last log lines: 2026-12-07T10:00:00Z listening | "), message
    assert "logs edge`" in message
    assert ("kill", "nginx", "HUP") not in engine.calls and engine.served == 1
    # Undone, so that the next run finds the change again: the canary removed, the files put back.
    assert "so the step was undone (removed app-green; put back " in message, message
    assert "app-green" not in engine.containers
    assert open(os.path.join(project, "nginx", "edge.conf")).read() == "edge listener one\n"
    assert json.load(open(os.path.join(project, "state.json")))["generation"] == 1


def test_an_edge_conf_refused_inside_the_edge_is_named_and_nothing_is_signalled(project):
    """Without the test before writing (validate_nginx false), the edge's own nginx -t still
    stands between the file and the reload."""
    engine = deployed_with_edge(project)
    engine.refuse_conf_with = "listener two"
    with pytest.raises(ConvergeError) as failed:
        converge_steps(engine, project, with_edge(live(1, {"blue": BLUE}), "two"), options={"validate_nginx": False})
    assert str(failed.value) == (
        "step 1: nginx/edge.conf is refused by nginx -t in the running edge demo-edge-1, so the edge was not reloaded "
        "and serves its previous listener: nginx: [emerg] unknown directive in /etc/nginx/swiftdeploy/edge.conf:3\n"
        "Nothing was routed to this step's slots, so the step was undone (put back nginx/edge.conf): the stack serves "
        "what it served before.")
    assert [call for call in engine.calls if call[0] == "kill"] == []


def test_an_edge_that_is_not_running_is_started_with_its_new_file_not_reloaded(project):
    engine = deployed_with_edge(project)
    del engine.containers["edge"]
    result = converge_steps(engine, project, with_edge(live(1, {"blue": BLUE}), "two"))
    assert ("kill", "edge", "HUP") not in engine.calls and "edge" in engine.containers
    assert result["steps"][0]["edge"] == "unchanged" and "compose up" in actions(result)


def test_check_mode_says_the_edge_would_be_reloaded_and_signals_nothing(project):
    engine = deployed_with_edge(project)
    result = converge_steps(engine, project, with_edge(live(1, {"blue": BLUE}), "two"), check=True)
    assert [call for call in engine.calls if call[0] != "nginx -t"] == []
    reload = [action for action in result["actions"] if action["action"] == "reload edge"]
    assert len(reload) == 1 and reload[0]["detail"].endswith(ActionLog.NOT_RUN), result["actions"]
    assert open(os.path.join(project, "nginx", "edge.conf")).read() == "edge listener one\n"


@pytest.mark.parametrize("out, parsed", [
    ("7\n8\n9\n", (7, frozenset((8, 9)))),
    ("7\n", (7, frozenset())),
    (" 12 \n 30\n\n", (12, frozenset((30,)))),
])
def test_the_edge_processes_are_read_as_its_master_then_its_workers(out, parsed):
    assert parse_edge_workers(out) == parsed


@pytest.mark.parametrize("out", ["", "nginx: [emerg] open() failed\n", "0\n", "7\nworker\n"])
def test_anything_but_pids_is_not_taken_for_the_edge_processes(out):
    with pytest.raises(ValueError):
        parse_edge_workers(out)


@pytest.mark.parametrize("before, after, fresh", [
    ((7, {8, 9}), (7, {8, 9}), set()),              # HUP not handled yet, or the file refused
    ((7, {8, 9}), (7, {8, 9, 18, 19}), {18, 19}),   # new workers, the old ones still finishing
    ((7, {8, 9}), (7, {18, 19}), {18, 19}),         # the old ones gone
    ((7, {8, 9}), (7, {8}), set()),                 # a worker ended, none started
    ((7, {8, 9}), (3, {4, 5}), {4, 5}),             # another master: it read the file as it started
])
def test_only_workers_the_master_did_not_run_before_confirm_a_reload(before, after, fresh):
    assert new_workers((before[0], frozenset(before[1])), (after[0], frozenset(after[1]))) == fresh


def test_the_edge_command_tests_the_file_first_only_when_asked():
    plain = edge_workers_argv("docker", "c1")
    tested = edge_workers_argv("docker", "c1", "/etc/nginx/swiftdeploy/edge.conf")
    assert plain[:6] == ["docker", "exec", "c1", "sh", "-c", plain[5]] and plain[6:] == ["sh", "/tmp/nginx.pid"]
    assert "nginx -t" not in plain[5]
    assert tested[5].startswith('nginx -t -q -c "$2" || exit 3; ') and tested[-1] == "/etc/nginx/swiftdeploy/edge.conf"


def test_a_slot_that_never_gets_healthy_is_removed_and_the_files_put_back(project):
    engine = deployed(project)
    names = ("state.json", "nginx/nginx.conf", "docker-compose.yml")
    before = dict((name, open(os.path.join(project, name)).read()) for name in names)
    engine.unhealthy.add("app-green")
    with pytest.raises(ConvergeError) as failed:
        converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    message = str(failed.value)
    assert "app-green" in message and "the step was undone (removed app-green; put back " in message, message
    assert "the stack serves what it served before" in message
    assert message.endswith("Last log lines of demo-app-green-1:\n  2026-12-07T10:00:00Z listening"
                            "\n  2026-12-07T10:00:01Z health: 503"), message
    # Started, never routed to (no reload), then removed; the files are the deployed ones again.
    assert engine.calls == [("nginx -t",), ("up", "app-green"), ("stop", "app-green"), ("rm", "app-green")]
    assert dict((name, open(os.path.join(project, name)).read()) for name in names) == before
    assert not os.path.exists(os.path.join(project, "slots", "green", "mode"))
    assert sorted(engine.containers) == ["app-blue", "nginx"] and engine.served == 1
    # The next run plans the same canary again from the deployed state, and now it starts.
    engine.unhealthy.clear()
    engine.calls = []
    converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    assert engine.calls == [("nginx -t",), ("up", "app-green"), ("kill", "nginx", "HUP")]


def test_a_reload_an_interrupted_run_never_made_is_made(project):
    engine = deployed(project)
    engine.served = 0  # the file says 1; nginx was never told
    result = converge(engine, project, live(1, {"blue": BLUE}))
    assert engine.calls == [("kill", "nginx", "HUP")] and engine.served == 1
    assert result["steps"][0]["nginx"] == "reloaded"


@pytest.mark.parametrize("target, wanted", [
    (live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10), ["start slots", "reload nginx"]),
    (live(2, {"green": dict(BLUE, version="1.0.1", image="app:1.0.1")}, stable="green"),
     ["start slots", "reload nginx", "remove slots"]),
])
def test_check_mode_changes_nothing_and_says_what_it_would_do(project, target, wanted):
    engine = deployed(project)
    files_before = sorted(os.listdir(project))
    state_before = open(os.path.join(project, "state.json")).read()
    result = converge(engine, project, target, check=True)
    assert [call for call in engine.calls if call[0] != "nginx -t"] == []
    assert open(os.path.join(project, "state.json")).read() == state_before
    assert sorted(os.listdir(project)) == files_before
    assert result["changed"] is True
    not_run = [action["action"] for action in result["actions"] if action["detail"].endswith("(check mode: not run)")]
    for action in wanted + ["write"]:
        assert action in not_run
    assert "state.json" in result["files_changed"]


def test_check_mode_of_a_first_deploy_asks_nothing_of_a_project_that_does_not_exist(project):
    engine = FakeEngine(project)
    result = converge(engine, project, live(1, {"blue": BLUE}), check=True)
    assert not os.path.exists(project) and engine.calls == [("nginx -t",)]
    assert result["steps"][0]["slots_started"] == ["blue"]


def test_the_state_file_is_written_last_so_a_dead_run_replans_the_same_work(project):
    engine = deployed(project)
    result = converge(engine, project, live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
    assert result["files_changed"][-1] == "state.json"
    assert open(os.path.join(project, "state.json")).read() == state_text(
        live(2, {"blue": BLUE, "green": GREEN}, canary="green", weight=10))
