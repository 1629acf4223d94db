"""Latency profiles by their definitions, on numbers worked out by hand: the quantile interpolation
of an unmeasured batch size, and the mean after an idle spell between idle classes."""

from __future__ import annotations

import numpy as np
import pytest

from traces.profiles import LatencyProfile


def test_an_unmeasured_size_is_the_quantile_interpolation_of_its_neighbours():
    """b = 2 between measured 1 (four runs) and 3 (two runs): w = 1/2, m = 4 points at
    p = (k + 0.5) / 4; inverted-CDF quantiles Q1 = 1, 2, 3, 4 and Q3 = 10, 10, 20, 20."""
    profile = LatencyProfile({1: [4.0, 1.0, 3.0, 2.0], 3: [20.0, 10.0]}, measured=True)
    assert profile.grid(2).tolist() == [5.5, 6.0, 11.5, 12.0]
    assert profile.grid(1).tolist() == [1.0, 2.0, 3.0, 4.0]  # a measured size: its sorted runs
    assert profile.mean_ms(2) == pytest.approx(8.75)
    with pytest.raises(ValueError, match=r"^batch size 4 is outside the measured range 1\.\.3$"):
        profile.grid(4)  # beyond the measured sizes: refused, not extrapolated
    with pytest.raises(ValueError, match=r"^a latency profile needs at least one batch size$"):
        LatencyProfile({}, measured=True)


def _idle_profile() -> LatencyProfile:
    """Back to back: 1 ms at batch 1, 2 ms at 2; after 10 ms idle: 10 ms, batch 1 only; after
    20 ms: 20 and 40 ms."""
    after = ((0.010, LatencyProfile({1: [10.0]}, measured=True)),
             (0.020, LatencyProfile({1: [20.0], 2: [40.0]}, measured=True)))
    return LatencyProfile({1: [1.0], 2: [2.0]}, measured=True, after_idle=after)


def test_the_mean_after_idleness_at_a_class_is_that_class():
    profile = _idle_profile()
    assert profile.mean_ms_after_idle(1, 0.0) == 1.0
    assert profile.mean_ms_after_idle(1, 0.010) == 10.0
    assert profile.mean_ms_after_idle(1, 0.020) == 20.0
    assert profile.mean_ms_after_idle(1, 1.0) == 20.0  # beyond the longest gap: the longest class


def test_between_classes_the_mean_is_interpolated_in_idle_time():
    profile = _idle_profile()
    assert profile.mean_ms_after_idle(1, 0.005) == pytest.approx(0.5 * 1.0 + 0.5 * 10.0)
    assert profile.mean_ms_after_idle(1, 0.015) == pytest.approx(0.5 * 10.0 + 0.5 * 20.0)
    # the 10 ms class has no batch of 2: there a batch of 2 is served back to back (2 ms)
    assert profile.mean_ms_after_idle(2, 0.015) == pytest.approx(0.5 * 2.0 + 0.5 * 40.0)
    assert profile.mean_ms_after_idle(2, 0.010) == pytest.approx(2.0)
    assert np.isclose(profile.mean_ms_after_idle(2, 1.0), 40.0)
