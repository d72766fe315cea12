"""The lifecycle playbooks run unattended under ansible-runner, the way AWX runs a job.

One stack (sdrunner, ports 17380/17382) goes through deploy, promote to a canary, status,
promote to stable (judged on real traffic), audit and teardown, each launched from its job
template in awx/job_templates.yml as AWX would launch it:
  - a private data directory per run (AWX's layout): project/ is the project checkout (the
    playbooks, the repository's ansible.cfg, the stack's manifest.yml at its root), inventory/
    holds the Docker host (localhost, local connection; its project directory as a host
    variable), env/envvars the execution environment's ANSIBLE_COLLECTIONS_PATH, and
    env/extravars the job's variables;
  - those variables are composed like AWX's launch: the template's extra_vars, the survey's
    defaults (kept only when they pass the survey's own rules), the survey answers (refused
    when they break them, or when they are not survey variables and the template does not
    prompt for variables), and the variables AWX adds to every job (awx_job_id,
    awx_job_template_name, awx_user_name, ...);
  - ansible_runner.run() runs the job with no terminal; each job must end rc 0 and status
    'successful', and publish its result with set_stats, which runner hands over, as AWX
    receives it, in the playbook_on_stats event's artifact_data.
At the end, every history line each job wrote names that job: actor.awx_job_id,
actor.awx_job_template and actor.user.

The stack is torn down by a fixture finaliser whatever happens. The audit step needs
playbooks/audit.yml, written separately: until it exists, that step fails (deselect it with
-k "not audit").
"""

from __future__ import annotations

import http.client
import json
import pathlib
import shutil
import subprocess

import ansible_runner
import pytest
import yaml

from helpers import own_stack  # tests/integration/helpers.py
from traffic import Traffic  # tests/integration/traffic.py

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT, ADMIN_PORT = "sdrunner", 17380, 17382
MIN_REQUESTS = 20
WINDOW_SECONDS = 5
AWX_USER = "ops-alice"


class Job:
    """One finished runner job: its runner, the variables it got and its set_stats data."""

    def __init__(self, runner, template, extravars, history_span):
        self.runner = runner
        self.template = template
        self.extravars = extravars
        self.history_span = history_span
        stats = [e for e in runner.events if e.get("event") == "playbook_on_stats"]
        self.artifacts = stats[-1]["event_data"].get("artifact_data", {}) if stats else None

    def describe(self):
        return "%s: rc=%s status=%s\n%s" % (
            self.template["name"], self.runner.rc, self.runner.status, self.runner.stdout.read())


class LaunchRefused(Exception):
    """AWX would not start the job (what its launch endpoint answers 400 to)."""


def _choices(question):
    choices = question["choices"]
    return [c for c in choices.splitlines() if c.strip()] if isinstance(choices, str) else list(choices)


def survey_errors(question, value):
    """AWX's launch-time check of one survey answer."""
    qtype, low, high = question["type"], question.get("min"), question.get("max")
    if qtype == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return "%r is not an integer" % (value,)
        if (low is not None and value < low) or (high is not None and value > high):
            return "%r is outside %s..%s" % (value, low, high)
    elif qtype in ("text", "textarea"):
        if not isinstance(value, str):
            return "%r is not a string" % (value,)
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return "%r has a length outside %s..%s" % (value, low, high)
    elif qtype == "multiplechoice" and value not in _choices(question):
        return "%r is not one of %s" % (value, _choices(question))
    return None


def launch_extra_vars(template, answers, awx_vars):
    """The job's extra variables as AWX composes them at launch, or LaunchRefused."""
    questions = {q["variable"]: q for q in (template.get("survey_spec") or {"spec": []})["spec"]}
    job = dict(template.get("extra_vars", {}))
    for variable, question in questions.items():
        default = question.get("default")
        if default not in (None, "") and survey_errors(question, default) is None:
            job[variable] = default
    for variable, value in answers.items():
        if variable in questions:
            error = survey_errors(questions[variable], value)
            if error:
                raise LaunchRefused("%s: survey answer %s=%s" % (template["name"], variable, error))
        elif not template.get("ask_variables_on_launch"):
            raise LaunchRefused("%s: variable %s is not allowed on launch" % (template["name"], variable))
        job[variable] = value
    missing = [v for v, q in questions.items() if q["required"] and v not in job]
    if missing:
        raise LaunchRefused("%s: survey answers missing: %s" % (template["name"], missing))
    job.update(awx_vars)
    return job


class AWXSimulation:
    """The private data directory and the jobs run in it, in order."""

    def __init__(self, root, repo_root, ansible_env, write_manifest, templates):
        self.root = root
        self.repo_root = repo_root
        self.templates = {t["playbook"].rsplit("/", 1)[1][:-4]: t for t in templates}
        self.private = root / "private"
        self.project_dir = root / "stack"  # on the Docker host: generated files and the history
        self.reports = root / "reports"
        self.jobs: list[Job] = []
        self.next_job_id = 1001
        project = self.private / "project"
        project.mkdir(parents=True)
        # The project checkout: the playbooks, the repository's ansible.cfg, the stack's manifest.
        (project / "playbooks").symlink_to(repo_root / "playbooks", target_is_directory=True)
        shutil.copy(repo_root / "ansible.cfg", project / "ansible.cfg")
        self.manifest = write_manifest(project / "manifest.yml", own_stack(NAME, (PORT, ADMIN_PORT), {
            "canary": {"version": "1.1.0", "window_seconds": WINDOW_SECONDS},
            "policy": {"thresholds": {"min_requests": MIN_REQUESTS}}}))
        (self.private / "inventory").mkdir()
        host = {"ansible_connection": "local",
                "ansible_python_interpreter": str(repo_root / ".venv" / "bin" / "python"),
                "swiftdeploy_project_dir": str(self.project_dir)}
        (self.private / "inventory" / "hosts.yml").write_text(
            yaml.safe_dump({"swiftdeploy": {"hosts": {"localhost": host}}}))
        (self.private / "env").mkdir()
        # What the execution environment provides: the collections and ansible-playbook.
        # ANSIBLE_CONFIG names the file AWX would find in the job's working directory, so that
        # the caller's own setting cannot leak in.
        envvars = {"ANSIBLE_COLLECTIONS_PATH": str(repo_root / ".collections"),
                   "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
                   "PATH": ansible_env["PATH"], "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        (self.private / "env" / "envvars").write_text(yaml.safe_dump(envvars))

    def history(self):
        path = self.project_dir / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def state(self):
        return json.loads((self.project_dir / "state.json").read_text())

    def awx_vars(self, template, job_id):
        return {"awx_job_id": job_id, "awx_job_template_id": 40 + list(self.templates.values()).index(template),
                "awx_job_template_name": template["name"], "awx_job_launch_type": "manual",
                "awx_user_id": 7, "awx_user_name": AWX_USER, "awx_inventory_name": "SwiftDeploy Docker hosts",
                "awx_project_revision": "0" * 40, "awx_project_scm_branch": "main",
                "tower_job_id": job_id, "tower_job_template_name": template["name"], "tower_user_name": AWX_USER}

    def launch(self, playbook, answers=None, bypass_survey=False):
        template = self.templates[playbook]
        job_id = self.next_job_id
        if bypass_survey:  # as a caller of the playbook who skips AWX would
            extravars = dict(template["extra_vars"], **(answers or {}), **self.awx_vars(template, job_id))
        else:
            extravars = launch_extra_vars(template, answers or {}, self.awx_vars(template, job_id))
        self.next_job_id += 1  # a refused launch creates no job
        (self.private / "env" / "extravars").write_text(yaml.safe_dump(extravars))
        before = len(self.history())
        runner = ansible_runner.run(private_data_dir=str(self.private), playbook=template["playbook"],
                                    ident="%d-%s" % (job_id, playbook), quiet=True, timeout=900)
        job = Job(runner, template, extravars, (before, len(self.history())))
        self.jobs.append(job)
        return job


@pytest.fixture(scope="module")
def awx(tmp_path_factory, repo_root, ansible_env, write_manifest, run_playbook, app_image):
    templates = yaml.safe_load((repo_root / "awx" / "job_templates.yml").read_text())["swiftdeploy_awx_job_templates"]
    sim = AWXSimulation(tmp_path_factory.mktemp("runner"), repo_root, ansible_env, write_manifest, templates)
    try:
        yield sim
    finally:
        run_playbook("teardown", "-e", "swiftdeploy_manifest=%s" % sim.manifest,
                     "-e", "swiftdeploy_project_dir=%s" % sim.project_dir, "-e", "clean=true")
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % NAME],
                              capture_output=True, text=True, check=False).stdout.split()
        assert left == [], "teardown left containers of %s: %s" % (NAME, left)


def assert_successful(job):
    assert job.runner.rc == 0 and job.runner.status == "successful", job.describe()
    stats = job.runner.stats
    assert stats["failures"] == {} and stats["dark"] == {} and "localhost" in stats["ok"], stats
    assert job.artifacts, "no set_stats data in the playbook_on_stats event:\n%s" % job.describe()


# --------------------------------------------------------------------------------------------
# The jobs, in the order they run
# --------------------------------------------------------------------------------------------


def test_deploy(awx):
    job = awx.launch("deploy")
    assert job.extravars["swiftdeploy_lock_wait"] == 0  # the survey's default
    assert_successful(job)
    deployed = job.artifacts["swiftdeploy_deploy"]
    assert deployed["result"] == "deployed" and deployed["mode"] == "stable" and deployed["version"] == "1.0.0"
    assert deployed["url"].startswith("http://") and deployed["url"].endswith(":%d/" % PORT), deployed
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["version"] == "1.0.0"
    conn.close()


def test_awx_refuses_a_weight_outside_the_survey_and_so_does_the_role(awx):
    (weight,) = [q for q in awx.templates["promote"]["survey_spec"]["spec"] if q["variable"] == "weight"]
    with pytest.raises(LaunchRefused, match="outside"):
        awx.launch("promote", {"mode": "canary", "weight": weight["max"] + 1})
    # Past the survey (the playbook run by hand), the role's own check draws the same line.
    job = awx.launch("promote", {"mode": "canary", "weight": weight["max"] + 1}, bypass_survey=True)
    assert job.runner.rc != 0 and job.runner.status == "failed"
    output = job.runner.stdout.read()
    assert "is not a percentage; use a whole number from %d to %d" % (weight["min"], weight["max"]) in output
    assert awx.state()["canary"] is None


def test_promote_to_a_canary(awx):
    job = awx.launch("promote", {"mode": "canary", "weight": 20})
    assert_successful(job)
    promoted = job.artifacts["swiftdeploy_promote"]
    assert promoted == {"result": "canary_started", "mode": "canary", "weight": 20, "canary_version": "1.1.0"}
    state = awx.state()
    assert state["mode"] == "canary" and state["weight"] == 20 and state["canary"] is not None


def test_status(awx):
    job = awx.launch("status", {"watch": 1, "interval": 1})
    assert_successful(job)
    status = job.artifacts["swiftdeploy_status"]
    assert status["mode"] == "canary" and status["weight"] == 20
    assert sorted(status["tracks"]) == ["canary", "stable"]
    assert status["tracks"]["canary"]["version"] == "1.1.0" and status["tracks"]["stable"]["version"] == "1.0.0"


def test_promote_to_stable_on_real_traffic(awx):
    with Traffic(PORT, warm_up=WINDOW_SECONDS + 0.5) as traffic:
        job = awx.launch("promote", {"mode": "stable"})
    assert traffic.successes > MIN_REQUESTS, traffic.successes
    assert_successful(job)
    promoted = job.artifacts["swiftdeploy_promote"]
    assert promoted["result"] == "rolled_forward" and promoted["mode"] == "stable" and promoted["version"] == "1.1.0"
    assert promoted["window"]["requests"] >= MIN_REQUESTS, promoted["window"]
    state = awx.state()
    assert state["mode"] == "stable" and state["canary"] is None


def test_audit(awx):
    with pytest.raises(LaunchRefused, match="is not one of"):
        awx.launch("audit", {"report_dir": str(awx.reports)})  # the report directory is a fixed choice
    job = awx.launch("audit")
    assert job.extravars["allow_tampered"] == "false" and job.extravars["report_dir"] == "reports"  # defaults
    assert_successful(job)
    audit = job.artifacts["swiftdeploy_audit"]
    assert audit["verified"] is True and not audit["problem"], audit
    assert audit["events"] == len(awx.history()), audit
    report = pathlib.Path(audit["report"])
    assert report.is_file() and report.parts[-3:] == ("reports", "localhost", "audit_report.md"), audit


def test_teardown(awx):
    job = awx.launch("teardown", {"clean": "true"})
    assert job.extravars["purge_history"] == "false"
    assert_successful(job)
    assert job.artifacts["swiftdeploy_teardown"] == {"removed": True, "clean": True}
    assert not (awx.project_dir / "docker-compose.yml").exists()
    assert awx.history()[-1]["event"] == "teardown"


def test_every_history_line_names_the_awx_job_that_wrote_it(awx):
    history = awx.history()
    assert len(awx.jobs) >= 4 and history, [job.template["name"] for job in awx.jobs]
    covered = 0
    for job in awx.jobs:
        start, end = job.history_span
        for record in history[start:end]:
            actor = record["actor"]
            where = "seq %s (%s) of %s" % (record["seq"], record["event"], job.template["name"])
            assert actor.get("awx_job_id") == str(job.extravars["awx_job_id"]), (where, actor)
            assert actor.get("awx_job_template") == job.template["name"], (where, actor)
            assert actor.get("user") == AWX_USER, (where, actor)
            covered += 1
    outside = len(history) - covered
    assert covered == len(history), "history lines written outside the jobs: %d of %d" % (outside, len(history))
    events = [record["event"] for record in history]
    assert "deploy" in events and "promote" in events and "status_scrape" in events
