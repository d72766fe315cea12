"""audit_report_info and audit_verify_info: read-only, thin over the module_utils, and the same
verdict under the same keys."""

import json

import pytest
import yaml

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19, which meta/runtime.yml's requires_ansible allows
    import contextlib

    from ansible.module_utils import basic

    @contextlib.contextmanager
    def patch_module_args(args):
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved

from ansible_collections.swiftdeploy.stack.plugins.module_utils._audit_scan import (
    build_report,
    verify_history,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._history import GENESIS, verify
from ansible_collections.swiftdeploy.stack.plugins.modules import audit_report_info
from ansible_collections.swiftdeploy.stack.plugins.modules import audit_verify_info

from audit_histories import History, lifecycle

VERDICT = ["verified", "problem", "events", "lines", "last_seq", "last_hash"]


@pytest.fixture
def hist(tmp_path):
    return History(tmp_path / "history.jsonl")


def run_module(module, capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as info:
            module.main()
    return info.value.code, json.loads(capsys.readouterr().out)


def verdict_of(result):
    return {key: result[key] for key in VERDICT}


def test_both_modules_document_the_same_verdict():
    report_doc = yaml.safe_load(audit_report_info.RETURN)
    verify_doc = yaml.safe_load(audit_verify_info.RETURN)
    assert list(verify_doc) == VERDICT
    assert {key: report_doc[key] for key in VERDICT} == verify_doc


def test_the_report_module_returns_the_data_and_changes_nothing(hist, tmp_path, capsys):
    lifecycle(hist)
    before = sorted(path.name for path in tmp_path.iterdir())
    args = {"path": str(hist.path), "timeline_limit": 3}
    code, checked = run_module(audit_report_info, capsys, _ansible_check_mode=True, **args)
    code_again, result = run_module(audit_report_info, capsys, **args)
    assert (code, code_again, checked["changed"], result["changed"]) == (0, 0, False, False)
    for answer in (checked, result):
        for key in ("changed", "invocation"):
            answer.pop(key, None)
    assert checked == result == json.loads(json.dumps(build_report(str(hist.path),
                                                                   timeline_limit=3)))
    assert (result["verified"], result["events"], result["chart_points"]) == (True, 14, 5)
    assert len(result["timeline"]["rows"]) == 3 and result["timeline"]["total"] == 9
    assert sorted(path.name for path in tmp_path.iterdir()) == before


def tamper(hist, kind):
    lines = hist.lines()
    if kind == "removed":
        del lines[3]
    elif kind == "edited":
        lines[5] = lines[5].replace('"policy":"canary"', '"policy":"none"')
    elif kind == "malformed":
        lines.insert(2, "{not json\n")
    hist.path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("kind", ["removed", "edited", "malformed", None])
def test_both_modules_give_the_verdict_of_verify(hist, capsys, kind):
    lifecycle(hist)
    if kind:
        tamper(hist, kind)
    code, reported = run_module(audit_report_info, capsys, path=str(hist.path))
    assert code == 0
    code, verified = run_module(audit_verify_info, capsys, path=str(hist.path),
                                fail_on_tamper=False)
    assert code == 0 and verified["changed"] is False
    assert verdict_of(verified) == verdict_of(reported)
    expected = verify(str(hist.path))
    found = expected["first_problem"]
    assert verdict_of(verified) == {
        "verified": expected["ok"], "lines": expected["lines"], "last_seq": expected["last_seq"],
        "last_hash": expected["last_hash"], "events": 13 if kind == "removed" else 14,
        "problem": None if found is None else {
            "line": found["line"], "seq": found["seq"], "event": found["event"],
            "kind": found["problem"], "reason": found["message"]}}
    if kind:
        assert verified["problem"]["kind"] == kind


def test_the_verify_module_fails_on_a_broken_chain_unless_told_not_to(hist, capsys):
    lifecycle(hist)
    tamper(hist, "removed")
    code, failed = run_module(audit_verify_info, capsys, path=str(hist.path))
    assert (code, failed["failed"], failed["verified"]) == (1, True, False)
    assert failed["msg"] == "history %s is not intact: %s" % (hist.path, failed["problem"]["reason"])
    assert failed["problem"]["reason"].startswith("line 4 (seq 5, event status_scrape): seq 4 is "
                                                  "missing before it")


def test_a_missing_history_is_empty_for_verify_and_an_error_for_the_report(tmp_path, capsys):
    absent = str(tmp_path / "absent.jsonl")
    code, result = run_module(audit_verify_info, capsys, path=absent)
    assert code == 0 and verdict_of(result) == {
        "verified": True, "problem": None, "events": 0, "lines": 0, "last_seq": 0,
        "last_hash": GENESIS}
    anchored = verify_history(absent, anchor={"seq": 3, "hash": "a" * 64})
    assert anchored["problem"]["kind"] == "truncated" and anchored["problem"]["line"] == 1
    code, result = run_module(audit_report_info, capsys, path=absent)
    assert (code, result["msg"]) == (1, "no history at %s: nothing has been recorded for this "
                                        "stack on this host yet" % absent)


@pytest.mark.parametrize("module", [audit_report_info, audit_verify_info],
                         ids=["audit_report_info", "audit_verify_info"])
@pytest.mark.parametrize("args, message", [
    ({"anchor": {"seq": 0, "hash": "abc"}}, "anchor: anchor must be {seq: positive integer, hash: "
                                            "64 lower-case hex digits}"),
    ({"path": "{tmp}"}, "cannot read the history {tmp}: Is a directory"),
])
def test_the_modules_fail_with_a_message_that_names_the_problem(hist, tmp_path, capsys, module,
                                                                args, message):
    hist.add("deploy")
    full = {"path": str(hist.path)}
    full.update({key: value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
                 for key, value in args.items()})
    code, result = run_module(module, capsys, **full)
    assert code == 1 and result["failed"] is True
    assert result["msg"].startswith(message.replace("{tmp}", str(tmp_path)))
