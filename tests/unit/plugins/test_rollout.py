"""A rolling deploy's rules (module_utils/_rollout.py) as tables: the batch setting read as
Ansible's serial reads it, the hosts cut into batches exactly as serial cuts them (checked
against ansible-core's own code), and the summary of a rollout."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError, AnsibleLookupError
from ansible.utils.helpers import pct_to_int

from ansible_collections.swiftdeploy.stack.plugins.filter.rollout import (
    rollout_batch_number,
    rollout_parts,
    rollout_play_hosts,
    rollout_result,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import ManifestError, validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._rollout import (
    BatchError,
    NOT_REACHED,
    batch_number,
    deployed_part,
    halt_message,
    parse_batch,
    rollout_summary,
    with_lost_hosts,
    split_batches,
)

FIX = "use a number of hosts (1 or more), a percentage of the hosts from 1% to 100%"


@pytest.mark.parametrize("value, expected", [
    (None, []),
    ("", []),
    ("  ", []),
    (1, [1]),
    (3, [3]),
    ("2", [2]),
    (" 2 ", [2]),
    ("50%", ["50%"]),
    ("100%", ["100%"]),
    ("007%", ["7%"]),
    ([1, "50%", "100%"], [1, "50%", "100%"]),
    (["1", "2"], [1, 2]),
    ('[1, "50%", "100%"]', [1, "50%", "100%"]),
    ("[1, 50%, 100%]", [1, "50%", "100%"]),
    ("[1, '50%']", [1, "50%"]),
    ("1,50%,100%", [1, "50%", "100%"]),
    ("1, 2", [1, 2]),
])
def test_a_batch_setting_reads_as_serial_does(value, expected):
    assert parse_batch(value) == expected


@pytest.mark.parametrize("value, message", [
    ("abc", "-e swiftdeploy_batch: abc is not a batch size; " + FIX),
    (0, "-e swiftdeploy_batch: 0 is out of range; " + FIX),
    (-1, "-e swiftdeploy_batch: -1 is out of range; "),
    ("0%", "-e swiftdeploy_batch: 0% is out of range; "),
    ("101%", "-e swiftdeploy_batch: 101% is out of range; "),
    ("12.5%", "-e swiftdeploy_batch: 12.5% is not a batch size; "),
    (1.5, "-e swiftdeploy_batch: 1.5 is not a batch size; "),
    (True, "-e swiftdeploy_batch: true is not a batch size; "),
    ({"a": 1}, '-e swiftdeploy_batch: {"a": 1} is not a batch size; '),
    ([], "-e swiftdeploy_batch: an empty list has no batch size; "),
    ("[]", "-e swiftdeploy_batch: an empty list has no batch size; "),
    ([1, None], "-e swiftdeploy_batch[1]: null is not a batch size; "),
    ([1, "x"], "-e swiftdeploy_batch[1]: x is not a batch size; "),
    ("1,,2", "-e swiftdeploy_batch[1]:  is not a batch size; "),
    ("[1, 2", "-e swiftdeploy_batch: [1, 2 is not a batch size or a list of them; "),
    ('{"a": 1}', '-e swiftdeploy_batch: {"a": 1} is not a batch size; '),
    (list(range(1, 102)), "-e swiftdeploy_batch: 101 batch sizes, more than 100; "),
    ("9" * 7, "-e swiftdeploy_batch: 9999999 is not a batch size; "),
])
def test_a_bad_batch_setting_names_the_field_the_value_and_the_fix(value, message):
    with pytest.raises(BatchError) as raised:
        parse_batch(value)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "Ansible's serial" in str(raised.value) or "list fewer" in str(raised.value)


def ansible_serial(hosts, serial):
    """ansible-core's PlaybookExecutor._get_serialized_batches, over names (its loop, its
    pct_to_int), to check split_batches against."""
    hosts, total = list(hosts), len(hosts)
    serial = serial or [-1]
    index, batches = 0, []
    while hosts:
        size = pct_to_int(serial[index], total)
        if size <= 0:
            batches.append(hosts)
            break
        batches.append(hosts[:size])
        hosts = hosts[size:]
        index = min(index + 1, len(serial) - 1)
    return batches


HOSTS = ["h%d" % number for number in range(1, 8)]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("serial, expected_for_7", [
    ([], [HOSTS]),
    ([1], [[h] for h in HOSTS]),
    ([3], [HOSTS[:3], HOSTS[3:6], HOSTS[6:]]),
    (["50%"], [HOSTS[:3], HOSTS[3:6], HOSTS[6:]]),
    (["100%"], [HOSTS]),
    (["10%"], [[h] for h in HOSTS]),
    ([1, "50%", "100%"], [HOSTS[:1], HOSTS[1:4], HOSTS[4:]]),
    ([1, 2], [HOSTS[:1], HOSTS[1:3], HOSTS[3:5], HOSTS[5:]]),
    ([10], [HOSTS]),
])
def test_hosts_are_cut_into_batches_exactly_as_serial_cuts_them(serial, expected_for_7, count):
    hosts = HOSTS[:count]
    assert split_batches(hosts, serial) == ansible_serial(hosts, serial)
    if count == 7:
        assert split_batches(hosts, serial) == expected_for_7


@pytest.mark.parametrize("serial, host, number", [
    ([1], "h1", 1), ([1], "h3", 3), ([1, "50%"], "h4", 2), ([1, "50%"], "h5", 3), (["100%"], "h7", 1),
    ([1], "h9", 0),
])
def test_a_hosts_batch_number(serial, host, number):
    assert batch_number(HOSTS, serial, host) == number
    assert rollout_batch_number(HOSTS, serial, host) == number
    if number:
        assert rollout_batch_number(HOSTS, serial)[host] == number


@pytest.mark.parametrize("pattern, batches, rolling, expected", [
    ("swiftdeploy", [], False, "swiftdeploy"), ("swiftdeploy", [], True, []),
    ("swiftdeploy", [1], False, []), ("swiftdeploy", [1, "50%"], True, "swiftdeploy"),
    (["h1", "h2"], ["100%"], True, ["h1", "h2"]), (["h1", "h2"], ["100%"], False, []),
])
def test_deploy_plays_target_the_hosts_by_kind(pattern, batches, rolling, expected):
    assert rollout_play_hosts(pattern, batches, rolling) == expected


def test_the_batch_number_filter_refuses_a_bad_setting():
    with pytest.raises(AnsibleFilterError, match="is out of range"):
        rollout_batch_number(HOSTS, [0], "h1")


@pytest.mark.parametrize("batch, expected", [
    (None, None), (2, [2]), ("25%", ["25%"]), ([1, "100%"], [1, "100%"]),
])
def test_the_manifest_takes_a_fleet_batch_default(example_manifest_data, batch, expected):
    data = dict(example_manifest_data, fleet={"batch": batch})
    assert validate_manifest(data)["fleet"] == {"batch": expected}
    assert validate_manifest(dict(example_manifest_data))["fleet"] == {"batch": None}


@pytest.mark.parametrize("batch, message", [
    ("all", "manifest field 'fleet.batch': all is not a batch size; " + FIX),
    ([1, 0], "manifest field 'fleet.batch[1]': 0 is out of range; " + FIX),
])
def test_a_bad_fleet_batch_names_the_manifest_field(example_manifest_data, batch, message):
    with pytest.raises(ManifestError) as raised:
        validate_manifest(dict(example_manifest_data, fleet={"batch": batch}))
    assert any(error.startswith(message) for error in raised.value.errors), raised.value.errors


@pytest.fixture
def example_manifest_data():
    return {"services": {"image": "swift-deploy-1-node:latest", "port": 3000},
            "nginx": {"image": "nginx:latest", "port": 8080}, "contact": "ops@swiftdeploy.local"}


PARTS_COMPLETED = {
    "h1": {"result": "deployed", "batch": 1, "version": "2.0.0"},
    "h2": {"result": "unchanged", "batch": 2, "version": "2.0.0"},
}
PARTS_HALTED = {
    "h3": {"result": "not_reached", "batch": 3, "version": None},
    "h1": {"result": "reverted", "batch": 1, "version": "1.0.0"},
    "h2": {"result": "failed", "batch": 2, "version": "1.0.0", "failure": "slot blue is unhealthy"},
}


@pytest.mark.parametrize("parts, expected", [
    (PARTS_COMPLETED, {"result": "completed", "halted_batch": None, "failed": [], "reverted": [],
                       "not_reached": [], "deployed": ["h1", "h2"], "releases": {"2.0.0": ["h1", "h2"]}}),
    (PARTS_HALTED, {"result": "halted", "halted_batch": 2, "failed": ["h2"], "reverted": ["h1"],
                    "not_reached": ["h3"], "deployed": [],
                    "releases": {"1.0.0": ["h1", "h2"], NOT_REACHED: ["h3"]}}),
    ({"a": {"result": "kept", "batch": 1, "version": "2.0.0", "reason": "no release before"},
      "b": {"result": "failed", "batch": 1, "version": None, "failure": "denied"}},
     {"result": "halted", "halted_batch": 1, "failed": ["b"], "reverted": [], "kept_new_release": ["a"],
      "releases": {"2.0.0": ["a"], "none": ["b"]}}),
    ({"a": {"result": "revert_failed", "batch": 1, "version": "2.0.0"},
      "b": {"result": "failed", "batch": 2, "version": "1.0.0"},
      "c": {"result": "failed", "batch": 3, "version": "1.0.0"}},
     {"result": "halted", "halted_batch": 2, "failed": ["b", "c"], "revert_failed": ["a"]}),
])
def test_a_rollout_summary_says_who_serves_what(parts, expected):
    summary = rollout_summary(parts, "r1", [1])
    assert summary["id"] == "r1" and summary["batches"] == [1]
    for key, value in expected.items():
        assert summary[key] == value, key


@pytest.mark.parametrize("batches, parts, lost_batch", [
    ([1], {"h1": {"result": "deployed", "batch": 1, "version": "2.0.0"}, "h2": None,
           "h3": {"result": "not_reached", "batch": 3}}, 2),
    (["50%"], {"h1": {"result": "deployed", "batch": 1, "version": "2.0.0"}, "h2": {"result": "deployed", "batch": 1},
               "h3": None, "h4": {"result": "not_reached", "batch": 2}}, 2),
])
def test_a_host_taken_out_of_the_play_is_a_failure_of_its_batch(batches, parts, lost_batch):
    """A host with no part (Ansible took it out of the rolling play: unreachable during its deploy)
    fails its batch with its state unknown, and the summary says so."""
    lost = [name for name, part in parts.items() if part is None][0]
    result = rollout_result(parts, "r1", batches)
    assert result["result"] == "halted" and result["failed"] == [lost] and result["halted_batch"] == lost_batch
    assert result["releases"]["unknown (unreachable)"] == [lost]
    assert "%s failed (%s: became unreachable or failed outside the rollout's rescue" % (lost, lost) in result["message"]
    assert "check it with status.yml" in result["message"]
    assert with_lost_hosts(parts, batches)[lost]["unreachable"] is True
    assert all(with_lost_hosts(parts, batches)[name] == part for name, part in parts.items() if part is not None)


def test_a_halt_message_names_the_batch_the_failure_the_revert_and_the_untouched():
    summary = rollout_summary(PARTS_HALTED, "r1", [1])
    assert halt_message(summary, PARTS_HALTED) == (
        "Rollout r1 halted at batch 2: h2 failed (h2: slot blue is unhealthy). Reverted to the release they had "
        "before: h1 (1.0.0). Not reached (untouched): h3. Hosts by release now: 1.0.0: h1, h2; "
        "unchanged (not reached): h3.")
    assert rollout_result(PARTS_HALTED, "r1", [1])["message"] == halt_message(summary, PARTS_HALTED)
    assert rollout_result(PARTS_COMPLETED, "r1", [1])["message"] == (
        "Rollout r1 completed: 2 hosts in [1]; hosts by release: 2.0.0: h1, h2.")


OLD = {"image": "app:1", "image_id": "sha256:1", "mode": "stable", "version": "1.0.0"}
NEW = {"image": "app:2", "image_id": "sha256:2", "mode": "stable", "version": "2.0.0"}


@pytest.mark.parametrize("had_release, before, after, result", [
    (True, OLD, NEW, "deployed"),
    (True, OLD, dict(OLD), "unchanged"),
    (True, OLD, dict(OLD, image_id="sha256:9"), "deployed"),       # the same tag, another image
    (True, OLD, dict(OLD, version="1.0.1"), "deployed"),
    (True, {"image": "app:1", "version": "1.0.0"}, {"image": "app:1", "version": "1.0.0"}, "unchanged"),
    (True, {"image": "app:1", "version": "1.0.0"}, dict(OLD), "deployed"),  # an image ID now recorded
    (False, None, NEW, "deployed"),                                      # no release before
    (False, {"placeholder": True}, dict(NEW), "deployed"),              # before unread without one
])
def test_a_finished_deploys_part_says_whether_it_changed_the_release(had_release, before, after, result):
    part = deployed_part("r1", "2", had_release, before, after)
    assert part == {"id": "r1", "batch": 2, "result": result, "had_release": had_release,
                    "from": before if had_release else None, "version": after["version"], "image": after["image"]}


def _deployed(content, before, after):
    return {"swiftdeploy_lock": {"files": [{"content": content}]},
            "_swiftdeploy_previous_live": {"stable": "blue", "slots": {"blue": before}} if before else {"slots": {}},
            "swiftdeploy_live": {"stable": "green", "slots": {"green": after}}}


def test_every_hosts_part_is_worked_out_once_from_what_the_rolling_play_left():
    failed = {"id": "r1", "batch": 2, "result": "failed", "failure": "slot blue is unhealthy"}
    hostvars = {
        "h1": _deployed("{}", OLD, NEW),                     # moved to the new release
        "h2": _deployed("{}", OLD, OLD),                     # already on it
        "h3": _deployed(None, None, NEW),                    # no stack before
        "h4": dict(_deployed("{}", OLD, OLD), _swiftdeploy_rollout=failed),   # its rescue kept the failure
        "h5": {"_swiftdeploy_rollout_halted_before": True},  # ended untouched after a failed batch
        "h6": {"_swiftdeploy_rollout_halted_before": "True"},
        "h7": {"swiftdeploy_lock": {"files": [{"content": "{}"}]}},          # no finished deploy
        "h8": _deployed("{}", OLD, NEW),                     # Ansible took it out of the play
        "h9": {"_swiftdeploy_rollout_reach": {"unreachable": True, "msg": "Failed to connect: " + "x" * 400}},
        "ha": {"_swiftdeploy_rollout_reach": {"unreachable": True}},
    }
    batch_of = dict((name, number) for number, name in enumerate(sorted(hostvars), 1))
    parts = rollout_parts(hostvars, sorted(hostvars), [name for name in hostvars if name != "h8"], "r1", batch_of)
    assert list(parts) == sorted(hostvars)
    assert parts["h1"] == deployed_part("r1", 1, True, OLD, NEW) and parts["h1"]["result"] == "deployed"
    assert parts["h2"]["result"] == "unchanged" and parts["h2"]["from"] == OLD
    assert parts["h3"] == {"id": "r1", "batch": 3, "result": "deployed", "had_release": False, "from": None,
                           "version": "2.0.0", "image": "app:2"}
    assert parts["h4"] == failed
    assert parts["h5"] == {"id": "r1", "batch": 5, "result": "not_reached"} and parts["h6"]["result"] == "not_reached"
    assert parts["h7"] is None and parts["h8"] is None
    assert parts["h9"]["result"] == "failed" and parts["h9"]["unreachable"] is True and parts["h9"]["batch"] == 9
    # Cut to 300 characters as Jinja's truncate cuts (at a word's end), as the task that kept it did.
    assert parts["h9"]["failure"] == ("unreachable when its batch started (Failed to connect:...); nothing was changed "
                                      "there: check the host and run the rollout again")
    assert parts["ha"]["failure"].startswith("unreachable when its batch started (no answer);")
    assert parts["ha"]["task"] == "Check that this host answers before its batch starts"
    assert rollout_result(parts, "r1", [1])["failed"] == ["h4", "h7", "h8", "h9", "ha"]


def test_the_lookup_prefers_the_extra_variable_then_the_manifest(tmp_path):
    from ansible_collections.swiftdeploy.stack.plugins.lookup.rollout_batch import LookupModule

    manifest = tmp_path / "manifest.yml"
    manifest.write_text("services: {image: 'app:1', port: 3000}\nnginx: {image: 'nginx:1', port: 8080}\n"
                        "contact: ops@example.com\nfleet: {batch: [1, '50%']}\n")
    lookup = LookupModule()
    assert lookup.run([], {}, batch="", manifest=str(manifest)) == [1, "50%"]
    assert lookup.run([], {}, batch="2", manifest=str(manifest)) == [2]
    assert lookup.run([], {}, batch="", manifest=str(tmp_path / "missing.yml")) == []
    with pytest.raises(AnsibleLookupError, match="-e swiftdeploy_batch: 0 is out of range"):
        lookup.run([], {}, batch="0", manifest=str(manifest))
