"""promote.yml -e mode=auto on a fleet of three Docker hosts (docs/auto-rollout.md, docs/fleet-canary.md).

The stack fauto (the third-party-style app, judged from nginx's edge log) runs on the fleet hosts
h1, h2 and h3 (tests/integration/fleet.py), its images shipped from here. Every host gets its own
traffic at its own address. One step (50 %), a 2 s interval:
  a release that is bad on h2 only (h2's manifest names an image of it answering half of its
    requests with a 500): the one look on the merged figures rolls it back on every host;
  a good release: every look is decided once on the merged figures (each host records the same
    judgement, whose merged counts are the sum of the hosts'), and it reaches 100 % on every host
    with no failed request on any.
"""

from __future__ import annotations

import pytest

from fleet import FleetStack  # tests/integration/fleet.py
from helpers import failing_image, judged, version_served  # tests/integration/helpers.py
from traffic import AllTraffic  # tests/integration/traffic.py

pytestmark = [pytest.mark.docker, pytest.mark.ssh, pytest.mark.slow]

NAME, PORT, ADMIN_PORT = "fauto", 27880, 27882
BAD_TAG = "thirdparty-app:2-fleetautobad"


class FleetAuto(FleetStack):
    """The stack on three fleet hosts, with one step (50 %) every 2 s; its images shipped from here."""

    def manifest(self, name, canary_image=None):
        data = self.app.manifest(NAME, PORT, ADMIN_PORT, tag="1", mode_switch="none")
        data["canary"] = {"weight": 50, "steps": [50], "interval_seconds": 2, "max_duration_seconds": 60}
        if canary_image:
            data["canary"].update(image=canary_image, version=self.app.versions["2"])
        # A fixed latency bound well above this shared machine's noise: the test is about the merge.
        data["analysis"] = {"min_canary_requests": 40, "latency_bound_seconds": 0.25}
        data["policy"] = {"thresholds": {"min_requests": 10, "max_cpu_load": 1000}}
        return self.write_manifest(name, data)

    def run(self, playbook, inventory, *args):
        return super().run(playbook, inventory, "-e", "swiftdeploy_image_source=controller", *args)


@pytest.fixture(scope="module")
def bad_image(thirdparty_app):
    """thirdparty-app:2 answering 50 of every 100 requests to / with a 500."""
    with failing_image(thirdparty_app.images["2"], BAD_TAG, 50) as tag:
        yield tag


@pytest.fixture(scope="module")
def stack(fleet, thirdparty_app, run_playbook, tmp_path_factory):
    the_stack = FleetAuto(NAME, fleet.hosts(3), tmp_path_factory.mktemp("fleet-auto"), run_playbook, thirdparty_app)
    base = the_stack.manifest("base")
    inventory = the_stack.inventory("base", {host.name: base for host in the_stack.hosts})
    try:
        run = the_stack.run("deploy", inventory)
        assert run.rc == 0, run.describe()
        yield the_stack
    finally:
        the_stack.run("teardown", inventory, "-e", "clean=true")
        for host in the_stack.hosts:
            host.docker("volume", "rm", "-f", f"{NAME}-logs")


def test_a_release_bad_on_one_host_is_rolled_back_on_every_host(stack, bad_image):
    good = stack.manifest("good", stack.app.images["2"])
    bad = stack.manifest("bad", bad_image)
    inventory = stack.inventory("bad", {"h1": good, "h2": bad, "h3": good})
    before = {host.name: len(stack.history(host)) for host in stack.hosts}
    with AllTraffic(stack.traffic(PORT)) as traffic:
        run = stack.run("promote", inventory, "-e", "mode=auto")
    assert run.rc != 0, run.describe()
    text = " ".join(run.stdout.split())
    assert "Canary rejected by the automated rollout and rolled back" in text, run.describe()
    assert "Decided once for the fleet (h1, h2, h3), rolled back on each." in text, run.describe()
    verdicts = None
    for host in stack.hosts:
        state = stack.state(host)
        assert state["canary"] is None and state["slots"][state["stable"]]["version"] == stack.app.versions["1"], \
            host.name
        history = stack.history(host)[before[host.name]:]
        looks = [event["details"] for event in judged(history, 0)]
        # the same judgements on every host, the last a rollback on the comparison's errors
        assert verdicts in (None, [look["verdict"] for look in looks]), host.name
        verdicts = [look["verdict"] for look in looks]
        assert verdicts[-1] == "rollback", verdicts
        assert looks[-1]["hosts"] == ["h1", "h2", "h3"]
        assert "errors" in looks[-1]["analysis"]["rejected"], looks[-1]["analysis"]
        hosts = looks[-1]["windows"]["hosts"]
        assert hosts["h2"]["canary"]["errors"] > 0 and hosts["h1"]["canary"]["errors"] == 0, hosts
        assert any(event["event"] == "rollback" for event in history), host.name
    # Only h2's canary answered 500s; no request was lost to a switch on any host.
    for name, host_traffic in traffic.items():
        failures = host_traffic.failures()
        if name == "h2":
            assert set(failures) <= {500} and failures.get(500, 0) > 0, failures
        else:
            assert not failures, (name, failures)


def test_a_good_release_reaches_100_percent_on_every_host_decided_on_the_merged_figures(stack):
    good = stack.manifest("good", stack.app.images["2"])
    inventory = stack.inventory("good", {host.name: good for host in stack.hosts})
    before = {host.name: len(stack.history(host)) for host in stack.hosts}
    with AllTraffic(stack.traffic(PORT)) as traffic:
        run = stack.run("promote", inventory, "-e", "mode=auto")
    assert run.rc == 0, run.describe()
    looks = {}
    for host in stack.hosts:
        state = stack.state(host)
        assert state["mode"] == "stable" and state["canary"] is None, (host.name, state)
        assert state["slots"][state["stable"]]["version"] == stack.app.versions["2"], host.name
        looks[host.name] = [event["details"] for event in judged(stack.history(host)[before[host.name]:], 0)]
    # One decision per look: every host records the same judgements, in the same order.
    first = looks["h1"]
    assert first and first[-1]["verdict"] == "promote", first
    for name in ("h2", "h3"):
        assert [(look["looks"], look["verdict"], look["windows"]) for look in looks[name]] == \
            [(look["looks"], look["verdict"], look["windows"]) for look in first], name
    # ... shown once per look, decided on the merged figures: counts summed over the hosts.
    assert run.stdout.count("TASK [swiftdeploy.stack.swiftdeploy : Decide, once]") == len(first), run.stdout
    for look in first:
        if look["windows"] is None:
            continue
        for side in ("canary", "baseline"):
            merged, per_host = look["windows"][side], look["windows"]["hosts"]
            assert merged["requests"] == sum(per_host[name][side]["requests"] for name in per_host), look["windows"]
            assert merged["errors"] == sum(per_host[name][side]["errors"] for name in per_host), look["windows"]
        assert sorted(look["windows"]["hosts"]) == ["h1", "h2", "h3"]
        assert all(look["windows"]["hosts"][name]["canary"]["requests"] > 0 for name in ("h1", "h2", "h3")), look
    # Every host probed after the promotion: the new release answers, and nothing failed anywhere.
    for name, host_traffic in traffic.items():
        assert not host_traffic.failures(), (name, host_traffic.failures())
        assert host_traffic.successes > 20, name
    for host in stack.hosts:
        answered = {version_served(PORT, host=host.address) for _probe in range(10)}
        assert answered == {(200, stack.app.versions["2"])}, (host.name, answered)
