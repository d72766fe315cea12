"""docker-compose.yml.j2 for a team's own service: its keys reach each app slot, a slot's secrets
by its own keyed hash only, and compose reads every value as written."""

import copy

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest

from test_compose_limits import render  # tests/unit/roles/test_compose_limits.py

H_OLD, H_NEW = "a" * 64, "b" * 64
OWN = {"services": {"image": "team/api:2", "port": 8000, "version": "2.0.0", "user": "20000:20000",
                    "env": {"GREETING": "hi $USER", "Z_LAST": "z"},
                    "secrets": ["api_key", {"name": "API_TOKEN", "env": True}],
                    "command": ["api", "--name=$HOSTNAME"],
                    "tmpfs": ["/tmp", {"path": "/var/cache/api", "size": "64m"}],
                    "healthcheck": {"path": "/ready", "interval": 0.5, "timeout": 1, "retries": 4, "start_period": 2,
                                    "docker": False}},
       "nginx": {"image": "nginx:1.27", "port": 8080}, "contact": "ops@example.com"}
ROLLOUT = {"generation": 2, "mode": "stable", "weight": 0, "stable": "green", "canary": None, "slots": {
    "blue": {"image": "team/api:2", "version": "2.0.0", "mode": "stable", "secrets": H_OLD},
    "green": {"image": "team/api:2", "version": "2.0.0", "mode": "stable", "secrets": H_NEW},
}}


def test_the_services_keys_reach_each_app_slot():
    compose = render(validate_manifest(copy.deepcopy(OWN)), ROLLOUT)
    for slot, digest in (("blue", H_OLD), ("green", H_NEW)):
        app = compose["services"]["app-" + slot]
        assert app["user"] == "20000:20000"
        assert app["read_only"] is True and app["cap_drop"] == ["ALL"]
        assert app["tmpfs"] == ["/tmp:size=16m", "/var/cache/api:size=64m"]
        # `$$` is compose's escape: the app gets `$USER` and `$HOSTNAME` as written.
        assert app["environment"]["GREETING"] == "hi $$USER" and app["environment"]["Z_LAST"] == "z"
        assert app["environment"]["APP_PORT"] == "8000"
        assert app["command"] == ["api", "--name=$$HOSTNAME"]
        assert "healthcheck" not in app  # docker: false, an image without HEALTHCHECK
        assert {"type": "bind", "source": "./secrets/%s/files" % digest, "target": "/run/secrets",
                "read_only": True} in app["volumes"]
        assert app["env_file"] == [{"path": "./secrets/%s/env" % digest, "required": False}]
        assert app["labels"]["org.swiftdeploy.secrets-hmac"] == digest


def test_a_slot_without_secrets_mounts_none_and_the_image_healthcheck_keeps_its_timings():
    data = copy.deepcopy(OWN)
    data["services"]["healthcheck"]["docker"] = True
    compose = render(validate_manifest(data))
    app = compose["services"]["app-blue"]
    assert "env_file" not in app and "org.swiftdeploy.secrets-hmac" not in app["labels"]
    assert all(volume["target"] != "/run/secrets" for volume in app["volumes"])
    assert app["healthcheck"] == {"interval": "0.5s", "timeout": "1s", "retries": 4, "start_period": "2s"}


def test_the_example_defaults_render_as_before():
    compose = render(validate_manifest({"services": {"image": "app:1", "port": 3000},
                                        "nginx": {"image": "nginx:1.27", "port": 8080}, "contact": "ops@example.com"}))
    app = compose["services"]["app-blue"]
    assert app["user"] == "10001:10001" and app["tmpfs"] == ["/tmp:size=16m"] and "command" not in app
    assert app["healthcheck"] == {"interval": "1s", "timeout": "2s", "retries": 3}
    assert list(app["environment"]) == ["MODE_FILE", "APP_VERSION", "APP_PORT", "LOG_DIR"]
