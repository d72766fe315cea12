"""bench-analysis: its binomial draws are exact, its bound comes from the baseline model alone,
and a small run prints both tables and exits 0."""

from __future__ import annotations

import math
import pathlib
import random
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "scripts"))
import bench_analysis  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize("n, p", [(5, 0.005), (200, 0.015), (1800, 0.0334), (10, 1.0), (0, 0.3), (10, 0.0)])
def test_binomial_draws_have_the_binomial_mean(n, p):
    rng = random.Random(7)
    draws = [bench_analysis.binomial(rng, n, p) for _draw in range(4000)]
    assert all(0 <= draw <= n for draw in draws)
    spread = math.sqrt(n * p * (1 - p) / 4000.0)
    assert abs(sum(draws) / 4000.0 - n * p) <= 4 * spread + 1e-12


def test_the_bound_is_the_first_app_bucket_that_at_most_5_percent_exceed():
    assert bench_analysis.BOUND == 0.1
    assert bench_analysis.slow_share(1.0) == pytest.approx(0.0334, abs=1e-4)


def test_a_small_run_prints_the_tables(capsys):
    assert bench_analysis.main(["--rollouts", "40", "--detect-rollouts", "10", "--seed", "3", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "| scenario | ours | flagger | kayenta | ours: pass at the end |" in out
    assert "| canary req/s | change | ours | flagger | kayenta |" in out
    assert out.count("| A/A |") == 4
