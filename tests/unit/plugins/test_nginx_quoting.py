"""nginx string literals: escaping is exact and reversible, and nothing escapes the quotes."""

import json

import pytest
from hypothesis import given, strategies as st

from ansible_collections.swiftdeploy.stack.plugins.module_utils._nginx import (
    NginxQuoteError,
    nginx_json,
    nginx_string,
)


def nginx_unquote(literal):
    """What nginx's config parser makes of a single-quoted token (ngx_conf_read_token)."""
    assert literal[0] == literal[-1] == "'"
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"'": "'", '"': '"', "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        # An unescaped quote inside would end the token early: that is an injection.
        assert char != "'", "unescaped quote in %r" % literal
        out.append(char)
        i += 1
    return "".join(out)


@pytest.mark.parametrize("value, literal", [
    ("plain", "'plain'"),
    ("it's", "'it\\'s'"),
    ("back\\slash", "'back\\\\slash'"),
    ("x'; } server { listen 9999; #", "'x\\'; } server { listen 9999; #'"),
])
def test_nginx_string(value, literal):
    assert nginx_string(value) == literal
    assert nginx_unquote(literal) == value


@pytest.mark.parametrize("value, bad", [("a$b", "$"), ("a\nb", "\n"), ("a\x00", "\x00"), ("a\x7f", "\x7f")])
def test_nginx_string_refuses_what_nginx_would_interpret(value, bad):
    with pytest.raises(NginxQuoteError) as caught:
        nginx_string(value)
    assert str(caught.value) == "%r cannot be written into nginx.conf: it contains %r, which nginx would interpret; " \
                                "remove it" % (value, bad)


def test_nginx_json_of_the_canonical_injection():
    literal = nginx_json({"contact": "x'; } server { listen 9999; #"})
    assert literal == "'{\"contact\": \"x\\'; } server { listen 9999; #\"}'"


def test_nginx_json_writes_dollar_as_a_json_escape():
    literal = nginx_json({"contact": "$host"})
    assert "$" not in literal
    assert json.loads(nginx_unquote(literal)) == {"contact": "$host"}


@given(st.text())
def test_nginx_json_round_trips_any_text(text):
    literal = nginx_json({"contact": text})
    assert "$" not in literal
    assert all(ord(c) >= 0x20 for c in literal)
    assert json.loads(nginx_unquote(literal)) == {"contact": text}


@given(st.text(alphabet=st.characters(blacklist_characters="$", blacklist_categories=("Cc",))))
def test_nginx_string_round_trips_text_without_dollar_or_controls(text):
    assert nginx_unquote(nginx_string(text)) == text
