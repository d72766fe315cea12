"""bench-promote and bench-keepalive run their sequence the same way (run_under_load): the load
runs exactly while the sequence does, and a failed step ends the run with its first line."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "scripts"))
from bench_promote import StepFailed, run_under_load  # noqa: E402  pylint: disable=wrong-import-position


class FakeLoad:
    def __init__(self, events):
        self.events = events

    def start(self):
        self.events.append("start")

    def stop(self):
        self.events.append("stop")


class FakeSequence:
    def __init__(self, events, failure=None):
        self.events, self.failure = events, failure

    def run(self):
        self.events.append("run")
        if self.failure is not None:
            raise self.failure


@pytest.mark.parametrize("failure, aborted", [
    (None, None),
    (StepFailed("canary start: the canary never served\nlong output"), "canary start: the canary never served"),
    (OSError(111, "Connection refused"), "[Errno 111] Connection refused"),
    (KeyError("weight"), "'weight'"),
])
def test_the_load_runs_while_the_sequence_does_and_a_failure_names_its_step(failure, aborted, capsys):
    events = []
    assert run_under_load(FakeSequence(events, failure), FakeLoad(events)) == aborted
    assert events == ["start", "run", "stop"]
    assert ("STEP FAILED" in capsys.readouterr().err) == (failure is not None)


def test_an_interrupt_stops_the_load_and_is_not_swallowed():
    events = []
    with pytest.raises(KeyboardInterrupt):
        run_under_load(FakeSequence(events, KeyboardInterrupt()), FakeLoad(events))
    assert events == ["start", "run", "stop"]
