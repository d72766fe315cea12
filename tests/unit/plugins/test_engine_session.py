"""The Docker engine interface (CLI over a recorded runner, the dry run) and a run's session
(the lock check before a write, the actor's defaults, events before the release)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._docker_api import DockerApiError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import (
    ApiEngine,
    CliEngine,
    DryRunEngine,
    EngineError,
    containers_started,
    open_engine,
    parse_compose_ps,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._lock import acquire
from ansible_collections.swiftdeploy.stack.plugins.module_utils._session import Layout, Session, SessionError, actor_of


class Runner(object):
    """Answers docker commands from a table and records them."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.argvs = []

    def __call__(self, argv):
        self.argvs.append(list(argv))
        for words, answer in self.answers.items():
            if all(word in argv for word in words.split()):
                return answer
        return 0, "", ""


PS = "\n".join(json.dumps(entry) for entry in [
    {"Service": "app-blue", "State": "running", "Name": "demo-app-blue-1", "ID": "a1"},
    {"Service": "nginx", "State": "running", "Name": "demo-nginx-1", "ID": "n1"}])


def test_cli_engine_builds_compose_commands_for_the_project():
    runner = Runner({"ps": (0, PS, "")})
    engine = CliEngine("/usr/bin/docker", runner)
    assert [entry["Service"] for entry in engine.ps("/srv/demo")] == ["app-blue", "nginx"]
    engine.compose_up("/srv/demo", ["app-green"])
    engine.compose_up("/srv/demo", wait_timeout=60)
    assert runner.argvs == [
        ["/usr/bin/docker", "compose", "--project-directory", "/srv/demo", "ps", "--all", "--format", "json"],
        ["/usr/bin/docker", "compose", "--project-directory", "/srv/demo", "up", "-d", "app-green"],
        ["/usr/bin/docker", "compose", "--project-directory", "/srv/demo", "up", "-d", "--wait", "--wait-timeout", "60"]]


def test_a_failed_docker_command_is_one_sentence_with_the_command():
    engine = CliEngine("docker", Runner({"up": (1, "", "Error response from daemon: no such image\n")}))
    with pytest.raises(EngineError) as caught:
        engine.compose_up("/srv/demo", ["app-blue"])
    assert str(caught.value) == ("docker compose up failed (rc=1): Error response from daemon: no such image\n"
                                 "command: docker compose --project-directory /srv/demo up -d app-blue")


def test_a_missing_compose_plugin_says_what_to_install():
    engine = CliEngine("docker", Runner({"ps": (1, "", "docker: 'compose' is not a docker command.")}))
    with pytest.raises(EngineError, match=r"the docker compose plugin \(v2\) is not installed on this host"):
        engine.ps("/srv/demo")


def test_ps_that_is_not_json_is_named():
    engine = CliEngine("docker", Runner({"ps": (0, "garbage", "")}))
    with pytest.raises(EngineError, match="docker compose ps --format json printed something that is not JSON"):
        engine.ps("/srv/demo")


def test_the_dry_run_reads_for_real_and_changes_nothing(tmp_path):
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    runner = Runner({"ps": (0, PS, "")})
    engine = DryRunEngine(CliEngine("docker", runner))
    assert len(engine.ps(str(tmp_path))) == 2
    engine.compose_up(str(tmp_path), ["app-green"])
    engine.kill("n1", "HUP")
    engine.stop("demo-app-blue-1", 10)
    engine.remove("demo-app-blue-1")
    down = engine.compose_down(str(tmp_path), 5)
    assert [argv[4] for argv in runner.argvs] == ["ps", "ps"]  # the two reads, nothing else
    assert engine.changes == [("compose up", "app-green"), ("kill --signal HUP", "n1"), ("stop", "demo-app-blue-1"),
                              ("remove", "demo-app-blue-1"), ("compose down", str(tmp_path))]
    assert down == " Container demo-app-blue-1  Removed\n Container demo-nginx-1  Removed\n"
    assert engine.dry_run is True


def test_the_dry_run_shows_what_simulated_changes_leave(tmp_path):
    engine = DryRunEngine(CliEngine("docker", Runner()))
    assert engine.ps(str(tmp_path)) == []  # no compose file: nothing was ever deployed, nothing asked
    engine.simulate([{"Service": "app-blue", "State": "running", "Name": "app-blue", "ID": "", "simulated": True}])
    assert engine.simulating and engine.inspect("app-blue")["State"]["Health"]["Status"] == "healthy"
    engine.remove("app-blue")
    assert engine.ps(str(tmp_path)) == []


def test_survey_asks_images_and_the_data_root_side_by_side():
    engine = CliEngine("docker", Runner())
    engine.side_by_side = lambda argvs: [(0, "sha256:1\n", "", 0.1), (1, "", "No such image", 0.1),
                                         (0, "/var/lib/docker\n", "", 0.1)]
    assert engine.survey(["app:1", "app:2"], root_dir=True) == {
        "images": {"app:1": "sha256:1", "app:2": None}, "root_dir": "/var/lib/docker"}


class FakeApi(object):
    """The engine's socket: image IDs from a table, or no answer at all."""

    def __init__(self, ids, root="/srv/docker", answers=True):
        self.ids, self.root, self.answers, self.asked = ids, root, answers, []

    def image_id(self, image):
        self.asked.append(image)
        if not self.answers:
            raise DockerApiError("the Docker engine at /run/docker.sock did not answer")
        return self.ids.get(image)

    def root_dir(self):
        return self.root


def api_engine(api, runner=None):
    engine = ApiEngine("docker", "/run/docker.sock", runner or Runner())
    engine.api = api
    return engine


def test_the_api_engine_surveys_through_the_socket_without_starting_the_cli():
    runner = Runner()
    engine = api_engine(FakeApi({"app:1": "sha256:1"}), runner)
    engine.side_by_side = lambda argvs: pytest.fail("the CLI was started: %s" % argvs)
    assert engine.survey(["app:1", "app:2", "app:1"], root_dir=True) == {
        "images": {"app:1": "sha256:1", "app:2": None}, "root_dir": "/srv/docker"}
    assert engine.survey(["app:1"]) == {"images": {"app:1": "sha256:1"}, "root_dir": None}
    assert runner.argvs == []


def test_an_engine_socket_that_does_not_answer_leaves_the_survey_to_the_cli():
    api = FakeApi({}, answers=False)
    engine = api_engine(api)
    engine.side_by_side = lambda argvs: [(0, "sha256:1\n", "", 0.1), (0, "/var/lib/docker\n", "", 0.1)]
    assert engine.survey(["app:1"], root_dir=True) == {"images": {"app:1": "sha256:1"}, "root_dir": "/var/lib/docker"}
    assert api.asked == ["app:1"]


def test_no_docker_cli_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("ansible_collections.swiftdeploy.stack.plugins.module_utils._engine.docker_cli", lambda: None)
    with pytest.raises(EngineError, match="the docker CLI is not on PATH on this host"):
        open_engine()


def test_compose_output_parsers():
    assert parse_compose_ps('[{"Service": "nginx"}]') == [{"Service": "nginx"}]
    assert containers_started(" Container demo-nginx-1  Recreated\n Container demo-app-blue-1  Running\n") == {
        "demo-nginx-1"}


# --------------------------------------------------------------------------------------------
# Session
# --------------------------------------------------------------------------------------------

def test_layout_names_every_file_of_a_project(tmp_path):
    layout = Layout(str(tmp_path / "demo"))
    assert (layout.state, layout.history, layout.lock, layout.compose) == tuple(
        str(tmp_path / "demo" / name) for name in ("state.json", "history.jsonl", ".swiftdeploy.lock",
                                                   "docker-compose.yml"))
    assert layout.slot_dir("blue") == str(tmp_path / "demo" / "slots" / "blue")


def test_the_actor_defaults_to_the_login_name_and_drops_nulls(monkeypatch):
    monkeypatch.setattr("ansible_collections.swiftdeploy.stack.plugins.module_utils._session.current_user",
                        lambda: "deployer")
    assert actor_of(None) == {"user": "deployer"}
    assert actor_of({"user": None, "awx_job_id": None, "playbook": "deploy"}) == {"user": "deployer",
                                                                                  "playbook": "deploy"}
    assert actor_of({"user": "ci"}) == {"user": "ci"}


def held(tmp_path, user="owner"):
    path = str(tmp_path / ".swiftdeploy.lock")
    return {"path": path, "token": acquire(path, {"user": user}, host="h", pid=1)["token"]}


def test_events_are_recorded_before_the_lock_is_given_back(tmp_path):
    lock = held(tmp_path)
    session = Session(str(tmp_path / "history.jsonl"), {"user": "ci"}, lock, stack="demo", version="1.0.0",
                      mode="stable")
    session.check_lock()
    record = session.record("deploy", {"port": 8080})
    assert session.release() is True and not os.path.exists(lock["path"])
    assert (record["seq"], record["event"], record["actor"], record["stack"]) == (1, "deploy", {"user": "ci"}, "demo")
    assert session.anchor() == {"records": [record], "seq": 1, "hash": record["hash"],
                                "history_path": str(tmp_path / "history.jsonl")}


def test_a_write_under_a_lock_this_run_does_not_hold_is_refused(tmp_path):
    lock = held(tmp_path, "someone-else")
    mine = Session(str(tmp_path / "history.jsonl"), {"user": "me"}, dict(lock, token="0" * 32))
    with pytest.raises(SessionError, match=r"is held by someone-else on host h since .*, not by this run; nothing was "
                                           r"changed"):
        mine.check_lock()
    os.unlink(lock["path"])
    with pytest.raises(SessionError, match="is not held .*; nothing was changed: run the playbook again"):
        mine.check_lock()


def test_checking_the_lock_refreshes_its_heartbeat_and_keep_holds_it(tmp_path):
    lock = held(tmp_path)
    os.utime(lock["path"], (1000, 1000))
    session = Session(str(tmp_path / "history.jsonl"), None, dict(lock, keep=True))
    session.check_lock()
    assert os.stat(lock["path"]).st_mtime > 1000, "a write under the lock is a heartbeat"
    session.record("lock_takeover")
    assert session.release() is None and os.path.exists(lock["path"]), "keep: the run's next module releases it"


def test_a_lock_lost_during_the_work_names_what_was_done(tmp_path):
    lock = held(tmp_path)
    session = Session(str(tmp_path / "history.jsonl"), None, lock)
    with session.keep_alive() as keeper:
        assert keeper.token == lock["token"]
    os.unlink(lock["path"])
    with pytest.raises(SessionError, match=r"is not held \(it was never taken, released, or taken over as dead\); "
                                           r"the converge ran, but its after events were not recorded: run the"):
        session.check_lock("the converge ran, but its after events were not recorded")


def test_check_mode_previews_and_checks_nothing(tmp_path):
    session = Session(str(tmp_path / "history.jsonl"), None, {"path": str(tmp_path / "none.lock"), "token": "x"},
                      check_mode=True)
    session.check_lock()
    assert session.record("deploy")["seq"] == 1
    assert not (tmp_path / "history.jsonl").exists()
    assert session.release() is False


# stack_converge's after events: the converge's outcome is added unless the event says outcome:
# false (a rolling deploy's rollout_batch, recorded as audit_event would record it), and an
# event's own version replaces history.version.
@pytest.mark.parametrize("outcome, version, details, recorded_version", [
    (True, None, {"port": 8080, "changed": True, "slots": {"blue": {"version": "2.0.0"}}}, "1.0.0"),
    (False, None, {"port": 8080}, "1.0.0"),
    (False, "2.0.0", {"port": 8080}, "2.0.0"),
])
def test_converge_after_events_with_and_without_the_outcome(tmp_path, outcome, version, details, recorded_version):
    from ansible_collections.swiftdeploy.stack.plugins.modules.stack_converge import record as record_events

    session = Session(str(tmp_path / "history.jsonl"), None, None, stack="demo", version="1.0.0", mode="stable")
    event = {"event": "rollout_batch", "when": "after", "mode": None, "version": version, "details": {"port": 8080},
             "outcome": outcome}
    record_events(session, [event], "before")
    assert session.records == [], "an after event waits for the converge"
    record_events(session, [event], "after", changed=True, slots={"blue": {"version": "2.0.0"}})
    (record,) = session.records
    assert (record["event"], record["details"], record["version"], record["mode"]) == (
        "rollout_batch", details, recorded_version, "stable")
