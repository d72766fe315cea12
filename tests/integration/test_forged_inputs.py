"""A launcher cannot forge what the role works out: extra variables outrank register and set_fact,
so every playbook refuses the role's internal names supplied with -e, naming them, before it does
anything (no lock, no file, no container)."""

from __future__ import annotations

import json

import pytest

PLAYBOOKS = ("deploy", "promote", "rollback", "status", "audit", "teardown", "init", "validate", "logs")
FORGED = {
    "swiftdeploy_decision": {"allow": True, "reasons": [], "bypassed": False, "decision": {}},
    "swiftdeploy_live": {"generation": 1, "mode": "stable", "weight": 0, "stable": "blue", "canary": None,
                         "slots": {"blue": {"image": "x;}", "version": "1", "mode": "stable"}}},
    "swiftdeploy_stack": {"stack": "forged"},
    "_swiftdeploy_images_ready": True,
}


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_playbook_refuses_internal_names_from_extra_vars(playbook, run_playbook, tmp_path):
    project = tmp_path / "project"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(dict(FORGED, swiftdeploy_project_dir=str(project), mode="canary")))
    run = run_playbook(playbook, "-e", "@%s" % forged)
    assert run.rc != 0, run.describe()
    assert ("_swiftdeploy_images_ready, swiftdeploy_decision, swiftdeploy_live, swiftdeploy_stack: set by the role "
            "itself, not an input") in run.stdout, run.describe()
    assert "nothing was done" in run.stdout
    assert not project.exists(), "a refused run must not create anything"


def test_a_single_forged_decision_is_named(run_playbook, tmp_path):
    run = run_playbook("deploy", "-e", "swiftdeploy_project_dir=%s" % (tmp_path / "p"), "-e",
                       '{"swiftdeploy_decision": {"allow": true}}')
    assert run.rc != 0 and "swiftdeploy_decision: set by the role itself" in run.stdout, run.describe()


def test_the_role_inputs_may_still_come_from_extra_vars(run_playbook, tmp_path):
    """Its defaults are its inputs: validate runs with several of them given."""
    run = run_playbook("validate", "-e", "swiftdeploy_project_dir=%s" % (tmp_path / "p"),
                       "-e", "swiftdeploy_validate_fail=false", "-e", "swiftdeploy_lock_wait=5")
    assert "set by the role itself" not in run.stdout, run.describe()
    assert run.rc == 0, run.describe()
