"""The AWX job templates as code: awx/job_templates.yml and awx/configure.yml.

What is proved here:
  - every template's playbook exists, and every survey variable and template extra variable is
    one that playbook really reads (in its own Jinja, or as an option of the role entry point it
    imports), with a type and choices that agree with roles/swiftdeploy/meta/argument_specs.yml
    for the role option it feeds (the promote weight's bounds are held against the role's own
    check in test_ansible_runner.py, which runs it);
  - every survey_spec passes the checks AWX's API applies when a survey is saved
    (JobTemplateSurveySpec._validate_spec_data) and when a job is launched with the survey's
    defaults (SurveyJobTemplateMixin._survey_element_validation), re-implemented below from
    AWX's documented behaviour and tried against bad surveys first;
  - awx/configure.yml passes --syntax-check, refuses to start without its two required
    settings, and, run in check mode against a controller address where nothing listens
    (127.0.0.1:9), every awx.awx module it calls accepts the arguments it gets (the modules
    validate them against their own argument_spec before the first request) and fails only
    when it tries to connect; the job template module receives each survey unchanged. A
    deliberately bad template fails on its arguments instead, so the two are told apart. This
    runs the modules themselves, with the arguments the playbook templates for them, which says
    more than validating hand-built arguments against their argument_spec would.

  - the workflow of awx/workflow_templates.yml (canary on one host -> approval -> judge -> rolling
    deploy of the rest -> audit): its graph (one root, no cycle, every node reachable, the
    approval node's failure path drops the canary), each node runs a template of
    job_templates.yml with only the survey variables AWX would accept from a node (answers
    valid for the survey), a limit only where the template prompts for one, limits that split
    a fleet into the canary host and the rest (Ansible's own host patterns), a workflow survey
    whose variables a node's playbook reads, and the artifacts each job publishes accepted as
    extra variables by the playbooks after it (AWX passes them on);

What cannot be tested: no AWX server is reachable from this machine, so nothing is created,
AWX's database-level checks (names resolving to an organisation, project, inventory,
credential; the playbook being in the synced project) do not run, and the surveys are not
rendered by AWX's UI.
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import subprocess

import jinja2
import jinja2.nodes
import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PLAYBOOKS = {"deploy", "promote", "rollback", "status", "audit", "teardown", "logs"}
# AWX's JobTemplateSurveySpec.ALLOWED_TYPES: the Python type a default must have, per type.
AWX_SURVEY_TYPES = {"text": str, "textarea": str, "password": str, "multiplechoice": str,
                    "multiselect": str, "integer": int, "float": (float, int)}
# A closed port: nothing answers there, so every request is refused at once.
UNREACHABLE_CONTROLLER = "https://127.0.0.1:9"


@pytest.fixture(scope="module")
def templates(repo_root):
    data = yaml.safe_load((repo_root / "awx" / "job_templates.yml").read_text())
    return data["swiftdeploy_awx_job_templates"]


@pytest.fixture(scope="module")
def argument_specs(repo_root):
    path = repo_root / "roles" / "swiftdeploy" / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text())["argument_specs"]


def pytest_generate_tests(metafunc):
    if "template" in metafunc.fixturenames:
        data = yaml.safe_load((REPO_ROOT / "awx" / "job_templates.yml").read_text())
        entries = data["swiftdeploy_awx_job_templates"]
        metafunc.parametrize("template", entries, ids=[entry["name"] for entry in entries])


# --------------------------------------------------------------------------------------------
# AWX's survey rules
# --------------------------------------------------------------------------------------------


def _choices(question):
    choices = question["choices"]
    if isinstance(choices, str):
        return [choice for choice in choices.splitlines() if choice.strip()]
    return list(choices)


def awx_survey_spec_errors(spec) -> list[str]:
    """What AWX's API answers 400 to when this survey_spec is saved: the first error of each
    question (AWX itself reports only the first of all)."""
    errors = []
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if field not in spec:
            errors.append("Field '%s' is missing from survey spec." % field)
        elif not isinstance(spec[field], kind):
            errors.append("Expected %s for field '%s'." % (kind.__name__, field))
    if errors:
        return errors
    if not spec["spec"]:
        return ["'spec' doesn't contain any items."]
    variables = set()
    for idx, question in enumerate(spec["spec"]):
        if not isinstance(question, dict):
            errors.append("Survey question %d is not a json object." % idx)
            continue
        missing = [f for f in ("type", "question_name", "variable", "required") if f not in question]
        if missing:
            errors.append("'%s' missing from survey question %d" % (missing[0], idx))
            continue
        if not all(isinstance(question[f], str) for f in ("type", "question_name", "variable")):
            errors.append("'type', 'question_name' and 'variable' in survey question %d must be strings." % idx)
            continue
        if not isinstance(question["required"], bool):
            errors.append("'required' in survey question %d expected to be boolean." % idx)
            continue
        if question["variable"] in variables:
            errors.append("'variable' '%s' duplicated in survey question %d." % (question["variable"], idx))
            continue
        variables.add(question["variable"])
        qtype = question["type"]
        if qtype not in AWX_SURVEY_TYPES:
            errors.append("'%s' in survey question %d is not one of the allowed question types." % (qtype, idx))
            continue
        default = question.get("default", "")
        # bool is an int to Python, but not an integer answer to AWX (it compares type(v) != int).
        if default != "" and (not isinstance(default, AWX_SURVEY_TYPES[qtype]) or isinstance(default, bool)):
            errors.append("Default value %r in survey question %d expected to be %s." % (default, idx, qtype))
            continue
        bad_limit = [key for key in ("min", "max")
                     if question.get(key) is not None
                     and (not isinstance(question[key], int) or isinstance(question[key], bool))]
        if bad_limit:
            errors.append("The %s limit in survey question %d expected to be integer." % (bad_limit[0], idx))
            continue
        if qtype in ("multiplechoice", "multiselect"):
            if "choices" not in question:
                errors.append("Survey question %d of type %s must specify choices." % (idx, qtype))
                continue
            defaults = default.splitlines() if isinstance(default, str) else list(default)
            if qtype == "multiplechoice" and len(defaults) > 1:
                errors.append("Multiple Choice (Single Select) can only have one default value.")
                continue
            if any(item not in _choices(question) for item in defaults):
                errors.append("Default choice must be answered from the choices listed.")
                continue
    return errors


def awx_answer_errors(question, answers) -> list[str]:
    """What AWX rejects about one question's answer at launch (also applied to the default,
    which AWX silently drops from the job's variables when it fails these)."""
    variable, qtype = question["variable"], question["type"]
    if variable not in answers:
        return ["'%s' value missing" % variable] if question["required"] else []
    value = answers[variable]
    low, high = question.get("min"), question.get("max")
    if qtype in ("text", "textarea", "password"):
        if not isinstance(value, str):
            return ["Value %r for '%s' expected to be a string." % (value, variable)]
        if low not in ("", None) and len(value) < int(low):
            return ["'%s' value is too short" % variable]
        if high not in ("", None) and len(value) > int(high):
            return ["'%s' value is too long" % variable]
    elif qtype == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return ["Value %r for '%s' expected to be an integer." % (value, variable)]
        if low not in ("", None) and value < int(low):
            return ["'%s' value %s is too small" % (variable, value)]
        if high not in ("", None) and value > int(high):
            return ["'%s' value %s is too large" % (variable, value)]
    elif qtype == "multiplechoice" and value not in _choices(question):
        return ["Value %r for '%s' expected to be one of %s." % (value, variable, _choices(question))]
    return []


GOOD = {"name": "n", "description": "d", "spec": [
    {"question_name": "q", "variable": "v", "type": "integer", "required": True, "default": 5, "min": 1, "max": 10}]}


def _bad(**changes):
    spec = copy.deepcopy(GOOD)
    spec["spec"][0].update(changes)
    return spec


@pytest.mark.parametrize("spec, error", [
    ({"name": "n", "spec": GOOD["spec"]}, "Field 'description' is missing"),
    ({"name": "n", "description": "d", "spec": []}, "doesn't contain any items"),
    (_bad(type="number"), "not one of the allowed question types"),
    (_bad(default="5"), "expected to be integer"),
    (_bad(default=True), "expected to be integer"),
    (_bad(max="10"), "The max limit"),
    (_bad(required="yes"), "expected to be boolean"),
    (_bad(type="multiplechoice", default="c", choices=["a", "b"]), "answered from the choices"),
    (_bad(type="multiplechoice", default="a"), "must specify choices"),
    ({"name": "n", "description": "d", "spec": GOOD["spec"] * 2}, "duplicated"),
])
def test_the_survey_checker_rejects_what_awx_rejects(spec, error):
    assert awx_survey_spec_errors(GOOD) == []
    errors = awx_survey_spec_errors(spec)
    assert errors and error in errors[0], errors


@pytest.mark.parametrize("answer, error", [(0, "too small"), (11, "too large"), ("5", "expected to be an integer"),
                                           (True, "expected to be an integer")])
def test_the_answer_checker_rejects_what_awx_rejects(answer, error):
    question = GOOD["spec"][0]
    assert awx_answer_errors(question, {"v": 10}) == []
    (message,) = awx_answer_errors(question, {"v": answer})
    assert error in message


# --------------------------------------------------------------------------------------------
# The templates against AWX's rules and the playbooks
# --------------------------------------------------------------------------------------------


def test_one_template_per_lifecycle_playbook(templates):
    names = sorted(t["playbook"] for t in templates)
    assert names == sorted("playbooks/%s.yml" % name for name in PLAYBOOKS)
    assert len({t["name"] for t in templates}) == len(templates)


def test_a_launcher_only_answers_fixed_questions(template):
    """Extra variables outrank what the role works out: a launcher gets no free-form variables and
    no free text, only choices and bounded integers."""
    assert template["ask_variables_on_launch"] is False, template["name"]
    for question in (template.get("survey_spec") or {"spec": []})["spec"]:
        assert question["type"] in ("multiplechoice", "integer"), (template["name"], question["variable"])
        if question["type"] == "integer":
            assert question.get("min") is not None and question.get("max") is not None, question


def test_template_playbook_exists(template, repo_root):
    assert (repo_root / template["playbook"]).is_file(), (
        "%s runs %s, which is not in the repository" % (template["name"], template["playbook"]))


def test_survey_passes_awx_validation(template):
    survey = template.get("survey_spec")
    if survey is None:
        pytest.skip("%s has no survey" % template["name"])
    assert awx_survey_spec_errors(survey) == []
    for question in survey["spec"]:
        if question.get("default", "") != "":
            # A default AWX would reject at launch is dropped silently: it must pass.
            assert awx_answer_errors(question, {question["variable"]: question["default"]}) == [], question
        elif question["required"]:
            assert question["type"] == "multiplechoice", (
                "%s: a required question without a default must be a choice" % question["variable"])
        if question["type"] == "integer":
            assert question["min"] <= question["max"], question


# Task keywords whose value is a bare Jinja expression rather than a template.
EXPRESSION_KEYS = {"when", "that", "changed_when", "failed_when", "until"}


def _template_variables(text) -> set[str]:
    """Names a Jinja template loads and does not assign itself (loop variables, set)."""
    tree = jinja2.Environment().parse(text)
    loaded = {node.name for node in tree.find_all(jinja2.nodes.Name) if node.ctx == "load"}
    stored = {node.name for node in tree.find_all(jinja2.nodes.Name) if node.ctx in ("store", "param")}
    return loaded - stored


def _jinja_variables(node, expression=False) -> set[str]:
    """Every variable the Jinja in a playbook's strings reads."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            found |= _jinja_variables(value, expression=key in EXPRESSION_KEYS)
    elif isinstance(node, list):
        for value in node:
            found |= _jinja_variables(value, expression)
    elif isinstance(node, str):
        found |= _template_variables("{{ %s }}" % node if expression else node)
    return found


def _role_imports(node):
    """(tasks_from, vars) of every import_role/include_role of swiftdeploy.stack.swiftdeploy."""
    if isinstance(node, list):
        for item in node:
            yield from _role_imports(item)
    elif isinstance(node, dict):
        for key in ("ansible.builtin.import_role", "ansible.builtin.include_role"):
            if key in node and node[key]["name"] == "swiftdeploy.stack.swiftdeploy":
                yield node[key].get("tasks_from", "main"), node.get("vars", {})
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from _role_imports(value)


def _set_facts(node):
    """{variable: expression} of every set_fact in the playbook (one that feeds a role option
    before the role is imported, as promote.yml's weight does)."""
    found = {}
    if isinstance(node, list):
        for item in node:
            found.update(_set_facts(item))
    elif isinstance(node, dict):
        if isinstance(node.get("ansible.builtin.set_fact"), dict):
            found.update(node["ansible.builtin.set_fact"])
        for value in node.values():
            if isinstance(value, (list, dict)):
                found.update(_set_facts(value))
    return found


def playbook_interface(repo_root, playbook, argument_specs):
    """(variables the playbook reads, {variable: (role option, its spec, the expression)})."""
    data = yaml.safe_load((repo_root / playbook).read_text())
    reads = _jinja_variables(data)
    feeds = {}
    facts = _set_facts(data)
    for tasks_from, role_vars in _role_imports(data):
        options = argument_specs.get(tasks_from, {}).get("options", {})
        reads |= set(options)
        for option, expression in list(role_vars.items()) + [item for item in facts.items() if item[0] in options]:
            for variable in _jinja_variables(expression):
                feeds[variable] = (option, options[option], expression)
        for option, spec in options.items():
            feeds.setdefault(option, (option, spec, None))
    return reads, feeds


def test_survey_and_extra_variables_are_read_by_the_playbook(template, repo_root, argument_specs):
    reads, _feeds = playbook_interface(repo_root, template["playbook"], argument_specs)
    asked = [q["variable"] for q in (template.get("survey_spec") or {"spec": []})["spec"]]
    unknown = [v for v in asked + list(template.get("extra_vars", {})) if v not in reads]
    assert unknown == [], "%s sets %s, which %s never reads (it reads: %s)" % (
        template["name"], unknown, template["playbook"], ", ".join(sorted(reads)))


def test_survey_types_agree_with_the_role_options(template, repo_root, argument_specs):
    _reads, feeds = playbook_interface(repo_root, template["playbook"], argument_specs)
    checked = 0
    for question in (template.get("survey_spec") or {"spec": []})["spec"]:
        if question["variable"] not in feeds:
            continue  # read by the playbook itself, not passed to a role option: fails below
        option, spec, expression = feeds[question["variable"]]
        kind = spec.get("type", "str")
        where = "%s: survey %s -> %s (%s)" % (template["name"], question["variable"], option, kind)
        if question["type"] == "integer":
            assert kind == "int", where
            assert expression is None or "| int" in expression, where
        elif question["type"] == "multiplechoice" and kind == "bool":
            # Answers arrive as strings; the playbook must turn them into booleans.
            assert sorted(_choices(question)) == ["false", "true"], where
            assert expression is not None and "| bool" in expression, where
        elif question["type"] == "multiplechoice":
            assert kind == "str", where
            if "choices" in spec:
                assert set(_choices(question)) <= set(spec["choices"]), where
        else:
            assert kind in ("str", "path"), where
        checked += 1
    # Every question feeds a documented role option, so its type is checked.
    assert checked == len((template.get("survey_spec") or {"spec": []})["spec"]), template["name"]


def test_promote_mode_choices_are_the_modes_the_role_accepts(templates, repo_root):
    """promote's mode has no `choices` in the argument spec; the role's own check lists them."""
    (promote,) = [t for t in templates if t["playbook"] == "playbooks/promote.yml"]
    (mode,) = [q for q in promote["survey_spec"]["spec"] if q["variable"] == "mode"]
    tasks = yaml.safe_load((repo_root / "roles" / "swiftdeploy" / "tasks" / "promote.yml").read_text())
    (check,) = [t for t in tasks if t.get("name") == "Check the requested mode"]
    assert check["ansible.builtin.assert"]["that"] == "swiftdeploy_promote_mode in %s" % (
        "[%s]" % ", ".join("'%s'" % choice for choice in _choices(mode)))


# --------------------------------------------------------------------------------------------
# awx/configure.yml with the real awx.awx modules
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def configure_env(ansible_env, repo_root):
    env = {key: value for key, value in ansible_env.items()
           if not key.startswith(("CONTROLLER_", "TOWER_")) and key.lower() not in ("http_proxy", "https_proxy")}
    assert (repo_root / ".collections" / "ansible_collections" / "awx" / "awx").is_dir(), (
        "awx.awx is missing from .collections: run scripts/setup.sh")
    env.update(CONTROLLER_HOST=UNREACHABLE_CONTROLLER, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


REQUIRED = ("-e", "swiftdeploy_awx_scm_url=https://git.example.com/ops/swiftdeploy.git",
            "-e", "swiftdeploy_awx_ee_image=registry.example.com/swiftdeploy/ee:0.1.0",
            "-e", json.dumps({"swiftdeploy_awx_machine_credential": "Docker hosts SSH"}))


def configure_command(repo_root, *args):
    return ["ansible-playbook", str(repo_root / "awx" / "configure.yml"), *args]


def test_configure_passes_syntax_check(repo_root, ansible_env):
    proc = subprocess.run(configure_command(repo_root, "--syntax-check"), cwd=repo_root, env=ansible_env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_configure_refuses_to_start_without_the_project_and_image(repo_root, configure_env):
    proc = subprocess.run(configure_command(repo_root, "--check"), cwd=repo_root, env=configure_env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    report = json.loads(proc.stdout)
    tasks = report["plays"][0]["tasks"]
    assert [t["task"]["name"] for t in tasks] == ["Check the required settings"]
    message = tasks[0]["hosts"]["localhost"]["msg"]
    assert "swiftdeploy_awx_scm_url" in message and "swiftdeploy_awx_ee_image" in message


TAGS = ("swiftdeploy_awx_execution_environment", "swiftdeploy_awx_project", "swiftdeploy_awx_inventory",
        "swiftdeploy_awx_group", "swiftdeploy_awx_job_templates", "swiftdeploy_awx_workflow_templates")


@pytest.fixture(scope="module")
def check_runs(repo_root, configure_env):
    """configure.yml --check against the unreachable controller, one run per task (a failed task
    ends the play), in parallel: {tag: [(module args, msg) per module call]}."""
    procs = {tag: subprocess.Popen(configure_command(repo_root, "--check", "--tags", tag, *REQUIRED),
                                   cwd=repo_root, env=configure_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
             for tag in TAGS}
    runs = {}
    for tag, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0, "%s reached a controller at %s?\n%s" % (tag, UNREACHABLE_CONTROLLER, stdout)
        report = json.loads(stdout)
        (task,) = [t for t in report["plays"][0]["tasks"] if t["task"]["name"] != "Check the required settings"]
        result = task["hosts"]["localhost"]
        calls = result.get("results", [result])
        runs[tag] = [(call.get("invocation", {}).get("module_args"), call.get("msg", ""), stderr) for call in calls]
    return runs


def _assert_reached_the_network(tag, calls):
    for module_args, msg, stderr in calls:
        assert module_args is not None, "%s: the module did not run: %s %s" % (tag, msg, stderr)
        assert "127.0.0.1:9" in msg and "Connection refused" in msg, "%s failed before connecting: %s" % (tag, msg)


@pytest.mark.parametrize("tag", TAGS)
def test_configure_modules_accept_their_arguments(check_runs, tag):
    _assert_reached_the_network(tag, check_runs[tag])
    for module_args, _msg, _stderr in check_runs[tag]:
        assert module_args["controller_host"] == UNREACHABLE_CONTROLLER


def test_configure_objects_refer_to_each_other(check_runs):
    (ee,), (project,), (inventory,), (group,) = (
        [args for args, _msg, _err in check_runs[tag]] for tag in TAGS[:4])
    assert ee["image"] == "registry.example.com/swiftdeploy/ee:0.1.0"
    assert project["scm_url"] == "https://git.example.com/ops/swiftdeploy.git" and project["scm_type"] == "git"
    assert project["default_environment"] == ee["name"]
    assert group["inventory"] == inventory["name"] and group["name"] == "swiftdeploy"
    for args, _msg, _err in check_runs["swiftdeploy_awx_job_templates"]:
        assert (args["project"], args["inventory"], args["execution_environment"]) == (
            project["name"], inventory["name"], ee["name"])
        assert args["organization"] == project["organization"] == inventory["organization"]
        assert args["credentials"] == ["Docker hosts SSH"]


def test_configure_sends_each_template_and_survey_unchanged(check_runs, templates):
    sent = {args["name"]: args for args, _msg, _err in check_runs["swiftdeploy_awx_job_templates"]}
    assert sorted(sent) == sorted(t["name"] for t in templates)
    for template in templates:
        args = sent[template["name"]]
        assert args["playbook"] == template["playbook"]
        assert args["job_type"] == "run"
        assert args["extra_vars"] == template["extra_vars"]
        for key in ("ask_variables_on_launch", "ask_limit_on_launch", "allow_simultaneous"):
            assert args[key] is template[key], (template["name"], key)
        assert args["survey_enabled"] is ("survey_spec" in template)
        assert args["survey_spec"] == template.get("survey_spec")


def test_a_bad_template_fails_on_its_arguments_not_the_network(repo_root, configure_env):
    bad = [{"name": "broken", "description": "d", "playbook": "playbooks/status.yml", "extra_vars": {},
            "ask_variables_on_launch": "sometimes", "ask_limit_on_launch": True, "allow_simultaneous": False}]
    proc = subprocess.run(configure_command(repo_root, "--check", "--tags", "swiftdeploy_awx_job_templates",
                                            *REQUIRED, "-e", json.dumps({"swiftdeploy_awx_job_templates": bad})),
                          cwd=repo_root, env=configure_env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    (task,) = json.loads(proc.stdout)["plays"][0]["tasks"]
    (result,) = task["hosts"]["localhost"]["results"]
    assert "ask_variables_on_launch" in result["msg"] and "boolean" in result["msg"], result["msg"]
    assert "127.0.0.1:9" not in result["msg"]


# --------------------------------------------------------------------------------------------
# The workflow: canary on one host -> approval -> judge -> rolling deploy of the rest -> audit
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflows(repo_root):
    return yaml.safe_load((repo_root / "awx" / "workflow_templates.yml").read_text())["swiftdeploy_awx_workflow_templates"]


def _edges(node):
    related = node.get("related") or {}
    return [(kind, target["identifier"]) for kind in ("success_nodes", "failure_nodes", "always_nodes")
            for target in related.get(kind) or []]


def _graph(workflow):
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    assert len(nodes) == len(workflow["workflow_nodes"]), "duplicate node identifiers in %s" % workflow["name"]
    return nodes, {name: _edges(node) for name, node in nodes.items()}


def _job_nodes(workflow):
    return [node for node in workflow["workflow_nodes"] if node["unified_job_template"]["type"] == "job_template"]


def test_the_workflow_graph_is_canary_approval_judge_rollout_audit(workflows):
    (workflow,) = workflows
    nodes, edges = _graph(workflow)
    for name, out in edges.items():
        for _kind, target in out:
            assert target in nodes, "%s: node %s leads to %s, which is not a node" % (workflow["name"], name, target)
    children = {target for out in edges.values() for _kind, target in out}
    roots = [name for name in nodes if name not in children]
    assert roots == ["canary"], roots
    # No cycle, and every node reachable from the root.
    order, seen = [], set()

    def visit(name, path):
        assert name not in path, "cycle through %s" % " -> ".join(path + [name])
        if name in seen:
            return
        seen.add(name)
        for _kind, target in edges[name]:
            visit(target, path + [name])
        order.append(name)

    visit("canary", [])
    assert seen == set(nodes), "unreachable nodes: %s" % sorted(set(nodes) - seen)
    # The happy path, node by node, and what each outcome leads to.
    assert edges["canary"] == [("success_nodes", "approve")]
    assert edges["approve"] == [("success_nodes", "judge"), ("failure_nodes", "drop_canary")]
    assert edges["judge"] == [("success_nodes", "rollout"), ("failure_nodes", "audit")]
    assert edges["rollout"] == [("always_nodes", "audit")] and edges["drop_canary"] == [("always_nodes", "audit")]
    assert edges["audit"] == [] and nodes["audit"].get("all_parents_must_converge") is False
    approval = nodes["approve"]["unified_job_template"]
    assert approval["type"] == "workflow_approval" and approval["timeout"] > 0 and approval["name"]
    assert "limit" not in nodes["approve"] and "extra_data" not in nodes["approve"]
    playbooks = {node["identifier"]: node["unified_job_template"]["name"] for node in _job_nodes(workflow)}
    assert playbooks == {"canary": "SwiftDeploy promote", "judge": "SwiftDeploy promote",
                         "drop_canary": "SwiftDeploy rollback", "rollout": "SwiftDeploy deploy",
                         "audit": "SwiftDeploy audit"}
    assert nodes["canary"]["extra_data"]["mode"] == "canary" and nodes["judge"]["extra_data"]["mode"] == "stable"
    assert nodes["drop_canary"]["extra_data"]["to"] == "canary"


def test_each_node_gives_its_template_only_what_awx_accepts(workflows, templates, repo_root):
    by_name = {template["name"]: template for template in templates}
    for workflow in workflows:
        for node in _job_nodes(workflow):
            where = "%s, node %s" % (workflow["name"], node["identifier"])
            template = by_name.get(node["unified_job_template"]["name"])
            assert template is not None, "%s runs %r, which job_templates.yml does not define" % (
                where, node["unified_job_template"]["name"])
            assert (repo_root / template["playbook"]).is_file()
            questions = {q["variable"]: q for q in (template.get("survey_spec") or {"spec": []})["spec"]}
            data = node.get("extra_data") or {}
            # A node's extra_data reaches the job only for what the survey asks (no template prompts
            # for variables), and each answer must pass the survey's rules.
            assert template["ask_variables_on_launch"] is False
            assert set(data) <= set(questions), "%s: %s are not survey variables of %s" % (
                where, sorted(set(data) - set(questions)), template["name"])
            for variable, question in questions.items():
                answers = dict(data)
                if variable not in answers and question.get("default", "") != "":
                    answers[variable] = question["default"]
                assert awx_answer_errors(question, answers) == [], (where, variable)
            if "limit" in node:
                assert template["ask_limit_on_launch"] is True, "%s: %s does not prompt for a limit" % (
                    where, template["name"])


def test_the_workflow_survey_passes_awx_validation_and_feeds_a_node(workflows, templates, repo_root, argument_specs):
    by_name = {template["name"]: template for template in templates}
    for workflow in workflows:
        survey = workflow["survey_spec"]
        assert awx_survey_spec_errors(survey) == []
        assert workflow["ask_variables_on_launch"] is False and workflow["ask_limit_on_launch"] is False
        reads = set()
        for node in _job_nodes(workflow):
            reads |= playbook_interface(repo_root, by_name[node["unified_job_template"]["name"]]["playbook"],
                                        argument_specs)[0]
        for question in survey["spec"]:
            assert question["type"] in ("multiplechoice", "integer"), question["variable"]
            assert awx_answer_errors(question, {question["variable"]: question["default"]}) == [], question
            # Workflow survey answers go to every job: some node's playbook must read each.
            assert question["variable"] in reads, (
                "%s asks %s, which no node's playbook reads (playbooks/deploy.yml reads the rolling deploy's "
                "swiftdeploy_batch)" % (workflow["name"], question["variable"]))


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_limits_split_the_fleet_into_the_canary_host_and_the_rest(workflows, tmp_path, count):
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    (workflow,) = workflows
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    path = tmp_path / "hosts.yml"
    names = ["web%d" % index for index in range(1, count + 1)]
    path.write_text(yaml.safe_dump({"all": {"hosts": {"other": None},
                                            "children": {"swiftdeploy": {"hosts": {name: None for name in names}}}}}))
    inventory = InventoryManager(loader=DataLoader(), sources=[str(path)])

    def targeted(node):  # the playbooks' hosts (the swiftdeploy group) within the node's limit
        group = {host.name for host in inventory.get_hosts("swiftdeploy")}
        limit = node.get("limit")
        return sorted(group if limit is None else group & {host.name for host in inventory.get_hosts(limit)})

    assert targeted(nodes["canary"]) == targeted(nodes["judge"]) == targeted(nodes["drop_canary"]) == ["web1"]
    assert targeted(nodes["rollout"]) == names[1:]
    assert targeted(nodes["audit"]) == names


def _published_results(repo_root, playbook):
    """The set_stats names the role's task files of a playbook's entry points publish (every
    play's tasks_from: deploy.yml's rolling plays run rollout and rollout_finish too)."""
    plays = yaml.safe_load((repo_root / "playbooks" / pathlib.Path(playbook).name).read_text()) or []
    entries = sorted(set(task["ansible.builtin.import_role"]["tasks_from"] for play in plays
                         for task in _all_tasks(play.get("tasks") or []) if "ansible.builtin.import_role" in task))
    assert entries, "%s imports no entry point of the role" % playbook
    names = set()
    paths = sorted(set(path for entry in entries
                       for path in (repo_root / "roles" / "swiftdeploy" / "tasks").glob("%s*.yml" % entry)))
    for path in paths:
        for task in _all_tasks(yaml.safe_load(path.read_text()) or []):
            data = (task.get("ansible.builtin.set_stats") or {}).get("data")
            if isinstance(data, dict):
                names |= set(data)
            elif isinstance(data, str):
                names |= set(re.findall(r"'(swiftdeploy_[a-z0-9_]+)'\s*:", data))
    return names


def _all_tasks(tasks):
    for task in tasks:
        if isinstance(task, dict):
            yield task
            for key in ("block", "rescue", "always"):
                yield from _all_tasks(task.get(key) or [])


def test_each_job_accepts_the_artifacts_of_the_jobs_before_it(workflows, templates, repo_root, run_playbook, tmp_path):
    """AWX passes each job's set_stats artifacts on to the jobs after it as extra variables; the
    playbooks refuse the role's internal names given that way, so each node's playbook runs here
    with every artifact published before it and must not refuse one (it stops at the missing
    manifest instead)."""
    by_name = {template["name"]: template for template in templates}
    (workflow,) = workflows
    nodes, edges = _graph(workflow)
    parents = {name: [source for source, out in edges.items() for _kind, target in out if target == name]
               for name in nodes}

    def before(name, seen=()):
        found = set()
        for parent in parents[name]:
            if parent in seen:
                continue
            node = nodes[parent]
            if node["unified_job_template"]["type"] == "job_template":
                found |= _published_results(repo_root, by_name[node["unified_job_template"]["name"]]["playbook"])
            found |= before(parent, seen + (parent,))
        return found

    assert "swiftdeploy_promote" in before("judge")  # the parser finds what the promote tasks publish
    checked = 0
    for node in _job_nodes(workflow):
        artifacts = before(node["identifier"])
        if not artifacts:
            continue
        playbook = by_name[node["unified_job_template"]["name"]]["playbook"]
        extra = tmp_path / ("%s.json" % node["identifier"])
        extra.write_text(json.dumps(dict({name: {"from": "an earlier job"} for name in artifacts},
                                         swiftdeploy_manifest=str(tmp_path / "no-manifest.yml"),
                                         **(node.get("extra_data") or {}))))
        run = run_playbook(playbook, "-i", "localhost,", "-c", "local", "-e", "swiftdeploy_hosts=localhost",
                           "-e", "@%s" % extra)
        assert run.rc != 0
        assert "set by the role itself" not in run.stdout, "%s (%s) refuses an earlier job's artifact:\n%s" % (
            node["identifier"], playbook, run.describe())
        assert "no-manifest.yml" in run.stdout, run.describe()
        checked += 1
    assert checked >= 3


def test_configure_sends_each_workflow_unchanged(check_runs, workflows):
    sent = {args["name"]: args for args, _msg, _err in check_runs["swiftdeploy_awx_workflow_templates"]}
    (inventory,) = [args for args, _msg, _err in check_runs["swiftdeploy_awx_inventory"]]
    assert sorted(sent) == sorted(workflow["name"] for workflow in workflows)
    for workflow in workflows:
        args = sent[workflow["name"]]
        assert args["inventory"] == inventory["name"] and args["organization"] == inventory["organization"]
        assert args["survey_enabled"] is True and args["survey_spec"] == workflow["survey_spec"]
        assert args["destroy_current_nodes"] is True
        for key in ("ask_variables_on_launch", "ask_limit_on_launch", "allow_simultaneous"):
            assert args[key] is workflow[key], (workflow["name"], key)
        sent_nodes = {node["identifier"]: node for node in args["workflow_nodes"]}
        for node in workflow["workflow_nodes"]:
            got = sent_nodes[node["identifier"]]
            assert got["unified_job_template"]["name"] == node["unified_job_template"]["name"]
            assert got.get("limit") == node.get("limit") and (got.get("extra_data") or {}) == node.get("extra_data", {})
