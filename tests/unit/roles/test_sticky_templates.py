"""nginx.conf.j2 with canary.sticky, rendered without Docker (tests/integration/test_sticky_sessions.py
runs it in the stack's nginx with real clients)."""

import copy
import re

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import validate_manifest
from ansible_collections.swiftdeploy.stack.plugins.module_utils._state import (
    canary_target,
    initial_state,
    with_generations,
)

from role_templates import render_template, role_variables  # tests/unit/roles/role_templates.py

MINIMAL = {"stack": "shop-eu", "services": {"image": "app:1", "port": 3000},
           "nginx": {"image": "nginx:1.27", "port": 8443}, "contact": "ops@example.com"}
FIRST = initial_state("app:1", "1.0.0")
STABLE = with_generations(FIRST, False, [FIRST], sticky=True)[0]
CANARY = with_generations(STABLE, True, [canary_target(STABLE, "app:2", "2.0.0", 10)], sticky=True)[0]
FULL = with_generations(CANARY, True, [canary_target(CANARY, "app:2", "2.0.0", 100)], sticky=True)[0]


def render(live, canary=None, tls=None):
    data = copy.deepcopy(MINIMAL)
    if canary is not None:
        data["canary"] = canary
    if tls is not None:
        data["nginx"]["tls"] = tls
    return render_template("nginx.conf.j2", role_variables(validate_manifest(data), live,
                                                           _swiftdeploy_tls={"stem": "0123456789abcdef"}))


def block(conf, head):
    """The text of the block that starts with `head` (up to its closing brace at that indent)."""
    match = re.search(r"^( *)%s \{\n(.*?)^\1\}" % re.escape(head), conf, re.M | re.S)
    assert match, head
    return match.group(2)


def directives(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("live", [STABLE, CANARY, FULL])
def test_without_sticky_nothing_about_cookies_is_rendered(live):
    conf = render(live)
    assert "cookie" not in conf.lower() and "sticky" not in conf
    assert "$swiftdeploy_new_client_slot" not in conf
    assert "proxy_pass http://swiftdeploy_slot_$swiftdeploy_slot;\n        }" in conf


@pytest.mark.parametrize("live, split", [
    (STABLE, ["default blue;"]),
    (CANARY, ["10% green;", "* blue;"]),
    (FULL, ["default green;"]),
])
def test_new_clients_are_split_by_the_weight_and_a_live_release_cookie_keeps_its_slot(live, split):
    conf = render(live, {"sticky": True})
    head = "split_clients \"${request_id}\" $swiftdeploy_new_client_slot" if len(split) == 2 \
        else "map $request_id $swiftdeploy_new_client_slot"
    assert directives(block(conf, head)) == split
    honoured = directives(block(conf, "map $cookie_swiftdeploy_release_shop_eu $swiftdeploy_sticky_slot"))
    assert honoured == ["default '';"] + ["'%s.%d' %s;" % (slot, live["slot_generations"][slot], slot)
                                          for slot in sorted(live["slots"])]
    assert directives(block(conf, "map $swiftdeploy_sticky_slot $swiftdeploy_slot")) == [
        "'' $swiftdeploy_new_client_slot;", "default $swiftdeploy_sticky_slot;"]
    cookies = directives(block(conf, "map $swiftdeploy_slot $swiftdeploy_release_cookie"))
    assert cookies == ["%s 'swiftdeploy_release_shop_eu=%s.%d; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600';"
                       % (slot, slot, live["slot_generations"][slot], ) for slot in sorted(live["slots"])]
    # Only a client without a live release's cookie is given one.
    assert directives(block(conf, "map $swiftdeploy_sticky_slot $swiftdeploy_sticky_set_cookie")) == [
        "'' $swiftdeploy_release_cookie;", "default '';"]


def http_headers(conf):
    """The add_header lines of the http block itself (not of a server or location)."""
    return [line.strip() for line in conf.splitlines() if re.match(r"^    add_header ", line)]


@pytest.mark.parametrize("tls", [None, {"enabled": True}, {"enabled": True, "hsts_max_age": 31536000}])
def test_the_public_location_sets_the_cookie_and_keeps_every_header_of_the_http_block(tls):
    conf = render(CANARY, {"sticky": True, "sticky_max_age": 600}, tls)
    public = block(conf, "location /")  # the public listener's comes first
    assert "proxy_pass http://swiftdeploy_slot_$swiftdeploy_slot;" in public
    headers = [line for line in directives(public) if line.startswith("add_header")]
    assert headers[0] == "add_header Set-Cookie $swiftdeploy_sticky_set_cookie always;"
    assert headers[1:] == http_headers(conf) and len(headers) == (3 if tls and tls.get("hsts_max_age") else 2)
    secure = "; Secure" if tls else ""
    assert "blue 'swiftdeploy_release_shop_eu=blue.1; Path=/; HttpOnly; SameSite=Lax; Max-Age=600%s';" % secure in conf
    # Nowhere else: not on the admin listener, chaos or the error pages.
    assert conf.count("Set-Cookie") == 1


def test_the_edge_log_still_attributes_each_request_to_its_slot():
    conf = render(CANARY, {"sticky": True})
    assert "log_format swiftdeploy_edge '$msec\\t$swiftdeploy_slot\\t" in conf
    assert conf.count("map $swiftdeploy_sticky_slot $swiftdeploy_slot {") == 1


def test_a_state_without_stamps_names_its_releases_by_the_states_generation():
    live = {key: value for key, value in CANARY.items() if key != "slot_generations"}
    conf = render(live, {"sticky": True})
    assert "'blue.2' blue;" in conf and "'green.2' green;" in conf
