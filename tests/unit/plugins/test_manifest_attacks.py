"""Hostile manifests: each attack is attempted and must end in a refusal that names the input.

Someone who can write the manifest or pass extra vars should get, at worst, a message: never a
traceback, never the controller's memory or minutes of its time, and nothing started on a host.
"""

import string
import tempfile
import time
import tracemalloc
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible.playbook.task import Task

from ansible_collections.swiftdeploy.stack.plugins.action.manifest_info import (
    MAX_MANIFEST_BYTES,
    ActionModule,
    load_manifest,
)

from manifest_seed import SEED_TEXT, write  # tests/unit/plugins/manifest_seed.py


# Nine levels of nine: about 320 bytes that a plain YAML loader expands to 9**9 (387 million)
# strings.
ALIAS_BOMB = "".join(["a: &a [x,x,x,x,x,x,x,x,x]\n"] + [
    "%s: &%s [%s]\n" % (name, name, ",".join(["*" + previous] * 9)) for previous, name in zip("abcdefgh", "bcdefghi")])


def measured(path, overrides=None):
    """load_manifest's answer, with the CPU seconds (other work on the machine does not count)
    and the peak bytes it took. tracemalloc slows allocation-heavy code several times over."""
    tracemalloc.start()
    started = time.process_time()
    try:
        answer = load_manifest(path, overrides)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return answer, time.process_time() - started, peak


def refused(path, overrides=None, seconds=2.0, megabytes=16):
    """Load and require a refusal within the bounds; return (stage, errors)."""
    (manifest, problem), elapsed, peak = measured(path, overrides)
    assert manifest is None and problem is not None
    assert elapsed < seconds, "took %.2f s" % elapsed
    assert peak < megabytes * 1024 * 1024, "peak %d bytes" % peak
    stage, errors = problem
    assert errors and all(isinstance(error, str) and len(error) <= 600 for error in errors)
    return stage, errors


def test_alias_bomb_is_refused_before_it_expands(tmp_path):
    assert len(ALIAS_BOMB) < 400
    path = write(tmp_path, ALIAS_BOMB)
    assert refused(path, megabytes=2) == ("parse", [
        "manifest: %s is refused at line 2, column 8: the alias *a is not allowed, as aliases let a few hundred "
        "bytes expand to gigabytes; write the value out in full." % path])


def test_the_action_refuses_an_alias_bomb_without_touching_the_host(tmp_path):
    path = write(tmp_path, ALIAS_BOMB)
    task = Task()
    task.args = {"path": path}
    connection = mock.MagicMock()
    action = ActionModule(task, connection, mock.MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    result = action.run(task_vars={})
    assert (result["failed"], result["changed"], result["valid"], result["stage"]) == (True, False, False, "parse")
    assert result["msg"].startswith("%s is not a valid SwiftDeploy manifest:\n- manifest: %s is refused at line 2"
                                    % (path, path))
    assert not connection.exec_command.called and not connection.put_file.called
    with open(path) as handle:
        assert handle.read() == ALIAS_BOMB


def test_an_anchor_that_no_alias_uses_is_harmless(tmp_path):
    manifest, problem = load_manifest(write(tmp_path, SEED_TEXT.replace("nginx: {", "nginx: &web {")))
    assert problem is None and manifest["nginx"]["port"] == 8080


def test_a_file_over_1_mib_is_not_parsed(tmp_path):
    path = write(tmp_path, SEED_TEXT + "#" * MAX_MANIFEST_BYTES + "\n")
    assert refused(path, seconds=0.5, megabytes=3) == ("read", [
        "manifest: %s is larger than 1048576 bytes (1 MiB), where a manifest needs a few hundred; pass the right file "
        "with -e swiftdeploy_manifest=PATH." % path])


def test_an_endless_file_is_read_no_further_than_the_limit():
    assert refused("/dev/zero", seconds=0.5, megabytes=3)[0] == "read"


@pytest.mark.parametrize("text, where, problem", [
    ("contact: " + "[" * 10000 + "]" * 10000 + "\n", "line 1, column 41",
     "values are nested more than 32 levels deep, where a manifest needs 4; flatten them"),
    ("contact:\n" + "".join("%s- \n" % (" " * level) for level in range(40)), "line 33, column 32",
     "values are nested more than 32 levels deep, where a manifest needs 4; flatten them"),
    ("chaos: {allow_from: [" + "10.0.0.1, " * 20000 + "]}\n", "line 1, column 99972",
     "it holds more than 10000 values, where a manifest needs about 100; remove the extra ones"),
    ("? [a, b]\n: 1\n", "line 1, column 3", "a list is used as a key; use a plain name such as 'services'"),
    ("nginx: {? {port: 1}: 2}\n", "line 1, column 11",
     "a mapping is used as a key; use a plain name such as 'services'"),
    ("nginx: {port: " + "9" * 5000 + "}\n", "line 1, column 15",
     "the integer 9999999999999999999999999999999999999... has 5000 characters, more than any field takes; use a "
     "number in the field's range"),
    ("nginx: {port: 0x" + "f" * 100000 + "}\n", "line 1, column 15",
     "the integer 0xfffffffffffffffffffffffffffffffffff... has 100002 characters, more than any field takes; use a "
     "number in the field's range"),
    ("nginx: {port: " + "1:" * 50000 + "1}\n", "line 1, column 15",
     "the integer 1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1... has 100001 characters, more than any field takes; use a "
     "number in the field's range"),
    ("services: {version: 2024-13-01}\n", "line 1, column 21",
     "2024-13-01 cannot be read as timestamp (month must be in 1..12); quote it to make it a string"),
], ids=["deep-flow", "deep-block", "too-many-values", "list-key", "mapping-key", "long-int", "long-hex-int",
        "long-base-60-int", "impossible-date"])
def test_yaml_a_manifest_never_needs_is_refused_with_line_and_column(tmp_path, text, where, problem):
    path = write(tmp_path, text)
    assert refused(path, seconds=5.0) == ("parse", ["manifest: %s is refused at %s: %s." % (path, where, problem)])


def test_a_huge_duplicate_key_gets_a_bounded_message(tmp_path):
    key = "k" * 100000
    path = write(tmp_path, "? %s\n: 1\n? %s\n: 2\n" % (key, key))
    assert refused(path) == ("parse", [
        "manifest: %s is not valid YAML at line 3, column 3: duplicate key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk... "
        "(first at line 1); keep only one; fix the syntax there." % path])


@pytest.mark.parametrize("text, error", [
    ("1: x\n", "manifest field '1': unknown key; remove it or use one of: analysis, canary, chaos, contact, fleet, network, "
               "nginx, opa, policy, services, stack."),
    ("null: x\n", "manifest field 'null (empty)': unknown key; remove it or use one of: analysis, canary, chaos, contact, "
                  "fleet, network, nginx, opa, policy, services, stack."),
    ("2024-01-01: x\n", "manifest field '2024-01-01': unknown key; remove it or use one of: analysis, canary, chaos, contact, "
                        "fleet, network, nginx, opa, policy, services, stack."),
    ("!!binary aGk=: x\n", "manifest field 'b'hi'': unknown key; remove it or use one of: analysis, canary, chaos, contact, "
                           "fleet, network, nginx, opa, policy, services, stack."),
], ids=["int", "null", "date", "binary"])
def test_keys_that_are_not_text_get_a_message(tmp_path, text, error):
    stage, errors = refused(write(tmp_path, SEED_TEXT + text))
    assert (stage, errors) == ("schema", [error])


@pytest.mark.parametrize("overrides, error", [
    ({"nginx": {"port": 10 ** 100000}},
     "manifest field 'nginx.port': an integer of about 100000 digits is out of range; use a TCP port number from 1 to "
     "65535."),
    ({"policy": {"thresholds": {"min_disk_free_gb": -(10 ** 400)}}},
     "manifest field 'policy.thresholds.min_disk_free_gb': an integer of about 400 digits is out of range; use a "
     "number of gigabytes, 0 or more."),
    ({"stack": "s" * (1 << 20)},
     "manifest field 'stack': '" + "s" * 76 + "... is too long (1048576 characters, at most 255); use a lower-case "
     "name of letters, digits, '_' and '-' (at most 63 characters); it names the compose project."),
    ({"canary": {"version": "1.1.0\n"}},
     "manifest field 'canary.version': '1.1.0\\n' is not valid; use a version of letters, digits, '.', '_', '+' and "
     "'-', quoted in YAML, e.g. \"1.1.0\"."),
    ([{"nginx": {"port": 1}}],
     "manifest: the overrides are list, expected a mapping of manifest keys such as {'opa': {'mode': 'embedded'}}; "
     "pass a mapping."),
], ids=["huge-port", "huge-negative-threshold", "1MiB-stack", "trailing-newline", "not-a-mapping"])
def test_extra_vars_are_held_to_the_same_rules(tmp_path, overrides, error):
    assert refused(write(tmp_path, SEED_TEXT), overrides) == ("schema", [error])


def test_a_10000_deep_extra_var_gets_a_bounded_message(tmp_path):
    deep = "x"
    for _level in range(10000):
        deep = {"k": deep}
    assert refused(write(tmp_path, SEED_TEXT), {"contact": deep}) == ("schema", [
        "manifest field 'contact': {'k': {'k': {'k': {'k': {'k': {'k': {'k': {'k': {'k': {'k': {'k': {'k': {'k':... "
        "is mapping, expected a string; use an e-mail address or URL of letters, digits and @ . _ + : / - (at most 128 "
        "characters); quotes, braces, semicolons, '$' and line breaks are not allowed."])


# ------------------------------------------------------------------------------------------
# Generated hostile manifests
# ------------------------------------------------------------------------------------------

# Built on draw: hypothesis writes out its strategies, and Python will not write such an int.
_HUGE_INTS = st.one_of(st.integers(), st.integers(min_value=2 ** 53, max_value=2 ** 70),
                       st.sampled_from([400, -5000, 200000]).map(lambda e: (10 ** abs(e)) * (1 if e > 0 else -1)))


def _values(longest):
    """Any value YAML or extra vars can carry, with strings up to `longest` characters."""
    scalars = st.one_of(
        st.none(), st.booleans(), _HUGE_INTS, st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.integers(256, longest).map(lambda n: "x" * n),
        st.sampled_from(["8080", "on-failure:3", "1.0.0\n", "nginx:l\u0430test", "256m", "\u00e9@x",
                         "a\u202eb", "$x", "'; } #"]),
        st.binary(max_size=8))
    keys = st.one_of(st.text(max_size=12), st.sampled_from(["services", "nginx", "opa", "port", "image", "contact",
                                                            "resources", "memory"]),
                     st.integers(41, longest).map(lambda n: "k" * n),
                     st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
    return st.recursive(scalars, lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(keys, children, max_size=6)), max_leaves=30)


# The YAML emitter and scanner are pure Python: the 1 MiB cases are the explicit tests above.
_YAML_VALUES = _values(2000)
_EXTRA_VARS_VALUES = _values(1 << 20)
_KEYS = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.integers(41, 1 << 20).map(lambda n: "k" * n))
_PATHS = st.sampled_from([
    (), ("stack",), ("contact",), ("services",), ("services", "port"), ("services", "image"), ("services", "version"),
    ("services", "restart_policy"), ("services", "resources"), ("services", "resources", "memory"),
    ("nginx", "port"), ("nginx", "resources", "cpus"), ("opa", "resources", "pids"), ("opa", "timeout"),
    ("canary", "window_seconds"), ("chaos", "allow_from"), ("policy", "thresholds"), ("network", "name"),
    ("policy", "thresholds", "min_requests"), ("unknown",),
])


def _nested(depth, leaf):
    for _level in range(depth):
        leaf = [leaf]
    return leaf


def _place(path, value):
    data = yaml.safe_load(SEED_TEXT)
    if not path:
        return value
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return data


@st.composite
def hostile_texts(draw):
    """Raw YAML: aliases, deep nesting, long numbers, odd keys and tags, or a dumped value."""
    kind = draw(st.sampled_from(["alias", "deep", "long-int", "complex-key", "tag", "dumped", "junk"]))
    if kind == "alias":
        width = draw(st.integers(1, 20))
        return "a: &x [%s]\nb: [%s]\n" % (", ".join(["v"] * width), ", ".join(["*x"] * width))
    if kind == "deep":
        depth = draw(st.integers(1, 2000))
        opening, closing = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        return "contact: %s1%s\n" % (opening * depth, closing * depth)
    if kind == "long-int":
        digits = draw(st.integers(1, 5000))
        prefix = draw(st.sampled_from(["", "0x", "0o", "-", "0b"]))
        return SEED_TEXT.replace("port: 8080", "port: %s%s" % (prefix, "1" * digits))
    if kind == "complex-key":
        return draw(st.sampled_from(["? [a]\n: 1\n", "? {a: 1}\n: 1\n", "{[1, 2]: 3}\n", "? !!set {a}\n: 1\n"]))
    if kind == "tag":
        tag = draw(st.sampled_from(["!!python/object/apply:os.system", "!!binary", "!!set", "!!omap", "!!timestamp",
                                    "!!float", "!!int", "!custom", "!!str"]))
        return SEED_TEXT.replace('contact: "ops@swiftdeploy.local"', "contact: %s %s" % (tag, draw(st.sampled_from(
            ["x", "[1]", "{a: 1}", "2024-02-30", "1e999", "1:2:3", "'echo hi'"]))))
    if kind == "dumped":
        value = _place(draw(_PATHS), draw(_YAML_VALUES))
        try:
            return yaml.safe_dump(value, allow_unicode=draw(st.booleans()))
        except (yaml.YAMLError, ValueError):
            return SEED_TEXT
    return draw(st.text(alphabet=string.printable + "\u00e9\u202e\x00", max_size=400))


@st.composite
def hostile_overrides(draw):
    """Extra vars reach the validator without YAML's limits: huge ints, any keys, deep values."""
    value = draw(_EXTRA_VARS_VALUES)
    if draw(st.booleans()):
        value = _nested(draw(st.integers(0, 20000)), value)
    return _place(draw(_PATHS), value) if draw(st.booleans()) else {draw(_KEYS): value}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=hostile_texts(), overrides=st.one_of(st.none(), hostile_overrides()))
def test_hostile_manifests_always_end_with_a_message(text, overrides):
    with tempfile.TemporaryDirectory() as directory:
        path = write(directory, text)
        (manifest, problem), elapsed, peak = measured(path, overrides)
    assert elapsed < 3.0, "took %.2f s" % elapsed
    assert peak < 32 * 1024 * 1024, "peak %d bytes" % peak
    if problem is None:
        assert isinstance(manifest, dict) and manifest["services"]["image"]
        return
    stage, errors = problem
    assert stage in ("read", "parse", "schema")
    assert 1 <= len(errors) <= 21
    for error in errors:
        assert isinstance(error, str) and error.startswith("manifest")
        assert len(error) <= 600, error[:200]
        assert error.endswith(".")
