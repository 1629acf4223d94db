"""Parametric latency profiles and the slow-spell fit, pinned at their edges: which batch sizes a
parametric profile covers, that it says it is not measured, that a lognormal service gets lognormal
quantiles, and that a correlation which rises with time apart is no spell."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from traces.distributions import Exponential, LogNormal
from traces.profiles import LatencyProfile, SlowSpells, measure_spells


def test_a_parametric_profile_covers_exactly_the_sizes_one_to_its_maximum():
    """Batch sizes 1..5 and no other: 0 and 6 are refused, each size's mean is the batch mean."""
    profile = LatencyProfile.from_distribution(Exponential(2.0, 0.5), 5)
    assert profile.measured_batch_sizes == (1, 2, 3, 4, 5)
    assert not profile.covers(0) and not profile.covers(6)
    for b in range(1, 6):
        assert profile.mean_ms(b) == pytest.approx(2.0 + 0.5 * (b - 1), rel=1e-3)


def test_a_parametric_profile_is_not_measured():
    """It comes from a formula, not from timed runs: ``is_measured`` is the boolean False."""
    assert LatencyProfile.from_distribution(Exponential(1.0), 3).is_measured is False


def test_a_lognormal_service_gets_lognormal_quantiles():
    """cv = 0.5: sigma^2 = ln(1.25) and a unit mean; the grid's median is exp(-sigma^2 / 2) times the
    batch mean and its 90th percentile exp(-sigma^2 / 2 + 1.2816 sigma) times it (an exponential
    would give ln 2 and ln 10 instead)."""
    profile = LatencyProfile.from_distribution(LogNormal(4.0, 0.0, 0.5), 2)
    sigma = np.sqrt(np.log(1.25))
    grid = profile.grid(2)
    assert np.median(grid) == pytest.approx(4.0 * np.exp(-sigma**2 / 2), rel=1e-3)
    z90 = stats.norm.ppf(0.9)
    assert np.quantile(grid, 0.9) == pytest.approx(4.0 * np.exp(-sigma**2 / 2 + z90 * sigma), rel=2e-3)


def test_a_correlation_that_grows_with_time_apart_is_no_spell():
    """Sittings of four runs 0.3 s apart (10 s between sittings, so never paired across them): a
    sitting's level plus a -6, -6, +6, -6 pattern. Pairs one run apart disagree more than pairs three
    apart, so the correlation rises with time apart (a line of positive slope, well under 1 per
    second): that is no decaying spell, and the fit reports none."""
    sittings = 60
    level = np.random.default_rng(3).permutation(sittings).astype(float)
    latency_ms = (level[:, None] + 6.0 * np.array([-1.0, -1.0, 1.0, -1.0])).ravel()
    latency_ms += 0.001 * np.arange(latency_ms.size)  # no ties
    started_at_s = (10.0 * np.arange(sittings)[:, None] + 0.3 * np.arange(4)).ravel()
    z = stats.norm.ppf(stats.rankdata(latency_ms) / (latency_ms.size + 1))
    within = z.reshape(sittings, 4)
    rho = [np.corrcoef(within[:, :-k].ravel(), within[:, k:].ravel())[0, 1] for k in (1, 2, 3)]
    assert 0.05 < rho[0] < rho[1] < rho[2]
    slope = np.polyfit([0.3, 0.6, 0.9], np.log(rho), 1)[0]
    assert 0.0 < slope < 1.0
    assert measure_spells(np.ones(latency_ms.size), latency_ms, started_at_s) == SlowSpells()


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_a_gamma_service_gets_gamma_quantiles(cv):
    """shape 1 / cv^2 and a unit mean: at cv 0.5 a shape of 4, at cv 2 a shape of 1/4 (an exponential,
    shape 1, would sit between them)."""
    from traces.distributions import Gamma

    profile = LatencyProfile.from_distribution(Gamma(4.0, 0.0, cv), 2)
    shape = 1.0 / cv**2
    grid = profile.grid(2)
    for q in (0.5, 0.9):
        want = 4.0 * stats.gamma.ppf(q, a=shape, scale=1.0 / shape)
        assert np.quantile(grid, q) == pytest.approx(want, rel=5e-3)


def test_an_exponential_service_gets_exponential_quantiles():
    profile = LatencyProfile.from_distribution(Exponential(4.0), 1)
    grid = profile.grid(1)
    assert np.median(grid) == pytest.approx(4.0 * np.log(2.0), rel=2e-3)
    assert np.quantile(grid, 0.9) == pytest.approx(4.0 * np.log(10.0), rel=2e-3)
