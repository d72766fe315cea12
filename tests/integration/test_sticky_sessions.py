"""Sticky sessions (canary.sticky) on a real stack: real Docker, the stack's nginx, real HTTP.

One stack (sdsticky, ports 19680/19682) is deployed for the module without sticky sessions and
goes, test by test in file order, through a canary at 10% that turns them on, its weight raised
to 30% and 60%, a roll forward, a second canary (which lands in the slot the first release left)
and a roll back. Clients are plain sockets: a
"new client" sends no cookie; a client with a cookie sends the one nginx gave it, as a browser
would. The release that answered is the version in the app's JSON body.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import re
import socket
import time

import pytest

from helpers import Background, LocalStack  # tests/integration/helpers.py
from traffic import Traffic  # tests/integration/traffic.py

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT, ADMIN_PORT = "sdsticky", 19680, 19682
COOKIE = "swiftdeploy_release_%s" % NAME
WINDOW_SECONDS = 5
NEW_CLIENTS = 10000
THREADS = 16
ATTRIBUTES = "; Path=/; HttpOnly; SameSite=Lax; Max-Age=900"
SET_COOKIE_RE = re.compile(r"%s=((?:blue|green)\.[0-9]+)%s" % (COOKIE, re.escape(ATTRIBUTES)))

# What the tests hand on to the next one (they run in file order on one stack).
SEEN = {}


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


def visit(cookie=None, raw_cookie=None, port=PORT):
    """One GET / on its own connection: (status, version or None, [Set-Cookie values], headers).
    cookie: our cookie's value; raw_cookie: the whole Cookie header's bytes, sent as they are."""
    head = b"GET / HTTP/1.1\r\nHost: sticky.test\r\nConnection: close\r\n"
    if cookie is not None:
        head += ("Cookie: %s=%s\r\n" % (COOKIE, cookie)).encode()
    if raw_cookie is not None:
        head += b"Cookie: " + raw_cookie + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + b"\r\n")
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    header_text, _blank, body = response.partition(b"\r\n\r\n")
    lines = header_text.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    set_cookies = [value for name, value in headers if name.lower() == "set-cookie"]
    try:
        version = json.loads(body)["version"] if status == 200 else None
    except ValueError:
        version = None
    return status, version, set_cookies, headers


def released(set_cookies):
    """The release value of our one Set-Cookie, after checking its attributes; None for none."""
    if not set_cookies:
        return None
    assert len(set_cookies) == 1, set_cookies
    match = SET_COOKIE_RE.fullmatch(set_cookies[0])
    assert match, set_cookies[0]
    return match.group(1)


def new_clients(total):
    """`total` first visits in parallel: [(version, release value given)]."""
    def one(_index):
        status, version, set_cookies, _headers = visit()
        assert status == 200, status
        return version, released(set_cookies)
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(total)))


def binomial_bounds(total, share, sigmas=4.0):
    spread = sigmas * math.sqrt(total * share * (1.0 - share))
    return total * share - spread, total * share + spread


class Cohort(Background):
    """Clients that keep the cookie they were given, each visiting in turn from a background
    thread until stopped; every answer is kept as (phase, client, version, release set)."""

    def __init__(self, cookies):
        super().__init__()
        self.cookies = list(cookies)
        self.phase = "start"
        self.answers = []
        self.errors = []

    def _run(self):
        while not self._stop.is_set():
            for client, cookie in enumerate(self.cookies):
                phase = self.phase
                try:
                    status, version, set_cookies, _headers = visit(cookie)
                except OSError as exc:
                    self.errors.append((phase, client, type(exc).__name__))
                    continue
                if status != 200:
                    self.errors.append((phase, client, status))
                    continue
                self.answers.append((phase, client, version, released(set_cookies)))

    def versions(self, client, phases):
        return {answer[2] for answer in self.answers if answer[1] == client and answer[0] in phases}


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


class Stack(LocalStack):
    def __init__(self, tmp_path, write_manifest, run_playbook):
        canary = {"weight": 10, "version": "1.1.0", "window_seconds": WINDOW_SECONDS, "sticky": True,
                  "sticky_max_age": 900}
        super().__init__(tmp_path, write_manifest, run_playbook, NAME, (PORT, ADMIN_PORT),
                         {"canary": canary, "policy": {"thresholds": {"min_requests": 20}}})
        self.next_manifest = self.manifest_with("next", {"canary": dict(canary, version="1.2.0")})
        # The stack is first deployed without sticky sessions, which the first promote turns on.
        self.plain_manifest = self.manifest_with("plain", {"canary": {
            key: value for key, value in canary.items() if key not in ("sticky", "sticky_max_age")}})

    def run(self, playbook, *args, manifest=None):
        run = super().run(playbook, *args, manifest=manifest)
        assert run.rc == 0, run.describe()
        return run

    def release(self, role):
        """(cookie value, version) of the stable or canary slot now."""
        state = self.state()
        slot = state[role]
        return "%s.%d" % (slot, state["slot_generations"][slot]), state["slots"][slot]["version"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, write_manifest, run_playbook, app_image):
    stack = Stack(tmp_path_factory.mktemp("sticky"), write_manifest, run_playbook)
    try:
        stack.run("deploy", manifest=stack.plain_manifest)
        yield stack
    finally:
        stack.teardown("-e", "clean=true")


# --------------------------------------------------------------------------------------------
# Tests, in the order they are meant to run
# --------------------------------------------------------------------------------------------


def test_new_clients_are_split_by_the_weight(stack):
    # Without sticky sessions: no cookie, and nothing of them in the state.
    assert visit()[:3] == (200, "1.0.0", [])
    assert "slot_generations" not in stack.state()
    # The promote that starts the canary turns them on: each slot is stamped.
    stack.run("promote", "-e", "mode=canary")
    assert stack.state()["slot_generations"] == {"blue": 2, "green": 2}
    stable, canary = stack.release("stable"), stack.release("canary")
    assert stable[1] == "1.0.0" and canary[1] == "1.1.0"
    started = time.monotonic()
    visits = new_clients(NEW_CLIENTS)
    seconds = time.monotonic() - started
    # Every new client is given the cookie of the release that answered it.
    assert set(visits) == {(stable[1], stable[0]), (canary[1], canary[0])}
    share = 100.0 * sum(1 for version, _value in visits if version == "1.1.0") / NEW_CLIENTS
    print("%d new clients in %.1f s: %.2f%% to the canary at weight 10" % (NEW_CLIENTS, seconds, share))
    assert abs(share - 10) <= 2
    SEEN.update(first_stable=stable, first_canary=canary)


def test_clients_keep_their_release_while_the_weight_rises_and_through_the_roll_forward(stack):
    stable, canary = SEEN["first_stable"], SEEN["first_canary"]
    # Ten clients on each release, with the cookie each was given.
    cookies = [stable[0]] * 10 + [canary[0]] * 10
    with Cohort(cookies) as cohort:
        time.sleep(0.5)
        for weight in (30, 60):
            cohort.phase = "weight %d" % weight
            stack.run("promote", "-e", "mode=canary", "-e", "weight=%d" % weight)
            time.sleep(0.3)
            # The weight moves new clients only: their share follows it.
            visits = new_clients(1000)
            low, high = binomial_bounds(1000, weight / 100.0)
            to_canary = sum(1 for version, _value in visits if version == "1.1.0")
            print("weight %d: %d of 1000 new clients to the canary" % (weight, to_canary))
            assert low <= to_canary <= high
        cohort.phase = "roll forward"
        with Traffic(PORT, warm_up=WINDOW_SECONDS + 0.5):  # the judged window's traffic (new clients)
            run = stack.run("promote", "-e", "mode=stable")
        assert "Canary 1.1.0 passed and is now stable at 100%." in run.stdout
        cohort.phase = "after"
        time.sleep(1.0)
    assert not cohort.errors, cohort.errors[:10]
    before = ("start", "weight 30", "weight 60")
    everything = before + ("roll forward", "after")
    for client, cookie in enumerate(cookies):
        if cookie == canary[0]:
            # The canary's clients never leave it, and it is the stable release at the end.
            assert cohort.versions(client, everything) == {"1.1.0"}, client
        else:
            assert cohort.versions(client, before) == {"1.0.0"}, client
            assert cohort.versions(client, ("after",)) == {"1.1.0"}, client
    # A cookie of a live release is never given again; a client of the slot that left is given
    # the cookie of the release it now gets (a new client: the stable one).
    given = {(answer[0], cookies[answer[1]], answer[3]) for answer in cohort.answers if answer[3] is not None}
    assert {entry for entry in given if entry[0] != "roll forward"} == {("after", stable[0], canary[0])}, given
    state = stack.state()
    slot, stamp = canary[0].split(".")
    assert state["canary"] is None and state["slot_generations"] == {slot: int(stamp)}


def test_a_cookie_of_an_earlier_release_of_a_slot_is_a_new_clients(stack):
    old = SEEN["first_stable"]  # blue's first release; the next canary lands in blue
    stack.run("promote", "-e", "mode=canary", manifest=stack.next_manifest)
    canary = stack.release("canary")
    assert canary[0].split(".")[0] == old[0].split(".")[0] and canary[0] != old[0] and canary[1] == "1.2.0"
    answers = []
    for _visit in range(300):
        status, version, set_cookies, _headers = visit(old[0])
        assert status == 200
        answers.append((version, released(set_cookies)))
    # Treated as new: split by the weight (10%), never all to the slot the cookie names, and
    # given the cookie of the release that answered.
    assert {value for _version, value in answers} <= {stack.release("stable")[0], canary[0]}
    to_canary = sum(1 for version, _value in answers if version == "1.2.0")
    low, high = binomial_bounds(300, 0.10)
    assert low <= to_canary <= high, to_canary
    SEEN["second_canary"] = canary


def test_after_a_roll_back_the_canarys_clients_land_on_stable_with_a_stable_cookie(stack):
    canary = SEEN["second_canary"]
    stable = stack.release("stable")
    status, version, set_cookies, _headers = visit(canary[0])
    assert (status, version, set_cookies) == (200, "1.2.0", [])
    stack.run("rollback", "-e", "reason=sticky test")
    for _visit in range(20):
        status, version, set_cookies, _headers = visit(canary[0])
        assert (status, version, released(set_cookies)) == (200, stable[1], stable[0])
    # With the stable cookie it was given, the client stays, and is not given it again.
    assert visit(stable[0])[:3] == (200, stable[1], [])


FORGED = [
    b"%s=green.999999" % COOKIE.encode(),
    b"%s=blue" % COOKIE.encode(),
    b"%s=" % COOKIE.encode(),
    b"%s=$swiftdeploy_slot" % COOKIE.encode(),
    b"%s=STABLE'; add_header X-Injected 1;" % COOKIE.encode(),
    b"%s=blue.1%%0d%%0aX-Injected:%%201" % COOKIE.encode(),
    b"%s=\xff\xfe" % COOKIE.encode(),
    b"%s=%s" % (COOKIE.encode(), b"g" * 3000),
    b"swiftdeploy_release_other=STABLE",
]


@pytest.mark.parametrize("raw", FORGED, ids=range(len(FORGED)))
def test_a_forged_cookie_is_a_new_clients_and_is_never_echoed(stack, raw):
    stable = stack.release("stable")
    raw = raw.replace(b"STABLE", stable[0].encode())
    status, version, set_cookies, headers = visit(raw_cookie=raw)
    assert (status, version, released(set_cookies)) == (200, stable[1], stable[0])
    names = sorted(name.lower() for name, _value in headers)
    assert names == ["cache-control", "connection", "content-length", "content-type", "date", "server", "set-cookie",
                     "x-deployed-by"]
    assert not any(b"injected" in (name + value).lower().encode() for name, value in headers)


def test_the_live_cookie_among_others_keeps_its_client(stack):
    stable = stack.release("stable")
    raw = b"a=1; %s=%s; b=2" % (COOKIE.encode(), stable[0].encode())
    assert visit(raw_cookie=raw)[:3] == (200, stable[1], [])
