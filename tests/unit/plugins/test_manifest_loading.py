"""Reading a manifest file: read, YAML and duplicate-key errors, overrides."""

import pytest

from ansible_collections.swiftdeploy.stack.plugins.action.manifest_info import load_manifest

from manifest_seed import SEED_TEXT, write  # tests/unit/plugins/manifest_seed.py


def test_seed_loads(tmp_path):
    manifest, problem = load_manifest(write(tmp_path, SEED_TEXT))
    assert problem is None
    assert manifest["nginx"]["port"] == 8080


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yml")
    manifest, (stage, errors) = load_manifest(path)
    assert manifest is None and stage == "read"
    assert errors == ["manifest: cannot read %s (No such file or directory); pass the right file with "
                      "-e swiftdeploy_manifest=PATH." % path]


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, "services:\n  image: [unclosed\nnginx: {}\n")
    _manifest, (stage, errors) = load_manifest(path)
    assert stage == "parse"
    assert errors[0].startswith("manifest: %s is not valid YAML at line 3, column " % path)
    assert errors[0].endswith("; fix the syntax there.")


def test_duplicate_keys_are_refused(tmp_path):
    path = write(tmp_path, SEED_TEXT + "contact: other@example.com\n")
    _manifest, (stage, errors) = load_manifest(path)
    assert stage == "parse"
    assert errors == ["manifest: %s is not valid YAML at line 7, column 1: duplicate key 'contact' (first at line "
                      "6); keep only one; fix the syntax there." % path]


def test_not_utf8(tmp_path):
    _manifest, (stage, errors) = load_manifest(write(tmp_path, b"contact: \xff\xfe\n"))
    assert stage == "parse"
    assert "is not UTF-8 text" in errors[0] and errors[0].endswith("save it as UTF-8.")


def test_schema_errors_are_passed_through(tmp_path):
    _manifest, (stage, errors) = load_manifest(write(tmp_path, SEED_TEXT.replace("port: 8080", "port: 80800")))
    assert stage == "schema"
    assert errors == ["manifest field 'nginx.port': 80800 is out of range; use a TCP port number from 1 to 65535."]


def test_overrides_are_merged_and_validated(tmp_path):
    path = write(tmp_path, SEED_TEXT)
    manifest, problem = load_manifest(path, {"opa": {"mode": "sidecar"}})
    assert problem is None
    assert manifest["opa"] == {"image": "openpolicyagent/opa:latest-static", "port": 8181, "mode": "sidecar",
                               "url": None, "timeout": 5.0, "allow_http": False, "ca_path": None,
                               "resources": {"memory": "256m", "cpus": 0.5, "pids": 128}}
    _manifest, (stage, errors) = load_manifest(path, {"opa": {"mode": "bogus"}})
    assert errors == ["manifest field 'opa.mode': 'bogus' is not allowed; use one of: embedded, sidecar, external."]


@pytest.mark.parametrize("text, message_start", [
    ("", "manifest: the file is empty"),
    ("- a\n- b\n", "manifest: the top level is list"),
])
def test_empty_and_wrong_shape(tmp_path, text, message_start):
    _manifest, (stage, errors) = load_manifest(write(tmp_path, text))
    assert stage == "schema" and errors[0].startswith(message_start)
