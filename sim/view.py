"""The read-only view of a running simulation that policies decide from."""

from __future__ import annotations

import bisect
import math

import numpy as np
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from traces.profiles import LatencyProfile, PredictionTable

    from .engine import Simulation


class EngineView:
    """Implements ``policies.base.SystemView`` over a ``Simulation``; it exposes no mutator."""

    __slots__ = ("_sim",)

    def __init__(self, sim: "Simulation"):
        self._sim = sim

    @property
    def now_s(self) -> float:
        return self._sim.env.now

    @property
    def deployments(self) -> tuple[str, ...]:
        return self._sim.deployment_names

    @property
    def predictions(self) -> "PredictionTable | None":
        return self._sim.predictions

    def _dep(self, name: str):
        return self._sim.deployment(name)

    def variant(self, deployment: str) -> str | None:
        return self._dep(deployment).variant

    def replicas(self, deployment: str) -> int:
        return self._dep(deployment).replicas

    def busy_replicas(self, deployment: str) -> int:
        return self._dep(deployment).busy_replicas

    def queue_length(self, deployment: str) -> int:
        return self._dep(deployment).queue_length

    def load(self, deployment: str) -> tuple[int, int, int]:
        dep = self._dep(deployment)
        return dep.queue_length, dep.busy_replicas, dep.replicas

    def max_batch_size(self, deployment: str) -> int:
        return self._dep(deployment).max_batch_size

    def batch_wait_timeout_ms(self, deployment: str) -> float:
        return self._dep(deployment).batch_wait_timeout_ms

    def arrival_rate_rps(self, window_s: float = 1.0) -> float:
        """Arrivals seen in the last ``window_s`` (or since the start, if shorter), per second."""
        sim = self._sim
        now = sim.env.now
        span = min(window_s, now)
        if span <= 0:
            return 0.0
        seen = sim.arrivals_seen
        first = bisect.bisect_left(sim.arrival_times, now - span, 0, seen)
        return (seen - first) / span

    def recent_batch_latency_ms(self, deployment: str, q: float = 95.0, window_s: float = 5.0) -> float:
        """The q-th percentile service time of batches finished in the last ``window_s`` (NaN if none)."""
        now = self._sim.env.now
        values = [s for t, s, _ in self._dep(deployment).recent if t >= now - window_s]
        return float(np.percentile(values, q)) * 1000.0 if values else math.nan

    def latency_profile(self, deployment: str) -> "LatencyProfile":
        return self._sim.profiles[deployment]

    def accuracy(self, deployment: str) -> float:
        variant = self.variant(deployment)
        table = self._sim.predictions
        if table is None or variant not in table.pred:
            return math.nan
        return table.accuracy(variant)
