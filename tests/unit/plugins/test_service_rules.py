"""A team's own service: the manifest's rules (env, secrets, command, user, tmpfs, healthcheck),
the secrets' keyed hash and files, the slot spec's secrets in the state, and the outside health
limit, as tables with the exact messages a user sees."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import stat

import pytest
import yaml

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._secrets import (
    ENV_FILE,
    SecretsDir,
    SecretsError,
    check_values,
    digest,
    env_line,
    files_of,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._stack_host import (
    outside_health_limit,
    share_logs_volume,
)
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import (
    StateError,
    canary_target,
    deploy_target,
    validate_state,
)

from manifest_seed import errors_of  # tests/unit/plugins/manifest_seed.py

SEED = yaml.safe_load("""
services: {image: team/api:2.3.1, port: 8000, version: "2.3.1"}
nginx: {image: nginx:latest, port: 8080}
contact: "ops@example.com"
""")


def services(**keys):
    data = copy.deepcopy(SEED)
    data["services"].update(keys)
    return data


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------


def test_a_full_own_service_is_accepted_and_normalised():
    result = validate_manifest(services(
        env={"GREETING": "hello $USER", "EMPTY": ""},
        secrets=["api_key", {"name": "API_TOKEN", "env": True}, {"name": "db.pass"}],
        command=["python3", "-u", "/app/server.py"],
        user="20000:20000",
        tmpfs=["/tmp", {"path": "/var/cache/api", "size": "64M"}],
        healthcheck={"path": "/ready", "interval": 0.5, "timeout": 1, "retries": 5, "start_period": 10,
                     "docker": False}))["services"]
    assert result["env"] == {"GREETING": "hello $USER", "EMPTY": ""}
    assert result["secrets"] == [{"name": "api_key", "env": False}, {"name": "API_TOKEN", "env": True},
                                 {"name": "db.pass", "env": False}]
    assert result["command"] == ["python3", "-u", "/app/server.py"]
    assert result["user"] == "20000:20000"
    assert result["tmpfs"] == [{"path": "/tmp", "size": "16m"}, {"path": "/var/cache/api", "size": "64m"}]
    assert result["healthcheck"] == {"path": "/ready", "interval": 0.5, "timeout": 1.0, "retries": 5,
                                     "start_period": 10.0, "docker": False}


@pytest.mark.parametrize("keys, message", [
    ({"env": {"APP_PORT": "1"}},
     "manifest field 'services.env.APP_PORT': 'APP_PORT' is set by the stack itself; remove it; the stack sets "
     "APP_PORT, APP_VERSION, LOG_DIR, MODE_FILE in every app slot."),
    ({"env": {"MODE_FILE": "/x"}},
     "manifest field 'services.env.MODE_FILE': 'MODE_FILE' is set by the stack itself; remove it; the stack sets "
     "APP_PORT, APP_VERSION, LOG_DIR, MODE_FILE in every app slot."),
    ({"env": {"1ABC": "x"}},
     "manifest field 'services.env': '1ABC' is not an environment variable name; use ASCII letters, digits and '_', "
     "not starting with a digit (at most 128 characters)."),
    ({"env": {"GR\u00c9ETING": "x"}},
     "manifest field 'services.env': 'GR\u00c9ETING' is not an environment variable name; use ASCII letters, digits "
     "and '_', not starting with a digit (at most 128 characters)."),
    ({"env": {"A-B": "x"}},
     "manifest field 'services.env': 'A-B' is not an environment variable name; use ASCII letters, digits and '_', "
     "not starting with a digit (at most 128 characters)."),
    ({"env": {"PORT": 8000}}, "manifest field 'services.env.PORT': 8000 is a number; quote it in YAML, e.g. \"8000\"."),
    ({"env": {"DEBUG": True}},
     "manifest field 'services.env.DEBUG': true is not a string; write the value as a quoted string, e.g. \"on\"."),
    ({"env": {"X": "a\x00b"}},
     "manifest field 'services.env.X': 'a\\x00b' is too long or holds a NUL character; use at most 4096 characters "
     "and no NUL."),
    ({"env": {"X": "a" * 4097}},
     "manifest field 'services.env.X': '" + "a" * 76 + "... is too long or holds a NUL character; use at most 4096 "
     "characters and no NUL."),
    ({"env": ["A=1"]}, "manifest field 'services.env': ['A=1'] is list, expected a mapping of keys."),
    ({"secrets": ["../etc/passwd"]},
     "manifest field 'services.secrets[0]': '../etc/passwd' is not a secret name; use letters, digits, '_', '.' and "
     "'-', starting with a letter or digit (at most 63 characters); the secret becomes the file /run/secrets/<name>."),
    ({"secrets": [".hidden"]},
     "manifest field 'services.secrets[0]': '.hidden' is not a secret name; use letters, digits, '_', '.' and "
     "'-', starting with a letter or digit (at most 63 characters); the secret becomes the file /run/secrets/<name>."),
    ({"secrets": [{"name": "api.key", "env": True}]},
     "manifest field 'services.secrets[0].name': 'api.key' cannot name an environment variable; use ASCII letters, "
     "digits and '_' for a secret delivered with env: true."),
    ({"secrets": [{"name": "X", "env": "yes"}]},
     "manifest field 'services.secrets[0].env': 'yes' is not true or false; use true to deliver the secret as an "
     "environment variable, false (the default) for a file."),
    ({"secrets": [{"name": "X", "value": "hunter2"}]},
     "manifest field 'services.secrets[0]': {'name': 'X', 'value': 'hunter2'} has the unknown key value; a secret is "
     "a name, or a mapping with name and env (true to deliver it as a variable)."),
    ({"secrets": ["a", "a"]}, "manifest field 'services.secrets[1]': 'a' is listed twice; list each secret once."),
    ({"secrets": [{"name": "LOG_DIR", "env": True}]},
     "manifest field 'services.secrets[0].name': 'LOG_DIR' is set by the stack itself; choose another name."),
    ({"secrets": [{"name": "TOKEN", "env": True}], "env": {"TOKEN": "x"}},
     "manifest field 'services.secrets': 'TOKEN' is delivered as an environment variable and also set in "
     "services.env; remove one of them."),
    ({"command": []},
     "manifest field 'services.command': [] has 0 arguments; give the program and its arguments as a list of 1 to 64 "
     "strings (exec form, no shell), or leave it out to run the image's own command."),
    ({"command": "python3 server.py"},
     "manifest field 'services.command': 'python3 server.py' is string, expected a list."),
    ({"command": ["python3", 3]},
     "manifest field 'services.command[1]': 3 is not a usable argument; write each argument as a quoted string of at "
     "most 4096 characters without NUL."),
    ({"user": "0:0"},
     "manifest field 'services.user': '0:0' is not valid; use a numeric uid:gid other than root's, e.g. "
     "\"20000:20000\"."),
    ({"user": "app"},
     "manifest field 'services.user': 'app' is not valid; use a numeric uid:gid other than root's, e.g. "
     "\"20000:20000\"."),
    ({"user": "20000"},
     "manifest field 'services.user': '20000' is not valid; use a numeric uid:gid other than root's, e.g. "
     "\"20000:20000\"."),
    ({"tmpfs": ["tmp"]},
     "manifest field 'services.tmpfs[0]': 'tmp' is not an absolute path; use a path such as /tmp or /var/cache/app "
     "(letters, digits, '_', '.' and '-')."),
    ({"tmpfs": ["/var/../etc"]},
     "manifest field 'services.tmpfs[0]': '/var/../etc' is not an absolute path; use a path such as /tmp or "
     "/var/cache/app (letters, digits, '_', '.' and '-')."),
    ({"tmpfs": ["/tmp:exec"]},
     "manifest field 'services.tmpfs[0]': '/tmp:exec' is not an absolute path; use a path such as /tmp or "
     "/var/cache/app (letters, digits, '_', '.' and '-')."),
    ({"tmpfs": ["/run"]},
     "manifest field 'services.tmpfs[0]': '/run' would hide a directory the stack mounts; choose a path outside "
     "/run/secrets, /run/swiftdeploy, /app/logs."),
    ({"tmpfs": [{"path": "/run/secrets/x"}]},
     "manifest field 'services.tmpfs[0].path': '/run/secrets/x' would hide a directory the stack mounts; choose a "
     "path outside /run/secrets, /run/swiftdeploy, /app/logs."),
    ({"tmpfs": [{"path": "/cache", "size": "1T"}]},
     "manifest field 'services.tmpfs[0].size': '1T' is not a size; use a whole number with the unit k, m or g, "
     "e.g. \"64m\"."),
    ({"tmpfs": ["/tmp", "/tmp"]}, "manifest field 'services.tmpfs[1]': '/tmp' is listed twice; list each path once."),
    ({"healthcheck": {"path": "ready"}},
     "manifest field 'services.healthcheck.path': 'ready' is not valid; use an absolute path of letters, digits and "
     ". _ ~ / -, e.g. \"/ready\"."),
    ({"healthcheck": {"path": "/ready;return 200"}},
     "manifest field 'services.healthcheck.path': '/ready;return 200' is not valid; use an absolute path of letters, "
     "digits and . _ ~ / -, e.g. \"/ready\"."),
    ({"healthcheck": {"interval": 0}},
     "manifest field 'services.healthcheck.interval': 0 is out of range; use a number of seconds from 0.1 to 3600."),
    ({"healthcheck": {"retries": 0}},
     "manifest field 'services.healthcheck.retries': 0 is out of range; use a whole number from 1 to 100."),
    ({"healthcheck": {"command": ["curl"]}},
     "manifest field 'services.healthcheck.command': unknown key; remove it or use one of: docker, interval, path, "
     "retries, start_period, timeout."),
])
def test_field_errors_name_path_value_and_fix(keys, message):
    assert errors_of(services(**keys)) == [message]


# --------------------------------------------------------------------------------------------
# Secret values, their keyed hash and their files
# --------------------------------------------------------------------------------------------

SECRETS = [{"name": "api_key", "env": False}, {"name": "API_TOKEN", "env": True}]


@pytest.mark.parametrize("values, message", [
    ({}, "the manifest's services.secrets names api_key, API_TOKEN, but swiftdeploy_secrets has no value for them; "
         "add them to swiftdeploy_secrets (from Ansible Vault or an AWX credential)"),
    ({"api_key": "x", "API_TOKEN": ""},
     "the manifest's services.secrets names API_TOKEN, but swiftdeploy_secrets has no value for it; add it to "
     "swiftdeploy_secrets (from Ansible Vault or an AWX credential)"),
    ({"api_key": 12345, "API_TOKEN": "t"},
     "swiftdeploy_secrets: unusable value for api_key (a string of at most 65536 characters without NUL)"),
    ({"api_key": "x", "API_TOKEN": "two\nlines-hunter2"},
     "swiftdeploy_secrets: unusable value for API_TOKEN (delivered as a variable: one line; deliver it as a file "
     "for several lines)"),
])
def test_secret_values_are_checked_naming_the_secret_never_the_value(values, message):
    with pytest.raises(SecretsError) as caught:
        check_values(SECRETS, values)
    assert str(caught.value) == message
    assert "hunter2" not in str(caught.value)


def test_a_multi_line_file_secret_is_fine():
    assert check_values(SECRETS, {"api_key": "-----BEGIN KEY-----\nabc\n", "API_TOKEN": "t", "extra": "ignored"}) \
        == {"api_key": "-----BEGIN KEY-----\nabc\n", "API_TOKEN": "t"}


def test_the_digest_is_a_keyed_hash_of_everything_the_directory_holds():
    key, other_key = b"k" * 32, b"o" * 32
    values = {"api_key": "hunter2", "API_TOKEN": "t"}
    base = digest(key, SECRETS, values, "20000:20000")
    assert len(base) == 64 and base != hashlib.sha256(b"hunter2").hexdigest()
    assert base == digest(key, list(reversed(SECRETS)), values, "20000:20000")  # order does not matter
    assert base != digest(other_key, SECRETS, values, "20000:20000")
    assert base != digest(key, SECRETS, dict(values, api_key="hunter3"), "20000:20000")
    assert base != digest(key, SECRETS, values, "20001:20001")
    assert base != digest(key, [dict(SECRETS[0], env=True), SECRETS[1]], values, "20000:20000")
    assert base == hmac.new(key, json.dumps(
        {"owner": "20000:20000", "secrets": [["API_TOKEN", True, "t"], ["api_key", False, "hunter2"]]},
        sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("value, line", [
    ("plain", 'T="plain"\n'),
    ("it's", 'T="it\'s"\n'),
    ('say "hi"', 'T="say \\"hi\\""\n'),
    ("$HOME and ${X}", 'T="\\$HOME and \\${X}"\n'),
    ("back\\slash\\n", 'T="back\\\\slash\\\\n"\n'),
    ("# not a comment", 'T="# not a comment"\n'),
])
def test_env_lines_give_compose_the_value_as_written(value, line):
    assert env_line("T", value) == line


def test_files_and_env_file_of_a_set():
    assert files_of(SECRETS, {"api_key": "a", "API_TOKEN": "b"}) == ({"api_key": "a"}, 'API_TOKEN="b"\n')
    assert files_of(SECRETS[:1], {"api_key": "a"}) == ({"api_key": "a"}, None)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_secrets_directory_on_the_host(tmp_path):
    owner = "%d:%d" % (os.getuid(), os.getgid())
    store = SecretsDir(str(tmp_path / "project"))
    key, created = store.key(check_mode=True)
    assert created and not (tmp_path / "project").exists()  # check mode writes nothing
    key, created = store.key(check_mode=False)
    assert created and _mode(tmp_path / "project" / "secrets" / "hmac.key") == 0o600
    assert store.key(check_mode=False) == (key, False)
    name = "a" * 64
    assert store.ensure(name, {"api_key": "v1"}, 'T="x"\n', owner, check_mode=True)
    assert not (tmp_path / "project" / "secrets" / name).exists()
    assert store.ensure(name, {"api_key": "v1"}, 'T="x"\n', owner, check_mode=False)
    directory = tmp_path / "project" / "secrets" / name
    assert (_mode(directory), _mode(directory / "files"), _mode(directory / "files" / "api_key"),
            _mode(directory / ENV_FILE)) == (0o700, 0o500, 0o400, 0o400)
    assert (directory / "files" / "api_key").read_text() == "v1"
    assert not store.ensure(name, {"api_key": "v1"}, 'T="x"\n', owner, check_mode=False)  # idempotent
    assert store.ensure(name, {"api_key": "v1"}, None, owner, check_mode=False)  # a half-written set is redone
    assert not (directory / ENV_FILE).exists()
    other = "b" * 64
    store.ensure(other, {"api_key": "v2"}, None, owner, check_mode=False)
    assert store.prune({other}, check_mode=True) == [name] and directory.exists()
    assert store.prune({other}, check_mode=False) == [name] and not directory.exists()
    assert (tmp_path / "project" / "secrets" / "hmac.key").exists()


# --------------------------------------------------------------------------------------------
# The state: the secrets' hash is part of a release
# --------------------------------------------------------------------------------------------

H1, H2 = "1" * 64, "2" * 64
STABLE = {"generation": 1, "mode": "stable", "weight": 0, "stable": "blue", "canary": None,
          "slots": {"blue": {"image": "app:1", "version": "1", "mode": "stable", "secrets": H1}}}


@pytest.mark.parametrize("secrets, wanted_slots", [
    (H1, {"blue": {"image": "app:1", "version": "1", "mode": "stable", "secrets": H1}}),
    (H2, {"green": {"image": "app:1", "version": "1", "mode": "stable", "secrets": H2}}),
    (None, {"green": {"image": "app:1", "version": "1", "mode": "stable"}}),
])
def test_a_new_secrets_hash_is_a_new_release(secrets, wanted_slots):
    assert deploy_target(STABLE, True, "app:1", "1", secrets=secrets)["slots"] == wanted_slots


def test_a_first_deploy_and_a_canary_carry_the_hash():
    assert deploy_target({}, False, "app:1", "1", secrets=H1)["slots"]["blue"]["secrets"] == H1
    assert canary_target(STABLE, "app:2", "2", 10, secrets=H2)["slots"]["green"] == \
        {"image": "app:2", "version": "2", "mode": "canary", "secrets": H2}


@pytest.mark.parametrize("value", ["hunter2", "A" * 64, H1[:-1], 5, None])
def test_a_slots_secrets_must_be_a_hash(value):
    state = copy.deepcopy(STABLE)
    state["slots"]["blue"]["secrets"] = value
    with pytest.raises(StateError, match="field 'slots.blue.secrets' is .*; it must be the 64 hex digits"):
        validate_state(state)


# --------------------------------------------------------------------------------------------
# Health from outside, and the shared logs volume
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check, limit", [
    (None, None),
    ({}, None),
    ({"interval": 1, "timeout": 2, "retries": 3, "start_period": 0}, 3.0),
    ({"interval": 0.5, "timeout": 1, "retries": 4, "start_period": 2}, 4.0),
])
def test_outside_health_limit(check, limit):
    assert outside_health_limit(check) == limit


def test_the_logs_volume_root_becomes_sticky_and_world_writable(tmp_path):
    volume = tmp_path / "_data"
    volume.mkdir(mode=0o755)
    os.chmod(volume, 0o755)
    inspected = {"Mounts": [{"Type": "bind", "Source": str(tmp_path), "Destination": "/run/secrets"},
                            {"Type": "volume", "Source": str(volume), "Destination": "/app/logs"}]}
    assert share_logs_volume(inspected) is True and _mode(volume) == 0o1777
    assert share_logs_volume(inspected) is False
    assert share_logs_volume({"Mounts": [{"Type": "volume", "Source": str(tmp_path / "gone"),
                                          "Destination": "/app/logs"}]}) is False


def test_compose_refusing_an_image_without_healthcheck_says_which_key_to_set():
    from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError
    from ansible_collections.swiftdeploy.stack.plugins.module_utils._stack_host import ConvergeError, StackHost

    class Engine(object):
        def __init__(self, message):
            self.message = message

        def compose_up(self, project, services=(), wait_timeout=None):
            raise EngineError(self.message)

    options = {"admin_url": "http://127.0.0.1:8082", "slot_prefix": "app-", "wait_timeout": 5}
    host = StackHost(Engine("container p-app-blue-1 has no healthcheck configured"), "/p", options)
    with pytest.raises(ConvergeError, match="set services.healthcheck.docker: false in the manifest"):
        host.compose_up(1, "compose file changed")
    host = StackHost(Engine("something else"), "/p", options)
    with pytest.raises(EngineError, match="something else"):
        host.compose_up(1, "compose file changed")
