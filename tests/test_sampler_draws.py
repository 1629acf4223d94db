"""The measured-variant sampler draws each measured value equally often, in every mode: without
slow spells, with them, and between idle classes; successive draws are independent once the
slow spell has decayed; and it keeps drawing past the end of a block of pre-drawn variates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sim.service import BLOCK, MeasuredSampler
from traces.profiles import LatencyProfile, SlowSpells

VALUES_MS = np.array([1.0, 2.0, 3.0, 4.0])  # one batch size, four measured runs
DRAWS = 2 * BLOCK + 100  # past two refills of the block


def _profile(spells=SlowSpells(), after_idle=()):
    return LatencyProfile({1: VALUES_MS.copy()}, measured=True, spells=spells, after_idle=after_idle)


def _draws_ms(sampler: MeasuredSampler, gap_s: float = 0.0, idle_s: float = 0.0) -> np.ndarray:
    return np.array([sampler.draw_s(1, k * gap_s, idle_s) for k in range(DRAWS)]) * 1000.0


def _uniform_over_values(draws_ms: np.ndarray) -> None:
    counts = np.array([(np.isclose(draws_ms, v)).sum() for v in VALUES_MS])
    assert counts.sum() == draws_ms.size  # nothing but measured values
    assert stats.chisquare(counts).pvalue > 1e-3, counts  # each as often (the largest included)


def test_without_spells_every_measured_value_is_drawn_equally_often():
    _uniform_over_values(_draws_ms(MeasuredSampler(_profile(), 1, np.random.default_rng(1))))


def test_with_slow_spells_each_size_keeps_its_measured_distribution():
    # batches 1 s apart against a 1 ms spell: the spell has decayed between any two draws
    sampler = MeasuredSampler(_profile(SlowSpells(0.3, 0.001)), 1, np.random.default_rng(2))
    draws = _draws_ms(sampler, gap_s=1.0)
    _uniform_over_values(draws)
    lag1 = np.corrcoef(draws[:-1], draws[1:])[0, 1]
    assert abs(lag1) < 0.05, lag1  # no noise is shared between successive draws


def test_with_slow_spells_close_draws_share_the_spell():
    # 10 ms apart against a 1 s spell (the draws span 165 spells): successive z share 0.8 x 0.99
    sampler = MeasuredSampler(_profile(SlowSpells(0.8, 1.0)), 1, np.random.default_rng(3))
    draws = _draws_ms(sampler, gap_s=0.01)
    assert np.corrcoef(draws[:-1], draws[1:])[0, 1] > 0.5


@pytest.mark.parametrize("idle_s", [0.0005, 0.002])
def test_between_idle_classes_the_quantile_is_kept(idle_s):
    """Idle for a fraction w of the class gap: the draw is (1 - w) hot + w idle at one quantile,
    so each of the four measured quantiles comes back equally often."""
    idle = LatencyProfile({1: VALUES_MS * 10.0}, measured=True)
    sampler = MeasuredSampler(_profile(after_idle=((0.004, idle),)), 1, np.random.default_rng(4))
    w = idle_s / 0.004
    draws = _draws_ms(sampler, idle_s=idle_s)
    expected = (1 - w) * VALUES_MS + w * VALUES_MS * 10.0
    counts = np.array([(np.isclose(draws, v)).sum() for v in expected])
    assert counts.sum() == draws.size
    assert stats.chisquare(counts).pvalue > 1e-3, counts
