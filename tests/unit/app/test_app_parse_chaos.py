"""parse_chaos: the pure validation of POST /chaos bodies."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"mode": "slow", "duration": 0}', {"mode": "slow", "duration": 0}),
        (b'{"mode": "slow", "duration": 30}', {"mode": "slow", "duration": 30}),
        (b'{"mode": "slow", "duration": 1.5}', {"mode": "slow", "duration": 1.5}),
        (b'{"mode": "error", "rate": 0}', {"mode": "error", "rate": 0}),
        (b'{"mode": "error", "rate": 1}', {"mode": "error", "rate": 1}),
        (b'{"mode": "error", "rate": 0.25}', {"mode": "error", "rate": 0.25}),
        (b'{"mode": "recover"}', {"mode": "recover"}),
        (b'\n  {"rate": 1e-1, "mode": "error"}  \n', {"mode": "error", "rate": 0.1}),
    ],
)
def test_accepts_valid_bodies(appmod, body, expected):
    assert appmod.parse_chaos(body) == expected


EMPTY = 'request body is empty; expected a JSON object such as {"mode": "recover"}'
MODES = "slow, error, recover"
DURATION = "field 'duration' must be a number of seconds from 0 to 30; got "
RATE = "field 'rate' must be a fraction from 0 to 1; got "


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", EMPTY),
        (b"  \r\n", EMPTY),
        (b"{bad", "request body is not valid JSON (Expecting property name enclosed in double quotes "
                  "at line 1 column 2); expected a JSON object"),
        (b'{"mode": "slow",}', "request body is not valid JSON (Expecting property name enclosed in double "
                               "quotes at line 1 column 17); expected a JSON object"),
        (b"\xff\xfe{}", "request body is not valid UTF-8; expected a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "request body is not valid JSON (nested too deeply); expected a JSON object"),
        (b'[{"mode": "recover"}]', "request body must be a JSON object, got array"),
        (b'"recover"', "request body must be a JSON object, got string"),
        (b"null", "request body must be a JSON object, got null"),
        (b"3", "request body must be a JSON object, got number"),
        (b"true", "request body must be a JSON object, got boolean"),
        (b"{}", f"field 'mode' is required; allowed values: {MODES}"),
        (b'{"duration": 3}', f"field 'mode' is required; allowed values: {MODES}"),
        (b'{"mode": "explode"}', f'field \'mode\' must be one of {MODES}; got "explode"'),
        (b'{"mode": "SLOW", "duration": 1}', f'field \'mode\' must be one of {MODES}; got "SLOW"'),
        (b'{"mode": 1}', f"field 'mode' must be one of {MODES}; got 1"),
        (b'{"mode": null}', f"field 'mode' must be one of {MODES}; got null"),
        (b'{"mode": ["slow"]}', f'field \'mode\' must be one of {MODES}; got ["slow"]'),
        (b'{"mode": "slow"}',
         "field 'duration' is required when mode is slow: a number of seconds from 0 to 30"),
        (b'{"mode": "slow", "duration": "5"}', DURATION + '"5" (string)'),
        (b'{"mode": "slow", "duration": true}', DURATION + "true (boolean)"),
        (b'{"mode": "slow", "duration": false}', DURATION + "false (boolean)"),
        (b'{"mode": "slow", "duration": null}', DURATION + "null (null)"),
        (b'{"mode": "slow", "duration": [1]}', DURATION + "[1] (array)"),
        (b'{"mode": "slow", "duration": 31}', DURATION + "31 (out of range)"),
        (b'{"mode": "slow", "duration": 30.0001}', DURATION + "30.0001 (out of range)"),
        (b'{"mode": "slow", "duration": -1}', DURATION + "-1 (out of range)"),
        (b'{"mode": "slow", "duration": NaN}', DURATION + "NaN (not a finite number)"),
        (b'{"mode": "slow", "duration": Infinity}', DURATION + "Infinity (not a finite number)"),
        (b'{"mode": "slow", "duration": 1e999}', DURATION + "Infinity (not a finite number)"),
        (b'{"mode": "error"}', "field 'rate' is required when mode is error: a fraction from 0 to 1"),
        (b'{"mode": "error", "rate": 1.5}', RATE + "1.5 (out of range)"),
        (b'{"mode": "error", "rate": 2}', RATE + "2 (out of range)"),
        (b'{"mode": "error", "rate": -0.1}', RATE + "-0.1 (out of range)"),
        (b'{"mode": "error", "rate": true}', RATE + "true (boolean)"),
        (b'{"mode": "error", "rate": "0.5"}', RATE + '"0.5" (string)'),
        (b'{"mode": "error", "rate": {}}', RATE + "{} (object)"),
        (b'{"mode": "error", "rate": -Infinity}', RATE + "-Infinity (not a finite number)"),
        (b'{"mode": "error", "rate": NaN}', RATE + "NaN (not a finite number)"),
        (b'{"mode": "recover", "rate": 1}', "unknown field 'rate' for mode recover; allowed fields: mode"),
        (b'{"mode": "error", "rate": 1, "duration": 2}',
         "unknown field 'duration' for mode error; allowed fields: mode, rate"),
        (b'{"mode": "slow", "duration": 1, "rate": 1, "x": 0}',
         "unknown fields 'rate', 'x' for mode slow; allowed fields: mode, duration"),
    ],
)
def test_rejects_invalid_bodies_with_exact_message(appmod, body, message):
    with pytest.raises(ValueError) as excinfo:
        appmod.parse_chaos(body)
    assert str(excinfo.value) == message


def test_long_bad_values_are_truncated_in_the_message(appmod):
    with pytest.raises(ValueError) as excinfo:
        appmod.parse_chaos(json.dumps({"mode": "x" * 500}).encode())
    message = str(excinfo.value)
    assert message.endswith('got "' + "x" * 56 + "...")
    assert len(message) < 120


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_SCALARS)
def test_duration_is_accepted_exactly_when_a_finite_number_from_0_to_30(appmod, value):
    body = json.dumps({"mode": "slow", "duration": value}).encode()
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and math.isfinite(value) and 0 <= value <= 30:
        assert appmod.parse_chaos(body) == {"mode": "slow", "duration": value}
    else:
        with pytest.raises(ValueError, match=r"^field 'duration' must be a number of seconds from 0 to 30; got "):
            appmod.parse_chaos(body)


@settings(max_examples=300, deadline=None)
@given(value=JSON_SCALARS)
def test_rate_is_accepted_exactly_when_a_finite_number_from_0_to_1(appmod, value):
    body = json.dumps({"mode": "error", "rate": value}).encode()
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and math.isfinite(value) and 0 <= value <= 1:
        assert appmod.parse_chaos(body) == {"mode": "error", "rate": value}
    else:
        with pytest.raises(ValueError, match=r"^field 'rate' must be a fraction from 0 to 1; got "):
            appmod.parse_chaos(body)


@settings(max_examples=500, deadline=None)
@given(body=st.one_of(st.binary(max_size=64),
                      st.recursive(JSON_SCALARS, lambda inner: st.one_of(
                          st.lists(inner, max_size=3),
                          st.dictionaries(st.sampled_from(["mode", "rate", "duration", "x"]), inner, max_size=3),
                      )).map(lambda value: json.dumps(value).encode())))
def test_any_body_yields_a_valid_spec_or_a_value_error(appmod, body):
    try:
        spec = appmod.parse_chaos(body)
    except ValueError as exc:
        assert str(exc)
    else:
        assert spec["mode"] in ("slow", "error", "recover")
        assert set(spec) == {"mode", {"slow": "duration", "error": "rate", "recover": "mode"}[spec["mode"]]}
