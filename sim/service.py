"""Service-time samplers: one draw per batch, from a block of pre-drawn variates.

Drawing numbers one at a time from numpy costs about a microsecond a call, so each sampler draws
a block at once and hands out Python floats. ``MeasuredSampler`` samples the bundle's measured
latencies (via ``LatencyProfile.grid``, which interpolates unmeasured batch sizes);
``ParametricSampler`` scales unit-mean variates by the batch's analytic mean.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from traces.distributions import ServiceDistribution
from traces.profiles import LatencyProfile, idle_bracket

BLOCK = 8192


class MeasuredSampler:
    """A batch of size b takes an element of ``profile.grid(b)`` (ms -> s) at a drawn quantile.

    Without slow spells the quantile is uniform and independent per batch. With them
    (``profile.spells``), it is Phi(z), z = sqrt(share) s(t) + sqrt(1 - share) e: s is an
    Ornstein-Uhlenbeck process with time constant ``tau_s``, advanced to each batch's start, and e
    independent noise, so each size keeps its measured distribution while successive batches of
    the deployment share its slow and fast spells (one machine's).

    With idle classes (``profile.after_idle``), a batch whose replica sat idle for ``idle_s``
    takes, at the same quantile, the value interpolated linearly in idle time between the two
    classes around it (the longest class beyond it): a replica woken from a long idle spell is
    as slow as the runs timed after one.
    """

    def __init__(self, profile: LatencyProfile, max_batch_size: int, rng: np.random.Generator):
        self.profile = profile
        self._rng = rng
        self._idle_s = list(profile.idle_gaps_s)
        self._classes = [profile] + [p for _, p in profile.after_idle]
        self._grids: list[list[list[float]]] = [[[]] for _ in self._classes]  # [class][batch size]
        self._hot = self._grids[0]
        self._single = len(self._idle_s) == 1
        self._u: list[float] = []
        self._k = BLOCK
        spells = profile.spells
        self._spells = None if spells.none else (math.sqrt(spells.share), math.sqrt(1.0 - spells.share), spells.tau_s)
        self._level: float | None = None
        self._last_s = 0.0
        self.ensure_batch(max_batch_size)

    def ensure_batch(self, max_batch_size: int) -> None:
        hot = self._grids[0]
        for b in range(len(hot), max_batch_size + 1):
            hot.append((self.profile.grid(b) / 1000.0).tolist())
        for grids, profile in zip(self._grids[1:], self._classes[1:]):
            for b in range(len(grids), max_batch_size + 1):  # a size an idle class lacks: back to back
                grids.append((profile.grid(b) / 1000.0).tolist() if profile.covers(b) else hot[b])

    def draw_s(self, batch_size: int, now_s: float = 0.0, idle_s: float = 0.0) -> float:
        k = self._k
        if self._spells is None:
            if k == BLOCK:
                self._u = self._rng.random(BLOCK).tolist()
                k = 0
            self._k = k + 1
            u = self._u[k]
            if self._single:  # the common case, kept as short as it was
                grid = self._hot[batch_size]
                return grid[int(u * len(grid))]
        else:
            if k >= BLOCK:
                self._u = self._rng.standard_normal(BLOCK).tolist()
                k = 0
            self._k = k + 2
            weight, rest, tau_s = self._spells
            if self._level is None:
                self._level = self._u[k]
            else:
                rho = math.exp(-(now_s - self._last_s) / tau_s)
                self._level = rho * self._level + math.sqrt(1.0 - rho * rho) * self._u[k]
            self._last_s = now_s
            z = weight * self._level + rest * self._u[k + 1]
            u = 0.5 * math.erfc(-z * _INV_SQRT2)
        if self._single or idle_s <= 0.0:
            grid = self._hot[batch_size]
            return grid[min(int(u * len(grid)), len(grid) - 1)]
        j, w = idle_bracket(self._idle_s, idle_s)
        grid = self._grids[j][batch_size]
        value = grid[min(int(u * len(grid)), len(grid) - 1)]
        if w == 0.0:
            return value
        upper = self._grids[j + 1][batch_size]
        return (1.0 - w) * value + w * upper[min(int(u * len(upper)), len(upper) - 1)]


_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class TimelineSampler:
    """Replays a measured timeline: a batch of size b takes the latency of the size-b run that
    started nearest the batch's own start (both in seconds from the run's start); sizes the
    timeline lacks are drawn by ``fallback``.

    Fed the batches a real run served (``traces.served``), the simulator then meets the machine's
    fast and slow minutes exactly when the server met them, so what differs from the real run is
    the simulator's queueing, batching and dispatch alone.
    """

    def __init__(self, timeline: dict[int, tuple[np.ndarray, np.ndarray]], fallback: MeasuredSampler):
        self._timeline = {b: (starts.tolist(), (ms / 1000.0).tolist()) for b, (starts, ms) in timeline.items()}
        self._fallback = fallback

    def ensure_batch(self, max_batch_size: int) -> None:
        self._fallback.ensure_batch(max_batch_size)

    def draw_s(self, batch_size: int, now_s: float = 0.0, idle_s: float = 0.0) -> float:
        found = self._timeline.get(batch_size)
        if found is None:
            return self._fallback.draw_s(batch_size, now_s, idle_s)
        starts, values = found
        i = bisect.bisect_left(starts, now_s)
        if i == len(starts) or (i > 0 and now_s - starts[i - 1] <= starts[i] - now_s):
            i -= 1
        return values[i]


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

    def draw_s(self, batch_size: int, now_s: float = 0.0, idle_s: float = 0.0) -> float:
        k = self._k
        if k == BLOCK:
            self._unit = self.dist.unit_draws(self._rng, BLOCK).tolist()
            k = 0
        self._k = k + 1
        return self._unit[k] * self._mean_s[batch_size]
