"""Service-time samplers: one draw per batch, from a block of pre-drawn variates.

Drawing numbers one at a time from numpy costs about a microsecond a call, so each sampler draws
a block at once and hands out Python floats. ``MeasuredSampler`` samples the bundle's measured
latencies (via ``LatencyProfile.grid``, which interpolates unmeasured batch sizes);
``ParametricSampler`` scales unit-mean variates by the batch's analytic mean.
"""

from __future__ import annotations

import numpy as np

from traces.distributions import ServiceDistribution
from traces.profiles import LatencyProfile

BLOCK = 8192


class MeasuredSampler:
    """A batch of size b takes a uniformly drawn element of ``profile.grid(b)`` (ms -> s)."""

    def __init__(self, profile: LatencyProfile, max_batch_size: int, rng: np.random.Generator):
        self.profile = profile
        self._rng = rng
        self._grids: list[list[float]] = [[]]
        self._u: list[float] = []
        self._k = BLOCK
        self.ensure_batch(max_batch_size)

    def ensure_batch(self, max_batch_size: int) -> None:
        for b in range(len(self._grids), max_batch_size + 1):
            self._grids.append((self.profile.grid(b) / 1000.0).tolist())

    def draw_s(self, batch_size: int) -> float:
        k = self._k
        if k == BLOCK:
            self._u = self._rng.random(BLOCK).tolist()
            k = 0
        self._k = k + 1
        grid = self._grids[batch_size]
        return grid[int(self._u[k] * len(grid))]


class ParametricSampler:
    """A batch of size b takes ``unit * dist.batch_mean_ms(b)``; the unit variates are exact draws."""

    def __init__(self, dist: ServiceDistribution, max_batch_size: int, rng: np.random.Generator):
        self.dist = dist
        self._rng = rng
        self._mean_s: list[float] = [0.0]
        self._unit: list[float] = []
        self._k = BLOCK
        self.ensure_batch(max_batch_size)

    def ensure_batch(self, max_batch_size: int) -> None:
        for b in range(len(self._mean_s), max_batch_size + 1):
            self._mean_s.append(self.dist.batch_mean_ms(b) / 1000.0)

    def draw_s(self, batch_size: int) -> float:
        k = self._k
        if k == BLOCK:
            self._unit = self.dist.unit_draws(self._rng, BLOCK).tolist()
            k = 0
        self._k = k + 1
        return self._unit[k] * self._mean_s[batch_size]
