"""A team's own service (the third-party-style image, not the example app) deployed for real.

The stack sdsvc (ports 27480/27482) runs thirdparty-app (tests/fixtures/thirdparty_app): port
8000, health on /ready, no HEALTHCHECK and nothing to run one with, uid 20000, read-only root
with two tmpfs paths, its own command, an env variable, one secret delivered as a file and one
as an environment variable. The tests run in order on one stack:
  deploy -> the app answers through nginx with the env value and the secrets' digests;
  a new secret value -> a blue/green rollout, recorded by its keyed hash (at -vvv with --diff);
  another new value in check mode (-vvv --diff) -> planned, nothing written;
  the same through ansible-runner at verbosity 3 (AWX's way) -> rolled out;
  a canary of thirdparty-app:2 (promote.yml) -> it gets the secrets too; rollback.yml ends it;
  a secret without a value -> refused, naming it, nothing changed;
  and last, every file under the project directory, every play output and the runner's
  artifacts are searched for every secret value used: each is found only in its secret file.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import ansible_runner
import pytest
import yaml

from helpers import http_get  # tests/integration/helpers.py

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT, ADMIN_PORT = "sdsvc", 27480, 27482
# Each value carries a marker that shows in any encoding (JSON, YAML, the env file's quoting).
FILE_SECRETS = ["file-secret-ALPHA91c2e7", "file-secret-BRAVO4d8f30"]
ENV_SECRETS = ["env-secret-CHARLIE77ab1f'\"$HOME\\n end", "env-secret-DELTA0e5c9a", "env-secret-ECHO5a11d3"]
MARKERS = ["ALPHA91c2e7", "BRAVO4d8f30", "CHARLIE77ab1f", "DELTA0e5c9a", "ECHO5a11d3"]
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def get(port, path="/"):
    """One GET on a fresh connection: (status, body bytes)."""
    status, _headers, body = http_get(port, path)
    return status, body


class OwnService:
    def __init__(self, root, run_playbook, thirdparty_app, repo_root, ansible_env):
        self.root = root
        self.project = root / "project"
        self.manifest = root / "manifest.yml"
        self.repo_root = repo_root
        self.ansible_env = ansible_env
        data = thirdparty_app.manifest(
            NAME, PORT, ADMIN_PORT, tag="1",
            env={"GREETING": "hello $USER from the manifest", "SCRATCH_DIR": "/scratch"},
            secrets=["api_key", {"name": "API_TOKEN", "env": True}],
            command=["python3", "-u", "/opt/thirdparty/thirdparty_app.py"],
            user="%d:%d" % (thirdparty_app.uid, thirdparty_app.gid),
            tmpfs=["/tmp", {"path": "/scratch", "size": "8m"}],
            healthcheck={"path": thirdparty_app.health_path, "interval": 0.5, "timeout": 1, "retries": 4,
                         "start_period": 2, "docker": False})
        self.manifest.write_text(yaml.safe_dump(data, sort_keys=False))
        self._run = run_playbook
        self.outputs = {}  # every play's output, for the leak search

    def secrets_file(self, **values):
        path = self.root / "secrets.yml"
        path.write_text(yaml.safe_dump({"swiftdeploy_secrets": values}))
        path.chmod(0o600)
        return path

    def run(self, label, playbook, *args, secrets=None, **kwargs):
        extra = ["-e", "@%s" % secrets] if secrets else []
        run = self._run(playbook, "-e", "swiftdeploy_manifest=%s" % self.manifest,
                        "-e", "swiftdeploy_project_dir=%s" % self.project, *extra, *args, **kwargs)
        self.outputs[label] = run.stdout + run.stderr
        return run

    def state(self):
        return json.loads((self.project / "state.json").read_text())

    def history(self):
        return [json.loads(line) for line in (self.project / "history.jsonl").read_text().splitlines()]

    def stable_spec(self):
        state = self.state()
        return state["slots"][state["stable"]]


@pytest.fixture(scope="module")
def service(tmp_path_factory, run_playbook, thirdparty_app, repo_root, ansible_env):
    stack = OwnService(tmp_path_factory.mktemp("own-service"), run_playbook, thirdparty_app, repo_root, ansible_env)
    try:
        yield stack
    finally:
        stack.run("teardown", "teardown", "-e", "clean=true")
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % NAME],
                              capture_output=True, text=True, check=False).stdout.split()
        subprocess.run(["docker", "volume", "rm", "-f", "%s-logs" % NAME], capture_output=True, check=False)
        assert left == [], "teardown left containers of %s: %s" % (NAME, left)
        assert not (stack.project / "secrets").exists(), "teardown left the secrets behind"


def test_first_deploy(service):
    secrets = service.secrets_file(api_key=FILE_SECRETS[0], API_TOKEN=ENV_SECRETS[0])
    run = service.run("deploy-1", "deploy", secrets=secrets)
    assert run.rc == 0, run.describe()
    assert "Stack %s is healthy" % NAME in run.stdout


def test_the_app_answers_through_nginx_with_its_env_and_secrets(service, thirdparty_app):
    status, body = get(PORT)
    assert status == 200, body
    data = json.loads(body)
    assert data["app"] == "thirdparty-app" and data["version"] == thirdparty_app.versions["1"]
    # `$USER` reached the app as written: compose did not interpolate it.
    assert data["greeting"] == "hello $USER from the manifest"
    assert data["secret_file_sha256"] == sha256(FILE_SECRETS[0])
    # Quotes, `$` and a backslash went through the env file unchanged.
    assert data["secret_env_sha256"] == sha256(ENV_SECRETS[0])
    assert (data["uid"], data["gid"]) == (thirdparty_app.uid, thirdparty_app.gid)
    assert data["root_writable"] is False and data["scratch_writable"] is True
    # Its health path, from outside, through nginx's admin listener.
    assert get(ADMIN_PORT, "/slots/%s/healthz" % service.state()["stable"]) == (200, b"ready\n")
    assert get(PORT, "/ready") == (200, b"ready\n")


def test_the_secrets_on_the_host_are_the_containers_users_only(service, thirdparty_app):
    spec = service.stable_spec()
    digest = spec["secrets"]
    assert DIGEST.match(digest)
    # A keyed hash: not the plain SHA-256 of a value.
    assert digest not in {sha256(value) for value in FILE_SECRETS + ENV_SECRETS}
    directory = service.project / "secrets" / digest
    files = directory / "files"
    assert oct(directory.stat().st_mode & 0o7777) == "0o700"
    assert oct(files.stat().st_mode & 0o7777) == "0o500"
    assert (files.stat().st_uid, files.stat().st_gid) == (thirdparty_app.uid, thirdparty_app.gid)
    secret = files / "api_key"
    assert oct(secret.stat().st_mode & 0o7777) == "0o400" and secret.stat().st_uid == thirdparty_app.uid
    assert secret.read_text() == FILE_SECRETS[0]
    assert sorted(path.name for path in files.iterdir()) == ["api_key"]
    env = directory / "env"
    assert oct(env.stat().st_mode & 0o7777) == "0o400" and env.stat().st_uid == 0
    key = service.project / "secrets" / "hmac.key"
    assert oct(key.stat().st_mode & 0o7777) == "0o600"
    compose = (service.project / "docker-compose.yml").read_text()
    assert "org.swiftdeploy.secrets-hmac: %s" % digest in compose
    # Inside, the file is readable by the container's user only.
    container = "%s-app-%s-1" % (NAME, service.state()["stable"])
    listing = subprocess.run(["docker", "exec", container, "ls", "-ln", "/run/secrets/api_key"],
                             capture_output=True, text=True, check=False)
    assert listing.stdout.startswith("-r-------- 1 %d %d " % (thirdparty_app.uid, thirdparty_app.gid)), listing


def test_a_new_secret_value_is_rolled_out_and_recorded_by_its_hash(service):
    before = service.state()
    run = service.run("deploy-2-vvv-diff", "deploy", "-vvv",
                      secrets=service.secrets_file(api_key=FILE_SECRETS[1], API_TOKEN=ENV_SECRETS[0]), diff=True)
    assert run.rc == 0, run.describe()
    after = service.state()
    assert after["stable"] != before["stable"], "a new secret value must go to the idle slot"
    assert list(after["slots"]) == [after["stable"]]
    new, old = after["slots"][after["stable"]]["secrets"], before["slots"][before["stable"]]["secrets"]
    assert DIGEST.match(new) and new != old
    deploy = [event for event in service.history() if event["event"] == "deploy"][-1]
    assert deploy["details"]["secrets_hmac"] == new and deploy["details"]["changed"] is True
    assert json.loads(get(PORT)[1])["secret_file_sha256"] == sha256(FILE_SECRETS[1])
    # The old set stays until its slot has gone (the next run removes it).
    assert (service.project / "secrets" / old).is_dir()


def test_the_same_secrets_change_nothing_but_remove_the_old_set(service):
    before = service.state()
    compose = (service.project / "docker-compose.yml").read_text()
    run = service.run("deploy-3-same", "deploy",
                      secrets=service.secrets_file(api_key=FILE_SECRETS[1], API_TOKEN=ENV_SECRETS[0]))
    assert run.rc == 0, run.describe()
    assert service.state() == before and (service.project / "docker-compose.yml").read_text() == compose
    assert re.search(r"TASK \[swiftdeploy.stack.swiftdeploy : Bring the stack through the states\] \**\nok:", run.stdout), \
        run.stdout
    digests = [path.name for path in (service.project / "secrets").iterdir() if DIGEST.match(path.name)]
    assert digests == [service.stable_spec()["secrets"]], "the set no slot uses was not removed"


def test_check_mode_plans_the_rollout_and_writes_nothing(service):
    before = service.state()
    listing = sorted(str(path) for path in (service.project / "secrets").rglob("*"))
    run = service.run("deploy-4-check-vvv-diff", "deploy", "-vvv",
                      secrets=service.secrets_file(api_key=FILE_SECRETS[1], API_TOKEN=ENV_SECRETS[1]), check=True)
    assert run.rc == 0, run.describe()
    assert service.state() == before
    assert sorted(str(path) for path in (service.project / "secrets").rglob("*")) == listing
    assert "slots added" in run.stdout


def test_deploy_through_ansible_runner_at_verbosity_3(service, tmp_path_factory, repo_root, ansible_env):
    private = tmp_path_factory.mktemp("runner") / "private"
    project = private / "project"
    project.mkdir(parents=True)
    (project / "playbooks").symlink_to(repo_root / "playbooks", target_is_directory=True)
    shutil.copy(repo_root / "ansible.cfg", project / "ansible.cfg")
    shutil.copy(service.manifest, project / "manifest.yml")
    (private / "inventory").mkdir()
    host = {"ansible_connection": "local", "ansible_python_interpreter": str(repo_root / ".venv" / "bin" / "python"),
            "swiftdeploy_project_dir": str(service.project)}
    (private / "inventory" / "hosts.yml").write_text(yaml.safe_dump({"swiftdeploy": {"hosts": {"localhost": host}}}))
    (private / "env").mkdir()
    (private / "env" / "envvars").write_text(yaml.safe_dump({
        "ANSIBLE_COLLECTIONS_PATH": str(repo_root / ".collections"), "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "PATH": ansible_env["PATH"], "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}))
    # An AWX credential hands its values to the job as extra variables (env/, not artifacts/).
    (private / "env" / "extravars").write_text(yaml.safe_dump({
        "swiftdeploy_secrets": {"api_key": FILE_SECRETS[1], "API_TOKEN": ENV_SECRETS[2]}}))
    runner = ansible_runner.run(private_data_dir=str(private), playbook="playbooks/deploy.yml", ident="deploy",
                                quiet=True, timeout=900, verbosity=3)
    service.outputs["runner"] = runner.stdout.read()
    service.runner_artifacts = private / "artifacts"
    assert runner.rc == 0 and runner.status == "successful", service.outputs["runner"]
    assert json.loads(get(PORT)[1])["secret_env_sha256"] == sha256(ENV_SECRETS[2])


def test_a_canary_of_the_next_version_gets_the_secrets_too(service, thirdparty_app):
    data = yaml.safe_load(service.manifest.read_text())
    data["canary"] = {"image": thirdparty_app.images["2"], "version": thirdparty_app.versions["2"], "weight": 50}
    canary_manifest = service.root / "canary.yml"
    canary_manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    secrets = service.secrets_file(api_key=FILE_SECRETS[1], API_TOKEN=ENV_SECRETS[2])
    run = service.run("promote-canary", "promote", "-e", "mode=canary", "-e", "swiftdeploy_manifest=%s" % canary_manifest,
                      secrets=secrets)
    assert run.rc == 0, run.describe()
    state = service.state()
    canary = state["slots"][state["canary"]]
    assert canary["image"] == thirdparty_app.images["2"] and DIGEST.match(canary["secrets"])
    answers = [json.loads(get(PORT)[1]) for _request in range(40)]
    versions = {answer["version"] for answer in answers}
    assert versions == {thirdparty_app.versions["1"], thirdparty_app.versions["2"]}, versions
    assert {answer["secret_file_sha256"] for answer in answers} == {sha256(FILE_SECRETS[1])}
    assert {answer["secret_env_sha256"] for answer in answers} == {sha256(ENV_SECRETS[2])}
    run = service.run("rollback", "rollback", "-e", "swiftdeploy_manifest=%s" % canary_manifest, secrets=secrets)
    assert run.rc == 0, run.describe()
    assert service.state()["canary"] is None


def test_a_secret_without_a_value_is_refused_by_name(service):
    before = service.state()
    run = service.run("deploy-5-missing", "deploy", secrets=service.secrets_file(api_key=FILE_SECRETS[1]))
    assert run.rc != 0
    assert "services.secrets names API_TOKEN, but the variable swiftdeploy_secrets has no value for it" in run.output, \
        run.describe()
    assert service.state() == before


def test_no_secret_value_leaks_anywhere_but_its_file(service):
    def search(text):
        return [marker for marker in MARKERS if marker in text]

    found = {}
    for label, text in service.outputs.items():
        if search(text):
            found["output of %s" % label] = search(text)
    roots = [service.project] + ([service.runner_artifacts] if hasattr(service, "runner_artifacts") else [])
    assert len(roots) == 2, "the ansible-runner test did not run"
    allowed = re.compile(r"/secrets/[0-9a-f]{64}/(files/api_key|env)$")
    in_secret_files = set()
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            hits = search(path.read_bytes().decode("utf-8", "replace"))
            if hits and allowed.search(str(path)):
                in_secret_files.update(hits)
            elif hits:
                found[str(path)] = hits
    assert found == {}, "secret values found outside their files: %s" % found
    # The search can fail: the values in use are where they belong.
    assert {"BRAVO4d8f30", "ECHO5a11d3"} <= in_secret_files
    assert len(service.outputs) >= 6 and any(len(text) > 20000 for text in service.outputs.values())
