"""A canary on a fleet of three Docker hosts, judged once for the fleet (docs/fleet-canary.md).

The stack fcan (the third-party-style app, judged from nginx's edge log) runs on the fleet hosts
h1, h2 and h3 (tests/integration/fleet.py), its images shipped from here
(swiftdeploy_image_source: controller). Each host gets its own traffic, at its own address:
  deploy of 1.0.0 on the three hosts;
  a canary of 2.0.0 on every host where only h2's fails half its requests (a host var gives h2
    a manifest whose canary image has FAIL_PERCENT=50): the merged figures exceed the maximum
    error rate, so the one decision is deny, it is rolled back on every host, and h2 is named an
    outlier in the output and in every host's history;
  a healthy canary of 2.0.0 -> allowed once, rolled forward on every host;
  canary.hosts: 1 -> the canary starts on h1 only, h2 and h3 are left unchanged; with h3
    unreachable the judgement is refused (never on part of the fleet) and nothing changes; judging
    it then ends it on h1 and says there is nothing to promote on the others.
"""

from __future__ import annotations

import re

import pytest

from fleet import FleetStack  # tests/integration/fleet.py
from helpers import failing_image  # tests/integration/helpers.py
from traffic import AllTraffic  # tests/integration/traffic.py

pytestmark = [pytest.mark.docker, pytest.mark.ssh, pytest.mark.slow]

NAME, PORT, ADMIN_PORT = "fcan", 27680, 27682
WINDOW = 5
BAD_TAG = "thirdparty-app:2-fleetbad"
MAX_ERROR_RATE = 5.0


class FleetCanary(FleetStack):
    """The stack on three fleet hosts, its canary judged on WINDOW-second windows."""

    def manifest(self, name, canary_image=None, canary_version=None, **canary):
        data = self.app.manifest(NAME, PORT, ADMIN_PORT, tag="1", mode_switch="none")
        data["canary"] = {"weight": 50, "window_seconds": WINDOW, **canary}
        if canary_image:
            data["canary"].update(image=canary_image, version=canary_version)
        data["policy"] = {"thresholds": {"min_requests": 20, "max_error_rate_percent": MAX_ERROR_RATE}}
        return self.write_manifest(name, data)


@pytest.fixture(scope="module")
def bad_image(thirdparty_app):
    """thirdparty-app:2 answering 50 of every 100 requests to / with a 500."""
    with failing_image(thirdparty_app.images["2"], BAD_TAG, 50) as tag:
        yield tag


@pytest.fixture(scope="module")
def stack(fleet, thirdparty_app, bad_image, run_playbook, tmp_path_factory):
    the_stack = FleetCanary(NAME, fleet.hosts(3), tmp_path_factory.mktemp("fleet-canary"), run_playbook, thirdparty_app)
    base = the_stack.manifest("base")
    inventory = the_stack.inventory("base", {host.name: base for host in the_stack.hosts})
    try:
        yield the_stack
    finally:
        the_stack.run("teardown", inventory, "-e", "clean=true")
        for host in the_stack.hosts:
            host.docker("volume", "rm", "-f", f"{NAME}-logs")


@pytest.fixture(scope="module")
def deployed(stack, parse_recap):
    manifest = stack.manifest("base")
    run = stack.run("deploy", stack.inventory("base", {host.name: manifest for host in stack.hosts}),
                    "-e", "swiftdeploy_image_source=controller")
    assert run.rc == 0, run.describe()
    for host in stack.hosts:
        assert stack.stable(host)["version"] == stack.app.versions["1"]
    return run


def test_one_bad_host_denies_the_fleet_canary_and_it_is_rolled_back_on_every_host(stack, deployed, bad_image):
    good = stack.manifest("good", stack.app.images["2"], stack.app.versions["2"])
    bad = stack.manifest("bad", bad_image, stack.app.versions["2"])
    assert stack.hosts[1].image_id(bad_image) is None
    inventory = stack.inventory("bad", {"h1": good, "h2": bad, "h3": good})
    with AllTraffic(stack.traffic(PORT)) as traffic:
        run = stack.run("promote", inventory, "-e", "mode=canary", "-e", "swiftdeploy_image_source=controller")
        assert run.rc == 0, run.describe()
        for host in stack.hosts:
            assert stack.state(host)["canary"] is not None, host.name
        assert "Fleet canary on h1, h2, h3 (3 of 3 hosts, canary.hosts: every host)." in " ".join(run.stdout.split())
        # The image only h2's manifest names is shipped to h2 alone (every host's manifest counts).
        assert "%s (" % bad_image in run.stdout and ") shipped from the controller to h2, no registry" in run.stdout
        assert stack.hosts[1].image_id(bad_image) is not None and stack.hosts[0].image_id(bad_image) is None
        run = stack.run("promote", inventory, "-e", "mode=stable")  # waits for the window
    assert run.rc != 0, run.describe()
    text = " ".join(run.stdout.split())
    # One decision, on the merged figures, shown with each host's; h2 named.
    assert "Fleet canary on 3 hosts (h1, h2, h3), figures merged: " in text, run.describe()
    assert text.count("TASK [swiftdeploy.stack.swiftdeploy : Ask the policy, canary]") == 1, run.describe()
    assert "Canary policy (embedded): DENY" in text and "exceeds the maximum 5.00%" in text, run.describe()
    # Each host's figures, h2's marked (about 50 %: the window's edges cut FAIL_PERCENT's cycle).
    assert re.search(r"h1: [0-9]+ requests, error rate 0\.00%, P99 [0-9.]+ ms over [0-9.]+ s\",", text), run.describe()
    assert re.search(r"h2: [0-9]+ requests, error rate [0-9.]+%, P99 [0-9.]+ ms over [0-9.]+ s; OUTLIER: error rate "
                     r"[0-9.]+% against 0\.00% on the other hosts", text), run.describe()
    assert re.search(r"Outlier host h2: error rate [0-9.]+% against 0\.00% on the other hosts", text), run.describe()
    assert "Decided once for the fleet (h1, h2, h3), rolled back on each." in text
    # Rolled back on every host, each recording the fleet decision, the merged figures and its own.
    merged = None
    for host in stack.hosts:
        state = stack.state(host)
        assert state["canary"] is None and stack.stable(host)["version"] == stack.app.versions["1"], host.name
        blocked = [event for event in stack.history(host) if event["event"] == "promote_blocked"][-1]
        fleet = blocked["details"]["fleet"]
        assert fleet["decision"] == "deny" and fleet["hosts"] == ["h1", "h2", "h3"], fleet
        assert [entry["host"] for entry in fleet["outliers"]] == ["h2"], fleet
        assert fleet["outlier"] is (host.name == "h2"), fleet
        assert fleet["own"]["requests"] == blocked["details"]["window"]["requests"], blocked
        merged = merged or fleet["merged"]
        assert fleet["merged"] == merged
        assert any(event["event"] == "rollback" for event in stack.history(host)[-2:]), host.name
    own = {host.name: [event for event in stack.history(host) if event["event"] == "promote_blocked"][-1]
           ["details"]["fleet"]["own"] for host in stack.hosts}
    assert own["h2"]["error_rate_percent"] >= 45 and own["h1"]["error_rate_percent"] == 0
    # Merged by counts: the fleet's rate is the sum of 5xx over the sum of requests.
    assert merged["requests"] == sum(figures["requests"] for figures in own.values())
    assert merged["errors"] == sum(figures["errors"] for figures in own.values())
    assert MAX_ERROR_RATE < merged["error_rate_percent"] < own["h2"]["error_rate_percent"], merged
    # Only h2's canary answered 500s; no request was lost to a switch on any host.
    for name, host_traffic in traffic.items():
        failures = host_traffic.failures()
        if name == "h2":
            assert set(failures) <= {500} and failures[500] > 0, failures
        else:
            assert not failures, (name, failures)
        assert host_traffic.successes > 20, name


def test_a_healthy_fleet_canary_is_rolled_forward_on_every_host(stack, deployed):
    good = stack.manifest("good", stack.app.images["2"], stack.app.versions["2"])
    inventory = stack.inventory("good", {host.name: good for host in stack.hosts})
    with AllTraffic(stack.traffic(PORT)) as traffic:
        run = stack.run("promote", inventory, "-e", "mode=canary", "-e", "swiftdeploy_image_source=controller")
        assert run.rc == 0, run.describe()
        run = stack.run("promote", inventory, "-e", "mode=stable")
    assert run.rc == 0, run.describe()
    text = " ".join(run.stdout.split())
    assert "Fleet canary on 3 hosts (h1, h2, h3), figures merged: " in text and "OUTLIER" not in text, run.describe()
    assert "Canary policy (embedded): ALLOW" in text
    assert text.count("passed and is now stable at 100%") == 3, run.describe()
    for host in stack.hosts:
        assert stack.state(host)["canary"] is None
        assert stack.stable(host)["image"] == stack.app.images["2"], host.name
        promote = [event for event in stack.history(host) if event["event"] == "promote"][-1]
        assert promote["details"]["result"] == "rolled_forward"
        assert promote["details"]["fleet"]["decision"] == "allow" and promote["details"]["fleet"]["outliers"] == []
        assert promote["details"]["fleet"]["outlier"] is False
    for name, host_traffic in traffic.items():
        assert not host_traffic.failures(), (name, host_traffic.failures())
        assert host_traffic.successes > 20, name


def test_canary_hosts_1_starts_the_canary_on_the_first_host_only(stack, deployed):
    one = stack.manifest("one", stack.app.images["1"], stack.app.versions["1"], hosts=1)
    inventory = stack.inventory("one", {host.name: one for host in stack.hosts})
    h1, h2, h3 = stack.hosts
    before = {host.name: (stack.state(host), len(stack.history(host))) for host in (h2, h3)}
    with AllTraffic(stack.traffic(PORT)) as traffic:
        run = stack.run("promote", inventory, "-e", "mode=canary")
        assert run.rc == 0, run.describe()
        text = " ".join(run.stdout.split())
        assert "Fleet canary on h1 (1 of 3 hosts, canary.hosts: 1)." in text, run.describe()
        for host in (h2, h3):
            assert (f"{host.name} is not among the canary hosts (canary.hosts: 1: h1 of 3 hosts); left unchanged."
                    in text), run.describe()
            assert (stack.state(host), len(stack.history(host))) == before[host.name], host.name
        assert stack.state(h1)["canary"] is not None
        promote = [event for event in stack.history(h1) if event["event"] == "promote"][-1]
        assert promote["details"]["fleet"] == {"canary_hosts": ["h1"], "play_hosts": ["h1", "h2", "h3"],
                                               "canary_hosts_setting": 1}
        # A host of the play that cannot be reached: no judgement on part of the fleet, nothing changed.
        canary_state = stack.state(h1)
        unreachable = stack.inventory("one-h3-down", {host.name: one for host in stack.hosts}, h3={"ansible_port": 1})
        run = stack.run("promote", unreachable, "-e", "mode=stable")
        assert run.rc != 0, run.describe()
        assert ("The fleet canary is not judged on part of the fleet: h3 could not be measured or failed before the "
                "judgement (see its error above). Nothing was changed on any host.") in " ".join(run.stdout.split()), \
            run.describe()
        assert stack.state(h1) == canary_state
        # Judged on h1 alone; on h2 and h3 there is nothing to end, and they say so.
        run = stack.run("promote", inventory, "-e", "mode=stable")
    assert run.rc == 0, run.describe()
    text = " ".join(run.stdout.split())
    assert "Fleet canary on 1 host (h1), figures merged: " in text, run.describe()
    for host in (h2, h3):
        assert f"Stack {NAME} is already stable ({stack.app.versions['2']}); nothing to promote." in text
        assert (stack.state(host), len(stack.history(host))) == before[host.name], host.name
    assert stack.state(h1)["canary"] is None
    for name, host_traffic in traffic.items():
        assert not host_traffic.failures(), (name, host_traffic.failures())
